"""Uncertainty for the figures labclip reports: intervals for proportions and means, paired tests.

Every function here takes per-image (or per-caption) arrays and returns plain numbers or an
:class:`Estimate`, so reports, tables and prose can show ``54.0% [50.9%, 57.1%]`` without knowing
which method made the interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _scipy_stats

from .errors import LabclipError

CONFIDENCE = 0.95
N_RESAMPLES = 9999
# Resamples per vectorised batch in scipy's bootstrap: bounds its memory at BATCH x n floats.
BATCH = 200
# Smallest class a stratified bootstrap resamples within: below it the interval collapses towards a point.
MIN_STRATUM = 5
# A vectorised statistic of one or more samples with an ``axis`` argument, like ``np.mean``.
Statistic = Callable[..., Any]


@dataclass(frozen=True)
class Estimate:
    """A figure with its confidence interval.

    Attributes:
        value: the point estimate (a fraction for proportions).
        low: lower end of the interval.
        high: upper end of the interval.
        hits: successes behind a proportion, ``None`` for means.
        n: observations behind the figure (images or captions).
        method: ``"wilson"``, ``"bootstrap"`` (percentile, over observations),
            ``"cluster bootstrap"`` (percentile, over images, for several captions per image) or
            ``"stratified bootstrap"`` (percentile, over images resampled within their class).
        confidence: the interval's confidence level.

    ``format(e, ".1%")`` gives ``"54.0% [50.9%, 57.1%]"``; ``str(e)`` uses ``.3g``.
    """

    value: float
    low: float
    high: float
    hits: int | None = None
    n: int | None = None
    method: str = "wilson"
    confidence: float = CONFIDENCE

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return format(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return asdict(self)


class Significance:
    """A test result with a p-value (mixed into a result dataclass; adds no field)."""

    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the difference is significant at level ``alpha``."""
        return self.p_value < alpha


@dataclass(frozen=True)
class PairedTest(Significance):
    """Exact McNemar test of two hit vectors over the same images.

    Attributes:
        p_value: exact two-sided p-value.
        only_a: images that ``a`` gets right and ``b`` gets wrong.
        only_b: images that ``b`` gets right and ``a`` gets wrong.
        n: images compared.
    """

    p_value: float
    only_a: int
    only_b: int
    n: int


INTERVAL_SUFFIXES = ("_low", "_high")


def interval_fields(estimates: dict[str, Estimate]) -> dict[str, float]:
    """The flat fields that JSON and CSV outputs add beside each figure: ``{key}_low`` and ``{key}_high``."""
    return {f"{key}{suffix}": getattr(e, suffix[1:]) for key, e in estimates.items() for suffix in INTERVAL_SUFFIXES}


def is_interval_field(key: str) -> bool:
    """Whether a flat field is one end of a figure's interval (see :func:`interval_fields`)."""
    return key.endswith(INTERVAL_SUFFIXES)


def wilson_interval(hits: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion ``hits / n``.

    Args:
        hits: successes, ``0 <= hits <= n``.
        n: trials, at least 1.
        confidence: confidence level in (0, 1).

    Returns:
        ``(low, high)`` as fractions.

    Raises:
        LabclipError: ``n < 1``, ``hits`` outside ``[0, n]`` or a confidence outside (0, 1).
    """
    hits, n = _count(hits, "hits"), _count(n, "n")
    if n < 1:
        raise LabclipError(f"a proportion needs at least one observation, got n = {n}")
    if not 0 <= hits <= n:
        raise LabclipError(f"hits must lie between 0 and n = {n}, got {hits}")
    _check_confidence(confidence)
    ci = _scipy_stats.binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(hits_a: ArrayLike, hits_b: ArrayLike) -> float:
    """Exact two-sided McNemar p-value for two methods scored on the same images.

    A binomial test of the discordant pairs (right under one method, wrong under the other)
    against an even split; ``1.0`` when there are none.

    Args:
        hits_a: one boolean per image, method ``a``.
        hits_b: one boolean per image, method ``b``, same images in the same order.

    Raises:
        LabclipError: the arrays differ in length, are empty or are not one-dimensional.
    """
    return paired_test(hits_a, hits_b).p_value


def paired_test(hits_a: ArrayLike, hits_b: ArrayLike) -> PairedTest:
    """:func:`mcnemar` with the discordant counts that prose needs ("12 images right only in English")."""
    a, b = _hits(hits_a, "hits_a"), _hits(hits_b, "hits_b")
    if len(a) != len(b):
        raise LabclipError(f"a paired test needs hits on the same images; got {len(a)} and {len(b)} values")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(_scipy_stats.binomtest(only_a, discordant, 0.5).pvalue)
    return PairedTest(p_value=min(p, 1.0), only_a=only_a, only_b=only_b, n=len(a))


def bootstrap_interval(
    values: ArrayLike | tuple[ArrayLike, ...],
    statistic: Statistic = np.mean,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    strata: ArrayLike | None = None,
) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of ``statistic`` over observations (e.g. images).

    Args:
        values: one number per observation (a reciprocal rank, a margin), or a tuple of such
            arrays resampled together (paired), passed to ``statistic`` as separate arguments.
        statistic: vectorised function of the sample(s) with an ``axis`` argument, like ``np.mean``.
        confidence: confidence level in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seed of the resampling, so a report repeats exactly.
        strata: the stratum (e.g. class) of each observation, or ``None``. Given, every resample
            draws each stratum's observations from that stratum only, so each stratum keeps its
            count and position ``i`` of a resample still belongs to the stratum of observation ``i``
            (``statistic`` may rely on it). Paired arrays are resampled together.

    Returns:
        ``(low, high)``.

    Raises:
        LabclipError: fewer than two observations, paired arrays of unequal length, strata of
            another length, or a confidence outside (0, 1).
    """
    _check_confidence(confidence)
    samples = tuple(np.asarray(v, dtype=np.float64) for v in (values if isinstance(values, tuple) else (values,)))
    lengths = {len(s) for s in samples}
    if len(lengths) != 1:
        raise LabclipError(f"paired bootstrap samples must have equal lengths, got {sorted(lengths)}")
    if lengths.pop() < 2:
        raise LabclipError("a bootstrap interval needs at least two observations")
    if strata is not None:
        return _stratified_interval(samples, np.asarray(strata), statistic, confidence, n_resamples, seed)
    result = _scipy_stats.bootstrap(
        samples, statistic, n_resamples=n_resamples, batch=BATCH, vectorized=True, paired=len(samples) > 1,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _stratified_interval(samples: tuple[np.ndarray, ...], strata: np.ndarray, statistic: Statistic,
                         confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over resamples drawn within each stratum (``BATCH`` at a time)."""
    n = len(samples[0])
    if strata.shape != (n,):
        raise LabclipError(f"strata must give one stratum per observation: {strata.shape} vs ({n},)")
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rng = np.random.default_rng(seed)
    replicates = []
    for start in range(0, n_resamples, BATCH):
        size = min(BATCH, n_resamples - start)
        index = np.empty((size, n), dtype=np.intp)
        for rows in members:
            index[:, rows] = rows[rng.integers(0, len(rows), size=(size, len(rows)))]
        replicates.append(np.asarray(statistic(*(s[index] for s in samples), axis=-1), dtype=np.float64))
    low, high = np.percentile(np.concatenate(replicates), [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def class_balanced(hits: ArrayLike, classes: ArrayLike, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                   seed: int = 0) -> Estimate:
    """Mean per-class recall (the mean over classes of each class's hit rate) with its 95% interval.

    When every class has the same number of images the figure is the plain hit rate, and its interval the
    Wilson score interval of the hits (``"wilson"``). Otherwise a seeded percentile bootstrap over images:
    resampled within their class, so every class keeps its count (``"stratified bootstrap"``), when every
    class has at least ``MIN_STRATUM`` images; with smaller classes that interval collapses (a class of one
    image never changes when resampled within itself), so all images are resampled together and each
    resample averages the classes it drew (``"bootstrap"``).

    Args:
        hits: one boolean per image (e.g. top-1 correct).
        classes: the true class of each image (any labels).
        confidence: confidence level.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.

    Raises:
        LabclipError: no images, fewer than two, or ``classes`` of another length.
    """
    h = _hits(hits, "hits").astype(np.float64)
    labels = np.asarray(classes)
    if labels.shape != h.shape:
        raise LabclipError(f"classes must give one class per image: {labels.shape} vs {h.shape}")
    _, index = np.unique(labels, return_inverse=True)
    counts = np.bincount(index)
    if counts.min() == counts.max():
        k = int(h.sum())
        return Estimate(k / len(h), *wilson_interval(k, len(h), confidence), hits=k, n=len(h), confidence=confidence)
    index = index.astype(np.float64)
    stratified = counts.min() >= MIN_STRATUM
    value = float(_balanced(h, index))
    low, high = bootstrap_interval((h, index), _balanced, confidence, n_resamples, seed,
                                   strata=index if stratified else None)
    return Estimate(value, low, high, n=len(h), method="stratified bootstrap" if stratified else "bootstrap",
                    confidence=confidence)


def _balanced(hits: np.ndarray, classes: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over the classes present of each class's hit rate (class indices as floats, as scipy passes them)."""
    rates = []
    for c in np.unique(classes):
        member = classes == c
        count = member.sum(axis=axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates.append(np.where(count > 0, (hits * member).sum(axis=axis) / count, np.nan))
    balanced: np.ndarray = np.nanmean(np.stack(rates, axis=-1), axis=-1)
    return balanced


def proportion(hits: ArrayLike, groups: ArrayLike | None = None, confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """A hit rate with its interval.

    One observation per image: Wilson score interval. Several captions per image (``groups``
    repeats an image): percentile bootstrap over images of the pooled rate, since an image's
    captions tend to succeed or fail together.

    Args:
        hits: one boolean per observation.
        groups: the image of each observation (any labels), or ``None``.
        confidence: confidence level.
        seed: bootstrap seed (used only with repeated groups).

    Raises:
        LabclipError: no observations, or ``groups`` of another length.
    """
    h = _hits(hits, "hits")
    k, n = int(h.sum()), len(h)
    clustered = _cluster_interval(h, groups, confidence, N_RESAMPLES, seed)
    if clustered is None:
        return Estimate(k / n, *wilson_interval(k, n, confidence), hits=k, n=n, confidence=confidence)
    return Estimate(k / n, *clustered, hits=k, n=n, method="cluster bootstrap", confidence=confidence)


def mean(values: ArrayLike, groups: ArrayLike | None = None, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
         seed: int = 0) -> Estimate:
    """The mean of per-image values (reciprocal ranks, margins) with a percentile bootstrap interval.

    With ``groups`` that repeat an image (several captions per image), images are resampled.
    """
    v = np.asarray(values, dtype=np.float64)
    clustered = _cluster_interval(v, groups, confidence, n_resamples, seed)
    if clustered is None:
        low, high = bootstrap_interval(v, np.mean, confidence, n_resamples, seed)
        return Estimate(float(v.mean()), low, high, n=len(v), method="bootstrap", confidence=confidence)
    return Estimate(float(v.mean()), *clustered, n=len(v), method="cluster bootstrap", confidence=confidence)


def _cluster_interval(values: np.ndarray, groups: ArrayLike | None, confidence: float, n_resamples: int,
                      seed: int) -> tuple[float, float] | None:
    """Bootstrap over groups of the pooled mean; ``None`` when no group repeats (nothing to cluster)."""
    if groups is None:
        return None
    labels = np.asarray(groups)
    if labels.shape != values.shape:
        raise LabclipError(f"groups must give one image per observation: {labels.shape} vs {values.shape}")
    _, index = np.unique(labels, return_inverse=True)
    counts = np.bincount(index).astype(np.float64)
    if len(counts) == len(values) or len(counts) < 2:
        return None
    sums = np.bincount(index, weights=values.astype(np.float64))
    return bootstrap_interval((sums, counts), _pooled_rate, confidence, n_resamples, seed)


def _pooled_rate(hits: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
    rate: np.ndarray = hits.sum(axis=axis) / n.sum(axis=axis)
    return rate


def _hits(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) == 0:
        raise LabclipError(f"{name} must be a non-empty 1-D array of booleans, got shape {array.shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise LabclipError(f"{name} must hold booleans (or 0/1), got values such as {array[~np.isin(array, (0, 1))][0]!r}")
        array = array.astype(bool)
    return array


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise LabclipError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise LabclipError(f"confidence must lie strictly between 0 and 1, got {confidence}")
