"""Similarity and the figures computed from it: pure functions of score matrices, typed results.

One naming scheme for every task: ``acc1``/``acc{k}`` is top-k accuracy (CLIP_benchmark's names);
paired matching has two directions, so its figures carry ``i2t_`` (image → text) or ``t2i_``
(text → image). ``to_dict()`` gives the flat names that JSON, CSV and tables use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from . import stats
from .errors import LabclipError

# Elements in one block of rows: bounds every temporary of the metrics at a few MB, whatever the matrix size.
BLOCK_ELEMENTS = 1 << 20


def similarity(image_emb: np.ndarray, text_emb: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Cosine similarity of every image with every text.

    Args:
        image_emb: ``(n_images, dim)`` embeddings, any length.
        text_emb: ``(n_texts, dim)`` embeddings, any length.
        dtype: of the result; ``np.float32`` halves the memory of a large matrix.

    Returns:
        ``(n_images, n_texts)`` matrix.
    """
    a: np.ndarray = np.asarray(image_emb, dtype=dtype)
    b: np.ndarray = np.asarray(text_emb, dtype=dtype)
    out: np.ndarray = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    return out


def ranks(scores: np.ndarray, truth: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rank (1 = best) of the true column ``truth[i]`` in each row ``i``; a tie counts against it.

    Zero-shot classification ranks each image's true class this way; :func:`retrieval_ranks` does
    the same for retrieval, with one or several captions per image. Computed in blocks of rows.
    """
    scores = _float_matrix(scores)
    columns = np.asarray(truth)
    true_score = scores[np.arange(len(columns)), columns]
    out = np.empty(len(columns), dtype=np.int64)
    for rows in _row_blocks(scores):
        out[rows] = np.count_nonzero(scores[rows] >= true_score[rows, None], axis=1)
    return out


def correct_ranks(sim: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of the correct caption ``i`` in row ``i`` of a paired set."""
    return retrieval_ranks(sim).i2t


def contrastive_loss(sim: np.ndarray, logit_scale: float = 100.0) -> float:
    """CLIP's symmetric InfoNCE loss of a paired set.

    ``-(1/2N) * sum_i [log softmax_j(s*S)_ii + log softmax_j(s*S^T)_ii]`` with ``s = logit_scale``:
    the mean of the image→text and text→image cross-entropies. The seed report printed this
    formula without the minus sign and without the ½. Computed in blocks of rows.
    """
    sim = _float_matrix(sim)
    correct = logit_scale * np.diag(sim).astype(np.float64)
    i2t = np.mean(row_logsumexp(sim, logit_scale) - correct)
    t2i = np.mean(row_logsumexp(sim.T, logit_scale) - correct)
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
        ranks, margins: the ranks the accuracies come from; per image, correct minus best wrong cosine.
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
    ranks: RetrievalRanks = field(repr=False, compare=False)
    margins: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Flat named figures: ``n, k, i2t_acc1, i2t_acc{k}, i2t_hits1, i2t_mrr, t2i_..., correct_mean, ...``."""
        out: dict[str, Any] = {"n": self.n, "k": self.k, **self.i2t.to_dict("i2t_"), **self.t2i.to_dict("t2i_")}
        out.update({f.name: getattr(self, f.name) for f in fields(self)
                    if f.name not in out and f.name not in ("i2t", "t2i", "ranks", "margins")})
        return out


def match_metrics(sim: np.ndarray, k: int = 3, logit_scale: float = 100.0) -> MatchMetrics:
    """Figures of a paired set, where caption ``i`` belongs to image ``i``.

    Args:
        sim: square ``(n, n)`` cosine-similarity matrix, images in rows (float32 stays float32:
            everything is computed in blocks of rows, without a copy of the matrix).
        k: the cut-off for top-k accuracy.
        logit_scale: the model's temperature, used for the contrastive loss.

    Returns:
        A :class:`MatchMetrics`; a tie with a wrong caption counts as a miss.

    Raises:
        LabclipError: the matrix is not square or is smaller than 2×2.
    """
    sim = _float_matrix(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise LabclipError(f"a paired set needs a square similarity matrix of at least 2x2, got {sim.shape}")
    rank = retrieval_ranks(sim)
    correct = np.diag(sim).astype(np.float64)
    wrong = _off_diagonal_summary(sim, correct)
    best_wrong = wrong.row_max
    separable = bool(correct.min() > wrong.max)
    return MatchMetrics(
        n=len(sim), k=k, i2t=Accuracy.of(rank.i2t, k), t2i=Accuracy.of(rank.t2i, k),
        correct_mean=float(correct.mean()), correct_min=float(correct.min()), correct_max=float(correct.max()),
        wrong_mean=wrong.mean, wrong_min=wrong.min, wrong_max=wrong.max,
        margin_mean=float(np.mean(correct - best_wrong)), margin_min=float(np.min(correct - best_wrong)),
        separable=separable, threshold=float((correct.min() + wrong.max) / 2) if separable else None,
        contrastive_loss=contrastive_loss(sim, logit_scale), ranks=rank, margins=correct - best_wrong,
    )


def topk_undefined(k: int, n_classes: int) -> str | None:
    """Why top-``k`` accuracy over ``n_classes`` classes is undefined, or ``None`` when it is defined.

    With ``k`` classes or fewer every class is among the top ``k``, so the figure would be 100% whatever
    the model does (CLIP_benchmark reports nan for its top-5 below five classes).
    """
    if n_classes > k:
        return None
    return f"top-{k} accuracy is undefined with {n_classes} classes: every class is among the top {k}"


@dataclass(frozen=True)
class ZeroShotMetrics:
    """Zero-shot classification figures (CLIP_benchmark's names): ``acc1``, ``acc{k}``, mean per-class recall.

    ``acck`` is ``None`` when top-k is undefined (``k`` classes or fewer); ``acck_undefined`` says why.
    """

    n: int
    k: int
    acc1: float
    acck: float | None
    mean_per_class_recall: float
    acck_undefined: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat named figures; ``acc{k}_undefined`` (the reason) follows ``acc{k}`` only when it is ``None``."""
        out: dict[str, Any] = {"n": self.n, "k": self.k, "acc1": self.acc1, f"acc{self.k}": self.acck,
               "mean_per_class_recall": self.mean_per_class_recall}
        if self.acck_undefined:
            out[f"acc{self.k}_undefined"] = self.acck_undefined
        return out


def zeroshot_metrics(scores: np.ndarray, truth: Sequence[int] | np.ndarray, k: int = 5) -> ZeroShotMetrics:
    """Top-1/top-k accuracy and mean per-class recall of class scores.

    Args:
        scores: ``(n_images, n_classes)`` scores (e.g. probabilities).
        truth: the true class index of each image.
        k: cut-off of the top-k accuracy; a tie with the true class counts as a miss. With ``k``
            classes or fewer, top-k is undefined: ``acck`` is ``None`` (see :func:`topk_undefined`).
    """
    classes = np.asarray(truth)
    rank = ranks(scores, classes)
    recall = [np.mean(rank[classes == c] == 1) for c in np.unique(classes)]
    undefined = topk_undefined(k, np.shape(scores)[1])
    return ZeroShotMetrics(int(len(classes)), k, float(np.mean(rank == 1)),
                           None if undefined else float(np.mean(rank <= k)), float(np.mean(recall)), undefined)


def zeroshot_estimates(scores: np.ndarray, truth: Sequence[int] | np.ndarray, k: int = 5,
                       seed: int = 0) -> dict[str, stats.Estimate]:
    """The figures of :func:`zeroshot_metrics` with their 95% intervals, keyed by the same names.

    ``acc1`` and ``acc{k}`` carry Wilson score intervals; ``mean_per_class_recall`` the interval of
    :func:`labclip.stats.class_balanced` (seeded by ``seed``). ``acc{k}`` is left out where it is undefined
    (:func:`topk_undefined`).
    """
    classes = np.asarray(truth)
    rank = ranks(scores, classes)
    out = {"acc1": stats.proportion(rank == 1)}
    if topk_undefined(k, np.shape(scores)[1]) is None:
        out[f"acc{k}"] = stats.proportion(rank <= k)
    return {**out, "mean_per_class_recall": stats.class_balanced(rank == 1, classes, seed=seed)}


def distractor_counts(sim: np.ndarray, k: int = 3) -> np.ndarray:
    """For each caption, how many images other than its own rank it among their top ``k``."""
    counts = np.zeros(np.shape(sim)[1], dtype=int)
    for i, row in enumerate(topk_indices(sim, k)):
        for j in row:
            if j != i:
                counts[j] += 1
    return counts


def confusion_matrix(scores: np.ndarray, truth: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts of true class (rows) against predicted class (columns)."""
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (np.asarray(truth), np.asarray(scores).argmax(axis=1)), 1)
    return matrix


@dataclass(frozen=True)
class RetrievalRanks:
    """Ranks of the right answers in both retrieval directions; a tie with a wrong answer counts against.

    Attributes:
        i2t: ``(n_images,)`` rank (1 = best) of each image's best-scoring own caption among all
            captions: image→text recall@k counts a hit when any of the image's captions is in the top k.
        t2i: ``(n_captions,)`` rank of each caption's own image among all images.
        owner: ``(n_captions,)`` the image (row) each caption belongs to.
    """

    i2t: np.ndarray
    t2i: np.ndarray
    owner: np.ndarray

    def hits(self, k: int = 1) -> dict[str, np.ndarray]:
        """Whether each image (``"i2t"``) and each caption (``"t2i"``) has its right answer among the top ``k``."""
        return {"i2t": self.i2t <= k, "t2i": self.t2i <= k}

    def metrics(self, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
        """Named figures: ``n_images``, ``n_captions``, ``i2t_acc{k}``/``t2i_acc{k}`` (recall@k, fractions)
        with ``i2t_hits{k}``/``t2i_hits{k}`` counts for every k, and ``i2t_mrr``/``t2i_mrr``. For a
        paired set the names and values agree with :meth:`MatchMetrics.to_dict`."""
        out: dict[str, Any] = {"n_images": len(self.i2t), "n_captions": len(self.t2i)}
        for k in ks:
            for direction, ranks in (("i2t", self.i2t), ("t2i", self.t2i)):
                hits = int(np.count_nonzero(ranks <= k))
                out[f"{direction}_acc{k}"] = hits / len(ranks)
                out[f"{direction}_hits{k}"] = hits
        out["i2t_mrr"] = float(np.mean(1.0 / self.i2t))
        out["t2i_mrr"] = float(np.mean(1.0 / self.t2i))
        return out

    def estimates(self, ks: Sequence[int] = (1, 5, 10), confidence: float = stats.CONFIDENCE,
                  seed: int = 0) -> dict[str, stats.Estimate]:
        """The figures of :meth:`metrics` with 95% intervals, keyed by the same names.

        Image→text figures have one value per image (Wilson; bootstrap for MRR). Text→image figures
        have one per caption; with several captions per image the interval is a bootstrap over
        images, since an image's captions succeed or fail together.
        """
        groups = None if len(self.t2i) == len(self.i2t) else self.owner
        out: dict[str, stats.Estimate] = {}
        for k in ks:
            out[f"i2t_acc{k}"] = stats.proportion(self.i2t <= k, confidence=confidence)
            out[f"t2i_acc{k}"] = stats.proportion(self.t2i <= k, groups, confidence, seed)
        out["i2t_mrr"] = stats.mean(1.0 / self.i2t, confidence=confidence, seed=seed)
        out["t2i_mrr"] = stats.mean(1.0 / self.t2i, groups, confidence=confidence, seed=seed)
        return out


def retrieval_ranks(sim: np.ndarray, owner: Sequence[int] | np.ndarray | None = None) -> RetrievalRanks:
    """Ranks for retrieval with one or several captions per image, in blocks of rows.

    Memory beyond ``sim`` is O(n_images + n_captions) plus one block; ``sim`` is never copied,
    so a float32 matrix stays float32.

    Args:
        sim: ``(n_images, n_captions)`` similarities, images in rows.
        owner: the image (row index) of each caption; ``None`` for a paired set (caption ``i``
            belongs to image ``i``, ``sim`` square).

    Raises:
        LabclipError: ``owner`` has the wrong length, names a missing image, or leaves an image
            without a caption.
    """
    sim = _float_matrix(sim)
    if sim.ndim != 2 or min(sim.shape) < 1:
        raise LabclipError(f"retrieval needs a 2-D similarity matrix with images in rows, got shape {sim.shape}")
    n, m = sim.shape
    if owner is None:
        if n != m:
            raise LabclipError(f"a {n}x{m} similarity matrix is not a paired set; pass owner= (the image of each caption)")
        owner = np.arange(n)
    owner = np.asarray(owner)
    if owner.shape != (m,) or not np.issubdtype(owner.dtype, np.integer):
        raise LabclipError(f"owner must give one image index per caption ({m}), got shape {owner.shape} {owner.dtype}")
    if m and (owner.min() < 0 or owner.max() >= n):
        raise LabclipError(f"owner names images outside 0..{n - 1}")
    captions_per_image = np.bincount(owner, minlength=n)
    if not captions_per_image.all():
        raise LabclipError(f"{int(np.sum(captions_per_image == 0))} image(s) have no caption; "
                           f"image {int(np.argmin(captions_per_image))} is the first")
    correct = sim[owner, np.arange(m)]
    best = np.full(n, -np.inf, dtype=sim.dtype)
    np.maximum.at(best, owner, correct)
    own_at_best = np.bincount(owner, weights=correct >= best[owner], minlength=n).astype(np.int64)
    i2t = np.empty(n, dtype=np.int64)
    t2i = np.zeros(m, dtype=np.int64)
    for rows in _row_blocks(sim):
        block = sim[rows]
        i2t[rows] = np.count_nonzero(block >= best[rows, None], axis=1) - own_at_best[rows] + 1
        t2i += np.count_nonzero(block >= correct, axis=0)
    return RetrievalRanks(i2t=i2t, t2i=t2i, owner=owner)


def retrieval_metrics(sim: np.ndarray, owner: Sequence[int] | np.ndarray | None = None,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Recall@k in both directions and MRR, CLIP_benchmark style, for several captions per image.

    Text→image recall@k is the share of captions whose image is among the k best images;
    image→text recall@k is the share of images with any of their captions among the k best
    captions. Ties with a wrong answer count as misses. See :class:`RetrievalRanks` for the names.
    """
    return retrieval_ranks(sim, owner).metrics(ks)


def row_logsumexp(sim: np.ndarray, logit_scale: float = 1.0) -> np.ndarray:
    """``log(sum_j exp(logit_scale * sim[i, j]))`` per row, in blocks (the softmax denominators)."""
    sim = _float_matrix(sim)
    out = np.empty(sim.shape[0])
    for rows in _row_blocks(sim):
        logits = sim[rows].astype(np.float64)
        logits *= logit_scale
        peak = logits.max(axis=1, keepdims=True)
        logits -= peak
        np.exp(logits, out=logits)
        out[rows] = peak[:, 0] + np.log(logits.sum(axis=1))
    return out


def match_probabilities(sim: np.ndarray, logit_scale: float = 100.0, logit_bias: float | None = None,
                        columns: np.ndarray | None = None) -> np.ndarray:
    """Match probabilities of an images × captions cosine matrix, as the model scores a pair: the softmax over
    captions at ``logit_scale`` (CLIP), or with a ``logit_bias`` (SigLIP) each pair's own
    ``sigmoid(logit_scale * cosine + logit_bias)``. ``columns`` (one row of caption indices per image, e.g.
    :func:`topk_indices`) keeps only those cells; the softmax still runs over every caption."""
    sim = np.asarray(sim)
    logits = logit_scale * (sim if columns is None else np.take_along_axis(sim, columns, axis=1)).astype(np.float64)
    log_p = -np.logaddexp(0.0, -(logits + logit_bias)) if logit_bias is not None else logits - row_logsumexp(
        sim, logit_scale)[:, None]
    return np.exp(log_p)


def topk_indices(sim: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` largest values per row, best first, ties in column order.

    The same as ``np.argsort(-sim, axis=1, kind="stable")[:, :k]`` without sorting whole rows.

    Returns:
        ``(n_rows, min(k, n_cols))`` integer array.
    """
    sim = _float_matrix(sim)
    k = max(0, min(int(k), sim.shape[1]))
    out = np.empty((sim.shape[0], k), dtype=np.intp)
    if k == 0:
        return out
    for rows in _row_blocks(sim):
        block = sim[rows]
        kth = -np.partition(-block, k - 1, axis=1)[:, k - 1]
        for r, row in enumerate(block):
            candidates = np.flatnonzero(row >= kth[r])
            out[rows.start + r] = candidates[np.lexsort((candidates, -row[candidates]))][:k]
    return out


@dataclass(frozen=True)
class _OffDiagonal:
    mean: float
    min: float
    max: float
    row_max: np.ndarray


def _off_diagonal_summary(sim: np.ndarray, diag: np.ndarray) -> _OffDiagonal:
    """Mean, min and max of the wrong pairs and the best wrong caption per image, one block at a time."""
    n = len(sim)
    row_max = np.empty(n)
    low, high = np.inf, -np.inf
    for rows in _row_blocks(sim):
        block = sim[rows].copy()
        local = (np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop))
        block[local] = -np.inf
        row_max[rows] = block.max(axis=1)
        high = max(high, float(row_max[rows].max()))
        block[local] = np.inf
        low = min(low, float(block.min()))
    total = float(sim.sum(dtype=np.float64)) - float(diag.sum())
    return _OffDiagonal(mean=total / (n * n - n), min=low, max=high, row_max=row_max)


def _float_matrix(sim: Any) -> np.ndarray:
    """``sim`` as an array without a copy when it is already float32 or float64."""
    found: np.ndarray = np.asarray(sim)
    return found if found.dtype in (np.float32, np.float64) else found.astype(np.float64)


def _row_blocks(sim: np.ndarray) -> Iterator[slice]:
    step = max(1, BLOCK_ELEMENTS // max(1, sim.shape[1]))
    for start in range(0, sim.shape[0], step):
        yield slice(start, min(start + step, sim.shape[0]))
