"""Search over embedding shards (``labclip embed``'s Parquet files): exact by default, an index for large ones.

A folder EMB of shards (every ``*.parquet`` in it) holds one row per image: ``path``, ``sha256``, ``model``,
``revision``, ``precision``, ``decode`` and ``embedding`` (L2-normalised float32). Exact search is one matrix
product over all rows.

``labclip index EMB`` stores, beside the shards, an index that is exact in its final ranking: a coarse pass
over every row with 4-bit product-quantisation codes (faiss ``IndexPQFastScan``, two dimensions per code, a
SIMD table-lookup scan of 128 bytes a row at dim 512) takes the few thousand best candidates, which are then
ranked by their exact float32 cosines, read from a memory-mapped copy of the rows (``index.vectors.npy``).
The candidate count is calibrated at build time: the smallest of ``CANDIDATE_LADDER`` whose recall@10 against
exact search, on rows of the collection as queries (each left out of its own results), reaches
``CALIBRATION_RECALL``; it grows with the number of results asked for (:func:`candidate_count`).
``benchmarks/bench_search.py`` chose this design over graph indexes (HNSW: on random 512-d vectors it missed
recall 0.95 at widths that answer in time, and took minutes to build) and over usearch's exact binary or int8
scans (too slow at 10^6 rows on one core). ``index.json`` records the model, its revision and the SHA-256 of
every shard the index was built from; a search refuses an index whose shards changed since.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .atomic import write_atomic, write_text
from .errors import LabclipError

COLUMNS = ("path", "sha256", "model", "revision", "precision", "decode", "embedding")
INDEX_FILE, VECTORS_FILE, INDEX_CARD = "index.faiss", "index.vectors.npy", "index.json"
LEGACY_FILES = ("index.usearch",)
INDEX_FORMAT = 2
# Collections above this many rows are worth an index (exact search over 10^5 rows of 512 takes tens of ms).
INDEX_ABOVE = 100_000
NBITS, DIMS_PER_CODE, TRAIN_ROWS = 4, 2, 65_536
CANDIDATE_LADDER = (1024, 2048, 4096, 8192, 16384, 32768)
CALIBRATION_RECALL, CALIBRATION_QUERIES, RECALL_K = 0.99, 200, 10
NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Shards:
    """Every row of an embedding folder, in shard-name order then row order (``vectors`` is ``None`` when only
    the rows' names were read)."""

    folder: Path
    paths: list[str]
    model: str
    revision: str
    files: dict[str, str]
    dim: int
    vectors: np.ndarray | None = None

    @property
    def matrix(self) -> np.ndarray:
        """The rows' embeddings (read with ``vectors=True``)."""
        if self.vectors is None:
            raise ValueError("the shards were read without their embeddings")
        return self.vectors


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


def _read_shard(path: Path, vectors: bool) -> tuple[list[str], np.ndarray | int, set[tuple[str, str]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        missing = [c for c in COLUMNS if c not in schema.names]
        if missing:
            raise LabclipError(f"{path}: not an embedding shard (no column {', '.join(missing)})")
        kind = schema.field("embedding").type
        if not pa.types.is_fixed_size_list(kind) or not pa.types.is_float32(kind.value_type):
            raise LabclipError(f"{path}: column embedding is {kind}, expected fixed_size_list<float32>")
        table = pq.read_table(path, columns=list(COLUMNS[:4]) + (["embedding"] if vectors else []))
    except (OSError, pa.ArrowException) as err:
        raise LabclipError(f"{path}: not a readable Parquet shard ({type(err).__name__})") from None
    models = set(zip(table.column("model").to_pylist(), table.column("revision").to_pylist()))
    if not vectors:
        return table.column("path").to_pylist(), kind.list_size, models
    column = table.column("embedding").combine_chunks()
    if column.null_count:
        raise LabclipError(f"{path}: {column.null_count} rows have no embedding")
    matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), kind.list_size)
    return table.column("path").to_pylist(), matrix, models


def _check_norms(file: Path, names: list[str], vectors: np.ndarray) -> None:
    norms = np.linalg.norm(vectors, axis=1)
    if len(norms) and np.abs(norms - 1).max() > NORM_TOLERANCE:
        row = int(np.abs(norms - 1).argmax())
        raise LabclipError(f"{file}: row {row} ({names[row]}) is not L2-normalised (norm {norms[row]:.4f})")


def read_shards(folder: str | os.PathLike, vectors: bool = True) -> Shards:
    """Every row of the shards in ``folder``, checked: one model and revision, one dimension, unit vectors
    (``vectors=False``: the names, model and dimension only, for a search through a current index).

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
    dims: set[int] = set()
    models: set[tuple[str, str]] = set()
    for file in files:
        names, found, pairs = _read_shard(file, vectors)
        dim = found if isinstance(found, int) else int(found.shape[1])
        if dims and dim not in dims:
            raise LabclipError(f"{file}: embeddings of dim {dim}, the shards before it {dims.pop()}")
        if not isinstance(found, int):
            _check_norms(file, names, found)
            blocks.append(found)
        dims.add(dim)
        paths += names
        models |= pairs
        if len(models) > 1:
            shown = "; ".join(f"{m} at {r}" for m, r in sorted(models))
            raise LabclipError(f"{file}: the shards hold embeddings of several models ({shown}); keep one per folder")
    if not paths:
        raise LabclipError(f"{folder}: the shards hold no rows")
    ((model, revision),) = models
    matrix = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32) if vectors else None
    return Shards(folder, paths, model, revision, {f.name: sha256_of(f) for f in files}, dims.pop(), matrix)


def exact_search(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` most similar to the unit vector ``query`` (one matrix product).

    Returns:
        ``(rows, cosines)``, best first; equal cosines in row order.
    """
    return top_k(vectors @ np.asarray(query, dtype=np.float32), k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the ``k`` highest ``scores`` and those scores, best first; equal scores in position order."""
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.lexsort((top, -scores[top]))]
    return top, scores[top]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise LabclipError("labclip index needs faiss-cpu: pip install 'labclip[index]'") from None
    # One thread: a query is one scan, and on a busy machine OpenMP's spinning workers made the k-means of a
    # build 20 times slower (bench_search measured it on 2 shared CPUs).
    faiss.omp_set_num_threads(1)
    return faiss


def candidate_count(calibrated: int, k: int, rows: int) -> int:
    """Candidates the coarse pass hands to exact rescoring for the top ``k``: the count calibrated for the top
    10, once more for every further 10 asked for, never more than the collection's ``rows``."""
    return min(rows, calibrated * max(1, math.ceil(k / RECALL_K)))


def build_coarse(vectors: np.ndarray, seed: int = 0) -> Any:
    """The coarse pass over ``vectors``: faiss 4-bit PQ fast-scan codes, inner product, two dimensions a code
    (one where the dimension is odd), trained on at most ``TRAIN_ROWS`` rows drawn with ``seed``."""
    faiss = _faiss()
    n, dim = vectors.shape
    index = faiss.IndexPQFastScan(dim, dim // DIMS_PER_CODE if dim % DIMS_PER_CODE == 0 else dim, NBITS,
                                  faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.min_points_per_centroid = 1  # small collections train on what they have, without a warning
    sample = vectors if n <= TRAIN_ROWS else vectors[np.sort(np.random.default_rng(seed).choice(n, TRAIN_ROWS, replace=False))]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.add(vectors)
    return index


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
                     block: int = 64) -> np.ndarray:
    """For each of ``queries``, the ``k`` rows of ``vectors`` with the highest cosine (any order), leaving out
    row ``exclude[i]`` for query ``i`` where ``exclude`` is given."""
    truth = []
    for start in range(0, len(queries), block):
        scores = vectors @ np.asarray(queries[start:start + block], dtype=np.float32).T
        if exclude is not None:
            scores[exclude[start:start + block], np.arange(scores.shape[1])] = -np.inf
        truth.append(np.argpartition(-scores, k - 1, axis=0)[:k].T)
    return np.concatenate(truth)


def calibrate(vectors: np.ndarray, coarse: Any, ladder: Sequence[int], queries: int = CALIBRATION_QUERIES,
              seed: int = 0) -> dict[int, float]:
    """Recall@10 of coarse pass + exact rescoring at each candidate count of ``ladder`` (those below the row
    count), with ``queries`` rows of the collection as queries, each left out of its own results."""
    n = len(vectors)
    counts = [c for c in ladder if c < n]
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False))
    k = min(RECALL_K, n - 1)
    truth = exact_neighbours(vectors, vectors[rows], k, exclude=rows)
    _, found = coarse.search(np.ascontiguousarray(vectors[rows]), max(counts) + 1)
    ranks = []
    for row, listed, true in zip(rows, found, truth):
        listed = listed[(listed != row) & (listed >= 0)]
        match = listed[None, :] == true[:, None]
        ranks.append(np.where(match.any(axis=1), match.argmax(axis=1), n))
    every = np.concatenate(ranks)
    return {c: float(np.mean(every < c)) for c in counts}


def _choose(curve: dict[int, float], rows: int) -> tuple[int, float]:
    """The smallest calibrated count that reaches ``CALIBRATION_RECALL`` (else the largest): (count, recall)."""
    if not curve:
        return rows, 1.0
    good = [c for c, r in curve.items() if r >= CALIBRATION_RECALL]
    count = min(good) if good else max(curve)
    return count, curve[count]


def _card(shards: Shards, coarse: Any, seconds: float, curve: dict[int, float]) -> dict:
    faiss = _faiss()
    candidates, recall = _choose(curve, len(shards.paths))
    folder = shards.folder
    sizes = {name: (folder / name).stat().st_size for name in (INDEX_FILE, VECTORS_FILE) if (folder / name).is_file()}
    return {"format": INDEX_FORMAT, "library": "faiss-cpu", "library_version": faiss.__version__,
            "coarse": None if coarse is None else f"IndexPQFastScan, {coarse.pq.M} codes of {NBITS} bits", "rescoring": "exact float32 cosine", "metric": "ip", "candidates": candidates,
            "recall_at_10": round(recall, 4), "calibration": {str(c): round(r, 4) for c, r in curve.items()},
            "calibration_queries": min(CALIBRATION_QUERIES, len(shards.paths)), "model": shards.model,
            "revision": shards.revision, "rows": len(shards.paths), "dim": shards.dim, "shards": shards.files,
            "bytes": sizes, "build_seconds": round(seconds, 3)}


def write_index(shards: Shards, ladder: Sequence[int] = CANDIDATE_LADDER) -> dict:
    """Build the index of ``shards`` and store it beside them: the float32 rows, the coarse codes (where the
    collection is larger than the smallest candidate count), then the card, each atomically.

    Returns:
        The card written to ``index.json``.
    """
    vectors, folder = shards.matrix, shards.folder
    start = time.perf_counter()
    coarse = build_coarse(vectors) if len(vectors) > min(ladder) else None
    curve = calibrate(vectors, coarse, ladder) if coarse is not None else {}
    seconds = time.perf_counter() - start
    (folder / INDEX_CARD).unlink(missing_ok=True)  # no card while the files are replaced: never a mismatch
    for name in LEGACY_FILES + (INDEX_FILE,):
        (folder / name).unlink(missing_ok=True)
    write_atomic(folder / VECTORS_FILE, lambda f: np.save(f, vectors, allow_pickle=False), binary=True)
    if coarse is not None:
        data = _faiss().serialize_index(coarse)

        def write(f: IO) -> None:
            f.write(data.tobytes())

        write_atomic(folder / INDEX_FILE, write, binary=True)
    card = _card(shards, coarse, seconds, curve)
    write_text(folder / INDEX_CARD, json.dumps(card, indent=2) + "\n")
    return card


def index_card(folder: str | os.PathLike) -> dict | None:
    """The card of ``folder``'s index, or ``None`` when it has none."""
    card = Path(folder) / INDEX_CARD
    if not card.is_file():
        return None
    try:
        found = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LabclipError(f"{card}: unreadable index card; run labclip index {folder} again") from None
    return found if isinstance(found, dict) else None


def stale_reasons(card: dict, shards: Shards) -> list[str]:
    """Why an index built as ``card`` says does not fit ``shards`` (empty when it fits)."""
    if card.get("format") != INDEX_FORMAT or card.get("library") != "faiss-cpu":
        return ["it was written by another labclip version"]
    reasons = []
    if (card.get("model"), card.get("revision")) != (shards.model, shards.revision):
        reasons.append(f"it was built for {card.get('model')} at {card.get('revision')}")
    before = card.get("shards") or {}
    changed = sorted(n for n in set(before) | set(shards.files) if before.get(n) != shards.files.get(n))
    if changed:
        reasons.append(f"shard{'s' if len(changed) > 1 else ''} {', '.join(changed[:3])}"
                       f"{' ...' if len(changed) > 3 else ''} changed since it was built")
    missing = [n for n in (VECTORS_FILE, INDEX_FILE if card.get("coarse") else None)
               if n and not (shards.folder / n).is_file()]
    if missing:
        reasons.append(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    return reasons


@dataclass(frozen=True)
class ShardIndex:
    """A loaded index: the memory-mapped float32 rows, the coarse pass (``None``: every row is rescored) and the
    calibrated candidate count."""

    vectors: np.ndarray
    coarse: Any
    candidates: int

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows most similar to the unit vector ``query``: ``(rows, cosines)``, best first, ranked by
        exact cosine among the coarse pass's candidates."""
        query = np.asarray(query, dtype=np.float32)
        count = candidate_count(self.candidates, k, len(self))
        if self.coarse is None or count >= len(self):
            return exact_search(self.vectors, query, k)
        _, found = self.coarse.search(query[None], count)
        rows = np.sort(found[0][found[0] >= 0])
        # einsum, not BLAS: a threaded gemv of a few thousand rows waited tens of ms for its threads on a busy machine
        top, cosines = top_k(np.einsum("ij,j->i", self.vectors[rows], query), k)
        return rows[top], cosines


def load_index(shards: Shards) -> ShardIndex | None:
    """The index stored beside ``shards`` if it was built from exactly these shards, else ``None`` if there is none.

    Raises:
        LabclipError: an index exists but is stale or unreadable (the message says why and how to rebuild it).
    """
    card = index_card(shards.folder)
    if card is None:
        return None
    reasons = stale_reasons(card, shards)
    if reasons:
        raise LabclipError(f"{shards.folder / INDEX_CARD}: the index is stale ({'; '.join(reasons)}); run labclip "
                           f"index {shards.folder} to rebuild it, or search with --exact")
    def unreadable(name: str) -> LabclipError:
        return LabclipError(f"{shards.folder / name}: unreadable index; run labclip index {shards.folder} again")

    try:
        vectors = np.load(shards.folder / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        raise unreadable(VECTORS_FILE) from None
    if vectors.dtype != np.float32 or vectors.shape != (len(shards.paths), shards.dim):
        raise unreadable(VECTORS_FILE)
    try:
        coarse = _faiss().read_index(str(shards.folder / INDEX_FILE)) if card.get("coarse") else None
    except RuntimeError:
        raise unreadable(INDEX_FILE) from None
    if coarse is not None and coarse.ntotal != len(shards.paths):
        raise unreadable(INDEX_FILE)
    return ShardIndex(vectors, coarse, int(card.get("candidates", len(shards.paths))))


def index_search(index: ShardIndex, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows by the index: ``(rows, cosines)``, best first."""
    return index.search(query, k)


def recall_at(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    """Mean share of each row of ``truth`` (exact top-k rows per query) that ``found`` also lists."""
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / len(t) for f, t in zip(found, truth)]))
