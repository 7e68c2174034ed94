"""Embedding shards: the Parquet files ``labclip embed`` writes and ``labclip search`` reads.

A folder ``EMB/`` holds ``part-NNNNN.parquet`` shards (each written to a temporary name and renamed, so a
reader sees whole shards only) and ``embed.json``, the provenance of the last run. Every ``*.parquet`` in the
folder is a shard; rows: ``path`` (POSIX, relative to the embedded folder), ``sha256`` (of the file's bytes),
``model``, ``revision``, ``precision``, ``decode`` and ``embedding`` (L2-normalised float32 vector).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_atomic, write_text
from .errors import LabclipError

COLUMNS = ("path", "sha256", "model", "revision", "precision", "decode", "embedding")
IDENTITY = ("model", "revision", "precision", "decode")
PROVENANCE = "embed.json"
SHARD = re.compile(r"part-(\d{5,})\.parquet")


def schema(dim: int):
    """The shard schema for ``dim``-dimensional embeddings."""
    import pyarrow as pa

    return pa.schema([*(pa.field(c, pa.string(), nullable=False) for c in COLUMNS[:-1]),
                      pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False)])


@dataclass(frozen=True)
class Identity:
    """What every row of one embedding folder shares: model, revision, precision and decode mode."""

    model: str
    revision: str
    precision: str
    decode: str

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in IDENTITY}


def shard_files(folder: Path) -> list[Path]:
    """Every shard of ``folder`` (``*.parquet``), by name."""
    return sorted(p for p in folder.glob("*.parquet") if p.is_file()) if folder.is_dir() else []


def _read(path: Path, columns: Sequence[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException, ValueError) as err:
        raise LabclipError(f"{path}: unreadable embedding shard ({' '.join(str(err).split())[:160]}); "
                           "move it away to embed its images again") from None


@dataclass
class Existing:
    """What a folder's shards already hold: ``done`` maps each path to its content hash and shard; ``identity``
    is the rows' shared identity (``None`` when the folder has no rows)."""

    done: dict[str, tuple[str, Path]]
    identity: Identity | None


def existing(folder: Path) -> Existing:
    """Read the path, hash and identity columns of ``folder``'s shards (not the vectors).

    Raises:
        LabclipError: a shard is unreadable or lacks a column, or the shards mix models, revisions,
            precisions or decode modes.
    """
    done: dict[str, tuple[str, Path]] = {}
    identities: set[Identity] = set()
    for shard in shard_files(folder):
        table = _read(shard, COLUMNS[:-1])
        columns = table.to_pydict()
        for values in zip(*(columns[c] for c in IDENTITY)):
            identities.add(Identity(*values))
        for path, sha in zip(columns["path"], columns["sha256"]):
            done[path] = (sha, shard)
    if len(identities) > 1:
        raise LabclipError(f"{folder}: its shards mix {len(identities)} models, revisions, precisions or decode "
                           "modes; give each its own --out folder")
    return Existing(done, next(iter(identities), None))


def check_identity(folder: Path, found: Identity | None, wanted: Identity) -> None:
    """A folder's rows and a new run must agree on the model, revision, precision and decode mode."""
    if found is None or found == wanted:
        return
    diff = [f"{k} {getattr(found, k)} → {getattr(wanted, k)}" for k in IDENTITY if getattr(found, k) != getattr(wanted, k)]
    raise LabclipError(f"{folder}: holds embeddings made otherwise ({'; '.join(diff)}); use another --out folder "
                       "or the same options")


def next_index(folder: Path) -> int:
    """The number of the next shard: one more than the highest ``part-NNNNN`` in ``folder``."""
    numbers = [int(m[1]) for p in shard_files(folder) if (m := SHARD.fullmatch(p.name))]
    return max(numbers, default=-1) + 1


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def table(paths: Sequence[str], hashes: Sequence[str], identity: Identity, vectors: np.ndarray):
    """One shard's rows as a pyarrow table of :func:`schema`."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    columns = [pa.array(list(paths), pa.string()), pa.array(list(hashes), pa.string()),
               *(pa.array([value] * n, pa.string()) for value in identity.as_dict().values()), embedding]
    return pa.Table.from_arrays(columns, schema=schema(dim))


def write_shard(path: Path, rows) -> Path:
    """Write a table as one Parquet shard, atomically (a temporary name not ending in ``.parquet``, then a
    rename): an interrupted write leaves no shard."""
    import pyarrow.parquet as pq

    return write_atomic(path, lambda f: pq.write_table(rows, f, compression="zstd"), binary=True)


def drop_rows(shard: Path, stale: set[str]) -> None:
    """Rewrite ``shard`` without the rows of ``stale`` paths (files changed since), atomically; a shard left
    empty is removed (labclip wrote it)."""
    import pyarrow.compute as pc

    rows = _read(shard, COLUMNS)
    kept = rows.filter(pc.invert(pc.is_in(rows["path"], value_set=_strings(stale))))
    if kept.num_rows:
        write_shard(shard, kept)
    else:
        shard.unlink()


def _strings(values: set[str]):
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


def read_embeddings(folder: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Every row of ``folder``'s shards: paths, and the ``(n, dim)`` float32 embeddings, in shard order."""
    paths: list[str] = []
    blocks = []
    for shard in shard_files(Path(folder)):
        rows = _read(shard, ("path", "embedding"))
        paths += rows["path"].to_pylist()
        column = rows["embedding"].combine_chunks()
        blocks.append(column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size))
    return paths, np.concatenate(blocks) if blocks else np.empty((0, 0), dtype=np.float32)


def write_provenance(folder: Path, record: dict) -> Path:
    """``EMB/embed.json``: the run's provenance, written atomically."""
    return write_text(folder / PROVENANCE, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


__all__ = ["COLUMNS", "Identity", "existing", "read_embeddings", "schema", "table", "write_shard"]
