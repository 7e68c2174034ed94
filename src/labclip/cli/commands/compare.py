"""``labclip compare``: models × caption languages × strategies on one caption set."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ...config import DEFAULT_CAPTIONS
from ...errors import LabclipError
from ...lab.provenance import row_provenance
from ...translate import DEFAULT_TRANSLATOR
from ..console import quiet_loading
from ..inputs import check_out
from ..loading import configure, identity, name_demo_flag
from ..options import Subparsers, add_command, image_dir_option, model_options, out_option, top_k
from ..output import emit

if TYPE_CHECKING:
    from ...lab.experiment import Loaded


def add_parser(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "compare", "models × languages × strategies table", "Compare models, caption "
                    "languages and strategies (raw, translated to English, multilingual) on one caption set: "
                    "top-1/top-k in both directions, mean correct similarity and margin, gap to English.")
    p.add_argument("captions", type=Path, nargs="?", default=DEFAULT_CAPTIONS,
                   help="caption file with one column per language (default: the bundled data/captions/default.csv)")
    p.add_argument("--langs", nargs="+", default=["en", "ru"], metavar="LANG", help="caption languages")
    image_dir_option(p)
    p.add_argument("--translator", default=DEFAULT_TRANSLATOR, help="translation model ('{lang}' is filled in); "
                   "'none' skips translate-then-CLIP")
    top_k(p, 3, "the k of the top-k accuracies")
    p.add_argument("--strict", action="store_true", help="fail when any model can't be loaded (default: compare "
                   "the others and name it as not compared)")
    model_options(p, "compare", several=True)
    out_option(p)


def _models(args: argparse.Namespace, records: list[dict], skipped: list[str]) -> Iterator[Loaded]:
    """``--models``, loaded one at a time as :func:`labclip.lab.compare.compare` asks for them, by the one
    fallback rule (:func:`labclip.lab.experiment.load_models`) with ``offline="error"``: a model that is not
    cached offline is an error before anything loads; one whose files fail to load is left out (with
    ``--strict``, an error). Each loaded model's record goes to ``records``."""
    from ...lab.experiment import load_models
    from ...registry import default_models

    def strict_check() -> None:
        if args.strict and skipped:
            raise LabclipError(f"{skipped[0]} (--strict)")

    try:
        for loaded in load_models(args.models or default_models(args.langs), skipped, offline="error",
                                  device=args.device, precision=args.precision,
                                  default_for=args.precision_default_for):
            strict_check()
            records.append(identity(loaded.model, loaded.requested, loaded.fallback_reason))
            configure(loaded.model, args)
            yield loaded
        strict_check()
    except LabclipError as err:
        raise name_demo_flag(err, "--models") from None


def run(args: argparse.Namespace) -> None:
    from ...data import load_captions
    from ...lab.compare import compare

    check_out(args.out)
    captions = load_captions(args.captions, args.image_dir, args.langs)
    records: list[dict] = []
    skipped: list[str] = []
    with quiet_loading():  # also the translators, which compare() loads itself
        result = compare(captions, args.langs, _models(args, records, skipped),
                         None if args.translator == "none" else args.translator, args.top_k)
    table = result.table
    if table.empty:
        raise LabclipError("no model could be loaded: " + "; ".join(skipped))
    not_compared = skipped + result.skipped
    for reason in not_compared:
        print(f"labclip: not compared: {reason}", file=sys.stderr)
    columns = pd.DataFrame([row_provenance(record) for record in result.records])
    emit(table, args.out, records, inputs=[args.captions, *captions.paths], columns=columns, n=result.n,
         not_compared=not_compared)
