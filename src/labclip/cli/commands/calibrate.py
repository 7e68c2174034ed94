"""``labclip calibrate ROOT --flag LABEL``: the moderation threshold of ``labclip tag --watch --flag LABEL``.

On a labelled folder (``ROOT/<class>/*.jpg`` or a CSV of image,label, as ``labclip eval`` reads it) every image
is scored as ``tag`` scores it (zero-shot probability of ``LABEL`` among the labels), and each distinct score is
tried as the threshold: precision and recall of "flagged" (probability ≥ threshold) against "is LABEL", each with
its Wilson interval (:func:`labclip.stats.wilson_interval`). The chosen threshold is the lowest one whose precision
reaches ``--target-precision`` (so recall is as high as that precision allows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ...atomic import write_texts
from ...errors import LabclipError
from ...lab.provenance import model_columns
from ...stats import wilson_interval
from .. import inputs
from ..loading import identity, load
from ..options import Subparsers, add_command, label_options, model_options


def curve(scores: np.ndarray, positive: np.ndarray) -> pd.DataFrame:
    """Precision and recall of ``scores >= t`` against ``positive`` at every distinct score ``t``, with Wilson
    intervals; precision is undefined (NaN) where nothing is flagged, recall where there are no positives."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    rows = []
    for t in np.unique(scores):
        flagged = scores >= t
        tp, n_flagged, n_pos = int((flagged & positive).sum()), int(flagged.sum()), int(positive.sum())
        row = {"threshold": float(t), "flagged": n_flagged, "true_positives": tp, "positives": n_pos}
        for name, hits, n in (("flag_precision", tp, n_flagged), ("flag_recall", tp, n_pos)):
            low, high = wilson_interval(hits, n) if n else (np.nan, np.nan)
            row.update({name: hits / n if n else np.nan, f"{name}_low": low, f"{name}_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame, target: float) -> dict | None:
    """The lowest threshold whose precision reaches ``target`` (``None`` when none does)."""
    good = table[table["flag_precision"] >= target]
    return None if good.empty else good.iloc[0].to_dict()


def add_parser(subparsers: Subparsers) -> None:
    """``labclip calibrate`` with the shared label, template and model options."""
    p = add_command(subparsers, "calibrate", "choose the --flag threshold of tag --watch on a labelled folder",
                              "Score a labelled folder as tag does and report precision and recall "
                              "(Wilson intervals) of flagging LABEL at every threshold, and the threshold that "
                              "reaches the target precision.")
    p.add_argument("root", type=Path, help="ROOT/<class>/*.jpg folder, or a CSV with an image column and a label column")
    p.add_argument("--flag", required=True, metavar="LABEL", help="the label to flag, a class of ROOT (required, no default)")
    p.add_argument("--target-precision", type=float, default=0.95, metavar="P",
                   help="the precision the chosen threshold must reach")
    p.add_argument("--out", type=Path, metavar="FILE.csv", help="write the table (and FILE.summary.csv with the "
                   "chosen threshold) with the model that made them (default: print them)")
    model_options(p, "calibrate")
    label_options(p)


def _scores(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, dict, list[str]]:
    from ...zeroshot import class_embeddings, labelled_images, load_templates, probabilities

    if not 0 < args.target_precision <= 1:
        raise LabclipError(f"--target-precision must lie in (0, 1], got {args.target_precision}")
    if args.out is not None and args.out.suffix.lower() != ".csv":
        raise LabclipError(f"{args.out}: --out must end in .csv")
    templates = load_templates(args.templates, args.lang)
    data = labelled_images(args.root, args.lang)
    if args.flag not in data.classes:
        raise LabclipError(f"{args.root}: no class {args.flag!r} to flag; it has {', '.join(data.classes)}")
    labels = inputs.labels(args) if args.labels or args.labels_file else list(data.classes)
    if args.flag not in labels:
        raise LabclipError(f"--flag {args.flag!r} is not one of the labels")
    model = load(args)
    probs = probabilities(model, model.encode_images(data.paths), class_embeddings(model, labels, templates))
    positive = np.array([data.classes[t] == args.flag for t in data.truth])
    return probs[:, labels.index(args.flag)], positive, identity(model), labels


def run(args: argparse.Namespace) -> None:
    """Print or write the precision/recall table and the chosen threshold."""
    scores, positive, record, labels = _scores(args)
    table = curve(scores, positive)
    chosen = choose(table, args.target_precision)
    summary = {"flag": args.flag, "labels": ",".join(labels), "images": len(scores), "positives": int(positive.sum()),
               "target_precision": args.target_precision,
               "threshold": None if chosen is None else chosen["threshold"],
               **{k: None if chosen is None else chosen[k] for k in ("flag_precision", "flag_recall")},
               **model_columns(record)}
    said = (f"threshold {chosen['threshold']:.4f}: precision {chosen['flag_precision']:.3f} "
            f"[{chosen['flag_precision_low']:.3f}, {chosen['flag_precision_high']:.3f}], "
            f"recall {chosen['flag_recall']:.3f}"
            if chosen else f"no threshold reaches precision {args.target_precision}")
    if args.out is None:
        with pd.option_context("display.width", 200, "display.max_rows", None):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    else:
        rows = table.assign(**model_columns(record))
        summary_file = args.out.with_name(f"{args.out.stem}.summary.csv")
        items = {k: json.dumps(v) if v is None else v for k, v in summary.items()}
        try:
            write_texts({args.out: rows.to_csv(index=False), summary_file: pd.DataFrame(
                {"name": list(items), "value": list(items.values())}).to_csv(index=False)})
        except OSError as err:
            raise LabclipError(f"{args.out}: cannot write ({err.strerror}); nothing was written") from None
        print(f"labclip: wrote {args.out} and {summary_file}", file=sys.stderr)
    print(f"flag {args.flag!r} ({int(positive.sum())} of {len(scores)} images): {said}; "
          f"use tag --watch --flag {args.flag!r} --threshold T with the same labels and templates")
