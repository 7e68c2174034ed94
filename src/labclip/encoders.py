"""Image and text towers, and one loader per model family (the strategies ``ClipModel`` calls).

A tower turns prepared inputs into embeddings; :class:`ClipModel` batches, caches and normalises.
``LOADERS`` maps a family name from :mod:`labclip.registry` to the function that builds its towers,
so adding a family means one loader here and one ``Family`` entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import multilingual
from .config import CONTEXT_LENGTH
from .errors import LabclipError
from .hub import from_hub, repo_dir
from .images import Preprocess
from .registry import ALTCLIP, CLIP, FAMILIES, MCLIP, SENTENCE_TRANSFORMERS, ModelInfo
from .text import tokenize


def _features(output) -> torch.Tensor:
    """transformers 4 returns a tensor from ``get_*_features``; 5 returns an output object."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class ImageTower:
    """The image half of a CLIP-family model: preprocessing plus ``get_image_features``."""

    module: nn.Module
    preprocess: Preprocess

    def prepare(self, images: Sequence) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.preprocess(image) for image in images])}

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.module.get_image_features(pixel_values=pixel_values))


@dataclass
class TextTower:
    """The text half: tokenizer, context length, cleaning, and the module that embeds token ids."""

    module: nn.Module
    tokenizer: object
    context_length: int = CONTEXT_LENGTH
    openai_text_cleaning: bool = True

    def prepare(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.context_length, self.openai_text_cleaning)

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return _features(self.module.get_text_features(**inputs))


class PooledTextTower(TextTower):
    """A separate text encoder (mean pooling and a projection) distilled into a CLIP image space."""

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.module(**inputs)


@dataclass
class Towers:
    """What a family loader returns."""

    image: ImageTower
    text: TextTower
    logit_scale: float
    image_revision: str | None
    text_revision: str | None
    family: str


def _native_parts(source: str, **kwargs):
    """Model, tokenizer and image processor of a transformers CLIP-family checkpoint (CLIP, AltCLIP)."""
    from transformers import AltCLIPModel, AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPModel

    config = AutoConfig.from_pretrained(source, **kwargs)
    if config.model_type == "altclip":
        model_class, tokenizer_kwargs = AltCLIPModel, {}
    elif config.model_type == "clip":
        model_class, tokenizer_kwargs = CLIPModel, {"model_max_length": CONTEXT_LENGTH}
    else:
        paired = ", ".join(name for name, family in FAMILIES.items() if family.paired)
        raise LabclipError(f"'{source}' is a {config.model_type!r} model, not CLIP, AltCLIP or a supported "
                           f"multilingual text encoder ({paired})")
    return (
        model_class.from_pretrained(source, **kwargs),
        AutoTokenizer.from_pretrained(source, **tokenizer_kwargs, **kwargs),
        AutoImageProcessor.from_pretrained(source, **kwargs),
    )


def _image_model(source: str):
    model, tokenizer, processor = from_hub(source, lambda **kw: _native_parts(source, **kw))
    return model.eval(), tokenizer, Preprocess.from_image_processor(processor)


def _revision(model: nn.Module) -> str | None:
    return getattr(model.config, "_commit_hash", None)


def load_native(info: ModelInfo) -> Towers:
    """CLIP and AltCLIP: one transformers model holds both towers."""
    model, tokenizer, preprocess = _image_model(info.id)
    context = CONTEXT_LENGTH
    if model.config.model_type != "clip":
        context = multilingual.context_length(tokenizer, model.config.text_config)
    clean = FAMILIES[ALTCLIP if model.config.model_type == "altclip" else CLIP].openai_text_cleaning
    return Towers(ImageTower(model, preprocess), TextTower(model, tokenizer, context, clean),
                  float(model.logit_scale.exp().item()), _revision(model), _revision(model),
                  ALTCLIP if model.config.model_type == "altclip" else CLIP)


def _paired(build: Callable) -> Callable[[ModelInfo], Towers]:
    def load(info: ModelInfo) -> Towers:
        image_model, _, preprocess = _image_model(info.image_source)
        text, tokenizer = from_hub(info.id, lambda **kw: build(repo_dir(info.id, **kw), **kw))
        context = multilingual.context_length(tokenizer, text.transformer.config)
        return Towers(ImageTower(image_model, preprocess), PooledTextTower(text.eval(), tokenizer, context, False),
                      float(image_model.logit_scale.exp().item()), _revision(image_model), None, info.family)

    load.__doc__ = f"A {build.__name__.removeprefix('load_')} text tower paired with a CLIP image encoder."
    return load


LOADERS: dict[str, Callable[[ModelInfo], Towers]] = {
    CLIP: load_native,
    ALTCLIP: load_native,
    SENTENCE_TRANSFORMERS: _paired(multilingual.load_sentence_transformer),
    MCLIP: _paired(multilingual.load_mclip),
}
