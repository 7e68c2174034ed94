"""The ``labclip`` parser's parts: one-line errors, help with defaults, argument types and the options that
several commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeAlias

from ..config import DEFAULT_MODEL
from ..errors import LabclipError, at_least
from ..precision import PRECISIONS, default_precision

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Parser(argparse.ArgumentParser):
    """argparse with labclip's one-line user errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("labclip").strip()
        self.exit(2, f"labclip: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends each option's default to its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text or default in (None, False, argparse.SUPPRESS):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def add_command(sub: Subparsers, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser with labclip's help format (defaults shown) and no abbreviated options."""
    return sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter,
                          allow_abbrev=False)


# --- argument types -------------------------------------------------------------------------------------------

def whole_number(minimum: int, expected: str, too_small: str, words: tuple[str, ...] = ()) -> Callable[[str], int | str]:
    """An argparse type: a whole number of at least ``minimum`` (or one of ``words``), else a one-line error."""

    def parse(text: str) -> int | str:
        if text in words:
            return text
        try:
            return at_least(text, minimum, text)
        except LabclipError:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
            raise argparse.ArgumentTypeError(f"{too_small}, got {value}") from None

    return parse


positive = whole_number(1, "a whole number", "must be 1 or more")
folds = whole_number(2, "a number of folds (2 or more) or 'loo'", "at least 2 folds", words=("loo",))


def device(text: str) -> str:
    """A torch device that exists on this machine, checked before any model is loaded."""
    if text == "cpu":
        return text
    import torch

    try:
        found = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    backend = torch.backends.mps if found.type == "mps" else getattr(torch, found.type, None)
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        build = " (this torch is a CPU-only build)" if found.type == "cuda" and torch.version.cuda is None else ""
        raise argparse.ArgumentTypeError(f"{text!r}: no {found.type} device is available{build}; use --device cpu")
    if found.type == "cuda" and found.index is not None and found.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def query(text: str) -> str:
    """A search query: not blank, without its surrounding spaces."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the search query is empty")
    return text.strip()


def shot_counts(text: str) -> list[int]:
    """Comma-separated shot counts, each 1 or more, sorted without repeats."""
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected shot counts like 1,2,4,8,16, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"shot counts must be 1 or more, got {text!r}")
    return values


def ridge_alpha(text: str) -> float:
    """A ridge penalty: a number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"alpha must be 0 or more, got {text!r}")
    return value


# --- options several commands share ---------------------------------------------------------------------------

def model_options(p: argparse.ArgumentParser, task: str, several: bool = False) -> None:
    """``--model`` (or ``--models``), ``--device``, ``--precision`` (``task``'s default), ``--batch-size``,
    ``--no-cache``."""
    if several:
        p.add_argument("--models", nargs="+", metavar="MODEL",
                       help="models to compare (hub ids, aliases, local directories, 'demo'; default: "
                            f"{DEFAULT_MODEL} and the default multilingual models that support every --langs "
                            "language); a multilingual text encoder may be paired with a CLIP model as TEXT+IMAGE")
    else:
        p.add_argument("--model", default=DEFAULT_MODEL, help="hub id, alias (ViT-B/32, ...), local directory saved "
                       "with save_pretrained, or 'demo' (labclip's untrained model, works offline)")
    p.add_argument("--device", type=device, default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    default = default_precision(task)
    why = "exact numbers, read one by one" if default == "fp32" else "bulk work: the fastest precision here"
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"fp32, bf16, fp16, or auto: bf16 where the hardware runs it faster (CUDA, AMX CPUs, AMD CPUs with "
                        f"AVX-512-BF16), else "
                        f"fp32 (default: {default}, {why})")
    p.set_defaults(precision_default_for=task)
    p.add_argument("--batch-size", type=positive, metavar="N",
                   help="images or captions per forward pass (default: the model's own, 32 images, 16 captions)")
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the embedding cache (default: use it)")


def result_options(p: argparse.ArgumentParser, task: str, k: int, k_help: str, summary: bool = False) -> None:
    """The closing options of a command that prints or writes a table: ``--top-k``, the model options,
    ``--out``."""
    top_k(p, k, k_help)
    model_options(p, task)
    out_option(p, summary=summary)


def top_k(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--top-k", type=positive, default=default, metavar="K", help=what)


def out_option(p: argparse.ArgumentParser, summary: bool = False) -> None:
    """``--out FILE``: a .csv or .json file (with ``summary``, a .csv also gets ``NAME.summary.csv``)."""
    extra = "; a .csv also writes NAME.summary.csv with the summary figures" if summary else ""
    p.add_argument("--out", type=Path, metavar="FILE", help="write the results to a .csv or .json file, with the "
                   f"model that made them{extra} (default: print them)")


def image_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-dir", type=Path, metavar="DIR",
                   help="folder the caption file's image paths are relative to (default: the caption file's own)")


def label_options(p: argparse.ArgumentParser) -> None:
    """``--labels``, ``--labels-file`` and the template options."""
    p.add_argument("--labels", help="comma-separated labels, e.g. 'cat,dog,car' (default: none; give this or "
                   "--labels-file)")
    p.add_argument("--labels-file", type=Path, metavar="FILE", help="one label per line (default: none)")
    template_options(p)


def template_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", default="imagenet7", metavar="SET",
                   help="prompt template set: imagenet80, imagenet7, cifar, single")
    p.add_argument("--lang", default="en", help="language of the prompt templates (en, ru)")


def folds_and_seed(p: argparse.ArgumentParser, shuffles: str) -> None:
    """``--folds`` over images and the ``--seed`` that ``shuffles`` them."""
    p.add_argument("--folds", type=folds, default=5, metavar="K", help="folds over images, or 'loo'")
    p.add_argument("--seed", type=int, default=0, help=f"{shuffles} (default: 0)")
