"""Cultures benchmark: the region × language breakdown of Crossmodal-3600's size from random unit vectors.

3,600 images in 36 regions of 100, captions in 36 languages (one per image, as the report scores them).
Each language's caption embeddings are drawn, ranked in the whole set and within each region
(:func:`labclip.cultures.region_ranks`, block by block) and summarised with Wilson intervals, one language
at a time, as the report does; then the tests run on the hits. It prints the wall time and the peak memory
each step allocates (tracemalloc, in a second, traced run) against one language's float32 similarity matrix
(never built: the target is a peak under twice that matrix).

    python benchmarks/bench_cultures.py [--images 3600] [--regions 36] [--languages 36] [--dim 512] [--quick] [--doc FILE]
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchdoc, also when a test loads this file by path

from benchdoc import measure, recording, unit_vectors  # noqa: E402

from labclip import cultures  # noqa: E402

TARGET = 2.0  # peak under twice one language's float32 similarity matrix
NOISE = 6.0  # caption = image + noise of about this length: recall@1 well between 0 and 1, so the tests have work


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3600)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--languages", type=int, default=36)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--permutations", type=int, default=cultures.N_PERMUTATIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="for CI: 6 languages instead of 36")
    parser.add_argument("--doc", type=Path, metavar="FILE",
                        help="also write the printed figures as this script's section of FILE (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.languages = min(args.languages, 6)
    with recording(args.doc, "bench_cultures", "Cross-cultural breakdown at Crossmodal-3600's size",
                   sys.argv[1:] if argv is None else argv):
        run(args)


def run(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    images = unit_vectors(rng, args.images, args.dim)
    regions = [f"region {i % args.regions:02d}" for i in range(args.images)]
    index, names = cultures.region_index(regions)
    languages = [f"lang{j:02d}" for j in range(args.languages)]
    matrix = args.images * args.images * 4
    hits: list[np.ndarray] = []

    def breakdown() -> None:
        hits.clear()
        for j, lang in enumerate(languages):
            noise = np.random.default_rng(args.seed + 1 + j).standard_normal(images.shape, dtype=np.float32)
            texts = images + NOISE * noise / np.sqrt(args.dim)
            ranks = cultures.region_ranks(images, texts, regions, lang)
            cultures.recall_rows([ranks])
            hits.append(ranks.hits("set", "t2i", 1))

    print(f"labclip cultures benchmark: {args.images} images in {args.regions} regions x {args.languages} languages, "
          f"dim {args.dim}, numpy {np.__version__}, {platform.machine()} {platform.system()}")
    print(f"one language's float32 similarity matrix: {matrix / 2**20:.1f} MiB (computed in blocks, never whole)")
    print()
    print(f"{'step':58} {'time s':>8} {'peak MiB':>9} {'x matrix':>9}")
    seconds, breakdown_peak = measure(breakdown)
    print(f"{'region x language breakdown (ranks both scopes, Wilson)':58} {seconds:8.2f} "
          f"{breakdown_peak / 2**20:9.1f} {breakdown_peak / matrix:9.2f}")
    table = np.stack(hits, axis=1)
    print(f"  (text→image R@1 over all images and languages: {table.mean():.1%}; the tests below run on these hits)")
    home = [[j] for j in range(min(args.regions, args.languages))] + [[]] * max(0, args.regions - args.languages)
    steps: list[tuple[str, Callable[[], object]]] = [
        (f"own-culture test ({args.permutations} permutations + bootstrap)",
         lambda: cultures.own_culture(table, index, home, args.permutations)),
        (f"heterogeneity chi-square, {args.languages} languages",
         lambda: [cultures.heterogeneity(table[:, j], index) for j in range(args.languages)]),
        ("regions ranked (cluster bootstrap per region)", lambda: cultures.ranked_regions(table, index, names)),
    ]
    for name, step in steps:
        seconds, peak = measure(step)
        print(f"{name:58} {seconds:8.2f} {peak / 2**20:9.1f} {peak / matrix:9.2f}")
    print()
    verdict = "within" if breakdown_peak < TARGET * matrix else "ABOVE"
    print(f"peak of the breakdown: {breakdown_peak / matrix:.2f}x one language's matrix ({verdict} the {TARGET:g}x "
          "target; it includes that language's caption embeddings)")
    if args.images != 3600:
        print("  (the target is defined at 3600 images, Crossmodal-3600's size; on a smaller set the fixed block of "
              f"{cultures.BLOCK_ELEMENTS / 2**20:g} Mi elements weighs more against the matrix)")


if __name__ == "__main__":
    main()
