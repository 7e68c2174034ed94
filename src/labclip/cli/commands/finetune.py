"""``labclip finetune``: fine-tune a model's text tower on a caption set, score it on held-out images and save
the weights for ``--model 'MODEL+finetune:DIR'`` (registered in :data:`labclip.cli.COMMANDS`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...errors import LabclipError
from ...finetune import FINETUNE_MARK, METHODS, FinetuneConfig
from ...finetune_file import CARD, WEIGHTS
from ...registry import DEFAULT_MODEL
from ..options import Subparsers, add_command, image_dir_option

OURS = {WEIGHTS, CARD, "checkpoints"}


def add_parser(subparsers: Subparsers) -> None:
    """The ``finetune`` command's options."""
    p = add_command(
        subparsers, "finetune", "fine-tune the text tower (image tower locked) and score it on held-out images",
        description="LiT-style fine-tuning with CLIP's contrastive loss (SigLIP: its sigmoid loss): LoRA or the last "
        "layers of the text tower, on image embeddings from the cache. Prints held-out recall@1/5 against zero-shot "
        "and the ridge text adapter with exact McNemar tests, and saves finetune.safetensors + finetune.json in "
        "--out. Ctrl-C keeps the last epoch's checkpoint; the same command resumes from it.")
    p.add_argument("captions", type=Path, help="caption file: an image column and one column per language")
    p.add_argument("--lang", default="en", help="caption language to fine-tune on (a column of the caption file)")
    image_dir_option(p)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model to fine-tune (default: {DEFAULT_MODEL})")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the weights, card and checkpoints")
    p.add_argument("--method", choices=METHODS, default="lora", help="LoRA (peft) or the last --layers blocks")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default: 8)")
    p.add_argument("--layers", type=int, default=1, help="blocks trained by --method layers (default: 1)")
    p.add_argument("--epochs", type=int, default=10, help="most epochs (default: 10)")
    p.add_argument("--pairs-per-batch", type=int, default=32, help="pairs per contrastive batch (default: 32)")
    p.add_argument("--micro-batch", type=int, help="pairs through the tower at once (default: the whole batch)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of AdamW (default: 0.0005)")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps warming up (default: 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: 0.01)")
    p.add_argument("--learn-temperature", action="store_true", help="also learn the logit scale (and bias) (default: keep the model's)")
    p.add_argument("--patience", type=int, default=3, help="epochs without a lower validation loss before stopping")
    p.add_argument("--folds", default="auto", help="'auto', 'holdout' or a number of folds over images")
    p.add_argument("--seed", type=int, default=0, help="LoRA's start and the batch order (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--precision", default=None, help="weights' precision (default: fp32, which fine-tuning needs)")
    p.set_defaults(precision_default_for="finetune")


def _config(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(method=args.method, rank=args.rank, layers=args.layers, epochs=args.epochs,
                          batch_size=args.pairs_per_batch, micro_batch=args.micro_batch, lr=args.lr, warmup=args.warmup,
                          weight_decay=args.weight_decay, learn_temperature=args.learn_temperature,
                          patience=args.patience, seed=args.seed)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise LabclipError(f"--out {out}: not a folder")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in OURS)
        if other:
            raise LabclipError(f"--out {out}: holds files labclip did not write ({', '.join(other[:3])}); "
                               "use an empty or new folder")


def _progress(what: str, trainer: Any) -> tuple[Any, Any]:
    """A progress bar per training: loss, validation recall@1 and the time left (tqdm)."""
    from tqdm.auto import tqdm

    per_epoch = sum(1 for _ in trainer.batches(1))
    bar = tqdm(total=per_epoch * trainer.config.epochs, desc=f"fine-tuning {what}", unit="batch",
               initial=per_epoch * trainer.epoch, disable=None)  # None: shown on a terminal only

    def on_batch(loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(1)

    def on_epoch(history: Any) -> None:
        recall = history.val_recall[-1]
        bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", val_R1="—" if recall is None else f"{recall:.1%}")
        if history.stopped_early or history.epochs[-1] >= trainer.config.epochs:
            bar.close()

    return on_batch, on_epoch


def run(args: argparse.Namespace) -> None:
    """Check the inputs, load the model in fp32, fine-tune, print the held-out results and save."""
    from ...data import load_captions
    from ...lab.finetune import run_finetune
    from ...lab.finetune_report import findings, recall_table
    from ...model import load_model

    config = _config(args)
    folds: int | str = int(args.folds) if str(args.folds).isdigit() else str(args.folds)
    _check_out(args.out)
    load_captions(args.captions, args.image_dir, [args.lang])
    model = load_model(args.model, device=args.device, precision=args.precision, default_for="finetune")
    try:
        result = run_finetune(model, args.captions, args.lang, image_dir=args.image_dir, config=config, folds=folds,
                              out=args.out, progress=_progress, requested_model=args.model)
    except KeyboardInterrupt:
        print(f"labclip: interrupted; run the same command again to resume from {args.out / 'checkpoints'}",
              file=sys.stderr)
        raise
    print(recall_table(result.evaluation).to_string(index=False))
    for sentence in findings(result.evaluation, bool(model.untrained)):
        print(f"- {sentence}")
    print(f"labclip: wrote {args.out / WEIGHTS} and {args.out / CARD}; use it as --model "
          f"'{args.model}{FINETUNE_MARK}{args.out}'", file=sys.stderr)

