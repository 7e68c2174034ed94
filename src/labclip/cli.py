"""The ``labclip`` command: match, classify, tag, search, eval, compare, report.

Every subcommand that writes ``--out`` records who made the numbers. JSON files carry a
``provenance`` block (labclip version, time, model id, revision and whether it is untrained,
library versions, machine, input hashes). CSV files carry the model in three columns on every row
(``model``, ``model_revision``, ``model_untrained``); a summary (``match``, ``eval``, ``search``) goes beside
the table as ``<name>.summary.csv`` (``name,value`` rows, provenance included).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, calibrate, watch
from . import index as index_command
from .adapter import ADAPTER_MARK, public_card
from .atomic import write_texts
from .config import (
    DEFAULT_CAPTIONS,
    DEFAULT_LABELS,
    DEFAULT_MODEL,
    DEMO_MODEL,
    shown_names,
)
from .errors import LabclipError, at_least
from .images import IMAGE_SUFFIXES
from .index import is_embedding_folder
from .lab.provenance import hub_revision as _hub_revision  # noqa: F401 - kept for callers of the old name
from .lab.provenance import model_columns as _model_columns
from .lab.provenance import model_record, row_provenance
from .labels import format_metric, metric_label, num, share
from .precision import PRECISIONS, default_precision
from .shardsearch import DefaultModel, search_shards
from .stats import INTERVAL_SUFFIXES, Estimate, interval_fields, is_interval_field
from .translate import DEFAULT_TRANSLATOR

REPORT_EXTRA_MODULES = ("papermill", "nbconvert", "nbformat", "mistune", "ipykernel", "jupyter_client", "IPython",
                        "matplotlib", "seaborn", "yaml", "openpyxl")
# Third-party log messages that say nothing to a labclip user, by logger: silenced while a command runs.
KNOWN_NOISE = {
    # labclip counts tokens itself and names each caption it truncates (CaptionTruncatedWarning)
    "transformers.tokenization_utils_base": "Token indices sequence length is longer than the specified maximum",
    # M-CLIP's config declares model type "M-CLIP"; labclip loads its XLM-R text encoder on purpose
    "transformers.configuration_utils": "You are using a model of type `M-CLIP` to instantiate",
    # the report runner says in its own one line that a kernel died or the run was interrupted
    "papermill": "Kernel died while waiting for execute reply.",
}
# Images tagged between two atomic rewrites of the tags CSV: an interrupted run keeps every finished chunk.
TAG_CHUNK = 256
TAG_KEY = ("model", "model_revision", "model_untrained", "precision", "labels_sha256", "templates", "template_lang",
           "top_k")


# --- the parser -----------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with labclip's one-line user errors (exit 2)."""

    def error(self, message: str):
        where = self.prog.removeprefix("labclip").strip()
        self.exit(2, f"labclip: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Appends each option's default to its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text or default in (None, False, argparse.SUPPRESS):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _whole_number(minimum: int, expected: str, too_small: str, words: tuple[str, ...] = ()) -> Callable[[str], int | str]:
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


_positive = _whole_number(1, "a whole number", "must be 1 or more")
_folds = _whole_number(2, "a number of folds (2 or more) or 'loo'", "at least 2 folds", words=("loo",))


def _device(text: str) -> str:
    """A torch device that exists on this machine, checked before any model is loaded."""
    if text == "cpu":
        return text
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        build = " (this torch is a CPU-only build)" if device.type == "cuda" and torch.version.cuda is None else ""
        raise argparse.ArgumentTypeError(f"{text!r}: no {device.type} device is available{build}; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def _query(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the search query is empty")
    return text.strip()


def _model_options(p: argparse.ArgumentParser, task: str, several: bool = False) -> None:
    if several:
        p.add_argument("--models", nargs="+", metavar="MODEL",
                       help="models to compare (hub ids, aliases, local directories, 'demo'; default: "
                            f"{DEFAULT_MODEL} and the default multilingual models that support every --langs "
                            "language); a multilingual text encoder may be paired with a CLIP model as TEXT+IMAGE")
    else:
        p.add_argument("--model", default=DEFAULT_MODEL, help="hub id, alias (ViT-B/32, ...), local directory saved "
                       "with save_pretrained, or 'demo' (labclip's untrained model, works offline)")
    p.add_argument("--device", type=_device, default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    default = default_precision(task)
    why = "exact numbers, read one by one" if default == "fp32" else "bulk work: the fastest precision here"
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"fp32, bf16, fp16, or auto: bf16 where the hardware runs it faster (CUDA, AMX CPUs), else "
                        f"fp32 (default: {default}, {why})")
    p.set_defaults(precision_default_for=task)
    p.add_argument("--batch-size", type=_positive, metavar="N",
                   help="images or captions per forward pass (default: the model's own, 32 images, 16 captions)")
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the embedding cache (default: use it)")


def _top_k(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--top-k", type=_positive, default=default, metavar="K", help=what)


def _out_option(p: argparse.ArgumentParser, summary: bool = False) -> None:
    extra = "; a .csv also writes NAME.summary.csv with the summary figures" if summary else ""
    p.add_argument("--out", type=Path, metavar="FILE", help="write the results to a .csv or .json file, with the "
                   f"model that made them{extra} (default: print them)")


def _label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", help="comma-separated labels, e.g. 'cat,dog,car' (default: none; give this or "
                   "--labels-file)")
    p.add_argument("--labels-file", type=Path, metavar="FILE", help="one label per line (default: none)")
    _template_options(p)


def _template_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", default="imagenet7", metavar="SET",
                   help="prompt template set: imagenet80, imagenet7, cifar, single")
    p.add_argument("--lang", default="en", help="language of the prompt templates (en, ru)")


def _parser() -> argparse.ArgumentParser:
    """The ``labclip`` argument parser, ``report`` included (its options come from :mod:`labclip.lab.report`)."""
    kw = {"formatter_class": _HelpFormatter, "allow_abbrev": False}
    parser = _Parser(prog="labclip", description="CLIP image-text matching, zero-shot classification and lab "
                     "reports. Errors are one line 'labclip: error: ...' with exit status 2.", **kw)
    parser.add_argument("--version", action="version", version=f"labclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("match", help="paired-caption metrics and top-k table", description="Match each image with "
                       "the captions of one language of a caption file; caption i belongs to image i.", **kw)
    p.add_argument("captions", type=Path, nargs="?", default=DEFAULT_CAPTIONS,
                   help="caption file (.csv, .tsv, .xlsx, .jsonl): an image column and one column per language "
                   "(default: the bundled data/captions/default.csv)")
    p.add_argument("--lang", default="en", help="caption language (a column of the caption file)")
    p.add_argument("--image-dir", type=Path, metavar="DIR",
                   help="folder the caption file's image paths are relative to (default: the caption file's own)")
    _top_k(p, 3, "captions listed per image, and the k of the top-k accuracies")
    _model_options(p, "match")
    _out_option(p, summary=True)

    p = sub.add_parser("classify", help="zero-shot labels of images", description="Zero-shot classification: "
                       "the most probable labels of each image.", **kw)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                   help="image files, or folders whose images are all classified (searched recursively, as tag "
                   "and search do)")
    _label_options(p)
    _top_k(p, 5, "labels listed per image")
    _model_options(p, "classify")
    _out_option(p)

    p = sub.add_parser("tag", help="tag every image of a folder (resumable)", description="Write the top-k labels "
                       "of every image in a folder to a CSV. A rerun with the same model, labels, templates and "
                       "top-k tags only new files; with other options it tags every file again.", **kw)
    p.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    _label_options(p)
    _top_k(p, 3, "labels kept per image")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv",
                   help="the tags CSV, read on a rerun and rewritten atomically (required, no default)")
    _model_options(p, "tag")
    watch.add_arguments(p)

    p = sub.add_parser("search", help="find images in a folder by text", description="Rank a folder's images "
                       "by similarity to a text query.", **kw)
    p.add_argument("folder", type=Path, help="folder of images (searched recursively), or of embedding shards (EMB)")
    p.add_argument("query", type=_query, help="the text to look for, e.g. 'a red car'")
    _top_k(p, 5, "images listed")
    _model_options(p, "search")
    p.set_defaults(model=DefaultModel(DEFAULT_MODEL))  # EMB: the shards' model unless --model is given
    p.add_argument("--exact", action="store_true", help="EMB: search every row (default: the index, where labclip index built a current one)")
    _out_option(p, summary=True)

    p = sub.add_parser("eval", help="zero-shot accuracy on a labelled folder", description="Evaluate zero-shot "
                       "classification on ROOT/<class>/*.jpg (or a CSV of image,label): top-1 and top-k accuracy, "
                       "mean per-class recall, per-class accuracy.", **kw)
    p.add_argument("root", type=Path, help="ROOT/<class>/*.jpg folder, or a CSV with an image column and a label "
                   "column (or one label column per language, of which --lang picks one)")
    _template_options(p)
    _top_k(p, 5, "the k of the top-k accuracy")
    _model_options(p, "eval")
    _out_option(p, summary=True)

    p = sub.add_parser("compare", help="models × languages × strategies table", description="Compare models, "
                       "caption languages and strategies (raw, translated to English, multilingual) on one caption "
                       "set: top-1/top-k in both directions, mean correct similarity and margin, gap to English.",
                       **kw)
    p.add_argument("captions", type=Path, nargs="?", default=DEFAULT_CAPTIONS,
                   help="caption file with one column per language (default: the bundled data/captions/default.csv)")
    p.add_argument("--langs", nargs="+", default=["en", "ru"], metavar="LANG", help="caption languages")
    p.add_argument("--image-dir", type=Path, metavar="DIR",
                   help="folder the caption file's image paths are relative to (default: the caption file's own)")
    p.add_argument("--translator", default=DEFAULT_TRANSLATOR, help="translation model ('{lang}' is filled in); "
                   "'none' skips translate-then-CLIP")
    _top_k(p, 3, "the k of the top-k accuracies")
    p.add_argument("--strict", action="store_true", help="fail when any model can't be loaded (default: compare "
                   "the others and name it as not compared)")
    _model_options(p, "compare", several=True)
    _out_option(p)

    _adapt_parser(sub, kw)
    index_command.add_parser(sub, **kw)
    _model_options(p := calibrate.add_parser(sub, **kw), "eval")
    _label_options(p)
    from .lab.report import add_arguments

    p = sub.add_parser("report", help="run the notebooks and render HTML + PDF",
                       description="Run the notebooks and render HTML + PDF reports.", **kw)
    add_arguments(p)
    return parser


def _shots(text: str) -> list[int]:
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected shot counts like 1,2,4,8,16, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"shot counts must be 1 or more, got {text!r}")
    return values


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"alpha must be 0 or more, got {text!r}")
    return value


def _adapt_parser(sub, kw: dict) -> None:
    p = sub.add_parser("adapt", help="fit adapters and score them on held-out images (text, fewshot)",
                       description="Adapters that fit on a CPU in seconds, scored only on images they were not "
                       "fitted on.", **kw)
    kinds = p.add_subparsers(dest="adapt_kind", required=True, metavar="KIND")
    t = kinds.add_parser("text", help="a linear text adapter, e.g. Russian captions onto English ones",
                         description="Fit a ridge-regularised linear map from the model's embeddings of "
                         "--source-lang captions to its embeddings of their --target-lang counterparts. Prints "
                         "held-out top-1 before and after (k-fold or leave-one-out over the caption set's images, "
                         "alpha chosen inside each training fold), then fits on every pair and saves the adapter "
                         "(safetensors + JSON card with the held-out scores). Use it as --model 'MODEL+adapter:FILE'.",
                         **kw)
    t.add_argument("--captions", type=Path, metavar="FILE", help="caption set with both language columns: pairs "
                   "to fit on and the images to score on (default: labclip's data/captions/default.csv)")
    t.add_argument("--image-dir", type=Path, metavar="DIR",
                   help="folder the caption file's image paths are relative to (default: the caption file's own)")
    extra = t.add_mutually_exclusive_group()
    extra.add_argument("--parallel", type=Path, metavar="FILE", help="more sentence pairs to fit on: a CSV/TSV/"
                       "JSON Lines table with a column per language (default: none)")
    extra.add_argument("--dataset", metavar="NAME", help="more pairs from a Hugging Face dataset of parallel "
                       "captions, cached after the first download (default: none)")
    t.add_argument("--source-lang", default="ru", metavar="LANG", help="language of the captions to adapt")
    t.add_argument("--target-lang", default="en", metavar="LANG", help="language they are mapped onto")
    t.add_argument("--source-model", metavar="MODEL", help="encode the source captions with this model "
                   "instead (e.g. a multilingual text encoder; default: --model)")
    t.add_argument("--alpha", type=_alpha, metavar="A",
                   help="ridge penalty (default: chosen by cross-validation inside the training images)")
    t.add_argument("--folds", type=_folds, default=5, metavar="K", help="folds over images, or 'loo'")
    t.add_argument("--seed", type=int, default=0, help="shuffles the folds (default: 0)")
    _model_options(t, "adapt")
    t.add_argument("--out", type=Path, required=True, metavar="FILE.safetensors",
                   help="the adapter; its JSON card is written beside it (required, no default)")
    t.add_argument("--json", type=Path, metavar="FILE.json", help="also write the results with their "
                   "provenance (default: print only)")

    f = kinds.add_parser("fewshot", help="linear probe and Tip-Adapter over shots against zero-shot",
                         description="k-shot linear probe and Tip-Adapter on labelled images against zero-shot, "
                         "every image scored out of fold, with 95% Wilson intervals and exact McNemar tests.", **kw)
    f.add_argument("--labels", type=Path, metavar="PATH", help="ROOT/<class>/*.jpg folder, or a CSV with an image "
                   "column and a label (or language) column (default: labclip's data/labels.csv)")
    f.add_argument("--shots", type=_shots, default=[1, 2, 4, 8, 16], metavar="K,K,...",
                   help="training images per class")
    f.add_argument("--folds", type=_folds, default=5, metavar="K", help="folds over images, or 'loo'")
    f.add_argument("--seed", type=int, default=0, help="shuffles the folds and draws the shots (default: 0)")
    _template_options(f)
    _model_options(f, "adapt")
    f.add_argument("--json", "--out", dest="json", type=Path, metavar="FILE.json",
                   help="write the results with their provenance (default: print only)")


# --- inputs ---------------------------------------------------------------------------------------------------

def _labels(args) -> list[str]:
    labels: list[str] = []
    if args.labels:
        labels += [x.strip() for x in args.labels.split(",")]
    if args.labels_file:
        try:
            labels += [x.strip() for x in args.labels_file.read_text(encoding="utf-8-sig").splitlines()]
        except OSError as err:
            raise LabclipError(f"{args.labels_file}: cannot read labels file ({err.strerror})") from None
    labels = [x for x in dict.fromkeys(labels) if x]
    if not labels:
        raise LabclipError("no labels: give --labels 'cat,dog' or --labels-file FILE")
    return labels


def _folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise LabclipError(f"{folder}: no such folder")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise LabclipError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def _given_images(paths: Sequence[Path]) -> list[Path]:
    """Image files as given, a folder as its images (recursively, as ``tag`` and ``search`` read it)."""
    images: list[Path] = []
    for path in paths:
        images += _folder_images(path) if path.is_dir() else [path]
    return list(dict.fromkeys(images))


def _shown_names(paths: Sequence[Path]) -> list[str]:
    """How the console and output files name images: relative to the deepest folder that holds them all,
    as ``match`` and the reports do (:func:`labclip.config.shown_names`), never relative to the filesystem root."""
    return shown_names(paths)


def _check_files(paths: Sequence[Path]) -> None:
    """Every image exists and decodes, before any model is loaded."""
    from .images import load_image

    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise LabclipError(f"{_count(len(missing), 'image')} not found: {', '.join(missing[:5])}"
                           + (" ..." if len(missing) > 5 else ""))
    for path in paths:
        load_image(path)


def _check_out(out: Path | None, suffixes: Sequence[str] = (".csv", ".json")) -> None:
    """A bad ``--out`` is reported before any model is loaded."""
    if out is None:
        return
    if out.suffix.lower() not in suffixes:
        raise LabclipError(f"{out}: --out must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise LabclipError(f"{out}: --out is a folder; give a file name")
    folder = out.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise LabclipError(f"{out}: cannot write there ({folder} is not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LabclipError(f"{out}: cannot write there (no write permission in {folder})")


# --- the model ------------------------------------------------------------------------------------------------

@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence transformers' "Loading weights" bar while a model loads; hub download bars stay."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    bar_on, hub_off = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    if not hub_off:
        enable_progress_bars()
    try:
        yield
    finally:
        if bar_on:
            hf_logging.enable_progress_bar()
        if hub_off:
            disable_progress_bars()


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def _console() -> Iterator[None]:
    """While a command runs: drop the log messages in ``KNOWN_NOISE`` (only those, only from their loggers)
    and print labclip's own warnings as one ``labclip: warning: ...`` line."""
    filters = [(logging.getLogger(name), _DropMessage(prefix)) for name, prefix in KNOWN_NOISE.items()]
    for logger, drop in filters:
        logger.addFilter(drop)
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("labclip"):
            return show(message, category, filename, lineno, file, line)
        print(f"labclip: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


def _name_demo_flag(err: LabclipError, flag: str = "--model") -> LabclipError:
    """Offline loading errors name the flag that gives the demo model."""
    text = str(err)
    if f"{flag} demo" in text or "'demo' model" not in text:
        return err
    return LabclipError(text.replace("the untrained 'demo' model", f"the untrained demo model ({flag} demo)"))


def _configure(model, args):
    """Apply the batch size and cache options to a loaded model."""
    if args.batch_size:
        model.image_batch_size = model.text_batch_size = args.batch_size
    if args.no_cache:
        model.cache = None
    return model


def _load(args):
    from .model import load_model

    try:
        with _quiet_loading():
            model = load_model(args.model, device=args.device, cache=not args.no_cache, precision=args.precision,
                               default_for=args.precision_default_for)
    except LabclipError as err:
        raise _name_demo_flag(err) from None
    if model.untrained:
        print(f"labclip: note: '{args.model}' is an untrained model; its results mean nothing", file=sys.stderr)
    return _configure(model, args)


# --- output ---------------------------------------------------------------------------------------------------
# Console labels and number format are the reports' (labclip.labels): percentages with one decimal,
# counts as k/n, cosines with three decimals.

HIDDEN = {"k", "i2t_hits1", "t2i_hits1"}
label = metric_label
fmt = format_metric


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _print_summary(summary: dict) -> None:
    n = summary.get("n")
    for key, value in summary.items():
        if key not in HIDDEN and not key.endswith("_undefined") and not (key == "threshold" and value is None):
            why = summary.get(f"{key}_undefined")
            print(f"{label(key)}: {fmt(key, value, n)}" + (f" ({why})" if why else ""))
    print()


def _print_table(table: pd.DataFrame, n: int | None = None) -> None:
    """The table as the reports show it; an accuracy shows its interval in its cell, so the interval columns go."""
    shown = table.drop(columns=[c for c in table.columns if is_interval_field(c)])
    for column in shown.columns:
        shown[column] = [fmt(column, v, n) for v in shown[column]]
    shown.columns = [label(c) for c in shown.columns]
    with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.max_rows", None):
        print(shown.to_string(index=False))


def _provenance(models: list[dict], inputs: Sequence[str | Path] = (), several: bool = False) -> dict:
    from .lab.provenance import machine, now, package_versions, sha256_files

    block = {"labclip": __version__, "created": now(),
             **({"models": models} if several else {"model": models[0]}),
             "versions": package_versions(), "machine": machine()}
    if inputs:
        block["inputs_sha256"] = sha256_files(inputs)
    return block


def _flat_summary(summary: dict) -> dict:
    """Each :class:`~labclip.stats.Estimate` as its value, followed by ``{key}_low`` and ``{key}_high``."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, Estimate):
            out.update({key: value.value, **interval_fields({key: value})})
        else:
            out[key] = value
    return out


def _flat_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each column of estimates as their values, followed by ``{column}_low`` and ``{column}_high`` (NaN where
    a cell holds no estimate)."""
    columns = {}
    for name in table.columns:
        values = list(table[name])
        if not any(isinstance(v, Estimate) for v in values):
            columns[name] = table[name]
            continue
        for key, part in ((name, "value"), *((f"{name}{s}", s[1:]) for s in INTERVAL_SUFFIXES)):
            columns[key] = [getattr(v, part) if isinstance(v, Estimate) else float("nan") for v in values]
    return pd.DataFrame(columns, index=table.index)


def _emit(table: pd.DataFrame, out: Path | None, models: list[dict], summary: dict | None = None,
          inputs: Sequence[str | Path] = (), columns: pd.DataFrame | None = None, n: int | None = None,
          not_compared: Sequence[str] = ()) -> None:
    """Print the results, or write them with their provenance to ``out`` (JSON, or CSV + summary CSV).

    Figures given as estimates (in ``summary`` or in ``table``'s cells) print with their interval and are
    written as the value with ``{key}_low`` and ``{key}_high`` beside it. ``columns`` holds per-row model
    columns of several models (compare); otherwise every row gets the one model's. ``n`` is the images
    behind the table's accuracies when no summary gives it. ``not_compared`` (compare) are the reasons of the
    models and strategies left out: the JSON lists them, as the console does on stderr.
    """
    summary = summary or {}
    if out is None:
        if summary:
            _print_summary(summary)
        _print_table(table, summary.get("n", n))
        return
    summary, table = _flat_summary(summary), _flat_table(table)
    provenance = _provenance(models, inputs, several=columns is not None)
    if out.suffix.lower() == ".json":
        left_out = {"not_compared": list(not_compared)} if columns is not None else {}
        text = json.dumps({"provenance": provenance, **left_out, **summary, "rows": table.to_dict("records")},
                          indent=2, ensure_ascii=False, default=str)
        _write({out: text})
    else:
        model_columns = columns if columns is not None else pd.DataFrame([_model_columns(models[0])] * len(table))
        rows = pd.concat([table.drop(columns=[c for c in model_columns if c in table]).reset_index(drop=True),
                          model_columns.reset_index(drop=True)], axis=1)
        if summary:
            flat = {**summary, **_model_columns(models[0]), "precision_reason": models[0]["precision_reason"],
                    **{f"{k}_version": v for k, v in
                                                              provenance["versions"].items()},
                    "created": provenance["created"]}
            summary_file = out.with_name(f"{out.stem}.summary.csv")
            files = {summary_file: pd.DataFrame({"name": list(flat), "value": list(flat.values())}).to_csv(index=False)}
        else:
            files = {}
        _write({out: rows.to_csv(index=False), **files})
        if files:
            print(f"labclip: wrote {summary_file}", file=sys.stderr)
    print(f"labclip: wrote {out}", file=sys.stderr)


def _write(files: dict[Path, str], kept: str = "") -> None:
    """Write output files together (:func:`labclip.atomic.write_texts`); a full or read-only disk is one line.

    Raises:
        LabclipError: naming the file, the reason and that nothing was written (or what ``kept`` says is left).
    """
    try:
        write_texts(files)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise LabclipError(f"{next(iter(files))}: cannot write ({reason}); "
                           f"{kept or 'nothing was written'}") from None


# --- the subcommands ------------------------------------------------------------------------------------------

def cmd_match(args) -> None:
    from .data import load_captions
    from .lab.experiment import Experiment

    _check_out(args.out)
    captions = load_captions(args.captions, args.image_dir, [args.lang])
    model = _load(args)
    m = Experiment(model=model, captions=captions, top_k=args.top_k, batch_size=args.batch_size).matching(args.lang)
    _emit(m.topk, args.out, [model_record(model)], {**m.metrics.to_dict(), **m.estimates()},
          [args.captions, *captions["path"]])


def cmd_classify(args) -> None:
    from .lab.tables import top_labels
    from .zeroshot import class_embeddings, load_templates, probabilities

    _check_out(args.out)
    images = _given_images(args.images)
    _check_files(images)
    labels, templates = _labels(args), load_templates(args.templates, args.lang)
    model = _load(args)
    probs = probabilities(model, model.encode_images(images), class_embeddings(model, labels, templates))
    _emit(top_labels(probs, labels, _shown_names(images), args.top_k), args.out, [model_record(model)],
          inputs=images)


def _tag_key(args, record: dict, labels: list[str]) -> dict[str, str]:
    """What a tags row depends on; rows are reused only when all of it is the same."""
    labels_sha = hashlib.sha256("\n".join(sorted(labels)).encode("utf-8")).hexdigest()[:16]
    values = {**_model_columns(record), "labels_sha256": labels_sha, "templates": args.templates,
              "template_lang": args.lang, "top_k": args.top_k}
    return {k: str(values[k]) for k in TAG_KEY}


def _read_tags(out: Path) -> pd.DataFrame | None:
    if not out.is_file():
        return None
    try:
        return pd.read_csv(out, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabclipError(f"{out}: existing tags file is unreadable ({type(err).__name__}); "
                           "move it away to start again") from None


def _key_changes(done: pd.DataFrame, key: dict[str, str]) -> list[str]:
    """How the options of an existing tags file differ from this run's (empty when they are the same)."""
    if any(c not in done.columns for c in TAG_KEY):
        return ["made by an older labclip without the model and options on each row"]
    changes = []
    for column, value in key.items():
        before = sorted(set(done[column]))
        if before != [value]:
            changes.append(f"{column.replace('_', ' ')} {', '.join(before) or '(none)'} → {value}")
    return changes


def cmd_tag(args) -> None:
    if args.watch or args.flag is not None or args.threshold is not None:
        return watch.run(args)
    from .lab.tables import top_labels
    from .zeroshot import class_embeddings, load_templates, probabilities

    _check_out(args.out, (".csv",))
    labels, templates = _labels(args), load_templates(args.templates, args.lang)
    images = _folder_images(args.folder)
    done = _read_tags(args.out)
    model = _load(args)
    key = _tag_key(args, model_record(model), labels)
    names = [str(p.relative_to(args.folder)) for p in images]
    before = set(done["image"]) if done is not None and "image" in done.columns else set()
    if done is not None and len(done):
        changes = _key_changes(done, key)
        if changes:
            print(f"labclip: {args.out} was made with other options ({'; '.join(changes)}); tagging all "
                  f"{_count(len(images), 'image')} again and replacing its rows (use another --out to keep both)",
                  file=sys.stderr)
            done = None
    finished = set(done["image"]) if done is not None and len(done) else set()
    todo = [i for i, name in enumerate(names) if name not in finished]
    if finished:
        print(f"labclip: {len(images) - len(todo)} of {_count(len(images), 'image')} already tagged in {args.out}",
              file=sys.stderr)
    if todo or done is None:
        classes = class_embeddings(model, labels, templates)
        for start in range(0, max(len(todo), 1), TAG_CHUNK):
            chunk = todo[start:start + TAG_CHUNK]
            probs = probabilities(model, model.encode_images([images[i] for i in chunk]), classes)
            new = top_labels(probs, labels, [names[i] for i in chunk], args.top_k).assign(
                **key, precision_requested=model.precision.requested, precision_default=model.precision.default)
            done = pd.concat([done, new], ignore_index=True) if done is not None and len(done) else new
            _write({args.out: done.to_csv(index=False)},
                   kept=f"{args.out} keeps the images tagged before" if args.out.exists() else "")
    again = sum(names[i] in before for i in todo)
    did = [f"re-tagged {_count(again, 'image')}"] if again else []
    if len(todo) - again or not again:
        did.insert(0, f"tagged {_count(len(todo) - again, 'new image')}")
    print(f"labclip: {' and '.join(did)}; {args.out} lists {_count(done['image'].nunique(), 'image')}",
          file=sys.stderr)


def cmd_search(args) -> None:
    _check_out(args.out)
    if is_embedding_folder(args.folder):
        table, record, summary, shards = search_shards(args, _load)
        return _emit(table, args.out, [record], summary if args.out else None, inputs=shards)
    images = _folder_images(args.folder)
    model = _load(args)
    scores = model.encode_images(images) @ model.encode_texts([args.query])[0]
    order = np.argsort(-scores, kind="stable")[: args.top_k]
    names = _shown_names(images)
    table = pd.DataFrame({"rank": range(1, len(order) + 1), "image": [names[i] for i in order],
                          "cosine": scores[order].astype(float)})
    _emit(table, args.out, [model_record(model)], {"query": args.query} if args.out else None, inputs=images)


def cmd_eval(args) -> None:
    from .lab.tables import per_class_accuracy
    from .metrics import zeroshot_estimates, zeroshot_metrics
    from .zeroshot import class_embeddings, labelled_images, load_templates, probabilities

    _check_out(args.out)
    templates = load_templates(args.templates, args.lang)
    data = labelled_images(args.root, args.lang)
    model = _load(args)
    probs = probabilities(model, model.encode_images(data.paths), class_embeddings(model, data.classes, templates))
    figures = {**zeroshot_metrics(probs, data.truth, k=args.top_k).to_dict(),
               **zeroshot_estimates(probs, data.truth, k=args.top_k)}
    table = per_class_accuracy(probs, data.truth, data.classes)
    _emit(table, args.out, [model_record(model)],
          {**figures, "templates": f"{args.templates} ({len(templates)}, {args.lang})"}, inputs=data.paths)


def _compare_models(args, records: list[dict], skipped: list[str]) -> Iterator:
    """Load each of ``--models`` when :func:`labclip.compare.compare` asks for it (one in memory at a time),
    by :func:`labclip.lab.experiment.load_models`: offline, a model that is not cached is an error before
    anything loads (as for every command but ``report``); one whose files fail to load is left out (with
    ``--strict``, an error)."""
    from .lab.experiment import load_models
    from .registry import default_models

    def strict_check() -> None:
        if args.strict and skipped:
            raise LabclipError(f"{skipped[0]} (--strict)")

    try:
        for loaded in load_models(args.models or default_models(args.langs), skipped, offline="error",
                                  device=args.device, precision=args.precision,
                                  default_for=args.precision_default_for):
            strict_check()
            records.append(model_record(loaded.model, loaded.requested, loaded.fallback_reason))
            _configure(loaded.model, args)
            yield loaded
        strict_check()
    except LabclipError as err:
        raise _name_demo_flag(err, "--models") from None


def cmd_compare(args) -> None:
    from .data import load_captions
    from .lab.compare import compare

    _check_out(args.out)
    captions = load_captions(args.captions, args.image_dir, args.langs)
    records: list[dict] = []
    skipped: list[str] = []
    with _quiet_loading():  # also the translators, which compare() loads itself
        table = compare(captions, args.langs, _compare_models(args, records, skipped),
                        None if args.translator == "none" else args.translator, args.top_k)
    if table.empty:
        raise LabclipError("no model could be loaded: " + "; ".join(skipped))
    not_compared = skipped + table.attrs["skipped"]
    for reason in not_compared:
        print(f"labclip: not compared: {reason}", file=sys.stderr)
    by_name = {r["requested"] if r["fallback_reason"] is None else DEMO_MODEL: r for r in records}
    columns = pd.DataFrame([row_provenance(by_name[name]) for name in table["model"]])
    _emit(table, args.out, records, inputs=[args.captions, *captions["path"]], columns=columns, n=table.attrs["n"],
          not_compared=not_compared)


def _p(p_value: float) -> str:
    return f"{p_value:.3g}"


def _load_source_model(args):
    from .model import load_model

    try:
        with _quiet_loading():
            return _configure(load_model(args.source_model, device=args.device, cache=not args.no_cache,
                                         precision=args.precision, default_for=args.precision_default_for), args)
    except LabclipError as err:
        raise _name_demo_flag(err) from None


def cmd_adapt_text(args) -> None:
    from .adapt import load_parallel_dataset, read_parallel
    from .lab.adapt import DIRECTIONS, run_text_adapter

    _check_out(args.out, (".safetensors",))
    _check_out(args.json, (".json",))
    if args.source_lang.lower() == args.target_lang.lower():
        raise LabclipError(f"--source-lang and --target-lang are both {args.source_lang!r}")
    parallel = None
    if args.parallel:
        parallel = read_parallel(args.parallel, args.source_lang, args.target_lang)
    elif args.dataset:
        parallel = load_parallel_dataset(args.dataset, args.source_lang, args.target_lang)
    model = _load(args)
    source_model = _load_source_model(args) if args.source_model else None
    run = run_text_adapter(model, args.captions or DEFAULT_CAPTIONS, args.source_lang, args.target_lang, image_dir=args.image_dir,
                           source_model=source_model, parallel=parallel, folds=args.folds, alpha=args.alpha,
                           seed=args.seed, batch_size=args.batch_size, requested_model=args.model)
    ev, src, tgt = run.evaluation, args.source_lang, args.target_lang
    via = f" ({src} captions through {args.source_model}'s text tower)" if args.source_model else ""
    print(f"text adapter {src}→{tgt} on {args.model}{via}: {ev.n} images, {len(ev.folds)} folds"
          f"{' (leave one out)' if args.folds == 'loo' else ''}; alpha per fold "
          f"{', '.join(f'{a:g}' for a in ev.alphas)}")
    rows = {(r["direction"], r["variant"]): r for r in ev.counts()}
    paired = {r["direction"]: r for r in ev.paired()}
    for direction in ("i2t", "t2i"):
        parts = [f"{name} {share(rows[(direction, v)]['hits'], rows[(direction, v)]['n'])}" for v, name in
                 (("before", f"{src} raw"), ("after", f"{src} adapted"), ("target", tgt)) if (direction, v) in rows]
        test = paired.get(direction)
        if test:
            parts.append(f"McNemar after vs before p = {_p(test['p_value'])} "
                         f"({test['only_after']} gained, {test['only_before']} lost)")
        print(f"{DIRECTIONS[direction]} top-1, held out: " + "; ".join(parts))
    for direction, hits in run.training.items():
        print(f"{DIRECTIONS[direction]} top-1 on the images it was fitted on (not a test): "
              f"{share(int(hits.sum()), len(hits))}")
    summary = ev.summary()
    before = summary["cosine_to_target_before"]
    print(f"cosine to the {tgt} caption, held out: "
          + (f"before {num(before)} → " if before is not None else "") + f"after {num(summary['cosine_to_target_after'])}")
    card = run.adapter.card
    print(f"final adapter: {card['pairs']} pairs, alpha {card['alpha']:g}"
          + (" (at the edge of the grid)" if card.get("alpha_at_grid_edge") else ""))
    path = run.adapter.save(args.out)
    print(f"labclip: wrote {path} and {path.with_suffix('.json')}; use it as --model '{args.model}{ADAPTER_MARK}{path}'",
          file=sys.stderr)
    if args.json:
        record = model_record(model, args.model)
        payload = {"provenance": {**run.provenance(), **_provenance([record])}, "held_out": summary,
                   "training": {d: {"hits": int(h.sum()), "n": len(h)} for d, h in run.training.items()},
                   "adapter": {"file": path.name, "card": public_card(card)}}
        _write({args.json: json.dumps(payload, indent=2, ensure_ascii=False, default=str)})
        print(f"labclip: wrote {args.json}", file=sys.stderr)


def cmd_adapt_fewshot(args) -> None:
    from .lab.adapt import run_few_shot

    _check_out(args.json, (".json",))
    model = _load(args)
    run = run_few_shot(model, args.labels or DEFAULT_LABELS, args.shots, folds=args.folds, seed=args.seed, templates=args.templates,
                       language=args.lang, batch_size=args.batch_size, requested_model=args.model)
    low, high = run.images_per_class()
    print(f"few-shot on {len(run.paths)} images of {len(run.classes)} classes ({low}–{high} per class), "
          f"{len(run.evaluation.folds)} folds; every image scored by classifiers that never saw it")
    tests = {(r["method"], r["shots"]): r for r in run.evaluation.paired()}
    for row in run.evaluation.counts():
        name = "zero-shot" if row["method"] == "zero-shot" else \
            f"{'linear probe' if row['method'] == 'probe' else 'Tip-Adapter'}, {_count(row['shots'], 'shot')}"
        line = f"{name}: top-1 {share(row['hits'], row['n'])}"
        test = tests.get((row["method"], row["shots"]))
        if test:
            line += f"; vs zero-shot p = {_p(test['p_value'])}"
            if row["shots_used"] < row["shots"]:
                line += f" (a class had only {row['shots_used']} training images)"
        print(line)
    if args.json:
        payload = {"provenance": {**run.provenance(), **_provenance([model_record(model, args.model)], run.paths)},
                   "top1": run.evaluation.counts(), "paired": run.evaluation.paired()}
        _write({args.json: json.dumps(payload, indent=2, ensure_ascii=False, default=str)})
        print(f"labclip: wrote {args.json}", file=sys.stderr)


def cmd_adapt(args) -> None:
    {"text": cmd_adapt_text, "fewshot": cmd_adapt_fewshot}[args.adapt_kind](args)


COMMANDS = {"adapt": cmd_adapt, "compare": cmd_compare, "match": cmd_match, "classify": cmd_classify, "tag": cmd_tag,
            "search": cmd_search, "eval": cmd_eval, "index": index_command.run,
            "calibrate": calibrate.run}


def report_parser() -> argparse.ArgumentParser:
    """The parser of ``labclip report``: the ``report`` subcommand of the one ``labclip`` parser."""
    (sub,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["report"]


def _report(args: argparse.Namespace) -> int:
    """``labclip report``: :func:`labclip.lab.report.run` with the parsed options."""
    try:
        from .lab.report import run

        with _console():
            return run(args)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in REPORT_EXTRA_MODULES:
            raise
        print(f"labclip: error: labclip report needs the report extra ({err.name} is not installed): "
              "pip install 'labclip[report]'", file=sys.stderr)
        return 2


def _language_hint(err: LabclipError, args) -> str:
    """For a file without the asked language: the option that picks one it has (``; try --lang es``)."""
    found = getattr(err, "found", None)
    flag = "--lang" if hasattr(args, "lang") else "--langs" if hasattr(args, "langs") else None
    if not found or flag is None:
        return ""
    return f"; try {flag} {' '.join(found)}" if flag == "--langs" else "; try " + " or ".join(f"--lang {f}" for f in found)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labclip`` command line; returns the exit status (0, 2 for a user error, 130 on Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.command == "report":
        return _report(args)
    try:
        with _console():
            COMMANDS[args.command](args)
    except LabclipError as err:
        print(f"labclip: error: {err}{_language_hint(err, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labclip: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
