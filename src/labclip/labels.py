"""Metric labels and the one number format of reports, notebooks and the console (no heavy imports).

Percentages have one decimal, counts read ``k/n``, similarities and losses three decimals, flags
yes/no, a missing value "—"; never a raw key, ``None``, ``False`` or ``nan``.
"""

from __future__ import annotations

import math
import re
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from .stats import Estimate

METRIC_LABELS = {
    "n": "Images", "n_images": "Images", "n_captions": "Captions", "k": "Top-k cut-off",
    "i2t_mrr": "Image→text mean reciprocal rank", "t2i_mrr": "Text→image mean reciprocal rank",
    "correct_mean": "Correct pairs: mean cosine", "correct_min": "Correct pairs: lowest cosine",
    "correct_max": "Correct pairs: highest cosine", "wrong_mean": "Wrong pairs: mean cosine",
    "wrong_min": "Wrong pairs: lowest cosine", "wrong_max": "Wrong pairs: highest cosine",
    "margin_mean": "Mean margin", "margin_min": "Smallest margin", "separable": "Separable",
    "threshold": "Threshold", "contrastive_loss": "Contrastive loss",
    "mean_per_class_recall": "Mean per-class recall",
    "gap_pp": "Gap to English (points)", "gap_ratio": "English ÷ this",
    "model": "Model", "language": "Language", "strategy": "Strategy", "templates": "Template set", "count": "Templates",
    "image": "Image", "rank": "Rank", "caption": "Caption", "cosine": "Cosine", "probability": "Probability",
    "correct": "Correct", "appearances": "Appearances", "label": "Label", "images": "Images", "class": "Class",
    "accuracy": "Top-1 accuracy", "direction": "Direction", "captions": "Captions", "method": "Method",
    "shots": "Shots per class", "shots_used": "Fewest shots used", "p_vs_zero_shot": "p vs zero-shot (exact McNemar)",
    "training_accuracy": "On its training images", "held_out_accuracy": "Held out",
}
SHORT_LABELS = {"i2t_mrr": "Image→text MRR", "t2i_mrr": "Text→image MRR", "correct_mean": "Mean correct cosine",
                "gap_pp": "Gap to English"}
_TOPK = re.compile(r"^(i2t|t2i)_acc(\d+)$")
_HITS = re.compile(r"^(i2t|t2i)_hits(\d+)$")
_ACC = re.compile(r"^acc(\d+)$")
# The two retrieval directions of a paired set as reports name them, in the order of the flat metric names.
DIRECTIONS: dict[str, str] = {"i2t": "image→text", "t2i": "text→image"}
_THREE_DECIMALS = {"i2t_mrr", "t2i_mrr", "correct_mean", "correct_min", "correct_max", "wrong_mean", "wrong_min",
                   "wrong_max", "margin_mean", "margin_min", "threshold", "contrastive_loss", "cosine"}


def share(hits: int, n: int) -> str:
    """``"10/12 (83.3% [55.2%, 95.3%])"``: a count, its rate and the rate's 95% Wilson interval."""
    return f"{hits}/{n} ({interval(hits, n)})"


def interval(hits: int, n: int) -> str:
    """``"83.3% [55.2%, 95.3%]"``: a rate with its 95% Wilson score interval."""
    from .stats import wilson_interval

    low, high = wilson_interval(hits, n)
    return f"{100 * hits / n:.1f}% [{100 * low:.1f}%, {100 * high:.1f}%]"


def rate(x: float, n: int) -> str:
    """An accuracy over ``n`` images (a fraction) as :func:`interval` shows it."""
    return interval(round(float(x) * n), n)


def estimate(e: Estimate) -> str:
    """A rate with its interval (a :class:`labclip.stats.Estimate`) as :func:`interval` shows one:
    ``"54.0% [50.9%, 57.1%]"``."""
    return f"{pct(e.value)} [{pct(e.low)}, {pct(e.high)}]"


def _is_estimate(value: object) -> TypeGuard[Estimate]:
    return all(hasattr(value, name) for name in ("value", "low", "high"))


def p_value(p: float) -> str:
    """``"p = 0.0312"``, or ``"p < 0.001"``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def num(x: float, digits: int = 3) -> str:
    """Fixed decimals without a negative zero."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"


def metric_label(key: str, short: bool = False) -> str:
    """The human label of a metric key, e.g. ``"i2t_acc3"`` → ``"Image→text top-3"``."""
    if short and key in SHORT_LABELS:
        return SHORT_LABELS[key]
    if found := _TOPK.match(key):
        return f"{DIRECTIONS[found[1]].capitalize()} top-{found[2]}"
    if found := _HITS.match(key):
        return f"{DIRECTIONS[found[1]].capitalize()} top-{found[2]} hits"
    if found := _ACC.match(key):
        return f"Top-{found[1]} accuracy"
    if key.endswith("_undefined"):
        return f"{metric_label(key.removesuffix('_undefined'), short)}: why undefined"
    return METRIC_LABELS.get(key, key.replace("_", " ").capitalize())


def is_hit_count(key: str) -> bool:
    """Whether a metric key is a count of hits (``i2t_hits1``), which tables show inside the accuracy's ``k/n``."""
    return bool(_HITS.match(key))


def missing(value: object) -> bool:
    """``None`` or NaN (of any float type)."""
    return value is None or (isinstance(value, Real) and not isinstance(value, Integral) and math.isnan(value))


def format_metric(key: str, value: Any, n: int | None = None) -> str:
    """One number as every table, prose and console line shows it.

    Accuracies are percentages with one decimal, as ``k/n (p%)`` when ``n`` is given (with the 95%
    Wilson interval); an accuracy, mean per-class recall or three-decimal figure (MRR) given as an estimate
    (:class:`labclip.stats.Estimate`) carries its own interval, an accuracy after its ``k/n``; counts of
    hits are ``k/n``; similarities, margins, MRR and losses have three decimals; yes/no for flags;
    ``"—"`` for a missing value (``None`` or NaN).
    """
    if missing(value):
        return "—"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if _is_estimate(value) and (_TOPK.match(key) or _ACC.match(key) or key == "accuracy"):
        return f"{value.hits}/{value.n} ({estimate(value)})" if value.hits is not None else estimate(value)
    if _is_estimate(value) and key in _THREE_DECIMALS:
        return f"{num(value.value)} [{num(value.low)}, {num(value.high)}]"
    if _TOPK.match(key) or _ACC.match(key):
        return share(round(float(value) * n), n) if n else pct(float(value))
    if key in ("mean_per_class_recall", "probability", "accuracy"):
        return estimate(value) if _is_estimate(value) else pct(float(value))
    if _HITS.match(key):
        return f"{int(value)}/{n}" if n else str(int(value))
    if key in _THREE_DECIMALS:
        return num(float(value))
    if key == "gap_pp":
        return f"{round(float(value), 1) + 0.0:+.1f} pp"
    if key == "gap_ratio":
        return f"{float(value):.2f}×"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real) and key in ("n", "k", "n_images", "n_captions"):
        return str(int(float(value)))
    if isinstance(value, Real):
        return num(float(value))
    return str(value)
