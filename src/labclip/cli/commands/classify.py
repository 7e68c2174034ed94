"""``labclip classify``: the most probable labels of each image, zero-shot."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...config import shown_names
from ..inputs import check_files, check_out, given_images, labels
from ..loading import identity, load
from ..options import Subparsers, add_command, label_options, result_options
from ..output import emit


def add_parser(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "classify", "zero-shot labels of images", "Zero-shot classification: the most "
                    "probable labels of each image.")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                   help="image files, or folders whose images are all classified (searched recursively, as tag "
                   "and search do)")
    label_options(p)
    result_options(p, "classify", 5, "labels listed per image")


def run(args: argparse.Namespace) -> None:
    from ...lab.tables import top_labels
    from ...zeroshot import class_embeddings, load_templates, probabilities

    check_out(args.out)
    images = given_images(args.images)
    check_files(images)
    names, templates = labels(args), load_templates(args.templates, args.lang)
    model = load(args)
    probs = probabilities(model, model.encode_images(images), class_embeddings(model, names, templates))
    emit(top_labels(probs, names, shown_names(images), args.top_k), args.out, [identity(model)], inputs=images)
