"""``load_model`` and :class:`ClipModel`: images and captions in, L2-normalised float32 embeddings out.

What a model *is* lives in :mod:`labclip.registry`; how each family is built, in
:mod:`labclip.encoders`; hub access, in :mod:`labclip.hub`. This module batches, caches and
normalises.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .adapter import AdaptedModel, TextAdapter, apply_adapter, load_text_adapter, other_source, split_adapter
from .cache import EmbeddingCache, default_cache_dir, sha256_bytes
from .config import check_model_name, shown_model, shown_revision
from .demo import UNTRAINED_MARKER, demo_model_path
from .encoders import LOADERS, ImageTower, TextTower
from .errors import LabclipError, at_least
from .finetune_file import apply_finetune, load_finetune, split_finetune
from .hub import ModelUnavailable, PartFailed, check_source, did_you_mean, is_repo_id, load_failure
from .images import PREPROCESS_VERSION, Preprocess, load_image
from .precision import FP32, Precision, cast, choose, to_dtype
from .registry import CLIP, DEFAULT_MODEL, DEMO_MODEL, ModelInfo, lookup, resolve_model_name
from .text import clean_text

ImageInput = str | os.PathLike | Image.Image


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

    @classmethod
    def from_transformers(cls, model: torch.nn.Module, tokenizer, preprocess: Preprocess, name: str,
                          **kwargs) -> ClipModel:
        """Wrap an in-memory transformers ``CLIPModel`` (e.g. a random-init one for a benchmark)."""
        return cls(name=name, info=ModelInfo(name, CLIP), image=ImageTower(model, preprocess),
                   text=TextTower(model, tokenizer), logit_scale=float(model.logit_scale.exp().item()),
                   source=name, image_source=name, **kwargs)

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def multilingual(self) -> bool:
        """Whether the text encoder was trained for many languages (not OpenAI's English CLIP)."""
        return self.info.multilingual

    @property
    def model(self) -> torch.nn.Module:
        """The transformers model holding the image encoder (and, for native families, the text encoder)."""
        return self.image.module

    @property
    def tokenizer(self):
        return self.text.tokenizer

    @property
    def preprocess(self) -> Preprocess:
        return self.image.preprocess

    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def openai_text_cleaning(self) -> bool:
        return self.text.openai_text_cleaning

    @property
    def dim(self) -> int:
        config = self.image.module.config
        return int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)

    def probabilities(self, sim: np.ndarray) -> np.ndarray:
        """Match probabilities of an images × captions cosine matrix: the softmax over captions at the
        logit scale, or, for SigLIP, each pair's own ``sigmoid(logit_scale * cosine + logit_bias)``."""
        from scipy.special import expit, softmax

        logits = self.logit_scale * np.asarray(sim, dtype=np.float64)
        return softmax(logits, axis=-1) if self.logit_bias is None else expit(logits + self.logit_bias)

    @property
    def is_demo(self) -> bool:
        return self.name == DEMO_MODEL

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

    def _cached(self, items: list, keys: list[str], what: str, batch_size: int) -> np.ndarray:
        if self.cache is None:
            return self._encode(items, batch_size, what)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        todo = []
        for i, key in enumerate(keys):
            vector = self.cache.get(what, key)
            if vector is None:
                todo.append(i)
            else:
                out[i] = vector
        if todo:
            def store(rows: list[int], vectors: np.ndarray) -> None:
                for row, vector in zip(rows, vectors):
                    out[todo[row]] = vector
                    self.cache.put(what, keys[todo[row]], vector)

            self._encode([items[i] for i in todo], batch_size, what, on_batch=store)
        return out

    def _forward(self, what: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One batch through the image or the text tower, on the model's device."""
        tower = self.image if what == "images" else self.text
        return tower(**to_dtype({k: v.to(self.device) for k, v in inputs.items()}, self.precision.dtype))

    def _encode(self, items: list, batch_size: int, what: str,
                on_batch: Callable[[list[int], np.ndarray], None] | None = None) -> np.ndarray:
        """Encode in batches; the next batch is prepared on a worker thread while this one runs.

        Captions are batched shortest first, so each batch pads to similar lengths. ``on_batch``
        receives each finished batch (positions in ``items``, embeddings) at once, so the cache
        keeps everything but the batch that was running when a run is interrupted.
        """
        if what == "images":
            prepare = lambda chunk: self.image.prepare([_as_image(x) for x in chunk])  # noqa: E731
        else:
            prepare = self.text.prepare
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
            pending = pool.submit(prepare, [items[i] for i in chunks[0]]) if chunks else None
            for n, chunk in enumerate(chunks):
                inputs = pending.result()
                if n + 1 < len(chunks):
                    pending = pool.submit(prepare, [items[i] for i in chunks[n + 1]])
                out[chunk] = F.normalize(self._forward(what, inputs).float(), dim=-1).cpu().numpy()
                if on_batch is not None:
                    on_batch(chunk, out[chunk])
                bar.update(len(chunk))
        return out


def _as_image(item: ImageInput) -> Image.Image:
    return item if isinstance(item, Image.Image) else load_image(item)


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    device: str = "cpu",
    cache: bool | str | os.PathLike = True,
    precision: str | None = "auto",
    image_model: str | os.PathLike | None = None,
    adapter: TextAdapter | str | os.PathLike | None = None,
    *,
    default_for: str | None = None,
) -> ClipModel | AdaptedModel:
    """Load a CLIP-family model with its tokenizer and preprocessing.

    Args:
        name_or_path: a hub id or alias from :mod:`labclip.registry` (``ViT-B/32``), any hub id of a
            CLIP or AltCLIP checkpoint, a local directory in one of the registry's family layouts,
            ``"demo"`` for labclip's untrained demo model, or ``"TEXT+IMAGE"`` to pair a multilingual
            text encoder with the CLIP model whose image encoder it was distilled into.
            ``"MODEL+adapter:PATH"`` puts the text adapter saved at ``PATH`` on ``MODEL`` (split first).
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
        is given (used the same way).

    Raises:
        LabclipError: the model could not be loaded; the message says what was tried.
    """
    name, adapter_path = split_adapter(str(name_or_path))
    adapter = adapter if adapter is not None else adapter_path
    name, finetune_path = split_finetune(name)
    chosen = choose(precision, device, default_for=default_for)
    info = _model_info(str(demo_model_path()) if name == DEMO_MODEL else name, image_model)
    try:
        towers = LOADERS[info.family](info)
    except Exception as err:  # noqa: BLE001 - every loading failure becomes one user-facing line
        raise _load_error(name, info, err) from err
    info = replace(info, family=towers.family)
    for module in {id(towers.image.module): towers.image.module, id(towers.text.module): towers.text.module}.values():
        module.eval().to(device)
    casted = {}
    for tower in (towers.image, towers.text):
        tower.module = casted.setdefault(id(tower.module), cast(tower.module, chosen))
    local = Path(info.id)
    untrained = any(Path(s).is_dir() and (Path(s) / UNTRAINED_MARKER).exists() for s in {info.id, info.image_source})
    revision = towers.text_revision
    if name == DEMO_MODEL:
        revision = local.name  # demo-model-v<N>: built from a seed, the same everywhere
    elif revision is None and local.is_dir():
        revision = "local:" + str(local.resolve())
    clip = ClipModel(
        name=shown_model(name), info=info, image=towers.image, text=towers.text, logit_scale=towers.logit_scale,
        source=info.id, image_source=resolve_model_name(info.image_source), device=device, revision=revision,
        image_revision=towers.image_revision, untrained=untrained, precision=chosen, logit_bias=towers.logit_bias,
    )
    if finetune_path is not None:
        apply_finetune(clip, finetune_path)
    if cache:
        root = default_cache_dir() if cache is True else Path(cache)
        clip.cache = EmbeddingCache(root, {"images": fingerprint(clip, images_only=True), "captions": fingerprint(clip)},
                                    clip.dim)
    if adapter is None:
        return clip
    return apply_adapter(clip, adapter, load_source=lambda source: load_model(
        source, device=device, cache=cache, precision=precision, default_for=default_for))


def _load_error(name: str, info: ModelInfo, err: Exception) -> LabclipError:
    """The one line for a loading failure, naming the model and, for a paired model, the part that failed
    (:class:`labclip.hub.PartFailed`); :class:`ModelUnavailable` stays itself (the fallback case)."""
    cause = err.cause if isinstance(err, PartFailed) else err
    if isinstance(cause, ModelUnavailable):
        return ModelUnavailable(load_failure(name, info.id, err))
    if isinstance(err, LabclipError):
        return err
    return LabclipError(load_failure(name, info.id, err))


def _part(info: ModelInfo, source: str) -> str | None:
    """Which tower of a paired model ``source`` is (``None`` for a model that is one repository)."""
    if not info.paired:
        return None
    return "image tower" if source == info.image_source else "text tower"


def _model_info(name: str, image_model: str | os.PathLike | None) -> ModelInfo:
    """The registry entry of ``name``; a source that is neither a folder nor a hub id is an error."""
    check_model_name(name)
    info = lookup(name, None if image_model is None else str(image_model))
    for requested in dict.fromkeys([info.id, info.image_source]):
        if not Path(requested).exists() and not is_repo_id(requested):
            raise LabclipError(f"'{requested}': no such model directory{did_you_mean(requested)}")
    return info


def check_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, image_model: str | os.PathLike | None = None) -> None:
    """Whether :func:`load_model` can have the model, decided from the registry, local files and the hub's
    answer alone: no weights are read and no model is built.

    The demo model is always available (it is built offline). A local folder needs its model config; a
    hub id is available when its config and weights are cached, else the hub is asked (see
    :func:`labclip.hub.check_source`). Broken weights in a folder or cache still fail later, in
    :func:`load_model`. A text adapter named in ``name_or_path`` (a small file) is read and checked, and
    the source text tower its card names, when that is another model.

    Raises:
        LabclipError: what :func:`load_model` would raise for a missing folder, a name that is neither a
            folder nor a hub id, or a model the hub does not know.
        ModelUnavailable: what :func:`load_model` would raise when the model is not cached and the hub
            cannot be reached, with the same message.
    """
    name, adapter = split_adapter(str(name_or_path))
    name, finetune_path = split_finetune(name)
    if finetune_path is not None:
        load_finetune(finetune_path)
    if name != DEMO_MODEL:
        info = _model_info(name, image_model)
        for source in dict.fromkeys([info.image_source, info.id]):
            part = _part(info, source)
            try:
                check_source(source)
            except ModelUnavailable as err:
                raise ModelUnavailable(load_failure(name, info.id, PartFailed(part, source, err) if part else err)) \
                    from err
            except LabclipError as err:
                if Path(source).is_dir() or part:
                    raise LabclipError(load_failure(name, info.id, PartFailed(part, source, err) if part else err)) \
                        from err
                raise
    if adapter is not None:
        source = other_source(load_text_adapter(adapter), name, shown_model(name))
        if source is not None:
            check_model(source)


def fingerprint(model: ClipModel, images_only: bool = False) -> str:
    """Identifies the weights, tokenizer and preprocessing: hub id and revision, or a hash of a
    local directory's files; plus the precision. ``images_only`` covers just the image encoder,
    so models that share it share cached image embeddings."""
    sources = [model.image_source or model.source]
    if not images_only and model.info.paired:
        sources.append(model.source)
    revision = model.image_revision if images_only else model.revision
    return fingerprint_sources(sources, f"{revision}|{model.precision.name}|{model.preprocess}|{images_only}")


def fingerprint_sources(sources: list[str], extra: str) -> str:
    """Hash of model sources: a local folder by its files' contents, a hub id by name (``extra`` holds
    the revision and options)."""
    digest = hashlib.sha256(f"{sources}|{extra}".encode())
    for source in sources:
        local = Path(source)
        if local.is_dir():
            for file in sorted(p for p in local.rglob("*") if p.is_file()):
                digest.update(str(file.relative_to(local)).encode() + b"\0")
                with open(file, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()[:32]


def _cache_summary(model: ClipModel | AdaptedModel) -> str:
    """Cache use; with an adapter's separate text tower, images from the model's cache, captions from the tower's."""
    images, captions = model.cache, getattr(model, "text_model", model).cache
    if images is captions:
        return images.summary() if images else "off"
    return "; ".join(cache.summary((kind,)) if cache else f"{kind} cache off"
                     for kind, cache in (("images", images), ("captions", captions)))


def describe(model: ClipModel) -> dict:
    """The facts a report records about the model that made its numbers."""
    return {
        "name": model.name,
        "source": shown_model(model.source),
        "family": model.family,
        "revision": shown_revision(model.revision),
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
        **({"adapter": model.adapter_card} if isinstance(model, AdaptedModel) else {}),
        **({"finetune": card} if (card := getattr(model, "finetune_card", None)) else {}),
    }


__all__ = ["ClipModel", "check_model", "describe", "load_model"]
