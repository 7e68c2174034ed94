"""LiT-style contrastive fine-tuning of a text tower, the image tower locked (Zhai et al. 2022).

Image embeddings come from the model's encoder (and its cache) once; only the text tower runs forward and
backward. The loss is CLIP's symmetric InfoNCE (:func:`clip_loss`, the formula of
:func:`labclip.metrics.contrastive_loss`) or, for SigLIP, the sigmoid loss with its logit bias
(:func:`sigmoid_loss`), at the model's temperature (optionally learned). LoRA matrices (through ``peft``) on
the tower's linear layers, or its last N layers, are trained with AdamW, linear warm-up then cosine decay. A
contrastive batch bigger than memory allows is split into micro-batches whose embeddings are computed first
without gradients, so the loss sees the whole batch's negatives; each micro-batch then runs again with
gradients (the gradient-cache method). The tower runs in evaluation mode (no dropout) and batches are shuffled
from the seed, so one seed gives the same weights, and a run resumed from its checkpoint (written atomically
after every epoch) the same weights as one never stopped.

The result is a folder: ``finetune.safetensors`` (only the trained tensors) and ``finetune.json`` (the card:
base model and revision, trainable parameters, data hash, seed, hyper-parameters, held-out results), put on a
loaded model by :func:`apply_finetune` (``load_model("MODEL+finetune:DIR")``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import write_atomic
from .errors import LabclipError
from .finetune_file import FINETUNE_MARK, apply_finetune, save_finetune

METHODS = ("lora", "layers")
MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learned temperature here


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one run (all recorded in the card).

    Attributes:
        method: ``"lora"`` (low-rank matrices on every linear layer of the tower's blocks) or ``"layers"``
            (the last ``layers`` blocks, the final norm and the projection, in full).
        rank, lora_alpha: LoRA's rank and scale (the update is ``lora_alpha / rank · B A``).
        layers: how many of the last blocks ``"layers"`` trains.
        epochs: the most epochs; early stopping may end sooner.
        batch_size: pairs per contrastive batch (its negatives); ``micro_batch`` pairs go through the tower at
            once (``None``: the whole batch).
        lr, weight_decay, warmup: AdamW's peak learning rate and decay; the fraction of steps warming up.
        learn_temperature: also learn the logit scale (and SigLIP's bias).
        patience: stop after this many epochs without a lower validation loss (``0``: never stop early).
        seed: LoRA's initial matrices and the order of the batches.
    """

    method: str = "lora"
    rank: int = 8
    lora_alpha: int = 16
    layers: int = 1
    epochs: int = 10
    batch_size: int = 32
    micro_batch: int | None = None
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    learn_temperature: bool = False
    patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LabclipError(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name in ("rank", "layers", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise LabclipError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise LabclipError(f"--micro-batch must be 1 or more, got {self.micro_batch}")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and self.weight_decay >= 0 and self.patience >= 0):
            raise LabclipError("need --lr > 0, 0 <= --warmup < 1, --weight-decay >= 0 and --patience >= 0")


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss of matched unit rows: the mean of the image→text and text→image
    cross-entropies of ``logit_scale · image textᵀ`` against the diagonal."""
    logits = logit_scale * image @ text.T
    labels = torch.arange(len(image), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def sigmoid_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss: ``-(1/n) Σ_ij log σ(z_ij (t · x_i·y_j + b))``, ``z_ij`` = 1 on the diagonal, else -1."""
    logits = logit_scale * image @ text.T + logit_bias
    signs = 2 * torch.eye(len(image), dtype=logits.dtype, device=logits.device) - 1
    return -F.logsigmoid(signs * logits).sum() / len(image)


# --------------------------------------------------------------------------------------------
# The text tower as a torch module


def text_parameters(model: Any) -> dict[str, nn.Parameter]:
    """The text tower's parameters by their names in ``model.text.module``: everything for a separate text
    encoder; ``text_model.*`` and ``text_projection.*`` where one transformers model holds both towers."""
    module = model.text.module
    named = dict(module.named_parameters())
    if module is not model.image.module:
        return named
    text = {k: p for k, p in named.items() if k.startswith(("text_model.", "text_projection."))}
    if not text:
        raise LabclipError(f"'{model.name}': no text tower found to fine-tune ({type(module).__name__})")
    return text


def blocks(model: Any) -> tuple[str, int]:
    """The name and length of the text tower's list of transformer blocks (the longest ``ModuleList``)."""
    text = text_parameters(model)
    lists = [(name, len(m)) for name, m in model.text.module.named_modules()
             if isinstance(m, nn.ModuleList) and any(k.startswith(name + ".") for k in text)]
    if not lists:
        raise LabclipError(f"'{model.name}': its text tower has no list of transformer blocks")
    return max(lists, key=lambda item: (item[1], item[0]))


def _trainable_layers(model: Any, config: FinetuneConfig) -> list[str]:
    """``"layers"``: the last N blocks and what follows them (final norm, projection), not the embeddings."""
    prefix, count = blocks(model)
    keep = tuple(f"{prefix}.{i}." for i in range(max(count - config.layers, 0), count))
    inside = prefix + "."
    return [k for k in text_parameters(model)
            if k.startswith(keep) or (not k.startswith(inside) and "embed" not in k)]


def _inject_lora(model: Any, config: FinetuneConfig) -> list[str]:
    """LoRA matrices (``peft``) on every linear layer of the tower's blocks; returns their parameter names."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise LabclipError("LoRA needs the 'peft' package: pip install 'labclip[finetune]' "
                           "(or use --method layers)") from None
    prefix, _ = blocks(model)
    module = model.text.module
    targets = [name for name, m in module.named_modules() if name.startswith(prefix + ".") and isinstance(m, nn.Linear)]
    with _seeded(config.seed):
        inject_adapter_in_model(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                           target_modules=targets), module)
    return [k for k in dict(module.named_parameters()) if ".lora_" in k]


def prepare(model: Any, config: FinetuneConfig) -> dict[str, nn.Parameter]:
    """Freeze the model, make the trained tensors trainable (injecting LoRA if asked) and return them by name."""
    if model.adapter_card is not None:
        raise LabclipError(f"'{model.name}': fine-tune the model itself, not a model with a text adapter")
    if model.precision.dtype not in (None, torch.float32):
        raise LabclipError(f"fine-tuning needs fp32 weights; '{model.name}' is loaded in {model.precision.name} "
                           "(load it with --precision fp32)")
    for module in {id(model.image.module): model.image.module, id(model.text.module): model.text.module}.values():
        module.eval().requires_grad_(False)
    names = _inject_lora(model, config) if config.method == "lora" else _trainable_layers(model, config)
    params = dict(model.text.module.named_parameters())
    for name in names:
        params[name].requires_grad_(True)
    return {name: params[name] for name in names}


class _seeded:
    """Seed torch's global generator for a block, then restore it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        torch.random.set_rng_state(self.state)


def embed_texts(model: Any, texts: Sequence[str]) -> torch.Tensor:
    """Unit text embeddings through the (trainable) tower, with gradients when enabled."""
    inputs = model.text.prepare(list(texts))
    return F.normalize(model.text(**{k: v.to(model.device) for k, v in inputs.items()}).float(), dim=-1)


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class Pairs:
    """Caption/image pairs: ``texts[i]`` describes the image whose unit embedding is ``images[owner[i]]``."""

    texts: list[str]
    owner: np.ndarray
    images: np.ndarray

    def subset(self, image_rows: np.ndarray) -> Pairs:
        """The pairs of some images (re-indexed)."""
        image_rows = np.asarray(image_rows)
        new = {int(r): i for i, r in enumerate(image_rows)}
        keep = [i for i, o in enumerate(self.owner) if int(o) in new]
        return Pairs([self.texts[i] for i in keep], np.array([new[int(self.owner[i])] for i in keep], dtype=int),
                     self.images[image_rows])

    def sha256(self) -> str:
        """Hash of the captions, their owners and the image embeddings (the card's data hash)."""
        digest = hashlib.sha256(json.dumps([self.texts, self.owner.tolist()], ensure_ascii=False).encode())
        digest.update(np.ascontiguousarray(self.images, np.float32).tobytes())
        return digest.hexdigest()


@dataclass
class History:
    """Per epoch (0 = before training): mean training loss, validation loss and validation recall@1."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    val_recall: list[float | None] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    def add(self, epoch: int, train: float | None, val: tuple[float, float] | None) -> None:
        self.epochs.append(epoch)
        self.train_loss.append(train)
        self.val_loss.append(None if val is None else val[0])
        self.val_recall.append(None if val is None else val[1])


@dataclass
class Trained:
    """A finished run: the trained tensors (CPU copies), temperature, history and what it trained on."""

    config: FinetuneConfig
    tensors: dict[str, torch.Tensor]
    logit_scale: float
    logit_bias: float | None
    history: History
    data_sha256: str
    trainable: int
    resumed_from: int | None = None


class Trainer:
    """One fine-tuning run of ``model``'s text tower on ``train`` pairs, validated on ``val`` pairs."""

    def __init__(self, model: Any, config: FinetuneConfig, train: Pairs, val: Pairs | None = None,
                 checkpoint: str | os.PathLike[str] | None = None) -> None:
        if len(train.texts) < 2:
            raise LabclipError(f"fine-tuning needs at least 2 training pairs, got {len(train.texts)}")
        self.model, self.config, self.train_pairs, self.val = model, config, train, val
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.params = prepare(model, config)
        self.sigmoid = model.logit_bias is not None
        self.log_scale = nn.Parameter(torch.tensor(math.log(model.logit_scale)), config.learn_temperature)
        self.bias = nn.Parameter(torch.tensor(float(model.logit_bias or 0.0)), config.learn_temperature)
        extra = [self.log_scale] + ([self.bias] if self.sigmoid else []) if config.learn_temperature else []
        decay = [p for n, p in self.params.items() if p.ndim > 1]
        rest = [p for n, p in self.params.items() if p.ndim <= 1] + extra
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": rest, "weight_decay": 0.0}], lr=config.lr)
        per_epoch = math.ceil(len(train.texts) / config.batch_size)
        self.total_steps = per_epoch * config.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule)
        self.history = History()
        self.epoch = 0
        self.best: dict[str, torch.Tensor] = self._snapshot()
        self.data_sha256 = hashlib.sha256((train.sha256() + (val.sha256() if val else "")).encode()).hexdigest()
        self.resumed_from: int | None = None

    def _schedule(self, step: int) -> float:
        """Linear warm-up over the first ``warmup`` fraction of steps, then cosine decay to 0."""
        warm = max(1, round(self.config.warmup * self.total_steps)) if self.config.warmup else 0
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, self.total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def loss(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.sigmoid:
            return sigmoid_loss(image, text, self.scale(), self.bias)
        return clip_loss(image, text, self.scale())

    def _step(self, texts: list[str], image: torch.Tensor) -> float:
        """One optimiser step on one contrastive batch, through micro-batches (gradient cache)."""
        size = self.config.micro_batch or len(texts)
        chunks = [slice(s, s + size) for s in range(0, len(texts), size)]
        with torch.no_grad():
            cached = torch.cat([embed_texts(self.model, texts[c]) for c in chunks])
        cached.requires_grad_(True)
        loss = self.loss(image, cached)
        torch.autograd.backward(loss)
        assert cached.grad is not None
        for c in chunks:
            torch.autograd.backward(embed_texts(self.model, texts[c]), cached.grad[c])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """This epoch's batches of pair indices, shuffled from the seed and the epoch alone."""
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_pairs.texts))
        for start in range(0, len(order), self.config.batch_size):
            batch = order[start:start + self.config.batch_size]
            if len(batch) >= 2:
                yield batch

    def run_epoch(self, on_batch: Callable[[float], None] | None = None) -> float:
        losses = []
        images = torch.from_numpy(np.ascontiguousarray(self.train_pairs.images, np.float32)).to(self.model.device)
        for batch in self.batches(self.epoch + 1):
            texts = [self.train_pairs.texts[i] for i in batch]
            losses.append(self._step(texts, images[self.train_pairs.owner[batch]]))
            if on_batch is not None:
                on_batch(losses[-1])
        self.epoch += 1
        return float(np.mean(losses))

    def validate(self) -> tuple[float, float] | None:
        """Validation loss (all validation pairs as one batch) and mean recall@1 of both directions."""
        if self.val is None or len(self.val.texts) < 2:
            return None
        with torch.no_grad():
            text = torch.cat([embed_texts(self.model, self.val.texts[s:s + 64]) for s in range(0, len(self.val.texts), 64)])
            image = torch.from_numpy(np.ascontiguousarray(self.val.images, np.float32)).to(text.device)[self.val.owner]
            loss = float(self.loss(image, text))
            sim = image @ text.T
            truth = torch.arange(len(text), device=text.device)
            recall = float(((sim.argmax(1) == truth).float().mean() + (sim.argmax(0) == truth).float().mean()) / 2)
        return loss, recall

    def _snapshot(self) -> dict[str, torch.Tensor]:
        tensors = {k: p.detach().clone() for k, p in self.params.items()}
        return {**tensors, "logit_scale.log": self.log_scale.detach().clone(), "logit_bias": self.bias.detach().clone()}

    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(tensors[k])
            self.log_scale.copy_(tensors["logit_scale.log"])
            self.bias.copy_(tensors["logit_bias"])

    def fit(self, on_batch: Callable[[float], None] | None = None,
            on_epoch: Callable[[History], None] | None = None) -> Trained:
        """Train until ``epochs`` or early stopping; resume from the checkpoint if one matches this run."""
        self._resume()
        if not self.history.epochs:
            self.history.add(0, None, self.validate())
        best_loss = self.history.val_loss[self.history.best_epoch]
        while self.epoch < self.config.epochs and not self.history.stopped_early:
            train_loss = self.run_epoch(on_batch)
            val = self.validate()
            self.history.add(self.epoch, train_loss, val)
            if val is None or best_loss is None or val[0] < best_loss:
                best_loss, self.history.best_epoch, self.best = (val or (None,))[0], self.epoch, self._snapshot()
            elif self.config.patience and self.epoch - self.history.best_epoch >= self.config.patience:
                self.history.stopped_early = True
            self._save_checkpoint()
            if on_epoch is not None:
                on_epoch(self.history)
        self._restore(self.best)
        return self._result()

    def _result(self) -> Trained:
        tensors = {_stored_name(k): v.detach().cpu().contiguous() for k, v in self.params.items()}
        return Trained(self.config, tensors, float(self.scale().detach()),
                       float(self.bias.detach()) if self.sigmoid else None, self.history, self.data_sha256,
                       sum(p.numel() for p in self.params.values()), self.resumed_from)

    def _state(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "data_sha256": self.data_sha256, "epoch": self.epoch,
                "params": self._snapshot(), "best": self.best, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "history": asdict(self.history)}

    def _save_checkpoint(self) -> None:
        if self.checkpoint is not None:
            state = self._state()
            write_atomic(self.checkpoint, lambda f: torch.save(state, f), binary=True)

    def _resume(self) -> None:
        """Continue from the checkpoint when it was written by a run of this configuration on these data."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            return
        try:
            state = torch.load(self.checkpoint, weights_only=True)
        except Exception as err:  # noqa: BLE001 - an unreadable checkpoint is the user's to remove
            raise LabclipError(f"{self.checkpoint}: not a readable checkpoint ({type(err).__name__}); "
                               "delete it to start again") from None
        if state.get("config") != asdict(self.config) or state.get("data_sha256") != self.data_sha256:
            raise LabclipError(f"{self.checkpoint}: written by a run with other settings or data; "
                               "delete it or use another --out")
        self._restore(state["params"])
        self.best, self.epoch = state["best"], int(state["epoch"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = History(**state["history"])
        self.resumed_from = self.epoch


def _stored_name(name: str) -> str:
    """peft's ``...q_proj.lora_A.default.weight`` as stored: ``...q_proj.lora_A.weight``."""
    return name.replace(".default.", ".")


__all__ = ["FINETUNE_MARK", "FinetuneConfig", "Pairs", "Trained", "Trainer", "apply_finetune", "clip_loss",
           "save_finetune", "sigmoid_loss"]
