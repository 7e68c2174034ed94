"""``make reproduce``: the scale report's measured rows beside the published figures of the same definition.

A published figure (:data:`labclip.registry.PUBLISHED`) is comparable with a measured row only when model,
benchmark, direction, language, metric and definition (which captions are counted) are all the same; for each
such pair this prints the measured value with its 95% interval and whether the published value lies inside it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import stats
from ..errors import LabclipError
from ..hub import hub_reachable
from ..registry import DEFAULT_MODEL, DEFAULT_MULTILINGUAL, PUBLISHED, Published, resolve_model_name
from . import runs, scale
from .narrative import language_name

# Benchmark names as labclip.datasets spells them, and as published tables do.
BENCHMARK_NAMES = {"xtd10": "XTD10", "xm3600": "Crossmodal-3600"}
METRICS = {f"R@{k}": k for k in scale.KS}
OFFLINE = ("labclip: make reproduce skipped: it needs the network (the Hugging Face hub and the benchmark's "
           "files), which cannot be reached from here")


@dataclass(frozen=True)
class Comparison:
    """One published figure and the measured estimate with the same definition."""

    published: Published
    measured: stats.Estimate

    @property
    def inside(self) -> bool:
        """Whether the published value lies inside the measured 95% interval (both in percent)."""
        return 100 * self.measured.low <= self.published.value <= 100 * self.measured.high

    def line(self) -> str:
        p, e = self.published, self.measured
        return (f"{p.model} · {p.benchmark} · {scale.DIRECTIONS[p.direction]} {p.metric} · "
                f"{language_name(p.language)} · {p.definition}: measured {format(e, '.1%')} ({e.hits}/{e.n}), "
                f"published {p.value:.1f}% ({p.source}): "
                + ("inside the interval" if self.inside else "outside the interval"))


def benchmark_name(run: scale.ScaleRun) -> str:
    """The run's benchmark as published tables name it."""
    name = run.benchmark.name if run.benchmark is not None else run.dataset
    return BENCHMARK_NAMES.get(str(name).lower(), str(name))


def comparisons(run: scale.ScaleRun, table: Sequence[Published] = PUBLISHED) -> list[Comparison]:
    """Every (published, measured) pair of the same model, benchmark, direction, language, metric and definition.

    Only rows of a model that was itself loaded (no stand-in) and of captions as written count.
    """
    bench, out = benchmark_name(run), []
    for r in run.results:
        if r.strategy != "direct" or run.fallbacks.get(r.model):
            continue
        model = resolve_model_name(run.requested.get(r.model, r.model))
        for p in table:
            if (p.model, p.benchmark, p.language, p.definition) == (model, bench, r.language,
                                                                    scale.DEFINITIONS[r.captions]) \
                    and p.direction in scale.DIRECTIONS and p.metric in METRICS:
                out.append(Comparison(p, r.estimates[f"{p.direction}_acc{METRICS[p.metric]}"]))
    return out


def lines(run: scale.ScaleRun, table: Sequence[Published] = PUBLISHED) -> list[str]:
    """What ``make reproduce`` prints: one line per comparison, one per model with none."""
    found = comparisons(run, table)
    out = [c.line() for c in found]
    compared = {c.published.model for c in found}
    for label in run.models:
        model = resolve_model_name(run.requested.get(label, label))
        if model not in compared:
            out.append(f"{model} · {benchmark_name(run)}: no published figure with the same definition "
                       f"in {', '.join(language_name(lang) for lang in run.languages)}")
    inside = sum(c.inside for c in found)
    out.append(f"{inside} of {len(found)} published figures lie inside the measured 95% interval")
    return out


def main(argv: Sequence[str] | None = None, *, online: Callable[[], bool] = hub_reachable,
         table: Sequence[Published] = PUBLISHED) -> int:
    """Run the scale report's evaluation and print measured vs published; skip with one line offline."""
    parser = argparse.ArgumentParser(prog="make reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="xtd10", help="benchmark name or prepared folder (default: xtd10)")
    parser.add_argument("--models", nargs="+", default=[DEFAULT_MODEL, DEFAULT_MULTILINGUAL],
                        help="models to evaluate (default: OpenAI ViT-B/32 and the default multilingual model)")
    parser.add_argument("--langs", nargs="+", default=["en", "ru"], help="caption languages (default: en ru)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    args = parser.parse_args(argv)
    if not online():
        print(OFFLINE)
        return 0
    try:
        run = runs.start(scale.SCALE, args.models, dataset=args.dataset, languages=args.langs,
                         batch_size=args.batch_size, strict=True, precision=args.precision)
        run.evaluate(reference=None)
    except LabclipError as err:
        print(f"labclip: error: {err}", file=sys.stderr)
        return 2
    for line in lines(run, table):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
