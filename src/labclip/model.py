"""Loading CLIP through transformers and encoding images and captions into unit vectors."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from . import multilingual
from .cache import EmbeddingCache, default_cache_dir, sha256_bytes
from .config import CONTEXT_LENGTH, DEFAULT_MODEL, DEMO_MODEL, MODEL_ALIASES, cache_dir, shown_path
from .errors import LabclipError
from .images import PREPROCESS_VERSION, Preprocess, load_image
from .testing import UNTRAINED_MARKER, make_tiny_model
from .text import clean_text, tokenize

DEMO_VERSION = 1
ImageInput = str | os.PathLike | Image.Image


@dataclass
class ClipModel:
    """A CLIP image and text encoder pair that returns L2-normalised float32 embeddings."""

    name: str  # as reports show it: a hub id, or a local folder by its name (no machine path)
    source: str
    model: torch.nn.Module
    tokenizer: object
    preprocess: Preprocess
    device: str = "cpu"
    revision: str | None = None
    untrained: bool = False
    image_batch_size: int = 32
    text_batch_size: int = 16
    openai_text_cleaning: bool = True
    quantize: str | None = None
    cache: EmbeddingCache | None = None
    text_tower: torch.nn.Module | None = None
    image_source: str | None = None
    image_revision: str | None = None
    context_length: int = CONTEXT_LENGTH

    @property
    def logit_scale(self) -> float:
        """The learned temperature, exponentiated (100.0 for OpenAI's weights)."""
        return float(self.model.logit_scale.exp().item())

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

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
        return self._cached(images, keys, "images", batch_size or self.image_batch_size)

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Encode captions, each batch padded to its longest caption.

        Returns:
            ``(len(texts), dim)`` float32 array with unit-length rows.
        """
        texts = [str(t) for t in texts]
        clean = "openai-clean:" if self.openai_text_cleaning else "raw:"
        keys = [sha256_bytes((clean + t).encode("utf-8")) for t in texts] if self.cache else []
        return self._cached(texts, keys, "captions", batch_size or self.text_batch_size)

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

    def pixel_values(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Preprocess images into the ``(n, 3, crop, crop)`` tensor the vision tower takes."""
        return torch.stack([self.preprocess(_as_image(x)) for x in images])

    def _prepare_images(self, images: list) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values(images)}

    def _prepare_texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.context_length, self.openai_text_cleaning)

    def _forward(self, what: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if what == "images":
            return _features(self.model.get_image_features(**inputs))
        if self.text_tower is not None:
            return self.text_tower(**inputs)
        return _features(self.model.get_text_features(**inputs))

    def _encode(self, items: list, batch_size: int, what: str,
                on_batch: Callable[[list[int], np.ndarray], None] | None = None) -> np.ndarray:
        """Encode in batches; the next batch is prepared on a worker thread while this one runs.

        Captions are batched shortest first, so each batch pads to similar lengths. ``on_batch``
        receives each finished batch (positions in ``items``, embeddings) at once, so the cache
        keeps everything but the batch that was running when a run is interrupted.
        """
        prepare = self._prepare_images if what == "images" else self._prepare_texts
        order = list(range(len(items)))
        if what == "captions":
            lengths = [len(ids) for ids in self.tokenizer([clean_text(t) for t in items])["input_ids"]]
            order.sort(key=lengths.__getitem__)
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        out = np.empty((len(items), self.dim), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode(), tqdm(
            total=len(items), desc=f"encoding {what}", unit=what[:-1], disable=len(chunks) <= 1
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


def _features(output) -> torch.Tensor:
    """transformers 4 returns a tensor from ``get_*_features``; 5 returns an output object."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def resolve_model_name(name_or_path: str | os.PathLike) -> str:
    """Map an OpenAI alias such as ``ViT-B/32`` to its hub id; other names pass through."""
    name = str(name_or_path)
    return MODEL_ALIASES.get(name, name)


def demo_model_path() -> Path:
    """Build the untrained demo model in labclip's cache on first use and return its directory."""
    target = cache_dir() / f"demo-model-v{DEMO_VERSION}"
    if (target / UNTRAINED_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        make_tiny_model(staging / "model", seed=0, image_size=64)
        try:
            os.replace(staging / "model", target)
        except OSError:
            if not (target / UNTRAINED_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    device: str = "cpu",
    cache: bool | str | os.PathLike = True,
    quantize: str | None = None,
    image_model: str | os.PathLike | None = None,
) -> ClipModel:
    """Load a CLIP model with its tokenizer and preprocessing.

    Args:
        name_or_path: a hub id (``openai/clip-vit-base-patch32``), an OpenAI alias (``ViT-B/32``),
            a local directory saved with ``save_pretrained``, ``"demo"`` for labclip's untrained
            demo model, or a multilingual model: ``BAAI/AltCLIP``,
            ``sentence-transformers/clip-ViT-B-32-multilingual-v1``, ``M-CLIP/XLM-Roberta-Large-Vit-B-32``
            (or a local folder in one of those layouts). ``"TEXT+IMAGE"`` pairs a multilingual text
            encoder with the CLIP model whose image encoder it was distilled into.
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        cache: keep embeddings in the on-disk cache (``True``: under labclip's cache folder,
            a path: there, ``False``: no cache).
        quantize: ``"int8"`` for dynamic int8 quantisation of the linear layers (CPU; faster,
            similarities within about 0.01 of fp32).
        image_model: for a multilingual text encoder (sentence-transformers or M-CLIP layout), the
            CLIP model whose image encoder it pairs with; the known hub models name their own.

    Returns:
        A :class:`ClipModel`.

    Raises:
        LabclipError: the model could not be loaded; the message says what was tried.
    """
    name = str(name_or_path)
    text_name = name
    if "+" in name and not Path(name).exists():
        text_name, image_model = name.split("+", 1)
    source = str(demo_model_path()) if name == DEMO_MODEL else resolve_model_name(text_name)
    if quantize not in (None, "int8"):
        raise LabclipError(f"unknown quantize option {quantize!r}; use 'int8' or leave it unset")
    try:
        layout, paired_image = _layout(source)
        if layout is None:
            model, tokenizer, image_processor = _from_hub(source, lambda **kw: _native_parts(source, **kw))
            text_tower, image_source, context = None, source, CONTEXT_LENGTH
            if getattr(model.config, "model_type", "clip") != "clip":
                context = multilingual.context_length(tokenizer, model.config.text_config)
        else:
            image_source = resolve_model_name(str(image_model or paired_image))
            model, _, image_processor = _from_hub(image_source, lambda **kw: _native_parts(image_source, **kw))
            loader = multilingual.load_sentence_transformer if layout == multilingual.SENTENCE_TRANSFORMERS \
                else multilingual.load_mclip
            text_tower, tokenizer = _from_hub(source, lambda **kw: loader(_repo_dir(source, **kw), **kw))
            context = multilingual.context_length(tokenizer, text_tower.transformer.config)
            text_tower = text_tower.to(device)
    except LabclipError:
        raise
    except Exception as err:  # noqa: BLE001 - every loading failure becomes one user-facing line
        raise LabclipError(_load_failure(name, source, err)) from err
    model = model.eval().to(device)
    image_revision = getattr(model.config, "_commit_hash", None)
    if quantize == "int8":
        model = quantize_int8(model)
        text_tower = quantize_int8(text_tower) if text_tower is not None else None
    local = Path(source)
    untrained = any(Path(s).is_dir() and (Path(s) / UNTRAINED_MARKER).exists() for s in {source, image_source})
    revision = getattr(model.config, "_commit_hash", None) if text_tower is None else None
    if revision is None and local.is_dir():
        revision = "local:" + str(local.resolve())
    clip = ClipModel(
        name=shown_model(name), source=source, model=model, tokenizer=tokenizer,
        preprocess=Preprocess.from_image_processor(image_processor), device=device,
        revision=revision, untrained=untrained, quantize=quantize,
        openai_text_cleaning=layout is None and getattr(model.config, "model_type", "clip") == "clip",
        text_tower=text_tower, image_source=image_source, image_revision=image_revision, context_length=context,
    )
    if cache:
        root = default_cache_dir() if cache is True else Path(cache)
        clip.cache = EmbeddingCache(root, {"images": fingerprint(clip, images_only=True), "captions": fingerprint(clip)},
                                    clip.dim)
    return clip


def _native_parts(source: str, **kwargs):
    """Model, tokenizer and image processor of a transformers CLIP-family checkpoint (CLIP, AltCLIP)."""
    from transformers import AltCLIPModel, AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPModel

    config = AutoConfig.from_pretrained(source, **kwargs)
    if config.model_type == "altclip":
        model_class, tokenizer_kwargs = AltCLIPModel, {}
    elif config.model_type == "clip":
        model_class, tokenizer_kwargs = CLIPModel, {"model_max_length": CONTEXT_LENGTH}
    else:
        raise LabclipError(f"'{source}' is a {config.model_type!r} model, not CLIP, AltCLIP or a supported "
                           f"multilingual text encoder ({', '.join(multilingual.MULTILINGUAL_MODELS)})")
    return (
        model_class.from_pretrained(source, **kwargs),
        AutoTokenizer.from_pretrained(source, **tokenizer_kwargs, **kwargs),
        AutoImageProcessor.from_pretrained(source, **kwargs),
    )


def _from_hub(source: str, load):
    """Run ``load`` from local files first; go to the hub only when it is reachable."""
    try:
        return load(local_files_only=True)
    except OSError:
        if Path(source).is_dir() or not hub_reachable():
            raise
        return load()


def _repo_dir(source: str, local_files_only: bool = False) -> Path:
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=local_files_only,
                                  allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*/*.json",
                                                  "*/*.safetensors"]))


def _layout(source: str) -> tuple[str | None, str | None]:
    """(text-tower layout, paired image encoder) of a model; (None, None) for native models."""
    if source in multilingual.MULTILINGUAL_MODELS:
        return multilingual.MULTILINGUAL_MODELS[source]
    if Path(source).is_dir():
        found = multilingual.layout(Path(source))
        return found, (DEFAULT_MODEL if found else None)
    return None, None


def quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised per batch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def fingerprint(model: ClipModel, images_only: bool = False) -> str:
    """Identifies the weights, tokenizer and preprocessing: hub id and revision, or a hash of a
    local directory's files; plus the quantisation. ``images_only`` covers just the image encoder,
    so models that share it share cached image embeddings."""
    sources = [model.image_source or model.source]
    if not images_only and model.text_tower is not None:
        sources.append(model.source)
    revision = model.image_revision if images_only else model.revision
    return fingerprint_sources(sources, f"{revision}|{model.quantize}|{model.preprocess}|{images_only}")


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


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached now (False at once when offline mode is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _load_failure(name: str, source: str, err: Exception, what: str = "model", demo: bool = True) -> str:
    """One line: what could not be loaded, why, and the ways out."""
    reason = " ".join(str(err).split()) or type(err).__name__
    if len(reason) > 200:
        reason = reason[:197] + "..."
    reason = f"{type(err).__name__}: {reason}"
    tried = f"'{name}'" if name == source else f"'{name}' ({source})"
    if Path(source).is_dir():
        hint = "check that the directory holds config.json, weights and tokenizer files saved with save_pretrained"
    else:
        if not hub_reachable():
            reason = "not in the local Hugging Face cache and the hub cannot be reached"
        hint = "connect to the network, put a downloaded copy in the Hugging Face cache (HF_HOME), " + (
            "pass a local model directory, or use the untrained 'demo' model" if demo
            else "or pass a local model directory")
    return f"could not load {what} {tried}: {reason}; {hint}"


def shown_model(name: str) -> str:
    """A hub id as it is; a local folder (``A+B`` pairs too) without its machine path."""
    return "+".join(shown_path(part) if Path(part).exists() else part
                    for part in ([name] if Path(name).exists() else name.split("+")))


def describe(model: ClipModel) -> dict:
    """The facts a report records about the model that made its numbers."""
    revision = model.revision
    if revision and revision.startswith("local:"):
        revision = "local:" + shown_model(revision[len("local:"):])
    return {
        "name": model.name,
        "source": shown_model(model.source),
        "revision": revision,
        "untrained": model.untrained,
        "logit_scale": round(model.logit_scale, 4),
        "embedding_dim": model.dim,
        "image_size": model.preprocess.crop,
        "device": model.device,
        "quantize": model.quantize or "off",
        "cache": model.cache.summary() if model.cache else "off",
    }


__all__ = ["ClipModel", "describe", "load_model", "resolve_model_name"]
