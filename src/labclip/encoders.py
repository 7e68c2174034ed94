"""Image and text towers, and one loader per model family (the strategies ``ClipModel`` calls).

A tower turns prepared inputs into embeddings; :class:`ClipModel` batches, caches and normalises.
``LOADERS`` maps a family name from :mod:`labclip.registry` to the function that builds its towers,
so adding a family means one loader here and one ``Family`` entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import nn

from . import multilingual
from .config import CONTEXT_LENGTH
from .errors import LabclipError
from .hub import cached_revision, from_hub, loading_part, repo_dir, revision_of
from .images import AnyPreprocess, NaflexPreprocess, preprocess_for
from .registry import (
    ALTCLIP,
    CANONICAL,
    CLIP,
    FAMILIES,
    LOWERCASE,
    MCLIP,
    SENTENCE_TRANSFORMERS,
    SIGLIP,
    ModelInfo,
)
from .text import siglip_text, tokenize


def _features(output: Any) -> torch.Tensor:
    """transformers 4 returns a tensor from ``get_*_features``; 5 returns an output object."""
    return output if isinstance(output, torch.Tensor) else cast(torch.Tensor, output.pooler_output)


def _model(module: nn.Module) -> Any:
    """A transformers model, whose methods (``get_image_features``, ``config``, ...) torch's types do not know."""
    return module


@dataclass
class ImageTower:
    """The image half of a CLIP-family model: preprocessing plus ``get_image_features``."""

    module: nn.Module
    preprocess: AnyPreprocess

    def prepare(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        if isinstance(self.preprocess, NaflexPreprocess):
            return self.preprocess.batch(images)
        return {"pixel_values": torch.stack([self.preprocess(image) for image in images])}

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return _features(_model(self.module).get_image_features(**inputs))


@dataclass
class TextTower:
    """The text half: tokenizer, context length, cleaning, and the module that embeds token ids."""

    module: nn.Module
    tokenizer: Any
    context_length: int = CONTEXT_LENGTH
    openai_text_cleaning: bool = True

    def prepare(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.context_length, self.openai_text_cleaning)

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return _features(_model(self.module).get_text_features(**inputs))


class PooledTextTower(TextTower):
    """A separate text encoder (mean pooling and a projection) distilled into a CLIP image space."""

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.module(**inputs))


@dataclass
class SiglipTextTower(TextTower):
    """SigLIP's text half: trained on text padded to ``max_length`` (64 tokens) without an attention
    mask, pooling the last position, so captions are always padded on the right (big_vision appends its pad
    tokens, whatever side a tokenizer's config names, Gemma's default being left) and cut to that length; captions are
    normalised as the model's training text was (``handling``, see :func:`labclip.text.siglip_text`)."""

    handling: str = CANONICAL

    def prepare(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([siglip_text(t, self.handling) for t in texts], padding="max_length",
                               max_length=self.context_length, truncation=True, padding_side="right",
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"]}


@dataclass
class Towers:
    """What a family loader returns."""

    image: ImageTower
    text: TextTower
    logit_scale: float
    image_revision: str | None
    text_revision: str | None
    family: str
    logit_bias: float | None = None


def _native_parts(source: str, **kwargs: Any) -> tuple[Any, Any, Any]:
    """Model, tokenizer and image processor of a transformers CLIP-family checkpoint (CLIP, AltCLIP, SigLIP)."""
    from transformers import (
        AltCLIPModel,
        AutoConfig,
        AutoImageProcessor,
        AutoTokenizer,
        CLIPModel,
        Siglip2Model,
        SiglipModel,
    )

    config = AutoConfig.from_pretrained(source, **kwargs)
    model_class: Any
    tokenizer_kwargs: dict[str, Any]
    if config.model_type == "altclip":
        model_class, tokenizer_kwargs = AltCLIPModel, {}
    elif config.model_type == "siglip":
        model_class, tokenizer_kwargs = SiglipModel, {}
    elif config.model_type == "siglip2":
        model_class, tokenizer_kwargs = Siglip2Model, {}
    elif config.model_type == "clip":
        model_class, tokenizer_kwargs = CLIPModel, {"model_max_length": CONTEXT_LENGTH}
    else:
        paired = ", ".join(name for name, family in FAMILIES.items() if family.paired)
        raise LabclipError(f"'{source}' is a {config.model_type!r} model, not CLIP, AltCLIP, SigLIP or a supported "
                           f"multilingual text encoder ({paired})")
    return (
        model_class.from_pretrained(source, **kwargs),
        AutoTokenizer.from_pretrained(source, **tokenizer_kwargs, **kwargs),
        AutoImageProcessor.from_pretrained(source, **kwargs),
    )


def _image_model(source: str) -> tuple[Any, Any, AnyPreprocess]:
    model, tokenizer, processor = from_hub(source, lambda **kw: _native_parts(source, **kw))
    return model.eval(), tokenizer, preprocess_for(processor)


def _revision(model: nn.Module, source: str) -> str | None:
    """The commit a model was loaded from (transformers 5 leaves ``_commit_hash`` empty: read the cache, or
    the download records of a ``local_dir`` folder)."""
    if Path(source).is_dir():
        return revision_of(source)
    return getattr(_model(model).config, "_commit_hash", None) or cached_revision(source)


def load_native(info: ModelInfo) -> Towers:
    """CLIP and AltCLIP: one transformers model holds both towers."""
    model, tokenizer, preprocess = _image_model(info.id)
    if model.config.model_type in ("siglip", "siglip2"):
        return load_siglip(info, model, tokenizer, preprocess)
    context = CONTEXT_LENGTH
    if model.config.model_type != "clip":
        context = multilingual.context_length(tokenizer, model.config.text_config)
    clean = FAMILIES[ALTCLIP if model.config.model_type == "altclip" else CLIP].openai_text_cleaning
    return Towers(ImageTower(model, preprocess), TextTower(model, tokenizer, context, clean),
                  float(model.logit_scale.exp().item()), _revision(model, info.id), _revision(model, info.id),
                  ALTCLIP if model.config.model_type == "altclip" else CLIP)


def load_siglip(info: ModelInfo, model: Any = None, tokenizer: Any = None,
                preprocess: AnyPreprocess | None = None) -> Towers:
    """SigLIP and SigLIP 2: sigmoid scores with a learned ``logit_bias``, text normalised as in training and
    padded to 64 tokens; a square resize, or NaFlex patches (``Siglip2Model``) for the NaFlex checkpoints.

    The text handling is the registry's; for a checkpoint it does not list, SigLIP's canonical form where the
    tokenizer is SigLIP's own (it has ``canonicalize_text``), else SigLIP 2's lower-casing (Gemma tokenizer)."""
    if model is None:
        model, tokenizer, preprocess = _image_model(info.id)
    revision = _revision(model, info.id)
    context = int(model.config.text_config.max_position_embeddings)
    handling = info.text_handling or (CANONICAL if hasattr(tokenizer, "canonicalize_text") else LOWERCASE)
    text = SiglipTextTower(model, tokenizer, context, FAMILIES[SIGLIP].openai_text_cleaning, handling)
    assert preprocess is not None
    return Towers(ImageTower(model, preprocess), text, float(model.logit_scale.exp().item()), revision, revision,
                  SIGLIP, float(model.logit_bias.item()))


def _paired(build: Callable[..., Any]) -> Callable[[ModelInfo], Towers]:
    def load(info: ModelInfo) -> Towers:
        image_model, _, preprocess = loading_part("image tower", info.image_source,
                                                  lambda: _image_model(info.image_source))
        text, tokenizer = loading_part("text tower", info.id,
                                       lambda: from_hub(info.id, lambda **kw: build(repo_dir(info.id, **kw), **kw)))
        context = multilingual.context_length(tokenizer, text.transformer.config)
        return Towers(ImageTower(image_model, preprocess), PooledTextTower(text.eval(), tokenizer, context, False),
                      float(image_model.logit_scale.exp().item()), _revision(image_model, info.image_source),
                      getattr(text, "revision", None), info.family)

    load.__doc__ = f"A {build.__name__.removeprefix('load_')} text tower paired with a CLIP image encoder."
    return load


LOADERS: dict[str, Callable[[ModelInfo], Towers]] = {
    CLIP: load_native,
    ALTCLIP: load_native,
    SIGLIP: load_siglip,
    SENTENCE_TRANSFORMERS: _paired(multilingual.load_sentence_transformer),
    MCLIP: _paired(multilingual.load_mclip),
}
