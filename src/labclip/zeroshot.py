"""Zero-shot classification with prompt templates, and labelled images to evaluate it on.

Figures are :func:`labclip.metrics.zeroshot_metrics`; tables and runs live in :mod:`labclip.lab`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import PACKAGE_DIR
from .data import language_columns, load_captions, read_table, short_names
from .errors import LabclipError, UnknownLanguage
from .images import IMAGE_SUFFIXES
from .metrics import match_probabilities
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
    unit: np.ndarray = (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)
    return unit


def probabilities(model: ClipModel, image_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Softmax over classes of ``logit_scale`` × cosine, one row per image (SigLIP: its per-class sigmoid), as
    :func:`labclip.metrics.match_probabilities` computes it at the model's logit scale and bias."""
    sim = np.asarray(image_emb, np.float64) @ np.asarray(class_emb, np.float64).T
    return match_probabilities(sim, model.logit_scale, model.logit_bias)


@dataclass
class LabelledImages:
    """Image paths, the index of each image's class, and the class names."""

    paths: list[str]
    truth: list[int]
    classes: list[str]

    @property
    def names(self) -> list[str]:
        """The images as reports name them: relative to the folder that holds them all."""
        return short_names(self.paths)


def labelled_images(root: str | os.PathLike[str], language: str = "en") -> LabelledImages:
    """Images with labels, from an ImageFolder tree (``root/<class>/*.jpg``) or a CSV.

    The CSV has an ``image`` column (paths relative to the CSV's folder) and a ``label`` column,
    or one label column per language (``en``, ``ru``), of which ``language`` is used. It is read
    and validated like a caption set (:func:`labclip.data.load_captions`).

    Raises:
        LabclipError: missing folder or file, a bad row (named), no images, fewer than two classes.
    """
    root = Path(root)
    if root.is_file():
        columns = read_table(root, "labels file").columns
        column = "label" if "label" in columns else language
        if "image" not in columns or column not in columns:
            raise UnknownLanguage(f"{root}: needs an 'image' column and a 'label' or {language!r} column "
                                  f"(columns found: {', '.join(columns) or 'none'})", language_columns(columns) if "image" in columns else [])
        table = load_captions(root, root.parent, [column])
        pairs = []
        for image, path, label in zip(table.images, table.paths, table[column]):
            if not isinstance(label, str):
                raise LabclipError(f"{root}: image '{image}' has a list of labels; give one label per image")
            pairs.append((path, label))
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


def language_gaps(labels: str | Path, language: str, sets: Sequence[str] | None = None) -> list[str]:
    """What keeps zero-shot classification from running in ``language``: ``"labels"`` when a labels CSV has
    neither a ``label`` column nor a ``language`` one (a class-folder tree is named in any language), then each
    template set of ``sets`` without a ``language`` version (``sets`` ``None``: gaps only when no set has one).
    """
    gaps = []
    labels = Path(labels)
    if labels.is_file():
        columns = read_table(labels, "labels file").columns
        if "label" not in columns and language not in columns:
            gaps.append("labels")
    names = list(sets) if sets is not None else template_sets()
    missing = [name for name in names if not available_sets([name], language)]
    if sets is not None or len(missing) == len(names):
        gaps += missing
    return gaps


def choose_language(labels: str | Path, language: str, sets: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """The language zero-shot classification runs in: ``language`` when the labels and templates have it,
    else English, the language of every bundled template set and label file.

    Returns:
        ``(language used, what lacked the requested one)`` (see :func:`language_gaps`; empty when it is used).

    Raises:
        LabclipError: neither ``language`` nor English is there; the message says what is missing.
    """
    gaps = language_gaps(labels, language, sets)
    if not gaps:
        return language, []
    english = language_gaps(labels, "en", sets) if language != "en" else gaps
    if english:
        what = " and ".join(_gap_words(gaps, language) + ([] if language == "en" else
                                                           [f"for English: {' and '.join(_gap_words(english, 'en'))}"]))
        raise LabclipError(f"zero-shot classification has nothing to run on: {what}")
    return "en", gaps


def _gap_words(gaps: Sequence[str], language: str) -> list[str]:
    words = [f"the labels have no {language!r} column" for gap in gaps if gap == "labels"]
    sets = [gap for gap in gaps if gap != "labels"]
    if sets:
        words.append(f"template set{'s' * (len(sets) > 1)} {', '.join(sets)} {'have' if len(sets) > 1 else 'has'} "
                     f"no {language!r} version")
    return words


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
