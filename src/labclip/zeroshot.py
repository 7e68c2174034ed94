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
from .metrics import softmax
from .model import ClipModel

TEMPLATES_DIR = PACKAGE_DIR / "templates"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


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


def labelled_images(root: str | Path) -> LabelledImages:
    """Images with labels, from an ImageFolder tree (``root/<class>/*.jpg``) or a CSV of ``image,label``.

    Raises:
        LabclipError: missing folder or file, no images, fewer than two classes.
    """
    root = Path(root)
    if root.is_file():
        table = pd.read_csv(root, dtype=str, keep_default_na=False, sep=None, engine="python")
        table.columns = [c.strip().lower() for c in table.columns]
        if not {"image", "label"} <= set(table.columns):
            raise LabclipError(f"{root}: needs 'image' and 'label' columns")
        base = root.parent
        pairs = [(str((base / i.strip()).resolve()), lab.strip()) for i, lab in zip(table["image"], table["label"])]
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
    classes = sorted({label for _, label in pairs})
    if len(classes) < 2:
        raise LabclipError(f"{root}: found only one class ({classes[0]}); zero-shot evaluation needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    return LabelledImages([p for p, _ in pairs], [index[label] for _, label in pairs], classes)


def compare_templates(model: ClipModel, data: LabelledImages, sets: dict[str, Sequence[str]], k: int = 5,
                      label_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Zero-shot metrics for each template set on the same images (encoded once)."""
    image_emb = model.encode_images(data.paths)
    names = list(label_names or data.classes)
    rows = []
    for name, templates in sets.items():
        probs = probabilities(model, image_emb, class_embeddings(model, names, templates))
        rows.append({"templates": name, "count": len(templates), **zeroshot_metrics(probs, data.truth, k)})
    return pd.DataFrame(rows)
