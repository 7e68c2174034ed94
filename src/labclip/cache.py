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

    def _path(self, kind: str, key: str) -> Path:
        return Path(self.root) / self.namespaces[kind] / kind / key[:2] / f"{key}.npy"

    def get(self, kind: str, key: str) -> np.ndarray | None:
        """The stored vector, or ``None`` when missing or unusable."""
        path = self._path(kind, key)
        try:
            vector = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            self.stats[kind].count(key, hit=False)
            return None
        except (OSError, ValueError, EOFError):
            self.stats[kind].corrupt += 1
            self.stats[kind].count(key, hit=False)
            return None
        if vector.dtype != np.float32 or vector.shape != (self.dim,) or not np.isfinite(vector).all() \
                or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
            self.stats[kind].corrupt += 1
            self.stats[kind].count(key, hit=False)
            return None
        self.stats[kind].count(key, hit=True)
        return vector

    def put(self, kind: str, key: str, vector: np.ndarray) -> None:
        array = np.ascontiguousarray(vector, dtype=np.float32)
        write_atomic(self._path(kind, key), lambda f: np.save(f, array, allow_pickle=False), binary=True)

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
