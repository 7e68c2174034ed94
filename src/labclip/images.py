"""Reading image files robustly and preprocessing them exactly like OpenAI's ``clip._transform``."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LabclipError

PREPROCESS_VERSION = "clip-transform-1"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Preprocess:
    """Resize-then-crop parameters of a CLIP image encoder (taken from its processor config)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Return the normalised ``(3, crop, crop)`` float32 tensor ``clip._transform`` would give."""
        image = _resize_shorter_side(image, self.resize)
        image = _center_crop(image, self.crop).convert("RGB")
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        tensor = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return tensor.sub(mean).div(std)

    @classmethod
    def from_image_processor(cls, processor) -> Preprocess:
        """Read size, crop size, mean and std from a transformers ``CLIPImageProcessor``."""
        size, crop = processor.size, processor.crop_size
        resize = int(size if isinstance(size, int) else size["shortest_edge"])
        crop = int(crop if isinstance(crop, int) else crop["height"])
        return cls(resize, crop, tuple(processor.image_mean), tuple(processor.image_std))


@dataclass(frozen=True)
class SquarePreprocess:
    """SigLIP's image preprocessing: resize to ``crop`` × ``crop`` (aspect not kept) with the processor's
    ``resample`` (PIL's code: 3 bicubic for SigLIP, 2 bilinear for SigLIP 2), then scale to [0, 1] and
    normalise, as ``SiglipImageProcessor`` does."""

    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = int(Image.Resampling.BICUBIC)

    @property
    def resize(self) -> int:
        return self.crop

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB").resize((self.crop, self.crop), Image.Resampling(self.resample))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        tensor = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return tensor.sub(mean).div(std)


@dataclass(frozen=True)
class NaflexPreprocess:
    """SigLIP 2 NaFlex: each image resized, aspect ratio kept, to at most ``max_num_patches`` patches of
    ``patch_size`` px (transformers' ``Siglip2ImageProcessor``), normalised with ``mean`` and ``std``."""

    patch_size: int
    max_num_patches: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def crop(self) -> int:
        """The side of a square image of ``max_num_patches`` patches (the nominal resolution)."""
        return int(self.patch_size * self.max_num_patches**0.5)

    @property
    def resize(self) -> int:
        return self.crop

    def batch(self, images) -> dict[str, torch.Tensor]:
        """``pixel_values`` (patches), ``pixel_attention_mask`` and ``spatial_shapes`` of a batch of images."""
        from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

        processor = Siglip2ImageProcessorPil(patch_size=self.patch_size, max_num_patches=self.max_num_patches,
                                             image_mean=list(self.mean), image_std=list(self.std))
        out = processor([image.convert("RGB") for image in images], return_tensors="pt")
        return {k: out[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}


# What an image tower's preprocessing is: CLIP's resize-and-crop, SigLIP's square resize or SigLIP 2's NaFlex patches.
AnyPreprocess = Preprocess | SquarePreprocess | NaflexPreprocess


def preprocess_for(processor: Any) -> AnyPreprocess:
    """CLIP's resize-and-crop, SigLIP's square resize when the processor sizes by height and width, or
    SigLIP 2's NaFlex patches when it counts patches (``max_num_patches``)."""
    if getattr(processor, "max_num_patches", None):
        return NaflexPreprocess(int(processor.patch_size), int(processor.max_num_patches),
                                tuple(processor.image_mean), tuple(processor.image_std))
    size = processor.size
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    height = None if isinstance(size, int) else get("height")
    if height and get("shortest_edge") is None:
        resample = getattr(processor, "resample", None)
        return SquarePreprocess(int(height), tuple(processor.image_mean), tuple(processor.image_std),
                                int(Image.Resampling.BICUBIC if resample is None else resample))
    return Preprocess.from_image_processor(processor)


def _resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    # torchvision.transforms.functional._compute_resized_output_size: the long side is truncated.
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    if w < size or h < size:
        padded = Image.new(image.mode, (max(w, size), max(h, size)))
        left, top = (max(size - w, 0)) // 2, (max(size - h, 0)) // 2
        padded.paste(image, (left, top))
        image, (w, h) = padded, padded.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike[str], draft: int | None = None) -> Image.Image:
    """Open an image file as an 8-bit RGB picture, as a person would see it.

    ``draft``: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side is still at least
    ``draft`` pixels (Pillow's draft mode); other formats and ``None`` decode at full size.

    EXIF orientation is applied, transparency is composited on white, 16-bit and float
    images are scaled to 8 bits, CMYK and palette images are converted, and an animated
    image gives its first frame.

    Raises:
        LabclipError: the file is missing, not an image, truncated or a decompression bomb.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)
                if draft and image.format in ("JPEG", "MPO"):
                    image.draft(None, (draft, draft))
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise LabclipError(f"{path}: image file not found") from None
    except UnidentifiedImageError:
        raise LabclipError(f"{path}: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise LabclipError(
            f"{path}: refused as a possible decompression bomb (more than "
            f"{Image.MAX_IMAGE_PIXELS} pixels)"
        ) from None
    except OSError as err:
        raise LabclipError(f"{path}: unreadable or truncated image ({' '.join(str(err).split())})") from None
    except Exception as err:  # noqa: BLE001 - Pillow's limits on text and ICC chunks, a NUL in the name, a broken decoder
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise LabclipError(f"{path}: unreadable image ({type(err).__name__}: {detail})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency goes on a white background."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F" and array.max() <= 1.0:
            top = 1.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image
