"""A fine-tuned text tower as a folder and on a model: ``finetune.safetensors`` (only the trained tensors: LoRA
matrices or whole layers) and ``finetune.json`` (its card), written by :func:`save_finetune` and put on a loaded
model by :func:`apply_finetune`, so ``load_model("MODEL+finetune:DIR")`` works (training is
:mod:`labclip.finetune`). It needs torch and safetensors, and nothing that unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from .adapter import read_weights_and_card
from .atomic import write_atomic
from .errors import LabclipError
from .spec import FINETUNE_MARK, shown_model, shown_revision

FORMAT = "labclip-finetune"
FORMAT_VERSION = 1
WEIGHTS = "finetune.safetensors"
CARD = "finetune.json"


def save_finetune(trained: Any, model: Any, folder: str | os.PathLike[str], **facts: Any) -> Path:
    """Write ``folder/finetune.safetensors`` (the trained tensors only) and ``folder/finetune.json`` (the card),
    each atomically; the card records the tensors' hash, so a mismatched pair is refused on loading.

    ``facts`` go into the card as they are (e.g. ``languages``, ``data``, ``held_out``)."""
    from safetensors.torch import save

    from . import __version__

    folder = Path(folder)
    data = save(trained.tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    from .adapter import model_ref

    card = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": model_ref(model),
            "base_revision": shown_revision(model.revision), "family": model.family,
            "method": trained.config.method, "hyper_parameters": asdict(trained.config), "seed": trained.config.seed,
            "trainable_parameters": trained.trainable, "tensors": len(trained.tensors),
            "logit_scale": trained.logit_scale, "logit_bias": trained.logit_bias,
            "learned_temperature": trained.config.learn_temperature, "data_sha256": trained.data_sha256,
            "history": asdict(trained.history), "resumed_from_epoch": trained.resumed_from,
            "labclip_version": __version__, "sha256": tensors_sha256(trained.tensors), **facts}
    text = json.dumps(card, indent=1, ensure_ascii=False, default=str) + "\n"
    write_atomic(folder / WEIGHTS, _writer(data), binary=True)
    write_atomic(folder / CARD, _writer(text))
    return folder


def _writer(data: bytes | str) -> Callable[[IO[Any]], None]:
    def write(f: IO[Any]) -> None:
        f.write(data)

    return write


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of the tensors' names, shapes and float32 values."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().to(torch.float32).contiguous()
        digest.update(f"{name}|{tuple(value.shape)}|".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def load_finetune(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and card of a fine-tuning folder (or its ``.safetensors``/``.json`` file); nothing is unpickled.

    Raises:
        LabclipError: one line saying what is missing or wrong.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    folder = folder.parent if folder.suffix in (".safetensors", ".json") else folder
    weights, card_file = folder / WEIGHTS, folder / CARD
    for file in (weights, card_file):
        if not file.is_file():
            raise LabclipError(f"{file}: fine-tuned weights not found (expected {WEIGHTS} and {CARD} in {folder})")
    tensors, card = read_weights_and_card(weights, card_file, load_file, FORMAT, "fine-tuning")
    if card.get("sha256") != tensors_sha256(tensors):
        raise LabclipError(f"{card_file}: the card's hash does not match {WEIGHTS}; train again")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise LabclipError(f"{weights}: holds NaN or infinite values")
    return tensors, card


def _merge(module: nn.Module, tensors: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    """Put the tensors into ``module``: LoRA pairs merged into their linear layers' weights
    (``W += lora_alpha / rank · B A``, computed in float32), full tensors copied."""
    hyper = card.get("hyper_parameters") or {}
    scale = float(hyper.get("lora_alpha", 0)) / max(int(hyper.get("rank", 1)), 1)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            if ".lora_B." in name:
                continue
            if ".lora_A." in name:
                base, b = name.split(".lora_A.")[0], tensors[name.replace(".lora_A.", ".lora_B.")]
                target = params.get(base + ".weight")
                delta = scale * b.float() @ value.float()
            else:
                target, delta = params.get(name), value.float()
            if target is None or target.shape != delta.shape:
                raise LabclipError(f"the fine-tuned tensor {name} does not fit this model's text tower")
            target.copy_(delta.to(target.dtype) + (target if ".lora_A." in name else 0))


def apply_finetune(model: Any, path: str | os.PathLike[str]) -> Any:
    """Put the fine-tuned text tower saved at ``path`` on ``model`` (changed in place and returned).

    The card's base model must be ``model`` (another is a one-line error naming both); a revision other than
    the card's is a warning. ``name`` and ``revision`` then carry the fine-tuning, so the caption cache and
    every report tell it from the base model; image embeddings (the locked tower) stay shared.

    Raises:
        LabclipError: the files are missing or broken, or they were trained on another model.
    """
    from .adapter import same_model

    tensors, card = load_finetune(path)
    if card.get("base_model") and not same_model(str(card["base_model"]), model):
        raise LabclipError(f"the fine-tuning at {Path(path).name} was trained on '{shown_model(card['base_model'])}', "
                           f"not '{model.name}'; use it as '{shown_model(card['base_model'])}{FINETUNE_MARK}PATH'")
    fitted = card.get("base_revision")
    if fitted and model.revision and shown_revision(model.revision) != fitted:
        warnings.warn(f"the fine-tuning was trained on '{model.name}' at revision {fitted}; this one is "
                      f"{shown_revision(model.revision)}", UserWarning, stacklevel=2)
    _merge(model.text.module, tensors, card)
    if card.get("learned_temperature"):
        model.logit_scale = float(card["logit_scale"])
        model.logit_bias = card.get("logit_bias") if model.logit_bias is not None else None
    label = Path(path).name if Path(path).is_dir() else Path(path).parent.name
    model.finetune_card = {**{k: card[k] for k in ("base_revision", "method", "trainable_parameters", "seed",
                                                   "data_sha256", "sha256") if k in card},
                           "label": label, "base_model": shown_model(str(card.get("base_model", "")))}
    return model


__all__ = ["CARD", "FINETUNE_MARK", "WEIGHTS", "apply_finetune", "load_finetune", "save_finetune", "tensors_sha256"]
