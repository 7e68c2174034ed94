"""Few-shot image classifiers that fit on a CPU in seconds, and their out-of-fold evaluation.

A **linear probe** on image embeddings (scikit-learn logistic regression, ``C=0.316`` as in OpenAI's
CLIP README) and **Tip-Adapter** (Zhang et al. 2022, a training-free cache model), with seeded k-shot
sampling; :func:`evaluate_few_shot` scores both against zero-shot on held-out images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .adapter import _as_matrix, _unit_rows
from .crossval import Split, outer_folds, paired_row, rate_row
from .errors import LabclipError


def sample_k_shot(labels: Sequence[int] | np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` examples per class, drawn without replacement (all of a class with fewer).

    Returns:
        Sorted indices into ``labels``; the same seed gives the same draw.
    """
    if k < 1:
        raise LabclipError(f"k must be at least 1, got {k}")
    found = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(found == c), size=min(k, int(np.sum(found == c))), replace=False)
              for c in np.unique(found)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=int)


def linear_probe(
    train_emb: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    test_emb: np.ndarray,
    C: float = 0.316,
    n_classes: int | None = None,
    max_iter: int = 1000,
) -> np.ndarray:
    """Logistic-regression probe on image embeddings, as in OpenAI's CLIP README.

    Args:
        train_emb, train_labels: the labelled examples (class indices ``0 … n_classes-1``).
        test_emb: embeddings to classify.
        C: inverse L2 strength (0.316 in the README; tune it on training data only).
        n_classes: number of classes; classes absent from training get probability 0.

    Returns:
        ``(len(test_emb), n_classes)`` class probabilities.
    """
    labels = np.asarray(train_labels)
    n = int(n_classes if n_classes is not None else labels.max() + 1)
    probs = np.zeros((len(test_emb), n))
    present = np.unique(labels)
    if len(present) == 1:
        probs[:, present[0]] = 1.0
        return probs
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=0)
    clf.fit(np.asarray(train_emb, np.float64), labels)
    probs[:, clf.classes_] = clf.predict_proba(np.asarray(test_emb, np.float64))
    return probs


def tip_adapter(
    train_emb: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    test_emb: np.ndarray,
    class_text_emb: np.ndarray,
    alpha: float = 1.0,
    beta: float = 5.5,
    logit_scale: float = 100.0,
) -> np.ndarray:
    """Tip-Adapter (Zhang et al. 2022), training-free: zero-shot logits plus a cache model.

    ``logits = logit_scale · test @ Wᵀ + alpha · exp(-beta (1 - test @ trainᵀ)) @ onehot(train_labels)``,
    where ``W`` holds the class text embeddings. ``alpha = 0`` is zero-shot. The defaults are the
    paper's ImageNet values.

    Returns:
        ``(len(test_emb), n_classes)`` logits.
    """
    text = np.asarray(class_text_emb, np.float64)
    test = np.asarray(test_emb, np.float64)
    labels = np.asarray(train_labels)
    onehot = np.zeros((len(labels), len(text)))
    onehot[np.arange(len(labels)), labels] = 1.0
    affinity = np.exp(-beta * (1.0 - test @ np.asarray(train_emb, np.float64).T))
    logits: np.ndarray = logit_scale * (test @ text.T) + alpha * (affinity @ onehot)
    return logits


@dataclass
class FewShotEvaluation:
    """Held-out accuracy of zero-shot, linear-probe and Tip-Adapter classifiers, per image.

    Attributes:
        truth: class index per image.
        hits: ``hits[(method, k)]`` boolean top-1 hits over images for ``method`` ``"probe"`` or
            ``"tip"`` with ``k`` shots per class, and ``hits[("zero-shot", 0)]``.
        shots_used: ``shots_used[k]``: the fewest examples a class actually had (a class with fewer
            than ``k`` training images gives all it has).
        folds: ``(train, test)`` image indices of each fold.
    """

    truth: np.ndarray
    hits: dict[tuple[str, int], np.ndarray]
    shots_used: dict[int, int]
    folds: list[Split]

    def counts(self) -> list[dict[str, Any]]:
        """One row per method and shot count: ``method, shots, shots_used, hits, n, acc1, low, high``
        (``low``/``high``: 95% Wilson interval of ``acc1``)."""
        return [rate_row({"method": m, "shots": k, "shots_used": self.shots_used.get(k, 0)}, h, "acc1")
                for (m, k), h in self.hits.items()]

    def paired(self) -> list[dict[str, Any]]:
        """Exact McNemar test of each method against zero-shot on the same images: ``method, shots,
        only_zero_shot, only_method, n, p_value``."""
        zero = self.hits[("zero-shot", 0)]
        return [paired_row({"method": m, "shots": k}, zero, h, "zero_shot", "method")
                for (m, k), h in self.hits.items() if m != "zero-shot"]


@dataclass(frozen=True)
class _Classifiers:
    """The settings of the two few-shot classifiers."""

    C: float
    tip_alpha: float
    tip_beta: float
    logit_scale: float


def evaluate_few_shot(
    image_emb: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    class_text_emb: np.ndarray,
    shots: Iterable[int] = (1, 2, 4, 8, 16),
    folds: int | str = 5,
    seed: int = 0,
    C: float = 0.316,
    tip_alpha: float = 1.0,
    tip_beta: float = 5.5,
    logit_scale: float = 100.0,
) -> FewShotEvaluation:
    """k-shot linear probe and Tip-Adapter against zero-shot, every image scored out of fold.

    In each fold over images, ``k`` shots per class are drawn (seeded) from the training images
    only, and the held-out images are classified. Zero-shot uses the class text embeddings alone.

    Args:
        image_emb: ``(n, dim)`` image embeddings.
        labels: true class index of each image.
        class_text_emb: ``(n_classes, dim)`` class text embeddings (e.g. prompt ensembles).
        shots: the ``k`` values.
        folds: number of (stratified where possible) folds, or ``"loo"``.
        seed: the fold shuffle and the k-shot draws.

    Returns:
        A :class:`FewShotEvaluation`.
    """
    images = _unit_rows(_as_matrix("image_emb", image_emb)).astype(np.float64)
    text = _as_matrix("class_text_emb", class_text_emb, images.shape[1])
    truth = np.asarray(labels)
    n = len(images)
    if len(truth) != n or truth.min(initial=0) < 0 or truth.max(initial=0) >= len(text):
        raise LabclipError(f"need one label in 0..{len(text) - 1} per image, got {len(truth)} labels for {n} images")
    splits = outer_folds(n, np.arange(n), folds, seed, strata=truth)
    ks = sorted(set(shots))
    pred = {("zero-shot", 0): (images @ np.asarray(text, np.float64).T).argmax(axis=1)}
    pred.update({(m, k): np.full(n, -1) for k in ks for m in ("probe", "tip")})
    used = {k: _fit_folds(images, truth, text, splits, k, seed, pred, _Classifiers(C, tip_alpha, tip_beta,
                                                                                     logit_scale)) for k in ks}
    hits = {key: p == truth for key, p in pred.items()}
    return FewShotEvaluation(truth, hits, used, splits)


def _fit_folds(images: np.ndarray, truth: np.ndarray, text: np.ndarray, splits: list[Split], k: int, seed: int,
               pred: dict[tuple[str, int], np.ndarray], settings: _Classifiers) -> int:
    """Fill ``pred`` for ``k`` shots in every fold; return the fewest shots a class actually had."""
    used = np.inf
    for f, (train, test) in enumerate(splits):
        pick = train[sample_k_shot(truth[train], k, seed=seed * 1000 + f)]
        used = min(used, np.bincount(truth[pick], minlength=len(text))[np.unique(truth)].min())
        pred[("probe", k)][test] = linear_probe(images[pick], truth[pick], images[test], C=settings.C,
                                                n_classes=len(text)).argmax(axis=1)
        pred[("tip", k)][test] = tip_adapter(images[pick], truth[pick], images[test], text, settings.tip_alpha,
                                             settings.tip_beta, settings.logit_scale).argmax(axis=1)
    return int(used)

