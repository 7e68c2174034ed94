"""``labclip index EMB``: the ANN index beside a folder of embedding shards (:mod:`labclip.index`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...index import INDEX_ABOVE, INDEX_FILE, index_card, read_shards, stale_reasons, write_index
from ..options import Subparsers, add_command


def add_parser(subparsers: Subparsers) -> None:
    """``labclip index EMB``: build the ANN index beside the shards."""
    p = add_command(subparsers, "index", "build the search index of a folder of embedding shards",
                    "Build an approximate nearest-neighbour index (usearch HNSW) beside the Parquet shards of labclip "
                    "embed, for labclip search on large collections; prints its recall@10 against exact search.")
    p.add_argument("folder", type=Path, metavar="EMB", help="folder of embedding shards (*.parquet)")
    p.add_argument("--force", action="store_true", help="rebuild even when the index is current (default: keep a current index)")


def run(args: argparse.Namespace) -> None:
    """Build (or keep, when current) the index of ``args.folder``; print its size, time and recall@10."""
    shards = read_shards(args.folder)
    card = index_card(shards.folder)
    if card is not None and not stale_reasons(card, shards) and not args.force:
        print(f"labclip: {shards.folder / INDEX_FILE} is current ({card['rows']} rows); --force rebuilds it",
              file=sys.stderr)
        return
    if len(shards.paths) <= INDEX_ABOVE:
        print(f"labclip: note: {len(shards.paths)} rows; exact search is fast enough below {INDEX_ABOVE}, "
              "building the index anyway", file=sys.stderr)
    card = write_index(shards)
    print(f"labclip: wrote {shards.folder / INDEX_FILE}: {card['rows']} rows of dim {card['dim']} in "
          f"{card['build_seconds']:.1f} s; search width {card['expansion_search']}: recall@10 against exact search "
          f"{card['recall_at_10']:.3f} (100 of its rows as queries)", file=sys.stderr)
