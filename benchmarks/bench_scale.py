"""Scale benchmark: retrieval metrics, intervals and paired tests for thousands of images.

Random unit vectors stand in for embeddings (the metrics see only the similarity matrix). For each
step it prints the wall time and the peak memory the step allocates beyond the float32 similarity
matrix (numpy allocations traced with tracemalloc, in a second run so tracing does not slow the
timed one), and that peak as a multiple of the matrix. Figures are measured, never asserted; the
issue's target (extra peak under twice the matrix) is checked on the metrics at the size it names,
5,000 x 5,000, which ``--quick`` keeps: it only draws the report plots from fewer images.

    python benchmarks/bench_scale.py [--images 5000] [--captions 5000] [--dim 512] [--quick] [--doc FILE]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchdoc, also when a test loads this file by path

from benchdoc import measure, recording, unit_vectors  # noqa: E402

from labclip import stats  # noqa: E402
from labclip.lab.scale import HARDEST, heatmap_figure  # noqa: E402
from labclip.metrics import (  # noqa: E402
    match_metrics,
    retrieval_metrics,
    retrieval_ranks,
    row_logsumexp,
    similarity,
    topk_indices,
)

TARGET = 2.0  # the bound: extra peak under twice the float32 similarity matrix ...
TARGET_SIZE = (5000, 5000)  # ... of a 5,000 x 5,000 evaluation
QUICK_PLOT_IMAGES = 1000


def _heatmap_png(sim: np.ndarray, ranks) -> int:
    """The scale report's heatmap of a large set (the hardest images only), drawn to PNG bytes."""
    import io

    n = len(sim)
    fig, _ = heatmap_figure(sim, np.arange(n), ranks.i2t, [f"image {i}" for i in range(n)],
                            [f"caption {i}" for i in range(n)])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.tell()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions", type=int, default=5000, help="captions (paired set: one per image)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="for CI: the report plots draw from 1,000 images; the metrics keep the full size, "
                             "where the memory target is defined")
    parser.add_argument("--doc", type=Path, metavar="FILE",
                        help="also write the printed figures as this script's section of FILE (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    with recording(args.doc, "bench_scale", "Metrics and plots at scale",
                   sys.argv[1:] if argv is None else argv):
        run(args)


def run(args: argparse.Namespace) -> None:
    plot_images = min(args.images, args.captions, QUICK_PLOT_IMAGES if args.quick else args.images)

    rng = np.random.default_rng(args.seed)
    images = unit_vectors(rng, args.images, args.dim)
    texts = unit_vectors(rng, args.captions, args.dim)
    # make the right pairs likelier than chance, so recall is neither 0 nor 1
    paired = min(args.images, args.captions)
    texts[:paired] = images[:paired] + 0.9 * texts[:paired]
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)

    start = time.perf_counter()
    sim = similarity(images, texts, dtype=np.float32)
    sim_seconds = time.perf_counter() - start
    matrix = sim.nbytes
    square = sim[:paired, :paired]
    # several captions per image: the same matrix read as images/2 images with 2 captions each
    owner = np.arange(args.captions) % max(1, args.images // 2)
    multi = sim[: max(1, args.images // 2)]
    ranks = retrieval_ranks(square)
    hits_a = rng.random(args.images) < 0.55
    hits_b = rng.random(args.images) < 0.50
    shown = square[:plot_images, :plot_images]
    shown_ranks = ranks if plot_images == paired else retrieval_ranks(shown)

    metrics: list[tuple[str, Callable[[], object]]] = [
        ("recall@1/5/10 both ways + MRR (paired)", lambda: retrieval_metrics(square)),
        (f"recall@1/5/10 + MRR ({len(multi)} images x 2 captions)", lambda: retrieval_metrics(multi, owner)),
        ("paired-set figures (match_metrics, incl. loss)", lambda: match_metrics(square, k=5)),
        ("top-10 captions per image", lambda: topk_indices(sim, 10)),
        ("softmax denominators per image", lambda: row_logsumexp(sim, 100.0)),
        ("Wilson intervals, 6 recalls", lambda: [stats.proportion(ranks.i2t <= k) for k in (1, 5, 10)]
         + [stats.proportion(ranks.t2i <= k) for k in (1, 5, 10)]),
        ("bootstrap intervals, 2 MRRs (9,999 resamples)", lambda: ranks.estimates(ks=())),
        ("exact McNemar, two hit vectors", lambda: stats.paired_test(hits_a, hits_b)),
    ]
    plots: list[tuple[str, Callable[[], object]]] = [
        (f"report heatmap (hardest {HARDEST} of {plot_images} images)", lambda: _heatmap_png(shown, shown_ranks)),
    ]

    print(f"labclip scale benchmark: {args.images} images x {args.captions} captions, dim {args.dim}, "
          f"numpy {np.__version__}, {platform.machine()} {platform.system()}")
    print(f"float32 similarity matrix: {matrix / 2**20:.1f} MiB, built in {sim_seconds:.2f} s")
    print()
    header = f"{'step':56} {'time s':>8} {'extra peak MiB':>15} {'x matrix':>9}"
    print(f"Metrics, intervals and tests on the {args.images} x {args.captions} matrix")
    worst = _table(header, metrics, matrix)
    print()
    verdict = "within" if worst < TARGET * matrix else "ABOVE"
    print(f"largest extra peak of the metrics at {args.images} x {args.captions}: {worst / 2**20:.1f} MiB = "
          f"{worst / matrix:.2f}x the float32 matrix ({verdict} the {TARGET:g}x target)")
    if (args.images, args.captions) != TARGET_SIZE:
        print(f"  (the issue defines the target at {TARGET_SIZE[0]} x {TARGET_SIZE[1]}; at other sizes the "
              "fixed buffers weigh differently against the matrix)")
    print()
    plot_matrix = shown.size * shown.itemsize
    print(f"Report plots from {plot_images} x {plot_images} similarities ({plot_matrix / 2**20:.1f} MiB; not part "
          "of the target: a figure's buffers depend on its pixels, not on the matrix)")
    _table(header, plots, plot_matrix)
    print()
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB "
          f"(includes imported libraries, the embeddings and the matrix)")


def _table(header: str, steps: list[tuple[str, Callable[[], object]]], matrix: int) -> int:
    """Print one row per step (time, extra peak, peak over ``matrix`` bytes); return the largest peak."""
    print(header)
    worst = 0
    for name, step in steps:
        seconds, peak = measure(step)
        worst = max(worst, peak)
        print(f"{name:56} {seconds:8.2f} {peak / 2**20:15.1f} {peak / matrix:9.2f}")
    return worst


if __name__ == "__main__":
    main()
