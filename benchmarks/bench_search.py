"""Search benchmark: exact search against coarse-pass + exact-rescoring indexes on random unit vectors (dim 512).

For each collection size it draws random unit rows and, independently, random unit queries from the same
distribution (the hardest case for an approximate index: random points in 512 dimensions have no clusters to
exploit, and no query lies near a stored row), takes the exact top-10 of every query with one matrix product,
then times one query at a time, as ``labclip search`` asks them, for each candidate:

- numpy exact search (one matrix product over every row);
- labclip's index (``labclip.index``: faiss 4-bit PQ fast-scan codes pick the calibrated number of candidates,
  ranked by exact cosine read from the memory-mapped ``index.vectors.npy``), built with ``write_index`` and
  searched with ``load_index`` as the CLI does;
- the same rescoring behind other coarse passes: faiss ``IndexBinaryFlat`` and usearch's exact search over
  512 sign bits (Hamming), and usearch's exact int8 inner-product scan, at fixed candidate counts.

Printed per row: build seconds (labclip's includes the calibration), the MiB a search reads from (the codes
plus the float32 rows they rescore from; numpy's: the rows), the candidate count, median
and 95th-percentile milliseconds per query, recall@10 against exact search, and pass/FAIL against the target
(under 50 ms median at recall@10 ≥ 0.95). usearch's HNSW graph is not measured: its build ran over 17 minutes at
10^5 rows on this kind of machine. ``--quick`` (CI) measures 10^6 rows only, with 50 queries; the full run does
10^5 and 10^6 with 100.

    python benchmarks/bench_search.py [--quick] [--sizes N ...] [--queries Q] [--doc FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchdoc, also when a test loads this file by path

from benchdoc import recording, unit_vectors  # noqa: E402

from labclip.index import (  # noqa: E402
    ShardIndex,
    Shards,
    exact_neighbours,
    exact_search,
    load_index,
    recall_at,
    write_index,
)

DIM, K = 512, 10
TARGET_MS, TARGET_RECALL = 50.0, 0.95
SIGN_CANDIDATES = (4096, 32768)
INT8_CANDIDATES = 1024


def timed(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(milliseconds of each query, found rows), one query at a time after one warm-up query."""
    search(queries[0])
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q)[:K])
        times.append((time.perf_counter() - start) * 1000)
    return np.array(times), np.stack(found)


def row(library: str, method: str, candidates: int | str, build: float, size: float, times: np.ndarray,
        found: np.ndarray, truth: np.ndarray) -> dict:
    return {"library": library, "method": method, "candidates": candidates, "build_s": build, "mib": size,
            "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "recall@10": recall_at(found, truth)}


class SignCodes:
    """A coarse pass over 512 sign bits, faiss ``IndexBinaryFlat`` or usearch's exact Hamming search, with the
    ``search(queries, count)`` form of a faiss index, for :class:`labclip.index.ShardIndex`'s rescoring."""

    def __init__(self, x: np.ndarray, library: str):
        self.codes, self.library = np.packbits(x > 0, axis=1), library
        if library == "faiss":
            import faiss

            self.index = faiss.IndexBinaryFlat(x.shape[1])
            self.index.add(self.codes)

    def search(self, queries: np.ndarray, count: int) -> tuple[None, np.ndarray]:
        code = np.packbits(queries > 0, axis=1)
        if self.library == "faiss":
            return None, self.index.search(code, count)[1]
        from usearch.index import MetricKind, search

        return None, np.asarray(search(self.codes, code[0], count, MetricKind.Hamming, exact=True, threads=1).keys)[None]


class Int8Scan:
    """usearch's exact int8 inner-product scan as the coarse pass (rows scaled by 127 / 4σ, σ = 1/√dim)."""

    def __init__(self, x: np.ndarray):
        self.scale = 127 * np.sqrt(x.shape[1]) / 4
        self.codes = self.quantise(x)

    def quantise(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x * self.scale), -127, 127).astype(np.int8)

    def search(self, queries: np.ndarray, count: int) -> tuple[None, np.ndarray]:
        from usearch.index import MetricKind, search

        found = search(self.codes, self.quantise(queries)[0], count, MetricKind.IP, exact=True, threads=1)
        return None, np.asarray(found.keys)[None]


def labclip_row(x: np.ndarray, q: np.ndarray, truth: np.ndarray, folder: Path) -> tuple[dict, ShardIndex]:
    import faiss

    shards = Shards(folder, [f"{i}.jpg" for i in range(len(x))], "random", "0", {}, x.shape[1], x)
    start = time.perf_counter()
    card = write_index(shards)
    build = time.perf_counter() - start
    index = load_index(Shards(folder, shards.paths, "random", "0", {}, x.shape[1]))
    assert index is not None
    times, found = timed(lambda v: index.search(v, K)[0], q)
    return row(f"faiss-cpu {faiss.__version__}", "labclip index: PQ fast-scan 4-bit + exact", card["candidates"],
               build, sum(card["bytes"].values()) / 2**20, times, found, truth), index


def coarse_rows(x: np.ndarray, q: np.ndarray, truth: np.ndarray, vectors: np.ndarray) -> list[dict]:
    """Other coarse passes with the same rescoring over the same memory-mapped rows."""
    import faiss
    import usearch

    rows = []
    passes: list[tuple[str, str, Callable[[], Any], tuple[int, ...]]] = [
        (f"faiss-cpu {faiss.__version__}", "sign bits (BinaryFlat) + exact", lambda: SignCodes(x, "faiss"),
         SIGN_CANDIDATES),
        (f"usearch {usearch.__version__}", "sign bits (exact b1) + exact", lambda: SignCodes(x, "usearch"),
         SIGN_CANDIDATES[:1]),
        (f"usearch {usearch.__version__}", "int8 scan (exact i8) + exact", lambda: Int8Scan(x), (INT8_CANDIDATES,)),
    ]
    for library, method, make, counts in passes:
        start = time.perf_counter()
        coarse = make()
        build = time.perf_counter() - start
        size = (coarse.codes.nbytes + vectors.nbytes) / 2**20
        for count in counts:
            index = ShardIndex(vectors, coarse, min(count, len(x)))
            times, found = timed(lambda v, index=index: index.search(v, K)[0], q)
            rows.append(row(library, method, index.candidates, build, size, times, found, truth))
            show({"rows": len(x), **rows[-1]})
    return rows


HEAD = "{rows:>8} {library:<16} {method:<42} {candidates:>10} {build_s:>8} {mib:>8} {median_ms:>9} {p95_ms:>8} " \
       "{recall:>9}  {verdict}"


def passes(r: dict) -> bool:
    return r["median_ms"] < TARGET_MS and r["recall@10"] >= TARGET_RECALL


def show(r: dict) -> None:
    """One measured row, printed as soon as it is measured (a run cut short keeps what it measured)."""
    print(HEAD.format(**{**r, "build_s": f"{r['build_s']:.1f}", "mib": f"{r['mib']:.0f}",
                         "median_ms": f"{r['median_ms']:.2f}", "p95_ms": f"{r['p95_ms']:.2f}",
                         "recall": f"{r['recall@10']:.3f}", "verdict": "pass" if passes(r) else "FAIL"}), flush=True)


def one_size(n: int, queries: int, rng: np.random.Generator) -> list[dict]:
    x, q = unit_vectors(rng, n, DIM), unit_vectors(rng, queries, DIM)
    truth = exact_neighbours(x, q, K)
    times, found = timed(lambda v: exact_search(x, v, K)[0], q)
    rows = [row("numpy", "exact (one matrix product)", "-", 0.0, x.nbytes / 2**20, times, found, truth)]
    show({"rows": n, **rows[0]})
    with tempfile.TemporaryDirectory(prefix="bench_search.") as folder:
        labclip, index = labclip_row(x, q, truth, Path(folder))
        rows.append(labclip)
        show({"rows": n, **labclip})
        rows += coarse_rows(x, q, truth, index.vectors)
        del index
    return [{"rows": n, **r} for r in rows]


def verdict(rows: list[dict], n: int) -> str:
    """Whether labclip's index met the target at ``n`` rows, from the measured row."""
    (r,) = [r for r in rows if r["rows"] == n and r["method"].startswith("labclip")]
    return (f"{n} rows, labclip's index: median {r['median_ms']:.2f} ms (p95 {r['p95_ms']:.2f}), recall@10 "
            f"{r['recall@10']:.3f} with {r['candidates']} candidates, built in {r['build_s']:.1f} s, "
            f"{r['mib']:.0f} MiB: target (median under {TARGET_MS:.0f} ms at recall@10 ≥ {TARGET_RECALL}) "
            f"{'pass' if passes(r) else 'FAIL'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10^6 rows only, 50 queries (CI)")
    p.add_argument("--sizes", type=int, nargs="+", help="collection sizes (default: 10^5 and 10^6; --quick: 10^6)")
    p.add_argument("--queries", type=int, help="queries per size (default 100; --quick: 50)")
    p.add_argument("--doc", type=Path, help="also write the printed figures into this Markdown file")
    args = p.parse_args(argv)
    sizes = args.sizes or ([1_000_000] if args.quick else [100_000, 1_000_000])
    queries = args.queries or (50 if args.quick else 100)
    with recording(args.doc, "bench_search", "Search: exact, labclip's index (faiss) and other coarse passes on "
                   "random vectors", sys.argv[1:] if argv is None else argv):
        print(f"random unit vectors of dim {DIM}; {queries} random unit queries drawn independently of the rows, "
              f"one at a time; recall@10 against exact search; MiB: the coarse codes and the float32 rows they "
              f"rescore from; {os.cpu_count()} logical CPUs")
        print(HEAD.format(rows="rows", library="library", method="method", candidates="candidates",
                          build_s="build s", mib="MiB", median_ms="median ms", p95_ms="p95 ms", recall="recall@10",
                          verdict="target"))
        rows = []
        for n in sizes:
            rows += one_size(n, queries, np.random.default_rng(n))
        for n in sizes:
            print(verdict(rows, n))
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
