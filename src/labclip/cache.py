"""Content-addressed on-disk cache of embeddings, one ``.npy`` file per image or caption.

A key hashes the content (image file bytes or caption text) together with the model's
fingerprint (id, revision or weights hash, quantisation) and the preprocessing or tokenizer
version. Files are written to a temporary name and renamed, so readers never see half a file
and two runs at once only ever write identical bytes. Entries that fail to load, have the wrong
shape or are not unit vectors are treated as missing and recomputed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .config import cache_dir


def default_cache_dir() -> Path:
    return cache_dir() / "embeddings"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0


@dataclass
class EmbeddingCache:
    """Embeddings of dimension ``dim`` stored under ``root/<namespace of the kind>/<kind>``."""

    root: Path
    namespaces: dict[str, str]
    dim: int
    stats: dict[str, CacheStats] = field(default_factory=lambda: {"images": CacheStats(), "captions": CacheStats()})

    def _path(self, kind: str, key: str) -> Path:
        return Path(self.root) / self.namespaces[kind] / kind / key[:2] / f"{key}.npy"

    def get(self, kind: str, key: str) -> np.ndarray | None:
        """The stored vector, or ``None`` when missing or unusable."""
        path = self._path(kind, key)
        try:
            vector = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            self.stats[kind].misses += 1
            return None
        except (OSError, ValueError, EOFError):
            self.stats[kind].corrupt += 1
            self.stats[kind].misses += 1
            return None
        if vector.dtype != np.float32 or vector.shape != (self.dim,) or not np.isfinite(vector).all() \
                or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
            self.stats[kind].corrupt += 1
            self.stats[kind].misses += 1
            return None
        self.stats[kind].hits += 1
        return vector

    def put(self, kind: str, key: str, vector: np.ndarray) -> None:
        array = np.ascontiguousarray(vector, dtype=np.float32)
        write_atomic(self._path(kind, key), lambda f: np.save(f, array, allow_pickle=False), binary=True)

    def summary(self) -> str:
        i, c = self.stats["images"], self.stats["captions"]
        return (f"{i.hits} images from the cache, {i.misses} encoded; "
                f"{c.hits} captions from the cache, {c.misses} encoded")
