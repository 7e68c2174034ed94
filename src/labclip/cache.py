"""Content-addressed on-disk cache of embeddings, one ``.npy`` file per image or caption.

A key hashes the content (image file bytes or caption text) together with the model's
fingerprint (id, revision or weights hash, quantisation) and the preprocessing or tokenizer
version. Files are written to a temporary name and renamed, so readers never see half a file
and two runs at once only ever write identical bytes. Entries that fail to load, have the wrong
shape or are not unit vectors are treated as missing and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .config import cache_dir

# The largest .npy header labclip reads (numpy writes 128 bytes for a vector; a header may be padded to 64 KiB).
MAX_HEADER = 1 << 16


class CacheUnwritable(UserWarning):
    """The embedding cache could not be written; the run goes on without storing embeddings."""


def default_cache_dir() -> Path:
    return cache_dir() / "embeddings"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CacheStats:
    """Lookups (``hits``, ``misses``, ``corrupt``) and the distinct keys behind them."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    hit_keys: set[str] = field(default_factory=set)
    missed_keys: set[str] = field(default_factory=set)

    def count(self, key: str, hit: bool) -> None:
        if hit:
            self.hits += 1
            self.hit_keys.add(key)
        else:
            self.misses += 1
            self.missed_keys.add(key)


@dataclass
class EmbeddingCache:
    """Embeddings of dimension ``dim`` stored under ``root/<namespace of the kind>/<kind>``."""

    root: Path
    namespaces: dict[str, str]
    dim: int
    stats: dict[str, CacheStats] = field(default_factory=lambda: {"images": CacheStats(), "captions": CacheStats()})
    writable: bool = True

    def _path(self, kind: str, key: str) -> Path:
        return Path(self.root) / self.namespaces[kind] / kind / key[:2] / f"{key}.npy"

    def get(self, kind: str, key: str) -> np.ndarray | None:
        """The stored vector, or ``None`` when missing or unusable (not a regular file, a header that is not a
        ``float32`` vector of ``dim``, a wrong size, not unit length); nothing else is read first."""
        path = self._path(kind, key)
        try:
            vector = self._read(path)
        except FileNotFoundError:
            self.stats[kind].count(key, hit=False)
            return None
        except (OSError, ValueError, EOFError):
            vector = None
        if vector is None or not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
            self.stats[kind].corrupt += 1
            self.stats[kind].count(key, hit=False)
            return None
        self.stats[kind].count(key, hit=True)
        return vector

    def _read(self, path: Path) -> np.ndarray | None:
        """A ``.npy`` file of one ``float32`` vector of ``dim``, or ``None``. The entry must be a regular file of
        at most the size such a file has (a FIFO is never opened for a blocking read, a directory never
        listed), and its header is checked before the data is read."""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_HEADER + 4 * self.dim:
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_HEADER + 4 * self.dim + 1)
        finally:
            os.close(fd)
        stream = io.BytesIO(data)
        major, _ = np.lib.format.read_magic(stream)
        read_header = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}.get(major)
        if read_header is None:
            return None
        shape, fortran, dtype = read_header(stream)
        if shape != (self.dim,) or dtype != np.dtype("<f4") or fortran:
            return None
        body = data[stream.tell():]
        if len(body) != 4 * self.dim:
            return None
        return np.frombuffer(body, dtype="<f4").astype(np.float32)

    def put(self, kind: str, key: str, vector: np.ndarray) -> None:
        """Store a vector. When the cache can't be written (a read-only or full disk, no permission) labclip
        says so once and goes on without writing to it; the run's results are the same."""
        if not self.writable:
            return
        array = np.ascontiguousarray(vector, dtype=np.float32)
        try:
            write_atomic(self._path(kind, key), lambda f: np.save(f, array, allow_pickle=False), binary=True)
        except OSError as err:
            self.writable = False
            warnings.warn(CacheUnwritable(f"the embedding cache in {self.root} cannot be written "
                                          f"({err.strerror or type(err).__name__}); going on without storing "
                                          "embeddings, results are unchanged"), stacklevel=2)

    def summary(self, kinds: tuple[str, ...] = ("images", "captions")) -> str:
        """Distinct images and captions read from the cache and encoded (each counted once however often
        it was looked up; one encoded in this run and read back later counts as encoded)."""
        parts = []
        for kind, noun in (("images", "image"), ("captions", "caption")):
            if kind not in kinds:
                continue
            s = self.stats[kind]
            cached, encoded = len(s.hit_keys - s.missed_keys), len(s.missed_keys)
            parts.append(f"{cached} {noun}{'s' * (cached != 1)} from the cache, {encoded} encoded")
        return "; ".join(parts)
