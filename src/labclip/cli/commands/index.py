"""``labclip index EMB``: the search index beside a folder of embedding shards (:mod:`labclip.index`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...index import (
    CALIBRATION_RECALL,
    INDEX_ABOVE,
    INDEX_CARD,
    index_card,
    read_shards,
    stale_reasons,
    write_index,
)
from ..options import Subparsers, add_command


def add_parser(subparsers: Subparsers) -> None:
    """``labclip index EMB``: build the search index beside the shards."""
    p = add_command(subparsers, "index", "build the search index of a folder of embedding shards",
                    "Build a search index beside the Parquet shards of labclip embed, for labclip search on large "
                    "collections: 4-bit product-quantisation codes (faiss) pick candidates, which are ranked by "
                    "exact cosine; prints the calibrated candidate count and its recall@10 against exact search.")
    p.add_argument("folder", type=Path, metavar="EMB", help="folder of embedding shards (*.parquet)")
    p.add_argument("--force", action="store_true", help="rebuild even when the index is current (default: keep a current index)")


def run(args: argparse.Namespace) -> None:
    """Build (or keep, when current) the index of ``args.folder``; print its size, time and recall@10."""
    names = read_shards(args.folder, vectors=False)
    card = index_card(names.folder)
    if card is not None and not stale_reasons(card, names) and not args.force:
        print(f"labclip: {names.folder / INDEX_CARD} is current ({card['rows']} rows); --force rebuilds it",
              file=sys.stderr)
        return
    shards = read_shards(args.folder)
    if len(shards.paths) <= INDEX_ABOVE:
        print(f"labclip: note: {len(shards.paths)} rows; exact search is fast enough below {INDEX_ABOVE}, "
              "building the index anyway", file=sys.stderr)
    card = write_index(shards)
    size = sum(card["bytes"].values()) / 2**20
    print(f"labclip: wrote the index of {shards.folder}: {card['rows']} rows of dim {card['dim']} in "
          f"{card['build_seconds']:.1f} s, {size:.1f} MiB; {card['candidates']} candidates a query, recall@10 "
          f"against exact search {card['recall_at_10']:.3f} ({card['calibration_queries']} of its rows as "
          "queries)", file=sys.stderr)
    if card["recall_at_10"] < CALIBRATION_RECALL:
        print(f"labclip: note: recall@10 stays below {CALIBRATION_RECALL} at {card['candidates']} candidates; "
              "search with --exact where every result matters", file=sys.stderr)
