"""Search over embedding shards (``labclip embed``'s Parquet files): exact by default, an ANN index for large ones.

A folder EMB of shards (every ``*.parquet`` in it) holds one row per image: ``path``, ``sha256``, ``model``,
``revision``, ``precision``, ``decode`` and ``embedding`` (L2-normalised float32). Exact search is one matrix
product over all rows. ``labclip index EMB`` builds a usearch HNSW graph beside the shards (``EMB/index.usearch``
and ``EMB/index.json``: the model, its revision and the SHA-256 of every shard it was built from); a search refuses
an index whose shards changed since, so a stale index is never used silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .atomic import write_atomic, write_text
from .errors import LabclipError

COLUMNS = ("path", "sha256", "model", "revision", "precision", "decode", "embedding")
INDEX_FILE, INDEX_CARD = "index.usearch", "index.json"
INDEX_FORMAT = 1
# Collections above this many rows are worth an index (exact search over 10^5 rows of 512 takes tens of ms).
INDEX_ABOVE = 100_000
# HNSW graph settings (benchmarks/bench_search.py measures them on random unit vectors of dim 512, the hardest
# case); the search width is the first of WIDTHS whose recall@10 on the collection's own rows reaches TARGET_RECALL.
CONNECTIVITY, EXPANSION_ADD = 32, 256
WIDTHS = (64, 128, 256, 512, 1024, 2048)
TARGET_RECALL = 0.95
NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Shards:
    """Every row of an embedding folder, in shard-name order then row order."""

    folder: Path
    paths: list[str]
    vectors: np.ndarray
    model: str
    revision: str
    files: dict[str, str]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The shards of ``folder``: every ``*.parquet`` directly in it, by name."""
    return sorted(p for p in Path(folder).glob("*.parquet") if p.is_file())


def is_embedding_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a folder of embedding shards (it holds at least one ``*.parquet``)."""
    return Path(folder).is_dir() and bool(shard_files(folder))


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_shard(path: Path) -> tuple[list[str], np.ndarray, set[tuple[str, str]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise LabclipError(f"{path}: not a readable Parquet shard ({type(err).__name__})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise LabclipError(f"{path}: not an embedding shard (no column {', '.join(missing)})")
    column = table.column("embedding").combine_chunks()
    if not pa.types.is_fixed_size_list(column.type) or not pa.types.is_float32(column.type.value_type):
        raise LabclipError(f"{path}: column embedding is {column.type}, expected fixed_size_list<float32>")
    if column.null_count:
        raise LabclipError(f"{path}: {column.null_count} rows have no embedding")
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), column.type.list_size)
    models = set(zip(table.column("model").to_pylist(), table.column("revision").to_pylist()))
    return table.column("path").to_pylist(), vectors, models


def read_shards(folder: str | os.PathLike) -> Shards:
    """Every row of the shards in ``folder``, checked: one model and revision, one dimension, unit vectors.

    Raises:
        LabclipError: no shards, an unreadable shard or one without the shared columns, several models or
            dimensions, or rows that are not L2-normalised; the message names the file.
    """
    folder = Path(folder)
    files = shard_files(folder)
    if not files:
        raise LabclipError(f"{folder}: no embedding shards (*.parquet); make them with labclip embed")
    paths: list[str] = []
    blocks: list[np.ndarray] = []
    models: set[tuple[str, str]] = set()
    for file in files:
        names, vectors, found = _read_shard(file)
        if blocks and vectors.shape[1] != blocks[0].shape[1]:
            raise LabclipError(f"{file}: embeddings of dim {vectors.shape[1]}, the shards before it {blocks[0].shape[1]}")
        norms = np.linalg.norm(vectors, axis=1)
        if len(norms) and np.abs(norms - 1).max() > NORM_TOLERANCE:
            row = int(np.abs(norms - 1).argmax())
            raise LabclipError(f"{file}: row {row} ({names[row]}) is not L2-normalised (norm {norms[row]:.4f})")
        paths += names
        blocks.append(vectors)
        models |= found
        if len(models) > 1:
            shown = "; ".join(f"{m} at {r}" for m, r in sorted(models))
            raise LabclipError(f"{file}: the shards hold embeddings of several models ({shown}); keep one per folder")
    if not paths:
        raise LabclipError(f"{folder}: the shards hold no rows")
    ((model, revision),) = models
    return Shards(folder, paths, np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32), model, revision,
                  {f.name: sha256_of(f) for f in files})


def exact_search(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` most similar to the unit vector ``query`` (one matrix product).

    Returns:
        ``(rows, cosines)``, best first; equal cosines in row order.
    """
    scores = vectors @ np.asarray(query, dtype=np.float32)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.lexsort((top, -scores[top]))]
    return top, scores[top]


def _card(shards: Shards, seconds: float, width: int, recall: float) -> dict:
    from usearch import __version__ as usearch_version

    return {"format": INDEX_FORMAT, "library": "usearch", "library_version": usearch_version,
            "metric": "ip", "connectivity": CONNECTIVITY, "expansion_add": EXPANSION_ADD,
            "expansion_search": width, "recall_at_10": round(recall, 4), "model": shards.model,
            "revision": shards.revision, "rows": len(shards.paths), "dim": shards.dim, "shards": shards.files,
            "build_seconds": round(seconds, 3)}


def build_index(shards: Shards, threads: int = 0):
    """A usearch HNSW graph over ``shards``' rows (key = row number), inner product on unit vectors."""
    from usearch.index import Index

    index = Index(ndim=shards.dim, metric="ip", dtype="f32", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD)
    index.add(np.arange(len(shards.paths), dtype=np.uint64), shards.vectors, threads=threads)
    return index


def set_width(index, width: int) -> None:
    """The search width (HNSW ``ef``) of a usearch index."""
    index.expansion_search = width  # type: ignore[misc]  # usearch declares the setter after the getter's name


def write_index(shards: Shards, threads: int = 0) -> dict:
    """Build the index of ``shards`` and store it beside them: the graph, then its card (each atomically).

    Returns:
        The card written to ``index.json``.
    """
    start = time.perf_counter()
    index = build_index(shards, threads)
    seconds = time.perf_counter() - start
    for width in WIDTHS:
        set_width(index, width)
        recall = measured_recall(shards, index)
        if recall >= TARGET_RECALL:
            break
    card = _card(shards, seconds, width, recall)
    (shards.folder / INDEX_CARD).unlink(missing_ok=True)  # no card while the graph is replaced: never a mismatch
    data = bytes(index.save())

    def write(f: IO) -> None:
        f.write(data)

    write_atomic(shards.folder / INDEX_FILE, write, binary=True)
    write_text(shards.folder / INDEX_CARD, json.dumps(card, indent=2) + "\n")
    return card


def index_card(folder: str | os.PathLike) -> dict | None:
    """The card of ``folder``'s index, or ``None`` when it has none."""
    card, graph = Path(folder) / INDEX_CARD, Path(folder) / INDEX_FILE
    if not card.is_file() or not graph.is_file():
        return None
    try:
        found = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LabclipError(f"{card}: unreadable index card; run labclip index {folder} again") from None
    return found if isinstance(found, dict) else None


def stale_reasons(card: dict, shards: Shards) -> list[str]:
    """Why an index built as ``card`` says does not fit ``shards`` (empty when it fits)."""
    reasons = []
    if card.get("format") != INDEX_FORMAT or card.get("library") != "usearch":
        reasons.append("it was written by another labclip version")
    if (card.get("model"), card.get("revision")) != (shards.model, shards.revision):
        reasons.append(f"it was built for {card.get('model')} at {card.get('revision')}")
    before = card.get("shards") or {}
    changed = sorted(n for n in set(before) | set(shards.files) if before.get(n) != shards.files.get(n))
    if changed:
        reasons.append(f"shard{'s' if len(changed) > 1 else ''} {', '.join(changed[:3])}"
                       f"{' ...' if len(changed) > 3 else ''} changed since it was built")
    return reasons


def load_index(shards: Shards):
    """The index stored beside ``shards`` if it was built from exactly these shards, else ``None`` if there is none.

    Raises:
        LabclipError: an index exists but is stale (the message says why and how to rebuild it).
    """
    card = index_card(shards.folder)
    if card is None:
        return None
    reasons = stale_reasons(card, shards)
    if reasons:
        raise LabclipError(f"{shards.folder / INDEX_FILE} is stale ({'; '.join(reasons)}); run labclip index "
                           f"{shards.folder} to rebuild it, or search with --exact")
    from usearch.index import Index

    index = Index.restore(str(shards.folder / INDEX_FILE), view=True)
    if index is None or len(index) != len(shards.paths):
        raise LabclipError(f"{shards.folder / INDEX_FILE}: unreadable index; run labclip index {shards.folder} again")
    set_width(index, int(card.get("expansion_search", WIDTHS[-1])))
    return index


def index_search(index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows by the index: ``(rows, cosines)``, best first."""
    found = index.search(np.asarray(query, dtype=np.float32), k)
    return np.asarray(found.keys, dtype=np.int64), (1.0 - np.asarray(found.distances, dtype=np.float64))


def recall_at(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    """Mean share of each row of ``truth`` (exact top-k rows per query) that ``found`` also lists."""
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / len(t) for f, t in zip(found, truth)]))


def measured_recall(shards: Shards, index, queries: int = 100, k: int = 10, seed: int = 0) -> float:
    """Recall@k of ``index`` against exact search for rows of the collection as queries, each left out of its
    own results (so the trivial hit on itself does not count)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(shards.paths) - 1)
    rows = rng.choice(len(shards.paths), size=min(queries, len(shards.paths)), replace=False)
    found, truth = [], []
    for r in rows:
        found.append([i for i in index_search(index, shards.vectors[r], k + 1)[0] if i != r][:k])
        truth.append([i for i in exact_search(shards.vectors, shards.vectors[r], k + 1)[0] if i != r][:k])
    return recall_at(found, truth)
