"""Multilingual text encoders that land in a CLIP image encoder's embedding space.

- ``sentence-transformers`` layout (e.g. ``sentence-transformers/clip-ViT-B-32-multilingual-v1``): a
  multilingual DistilBERT student, mean pooling, a linear ``Dense`` layer; images go through the
  unchanged OpenAI ViT-B/32.
- ``M-CLIP`` layout (e.g. ``M-CLIP/XLM-Roberta-Large-Vit-B-32``): XLM-R, mean pooling, a linear
  ``LinearTransformation``; images again through OpenAI ViT-B/32.
- ``BAAI/AltCLIP`` is a native transformers model (``AltCLIPModel``) and needs nothing here.

Weights are read through :func:`labclip.hub.load_weights` (safetensors only, as listed here).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import LabclipError
from .hub import load_weights

WEIGHTS = ("model.safetensors",)


class MeanPoolProjection(nn.Module):
    """A transformer encoder, the mean of its token states over the attention mask, a linear map."""

    def __init__(self, transformer: nn.Module, projection: nn.Linear):
        super().__init__()
        self.transformer = transformer
        self.projection = projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return self.projection(pooled)


def load_sentence_transformer(root: Path, **kwargs):
    """Transformer + mean pooling + Dense from a sentence-transformers folder. Returns (module, tokenizer)."""
    from transformers import AutoModel, AutoTokenizer

    modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
    by_type = {m["type"].rsplit(".", 1)[-1]: root / m["path"] for m in modules}
    if set(by_type) - {"Transformer", "Pooling", "Dense", "Normalize"} or "Dense" not in by_type:
        raise LabclipError(f"{root}: unsupported sentence-transformers modules {sorted(by_type)}")
    pooling = json.loads((by_type["Pooling"] / "config.json").read_text(encoding="utf-8"))
    if not pooling.get("pooling_mode_mean_tokens"):
        raise LabclipError(f"{root}: only mean pooling is supported")
    dense = json.loads((by_type["Dense"] / "config.json").read_text(encoding="utf-8"))
    if not dense.get("activation_function", "").endswith("Identity"):
        raise LabclipError(f"{root}: only a linear Dense layer (Identity activation) is supported")
    projection = nn.Linear(dense["in_features"], dense["out_features"], bias=dense.get("bias", True))
    state = load_weights(by_type["Dense"], WEIGHTS)
    projection.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    transformer = AutoModel.from_pretrained(by_type["Transformer"], **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(by_type["Transformer"], **kwargs)
    return MeanPoolProjection(transformer, projection).eval(), tokenizer


def load_mclip(root: Path, **kwargs):
    """XLM-R + mean pooling + LinearTransformation from an M-CLIP folder. Returns (module, tokenizer)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    base = AutoConfig.from_pretrained(config["modelBase"], **kwargs)
    module = MeanPoolProjection(AutoModel.from_config(base),
                                nn.Linear(config["transformerDimensions"], config["numDims"]))
    state = load_weights(root, WEIGHTS)
    state = {k.replace("LinearTransformation.", "projection.", 1): v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids") and ".pooler." not in k]
    if missing or unexpected:
        raise LabclipError(f"{root}: weights do not fit the M-CLIP layout (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})")
    return module.eval(), AutoTokenizer.from_pretrained(root, **kwargs)


def context_length(tokenizer, config) -> int:
    """Longest input the text tower accepts (position embeddings, less RoBERTa's offset of 2)."""
    positions = getattr(config, "max_position_embeddings", 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta"):
        positions -= 2
    return int(min(tokenizer.model_max_length, positions, 512))
