"""``labclip eval``: zero-shot accuracy on a labelled folder or CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inputs import check_out
from ..loading import identity, load
from ..options import Subparsers, add_command, result_options, template_options
from ..output import emit


def add_parser(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "eval", "zero-shot accuracy on a labelled folder", "Evaluate zero-shot "
                    "classification on ROOT/<class>/*.jpg (or a CSV of image,label): top-1 and top-k accuracy, "
                    "mean per-class recall, per-class accuracy.")
    p.add_argument("root", type=Path, help="ROOT/<class>/*.jpg folder, or a CSV with an image column and a label "
                   "column (or one label column per language, of which --lang picks one)")
    template_options(p)
    result_options(p, "eval", 5, "the k of the top-k accuracy", summary=True)


def run(args: argparse.Namespace) -> None:
    from ...lab.tables import per_class_accuracy
    from ...metrics import zeroshot_estimates, zeroshot_metrics
    from ...zeroshot import class_embeddings, labelled_images, load_templates, probabilities

    check_out(args.out)
    templates = load_templates(args.templates, args.lang)
    data = labelled_images(args.root, args.lang)
    model = load(args)
    probs = probabilities(model, model.encode_images(data.paths), class_embeddings(model, data.classes, templates))
    figures = {**zeroshot_metrics(probs, data.truth, k=args.top_k).to_dict(),
               **zeroshot_estimates(probs, data.truth, k=args.top_k)}
    table = per_class_accuracy(probs, data.truth, data.classes)
    emit(table, args.out, [identity(model)],
         {**figures, "templates": f"{args.templates} ({len(templates)}, {args.lang})"}, inputs=data.paths)
