"""``labclip adapt text`` and ``labclip adapt fewshot``: adapters fitted on a CPU, scored on held-out images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...adapter import ADAPTER_MARK, public_card
from ...config import DEFAULT_CAPTIONS, DEFAULT_LABELS
from ...errors import LabclipError
from ...lab.provenance import output_provenance
from ...labels import num, share
from ..inputs import check_out, count
from ..loading import identity, load
from ..options import (
    Subparsers,
    add_command,
    folds_and_seed,
    image_dir_option,
    model_options,
    ridge_alpha,
    shot_counts,
    template_options,
)
from ..output import write_json

if TYPE_CHECKING:
    from ...lab.adapt import TextAdapterRun


def add_parser(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "adapt", "fit adapters and score them on held-out images (text, fewshot)",
                    "Adapters that fit on a CPU in seconds, scored only on images they were not fitted on.")
    kinds = p.add_subparsers(dest="adapt_kind", required=True, metavar="KIND")
    _text_parser(kinds)
    f = add_command(kinds, "fewshot", "linear probe and Tip-Adapter over shots against zero-shot",
                    "k-shot linear probe and Tip-Adapter on labelled images against zero-shot, every image scored "
                    "out of fold, with 95% Wilson intervals and exact McNemar tests.")
    f.add_argument("--labels", type=Path, metavar="PATH", help="ROOT/<class>/*.jpg folder, or a CSV with an image "
                   "column and a label (or language) column (default: labclip's data/labels.csv)")
    f.add_argument("--shots", type=shot_counts, default=[1, 2, 4, 8, 16], metavar="K,K,...",
                   help="training images per class")
    folds_and_seed(f, "shuffles the folds and draws the shots")
    template_options(f)
    model_options(f, "adapt")
    f.add_argument("--json", "--out", dest="json", type=Path, metavar="FILE.json",
                   help="write the results with their provenance (default: print only)")


def _text_parser(kinds: Subparsers) -> None:
    t = add_command(kinds, "text", "a linear text adapter, e.g. Russian captions onto English ones",
                    "Fit a ridge-regularised linear map from the model's embeddings of --source-lang captions to its "
                    "embeddings of their --target-lang counterparts. Prints held-out top-1 before and after (k-fold "
                    "or leave-one-out over the caption set's images, alpha chosen inside each training fold), then "
                    "fits on every pair and saves the adapter (safetensors + JSON card with the held-out scores). "
                    "Use it as --model 'MODEL+adapter:FILE'.")
    t.add_argument("--captions", type=Path, metavar="FILE", help="caption set with both language columns: pairs "
                   "to fit on and the images to score on (default: labclip's data/captions/default.csv)")
    image_dir_option(t)
    extra = t.add_mutually_exclusive_group()
    extra.add_argument("--parallel", type=Path, metavar="FILE", help="more sentence pairs to fit on: a CSV/TSV/"
                       "JSON Lines table with a column per language (default: none)")
    extra.add_argument("--dataset", metavar="NAME", help="more pairs from a Hugging Face dataset of parallel "
                       "captions, cached after the first download (default: none)")
    t.add_argument("--source-lang", default="ru", metavar="LANG", help="language of the captions to adapt")
    t.add_argument("--target-lang", default="en", metavar="LANG", help="language they are mapped onto")
    t.add_argument("--source-model", metavar="MODEL", help="encode the source captions with this model "
                   "instead (e.g. a multilingual text encoder; default: --model)")
    t.add_argument("--alpha", type=ridge_alpha, metavar="A",
                   help="ridge penalty (default: chosen by cross-validation inside the training images)")
    folds_and_seed(t, "shuffles the folds")
    model_options(t, "adapt")
    t.add_argument("--out", type=Path, required=True, metavar="FILE.safetensors",
                   help="the adapter; its JSON card is written beside it (required, no default)")
    t.add_argument("--json", type=Path, metavar="FILE.json", help="also write the results with their "
                   "provenance (default: print only)")


def run(args: argparse.Namespace) -> None:
    {"text": run_text, "fewshot": run_fewshot}[args.adapt_kind](args)


def _p(p_value: float) -> str:
    return f"{p_value:.3g}"


def run_text(args: argparse.Namespace) -> None:
    """Fit and score a text adapter, print its held-out figures, save it (and ``--json``)."""
    from ...adapt import load_parallel_dataset, read_parallel
    from ...lab.adapt import run_text_adapter

    check_out(args.out, (".safetensors",))
    check_out(args.json, (".json",))
    if args.source_lang.lower() == args.target_lang.lower():
        raise LabclipError(f"--source-lang and --target-lang are both {args.source_lang!r}")
    parallel = None
    if args.parallel:
        parallel = read_parallel(args.parallel, args.source_lang, args.target_lang)
    elif args.dataset:
        parallel = load_parallel_dataset(args.dataset, args.source_lang, args.target_lang)
    model = load(args)
    source_model = load(args, args.source_model) if args.source_model else None
    run = run_text_adapter(model, args.captions or DEFAULT_CAPTIONS, args.source_lang, args.target_lang,
                           image_dir=args.image_dir, source_model=source_model, parallel=parallel, folds=args.folds,
                           alpha=args.alpha, seed=args.seed, batch_size=args.batch_size, requested_model=args.model)
    _print_text_run(run, args)
    card = run.adapter.card
    print(f"final adapter: {card['pairs']} pairs, alpha {card['alpha']:g}"
          + (" (at the edge of the grid)" if card.get("alpha_at_grid_edge") else ""))
    path = run.adapter.save(args.out)
    print(f"labclip: wrote {path} and {path.with_suffix('.json')}; use it as --model '{args.model}{ADAPTER_MARK}{path}'",
          file=sys.stderr)
    if args.json:
        payload = {"provenance": {**run.provenance(), **output_provenance([identity(model, args.model)])},
                   "held_out": run.evaluation.summary(),
                   "training": {d: {"hits": int(h.sum()), "n": len(h)} for d, h in run.training.items()},
                   "adapter": {"file": path.name, "card": public_card(card)}}
        write_json(args.json, payload)


def _print_text_run(run: TextAdapterRun, args: argparse.Namespace) -> None:
    """Held-out top-1 before and after in both directions, the fitted images' top-1, the cosine to the target."""
    from ...lab.adapt import DIRECTIONS

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


def run_fewshot(args: argparse.Namespace) -> None:
    """Score the linear probe and Tip-Adapter over shots against zero-shot, print them (and ``--json``)."""
    from ...lab.adapt import run_few_shot

    check_out(args.json, (".json",))
    model = load(args)
    run = run_few_shot(model, args.labels or DEFAULT_LABELS, args.shots, folds=args.folds, seed=args.seed,
                       templates=args.templates, language=args.lang, batch_size=args.batch_size,
                       requested_model=args.model)
    low, high = run.images_per_class()
    print(f"few-shot on {len(run.paths)} images of {len(run.classes)} classes ({low}–{high} per class), "
          f"{len(run.evaluation.folds)} folds; every image scored by classifiers that never saw it")
    tests = {(r["method"], r["shots"]): r for r in run.evaluation.paired()}
    for row in run.evaluation.counts():
        name = "zero-shot" if row["method"] == "zero-shot" else \
            f"{'linear probe' if row['method'] == 'probe' else 'Tip-Adapter'}, {count(row['shots'], 'shot')}"
        line = f"{name}: top-1 {share(row['hits'], row['n'])}"
        test = tests.get((row["method"], row["shots"]))
        if test:
            line += f"; vs zero-shot p = {_p(test['p_value'])}"
            if row["shots_used"] < row["shots"]:
                line += f" (a class had only {row['shots_used']} training images)"
        print(line)
    if args.json:
        write_json(args.json, {
            "provenance": {**run.provenance(), **output_provenance([identity(model, args.model)], run.paths)},
            "top1": run.evaluation.counts(), "paired": run.evaluation.paired()})
