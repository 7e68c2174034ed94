"""Adapters that fit on a CPU in seconds, and their honest evaluation.

* A **text adapter**: a ridge-regularised linear map (with bias) from one set of text embeddings to
  another, e.g. CLIP's embeddings of Russian captions onto CLIP's embeddings of their English
  translations. It is the closed-form, head-only version of multilingual distillation
  (Reimers & Gurevych 2020; Multilingual-CLIP). Saved as safetensors plus a JSON card.
* A **linear probe** on image embeddings (scikit-learn logistic regression, ``C=0.316`` as in
  OpenAI's CLIP README) and **Tip-Adapter** (Zhang et al. 2022, training-free cache model), with
  seeded k-shot sampling.
* **Evaluation** where nothing used to fit is used to score: folds are over images, ``alpha`` is
  chosen by cross-validation inside the training folds, and every image gets a before/after hit so
  paired statistics can be applied.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy import linalg

from . import __version__
from .atomic import write_atomic
from .config import cache_dir
from .errors import LabclipError
from .metrics import correct_ranks
from .model import ClipModel, describe, load_model
from .stats import paired_test, wilson_interval

FORMAT = "labclip-text-adapter"
FORMAT_VERSION = 1
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 7))
ADAPTER_MARK = "+adapter:"


# --------------------------------------------------------------------------------------------
# The text adapter


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def _as_matrix(name: str, x: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, dim)"
        raise LabclipError(f"{name} must be a {want} array of embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise LabclipError(f"{name} holds NaN or infinite values")
    return x


@dataclass(eq=False)
class TextAdapter:
    """A linear map ``x @ weight + bias`` between text-embedding spaces, then L2 normalisation.

    Attributes:
        weight: ``(dim_in, dim_out)`` float32.
        bias: ``(dim_out,)`` float32.
        card: what it was fitted on and how well it did (see :func:`fit_text_adapter`).
    """

    weight: np.ndarray
    bias: np.ndarray
    card: dict = field(default_factory=dict)

    @property
    def dim_in(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.weight.shape[1])

    @property
    def sha256(self) -> str:
        """Hash of the shapes and values of the weights (not of the card)."""
        digest = hashlib.sha256(f"{self.weight.shape}|{self.bias.shape}|".encode())
        digest.update(np.ascontiguousarray(self.weight, np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.bias, np.float32).tobytes())
        return digest.hexdigest()

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map embeddings ``(n, dim_in)`` to unit-length float32 rows ``(n, dim_out)``."""
        x = _as_matrix("adapter input", x, self.dim_in)
        return _unit_rows(x.astype(np.float32) @ self.weight + self.bias)

    def with_card(self, **updates: object) -> TextAdapter:
        """A copy whose card has ``updates`` merged in (e.g. ``held_out=evaluation.summary()``)."""
        return TextAdapter(self.weight, self.bias, {**self.card, **updates})

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (``.safetensors``, the weights) and the JSON card beside it (``.json``).

        Both files are written atomically; the card records the weights' hash, so a mismatched pair
        is refused on loading.

        Returns:
            The path of the weights file.
        """
        from safetensors.numpy import save

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        tensors = {"weight": np.ascontiguousarray(self.weight, np.float32),
                   "bias": np.ascontiguousarray(self.bias, np.float32)}
        data = save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        card = {**self.card, "format": FORMAT, "format_version": FORMAT_VERSION, "dim_in": self.dim_in,
                "dim_out": self.dim_out, "sha256": self.sha256}
        write_atomic(path, lambda f: f.write(data), binary=True)
        write_atomic(card_path(path), lambda f: f.write(json.dumps(card, indent=1, ensure_ascii=False) + "\n"))
        return path


def card_path(path: str | os.PathLike) -> Path:
    """The JSON card that belongs beside an adapter's ``.safetensors`` file."""
    return Path(path).with_suffix(".json")


def load_text_adapter(path: str | os.PathLike) -> TextAdapter:
    """Load an adapter saved with :meth:`TextAdapter.save` (safetensors and JSON only; nothing is unpickled).

    Args:
        path: the ``.safetensors`` file, its ``.json`` card, or the path without a suffix.

    Raises:
        LabclipError: one line saying what is wrong with the files.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    if path.suffix in (".json", ""):
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise LabclipError(f"{path}: adapter weights not found")
    card_file = card_path(path)
    if not card_file.is_file():
        raise LabclipError(f"{path}: its card {card_file.name} is missing")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise LabclipError(f"{path}: not a safetensors adapter file ({type(err).__name__})") from None
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabclipError(f"{card_file}: not a JSON adapter card ({type(err).__name__})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise LabclipError(f"{card_file}: not a labclip text-adapter card (no \"format\": \"{FORMAT}\")")
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if set(tensors) != {"weight", "bias"} or weight.ndim != 2 or bias.shape != (weight.shape[1],):
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()) or "no tensors"
        raise LabclipError(f"{path}: expected tensors weight (dim_in, dim_out) and bias (dim_out,), found {shapes}")
    if weight.dtype != np.float32 or bias.dtype != np.float32 or not (np.isfinite(weight).all()
                                                                          and np.isfinite(bias).all()):
        raise LabclipError(f"{path}: adapter weights must be finite float32")
    adapter = TextAdapter(weight, bias, card)
    if (card.get("dim_in"), card.get("dim_out")) != weight.shape:
        raise LabclipError(f"{card_file}: card says {card.get('dim_in')}->{card.get('dim_out')} dimensions, "
                           f"the weights are {weight.shape[0]}->{weight.shape[1]}")
    if card.get("sha256") != adapter.sha256:
        raise LabclipError(f"{card_file}: the card's weights hash does not match {path.name}; save the adapter again")
    return adapter


def _fold_splits(n: int, groups: np.ndarray, cv: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold  # scikit-learn imports pandas: only when used

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise LabclipError("choosing alpha by cross-validation needs pairs from at least 2 images or groups; "
                           "pass a fixed alpha")
    return list(GroupKFold(n_splits=min(cv, n_groups)).split(np.zeros(n), groups=groups))


def _moments(x: np.ndarray, y: np.ndarray) -> tuple:
    """``(n, Σx, Σy, XᵀX, XᵀY)``, products in the inputs' precision, sums in float64."""
    f64 = np.float64
    return len(x), x.sum(axis=0, dtype=f64), y.sum(axis=0, dtype=f64), (x.T @ x).astype(f64), (x.T @ y).astype(f64)


class _Ridge:
    """Closed-form ridge with intercept, for any alpha, from one eigendecomposition.

    Built from the moments of rows shifted by ``(cx, cy)`` (their overall means, which keeps the
    centring exact in float32), so a fold's model comes from the total minus the fold's moments.
    """

    def __init__(self, moments: tuple, cx: np.ndarray, cy: np.ndarray):
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
        return np.divide(1.0, d, out=np.zeros_like(d), where=d > self.floor)[:, None]

    def coef(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        weight = self.v @ (self.rotated * self._shrink(alpha))
        return weight.astype(np.float32), (self.my - self.mx @ weight).astype(np.float32)

    def predict(self, x: np.ndarray, alphas: Sequence[float]) -> dict[float, np.ndarray]:
        z = ((x - self.mx) @ self.v).astype(np.float32)
        my = self.my.astype(np.float32)
        return {a: z @ (self.rotated * self._shrink(a)).astype(np.float32) + my for a in alphas}


def _ridge_coef(moments: tuple, alpha: float, cx: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def fit_text_adapter(
    source: np.ndarray,
    target: np.ndarray,
    alpha: float | Sequence[float] | None = None,
    groups: Sequence | None = None,
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
    x = _as_matrix("source", source)
    y = _as_matrix("target", target)
    if len(x) != len(y) or len(x) < 2:
        raise LabclipError(f"need at least 2 source/target pairs of equal count, got {len(x)} and {len(y)}")
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    if len(groups) != len(x):
        raise LabclipError(f"groups has {len(groups)} entries for {len(x)} pairs")
    grid = [float(a) for a in np.atleast_1d(DEFAULT_ALPHAS if alpha is None else alpha)]
    if not grid or min(grid) < 0:
        raise LabclipError(f"alpha must be non-negative, got {grid}")
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    cx, cy = x.mean(axis=0, dtype=np.float64), y.mean(axis=0, dtype=np.float64)
    xs, ys = (x - cx).astype(dtype), (y - cy).astype(dtype)
    scores: dict[float, float] = {}
    folds = 0
    if len(grid) > 1:
        splits = _fold_splits(len(x), groups, cv)
        folds = len(splits)
        parts = [_moments(xs[test], ys[test]) for _, test in splits]
        total = tuple(sum(m[i] for m in parts) for i in range(5))
        sums = dict.fromkeys(grid, 0.0)
        for (_, test), part in zip(splits, parts):
            ridge = _Ridge(tuple(t - p for t, p in zip(total, part)), cx, cy)
            for a, pred in ridge.predict(x[test], grid).items():
                sums[a] += _mean_cosine(pred, y[test]) * len(test)
        scores = {a: sums[a] / len(x) for a in grid}
        chosen = max(grid, key=lambda a: (scores[a], a))
    else:
        total, chosen = _moments(xs, ys), grid[0]
    weight, bias = _ridge_coef(total, chosen, cx, cy)
    adapter = TextAdapter(weight, bias, {})
    adapter.card = {
        **(card or {}),
        "pairs": len(x),
        "groups": int(len(np.unique(groups))),
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
# Model + adapter


class AdaptedModel:
    """A model whose text embeddings pass through a :class:`TextAdapter`; images are untouched.

    Everything else (``encode_images``, ``logit_scale``, ``dim``, ``preprocess``, ``cache``, ...) is
    the wrapped model's. ``name`` and ``revision`` carry the adapter, so ``labclip.model.describe``
    and ``labclip.model.fingerprint`` tell a model with an adapter from one without. The raw text
    embeddings stay in the wrapped model's cache, under its own key; adapting them costs one product.
    """

    def __init__(self, base: ClipModel, adapter: TextAdapter, label: str | None = None):
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "adapter", adapter)
        object.__setattr__(self, "adapter_label", label or f"sha256:{adapter.sha256[:12]}")

    def __getattr__(self, name: str):
        if name in ("base", "adapter", "adapter_label"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.base, name, value)

    def __repr__(self) -> str:
        return f"AdaptedModel({self.name!r})"

    @property
    def name(self) -> str:
        return f"{self.base.name}{ADAPTER_MARK}{self.adapter_label}"

    @property
    def revision(self) -> str:
        return f"{self.base.revision}{ADAPTER_MARK}{self.adapter.sha256}"

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """The wrapped model's text embeddings, mapped by the adapter (unit float32 rows)."""
        return self.adapter.transform(self.base.encode_texts(texts, batch_size))

    def describe(self) -> dict:
        """:func:`labclip.model.describe` of this model plus the adapter's card."""
        return {**describe(self), "adapter": dict(self.adapter.card, sha256=self.adapter.sha256)}


def apply_adapter(model: ClipModel, adapter: TextAdapter | str | os.PathLike, check_source: bool = True,
                  label: str | None = None) -> AdaptedModel:
    """Put ``adapter`` (or the adapter saved at that path) on the text side of ``model``.

    Args:
        model: a loaded model (from :func:`labclip.load_model`).
        adapter: a :class:`TextAdapter` or the path of a saved one.
        check_source: refuse an adapter whose card names a different ``source_model``.
        label: how ``name`` shows the adapter; defaults to the file name, or the weights' hash.

    Raises:
        LabclipError: the dimensions do not fit the model, or the adapter was fitted on another model.
    """
    if not isinstance(adapter, TextAdapter):
        label = label or Path(adapter).stem
        adapter = load_text_adapter(adapter)
    if (adapter.dim_in, adapter.dim_out) != (model.dim, model.dim):
        raise LabclipError(f"the adapter maps {adapter.dim_in}->{adapter.dim_out} dimensions; "
                           f"model '{model.name}' needs {model.dim}->{model.dim}")
    fitted_on = adapter.card.get("source_model")
    if check_source and fitted_on and fitted_on not in (model.name, model.source):
        raise LabclipError(f"the adapter was fitted on '{fitted_on}' text embeddings, not '{model.name}'; "
                           "use it with that model")
    return AdaptedModel(model, adapter, label)


def split_adapter(spec: str) -> tuple[str, str | None]:
    """``"MODEL+adapter:PATH"`` → ``("MODEL", "PATH")``; a spec without an adapter → ``(spec, None)``."""
    model, mark, path = str(spec).rpartition(ADAPTER_MARK)
    return (model, path) if mark and model and path else (str(spec), None)


def load_adapted_model(spec: str, adapter: str | os.PathLike | None = None, **kwargs) -> ClipModel | AdaptedModel:
    """``load_model`` that also understands ``"MODEL+adapter:PATH"`` (or ``adapter=PATH``).

    Keyword arguments go to :func:`labclip.load_model`.
    """
    name, path = split_adapter(spec)
    path = adapter or path
    model = load_model(name, **kwargs)
    return apply_adapter(model, path) if path else model


# --------------------------------------------------------------------------------------------
# Few-shot image classifiers


def sample_k_shot(labels: Sequence[int], k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` examples per class, drawn without replacement (all of a class with fewer).

    Returns:
        Sorted indices into ``labels``; the same seed gives the same draw.
    """
    if k < 1:
        raise LabclipError(f"k must be at least 1, got {k}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=min(k, int(np.sum(labels == c))), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=int)


def _n_classes(labels: np.ndarray, n_classes: int | None) -> int:
    return int(n_classes if n_classes is not None else labels.max() + 1)


def linear_probe(
    train_emb: np.ndarray,
    train_labels: Sequence[int],
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
    n = _n_classes(labels, n_classes)
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
    train_labels: Sequence[int],
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
    return logit_scale * (test @ text.T) + alpha * (affinity @ onehot)


# --------------------------------------------------------------------------------------------
# Honest evaluation


def _outer_splits(n: int, groups: np.ndarray, folds: int | str, seed: int,
                  strata: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, StratifiedKFold

    n_groups = len(np.unique(groups))
    if folds == "loo":
        splitter = LeaveOneGroupOut()
    elif isinstance(folds, int) and 2 <= folds <= n_groups:
        if strata is not None and np.unique(strata, return_counts=True)[1].min() >= folds and n_groups == n:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        elif n_groups == n:
            splitter = KFold(folds, shuffle=True, random_state=seed)
        else:
            splitter = GroupKFold(folds)
    else:
        raise LabclipError(f"folds must be 'loo' or a number from 2 to {n_groups} (the number of images), "
                           f"got {folds!r}")
    y = strata if strata is not None else np.zeros(n)
    grouped = {"groups": groups} if isinstance(splitter, (GroupKFold, LeaveOneGroupOut)) else {}
    return [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(np.zeros((n, 1)), y, **grouped)]


def _hits(sim: np.ndarray) -> dict[str, np.ndarray]:
    return {"i2t": correct_ranks(sim) == 1, "t2i": correct_ranks(sim.T) == 1}


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
    folds: list[tuple[np.ndarray, np.ndarray]]
    alphas: list[float]
    gallery: str

    @property
    def n(self) -> int:
        return len(self.adapted)

    def counts(self) -> list[dict]:
        """One row per direction and variant: ``direction, variant, hits, n, top1, low, high``
        (``low``/``high``: 95% Wilson interval of ``top1``)."""
        return [_rate({"direction": d, "variant": v}, h, "top1")
                for d, by_variant in self.hits.items() for v, h in by_variant.items()]

    def paired(self) -> list[dict]:
        """Exact McNemar test of after against before, per direction: ``direction, only_before,
        only_after, n, p_value`` (empty when there is no before)."""
        return [_paired({"direction": d}, h["before"], h["after"], "before", "after")
                for d, h in self.hits.items() if "before" in h]

    def summary(self) -> dict:
        """Plain numbers for an adapter's card or a JSON file."""
        before = self.cosine["before"]
        return {"images": self.n, "folds": len(self.folds), "gallery": self.gallery, "alphas": self.alphas,
                "cosine_to_target_before": float(before.mean()) if np.isfinite(before).all() else None,
                "cosine_to_target_after": float(self.cosine["after"].mean()),
                "top1": self.counts(), "paired": self.paired()}


def _rate(row: dict, hits: np.ndarray, name: str) -> dict:
    k, n = int(hits.sum()), len(hits)
    low, high = wilson_interval(k, n)
    return {**row, "hits": k, "n": n, name: k / n, "low": low, "high": high}


def _paired(row: dict, a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> dict:
    test = paired_test(a, b)
    return {**row, f"only_{name_a}": test.only_a, f"only_{name_b}": test.only_b, "n": test.n,
            "p_value": test.p_value}


FitFunction = Callable[..., TextAdapter]


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
            see :meth:`ParallelText.without`).
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
        extra_src = _as_matrix("extra source", extra[0], source.shape[1])
        extra_tgt = _as_matrix("extra target", extra[1], target.shape[1])
    if folds == "none":
        if extra is None:
            raise LabclipError("folds='none' fits on extra pairs only, and none were given")
        splits = [(np.empty(0, dtype=int), np.arange(n))]
    else:
        splits = _outer_splits(n, np.arange(n), folds, seed)
    adapted = np.empty((n, target.shape[1]), np.float32)
    alphas = []
    for train, test in splits:
        x, y, groups = source[train], target[train], train
        if extra is not None:
            x, y = np.concatenate([x, extra_src]), np.concatenate([y, extra_tgt])
            groups = np.concatenate([train, n + np.arange(len(extra_src))])
        adapter = fit(x, y, alpha=alpha, groups=groups)
        alphas.append(float(adapter.card["alpha"]))
        adapted[test] = adapter.transform(source[test])
    before = _unit_rows(source) if source.shape[1] == images.shape[1] else None
    hits: dict[str, dict[str, np.ndarray]] = {"i2t": {}, "t2i": {}}
    variants = {"before": before, "after": adapted, "target": target}
    for variant, texts in variants.items():
        if texts is None:
            continue
        parts = [(np.arange(n), texts)] if gallery == "all" else [(te, texts[te]) for _, te in splits]
        found = {"i2t": np.zeros(n, bool), "t2i": np.zeros(n, bool)}
        for rows, part in parts:
            sim = _unit_rows(images[rows]).astype(np.float64) @ _unit_rows(part).astype(np.float64).T
            for direction, h in _hits(sim).items():
                found[direction][rows] = h
        for direction in hits:
            hits[direction][variant] = found[direction]
    unit_target = _unit_rows(target)
    cosine = {"after": np.sum(adapted * unit_target, axis=1)}
    cosine["before"] = np.sum(before * unit_target, axis=1) if before is not None else np.full(n, np.nan)
    return AdapterEvaluation(hits, adapted, cosine, splits, alphas, gallery)


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
    folds: list[tuple[np.ndarray, np.ndarray]]

    def counts(self) -> list[dict]:
        """One row per method and shot count: ``method, shots, shots_used, hits, n, acc1, low, high``
        (``low``/``high``: 95% Wilson interval of ``acc1``)."""
        return [_rate({"method": m, "shots": k, "shots_used": self.shots_used.get(k, 0)}, h, "acc1")
                for (m, k), h in self.hits.items()]

    def paired(self) -> list[dict]:
        """Exact McNemar test of each method against zero-shot on the same images: ``method, shots,
        only_zero_shot, only_method, n, p_value``."""
        zero = self.hits[("zero-shot", 0)]
        return [_paired({"method": m, "shots": k}, zero, h, "zero_shot", "method")
                for (m, k), h in self.hits.items() if m != "zero-shot"]


def evaluate_few_shot(
    image_emb: np.ndarray,
    labels: Sequence[int],
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
    splits = _outer_splits(n, np.arange(n), folds, seed, strata=truth)
    shots = sorted(set(shots))
    pred = {("zero-shot", 0): (images @ np.asarray(text, np.float64).T).argmax(axis=1)}
    pred.update({(m, k): np.full(n, -1) for k in shots for m in ("probe", "tip")})
    used = {k: np.inf for k in shots}
    for f, (train, test) in enumerate(splits):
        for k in shots:
            pick = train[sample_k_shot(truth[train], k, seed=seed * 1000 + f)]
            used[k] = min(used[k], np.bincount(truth[pick], minlength=len(text))[np.unique(truth)].min())
            pred[("probe", k)][test] = linear_probe(images[pick], truth[pick], images[test], C=C,
                                                    n_classes=len(text)).argmax(axis=1)
            pred[("tip", k)][test] = tip_adapter(images[pick], truth[pick], images[test], text, tip_alpha,
                                                 tip_beta, logit_scale).argmax(axis=1)
    hits = {key: p == truth for key, p in pred.items()}
    return FewShotEvaluation(truth, hits, {k: int(v) for k, v in used.items()}, splits)


# --------------------------------------------------------------------------------------------
# Parallel sentences


@dataclass
class ParallelText:
    """Pairs of sentences in two languages; ``groups`` names the image (or row) each pair belongs to."""

    source: list[str]
    target: list[str]
    groups: list[str]
    source_lang: str
    target_lang: str
    origin: str

    def __len__(self) -> int:
        return len(self.source)

    @property
    def sha256(self) -> str:
        """Hash of the pairs and their groups."""
        payload = json.dumps([self.source_lang, self.target_lang, self.source, self.target, self.groups],
                             ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def without(self, texts: Iterable[str]) -> ParallelText:
        """The pairs whose source and target both differ from every one of ``texts`` (case and
        spacing ignored): drop the captions being evaluated from a training corpus."""
        held = {_norm(t) for t in texts}
        keep = [i for i, (s, t) in enumerate(zip(self.source, self.target)) if _norm(s) not in held
                and _norm(t) not in held]
        return ParallelText([self.source[i] for i in keep], [self.target[i] for i in keep],
                            [self.groups[i] for i in keep], self.source_lang, self.target_lang, self.origin)


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split())


def read_parallel(path: str | os.PathLike, source_lang: str, target_lang: str) -> ParallelText:
    """Parallel sentences from a CSV/TSV/XLSX/JSON Lines table with a column per language.

    A caption set works as it is (its ``image`` column groups the pairs by image); any other
    table needs a column per language, e.g. ``ru`` and ``en``, and may have an ``image`` column.
    A cell with a list of captions (JSON Lines) is paired with the other language's list element
    by element, up to the shorter list: in sets such as Crossmodal-3600 the captions of one image
    were written separately per language, so such pairs describe the same image rather than
    translate each other.

    Raises:
        LabclipError: one line naming the file and every problem with its row number (header = row 1).
    """
    from .data import read_table

    path = Path(path)
    table = read_table(path, "parallel text file")
    source_lang, target_lang = source_lang.lower(), target_lang.lower()
    missing = [lang for lang in (source_lang, target_lang) if lang not in table.columns]
    if missing:
        raise LabclipError(f"{path}: no {' or '.join(map(repr, missing))} column (columns found: "
                           f"{', '.join(table.columns) or 'none'})")
    if source_lang == target_lang:
        raise LabclipError(f"{path}: source and target language are both {source_lang!r}")
    has_image = "image" in table.columns
    pairs, problems = [], []
    for line, values in zip(table.lines, table.rows):
        row = dict(zip(table.columns, values))
        cells = [[str(c).strip() for c in (row[lang] if isinstance(row[lang], list) else [row[lang]])]
                 for lang in (source_lang, target_lang)]
        for lang, cell in zip((source_lang, target_lang), cells):
            if not any(cell):
                problems.append(f"row {line}: empty '{lang}' sentence")
        group = str(row["image"]).strip() if has_image else f"row {line}"
        pairs.extend((s, t, group) for s, t in zip(*cells) if s and t)
    if not table.rows:
        problems.append("no rows below the header")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise LabclipError(f"{path}: {len(problems)} problem{'s' * (len(problems) > 1)}: {shown}")
    source, target, groups = (list(column) for column in zip(*pairs))
    return ParallelText(source, target, groups, source_lang, target_lang, str(path))


def load_parallel_dataset(
    name: str,
    source_lang: str,
    target_lang: str,
    split: str = "train",
    revision: str | None = None,
    limit: int = 20000,
    source_column: str | None = None,
    target_column: str | None = None,
) -> ParallelText:
    """Parallel captions from a Hugging Face dataset, kept as a TSV in labclip's cache.

    Streams the first ``limit`` rows with ``datasets`` (no image download) and reads only the two
    text columns (named after the languages unless given). A cell that is a list (several
    captions per image, e.g. ``romrawinjp/multilingual-coco``) is paired element by element, and
    the pairs of one row share a group. Later calls read the cached TSV, offline too.

    Raises:
        LabclipError: ``datasets`` missing, the hub unreachable with nothing cached, or bad columns.
    """
    src_col, tgt_col = source_column or source_lang, target_column or target_lang
    key = hashlib.sha256(json.dumps([name, revision, split, src_col, tgt_col, limit]).encode()).hexdigest()[:20]
    cached = cache_dir() / "parallel" / f"{key}.tsv"
    if not cached.is_file():
        _download_parallel(name, split, revision, limit, src_col, tgt_col, cached, source_lang, target_lang)
    found = read_parallel(cached, source_lang, target_lang)
    found.origin = f"hf:{name}" + (f"@{revision}" if revision else "") + f":{split}"
    return found


def _download_parallel(name: str, split: str, revision: str | None, limit: int, src_col: str, tgt_col: str,
                       cached: Path, source_lang: str, target_lang: str) -> None:
    from .hub import hub_reachable

    try:
        import datasets
    except ImportError:
        raise LabclipError("reading a Hugging Face dataset needs the 'datasets' package "
                           "(pip install 'labclip[adapt]')") from None
    if not hub_reachable():
        raise LabclipError(f"dataset '{name}' is not in labclip's cache and the Hugging Face hub cannot be "
                           "reached; connect to the network or pass a CSV/TSV of parallel sentences")
    rows: list[tuple[str, str, str]] = []
    try:
        stream = datasets.load_dataset(name, split=split, revision=revision, streaming=True)
        for i, row in enumerate(stream.select_columns([src_col, tgt_col])):
            if len(rows) >= limit:
                break
            src, tgt = row[src_col], row[tgt_col]
            pairs = zip(src, tgt) if isinstance(src, list) and isinstance(tgt, list) else [(src, tgt)]
            rows.extend((f"{i}", str(s), str(t)) for s, t in pairs if str(s).strip() and str(t).strip())
    except Exception as err:  # noqa: BLE001 - any failure of a remote dataset is one user-facing line
        reason = " ".join(str(err).split())[:200]
        raise LabclipError(f"could not read dataset '{name}' ({split}, columns {src_col!r}, {tgt_col!r}): "
                           f"{type(err).__name__}: {reason}") from None
    if not rows:
        raise LabclipError(f"dataset '{name}' ({split}) gave no non-empty {src_col!r}/{tgt_col!r} pairs")

    def write(f) -> None:
        out = csv.writer(f, delimiter="\t", lineterminator="\n")
        out.writerow(["image", source_lang, target_lang])
        out.writerows(rows[:limit])

    write_atomic(cached, write)


__all__ = [
    "AdaptedModel",
    "AdapterEvaluation",
    "FewShotEvaluation",
    "ParallelText",
    "TextAdapter",
    "apply_adapter",
    "evaluate_few_shot",
    "evaluate_text_adapter",
    "fit_text_adapter",
    "linear_probe",
    "load_adapted_model",
    "load_parallel_dataset",
    "load_text_adapter",
    "read_parallel",
    "sample_k_shot",
    "split_adapter",
    "tip_adapter",
]
