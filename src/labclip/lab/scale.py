"""What the scale report (``notebooks/05_scale.ipynb``) shows: models × languages × strategies on a benchmark
caption set, with intervals and paired tests.

The run is :mod:`labclip.lab.scale_run` (its names are importable from here too; the notebook opens it with
``runs.start(scale.SCALE, ...)``), the words :mod:`labclip.lab.scale_narrative`, the figures
:mod:`labclip.lab.plots`. Every section is returned as one displayable output (:mod:`labclip.lab.markup`,
escaping always on), which the notebook's cell shows.
"""

from __future__ import annotations

import os

import pandas as pd
from matplotlib.figure import Figure

from .. import stats
from ..errors import LabclipError
from ..labels import p_value
from ..registry import FIRST_CAPTION, Published
from ..registry import published as registry_published
from . import plots, present
from .plots import HARDEST, hardest, heatmap_figure
from .runs import save_json
from .scale_narrative import (
    CAPTIONS_SHOWN,
    FACTORS,
    _setup,
    definition_text,
    licence_text,
    significance,
    summary_text,
)
from .scale_run import (
    ALL,
    ALPHA,
    DEFINITIONS,
    FIRST,
    KS,
    REFERENCE_CAPTIONS,
    SCALE,
    Heat,
    Result,
    ScaleRun,
    resolve_dataset,
)
from .wording import DIRECTIONS, banner_text, language_name, md, model_name

__all__ = ["ALL", "ALPHA", "CAPTIONS_SHOWN", "DEFINITIONS", "DIRECTIONS", "FACTORS", "FIRST", "HARDEST", "KS",
           "REFERENCE_CAPTIONS", "SCALE", "Heat", "Result", "ScaleRun", "definition_text", "hardest", "heatmap",
           "heatmap_figure", "licence_text", "provenance", "published", "published_rows", "recall_figure",
           "recall_section", "reference_beside", "resolve_dataset", "results_section", "save", "significance",
           "summary_text", "tests_section", "tests_summary", "title"]


def title(run: ScaleRun, text: str, report: str | None = None) -> present.Output:
    """Title (the report's own name under a user's title), untrained-model banner, licence and the model/data
    line on the first page."""
    head = present.masthead(run, text, f"{run.n_images} images · languages: {', '.join(map(language_name, run.languages))} · "
                              f"dataset: {run.dataset} · run started {run.started}", report)
    notes = []
    for label, model in list(run.models.items())[1:]:
        if banner_text(model):
            notes.append(f"**{md(model_name(label))} is an untrained stand-in: its numbers mean nothing.**")
    for label, reason in list(run.fallbacks.items())[1:]:
        if reason:
            notes.append(f"Requested model {md(model_name(run.requested[label]))} could not be loaded "
                         f"({md(reason)}); the untrained demo model stands in.")
    notes += [f"Skipped: {md(reason)}" for reason in run.skipped]
    notes.append(licence_text(run))
    return present.Output(head, present.note("\n\n".join(notes)))


def results_section(run: ScaleRun) -> present.Output:
    """Recall@1/5/10 with 95% intervals, one table per direction, one row per model, language and strategy."""
    tables = []
    for d, name in DIRECTIONS.items():
        rows = [{**_setup(r), **{f"R@{k}": format(r.estimates[f"{d}_acc{k}"], ".1%") for k in KS}}
                for r in run.results]
        n = {int(r.estimates[f"{d}_acc1"].n or 0) for r in run.results}
        unit = "images" if d == "i2t" else "captions"
        counted = f"{n.pop()} {unit}" if len(n) == 1 else f"{min(n)}–{max(n)} {unit}"
        tables.append(present.block(f"{name.capitalize()} ({counted})", present.table(pd.DataFrame(rows))))
    methods = "Wilson score (one observation per image)"
    if any(e.method != "wilson" for r in run.results for e in r.estimates.values() if e.hits is not None):
        methods += " or percentile bootstrap over images, seeded (several captions per image)"
    return present.Section("Recall@1/5/10 with 95% intervals",
                                f"{run.n_images} images. Recall@k: the share of queries whose right answer is among the "
                                f"first k. {definition_text(run)} Intervals: {methods}.", *tables)


def reference_beside(run: ScaleRun) -> present.Output:
    """The small bundled set's result beside the benchmark's, same model and language."""
    rows = []
    bench = {(r.model, r.language): r for r in run.results if r.strategy == "direct" and r.captions == FIRST}
    for ref in run.reference:
        big = bench.get((ref.model, ref.language))
        for d in DIRECTIONS:
            row = {"Model": model_name(ref.model), "Language": language_name(ref.language), "Direction": DIRECTIONS[d],
                   f"{run.reference_source} ({len(ref.ranks.i2t)} images)": format(ref.estimates[f"{d}_acc1"], ".1%")}
            if big is not None:
                row[f"{run.dataset} ({run.n_images} images)"] = format(big.estimates[f"{d}_acc1"], ".1%")
            rows.append(row)
    n = len(run.reference[0].ranks.i2t) if run.reference else 0
    heading = "The small reference set beside the benchmark"
    if not rows:
        return present.Section(heading, "The reference set shares no language with this run; nothing to place "
                                             "beside it.")
    return present.Section(heading, f"Recall@1 with 95% intervals, the first caption of each image: with {n} images one "
                             f"image moves the figure by {100 / n:.0f} percentage points, with {run.n_images} by "
                             f"{100 / run.n_images:.2g}.", present.table(pd.DataFrame(rows)))


def tests_section(run: ScaleRun, tests: pd.DataFrame) -> present.Output:
    """Paired tests (:meth:`ScaleRun.paired_tests`), one table per factor (languages, strategies, models)."""
    tables = []
    for factor, name in FACTORS.items():
        rows = tests[tests["factor"] == factor]
        if rows.empty:
            continue
        shown = pd.DataFrame({
            "First": rows["a"], "Second": rows["b"],
            "R@1, first": [format(e, ".1%") for e in rows["recall_a"]],
            "R@1, second": [format(e, ".1%") for e in rows["recall_b"]],
            "Only first right": rows["only_a"].astype(str),
            "Only second right": rows["only_b"].astype(str),
            "p": [p_value(p).replace(" ", "\u00a0") for p in rows["p_value"]],
            f"Significant at {ALPHA:.0%}": rows["significant"].map({True: "yes", False: "no"}),
        })
        tables.append(present.block(name, present.table(shown)))
    directions = sorted({DIRECTIONS[d] for d in tests["direction"]})
    lead = (f"Exact McNemar test on the per-image hits at Recall@1 ({' and '.join(directions) or 'text→image'}; "
            "image→text where a result has several captions per image), each pair on the same "
            f"{run.n_images} images; significant means p < {ALPHA:.0%}. Rows read model · language · strategy; "
            "\"only first right\" counts the images right with the first and wrong with the second.")
    return present.Section("Paired tests on the same images", lead, *tables)


def tests_summary(run: ScaleRun, tests: pd.DataFrame) -> present.Output:
    """What the paired tests say, in words."""
    return present.Section(None, summary_text(run, tests))


def recall_figure(run: ScaleRun) -> Figure:
    """Recall@1/5/10 per model, language and strategy in both directions, with 95% error bars."""
    return plots.recall_intervals([" · ".join(_setup(r).values()) for r in run.results],
                                  [r.estimates for r in run.results], KS)


def recall_section(fig: Figure) -> present.Output:
    """:func:`recall_figure` under its heading."""
    return present.Section("Recall at a glance", "Points: Recall@1, @5 and @10; bars: their 95% intervals.",
                                present.svg(fig))


def heatmap(run: ScaleRun, limit: int | None = None) -> present.Output:
    """Similarity heatmap of the first model and language; above ``limit`` images (default: as many as a page
    shows legibly), the hardest images only."""
    heat = run.heat
    if heat is None:
        raise LabclipError("run.evaluate() first: the heatmap shows its first model and language")
    fig, note = heatmap_figure(heat.sim, heat.owner, heat.ranks, run.captions.images, heat.captions, limit)
    return present.Section(f"Similarity heatmap ({model_name(heat.model)}, {language_name(heat.language)} "
                                f"captions)", md(note), present.svg(fig))


def published_rows(run: ScaleRun) -> list[Published]:
    """The published retrieval figures (``labclip.registry.PUBLISHED``) in the run's languages."""
    return [p for p in registry_published() if p.direction in DIRECTIONS and p.language in run.languages]


def published(run: ScaleRun) -> present.Output:
    """Published figures for the same question, in a marked box with their sources; not measured here (an empty
    output when there are none in the run's languages)."""
    rows = published_rows(run)
    if not rows:
        return present.Output()
    frame = pd.DataFrame({
        "Model": [model_name(p.model) for p in rows], "Benchmark": [p.benchmark for p in rows],
        "Metric": [f"{DIRECTIONS[p.direction]} {p.metric}" for p in rows],
        "Language": [language_name(p.language) for p in rows],
        "Captions": [CAPTIONS_SHOWN[FIRST] if p.definition == FIRST_CAPTION else p.definition for p in rows],
        "Value": [f"{p.value:.1f}%" for p in rows], "Source": [p.source for p in rows]})
    return present.published_box("XTD10 figures (1,000 images) were computed with CLIP_benchmark from the first caption of "
                      "each image (XTD10 has one per image); compare them with measured rows whose captions read "
                      "\"first per image\".", frame)


def save(run: ScaleRun, output_dir: str | os.PathLike | None, name: str = "05_scale") -> dict:
    """The recall table, the paired tests and provenance as one record, written as JSON (atomically) into
    ``output_dir`` when one is given."""
    return save_json(output_dir or None, name, {
        "provenance": run.provenance(), "captions_counted": DEFINITIONS, "results": run.table().to_dict("records"),
        "paired_tests": [{k: v.to_dict() if isinstance(v, stats.Estimate) else v for k, v in row.items()}
                         for row in run.paired_tests().to_dict("records")],
        "reference": [{"model": r.model, "language": r.language, "source": run.reference_source,
                       **{k: v.to_dict() for k, v in r.estimates.items()}} for r in run.reference]})


def provenance(run: ScaleRun, record: dict) -> present.Output:
    """The provenance table of a :func:`save` record: every model requested and used, the data, the timings."""
    prov = record["provenance"]
    rows: list[tuple[str, object]] = []
    for m in prov["models"]:
        used = m["used"]
        asked = "" if used.get("precision_requested") in (None, used.get("precision")) else \
            f"{used['precision_requested']} → "
        rows.append(("model requested → used (precision: why)",
                     f"{model_name(m['requested'])} → {model_name(used['name'])} "
                     f"({asked}{used.get('precision')}: {used.get('precision_reason')})"))
        if m["fallback_reason"]:
            rows.append(("why another model", m["fallback_reason"]))
    bench = prov["benchmark"]
    rows += [("dataset", prov["dataset"]), ("benchmark", bench["name"] if bench else "—"),
             ("captions sha256", prov["captions_sha256"]), ("images", prov["images"]),
             ("languages", ", ".join(prov["languages"])), ("translator", model_name(prov["translator"] or "—")),
             ("reference set", run.reference_source or "—"), ("started", prov["started"])]
    rows += [("skipped", reason) for reason in prov["skipped"]]
    return present.provenance_section(rows, prov)
