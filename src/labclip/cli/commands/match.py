"""``labclip match``: paired-caption metrics and the top-k captions of each image."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...config import DEFAULT_CAPTIONS
from ..inputs import check_out
from ..loading import identity, load
from ..options import Subparsers, add_command, image_dir_option, result_options
from ..output import emit


def add_parser(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "match", "paired-caption metrics and top-k table", "Match each image with the "
                    "captions of one language of a caption file; caption i belongs to image i.")
    p.add_argument("captions", type=Path, nargs="?", default=DEFAULT_CAPTIONS,
                   help="caption file (.csv, .tsv, .xlsx, .jsonl): an image column and one column per language "
                   "(default: the bundled data/captions/default.csv)")
    p.add_argument("--lang", default="en", help="caption language (a column of the caption file)")
    image_dir_option(p)
    result_options(p, "match", 3, "captions listed per image, and the k of the top-k accuracies", summary=True)


def run(args: argparse.Namespace) -> None:
    from ...data import load_captions
    from ...lab.experiment import Experiment

    check_out(args.out)
    captions = load_captions(args.captions, args.image_dir, [args.lang])
    model = load(args)
    m = Experiment(model=model, captions=captions, top_k=args.top_k, batch_size=args.batch_size).matching(args.lang)
    emit(m.topk, args.out, [identity(model)], {**m.metrics.to_dict(), **m.estimates()},
         inputs=[args.captions, *captions.paths])
