"""Multilingual text encoders that land in a CLIP image encoder's embedding space.

- ``sentence-transformers`` layout (e.g. ``sentence-transformers/clip-ViT-B-32-multilingual-v1``): a
  multilingual DistilBERT student, mean pooling, a linear ``Dense`` layer; images go through the
  unchanged OpenAI ViT-B/32.
- ``M-CLIP`` layout (e.g. ``M-CLIP/XLM-Roberta-Large-Vit-B-32``): XLM-R, mean pooling, a linear
  ``LinearTransformation``; images again through OpenAI ViT-B/32.
- AltCLIP (``BAAI/AltCLIP-m9``, ``-m18``) and SigLIP are native transformers models and need nothing here.

Weights are read through :func:`labclip.hub.load_weights`: ``model.safetensors`` where a folder has
one, else ``pytorch_model.bin`` (tensors only). Each tower records the commit of the hub snapshot it
came from in ``revision``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .errors import LabclipError
from .hub import WEIGHT_FILES, from_hub, load_weights, loading_part, revision_of

WEIGHTS = WEIGHT_FILES


class MeanPoolProjection(nn.Module):
    """A transformer encoder, the mean of its token states over the attention mask, a linear map."""

    def __init__(self, transformer: nn.Module, projection: nn.Linear, revision: str | None = None):
        super().__init__()
        self.revision = revision
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
    return MeanPoolProjection(transformer, projection, revision_of(root)).eval(), tokenizer


def reported(model: nn.Module, keys: Sequence[str], prefix: str, kind: str) -> list[str]:
    """Those of ``keys`` (``missing`` or ``unexpected`` state-dict names, ``model``'s under ``prefix``) that
    transformers itself would report when loading ``model``'s weights: not those matching the model's
    ``_keys_to_ignore_on_load_missing``/``_keys_to_ignore_on_load_unexpected`` patterns, nor, when the model
    has ``position_ids`` buffers, an unexpected ``position_ids`` (persistent before transformers 4.31, so
    older checkpoints carry it; ``PreTrainedModel._adjust_missing_and_unexpected_keys``)."""
    patterns = set(getattr(model, f"_keys_to_ignore_on_load_{kind}", None) or ())
    if kind == "unexpected" and any(name.endswith("position_ids") for name, _ in model.named_buffers()):
        patterns.add(r"(^|\.)position_ids$")
    ignored = re.compile("|".join(f"({p})" for p in patterns)) if patterns else None
    return [k for k in keys if not (ignored and k.startswith(prefix) and ignored.search(k.removeprefix(prefix)))]


def load_mclip(root: Path, **kwargs):
    """XLM-R + mean pooling + LinearTransformation from an M-CLIP folder. Returns (module, tokenizer).

    ``modelBase`` in its config.json names the XLM-R configuration (a hub id such as
    ``xlm-roberta-large``, read from the cache first, or a folder).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    base_name = config["modelBase"]
    base = loading_part("text tower's base configuration (modelBase)", base_name,
                        lambda: from_hub(base_name, lambda **kw: AutoConfig.from_pretrained(base_name, **kw)))
    module = MeanPoolProjection(AutoModel.from_config(base),
                                nn.Linear(config["transformerDimensions"], config["numDims"]), revision_of(root))
    state = load_weights(root, WEIGHTS)
    state = {k.replace("LinearTransformation.", "projection.", 1): v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in reported(module.transformer, missing, "transformer.", "missing") if ".pooler." not in k]
    unexpected = reported(module.transformer, unexpected, "transformer.", "unexpected")
    if missing or unexpected:
        raise LabclipError(f"weights do not fit the M-CLIP layout (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})")
    return module.eval(), AutoTokenizer.from_pretrained(root, **kwargs)


def context_length(tokenizer, config) -> int:
    """Longest input the text tower accepts (position embeddings, less RoBERTa's offset of 2)."""
    positions = getattr(config, "max_position_embeddings", 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta"):
        positions -= 2
    return int(min(tokenizer.model_max_length, positions, 512))
