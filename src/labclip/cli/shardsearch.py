"""``labclip search EMB "query"`` over embedding shards: the query encoded by the shards' own model, then exact
search or, where ``labclip index`` built a current one, the index (:mod:`labclip.index`; then only the
shards' names are read, the rows come memory-mapped from the index)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LabclipError
from ..index import INDEX_ABOVE, Shards, candidate_count, exact_search, index_card, load_index, read_shards
from .loading import identity


class DefaultModel(str):
    """``search``'s default ``--model``: for a folder of shards it stands aside for the shards' own model."""


def check_model(record: dict, shards: Shards) -> None:
    """The loaded model is the one that embedded ``shards`` (same shown id and revision), else one line."""
    if record["id"] != shards.model:
        raise LabclipError(f"{shards.folder}: embedded with {shards.model}, not {record['id']}; search it with "
                           f"--model {shards.model} (or leave --model out)")
    if str(record["revision"] or "") != shards.revision:
        raise LabclipError(f"{shards.folder}: embedded with {shards.model} at revision {shards.revision}, but the "
                           f"model loaded here is at revision {record['revision']}; embed the folder again")


def search_shards(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]
                  ) -> tuple[pd.DataFrame, dict, dict, list[Path]]:
    """Search ``args.folder`` (shards) for ``args.query``; ``load(args)`` loads the model named by ``args.model``
    (the shards' model when none is given).

    Returns:
        ``(table, model record, summary, shard files)``: the table has ``rank, image, cosine``.
    """
    exact = getattr(args, "exact", False) or index_card(args.folder) is None
    shards = read_shards(args.folder, vectors=exact)
    index = None if exact else load_index(shards)
    if index is None and len(shards.paths) > INDEX_ABOVE:
        print(f"labclip: note: {len(shards.paths)} rows searched exactly; labclip index {shards.folder} builds an "
              "index that answers faster", file=sys.stderr)
    if isinstance(args.model, DefaultModel) or not args.model:
        args.model = shards.model
    model = load(args)
    record = identity(model)
    check_model(record, shards)
    query = model.encode_texts([args.query])[0]
    if query.shape[0] != shards.dim:
        raise LabclipError(f"{shards.folder}: embeddings of dim {shards.dim}, the model's {query.shape[0]}")
    start = time.perf_counter()
    rows, cosines = (exact_search(shards.matrix, query, args.top_k) if index is None
                     else index.search(query, args.top_k))
    seconds = time.perf_counter() - start
    table = pd.DataFrame({"rank": range(1, len(rows) + 1), "image": [shards.paths[i] for i in rows],
                          "cosine": cosines.astype(float)})
    how = "exact" if index is None else (f"index: {candidate_count(index.candidates, args.top_k, len(index))} "
                                         "candidates ranked by exact cosine")
    print(f"labclip: {len(shards.paths)} rows, {how}, {seconds * 1000:.1f} ms", file=sys.stderr)
    summary = {"query": args.query, "search": how, "rows": len(shards.paths)}
    return table, record, summary, [shards.folder / name for name in shards.files]
