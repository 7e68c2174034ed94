"""The text map: a ridge-regularised linear map (with bias) between text-embedding spaces, and its
honest evaluation on the images of a paired caption set.

E.g. CLIP's embeddings of Russian captions onto CLIP's embeddings of their English translations:
the closed-form, head-only version of multilingual distillation (Reimers & Gurevych 2020;
Multilingual-CLIP). ``alpha`` is chosen by cross-validation inside the training rows, folds are over
images, and every image gets a before/after hit so paired statistics can be applied. The fitted map
is a :class:`labclip.adapter.TextAdapter` (safetensors plus a JSON card).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from scipy import linalg

from . import __version__
from .adapter import TextAdapter, _as_matrix, _unit_rows
from .crossval import Split, group_folds, outer_folds, paired_row, rate_row
from .errors import LabclipError
from .metrics import retrieval_ranks

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 7))

Moments = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _moments(x: np.ndarray, y: np.ndarray) -> Moments:
    """``(n, Σx, Σy, XᵀX, XᵀY)``, products in the inputs' precision, sums in float64."""
    f64 = np.float64
    return len(x), x.sum(axis=0, dtype=f64), y.sum(axis=0, dtype=f64), (x.T @ x).astype(f64), (x.T @ y).astype(f64)


def _combine(a: Moments, b: Moments, sign: int) -> Moments:
    """``a + b`` (``sign`` 1) or ``a - b`` (``sign`` -1), term by term."""
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2], a[3] + sign * b[3], a[4] + sign * b[4])


class _Ridge:
    """Closed-form ridge with intercept, for any alpha, from one eigendecomposition.

    Built from the moments of rows shifted by ``(cx, cy)`` (their overall means, which keeps the
    centring exact in float32), so a fold's model comes from the total minus the fold's moments.
    """

    def __init__(self, moments: Moments, cx: np.ndarray, cy: np.ndarray):
        n, sx, sy, sxx, sxy = moments
        mx, my = sx / n, sy / n
        s, self.v = linalg.eigh(sxx - n * np.outer(mx, mx), driver="evd", overwrite_a=True, check_finite=False)
        self.s = np.clip(s, 0.0, None)
        self.rotated = self.v.T @ (sxy - n * np.outer(mx, my))
        self.mx, self.my = mx + cx, my + cy
        self.floor = self.s.max(initial=0.0) * len(self.s) * np.finfo(np.float64).eps

    def _shrink(self, alpha: float) -> np.ndarray:
        """``1 / (s + alpha)``, and 0 in null directions (the minimum-norm solution at alpha = 0)."""
        d = self.s + alpha
        inverse: np.ndarray = np.divide(1.0, d, out=np.zeros_like(d), where=d > self.floor)
        return inverse[:, None]

    def coef(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        weight = self.v @ (self.rotated * self._shrink(alpha))
        return weight.astype(np.float32), (self.my - self.mx @ weight).astype(np.float32)

    def predict(self, x: np.ndarray, alphas: Sequence[float]) -> dict[float, np.ndarray]:
        z = ((x - self.mx) @ self.v).astype(np.float32)
        my = self.my.astype(np.float32)
        return {a: z @ (self.rotated * self._shrink(a)).astype(np.float32) + my for a in alphas}


def _ridge_coef(moments: Moments, alpha: float, cx: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge at one alpha: a Cholesky solve, or the eigendecomposition when the system is singular."""
    n, sx, sy, sxx, sxy = moments
    mx, my = sx / n, sy / n
    try:
        factor = linalg.cho_factor(sxx - n * np.outer(mx, mx) + alpha * np.eye(len(mx)), check_finite=False)
    except linalg.LinAlgError:
        return _Ridge(moments, cx, cy).coef(alpha)
    weight = linalg.cho_solve(factor, sxy - n * np.outer(mx, my), check_finite=False)
    return weight.astype(np.float32), (my + cy - (mx + cx) @ weight).astype(np.float32)


def _mean_cosine(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.sum(_unit_rows(pred) * _unit_rows(target), axis=1)))


def _cv_scores(x: np.ndarray, y: np.ndarray, centres: tuple[np.ndarray, np.ndarray],
               shifted: tuple[np.ndarray, np.ndarray], grid: list[float],
               splits: list[Split]) -> tuple[Moments, dict[float, float]]:
    """The moments of all (shifted) rows and each grid alpha's mean held-out cosine over ``splits``."""
    xs, ys = shifted
    parts = [_moments(xs[test], ys[test]) for _, test in splits]
    total = parts[0]
    for part in parts[1:]:
        total = _combine(total, part, 1)
    sums = dict.fromkeys(grid, 0.0)
    for (_, test), part in zip(splits, parts):
        ridge = _Ridge(_combine(total, part, -1), *centres)
        for a, pred in ridge.predict(x[test], grid).items():
            sums[a] += _mean_cosine(pred, y[test]) * len(test)
    return total, {a: sums[a] / len(x) for a in grid}


def _check_pairs(source: np.ndarray, target: np.ndarray, groups: Sequence[Any] | np.ndarray | None,
                 alpha: float | Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    x = _as_matrix("source", source)
    y = _as_matrix("target", target)
    if len(x) != len(y) or len(x) < 2:
        raise LabclipError(f"need at least 2 source/target pairs of equal count, got {len(x)} and {len(y)}")
    found = np.arange(len(x)) if groups is None else np.asarray(groups)
    if len(found) != len(x):
        raise LabclipError(f"groups has {len(found)} entries for {len(x)} pairs")
    grid = [float(a) for a in np.atleast_1d(DEFAULT_ALPHAS if alpha is None else alpha)]
    if not grid or min(grid) < 0:
        raise LabclipError(f"alpha must be non-negative, got {grid}")
    return x, y, found, grid


def fit_text_adapter(
    source: np.ndarray,
    target: np.ndarray,
    alpha: float | Sequence[float] | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    cv: int = 5,
    card: Mapping[str, object] | None = None,
) -> TextAdapter:
    """Fit a ridge-regularised linear map (with bias) from ``source`` rows to ``target`` rows.

    Args:
        source: ``(n, dim_in)`` embeddings, e.g. of Russian captions.
        target: ``(n, dim_out)`` embeddings of their counterparts, e.g. CLIP's English captions.
        alpha: the ridge penalty (``sklearn.linear_model.Ridge`` convention: on the sum of squared
            errors). A number fixes it; a sequence is a grid; ``None`` uses ``DEFAULT_ALPHAS``
            (1e-3 … 1e3). From a grid, the alpha with the best mean held-out cosine over
            ``GroupKFold`` folds is chosen, and the map is refitted on all rows.
        groups: the image (or other unit) each pair belongs to; pairs of one group never split
            across folds. ``None``: every pair is its own group.
        cv: number of folds (at most the number of groups).
        card: facts to record, e.g. ``source_model``, ``source_revision``, ``target_model``,
            ``target_revision``, ``source_lang``, ``target_lang``, ``data``.

    Returns:
        A :class:`TextAdapter`; its card adds ``pairs``, ``groups``, ``alpha``, ``alpha_grid``,
        ``cv_cosine`` (per grid alpha), ``alpha_at_grid_edge``, ``train_cosine``, ``labclip_version``
        and ``created``.

    Raises:
        LabclipError: mismatched or empty inputs, or too few groups to cross-validate.
    """
    x, y, found, grid = _check_pairs(source, target, groups, alpha)
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    cx, cy = x.mean(axis=0, dtype=np.float64), y.mean(axis=0, dtype=np.float64)
    xs, ys = (x - cx).astype(dtype), (y - cy).astype(dtype)
    scores: dict[float, float] = {}
    folds = 0
    if len(grid) > 1:
        splits = group_folds(len(x), found, cv)
        folds = len(splits)
        total, scores = _cv_scores(x, y, (cx, cy), (xs, ys), grid, splits)
        chosen = max(grid, key=lambda a: (scores[a], a))
    else:
        total, chosen = _moments(xs, ys), grid[0]
    adapter = TextAdapter(*_ridge_coef(total, chosen, cx, cy), {})
    adapter.card = {
        **(card or {}),
        "pairs": len(x),
        "groups": int(len(np.unique(found))),
        "alpha": chosen,
        "alpha_grid": grid,
        "cv_folds": folds,
        "cv_cosine": {f"{a:g}": round(s, 6) for a, s in scores.items()},
        "alpha_at_grid_edge": len(grid) > 1 and chosen in (min(grid), max(grid)),
        "train_cosine": round(_mean_cosine(adapter.transform(x), y), 6),
        "labclip_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return adapter


# --------------------------------------------------------------------------------------------
# Honest evaluation


@dataclass
class AdapterEvaluation:
    """Held-out before/after results of a text adapter, one entry per image.

    Attributes:
        hits: ``hits[direction][variant]`` is a boolean array over images: top-1 hit for
            ``direction`` ``"i2t"`` or ``"t2i"``, with the ``variant`` ``"before"`` (raw source
            captions), ``"after"`` (adapted by a map that never saw the image) or ``"target"``
            (the target captions, e.g. English, for reference).
        adapted: ``(n, dim)`` out-of-fold adapted source embeddings.
        cosine: per image, cosine to its target caption ``{"before": ..., "after": ...}``.
        folds: ``(train, test)`` image indices of each outer fold.
        alphas: the alpha chosen inside each fold.
        gallery: ``"all"`` or ``"fold"`` (see :func:`evaluate_text_adapter`).
    """

    hits: dict[str, dict[str, np.ndarray]]
    adapted: np.ndarray
    cosine: dict[str, np.ndarray]
    folds: list[Split]
    alphas: list[float]
    gallery: str

    @property
    def n(self) -> int:
        return len(self.adapted)

    def counts(self) -> list[dict[str, Any]]:
        """One row per direction and variant: ``direction, variant, hits, n, top1, low, high``
        (``low``/``high``: 95% Wilson interval of ``top1``)."""
        return [rate_row({"direction": d, "variant": v}, h, "top1")
                for d, by_variant in self.hits.items() for v, h in by_variant.items()]

    def paired(self) -> list[dict[str, Any]]:
        """Exact McNemar test of after against before, per direction: ``direction, only_before,
        only_after, n, p_value`` (empty when there is no before)."""
        return [paired_row({"direction": d}, h["before"], h["after"], "before", "after")
                for d, h in self.hits.items() if "before" in h]

    def summary(self) -> dict[str, Any]:
        """Plain numbers for an adapter's card or a JSON file."""
        before = self.cosine["before"]
        return {"images": self.n, "folds": len(self.folds), "gallery": self.gallery, "alphas": self.alphas,
                "cosine_to_target_before": float(before.mean()) if np.isfinite(before).all() else None,
                "cosine_to_target_after": float(self.cosine["after"].mean()),
                "top1": self.counts(), "paired": self.paired()}


FitFunction = Callable[..., TextAdapter]


def _fit_out_of_fold(source: np.ndarray, target: np.ndarray, splits: list[Split],
                     extra: tuple[np.ndarray, np.ndarray] | None, alpha: float | Sequence[float] | None,
                     fit: FitFunction) -> tuple[np.ndarray, list[float]]:
    """Each fold's test rows of ``source`` adapted by a map fitted on its training rows (plus ``extra``)."""
    n = len(source)
    adapted = np.empty((n, target.shape[1]), np.float32)
    alphas = []
    for train, test in splits:
        x, y, groups = source[train], target[train], train
        if extra is not None:
            x, y = np.concatenate([x, extra[0]]), np.concatenate([y, extra[1]])
            groups = np.concatenate([train, n + np.arange(len(extra[0]))])
        adapter = fit(x, y, alpha=alpha, groups=groups)
        alphas.append(float(adapter.card["alpha"]))
        adapted[test] = adapter.transform(source[test])
    return adapted, alphas


def _top1_hits(images: np.ndarray, texts: np.ndarray, parts: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Top-1 hits per image in both directions, each image ranked only against the captions of its part."""
    found = {"i2t": np.zeros(len(images), bool), "t2i": np.zeros(len(images), bool)}
    for rows in parts:
        sim = _unit_rows(images[rows]).astype(np.float64) @ _unit_rows(texts[rows]).astype(np.float64).T
        for direction, h in retrieval_ranks(sim).hits(1).items():
            found[direction][rows] = h
    return found


def _check_evaluation(image_emb: np.ndarray, source_emb: np.ndarray, target_emb: np.ndarray, gallery: str,
                      extra: tuple[np.ndarray, np.ndarray] | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    images = _as_matrix("image_emb", image_emb)
    source = _as_matrix("source_emb", source_emb)
    target = _as_matrix("target_emb", target_emb, images.shape[1])
    n = len(images)
    if not len(source) == len(target) == n or n < 2:
        raise LabclipError(f"need one source and one target caption per image, at least 2 images; got "
                           f"{len(images)} images, {len(source)} source and {len(target)} target captions")
    if gallery not in ("all", "fold"):
        raise LabclipError(f"gallery must be 'all' or 'fold', got {gallery!r}")
    if extra is not None:
        extra = (_as_matrix("extra source", extra[0], source.shape[1]),
                 _as_matrix("extra target", extra[1], target.shape[1]))
    return images, source, target, extra


def evaluate_text_adapter(
    image_emb: np.ndarray,
    source_emb: np.ndarray,
    target_emb: np.ndarray,
    folds: int | str = 5,
    alpha: float | Sequence[float] | None = None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    gallery: str = "all",
    seed: int = 0,
    fit: FitFunction = fit_text_adapter,
) -> AdapterEvaluation:
    """Cross-validate a text adapter over images of a paired caption set.

    Row ``i`` of the three arrays belongs to image ``i``. In each outer fold, an adapter is fitted
    on the training images' caption pairs (plus ``extra`` pairs, e.g. a parallel corpus without
    images), with ``alpha`` chosen by cross-validation inside those rows only, and applied to the
    held-out images' source captions. Image embeddings are never used to fit.

    Args:
        image_emb: ``(n, dim)`` image embeddings.
        source_emb: ``(n, dim_in)`` embeddings of the captions to adapt (e.g. Russian).
        target_emb: ``(n, dim)`` embeddings of their counterparts (e.g. English), in the image space.
        folds: number of folds over images, ``"loo"`` (leave one image out), or ``"none"``: fit once
            on ``extra`` only and score every image (then ``extra`` must not contain these captions;
            see :meth:`labclip.parallel.ParallelText.without`).
        alpha: fixed alpha, or a grid for the inner cross-validation (``None``: the default grid).
        extra: more ``(source, target)`` pairs used for fitting in every fold.
        gallery: ``"all"``: each image is ranked against all ``n`` captions, each adapted out of
            fold (comparable with the full matching report); ``"fold"``: only within its fold, so
            no adapter that scored an image ever saw any caption it is ranked against.
        seed: shuffles the folds.
        fit: the fitting function (``fit_text_adapter``'s signature), replaceable for tests.

    Returns:
        An :class:`AdapterEvaluation`. The ``"before"`` variant is there only when the source
        embeddings live in the image space (same dimension), e.g. CLIP's own text tower.
    """
    images, source, target, extra = _check_evaluation(image_emb, source_emb, target_emb, gallery, extra)
    n = len(images)
    if folds == "none":
        if extra is None:
            raise LabclipError("folds='none' fits on extra pairs only, and none were given")
        splits = [(np.empty(0, dtype=int), np.arange(n))]
    else:
        splits = outer_folds(n, np.arange(n), folds, seed)
    adapted, alphas = _fit_out_of_fold(source, target, splits, extra, alpha, fit)
    before = _unit_rows(source) if source.shape[1] == images.shape[1] else None
    parts = [np.arange(n)] if gallery == "all" else [test for _, test in splits]
    hits: dict[str, dict[str, np.ndarray]] = {"i2t": {}, "t2i": {}}
    for variant, texts in {"before": before, "after": adapted, "target": target}.items():
        if texts is not None:
            for direction, found in _top1_hits(images, texts, parts).items():
                hits[direction][variant] = found
    unit_target = _unit_rows(target)
    cosine = {"after": np.sum(adapted * unit_target, axis=1)}
    cosine["before"] = np.sum(before * unit_target, axis=1) if before is not None else np.full(n, np.nan)
    return AdapterEvaluation(hits, adapted, cosine, splits, alphas, gallery)
