"""Zero-shot classification with prompt templates, and its evaluation on labelled images."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import PACKAGE_DIR
from .errors import LabclipError
from .images import IMAGE_SUFFIXES
from .metrics import softmax
from .model import ClipModel

TEMPLATES_DIR = PACKAGE_DIR / "templates"


def template_sets() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.json"))


def load_templates(name: str = "imagenet7", language: str = "en") -> list[str]:
    """A named template set (``imagenet80``, ``imagenet7``, ``cifar``, ``single``) in ``language``.

    Raises:
        LabclipError: unknown set, or no version in that language.
    """
    path = TEMPLATES_DIR / f"{name}.json"
    if not path.is_file():
        raise LabclipError(f"unknown template set {name!r}; known: {', '.join(template_sets())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if language not in data:
        have = [k for k in data if k != "source"]
        raise LabclipError(f"template set {name!r} has no {language!r} version; it has: {', '.join(have)}")
    return list(data[language])


def class_embeddings(model: ClipModel, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """OpenAI's prompt ensembling: encode each label under every template, normalise, average, renormalise.

    Returns:
        ``(len(labels), dim)`` float32 array with unit rows.
    """
    labels, templates = list(labels), list(templates)
    if not labels:
        raise LabclipError("no labels given")
    if not templates or any("{}" not in t for t in templates):
        raise LabclipError("every template needs a '{}' where the label goes")
    texts = [t.format(label) for label in labels for t in templates]
    emb = model.encode_texts(texts).reshape(len(labels), len(templates), -1)
    mean = emb.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def probabilities(model: ClipModel, image_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Softmax over classes of ``logit_scale`` × cosine, one row per image."""
    return softmax(model.logit_scale * (np.asarray(image_emb, np.float64) @ np.asarray(class_emb, np.float64).T))


def top_labels(probs: np.ndarray, labels: Sequence[str], images: Sequence[str], k: int = 5) -> pd.DataFrame:
    """The ``k`` most probable labels per image: columns ``image, rank, label, probability``."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, : min(k, probs.shape[1])]
    rows = [{"image": str(images[i]), "rank": r + 1, "label": labels[j], "probability": float(probs[i, j])}
            for i in range(len(probs)) for r, j in enumerate(order[i])]
    return pd.DataFrame(rows, columns=["image", "rank", "label", "probability"])


def zeroshot_metrics(probs: np.ndarray, truth: Sequence[int], k: int = 5) -> dict:
    """``acc1``, ``acc{k}`` and ``mean_per_class_recall`` (CLIP_benchmark's names) of class scores.

    Args:
        probs: ``(n_images, n_classes)`` scores.
        truth: the true class index of each image.
        k: cut-off of the top-k accuracy; a tie with the true class counts as a miss.
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth)
    true_score = probs[np.arange(len(truth)), truth][:, None]
    beaten = (probs >= true_score).sum(axis=1) - 1
    ranks = 1 + beaten
    present = np.unique(truth)
    recall = [np.mean(ranks[truth == c] == 1) for c in present]
    return {"n": int(len(truth)), "acc1": float(np.mean(ranks == 1)), f"acc{k}": float(np.mean(ranks <= k)),
            "mean_per_class_recall": float(np.mean(recall))}


def confusion(probs: np.ndarray, truth: Sequence[int], labels: Sequence[str]) -> pd.DataFrame:
    """Counts of true class (rows) against predicted class (columns)."""
    pred = np.asarray(probs).argmax(axis=1)
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth, pred):
        matrix[t, p] += 1
    return pd.DataFrame(matrix, index=list(labels), columns=list(labels))


def per_class_accuracy(probs: np.ndarray, truth: Sequence[int], labels: Sequence[str]) -> pd.DataFrame:
    pred = np.asarray(probs).argmax(axis=1)
    truth = np.asarray(truth)
    rows = [{"class": labels[c], "images": int((truth == c).sum()),
             "accuracy": float(np.mean(pred[truth == c] == c)) if (truth == c).any() else float("nan")}
            for c in range(len(labels))]
    return pd.DataFrame(rows)


@dataclass
class LabelledImages:
    paths: list[str]
    truth: list[int]
    classes: list[str]

    @property
    def names(self) -> list[str]:
        """The images as reports name them: relative to the folder that holds them all."""
        from .data import short_names

        return short_names(self.paths)


def labelled_images(root: str | Path, language: str = "en") -> LabelledImages:
    """Images with labels, from an ImageFolder tree (``root/<class>/*.jpg``) or a CSV.

    The CSV has an ``image`` column (paths relative to the CSV's folder) and a ``label`` column,
    or one label column per language (``en``, ``ru``), of which ``language`` is used.

    Raises:
        LabclipError: missing folder or file, no images, fewer than two classes.
    """
    root = Path(root)
    if root.is_file():
        table = pd.read_csv(root, dtype=str, keep_default_na=False, sep=None, engine="python")
        table.columns = [c.strip().lower() for c in table.columns]
        column = "label" if "label" in table.columns else language
        if "image" not in table.columns or column not in table.columns:
            raise LabclipError(f"{root}: needs an 'image' column and a 'label' or {language!r} column")
        base = root.parent
        pairs = [(str((base / i.strip()).resolve()), lab.strip()) for i, lab in zip(table["image"], table[column])]
        missing = [p for p, _ in pairs if not Path(p).is_file()]
        if missing:
            raise LabclipError(f"{root}: {len(missing)} image(s) not found, first: {missing[0]}")
    elif root.is_dir():
        pairs = [(str(p), d.name) for d in sorted(root.iterdir()) if d.is_dir()
                 for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        raise LabclipError(f"{root}: no such folder or CSV file")
    if not pairs:
        raise LabclipError(f"{root}: no labelled images (expected {root}/<class name>/*.jpg)")
    classes = list(dict.fromkeys(label for _, label in pairs))
    if len(classes) < 2:
        raise LabclipError(f"{root}: found only one class ({classes[0]}); zero-shot evaluation needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    return LabelledImages([p for p, _ in pairs], [index[label] for _, label in pairs], classes)


@dataclass
class ZeroShotRun:
    """A model and labelled images; image embeddings are computed once and reused."""

    model: ClipModel
    data: LabelledImages
    language: str = "en"
    fallback_reason: str | None = None
    _image_emb: np.ndarray | None = None

    def image_embeddings(self) -> np.ndarray:
        if self._image_emb is None:
            self._image_emb = self.model.encode_images(self.data.paths)
        return self._image_emb

    def probabilities(self, templates: Sequence[str]) -> np.ndarray:
        return probabilities(self.model, self.image_embeddings(), class_embeddings(self.model, self.data.classes,
                                                                                    templates))

    def compare(self, sets: Sequence[str], k: int = 5) -> pd.DataFrame:
        """Metrics per named template set available in this run's language."""
        rows = []
        for name in sets:
            templates = load_templates(name, self.language)
            rows.append({"templates": name, "count": len(templates),
                         **zeroshot_metrics(self.probabilities(templates), self.data.truth, k)})
        return pd.DataFrame(rows)


def available_sets(sets: Sequence[str], language: str) -> list[str]:
    """The named sets that have a version in ``language``."""
    found = []
    for name in sets:
        try:
            load_templates(name, language)
        except LabclipError:
            continue
        found.append(name)
    return found


def start(model: str, labels: str | Path | None = None, language: str = "en", strict: bool = False) -> ZeroShotRun:
    """Load labelled images (default ``data/labels.csv``), then the model (or the demo model)."""
    from .config import DATA_DIR
    from .experiment import load_model_or_demo

    data = labelled_images(Path(labels) if labels else DATA_DIR / "labels.csv", language)
    clip, reason = load_model_or_demo(model, strict)
    return ZeroShotRun(clip, data, language, reason)
