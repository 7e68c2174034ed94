"""The cultures report (07_cultures): retrieval per image region and caption language, and the tests behind it.

:data:`CULTURES`, the run for :func:`labclip.lab.runs.start`, loads a caption set whose images carry a region
(Crossmodal-3600's ``image/locale``, or a ``region`` column; optionally ``culture_specific`` yes/no) and the models,
as the scale report does;
:meth:`CultureRun.evaluate` encodes each image once per model and each language's first captions once, and
scores them with :func:`labclip.cultures.region_ranks`. The section functions return what
``notebooks/07_cultures.ipynb`` displays, one output each (:mod:`labclip.lab.markup`, escaping always on).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import cultures as core
from .. import stats
from ..atomic import write_text
from ..data import flatten_captions
from ..errors import LabclipError
from . import plots, present, scale
from .narrative import language_name, md, model_name, p_value
from .provenance import Timings
from .runs import Kind, Loaded
from .wording import DIRECTIONS

ALPHA = 0.05
K = 1
DIRECTION = "t2i"
TABLE_LANGUAGES = 8  # languages per table of the region × language grid, so it fits an A4 page
YES, NO = ("yes", "true", "1"), ("no", "false", "0")


@dataclass
class CultureRun:
    """The scale run (caption set, models, timings), each image's region and the ranks computed so far."""

    base: scale.ScaleRun
    regions: list[str]
    culture_specific: np.ndarray | None = None
    results: dict[str, list[core.RegionRanks]] = field(default_factory=dict)
    spoken: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return self.base.languages

    @property
    def names(self) -> tuple[str, ...]:
        return core.region_index(self.regions)[1]

    @property
    def index(self) -> np.ndarray:
        return core.region_index(self.regions)[0]

    def home(self) -> dict[str, tuple[str, ...]]:
        """The evaluated languages spoken in each region: the set's ``region_language`` column, else
        :func:`labclip.cultures.home_languages` (Crossmodal-3600's table, or a region named by a language code)."""
        return core.home_languages(self.names, self.languages, {**core.XM3600_REGION_LANGUAGES, **self.spoken})

    def evaluate(self) -> pd.DataFrame:
        """Every model × language: first caption per image, ranked in the whole set and within each region."""
        table = self.base.captions
        for label, model in self.base.models.items():
            with self.base.timings.stage(f"encode images ({model_name(label)})"):
                images = model.encode_images(table.paths, self.base.batch_size)
            self.results[label] = []
            for lang in self.languages:
                captions, _ = flatten_captions(table, lang, per_image=1)
                with self.base.timings.stage(f"encode captions ({model_name(label)}, {lang})"):
                    texts = model.encode_texts(captions, self.base.batch_size)
                with self.base.timings.stage("region × language ranks"):
                    self.results[label].append(core.region_ranks(images, texts, self.regions, lang))
        return self.table()

    def table(self) -> pd.DataFrame:
        """One row per model, language, region (``"all"``: every image), scope, direction and k, with Wilson
        intervals."""
        return pd.DataFrame([{"model": label, **row} for label, results in self.results.items()
                             for row in core.recall_rows(results)])

    def hits(self, label: str, scope: str = core.SET, direction: str = DIRECTION, k: int = K) -> np.ndarray:
        """``(n_images, n_languages)`` hits of one model."""
        return np.stack([r.hits(scope, direction, k) for r in self.results[label]], axis=1)

    def own_culture(self, label: str, scope: str = core.SET, seed: int = 0,
                    n_resamples: int = core.N_PERMUTATIONS) -> core.OwnCulture | None:
        """The own-culture test of one model; ``None`` when no evaluated language is spoken in some regions and
        not in others, or fewer than two languages."""
        home = self.home()
        spoken = [[self.languages.index(lang) for lang in home[name]] for name in self.names]
        if len(self.languages) < 2:
            return None
        try:
            return core.own_culture(self.hits(label, scope), self.index, spoken, n_resamples, seed)
        except LabclipError:
            return None

    def heterogeneity(self, label: str, scope: str = core.SET) -> pd.DataFrame:
        """Chi-square test of region × hit per language, Holm-corrected over the languages."""
        rows = []
        for r in self.results[label]:
            test = core.heterogeneity(r.hits(scope, DIRECTION, K), r.regions)
            if test is not None:
                rows.append({"language": r.language, "chi2": test.statistic, "dof": test.dof,
                             "p_value": test.p_value, "min_expected": test.min_expected})
        frame = pd.DataFrame(rows, columns=["language", "chi2", "dof", "p_value", "min_expected"])
        frame["p_holm"] = holm(frame["p_value"])
        return frame

    def model_tests(self, scope: str = core.SET) -> pd.DataFrame:
        """Each model against the first on the same images: exact McNemar per region and language, Holm-corrected
        over all of them."""
        labels = list(self.results)
        rows = []
        for other in labels[1:]:
            for a, b in zip(self.results[labels[0]], self.results[other]):
                for i, name in enumerate(a.names):
                    member = a.regions == i
                    test = stats.paired_test(a.hits(scope, DIRECTION, K)[member], b.hits(scope, DIRECTION, K)[member])
                    rows.append({"a": labels[0], "b": other, "language": a.language, "region": name,
                                 "only_a": test.only_a, "only_b": test.only_b, "n": test.n, "p_value": test.p_value})
        frame = pd.DataFrame(rows, columns=["a", "b", "language", "region", "only_a", "only_b", "n", "p_value"])
        frame["p_holm"] = holm(frame["p_value"])
        return frame


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests``)."""
    p = np.asarray(p_values, dtype=np.float64)
    if not len(p):
        return p
    from statsmodels.stats.multitest import multipletests

    return multipletests(p, alpha=ALPHA, method="holm")[1]


def regions_of(table, dataset: str) -> tuple[list[str], np.ndarray | None, dict[str, tuple[str, ...]]]:
    """Each image's region and, where the set says, whether it is culture-specific (``culture_specific``: yes/no)
    and which languages are spoken in its region (``region_language``: codes separated by spaces or commas).

    Raises:
        LabclipError: no ``region`` column, an empty region, a ``culture_specific`` cell other than yes/no, or a
            ``region_language`` that differs between images of one region (the image is named).
    """
    extra = getattr(table, "extra", {})
    if "region" not in extra:
        hint = (" (a Crossmodal-3600 folder prepared by an older labclip: delete it so it is prepared again "
                "with image/locale)" if getattr(table, "attrs", {}).get("benchmark") is not None else "")
        raise LabclipError(f"{dataset}: no 'region' column: the cultures report needs the region each image was "
                           f"taken in{hint}")
    names = table["image"]
    regions = [str(r).strip() for r in extra["region"]]
    for name, region in zip(names, regions):
        if not region:
            raise LabclipError(f"{dataset}: image '{name}' has an empty 'region' cell")
    specific = None
    if "culture_specific" in extra:
        values = []
        for name, cell in zip(names, extra["culture_specific"]):
            cell = str(cell).strip().lower()
            if cell not in YES + NO:
                raise LabclipError(f"{dataset}: image '{name}': 'culture_specific' must be yes or no, got {cell!r}")
            values.append(cell in YES)
        specific = np.array(values)
    spoken: dict[str, tuple[str, ...]] = {}
    for name, region, cell in zip(names, regions, extra.get("region_language", [None] * len(regions))):
        if cell is None:
            continue
        codes = tuple(dict.fromkeys(c for c in str(cell).replace(",", " ").split()))
        if spoken.setdefault(region, codes) != codes:
            raise LabclipError(f"{dataset}: image '{name}': region_language {' '.join(codes) or 'empty'!r} differs "
                               f"from {' '.join(spoken[region]) or 'empty'!r} given for region {region!r} before")
    return regions, specific, spoken


def _prepare_cultures(timings: Timings, *, dataset: str | os.PathLike,
                      languages: Sequence[str] | None = None) -> tuple[dict[str, Any], tuple]:
    """The caption set as the scale run reads it, and each image's region (checked before any model loads)."""
    inputs = scale.SCALE.prepare(timings, dataset=dataset, languages=languages)
    return inputs, regions_of(inputs["captions"], str(dataset))


def _build_cultures(prepared: tuple[dict[str, Any], tuple], loaded: list[Loaded], skipped: list[str], *,
                    timings: Timings, batch_size: int | None) -> CultureRun:
    inputs, (regions, specific, spoken) = prepared
    base = scale.SCALE.build(inputs, loaded, skipped, timings=timings, batch_size=batch_size)
    return CultureRun(base, regions, specific, spoken=spoken)


CULTURES = Kind(_prepare_cultures, _build_cultures, many=True, default_for="07_cultures")
"""The cultures run for :func:`labclip.lab.runs.start`: ``runs.start(CULTURES, models, dataset=...,
languages=...)``, the scale run's loading (:data:`labclip.lab.scale.SCALE`) plus each image's region
(:func:`regions_of`); ``precision=None`` is ``default_for``'s default, recorded as such."""


# ---- display -----------------------------------------------------------------------------------------

def _pct(e) -> str:
    return f"{100 * e.value:.0f} [{100 * e.low:.0f}, {100 * e.high:.0f}]"


def title(run: CultureRun, text: str, report: str | None = None) -> present.Output:
    """Title (the report's own name under a user's title), banners, licence, and what the regions are."""
    counts = np.bincount(run.index)
    home = run.home()
    mapped = [f"{md(name)}: {', '.join(map(language_name, langs))}" for name, langs in home.items() if langs]
    table_note = ("the set's region_language column" if run.spoken else
                  "Crossmodal-3600's table (labclip.cultures.XM3600_REGION_LANGUAGES: each locale was chosen for "
                  "one of its 36 languages, and the locale code is that language's)")
    about = (f"{len(run.names)} regions, {_span(counts)} images each. Each image is scored with the "
             "first caption of each language (CLIP_benchmark's definition). Two scopes: **whole set**, "
             f"{core.SCOPES[core.SET]}; **within region**, {core.SCOPES[core.REGION]}; within a region there are "
             "fewer distractors, so the two are not comparable figure for figure. "
             f"Languages spoken in each region, from {table_note}, or a region named by a language's code: "
             + ("; ".join(mapped) if mapped else "none of the evaluated languages") + ".")
    return present.Output(scale.title(run.base, text, report),
                          present.Section("Regions and how retrieval is scored", about))


def _span(counts: np.ndarray) -> str:
    return f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"


def heatmap(run: CultureRun, scope: str = core.SET, direction: str = DIRECTION, k: int = K) -> present.Output:
    """Region × language recall of every model on one shared colour scale (0–100%), then the same grid as a
    table with 95% Wilson intervals."""
    frame = run.table()
    frame = frame[(frame["scope"] == scope) & (frame["direction"] == direction) & (frame["k"] == k)
                  & (frame["region"] != "all")]
    names, langs = list(run.names), run.languages
    labels = list(run.results)
    grids = {model_name(label): frame[frame["model"] == label].pivot(index="region", columns="language",
                                                                      values="recall")
             .reindex(index=names, columns=langs).to_numpy() * 100 for label in labels}
    fig = plots.region_heatmap(grids, names, langs, f"{DIRECTIONS[direction]} R@{k} (%)")
    tables = []
    for label in labels:
        rows = frame[frame["model"] == label]
        cell = {(r["region"], r["language"]): f"{100 * r['recall']:.0f} [{100 * r['low']:.0f}, {100 * r['high']:.0f}]"
                for r in rows.to_dict("records")}
        for start in range(0, len(langs), TABLE_LANGUAGES):
            chunk = langs[start:start + TABLE_LANGUAGES]
            shown = pd.DataFrame([{"Region": name, **{lang: cell[(name, lang)] for lang in chunk}} for name in names])
            tables.append(present.block(model_name(label), present.table(shown)))
    return present.Section(f"Recall by image region and caption language ({DIRECTIONS[direction]} R@{k}, "
            f"{'whole set' if scope == core.SET else 'within region'})",
            ("Each image's caption competes with every image of the set (the published definition). "
             if scope == core.SET else "Each caption competes only with the images of its own region (culture-local; "
             "fewer distractors than in the whole set, so not comparable figure for figure). ")
            + "One colour scale for every panel: 0% dark, 100% bright. The tables give each cell in percent with its "
            f"95% Wilson interval; a region has {np.bincount(run.index).min()} or more images, so a cell moves by "
            f"up to {100 / np.bincount(run.index).min():.0f} points per image.", present.png(fig), *tables)


def ranked(run: CultureRun, scope: str = core.SET) -> present.Output:
    """Regions from worst to best (recall pooled over the languages, with its interval) and the heterogeneity
    test in words, one section per model."""
    sections = []
    for label in run.results:
        hits = run.hits(label, scope)
        rows = core.ranked_regions(hits, run.index, run.names)
        shown = pd.DataFrame([{"Rank (worst first)": i + 1, "Region": r["region"], "Images": r["n_images"],
                               f"{DIRECTIONS[DIRECTION]} R@{K}, all languages": _pct(r["estimate"])}
                              for i, r in enumerate(rows)])
        tests = run.heterogeneity(label, scope)
        sections.append(present.Section(f"Regions ranked by recall ({model_name(label)})",
                f"Recall pooled over {len(run.languages)} language(s), in percent with its 95% interval "
                f"({rows[0]['estimate'].method} over images). "
                + heterogeneity_text(tests, len(run.languages)),
                present.table(shown)))
    return present.Output(*sections)


def heterogeneity_text(tests: pd.DataFrame, n_languages: int) -> str:
    """Whether the regions differ more than chance, per language, in words (Holm-corrected)."""
    if tests.empty:
        return ("No heterogeneity test: in every language all images were hits, or all misses, or there is one "
                "region.")
    significant = tests[tests["p_holm"] < ALPHA]
    rough = tests[tests["min_expected"] < 5]
    text = (f"Chi-square test of region × hit/miss per language, p-values Holm-corrected over the "
            f"{len(tests)} language(s): ")
    if significant.empty:
        text += (f"in no language do the regions differ more than chance at {ALPHA:.0%} (smallest corrected "
                 f"{p_value(tests['p_holm'].min())}).")
    else:
        text += (f"the regions differ more than chance in {len(significant)} of {len(tests)}: "
                 + ", ".join(f"{language_name(r['language'])} ({p_value(r['p_holm'])})" for r in significant.to_dict("records"))
                 + ".")
    if len(tests) < n_languages:
        text += (f" {n_languages - len(tests)} language(s) have no test: every image a hit, or every image a "
                 "miss.")
    if not rough.empty:
        text += (f" In {len(rough)} language(s) some expected count is below 5, where the chi-square "
                 "approximation is rough.")
    return text


def own_culture_section(run: CultureRun, tests: dict[str, core.OwnCulture | None]) -> present.Output:
    """The own-culture test of each model (:meth:`CultureRun.own_culture`), with its per-language effects, and what
    it says in words."""
    sections = []
    for label, test in tests.items():
        heading = f"Own-culture advantage ({model_name(label)})"
        if test is None:
            sections.append(present.Section(heading, "No test: it needs at least two languages, and a language "
                                                          "spoken in some of the regions and not in others."))
            continue
        per = pd.DataFrame([{"Language": language_name(run.languages[i]),
                             "Effect (points, 95% interval)": f"{v.value:+.1f} [{v.low:+.1f}, {v.high:+.1f}]"}
                            for i, v in test.per_language.items()])
        sections.append(present.Section(heading, own_culture_text(test, run.base.n_images), present.table(per)))
    return present.Output(*sections)


def own_culture_text(test: core.OwnCulture, n_images: int) -> str:
    """The own-culture test in words; a claim only where the test supports it."""
    how = (f"every one of the {test.n_permutations} permutations" if test.exact
           else f"{test.n_permutations} random permutations, seeded")
    method = (f"For each image, its {DIRECTIONS[DIRECTION]} hit at R@{K} in a language minus its mean hit in "
              "the other languages (paired: how hard an image is cancels); per language, the mean over images "
              "from where it is spoken minus the mean over the other images; averaged over languages. "
              f"Interval: percentile bootstrap over images within their region; p-value: permutation test of the "
              f"region labels over the {n_images} images ({how}).")
    effect = f"{test.effect:+.1f} points [{test.low:+.1f}, {test.high:+.1f}]"
    if test.significant(ALPHA) and test.effect > 0:
        verdict = (f"Captions retrieve images from where their language is spoken better than other images: "
                   f"{effect}, {p_value(test.p_value)}.")
    elif test.significant(ALPHA):
        verdict = (f"Captions retrieve images from where their language is spoken worse than other images: "
                   f"{effect}, {p_value(test.p_value)}.")
    else:
        verdict = (f"The test finds no own-culture advantage beyond chance at {ALPHA:.0%}: {effect}, "
                   f"{p_value(test.p_value)}. This does not show there is none: the interval allows effects from "
                   f"{test.low:+.1f} to {test.high:+.1f} points.")
    return f"{verdict} {method}"


def model_tests_section(tests: pd.DataFrame) -> present.Output:
    """Each model against the first, per region and language (:meth:`CultureRun.model_tests`), with Holm's
    correction stated."""
    if tests.empty:
        return present.Section("Models on the same images", "One model in this run: no model comparison.")
    significant = tests[tests["p_holm"] < ALPHA]
    lead = (f"Exact McNemar test of {DIRECTIONS[DIRECTION]} R@{K} hits on each region's images, per language: "
            f"{len(tests)} tests, p-values Holm-corrected over all of them. ")
    if significant.empty:
        lead += (f"No difference is significant at {ALPHA:.0%} after the correction (smallest corrected "
                 f"{p_value(tests['p_holm'].min())}).")
        return present.Section("Models on the same images", lead)
    lead += f"{len(significant)} of {len(tests)} are significant at {ALPHA:.0%} after the correction:"
    shown = pd.DataFrame({"First": significant["a"].map(model_name), "Second": significant["b"].map(model_name),
                          "Region": significant["region"], "Language": significant["language"].map(language_name),
                          "Only first right": significant["only_a"], "Only second right": significant["only_b"],
                          "Images": significant["n"],
                          "p (Holm)": [p_value(p) for p in significant["p_holm"]]}).astype(str)
    return present.Section("Models on the same images", lead, present.table(shown))


def culture_specific_section(run: CultureRun, scope: str = core.SET) -> present.Output:
    """Recall on the images the set marks culture-specific beside the others (Wilson intervals; no test); an empty
    output for a set without the mark."""
    if run.culture_specific is None:
        return present.Output()
    rows = []
    for label in run.results:
        for r in run.results[label]:
            hits = r.hits(scope, DIRECTION, K)
            row = {"Model": model_name(label), "Language": language_name(r.language)}
            for name, member in (("culture-specific", run.culture_specific), ("other", ~run.culture_specific)):
                row[f"{name} ({int(member.sum())} images)"] = (_pct(stats.proportion(hits[member]))
                                                               if member.any() else "—")
            rows.append(row)
    return present.Section("Culture-specific images", f"{DIRECTIONS[DIRECTION]} R@{K} in percent with 95% Wilson intervals "
            "on the images the set marks culture_specific = yes, beside the others. Descriptive only: no test is "
            "made here.", present.table(pd.DataFrame(rows)))


def save(run: CultureRun, output_dir: str | os.PathLike | None, tests: dict | None = None,
         name: str = "07_cultures") -> dict:
    """The region × language table, the tests and the provenance as one record, written as JSON (atomically) into
    ``output_dir`` when one is given."""
    tests = tests if tests is not None else {label: run.own_culture(label) for label in run.results}
    record: dict[str, Any] = {
        "provenance": run.base.provenance(),
        "scopes": core.SCOPES,
        "region_languages": {k: list(v) for k, v in run.home().items()},
        "results": run.table().to_dict("records"),
        "own_culture": {label: None if t is None else {**t.__dict__,
                        "per_language": {run.languages[i]: v.to_dict() for i, v in t.per_language.items()}}
                        for label, t in tests.items()},
        "heterogeneity": {label: run.heterogeneity(label).to_dict("records") for label in run.results},
        "model_tests": run.model_tests().to_dict("records"),
    }
    if output_dir:
        write_text(Path(output_dir) / f"{name}.json", json.dumps(record, indent=2, ensure_ascii=False, default=str))
    return record


def provenance(run: CultureRun, record: dict) -> present.Output:
    """The provenance table of a :func:`save` record."""
    prov = record["provenance"]
    rows = [("dataset", prov["dataset"]), ("images", prov["images"]), ("regions", len(run.names)),
            ("languages", ", ".join(prov["languages"])), ("captions sha256", prov["captions_sha256"]),
            ("started", prov["started"])]
    rows += [("skipped", reason) for reason in prov["skipped"]]
    return present.provenance_section(rows, prov)
