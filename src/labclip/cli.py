"""The ``labclip`` command: match, classify, tag, search, eval, report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .atomic import write_text
from .config import DEFAULT_MODEL
from .errors import LabclipError
from .images import IMAGE_SUFFIXES
from .precision import PRECISIONS
from .translate import DEFAULT_TRANSLATOR


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id, alias, local directory or 'demo' (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 where the hardware runs it faster, else fp32 (default auto)")
    p.add_argument("--batch-size", type=int, help="items per forward pass (default: the model's)")
    p.add_argument("--no-cache", action="store_true", help="do not use the embedding cache")


def _out_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="write the table to a .csv or .json file instead of stdout")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labclip", description="CLIP image-text matching, zero-shot classification "
                                     "and lab reports.")
    parser.add_argument("--version", action="version", version=f"labclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("match", help="paired-caption metrics and top-k table", description="Match each image with "
                       "the captions of one language of a caption file; caption i belongs to image i.")
    p.add_argument("captions", type=Path)
    p.add_argument("--lang", default="en")
    p.add_argument("--image-dir", type=Path)
    p.add_argument("--top-k", type=int, default=3)
    _model_options(p)
    _out_option(p)

    p = sub.add_parser("classify", help="zero-shot labels of images", description="Zero-shot classification: "
                       "the most probable labels of each image.")
    p.add_argument("images", nargs="+", type=Path)
    _label_options(p)
    p.add_argument("--top-k", type=int, default=5)
    _model_options(p)
    _out_option(p)

    p = sub.add_parser("tag", help="tag every image of a folder (resumable)", description="Write the top-k labels "
                       "of every image in a folder to a CSV; files already in it are skipped on a rerun.")
    p.add_argument("folder", type=Path)
    _label_options(p)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--out", type=Path, required=True, help="the tags CSV (read on rerun, rewritten atomically)")
    _model_options(p)

    p = sub.add_parser("search", help="find images in a folder by text", description="Rank a folder's images "
                       "by similarity to a text query.")
    p.add_argument("folder", type=Path)
    p.add_argument("query")
    p.add_argument("--top", type=int, default=5)
    _model_options(p)
    _out_option(p)

    p = sub.add_parser("eval", help="zero-shot accuracy on a labelled folder", description="Evaluate zero-shot "
                       "classification on ROOT/<class>/*.jpg (or a CSV of image,label): acc1, acc5, "
                       "mean per-class recall, per-class accuracy.")
    p.add_argument("root", type=Path)
    p.add_argument("--templates", default="imagenet7", help="template set (default imagenet7)")
    p.add_argument("--lang", default="en", help="template language (default en)")
    _model_options(p)
    _out_option(p)

    p = sub.add_parser("compare", help="models × languages × strategies table", description="Compare models, "
                       "caption languages and strategies (raw, translated to English, multilingual) on one caption "
                       "set: top-1/top-k in both directions, mean correct similarity and margin, gap to English.")
    p.add_argument("captions", type=Path)
    p.add_argument("--langs", nargs="+", default=["en", "ru"])
    p.add_argument("--models", nargs="+", default=[DEFAULT_MODEL],
                   help="models; a multilingual text encoder may be paired with a CLIP model as TEXT+IMAGE")
    p.add_argument("--translator", default=DEFAULT_TRANSLATOR, help="translation model ('{lang}' is filled in); "
                   "'none' to skip translate-then-CLIP")
    p.add_argument("--image-dir", type=Path)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--strict", action="store_true", help="fail instead of using the demo model for the first model")
    _out_option(p)

    p = sub.add_parser("report", help="run the notebooks and render HTML + PDF", add_help=False,
                       description="Same as python -m labclip.report; see labclip report --help.")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", help="comma-separated labels, e.g. 'cat,dog,car'")
    p.add_argument("--labels-file", type=Path, help="one label per line")
    p.add_argument("--templates", default="imagenet7", help="template set: imagenet80, imagenet7, cifar, single")
    p.add_argument("--lang", default="en", help="template language (default en)")


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


def _load(args):
    from .model import load_model

    model = load_model(args.model, device=args.device, cache=not args.no_cache, precision=args.precision)
    if model.untrained:
        print(f"labclip: note: '{args.model}' is an untrained model; its results mean nothing", file=sys.stderr)
    return model


def _check_out(out: Path | None) -> None:
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise LabclipError(f"{out}: --out must end in .csv or .json")


def _emit(table: pd.DataFrame, out: Path | None, extra: dict | None = None) -> None:
    if out is None:
        if extra:
            for key, value in extra.items():
                print(f"{key}: {value}")
            print()
        with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.max_rows", None):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        return
    _check_out(out)
    if out.suffix.lower() == ".json":
        text = json.dumps({**(extra or {}), "rows": table.to_dict("records")}, indent=2, ensure_ascii=False,
                          default=str)
    else:
        text = table.to_csv(index=False)
    write_text(out, text)
    print(f"labclip: wrote {out}", file=sys.stderr)


def cmd_match(args) -> None:
    from .data import load_captions
    from .experiment import Experiment

    _check_out(args.out)
    captions = load_captions(args.captions, args.image_dir, [args.lang])
    exp = Experiment(_load(args), captions, args.top_k, args.batch_size)
    m = exp.matching(args.lang)
    _emit(m.topk, args.out, {k: v for k, v in m.metrics.items()})


def cmd_classify(args) -> None:
    from .zeroshot import class_embeddings, load_templates, probabilities, top_labels

    labels, templates = _labels(args), load_templates(args.templates, args.lang)
    model = _load(args)
    probs = probabilities(model, model.encode_images(args.images, args.batch_size),
                          class_embeddings(model, labels, templates))
    _emit(top_labels(probs, labels, [str(p) for p in args.images], args.top_k), args.out)


def cmd_tag(args) -> None:
    from .zeroshot import class_embeddings, load_templates, probabilities, top_labels

    if args.out.suffix.lower() != ".csv":
        raise LabclipError(f"{args.out}: tags are written as CSV; use a .csv file name")
    labels, templates = _labels(args), load_templates(args.templates, args.lang)
    images = _folder_images(args.folder)
    done = pd.DataFrame(columns=["image", "rank", "label", "probability"])
    if args.out.is_file():
        try:
            done = pd.read_csv(args.out, dtype={"image": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise LabclipError(f"{args.out}: existing tags file is unreadable ({type(err).__name__}); "
                               "move it away to start again") from None
    finished = set(done["image"]) if "image" in done else set()
    todo = [p for p in images if str(p.relative_to(args.folder)) not in finished]
    print(f"labclip: {len(images) - len(todo)} of {len(images)} images already tagged in {args.out}", file=sys.stderr)
    if todo:
        model = _load(args)
        probs = probabilities(model, model.encode_images(todo, args.batch_size),
                              class_embeddings(model, labels, templates))
        new = top_labels(probs, labels, [str(p.relative_to(args.folder)) for p in todo], args.top_k)
        done = pd.concat([done, new], ignore_index=True) if len(done) else new
        write_text(args.out, done.to_csv(index=False))
    print(f"labclip: tagged {len(todo)} new images; {args.out} lists {done['image'].nunique()} images",
          file=sys.stderr)


def cmd_search(args) -> None:
    images = _folder_images(args.folder)
    model = _load(args)
    scores = model.encode_images(images, args.batch_size) @ model.encode_texts([args.query])[0]
    order = np.argsort(-scores, kind="stable")[: args.top]
    table = pd.DataFrame({"rank": range(1, len(order) + 1), "image": [str(images[i]) for i in order],
                          "cosine": scores[order].astype(float)})
    _emit(table, args.out)


def cmd_eval(args) -> None:
    from .zeroshot import (
        class_embeddings,
        labelled_images,
        load_templates,
        per_class_accuracy,
        probabilities,
        zeroshot_metrics,
    )

    templates = load_templates(args.templates, args.lang)
    data = labelled_images(args.root)
    model = _load(args)
    probs = probabilities(model, model.encode_images(data.paths, args.batch_size),
                          class_embeddings(model, data.classes, templates))
    metrics = zeroshot_metrics(probs, data.truth, k=5)
    _emit(per_class_accuracy(probs, data.truth, data.classes), args.out,
          {"templates": f"{args.templates} ({len(templates)}, {args.lang})", **metrics})


def cmd_compare(args) -> None:
    from .compare import compare
    from .data import load_captions

    _check_out(args.out)
    captions = load_captions(args.captions, args.image_dir, args.langs)
    table = compare(captions, args.langs, args.models, None if args.translator == "none" else args.translator,
                    args.top_k, strict=args.strict)
    for reason in table.attrs["skipped"]:
        print(f"labclip: not compared: {reason}", file=sys.stderr)
    if table.empty:
        raise LabclipError("no model could be loaded")
    _emit(table, args.out)


COMMANDS = {"compare": cmd_compare, "match": cmd_match, "classify": cmd_classify, "tag": cmd_tag, "search": cmd_search, "eval": cmd_eval}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        from .report import main as report_main

        return report_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except LabclipError as err:
        print(f"labclip: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labclip: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
