"""A text adapter as a file and on a model: the linear map, its safetensors + JSON card, and the
model wrapper that puts it on the text side.

Fitting and evaluating adapters is :mod:`labclip.adapt`; this module only holds, saves, loads and
applies one, so :func:`labclip.model.load_model` can take ``adapter=`` or ``"MODEL+adapter:PATH"``.
The card names the adapter's source text tower and its target model; when the source is another
model (e.g. a multilingual tower), captions go through it, then the adapter, into the target's
space. It needs numpy and safetensors (and labclip's registry and path helpers).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, cast

import numpy as np

from .atomic import write_atomic
from .config import exists
from .errors import LabclipError
from .precision import Precision
from .registry import DEMO_MODEL, resolve_model_name
from .spec import ADAPTER_MARK, ModelId, ModelSpec, shown_model, shown_revision

FORMAT = "labclip-text-adapter"
FORMAT_VERSION = 1
T = TypeVar("T")


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
        mapped = x.astype(np.float32) @ self.weight + self.bias
        if len(mapped) and not np.linalg.norm(mapped, axis=1).min() > 0:
            raise LabclipError("the text adapter maps a caption to the zero vector; its weights are degenerate, "
                               "fit it again")
        return _unit_rows(mapped)

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
        text = json.dumps(card, indent=1, ensure_ascii=False) + "\n"
        for target, content in ((path, data), (card_path(path), text)):
            write_atomic(target, partial(_write, content=content), binary=isinstance(content, bytes))
        return path


def _write(f: IO[Any], content: str | bytes) -> None:
    f.write(content)


def card_path(path: str | os.PathLike[str]) -> Path:
    """The JSON card that belongs beside an adapter's ``.safetensors`` file."""
    return Path(path).with_suffix(".json")


def read_weights_and_card(weights: Path, card_file: Path, load: Callable[[str], dict[str, Any]], fmt: str,
                          kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A safetensors file (read by ``load``, nothing unpickled) and its JSON card of format ``fmt``.

    Raises:
        LabclipError: one line naming the file that is unreadable or the card of another format.
    """
    try:
        tensors = load(str(weights))
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise LabclipError(f"{weights}: not a safetensors {kind} file ({type(err).__name__})") from None
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabclipError(f"{card_file}: not a JSON {kind} card ({type(err).__name__})") from None
    if not isinstance(card, dict) or card.get("format") != fmt:
        raise LabclipError(f"{card_file}: not a labclip {kind} card (no \"format\": \"{fmt}\")")
    return tensors, card


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
    tensors, card = read_weights_and_card(path, card_file, load_file, FORMAT, "text-adapter")
    weight, bias = tensors.get("weight", np.empty(0)), tensors.get("bias", np.empty(0))
    if set(tensors) != {"weight", "bias"} or weight.ndim != 2 or bias.shape != (weight.shape[1],):
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()) or "no tensors"
        raise LabclipError(f"{path}: expected tensors weight (dim_in, dim_out) and bias (dim_out,), found {shapes}")
    if weight.dtype != np.float32 or bias.dtype != np.float32 or not (np.isfinite(weight).all()
                                                                          and np.isfinite(bias).all()):
        raise LabclipError(f"{path}: adapter weights must be finite float32")
    if not weight.any():
        raise LabclipError(f"{path}: the adapter's weights are all zero, so it would give every caption the same "
                           "embedding; fit it again")
    adapter = TextAdapter(weight, bias, card)
    if (card.get("dim_in"), card.get("dim_out")) != weight.shape:
        raise LabclipError(f"{card_file}: card says {card.get('dim_in')}->{card.get('dim_out')} dimensions, "
                           f"the weights are {weight.shape[0]}->{weight.shape[1]}")
    if card.get("sha256") != adapter.sha256:
        raise LabclipError(f"{card_file}: the card's weights hash does not match {path.name}; save the adapter again")
    return adapter


def public_card(card: dict) -> dict:
    """An adapter's card fit to share in a report: its model names and revisions without machine paths."""
    card = dict(card)
    for key, shown in (("source_model", shown_model), ("target_model", shown_model),
                       ("source_revision", shown_revision), ("target_revision", shown_revision)):
        if isinstance(card.get(key), str):
            card[key] = shown(card[key])
    return card


class AdapterRevisionWarning(UserWarning):
    """The model's revision differs from the one the adapter was fitted into."""


def model_ref(model: Any) -> str:
    """How an adapter's card names a loaded model so it can be loaded again: a hub id, ``"demo"``,
    a local folder by its absolute path, and a paired text tower as ``TEXT+IMAGE``."""
    if model.name == DEMO_MODEL:
        return DEMO_MODEL
    text, image = (_loadable(p) for p in (model.source, model.image_source))
    return str(ModelSpec(text, image if model.info.paired and model.image_source else None))


def _loadable(part: str) -> str:
    return str(Path(part).resolve()) if exists(part) else part


def _canonical(spec: str) -> tuple[str, ...]:
    parsed = ModelSpec.parse(spec)
    parts = [parsed.text] if parsed.image is None else [parsed.text, parsed.image]
    return tuple(_loadable(p) if exists(p) else resolve_model_name(p) for p in parts)


def same_model(spec: str, model: Any) -> bool:
    """Whether ``spec`` (a card's ``source_model`` or ``target_model``) names ``model`` (a loaded model or
    a model spec): aliases and relative folders are resolved; a paired model matches with or without its
    image tower."""
    wanted = _canonical(str(spec))
    ref = _canonical(model if isinstance(model, str) else model_ref(model))
    return wanted in (ref, ref[:1])


def other_source(adapter: TextAdapter, model: Any, shown: str) -> str | None:
    """The card's source text tower when it is another model than ``model`` (loaded, or a spec), else ``None``.

    Raises:
        LabclipError: the card's target is not ``model`` (``shown`` is how the error names it), or a card
            without a target names another source.
    """
    source, target = adapter.card.get("source_model"), adapter.card.get("target_model")
    if target and not same_model(target, model):
        raise LabclipError(f"the adapter maps into the space of '{shown_model(target)}', not of '{shown}'; "
                           f"use it as '{shown_model(target)}{ADAPTER_MARK}PATH'")
    if not source or same_model(source, model):
        return None
    if not target:
        raise LabclipError(f"the adapter was fitted on '{shown_model(source)}' text embeddings, not '{shown}'; "
                           "use it with that model")
    return source


class Forward(Generic[T]):
    """A read-only member that is another object's: ``Forward("base")`` on a class reads ``self.base.<its name>``
    (``attribute`` names it where the names differ)."""

    def __init__(self, via: str, attribute: str = "") -> None:
        self.via, self.attribute = via, attribute

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = self.attribute or name

    def __get__(self, obj: Any, owner: type | None = None) -> T:
        return cast(T, self if obj is None else getattr(getattr(obj, self.via), self.attribute))


class AdaptedModel:
    """A model whose text embeddings pass through a :class:`TextAdapter`; images are untouched.

    Captions go through ``text_model`` (the adapter's source text tower: the wrapped model itself,
    or e.g. a multilingual tower), then the adapter, into the wrapped model's space. It has every member
    of :class:`labclip.spec.LoadedModel` itself; any other attribute (``preprocess``, ``cache``, ...) is the
    wrapped model's, and the tokenizer and context length are ``text_model``'s. ``name``, ``revision`` and
    ``identity`` carry the adapter, so ``labclip.model.describe`` and the cache key tell a model with an
    adapter from one without. The raw text embeddings stay in ``text_model``'s cache, under its own key;
    adapting them costs one product.
    """

    base: Any
    adapter: TextAdapter
    adapter_label: str
    text_model: Any
    family = Forward[str]("base")
    logit_scale = Forward[float]("base")
    logit_bias = Forward[float | None]("base")
    precision = Forward[Precision]("base")
    dim = Forward[int]("base")
    is_demo = Forward[bool]("base")
    text = Forward[Any]("text_model")
    tokenizer = Forward[Any]("text_model")
    context_length = Forward[int]("text_model")
    openai_text_cleaning = Forward[bool]("text_model")
    multilingual = Forward[bool]("text_model")

    def __init__(self, base: Any, adapter: TextAdapter, label: str | None = None, text_model: Any = None):
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "adapter", adapter)
        object.__setattr__(self, "adapter_label", label or f"sha256:{adapter.sha256[:12]}")
        object.__setattr__(self, "text_model", base if text_model is None else text_model)

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "adapter", "adapter_label", "text_model"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __setattr__(self, name: str, value: Any) -> None:
        for model in {id(self.base): self.base, id(self.text_model): self.text_model}.values():
            setattr(model, name, value)

    def __repr__(self) -> str:
        return f"AdaptedModel({self.name!r})"

    @property
    def name(self) -> str:
        return f"{self.base.name}{ADAPTER_MARK}{self.adapter_label}"

    @property
    def revision(self) -> str:
        return f"{self.base.revision}{ADAPTER_MARK}{self.adapter.sha256}"

    @property
    def untrained(self) -> bool:
        return bool(self.base.untrained or self.text_model.untrained)

    @property
    def identity(self) -> ModelId:
        """The wrapped model's identity with this adapter on it (:meth:`labclip.spec.ModelId.with_adapter`)."""
        return ModelId.of_clip(self.base).with_adapter(self.name, self.adapter_card, self.untrained)

    @property
    def separate_text_tower(self) -> bool:
        """Whether captions go through another model's text tower than the images' model."""
        return self.text_model is not self.base

    def encode_images(self, images: Sequence[Any], batch_size: int | None = None) -> np.ndarray:
        """The wrapped model's image embeddings."""
        return self.base.encode_images(images, batch_size)

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """The source text tower's embeddings, mapped by the adapter (unit float32 rows)."""
        return self.adapter.transform(self.text_model.encode_texts(texts, batch_size))

    @property
    def adapter_card(self) -> dict[str, Any]:
        """The adapter's card (model names and revisions without machine paths), its weights' hash and
        label, and the text path: which tower encodes captions before the adapter (what
        :func:`labclip.model.describe` records)."""
        card = public_card(self.adapter.card)
        tower = self.text_model
        text = {"model": shown_model(tower.source) if tower.name != DEMO_MODEL else DEMO_MODEL,
                "revision": shown_revision(tower.revision)}
        path = (f"captions → {text['model']} text tower → adapter {self.adapter_label} → "
                f"{shown_model(self.base.name)} space; images → {shown_model(self.base.name)} image tower")
        return {**card, "label": self.adapter_label, "sha256": self.adapter.sha256, "text_tower": text,
                "text_path": path}


def apply_adapter(model: Any, adapter: TextAdapter | str | os.PathLike, check_source: bool = True,
                  label: str | None = None, load_source: Callable[[str], Any] | None = None) -> AdaptedModel:
    """Put ``adapter`` (or the adapter saved at that path) on the text side of ``model``.

    The card's ``target_model`` must name ``model``. When its ``source_model`` names another text
    tower (e.g. a multilingual one), ``load_source`` loads it and captions go through it first.

    Args:
        model: a loaded model (from :func:`labclip.load_model`): the images' model and the target space.
        adapter: a :class:`TextAdapter` or the path of a saved one.
        check_source: refuse an adapter whose card names another target (or, in a card without a
            target, another source); ``False`` uses ``model``'s own text tower whatever the card says.
        label: how ``name`` shows the adapter; defaults to the file name, or the weights' hash.
        load_source: loads the source text tower's model from the card's ``source_model``
            (:func:`labclip.load_model` passes one).

    Raises:
        LabclipError: the dimensions do not fit, the adapter maps into another model's space, or its
            source text tower cannot be loaded.
    """
    if not isinstance(adapter, TextAdapter):
        label = label or Path(adapter).stem
        adapter = load_text_adapter(adapter)
    source = other_source(adapter, model, model.name) if check_source else None
    text_model = model
    if source is not None:
        if load_source is None:
            raise LabclipError(f"the adapter's source text tower '{shown_model(source)}' is not loaded; load it "
                               f"with load_model('{shown_model(adapter.card['target_model'])}{ADAPTER_MARK}PATH')")
        text_model = load_source(source)
    if (adapter.dim_in, adapter.dim_out) != (text_model.dim, model.dim):
        raise LabclipError(f"the adapter maps {adapter.dim_in}->{adapter.dim_out} dimensions; "
                           f"'{text_model.name}' text → '{model.name}' needs {text_model.dim}->{model.dim}")
    for name, tower in (("target", model), ("source", text_model)):
        fitted = adapter.card.get(f"{name}_revision")
        if check_source and fitted and tower.revision and shown_revision(tower.revision) != shown_revision(fitted):
            warnings.warn(f"the adapter was fitted with {name} '{tower.name}' at revision {shown_revision(fitted)}; "
                          f"this one is {shown_revision(tower.revision)}", AdapterRevisionWarning, stacklevel=2)
    return AdaptedModel(model, adapter, label, text_model)


__all__ = ["ADAPTER_MARK", "AdaptedModel", "AdapterRevisionWarning", "Forward", "TextAdapter", "apply_adapter", "card_path",
           "load_text_adapter", "model_ref", "other_source", "public_card", "same_model"]
