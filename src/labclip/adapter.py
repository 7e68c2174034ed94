"""A text adapter as a file and on a model: the linear map, its safetensors + JSON card, and the
model wrapper that puts it on the text side.

Fitting and evaluating adapters is :mod:`labclip.adapt`; this module only holds, saves, loads and
applies one, so :func:`labclip.model.load_model` can take ``adapter=`` or ``"MODEL+adapter:PATH"``.
It needs numpy and safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_atomic
from .errors import LabclipError

FORMAT = "labclip-text-adapter"
FORMAT_VERSION = 1
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


class AdaptedModel:
    """A model whose text embeddings pass through a :class:`TextAdapter`; images are untouched.

    Everything else (``encode_images``, ``logit_scale``, ``dim``, ``preprocess``, ``cache``, ...) is
    the wrapped model's. ``name`` and ``revision`` carry the adapter, so ``labclip.model.describe``
    and ``labclip.model.fingerprint`` tell a model with an adapter from one without. The raw text
    embeddings stay in the wrapped model's cache, under its own key; adapting them costs one product.
    """

    def __init__(self, base: Any, adapter: TextAdapter, label: str | None = None):
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

    @property
    def adapter_card(self) -> dict:
        """The adapter's card with its weights' hash and label (what :func:`labclip.model.describe` records)."""
        return {**self.adapter.card, "label": self.adapter_label, "sha256": self.adapter.sha256}


def apply_adapter(model: Any, adapter: TextAdapter | str | os.PathLike, check_source: bool = True,
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


__all__ = ["ADAPTER_MARK", "AdaptedModel", "TextAdapter", "apply_adapter", "card_path", "load_text_adapter",
           "split_adapter"]
