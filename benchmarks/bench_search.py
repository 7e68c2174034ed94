"""Search benchmark: exact search against usearch and faiss-cpu indexes on random unit vectors (dim 512).

For each collection size it draws random unit rows and random unit queries (the hardest case for an
approximate index: random points in 512 dimensions have no clusters to exploit), takes the exact top-10 of
every query with labclip's exact search (one matrix product), then builds each index and times one query at a
time at several search widths: usearch HNSW with labclip's settings (``labclip.index``), faiss HNSW with the
same graph degree and construction width, and faiss IVF-Flat (4·√n lists; only up to ``IVF_UP_TO`` rows: on
random vectors it must probe most lists to approach the recall target, which the smaller sizes show). Printed per row: build seconds,
milliseconds per query, recall@10 against exact search. Timings are printed, never asserted; the target
(10^6 rows: under 50 ms at recall@10 ≥ 0.95) is checked against what was measured. ``--quick`` runs 10^4
rows for CI; the full run does 10^5 and 10^6.

    python benchmarks/bench_search.py [--quick] [--sizes N ...] [--queries Q] [--doc FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchdoc, also when a test loads this file by path

from benchdoc import recording, unit_vectors  # noqa: E402

from labclip.index import CONNECTIVITY, EXPANSION_ADD, exact_search, recall_at  # noqa: E402

DIM, K = 512, 10
TARGET_MS, TARGET_RECALL = 50.0, 0.95
WIDTHS = (64, 128, 256, 512)
PROBES = (16, 64, 256)
IVF_UP_TO = 100_000


def per_query(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[float, np.ndarray]:
    """(milliseconds per query, found rows), one query at a time as ``labclip search`` asks them."""
    search(queries[0])
    start = time.perf_counter()
    found = np.stack([search(q) for q in queries])
    return (time.perf_counter() - start) * 1000 / len(queries), found


def usearch_rows(x: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[dict]:
    from usearch import __version__
    from usearch.index import Index

    index = Index(ndim=x.shape[1], metric="ip", dtype="f32", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD)
    start = time.perf_counter()
    index.add(np.arange(len(x), dtype=np.uint64), x, threads=threads)
    build = time.perf_counter() - start
    rows = []
    for width in WIDTHS:
        index.expansion_search = width
        ms, found = per_query(lambda q: np.asarray(index.search(q, K).keys), queries)
        rows.append({"library": f"usearch {__version__}", "index": f"HNSW M={CONNECTIVITY} ef_add={EXPANSION_ADD}",
                     "search": f"ef={width}", "build_s": build, "ms_per_query": ms, "recall@10": recall_at(found, truth)})
    return rows


def faiss_rows(x: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
    hnsw = faiss.IndexHNSWFlat(x.shape[1], CONNECTIVITY, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = EXPANSION_ADD
    lists = int(4 * np.sqrt(len(x)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    builds = {}
    kinds = [("hnsw", hnsw, False)] + ([("ivf", ivf, True)] if len(x) <= IVF_UP_TO else [])
    for name, index, train in kinds:
        start = time.perf_counter()
        if train:
            index.train(x[: min(len(x), 64 * lists)])
        index.add(x)
        builds[name] = time.perf_counter() - start
    rows = []
    settings = [("hnsw", f"HNSW M={CONNECTIVITY} efConstruction={EXPANSION_ADD}", "efSearch", w) for w in WIDTHS]
    settings += [("ivf", f"IVF-Flat {lists} lists", "nprobe", p) for p in PROBES if p <= lists and "ivf" in builds]
    for name, label, knob, value in settings:
        if name == "hnsw":
            hnsw.hnsw.efSearch = value
        else:
            ivf.nprobe = value
        index = hnsw if name == "hnsw" else ivf
        ms, found = per_query(lambda q, index=index: index.search(q[None], K)[1][0], queries)
        rows.append({"library": f"faiss-cpu {faiss.__version__}", "index": label, "search": f"{knob}={value}",
                     "build_s": builds[name], "ms_per_query": ms, "recall@10": recall_at(found, truth)})
    return rows


ROW = "{rows:>8} {library:<16} {index:<36} {search:<14} {build_s:>8} {ms_per_query:>12} {recall:>9}"


def show(row: dict) -> None:
    """One measured row, printed as soon as it is measured (a run cut short keeps what it measured)."""
    print(ROW.format(**{**row, "build_s": f"{row['build_s']:.1f}", "ms_per_query": f"{row['ms_per_query']:.2f}",
                        "recall": f"{row['recall@10']:.3f}"}), flush=True)


def one_size(n: int, queries: int, threads: int, rng: np.random.Generator) -> list[dict]:
    x, q = unit_vectors(rng, n, DIM), unit_vectors(rng, queries, DIM)
    ms, truth = per_query(lambda v: exact_search(x, v, K)[0], q)
    rows = [{"rows": n, "library": "numpy", "index": "exact (one matmul)", "search": "-", "build_s": 0.0,
             "ms_per_query": ms, "recall@10": 1.0}]
    show(rows[0])
    for measure in (usearch_rows, faiss_rows):
        for row in measure(x, q, truth, threads):
            rows.append({"rows": n, **row})
            show(rows[-1])
    return rows


def best(rows: list[dict], library: str) -> dict | None:
    """The fastest setting of ``library`` with recall@10 at the target, if any."""
    good = [r for r in rows if r["library"].startswith(library) and r["recall@10"] >= TARGET_RECALL]
    return min(good, key=lambda r: r["ms_per_query"]) if good else None


def verdict(rows: list[dict], n: int) -> list[str]:
    """What the measurements at ``n`` rows say: each library's fastest setting at the recall target."""
    at_n = [r for r in rows if r["rows"] == n]
    lines = []
    for library in ("usearch", "faiss"):
        found = best([r for r in at_n if r["library"] != "numpy"], library)
        lines.append(f"{n} rows, {library}: " + (f"fastest at recall@10 ≥ {TARGET_RECALL}: {found['index']}, "
                     f"{found['search']}: {found['ms_per_query']:.2f} ms/query, recall {found['recall@10']:.3f}, "
                     f"built in {found['build_s']:.1f} s" if found else f"no setting reached recall@10 {TARGET_RECALL}"))
    labclip_row = best([r for r in at_n if r["library"].startswith("usearch")], "usearch")
    met = labclip_row is not None and labclip_row["ms_per_query"] < TARGET_MS
    lines.append(f"target at {n} rows (labclip's usearch index under {TARGET_MS:.0f} ms at recall@10 ≥ "
                 f"{TARGET_RECALL}): {'met' if met else 'NOT met'}")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10^4 rows only (CI)")
    p.add_argument("--sizes", type=int, nargs="+", help="collection sizes (default: 10^5 and 10^6; --quick: 10^4)")
    p.add_argument("--queries", type=int, default=100, help="queries per size")
    p.add_argument("--threads", type=int, default=0, help="build threads (0: all)")
    p.add_argument("--doc", type=Path, help="also write the printed figures into this Markdown file")
    args = p.parse_args(argv)
    sizes = args.sizes or ([10_000] if args.quick else [100_000, 1_000_000])
    with recording(args.doc, "bench_search", "Search: exact, usearch and faiss-cpu on random vectors",
                   sys.argv[1:] if argv is None else argv):
        print(f"random unit vectors of dim {DIM}, {args.queries} random unit queries, one at a time; "
              f"recall@10 against exact search; {os.cpu_count()} logical CPUs, build threads {args.threads or 'all'}")
        print(ROW.format(rows="rows", library="library", index="index", search="search", build_s="build s",
                         ms_per_query="ms/query", recall="recall@10"))
        rows = []
        for n in sizes:
            rows += one_size(n, args.queries, args.threads, np.random.default_rng(n))
        for n in sizes:
            print("\n".join(verdict(rows, n)))
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
