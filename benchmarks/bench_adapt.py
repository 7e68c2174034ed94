"""Text-adapter fitting time on the CPU: a 768→512 ridge map on 20k synthetic caption pairs.

The pairs come from a planted linear map with noise, five captions per image, so the alpha
cross-validation uses group folds as it would on COCO-style captions. Prints the measured times
with the default BLAS threads and with one (on a shared machine, OpenBLAS threads that wait for
each other can be several times slower than one thread), never asserts them.

    python benchmarks/bench_adapt.py [--pairs 20000] [--repeats 3] [--quick] [--doc FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchdoc, also when a test loads this file by path

from benchdoc import recording  # noqa: E402

from labclip.textmap import DEFAULT_ALPHAS, fit_text_adapter  # noqa: E402


def synthetic_pairs(n: int, d_in: int = 768, d_out: int = 512, noise: float = 0.3, seed: int = 0):
    """Unit source rows and targets ``unit(x @ W + b + noise)``, like unit text embeddings."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.standard_normal((d_in, d_out), dtype=np.float32) / np.sqrt(d_in, dtype=np.float32) * 8
    y = x @ w + 0.05 * rng.standard_normal(d_out, dtype=np.float32)
    y += noise * rng.standard_normal(y.shape, dtype=np.float32) / np.sqrt(d_out, dtype=np.float32)
    return x, y / np.linalg.norm(y, axis=1, keepdims=True)


def best_of(repeats: int, fn):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5,000 pairs, one repeat (for CI, well under 30 s)")
    parser.add_argument("--doc", type=Path, metavar="FILE",
                        help="also write the printed figures as this script's section of FILE (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    with recording(args.doc, "bench_adapt", "Text-adapter fitting", sys.argv[1:] if argv is None else argv):
        run(args)


def run(args: argparse.Namespace) -> None:
    if args.quick:
        args.pairs, args.repeats = 5000, 1
    held_out = 2000
    x, y = synthetic_pairs(args.pairs + held_out)
    groups = np.arange(args.pairs) // 5
    train = slice(0, args.pairs)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"pairs: {args.pairs} ({args.pairs // 5} groups of 5), {x.shape[1]} -> {y.shape[1]} dimensions; "
          f"best of {args.repeats}")
    blas_threads = threadpool_info()[0]["num_threads"] if threadpool_info() else None
    for threads in dict.fromkeys([blas_threads, 1]):
        with threadpool_limits(limits=threads):
            cv_time, adapter = best_of(args.repeats, lambda: fit_text_adapter(x[train], y[train], groups=groups))
            alpha = adapter.card["alpha"]
            fixed_time, _ = best_of(args.repeats, partial(fit_text_adapter, x[train], y[train], alpha=alpha))
        print(f"BLAS threads {threads}: alpha by {adapter.card['cv_folds']}-fold group CV over "
              f"{len(DEFAULT_ALPHAS)} alphas {cv_time:.2f} s (alpha = {alpha:g}); that alpha fixed {fixed_time:.2f} s")
    cosine = float(np.mean(np.sum(adapter.transform(x[args.pairs:]) * y[args.pairs:], axis=1)))
    print(f"mean cosine on {held_out} held-out pairs: {cosine:.4f} (training: {adapter.card['train_cosine']:.4f})")


if __name__ == "__main__":
    main()
