"""The scale report: models × languages × strategies on a benchmark caption set, with intervals and paired tests.

:func:`start` loads a benchmark (``"xtd10"``, ``"xm3600"`` or a prepared folder / caption file) and the
models; :meth:`ScaleRun.evaluate` computes Recall@1/5/10 in both directions with 95% intervals for every
model, language and strategy, and exact McNemar tests between languages, strategies and models on the
same images. The bundled small caption set is evaluated with the same model as the small-n reference.
The display functions at the end are what ``notebooks/05_scale.ipynb`` calls.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .. import stats
from ..atomic import write_text
from ..bulk import DEFAULT_DECODE, encode_files
from ..bulk import record as bulk_record
from ..config import CAPTIONS_DIR
from ..data import flatten_captions, load_captions
from ..datasets import BENCHMARKS, read_prepared
from ..datasets import load as load_benchmark
from ..errors import LabclipError
from ..metrics import RetrievalRanks, retrieval_ranks, similarity
from ..model import ClipModel, describe
from ..registry import FIRST_CAPTION, Published
from ..registry import published as published_figures
from ..translate import Translator, translator_name
from .experiment import load_models
from .narrative import banner_text, language_name, md, model_name, p_value
from .provenance import Timings, machine, now, package_versions, sha256_file

KS = (1, 5, 10)
DIRECTIONS = {"t2i": "text→image", "i2t": "image→text"}
REFERENCE_CAPTIONS = CAPTIONS_DIR / "short.csv"
HARDEST = 20
ALPHA = 0.05
# Which captions a result counts. FIRST is CLIP_benchmark's definition, that of the published figures: the first
# caption of each image (clip_benchmark/datasets/crossmodal3600.py keeps captions[0]); ALL counts every caption.
FIRST = "first"
ALL = "all"
DEFINITIONS = {FIRST: FIRST_CAPTION,
               ALL: "all captions of each image"}


@dataclass
class Result:
    """Retrieval of one model, caption language and strategy on the benchmark images, with the first caption
    of each image (``captions == FIRST``) or all of them (``ALL``)."""

    model: str
    language: str
    strategy: str
    ranks: RetrievalRanks
    estimates: dict[str, stats.Estimate]
    captions: str = FIRST

    def hits(self, direction: str, k: int = 1) -> np.ndarray:
        """Per-image hits: image→text per image; text→image per image when each has one caption."""
        ranks = self.ranks.i2t if direction == "i2t" else self.ranks.t2i
        return ranks <= k


@dataclass
class ScaleRun:
    """A benchmark caption set, the models evaluated on it, and the results computed so far."""

    captions: pd.DataFrame
    models: dict[str, ClipModel]
    requested: dict[str, str]
    fallbacks: dict[str, str | None]
    languages: list[str]
    dataset: str
    batch_size: int | None = None
    translator: str | None = None
    timings: Timings = field(default_factory=Timings)
    started: str = field(default_factory=now)
    results: list[Result] = field(default_factory=list)
    reference: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reference_source: str = ""
    _heat: tuple | None = None

    @property
    def benchmark(self):
        """The :class:`labclip.datasets.Benchmark` behind the caption set, or ``None`` for a plain file."""
        return self.captions.attrs.get("benchmark")

    @property
    def n_images(self) -> int:
        return len(self.captions)

    @property
    def untrained(self) -> bool:
        return any(m.untrained for m in self.models.values())

    def evaluate(self, reference: str | os.PathLike | None = REFERENCE_CAPTIONS) -> pd.DataFrame:
        """Every model × language × strategy on the benchmark, and the small reference set with the first model.

        Strategies: ``direct`` (the captions as written) and, with a translator, ``translated`` (each
        non-English caption machine-translated to English first). A translator that can't be loaded
        is skipped and listed in :attr:`skipped`. Each is scored with the first caption of each image
        (:data:`FIRST`, CLIP_benchmark's definition) and, where an image has several captions, with all of
        them as well (:data:`ALL`); the paired tests use the first.
        """
        for label, model in self.models.items():
            with self.timings.stage(f"encode images ({model_name(label)})"):
                images = encode_files(model, list(self.captions["path"]), batch_size=self.batch_size)
            for lang in self.languages:
                captions, owner = flatten_captions(self.captions, lang)
                self.results += self._results(label, model, images, lang, "direct", captions, owner)
                if self.translator and lang != "en":
                    translated = self._translate(lang, captions)
                    if translated is not None:
                        self.results += self._results(label, model, images, lang, "translated", translated, owner)
        if reference is not None:
            self._evaluate_reference(Path(reference))
        return self.table()

    def _results(self, label: str, model: ClipModel, images: np.ndarray, lang: str, strategy: str,
                 captions: list[str], owner: np.ndarray) -> list[Result]:
        """The :data:`FIRST` result, and the :data:`ALL` one where some image has several captions; the
        captions are encoded once."""
        with self.timings.stage(f"encode captions ({model_name(label)}, {lang}, {strategy})"):
            texts = model.encode_texts(captions, self.batch_size)
        with self.timings.stage("metrics"):
            first = np.searchsorted(owner, np.arange(len(images)))
            out = [self._scored(label, lang, strategy, FIRST, images, texts[first], None, [captions[i] for i in first])]
            if len(captions) > len(images):
                out.append(self._scored(label, lang, strategy, ALL, images, texts, owner, captions))
            return out

    def _scored(self, label: str, lang: str, strategy: str, definition: str, images: np.ndarray, texts: np.ndarray,
                owner: np.ndarray | None, captions: list[str]) -> Result:
        sim = similarity(images, texts, dtype=np.float32)
        ranks = retrieval_ranks(sim, owner)
        if self._heat is None and len(images) == self.n_images:
            self._heat = (label, lang, sim, ranks.owner, captions, ranks.i2t)
        return Result(label, lang, strategy, ranks, ranks.estimates(KS), definition)

    def _translate(self, lang: str, captions: list[str]) -> list[str] | None:
        name = translator_name(self.translator, lang)
        try:
            with self.timings.stage(f"translate {lang}"):
                return Translator(name).translate(captions)
        except LabclipError as err:
            self.skipped.append(f"translation {lang}→en ({name}): {err}")
            return None

    def _evaluate_reference(self, path: Path) -> None:
        table = load_captions(path, languages=None)
        label, model = next(iter(self.models.items()))
        with self.timings.stage("reference set"):
            images = model.encode_images(table["path"], self.batch_size)
        for lang in [lang for lang in self.languages if lang in table.attrs["languages"]]:
            captions, owner = flatten_captions(table, lang)
            self.reference.append(self._results(label, model, images, lang, "direct", captions, owner)[0])
        self.reference_source = path.name

    def table(self) -> pd.DataFrame:
        """One row per model, language, strategy, captions counted (:data:`FIRST` or :data:`ALL`), direction and
        k: the recall with its interval and counts."""
        rows = []
        for r in self.results:
            for direction in DIRECTIONS:
                for k in KS:
                    e = r.estimates[f"{direction}_acc{k}"]
                    rows.append({"model": r.model, "language": r.language, "strategy": r.strategy,
                                 "captions": r.captions,
                                 "direction": direction, "k": k, "recall": e.value, "low": e.low, "high": e.high,
                                 "hits": e.hits, "n": e.n, "method": e.method})
        return pd.DataFrame(rows)

    def paired_tests(self, direction: str = "t2i", k: int = 1) -> pd.DataFrame:
        """Exact McNemar tests of Recall@k on the same images.

        Each language against the first, each translated result against its direct one, and each model
        against the first, with the same language and strategy, all with the first caption of each image
        (:data:`FIRST`). Text→image pairs need one caption per image in both results; otherwise the
        image→text hits are paired.
        """
        rows = []
        by_key = {(r.model, r.language, r.strategy): r for r in self.results if r.captions == FIRST}
        first_model, first_lang = next(iter(self.models)), self.languages[0]
        for (model, lang, strategy), r in by_key.items():
            pairs = []
            if lang != first_lang and (model, first_lang, "direct") in by_key:
                pairs.append(("language", by_key[(model, first_lang, "direct")], r))
            if strategy == "translated":
                pairs.append(("strategy", by_key[(model, lang, "direct")], r))
            if model != first_model and (first_model, lang, strategy) in by_key:
                pairs.append(("model", by_key[(first_model, lang, strategy)], r))
            for factor, a, b in pairs:
                d = direction if len(a.ranks.t2i) == len(b.ranks.t2i) == self.n_images else "i2t"
                test = stats.paired_test(a.hits(d, k), b.hits(d, k))
                rows.append({"factor": factor, "a": _label(a), "b": _label(b), "direction": d, "k": k,
                             "recall_a": stats.proportion(a.hits(d, k)), "recall_b": stats.proportion(b.hits(d, k)),
                             "only_a": test.only_a, "only_b": test.only_b, "n": test.n, "p_value": test.p_value,
                             "significant": test.significant(ALPHA)})
        return pd.DataFrame(rows, columns=["factor", "a", "b", "direction", "k", "recall_a", "recall_b", "only_a",
                                           "only_b", "n", "p_value", "significant"])

    def provenance(self) -> dict:
        """Inputs, models (requested, used, why), software, machine and timings of this run."""
        bench = self.benchmark
        label, first = next(iter(self.models.items()))
        return {
            "started": self.started,
            "requested_model": self.requested[label],
            "fallback_reason": self.fallbacks[label],
            "model": describe(first),
            "dataset": self.dataset,
            "benchmark": None if bench is None else {"name": bench.name, "captions_licence": bench.captions_licence,
                                                     "images_licence": bench.images_licence,
                                                     "noncommercial": bench.noncommercial,
                                                     "citation": bench.citation},
            "captions_sha256": sha256_file(self.captions.attrs["source"]),
            "images": self.n_images, **bulk_record(DEFAULT_DECODE),
            "languages": self.languages,
            "models": [{"requested": self.requested[label], "used": describe(model),
                        "fallback_reason": self.fallbacks[label]} for label, model in self.models.items()],
            "translator": self.translator,
            "skipped": self.skipped,
            "versions": package_versions(),
            "machine": machine(),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _label(r: Result) -> str:
    return f"{model_name(r.model)} · {r.language} · {r.strategy}"


def resolve_dataset(dataset: str | os.PathLike, languages: Sequence[str] | None = None) -> pd.DataFrame:
    """A benchmark name (prepared on first use), a prepared folder, or a caption file, as a caption set.

    Images are not decoded here: the encoder reads each one once, and a broken image fails there.
    """
    name = str(dataset)
    if name.lower() in BENCHMARKS:
        return load_benchmark(name, languages)
    path = Path(name)
    if path.is_dir():
        path = path / "captions.jsonl"
    if not path.is_file():
        raise LabclipError(f"dataset {name!r} is neither a benchmark ({', '.join(BENCHMARKS)}) nor a caption "
                           "file or prepared folder")
    return read_prepared(path, languages, check_images=False)


def start(dataset: str | os.PathLike, models: Sequence[str], languages: Sequence[str] | None = None,
          translator: str | None = None, batch_size: int | None = None, strict: bool = False,
          precision: str | None = None, default_for: str = "05_scale") -> ScaleRun:
    """Load the benchmark and the models (the demo model stands in for one that can't be loaded unless ``strict``).

    Args:
        dataset: ``"xtd10"``, ``"xm3600"``, a prepared benchmark folder, or a caption file.
        models: model ids, aliases, directories or ``"demo"``, loaded by
            :func:`labclip.lab.experiment.load_models`: the first falls back to the demo model when it is not
            cached and the hub cannot be reached (unless ``strict``); any other model that can't be loaded
            (offline, broken files) is left out and listed in :attr:`ScaleRun.skipped`. The first loaded is the
            reference for model tests.
        languages: caption languages; ``None``: all of the set's (the first is the reference language).
        translator: translation model template for the ``translated`` strategy, ``None`` to skip it.
        batch_size: encoder batch size (``None``: the model's default).
        strict: fail when a model can't be loaded.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`labclip.load_model`); ``None``:
            the default for ``default_for`` (:data:`labclip.precision.DEFAULTS`), recorded as such.
        default_for: the notebook or command whose default precision applies.

    Raises:
        LabclipError: unknown dataset or language, no model, a name that is no model, or an unavailable
            first model in strict mode.
    """
    if not models:
        raise LabclipError("the scale report needs at least one model")
    timings = Timings()
    with timings.stage("load captions"):
        table = resolve_dataset(dataset, languages)
    langs = list(languages or table.attrs["languages"])
    loaded, requested, fallbacks, skipped = {}, {}, {}, []
    each = load_models(list(dict.fromkeys(models)), skipped, strict=strict, precision=precision,
                       default_for=default_for)
    while True:
        started = time.perf_counter()
        one = next(each, None)
        if one is None:
            break
        timings[f"load model {model_name(one.requested)}"] = time.perf_counter() - started
        loaded[one.requested], requested[one.requested], fallbacks[one.requested] = \
            one.model, one.requested, one.fallback_reason
    if not loaded:
        raise LabclipError("no model could be loaded: " + "; ".join(skipped))
    return ScaleRun(table, loaded, requested, fallbacks, langs, str(dataset) if str(dataset).lower() in BENCHMARKS
                    else Path(dataset).name, batch_size, translator or None, timings, skipped=skipped)


# ---- prose -------------------------------------------------------------------------------------------

FACTORS = {"language": "Languages", "strategy": "Strategies", "model": "Models"}


def significance(test: dict | pd.Series, alpha: float = ALPHA) -> str:
    """One sentence on a paired test, e.g. "English vs Russian: 54.0% vs 0.4% ... significant at 5% (p = 0.001)"."""
    verdict = "significant" if test["p_value"] < alpha else "not significant"
    return (f"{test['a']} vs {test['b']} ({DIRECTIONS[test['direction']]} R@{test['k']}): "
            f"{test['recall_a']:.1%} vs {test['recall_b']:.1%}; {_images(test['only_a'])} right only with the "
            f"first, {_images(test['only_b'])} only with the second; the difference is {verdict} at {alpha:.0%} "
            f"(exact McNemar, {p_value(test['p_value'])}).")


def _width(r: Result) -> float:
    e = r.estimates["t2i_acc1"]
    return e.high - e.low


def _images(n: int) -> str:
    return f"{n} image{'' if n == 1 else 's'}"


def licence_text(run: ScaleRun) -> str:
    """What the first page says about the data's licence."""
    bench = run.benchmark
    if bench is None:
        return (f"Caption set {run.dataset}: not one of labclip's known benchmarks; check its licence before "
                "sharing this report.")
    text = (f"**Dataset:** {bench.title}. Captions: {bench.captions_licence}. Images: {bench.images_licence}. "
            f"Cite: {bench.citation}")
    if bench.noncommercial:
        text += " **Noncommercial research use only:** this report and its figures may not be used commercially."
    return text


def summary_text(run: ScaleRun, tests: pd.DataFrame) -> str:
    """The paired tests in words, per factor: every significant difference in a sentence with its p-value,
    how many are not significant and their smallest p-value; then the interval widths of the reference set
    beside the benchmark's. Every number comes from this run."""
    lines = []
    for factor, name in FACTORS.items():
        rows = tests[tests["factor"] == factor]
        if len(rows) == 1:
            lines.append(f"- {name}: {md(significance(rows.iloc[0]))}")
            continue
        if rows.empty:
            continue
        significant, rest = rows[rows["p_value"] < ALPHA], rows[rows["p_value"] >= ALPHA]
        smallest = f"smallest {p_value(rest['p_value'].min())}" if not rest.empty else ""
        if significant.empty:
            lines.append(f"- {name}: none of the {len(rows)} differences is significant at {ALPHA:.0%} ({smallest}).")
            continue
        verb = "is" if len(significant) == 1 else "are"
        others = f"; the other {len(rest)} {'is' if len(rest) == 1 else 'are'} not ({smallest})" if smallest else ""
        lines.append(f"- {name}: {len(significant)} of {len(rows)} differences {verb} significant at "
                     f"{ALPHA:.0%}{others}:")
        lines += [f"    - {md(significance(row))}" for _, row in significant.iterrows()]
    if tests.empty:
        lines.append("- No paired comparison: one model, one language and no translation in this run.")
    if run.reference:
        n = len(run.reference[0].ranks.i2t)
        widths = [_width(r) for r in run.reference]
        big = [_width(r) for r in run.results if r.strategy == "direct" and r.captions == FIRST]
        lines.append(f"- On the {n}-image reference set the widest text→image R@1 interval spans "
                     f"{100 * max(widths):.0f} percentage points; on the {run.n_images} benchmark images the "
                     f"widest spans {100 * max(big):.0f}.")
    return "\n".join(lines)


# ---- display -----------------------------------------------------------------------------------------


def _setup(r: Result) -> dict:
    return {"Model": model_name(r.model), "Language": language_name(r.language), "Strategy": r.strategy,
            "Captions": CAPTIONS_SHOWN[r.captions]}


CAPTIONS_SHOWN = {FIRST: "first per image", ALL: "all"}


def definition_text(run: ScaleRun) -> str:
    """Which captions the figures count, in words: CLIP_benchmark's definition (the published one) and, where
    an image has several captions, all of them."""
    first = ("\"First per image\" is CLIP_benchmark's definition, the one published figures use: each image's first "
             "caption only, one text→image query per image.")
    several = sorted({r.language for r in run.results if r.captions == ALL}, key=run.languages.index)
    if not several:
        return first + " Every image has one caption in each language here, so it counts all captions."
    return (first + " \"All\" counts every caption (" + ", ".join(map(language_name, several))
            + f" {'has' if len(several) == 1 else 'have'} several per image): each caption is a text→image query, and an image→text query is a hit when any of its "
            "captions is among the first k. Only \"first per image\" may be set beside published figures.")


def title(run: ScaleRun, text: str, report: str | None = None) -> None:
    """Title (the report's own name under a user's title), untrained-model banner, licence and the model/data
    line on the first page."""
    from IPython.display import HTML, display

    from .present import header, prose

    label, first = next(iter(run.models.items()))
    shown = SimpleNamespace(model=first, requested_model=run.requested[label], fallback_reason=run.fallbacks[label])
    header(shown, text, f"{run.n_images} images · languages: {', '.join(map(language_name, run.languages))} · "
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
    display(HTML(prose("\n\n".join(notes))))


def results_table(run: ScaleRun) -> pd.DataFrame:
    """Recall@1/5/10 with 95% intervals, one table per direction, one row per model, language and strategy."""
    from .present import KEEP_TOGETHER, section, table

    frame = run.table()
    tables = []
    for d, name in DIRECTIONS.items():
        rows = [{**_setup(r), **{f"R@{k}": format(r.estimates[f"{d}_acc{k}"], ".1%") for k in KS}}
                for r in run.results]
        n = {r.estimates[f"{d}_acc1"].n for r in run.results}
        unit = "images" if d == "i2t" else "captions"
        counted = f"{n.pop()} {unit}" if len(n) == 1 else f"{min(n)}–{max(n)} {unit}"
        tables.append(f'<div style="{KEEP_TOGETHER}"><h3>{html.escape(name.capitalize())} ({counted})</h3>'
                      f"{table(pd.DataFrame(rows))}</div>")
    methods = "Wilson score (one observation per image)"
    if any(e.method != "wilson" for r in run.results for e in r.estimates.values() if e.hits is not None):
        methods += " or percentile bootstrap over images, seeded (several captions per image)"
    section("Recall@1/5/10 with 95% intervals",
            f"{run.n_images} images. Recall@k: the share of queries whose right answer is among the first k. "
            f"{definition_text(run)} Intervals: {methods}.", *tables)
    return frame


def reference_beside(run: ScaleRun) -> None:
    """The small bundled set's result beside the benchmark's, same model and language."""
    from .present import section, table

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
        section(heading, "The reference set shares no language with this run; nothing to place beside it.")
        return
    section(heading, f"Recall@1 with 95% intervals, the first caption of each image: with {n} images one image "
                     f"moves the figure by {100 / n:.0f} percentage points, with {run.n_images} by "
                     f"{100 / run.n_images:.2g}.", table(pd.DataFrame(rows)))


def tests_section(run: ScaleRun) -> pd.DataFrame:
    """Paired tests, one table per factor (languages, strategies, models), and what they say in words."""
    from .present import KEEP_TOGETHER, section, table

    tests = run.paired_tests()
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
        tables.append(f'<div style="{KEEP_TOGETHER}"><h3>{name}</h3>{table(shown)}</div>')
    directions = sorted({DIRECTIONS[d] for d in tests["direction"]})
    lead = (f"Exact McNemar test on the per-image hits at Recall@1 ({' and '.join(directions) or 'text→image'}; "
            "image→text where a result has several captions per image), each pair on the same "
            f"{run.n_images} images; significant means p < {ALPHA:.0%}. Rows read model · language · strategy; "
            "\"only first right\" counts the images right with the first and wrong with the second.")
    section("Paired tests on the same images", lead, *tables)
    section(None, summary_text(run, tests))
    return tests


def recall_plot(run: ScaleRun) -> None:
    """Recall@1/5/10 per model, language and strategy in both directions, with 95% error bars."""
    from matplotlib.figure import Figure

    from .present import section, svg

    labels = [" · ".join(_setup(r).values()) for r in run.results]
    fig = Figure(figsize=(8, 1.6 + 0.32 * len(run.results)))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(run.results))[::-1]
    for ax, (d, name) in zip(axes, DIRECTIONS.items()):
        for i, k in enumerate(KS):
            e = [r.estimates[f"{d}_acc{k}"] for r in run.results]
            value = np.array([x.value for x in e]) * 100
            ax.errorbar(value, y + (1 - i) * 0.25, xerr=[value - [x.low * 100 for x in e],
                        [x.high * 100 for x in e] - value], fmt="o", markersize=4, capsize=2, label=f"R@{k}")
        ax.set_yticks(y, [_plain(label) for label in labels], fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_title(name.capitalize(), fontsize=10)
        ax.set_xlabel("recall (%)")
        ax.grid(axis="x", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(KS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if len(run.results) < 4 else 0.06, 1, 1))
    section("Recall at a glance", "Points: Recall@1, @5 and @10; bars: their 95% intervals.", svg(fig))


def hardest(ranks: np.ndarray, limit: int = HARDEST) -> np.ndarray:
    """Rows of the ``limit`` images whose own caption ranks worst (ties by row), for a readable heatmap."""
    return np.argsort(-ranks, kind="stable")[:limit]


def heatmap_figure(sim: np.ndarray, owner: np.ndarray, ranks: np.ndarray, names: Sequence[str],
                   captions: Sequence[str], limit: int | None = None):
    """Images × their first captions; above ``limit`` images (default: as many as a page shows legibly,
    :func:`labclip.lab.plots.heatmap_capacity`) only the hardest ones, labelled with their rank.

    Args:
        sim: ``(n_images, n_captions)`` similarities.
        owner: the image of each caption, sorted (as :func:`labclip.data.flatten_captions` gives it).
        ranks: image→text rank of each image's own caption (1 = best).
        names: image names.
        captions: caption texts.
        limit: most images drawn with every label.

    Returns:
        ``(figure, note)``: a matplotlib figure and the sentence that says what it shows.
    """
    from matplotlib.figure import Figure

    from .plots import LABEL_PT, PAGE_WIDTH_PT, heatmap_capacity

    limit = heatmap_capacity() if limit is None else limit
    n = len(names)
    rows = np.arange(n)
    note = f"All {n} images against the first caption of each."
    labels = list(names)
    if n > limit:
        rows = hardest(ranks, min(HARDEST, limit))
        note = (f"{n} images are too many to label on a page: shown are the {len(rows)} images whose own "
                f"captions rank worst among all {len(captions)} captions (rank in brackets), against the first "
                "caption of each.")
        labels = [f"{names[i]} [{ranks[i]}]" for i in rows]
    columns = np.searchsorted(owner, rows)
    fig = Figure(figsize=(PAGE_WIDTH_PT / 72, 0.95 * PAGE_WIDTH_PT / 72))  # drawn at its printed size
    ax = fig.subplots()
    im = ax.imshow(sim[np.ix_(rows, columns)], cmap="viridis")
    ax.set_yticks(range(len(rows)), [_plain(label) for label in labels], fontsize=LABEL_PT)
    ax.set_xticks(range(len(rows)), [_plain(captions[c][:30]) for c in columns], rotation=90, fontsize=LABEL_PT)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label("cosine similarity", fontsize=LABEL_PT + 1)
    bar.ax.tick_params(labelsize=LABEL_PT)
    fig.tight_layout()
    return fig, note


def _plain(text: str) -> str:
    """User text for a matplotlib label: dollar signs escaped so mathtext never interprets it."""
    return str(text).replace("$", r"\$")


def heatmap(run: ScaleRun, limit: int | None = None) -> None:
    """Similarity heatmap of the first model and language; above ``limit`` images (default: as many as a page
    shows legibly), the hardest images only."""
    from .present import section, svg

    if run._heat is None:
        raise LabclipError("run.evaluate() first: the heatmap shows its first model and language")
    label, lang, sim, owner, captions, ranks = run._heat
    fig, note = heatmap_figure(sim, owner, ranks, run.captions["image"], captions, limit)
    section(f"Similarity heatmap ({model_name(label)}, {language_name(lang)} captions)", md(note), svg(fig))


def published_rows(run: ScaleRun) -> list[Published]:
    """The published retrieval figures (``labclip.registry.PUBLISHED``) in the run's languages."""
    return [p for p in published_figures() if p.direction in DIRECTIONS and p.language in run.languages]


def published(run: ScaleRun) -> None:
    """Published figures for the same question, in a marked box with their sources; not measured here."""
    from IPython.display import HTML, display

    rows = "".join(f"<tr><td>{html.escape(model_name(p.model))}</td><td>{html.escape(p.benchmark)}</td>"
                   f"<td>{DIRECTIONS[p.direction]} {html.escape(p.metric)}</td><td>{language_name(p.language)}</td>"
                   f"<td>{CAPTIONS_SHOWN[FIRST] if p.definition == FIRST_CAPTION else html.escape(p.definition)}</td>"
                   f"<td>{p.value:.1f}%</td><td>{html.escape(p.source)}</td></tr>" for p in published_rows(run))
    if not rows:
        return
    display(HTML(
        '<div class="labclip-published" style="border:2px dashed #555;padding:8px 12px;margin:10px 0;'
        'break-inside:avoid">'
        "<strong>Published results (not measured here)</strong><br>XTD10 figures (1,000 images) were "
        "computed with CLIP_benchmark from the first caption of each image (XTD10 has one per image); "
        "compare them with measured rows whose captions read \"first per image\". "
        "<table><tr><th>Model</th><th>Benchmark</th><th>Metric</th><th>Language</th><th>Captions</th>"
        f"<th>Value</th><th>Source</th></tr>{rows}</table></div>"))


def save(run: ScaleRun, output_dir: str | os.PathLike | None, name: str = "05_scale") -> dict:
    """Write the recall table, the paired tests and provenance as one JSON (atomically), show the provenance
    table, and return the record."""
    from .present import _provenance_table

    record = {"provenance": run.provenance(), "captions_counted": DEFINITIONS, "results": run.table().to_dict("records"),
              "paired_tests": [{k: v.to_dict() if isinstance(v, stats.Estimate) else v for k, v in row.items()}
                               for row in run.paired_tests().to_dict("records")],
              "reference": [{"model": r.model, "language": r.language, "source": run.reference_source,
                             **{k: v.to_dict() for k, v in r.estimates.items()}} for r in run.reference]}
    if output_dir:
        write_text(Path(output_dir) / f"{name}.json", json.dumps(record, indent=2, ensure_ascii=False, default=str))
    prov = record["provenance"]
    rows = []
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
    _provenance_table(rows, prov)
    return record
