"""Similarity and the figures computed from it: pure functions of score matrices, typed results.

One naming scheme for every task: ``acc1``/``acc{k}`` is top-k accuracy (CLIP_benchmark's names);
paired matching has two directions, so its figures carry ``i2t_`` (image → text) or ``t2i_``
(text → image). ``to_dict()`` gives the flat names that JSON, CSV and tables use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .errors import LabclipError


def similarity(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity of every image with every text.

    Returns:
        ``(n_images, n_texts)`` float64 matrix.
    """
    a = np.asarray(image_emb, dtype=np.float64)
    b = np.asarray(text_emb, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def ranks(scores: np.ndarray, truth: Sequence[int]) -> np.ndarray:
    """Rank (1 = best) of the true column ``truth[i]`` in each row ``i``; a tie counts against it."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth)
    true_score = scores[np.arange(len(truth)), truth][:, None]
    return (scores >= true_score).sum(axis=1)


def correct_ranks(sim: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of the correct caption ``i`` in row ``i`` of a paired set."""
    return ranks(sim, np.arange(len(sim)))


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores of each row, best first (ties keep column order)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")[:, :k]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    return np.exp(_log_softmax(np.asarray(x, dtype=np.float64)))


def contrastive_loss(sim: np.ndarray, logit_scale: float = 100.0) -> float:
    """CLIP's symmetric InfoNCE loss of a paired set.

    ``-(1/2N) * sum_i [log softmax_j(s*S)_ii + log softmax_j(s*S^T)_ii]`` with ``s = logit_scale``:
    the mean of the image→text and text→image cross-entropies. The seed report printed this
    formula without the minus sign and without the ½.
    """
    logits = logit_scale * np.asarray(sim, dtype=np.float64)
    i2t = -np.diag(_log_softmax(logits)).mean()
    t2i = -np.diag(_log_softmax(logits.T)).mean()
    return float((i2t + t2i) / 2)


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-k accuracy of ranks (fractions), the top-1 count and the mean reciprocal rank."""

    k: int
    acc1: float
    acck: float
    hits1: int
    mrr: float

    @classmethod
    def of(cls, rank: np.ndarray, k: int) -> Accuracy:
        return cls(k, float(np.mean(rank == 1)), float(np.mean(rank <= k)), int(np.sum(rank == 1)),
                   float(np.mean(1.0 / rank)))

    def to_dict(self, prefix: str = "") -> dict[str, float | int]:
        return {f"{prefix}acc1": self.acc1, f"{prefix}acc{self.k}": self.acck, f"{prefix}hits1": self.hits1,
                f"{prefix}mrr": self.mrr}


def accuracy_keys(k: int) -> tuple[str, str, str, str]:
    """The flat names of a paired set's accuracies: image→text and text→image, top-1 and top-``k``."""
    return "i2t_acc1", f"i2t_acc{k}", "t2i_acc1", f"t2i_acc{k}"


@dataclass(frozen=True)
class MatchMetrics:
    """Figures of a paired set (caption ``i`` belongs to image ``i``).

    Attributes:
        n: pairs; k: the top-k cut-off.
        i2t: image → text accuracy (each image ranks all captions).
        t2i: text → image accuracy (each caption ranks all images).
        correct_mean, correct_min, correct_max: cosine of the correct pairs.
        wrong_mean, wrong_min, wrong_max: cosine of all other pairs.
        margin_mean, margin_min: per image, correct caption minus the best wrong caption.
        separable: every correct pair scores above every wrong pair.
        threshold: midpoint of the gap between wrong and correct pairs (``None`` when they overlap).
        contrastive_loss: CLIP's symmetric InfoNCE loss at the model's logit scale.
    """

    n: int
    k: int
    i2t: Accuracy
    t2i: Accuracy
    correct_mean: float
    correct_min: float
    correct_max: float
    wrong_mean: float
    wrong_min: float
    wrong_max: float
    margin_mean: float
    margin_min: float
    separable: bool
    threshold: float | None
    contrastive_loss: float

    def to_dict(self) -> dict:
        """Flat named figures: ``n, k, i2t_acc1, i2t_acc{k}, i2t_hits1, i2t_mrr, t2i_..., correct_mean, ...``."""
        out = {"n": self.n, "k": self.k, **self.i2t.to_dict("i2t_"), **self.t2i.to_dict("t2i_")}
        out.update({key: value for key, value in asdict(self).items() if key not in out and key not in ("i2t", "t2i")})
        return out


def match_metrics(sim: np.ndarray, k: int = 3, logit_scale: float = 100.0) -> MatchMetrics:
    """Figures of a paired set, where caption ``i`` belongs to image ``i``.

    Args:
        sim: square ``(n, n)`` cosine-similarity matrix, images in rows.
        k: the cut-off for top-k accuracy.
        logit_scale: the model's temperature, used for the contrastive loss.

    Returns:
        A :class:`MatchMetrics`; a tie with a wrong caption counts as a miss.

    Raises:
        LabclipError: the matrix is not square or is smaller than 2×2.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise LabclipError(f"a paired set needs a square similarity matrix of at least 2x2, got {sim.shape}")
    n = len(sim)
    off = ~np.eye(n, dtype=bool)
    correct, wrong = np.diag(sim), sim[off]
    best_wrong = np.where(off, sim, -np.inf).max(axis=1)
    separable = bool(correct.min() > wrong.max())
    return MatchMetrics(
        n=n, k=k, i2t=Accuracy.of(correct_ranks(sim), k), t2i=Accuracy.of(correct_ranks(sim.T), k),
        correct_mean=float(correct.mean()), correct_min=float(correct.min()), correct_max=float(correct.max()),
        wrong_mean=float(wrong.mean()), wrong_min=float(wrong.min()), wrong_max=float(wrong.max()),
        margin_mean=float(np.mean(correct - best_wrong)), margin_min=float(np.min(correct - best_wrong)),
        separable=separable, threshold=float((correct.min() + wrong.max()) / 2) if separable else None,
        contrastive_loss=contrastive_loss(sim, logit_scale),
    )


@dataclass(frozen=True)
class ZeroShotMetrics:
    """Zero-shot classification figures (CLIP_benchmark's names): ``acc1``, ``acc{k}``, mean per-class recall."""

    n: int
    k: int
    acc1: float
    acck: float
    mean_per_class_recall: float

    def to_dict(self) -> dict:
        return {"n": self.n, "k": self.k, "acc1": self.acc1, f"acc{self.k}": self.acck,
                "mean_per_class_recall": self.mean_per_class_recall}


def zeroshot_metrics(scores: np.ndarray, truth: Sequence[int], k: int = 5) -> ZeroShotMetrics:
    """Top-1/top-k accuracy and mean per-class recall of class scores.

    Args:
        scores: ``(n_images, n_classes)`` scores (e.g. probabilities).
        truth: the true class index of each image.
        k: cut-off of the top-k accuracy; a tie with the true class counts as a miss.
    """
    truth = np.asarray(truth)
    rank = ranks(scores, truth)
    recall = [np.mean(rank[truth == c] == 1) for c in np.unique(truth)]
    return ZeroShotMetrics(int(len(truth)), k, float(np.mean(rank == 1)), float(np.mean(rank <= k)),
                           float(np.mean(recall)))


def distractor_counts(sim: np.ndarray, k: int = 3) -> np.ndarray:
    """For each caption, how many images other than its own rank it among their top ``k``."""
    counts = np.zeros(np.asarray(sim).shape[1], dtype=int)
    for i, row in enumerate(top_indices(sim, k)):
        for j in row:
            if j != i:
                counts[j] += 1
    return counts


def confusion_matrix(scores: np.ndarray, truth: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts of true class (rows) against predicted class (columns)."""
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (np.asarray(truth), np.asarray(scores).argmax(axis=1)), 1)
    return matrix
