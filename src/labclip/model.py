"""Loading CLIP through transformers and encoding images and captions into unit vectors."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .config import CONTEXT_LENGTH, DEFAULT_MODEL, DEMO_MODEL, MODEL_ALIASES, cache_dir
from .errors import LabclipError
from .images import Preprocess, load_image
from .testing import UNTRAINED_MARKER, make_tiny_model
from .text import tokenize

DEMO_VERSION = 1
ImageInput = str | os.PathLike | Image.Image


@dataclass
class ClipModel:
    """A CLIP image and text encoder pair that returns L2-normalised float32 embeddings."""

    name: str
    source: str
    model: torch.nn.Module
    tokenizer: object
    preprocess: Preprocess
    device: str = "cpu"
    revision: str | None = None
    untrained: bool = False
    image_batch_size: int = 16
    text_batch_size: int = 64
    openai_text_cleaning: bool = True
    extra: dict = field(default_factory=dict)

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
        return self._encode(images, batch_size or self.image_batch_size, "images", self._image_batch)

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Encode captions, each batch padded to its longest caption.

        Returns:
            ``(len(texts), dim)`` float32 array with unit-length rows.
        """
        texts = [str(t) for t in texts]
        return self._encode(texts, batch_size or self.text_batch_size, "captions", self._text_batch)

    def pixel_values(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Preprocess images into the ``(n, 3, crop, crop)`` tensor the vision tower takes."""
        return torch.stack([self.preprocess(_as_image(x)) for x in images])

    def _image_batch(self, images: list) -> torch.Tensor:
        pixels = self.pixel_values(images).to(self.device)
        return _features(self.model.get_image_features(pixel_values=pixels))

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        batch = tokenize(self.tokenizer, texts, CONTEXT_LENGTH, self.openai_text_cleaning)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return _features(self.model.get_text_features(**batch))

    def _encode(self, items: list, batch_size: int, what: str, run) -> np.ndarray:
        out = np.empty((len(items), self.dim), dtype=np.float32)
        with torch.inference_mode(), tqdm(
            total=len(items), desc=f"encoding {what}", unit=what[:-1], disable=len(items) <= batch_size
        ) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                out[start : start + len(chunk)] = F.normalize(run(chunk).float(), dim=-1).cpu().numpy()
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
) -> ClipModel:
    """Load a CLIP model with its tokenizer and preprocessing.

    Args:
        name_or_path: a hub id (``openai/clip-vit-base-patch32``), an OpenAI alias (``ViT-B/32``),
            a local directory saved with ``save_pretrained``, or ``"demo"`` for labclip's
            untrained demo model.
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.

    Returns:
        A :class:`ClipModel`.

    Raises:
        LabclipError: the model could not be loaded; the message says what was tried.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    name = str(name_or_path)
    source = str(demo_model_path()) if name == DEMO_MODEL else resolve_model_name(name)
    def parts(**kwargs):
        return (
            CLIPModel.from_pretrained(source, **kwargs).eval().to(device),
            AutoTokenizer.from_pretrained(source, model_max_length=CONTEXT_LENGTH, **kwargs),
            AutoImageProcessor.from_pretrained(source, **kwargs),
        )

    try:
        try:
            model, tokenizer, image_processor = parts(local_files_only=True)
        except OSError:
            if Path(source).is_dir() or not hub_reachable():
                raise
            model, tokenizer, image_processor = parts()
    except Exception as err:  # noqa: BLE001 - every loading failure becomes one user-facing line
        raise LabclipError(_load_failure(name, source, err)) from err
    local = Path(source)
    untrained = local.is_dir() and (local / UNTRAINED_MARKER).exists()
    revision = getattr(model.config, "_commit_hash", None)
    if revision is None and local.is_dir():
        revision = "local:" + str(local.resolve())
    return ClipModel(
        name=name, source=source, model=model, tokenizer=tokenizer,
        preprocess=Preprocess.from_image_processor(image_processor), device=device,
        revision=revision, untrained=untrained,
    )


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


def _load_failure(name: str, source: str, err: Exception) -> str:
    reason = " ".join(str(err).split()) or type(err).__name__
    if len(reason) > 200:
        reason = reason[:197] + "..."
    tried = f"'{name}'" if name == source else f"'{name}' ({source})"
    if not Path(source).is_dir() and not hub_reachable():
        reason = "not in the local Hugging Face cache and the hub cannot be reached"
    if Path(source).is_dir():
        hint = "check that the directory holds config.json, weights and tokenizer files saved with save_pretrained"
    else:
        hint = (
            "connect to the network, put a downloaded copy in the Hugging Face cache (HF_HOME), "
            "pass a local model directory, or use the untrained 'demo' model"
        )
    return f"could not load model {tried}: {type(err).__name__}: {reason}; {hint}"


def describe(model: ClipModel) -> dict:
    """The facts a report records about the model that made its numbers."""
    return {
        "name": model.name,
        "source": model.source,
        "revision": model.revision,
        "untrained": model.untrained,
        "logit_scale": round(model.logit_scale, 4),
        "embedding_dim": model.dim,
        "image_size": model.preprocess.crop,
        "device": model.device,
    }


__all__ = ["ClipModel", "describe", "load_model", "resolve_model_name"]
