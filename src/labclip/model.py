"""``load_model`` and :class:`ClipModel`: images and captions in, L2-normalised float32 embeddings out.

What a model *is* lives in :mod:`labclip.registry`; how each family is built, in
:mod:`labclip.encoders`; hub access, in :mod:`labclip.hub`. This module batches, caches and
normalises.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .adapter import AdaptedModel, Forward, TextAdapter, apply_adapter, load_text_adapter, other_source
from .cache import EmbeddingCache, default_cache_dir, sha256_bytes
from .config import check_model_name, exists
from .demo import UNTRAINED_MARKER, demo_model_path
from .encoders import LOADERS, ImageTower, TextTower
from .errors import LabclipError, at_least
from .hub import check_sources, did_you_mean, is_repo_id, loading_error
from .images import PREPROCESS_VERSION, AnyPreprocess, load_image
from .precision import FP32, Precision, cast, choose, to_dtype
from .registry import CLIP, DEFAULT_MODEL, DEMO_MODEL, ModelInfo, resolve_model_name
from .spec import LoadedModel, ModelId, ModelSpec, shown_model
from .text import clean_text

ImageInput = str | os.PathLike[str] | Image.Image


@dataclass
class ClipModel:
    """A CLIP-family image and text encoder pair that returns L2-normalised float32 embeddings.

    Attributes:
        name: the name it was requested by (``"demo"``, an alias, a hub id, a folder).
        info: its registry entry (family, image tower, languages, ...).
        image: the image tower (preprocessing + encoder).
        text: the text tower (tokenizer + encoder).
        logit_scale: the learned temperature, exponentiated (100.0 for OpenAI's weights).
        source: where the text tower (or the whole model) came from.
        image_source: where the image encoder came from.
        revision: commit hash (or ``local:<path>``, ``demo-model-v<N>`` for the demo model) of ``source``;
            ``None`` when unknown.
        image_revision: commit hash of the image encoder's repository.
        untrained: the weights are random (the demo model, test models).
        logit_bias: SigLIP's learned sigmoid bias; ``None`` for softmax (CLIP-style) models.
        progress: a progress bar while encoding more than one batch: ``None`` only when stderr is a
            terminal (not in a pipe, a log or a notebook), ``True`` always, ``False`` never.
        finetune: the fine-tuned weights put on it (``MODEL+finetune:PATH``), else ``None``.
        finetune_card: their card as reports show it (:func:`labclip.finetune.apply_finetune`), else ``None``.

    Read from its parts: ``family`` and ``multilingual`` (a text encoder trained for many languages) from
    ``info``; ``model`` (the transformers module holding the image encoder) and ``preprocess`` from ``image``;
    ``tokenizer``, ``context_length`` and ``openai_text_cleaning`` from ``text``.
    """

    name: str  # as reports show it: a hub id, or a local folder by its name (no machine path)
    info: ModelInfo
    image: ImageTower
    text: TextTower
    logit_scale: float = 100.0
    source: str = ""
    image_source: str = ""
    device: str = "cpu"
    revision: str | None = None
    image_revision: str | None = None
    untrained: bool = False
    logit_bias: float | None = None
    precision: Precision = FP32
    cache: EmbeddingCache | None = None
    image_batch_size: int = 32
    text_batch_size: int = 16
    progress: bool | None = None
    finetune: str | None = None
    finetune_card: dict[str, Any] | None = None

    @classmethod
    def from_transformers(cls, model: Any, tokenizer: Any, preprocess: AnyPreprocess, name: str,
                          **kwargs: Any) -> ClipModel:
        """Wrap an in-memory transformers ``CLIPModel`` (e.g. a random-init one for a benchmark)."""
        return cls(name=name, info=ModelInfo(name, CLIP), image=ImageTower(model, preprocess),
                   text=TextTower(model, tokenizer), logit_scale=float(model.logit_scale.exp().item()),
                   source=name, image_source=name, **kwargs)

    family = Forward[str]("info")
    multilingual = Forward[bool]("info")
    model = Forward[torch.nn.Module]("image", "module")
    preprocess = Forward[AnyPreprocess]("image")
    tokenizer = Forward[Any]("text")
    context_length = Forward[int]("text")
    openai_text_cleaning = Forward[bool]("text")

    @property
    def dim(self) -> int:
        config: Any = self.image.module.config
        return int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)

    @property
    def is_demo(self) -> bool:
        return self.name == DEMO_MODEL

    @property
    def identity(self) -> ModelId:
        """Which model this is: shown name and revision, content fingerprint, record fields, cache keys."""
        return ModelId.of_clip(self)

    @property
    def text_model(self) -> ClipModel:
        """The model whose text tower encodes the captions: this one (an ``AdaptedModel``'s may be another)."""
        return self

    @property
    def adapter_card(self) -> dict[str, Any] | None:
        """No text adapter on this model (an ``AdaptedModel`` has its card here)."""
        return None

    def encode_images(self, images: Sequence[ImageInput], batch_size: int | None = None) -> np.ndarray:
        """Encode image files or PIL images.

        Args:
            images: paths (read with :func:`labclip.images.load_image`) or PIL images.
            batch_size: images per forward pass; defaults to ``image_batch_size``.

        Returns:
            ``(len(images), dim)`` float32 array with unit-length rows.
        """
        images = list(images)
        keys = [self._image_key(x) for x in images] if self.cache else []
        return self._cached(images, keys, "images", self._batch_size(batch_size, self.image_batch_size))

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Encode captions, each batch padded to its longest caption.

        Returns:
            ``(len(texts), dim)`` float32 array with unit-length rows.
        """
        texts = [str(t) for t in texts]
        clean = "openai-clean-v2:" if self.openai_text_cleaning else "raw:"
        keys = [sha256_bytes((clean + t).encode("utf-8")) for t in texts] if self.cache else []
        return self._cached(texts, keys, "captions", self._batch_size(batch_size, self.text_batch_size))

    @staticmethod
    def _batch_size(given: int | None, default: int) -> int:
        """``given`` (``None``: ``default``), which must be 1 or more: a batch of 0 or -5 would encode nothing."""
        return at_least(default if given is None else given, 1, "batch_size")

    def pixel_values(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Preprocess images into the ``(n, 3, crop, crop)`` tensor the vision tower takes."""
        return self.image.prepare([_as_image(x) for x in images])["pixel_values"]

    def _image_key(self, item: ImageInput) -> str:
        if isinstance(item, Image.Image):
            data = f"{item.mode}:{item.size}:".encode() + item.tobytes()
        else:
            try:
                data = Path(item).read_bytes()
            except OSError as err:
                raise LabclipError(f"{item}: cannot read image file ({err.strerror})") from None
        return sha256_bytes(PREPROCESS_VERSION.encode() + b"\0" + data)

    def _cached(self, items: list[Any], keys: list[str], what: str, batch_size: int) -> np.ndarray:
        cache = self.cache
        if cache is None:
            return self._encode(items, batch_size, what)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        todo: list[int] = []
        for i, key in enumerate(keys):
            vector = cache.get(what, key)
            if vector is None:
                todo.append(i)
            else:
                out[i] = vector
        if todo:
            def store(rows: list[int], vectors: np.ndarray) -> None:
                for row, vector in zip(rows, vectors):
                    out[todo[row]] = vector
                    cache.put(what, keys[todo[row]], vector)

            self._encode([items[i] for i in todo], batch_size, what, on_batch=store)
        return out

    def _forward(self, what: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One batch through the image or the text tower, on the model's device."""
        tower = self.image if what == "images" else self.text
        return tower(**to_dtype({k: v.to(self.device) for k, v in inputs.items()}, self.precision.dtype))

    def _encode(self, items: list[Any], batch_size: int, what: str,
                on_batch: Callable[[list[int], np.ndarray], None] | None = None) -> np.ndarray:
        """Encode in batches; the next batch is prepared on a worker thread while this one runs.

        Captions are batched shortest first, so each batch pads to similar lengths. ``on_batch``
        receives each finished batch (positions in ``items``, embeddings) at once, so the cache
        keeps everything but the batch that was running when a run is interrupted.
        """
        def prepare(chunk: list[Any]) -> dict[str, torch.Tensor]:
            if what == "images":
                return self.image.prepare([_as_image(x) for x in chunk])
            return self.text.prepare(chunk)

        order = list(range(len(items)))
        if what == "captions":
            lengths = [len(ids) for ids in self.tokenizer([clean_text(t) for t in items])["input_ids"]]
            order.sort(key=lengths.__getitem__)
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        out = np.empty((len(items), self.dim), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode(), tqdm(
            total=len(items), desc=f"encoding {what}", unit=what[:-1],
            disable=True if len(chunks) <= 1 else None if self.progress is None else not self.progress,
        ) as bar:
            pending = [pool.submit(prepare, [items[i] for i in chunk]) for chunk in chunks[:1]]
            for n, chunk in enumerate(chunks):
                inputs = pending.pop().result()
                if n + 1 < len(chunks):
                    pending.append(pool.submit(prepare, [items[i] for i in chunks[n + 1]]))
                out[chunk] = F.normalize(self._forward(what, inputs).float(), dim=-1).cpu().numpy()
                if on_batch is not None:
                    on_batch(chunk, out[chunk])
                bar.update(len(chunk))
        return out


def _as_image(item: ImageInput) -> Image.Image:
    return item if isinstance(item, Image.Image) else load_image(item)


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    device: str = "cpu",
    cache: bool | str | os.PathLike[str] = True,
    precision: str | None = "auto",
    image_model: str | os.PathLike[str] | None = None,
    adapter: TextAdapter | str | os.PathLike[str] | None = None,
    *,
    default_for: str | None = None,
) -> ClipModel | AdaptedModel:
    """Load a CLIP-family model with its tokenizer and preprocessing.

    Args:
        name_or_path: any name :meth:`labclip.spec.ModelSpec.parse` takes: a hub id or alias from
            :mod:`labclip.registry` (``ViT-B/32``), any hub id of a CLIP or AltCLIP checkpoint, a local
            directory in one of the registry's family layouts, ``"demo"`` for labclip's untrained demo model,
            or ``"TEXT+IMAGE"`` to pair a multilingual text encoder with the CLIP model whose image encoder it
            was distilled into. ``"MODEL+finetune:PATH"`` puts the fine-tuned weights at ``PATH`` on ``MODEL``
            (:func:`labclip.finetune.apply_finetune`); ``"MODEL+adapter:PATH"`` the text adapter saved at
            ``PATH``.
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        cache: keep embeddings in the on-disk cache (``True``: under labclip's cache folder,
            a path: there, ``False``: no cache).
        precision: ``"auto"`` (bf16 where the hardware runs it faster, see
            :func:`labclip.precision.choose`), ``"fp32"``, ``"bf16"`` or ``"fp16"``. Embeddings are
            float32 unit rows whatever the precision. ``None``: the default for ``default_for``
            (:data:`labclip.precision.DEFAULTS`), recorded as the default, not as requested.
        image_model: for a paired text encoder, the CLIP model whose image encoder it pairs with;
            the registry names it for known models.
        adapter: a :class:`labclip.adapter.TextAdapter` or the path of a saved one, put on the text
            side; overrides an adapter named in ``name_or_path``.
        default_for: the command or notebook (``"match"``, ``"05_scale"``) whose default precision applies
            when ``precision`` is ``None``.

    Returns:
        A :class:`ClipModel`, or an :class:`labclip.adapter.AdaptedModel` around one when an adapter
        is given (used the same way; both are a :class:`labclip.spec.LoadedModel`).

    Raises:
        LabclipError: the model could not be loaded; the message says what was tried.
    """
    spec = ModelSpec.parse(name_or_path)
    adapter = adapter if adapter is not None else spec.adapter
    clip = _load_clip(spec.without(adapter=True), image_model, device, choose(precision, device, default_for=default_for))
    if cache:
        root = default_cache_dir() if cache is True else Path(cache)
        identity = clip.identity
        clip.cache = EmbeddingCache(root, {"images": identity.cache_key(images_only=True),
                                           "captions": identity.cache_key()}, clip.dim)
    if adapter is None:
        return clip
    return apply_adapter(clip, adapter, load_source=lambda source: load_model(
        source, device=device, cache=cache, precision=precision, default_for=default_for))


def _load_clip(spec: ModelSpec, image_model: str | os.PathLike[str] | None, device: str,
               chosen: Precision) -> ClipModel:
    """The model (and its fine-tuning) of ``spec``, on ``device`` in ``chosen`` precision, without a cache."""
    name = spec.without(finetune=True)
    info = _model_info(ModelSpec(str(demo_model_path())) if spec.is_demo else name, image_model)
    try:
        towers = LOADERS[info.family](info)
    except Exception as err:  # noqa: BLE001 - every loading failure becomes one user-facing line
        raise loading_error(str(name), info, err) from err
    info = replace(info, family=towers.family)
    for module in {id(towers.image.module): towers.image.module, id(towers.text.module): towers.text.module}.values():
        module.eval().to(device)
    casted: dict[int, torch.nn.Module] = {}
    for tower in (towers.image, towers.text):
        tower.module = casted.setdefault(id(tower.module), cast(tower.module, chosen))
    local = Path(info.id)
    untrained = any(Path(s).is_dir() and (Path(s) / UNTRAINED_MARKER).exists() for s in {info.id, info.image_source})
    revision = towers.text_revision
    if spec.is_demo:
        revision = local.name  # demo-model-v<N>: built from a seed, the same everywhere
    elif revision is None and local.is_dir():
        revision = "local:" + str(local.resolve())
    clip = ClipModel(
        name=name.shown(), info=info, image=towers.image, text=towers.text, logit_scale=towers.logit_scale,
        source=info.id, image_source=resolve_model_name(info.image_source), device=device, revision=revision,
        image_revision=towers.image_revision, untrained=untrained, precision=chosen, logit_bias=towers.logit_bias,
    )
    return clip if spec.finetune is None else _finetuned(clip, spec)


def _finetuned(clip: ClipModel, spec: ModelSpec) -> ClipModel:
    """``clip`` with the fine-tuned weights of ``spec.finetune`` on it (:func:`labclip.finetune.apply_finetune`)."""
    path = str(spec.finetune)
    if not exists(path):
        raise LabclipError(f"model '{spec.shown()}': no fine-tuned weights at {path}")
    try:  # an optional module, found at run time: the core does not depend on it
        finetune = importlib.import_module("labclip.finetune")
    except ModuleNotFoundError as err:
        if err.name != "labclip.finetune":
            raise
        raise LabclipError(f"model '{spec.shown()}': '+finetune:' needs labclip.finetune, which this installation "
                           "lacks") from None
    tuned = finetune.apply_finetune(clip, path)
    clip = clip if tuned is None else tuned
    clip.name, clip.finetune = spec.shown(), path
    return clip


def _model_info(spec: ModelSpec, image_model: str | os.PathLike[str] | None) -> ModelInfo:
    """The registry entry of ``spec``; a source that is neither a folder nor a hub id is an error."""
    check_model_name(spec.model)
    info = spec.info(None if image_model is None else str(image_model))
    for requested in dict.fromkeys([info.id, info.image_source]):
        if not Path(requested).exists() and not is_repo_id(requested):
            raise LabclipError(f"'{requested}': no such model directory{did_you_mean(requested)}")
    return info


def check_model(name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
                image_model: str | os.PathLike[str] | None = None) -> None:
    """Whether :func:`load_model` can have the model, decided from the registry, local files and the hub's
    answer alone: no weights are read and no model is built.

    The demo model is always available (it is built offline). A local folder needs its model config; a
    hub id is available when its config and weights are cached, else the hub is asked (see
    :func:`labclip.hub.check_source`). Broken weights in a folder or cache still fail later, in
    :func:`load_model`. A text adapter named in ``name_or_path`` (a small file) is read and checked, and
    the source text tower its card names, when that is another model; fine-tuned weights must exist.

    Raises:
        LabclipError: what :func:`load_model` would raise for a missing folder, a name that is neither a
            folder nor a hub id, or a model the hub does not know.
        ModelUnavailable: what :func:`load_model` would raise when the model is not cached and the hub
            cannot be reached, with the same message.
    """
    spec = ModelSpec.parse(name_or_path)
    name = spec.without(finetune=True, adapter=True)
    if not spec.is_demo:
        check_sources(str(name), _model_info(name, image_model))
    if spec.finetune is not None and not exists(spec.finetune):
        raise LabclipError(f"model '{spec.shown()}': no fine-tuned weights at {spec.finetune}")
    if spec.adapter is not None:
        model = spec.without(adapter=True)
        source = other_source(load_text_adapter(spec.adapter), str(model), model.shown())
        if source is not None:
            check_model(source)


def _cache_summary(model: ClipModel | AdaptedModel) -> str:
    """Cache use; with an adapter's separate text tower, images from the model's cache, captions from the tower's."""
    images, captions = model.cache, model.text_model.cache
    if images is captions:
        return images.summary() if images else "off"
    return "; ".join(cache.summary((kind,)) if cache else f"{kind} cache off"
                     for kind, cache in (("images", images), ("captions", captions)))


def describe(model: ClipModel | AdaptedModel) -> dict[str, Any]:
    """The facts a report records about the model that made its numbers."""
    return {
        "name": model.name,
        "source": shown_model(model.source),
        "family": model.family,
        "revision": model.identity.revision,
        "untrained": model.untrained,
        "logit_scale": round(model.logit_scale, 4),
        "logit_bias": None if model.logit_bias is None else round(model.logit_bias, 4),
        "embedding_dim": model.dim,
        "image_size": model.preprocess.crop,
        "device": model.device,
        "precision": model.precision.name,
        "precision_requested": model.precision.requested,
        "precision_reason": model.precision.reason,
        "precision_default": model.precision.default,
        "cache": _cache_summary(model),
        **({"adapter": model.adapter_card} if model.adapter_card is not None else {}),
    }


LOADED_MODELS: tuple[type[LoadedModel], ...] = (ClipModel, AdaptedModel)  # mypy checks both are LoadedModels

__all__ = ["ClipModel", "check_model", "describe", "load_model"]
