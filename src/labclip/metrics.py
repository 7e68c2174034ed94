"""Similarity and paired-set matching metrics: pure functions of a similarity matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

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


def correct_ranks(sim: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of the correct caption ``i`` in row ``i``; a tie counts against it."""
    sim = np.asarray(sim, dtype=np.float64)
    diag = np.diag(sim)[:, None]
    beaten = (sim >= diag) & ~np.eye(len(sim), dtype=bool)
    return 1 + beaten.sum(axis=1)


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


def match_metrics(sim: np.ndarray, k: int = 3, logit_scale: float = 100.0) -> dict:
    """Named figures for a paired set, where caption ``i`` belongs to image ``i``.

    Args:
        sim: square ``(n, n)`` cosine-similarity matrix, images in rows.
        k: the cut-off for top-k accuracy.
        logit_scale: the model's temperature, used for the contrastive loss.

    Returns:
        ``n``, ``i2t_top1``, ``i2t_top{k}``, ``t2i_top1``, ``t2i_top{k}`` (fractions),
        ``i2t_top1_hits``, ``t2i_top1_hits`` (counts), ``i2t_mrr``, ``t2i_mrr``,
        ``correct_mean/min/max``, ``wrong_mean/min/max``, ``margin_mean/min`` (correct caption
        minus the best wrong caption, per image), ``separable``, ``threshold`` (midpoint of the
        gap between wrong and correct pairs, ``None`` when they overlap) and ``contrastive_loss``.
        A tie with a wrong caption counts as a miss.

    Raises:
        LabclipError: the matrix is not square or is smaller than 2×2.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise LabclipError(f"a paired set needs a square similarity matrix of at least 2x2, got {sim.shape}")
    n = len(sim)
    off = ~np.eye(n, dtype=bool)
    correct, wrong = np.diag(sim), sim[off]
    i2t, t2i = correct_ranks(sim), correct_ranks(sim.T)
    best_wrong = np.where(off, sim, -np.inf).max(axis=1)
    separable = bool(correct.min() > wrong.max())
    return {
        "n": n,
        "k": k,
        "i2t_top1": float(np.mean(i2t == 1)),
        f"i2t_top{k}": float(np.mean(i2t <= k)),
        "t2i_top1": float(np.mean(t2i == 1)),
        f"t2i_top{k}": float(np.mean(t2i <= k)),
        "i2t_top1_hits": int(np.sum(i2t == 1)),
        "t2i_top1_hits": int(np.sum(t2i == 1)),
        "i2t_mrr": float(np.mean(1.0 / i2t)),
        "t2i_mrr": float(np.mean(1.0 / t2i)),
        "correct_mean": float(correct.mean()),
        "correct_min": float(correct.min()),
        "correct_max": float(correct.max()),
        "wrong_mean": float(wrong.mean()),
        "wrong_min": float(wrong.min()),
        "wrong_max": float(wrong.max()),
        "margin_mean": float(np.mean(correct - best_wrong)),
        "margin_min": float(np.min(correct - best_wrong)),
        "separable": separable,
        "threshold": float((correct.min() + wrong.max()) / 2) if separable else None,
        "contrastive_loss": contrastive_loss(sim, logit_scale),
    }


def topk_table(
    sim: np.ndarray,
    captions: Sequence[str],
    k: int = 3,
    logit_scale: float = 100.0,
    images: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The ``k`` best captions of every image, with cosine and softmax probability.

    The probability is the softmax over all captions at ``logit_scale``, as CLIP's zero-shot
    prediction computes it. ``correct`` marks caption ``i`` for image ``i`` when the set is paired.

    Returns:
        Columns ``image, rank, caption, cosine, probability, correct``; ``k`` rows per image.
    """
    sim = np.asarray(sim, dtype=np.float64)
    probs = softmax(logit_scale * sim)
    names = list(images) if images is not None else [str(i) for i in range(len(sim))]
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    paired = sim.shape[0] == sim.shape[1]
    rows = [
        {
            "image": names[i],
            "rank": r + 1,
            "caption": captions[j],
            "cosine": sim[i, j],
            "probability": probs[i, j],
            "correct": bool(paired and i == j),
        }
        for i in range(len(sim))
        for r, j in enumerate(order[i])
    ]
    return pd.DataFrame(rows, columns=["image", "rank", "caption", "cosine", "probability", "correct"])


def frequent_distractors(sim: np.ndarray, captions: Sequence[str], k: int = 3) -> pd.DataFrame:
    """How many images' top-``k`` lists each wrong caption enters, most frequent first.

    Returns:
        Columns ``caption, appearances``; only captions that appear at least once.
    """
    sim = np.asarray(sim, dtype=np.float64)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    counts = np.zeros(sim.shape[1], dtype=int)
    for i, row in enumerate(order):
        for j in row:
            if j != i:
                counts[j] += 1
    table = pd.DataFrame({"caption": list(captions), "appearances": counts})
    table = table[table.appearances > 0]
    return table.sort_values("appearances", ascending=False, kind="stable").reset_index(drop=True)
