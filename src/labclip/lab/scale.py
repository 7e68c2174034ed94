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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .. import stats
from ..atomic import write_text
from ..config import CAPTIONS_DIR
from ..data import flatten_captions, load_captions
from ..datasets import BENCHMARKS
from ..datasets import load as load_benchmark
from ..errors import LabclipError
from ..hub import ModelUnavailable
from ..metrics import RetrievalRanks, retrieval_ranks, similarity
from ..model import ClipModel, describe
from ..translate import Translator, translator_name
from .experiment import load_model_or_demo
from .narrative import banner_text, p_value
from .provenance import Timings, machine, now, package_versions, sha256_file

KS = (1, 5, 10)
DIRECTIONS = {"t2i": "text→image", "i2t": "image→text"}
REFERENCE_CAPTIONS = CAPTIONS_DIR / "short.csv"
HEATMAP_LIMIT = 40  # images a full heatmap can label legibly on a page
HARDEST = 20
ALPHA = 0.05
# open_clip docs/openclip_multilingual_retrieval_results.csv (XTD10, text→image R@1, 1,000 images).
PUBLISHED_SOURCE = ("open_clip, docs/openclip_multilingual_retrieval_results.csv "
                    "(https://github.com/mlfoundations/open_clip)")
PUBLISHED = (
    ("OpenAI ViT-B/32", "en", 54.0),
    ("OpenAI ViT-B/32", "ru", 0.4),
    ("xlm-roberta-base ViT-B/32 (LAION-5B)", "ru", 50.4),
)


@dataclass
class Result:
    """Retrieval of one model, caption language and strategy on the benchmark images."""

    model: str
    language: str
    strategy: str
    ranks: RetrievalRanks
    estimates: dict[str, stats.Estimate]

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
        is skipped and listed in :attr:`skipped`.
        """
        for label, model in self.models.items():
            with self.timings.stage(f"encode images ({label})"):
                images = model.encode_images(self.captions["path"], self.batch_size)
            for lang in self.languages:
                captions, owner = flatten_captions(self.captions, lang)
                self.results.append(self._result(label, model, images, lang, "direct", captions, owner))
                if self.translator and lang != "en":
                    translated = self._translate(lang, captions)
                    if translated is not None:
                        self.results.append(self._result(label, model, images, lang, "translated", translated, owner))
        if reference is not None:
            self._evaluate_reference(Path(reference))
        return self.table()

    def _result(self, label: str, model: ClipModel, images: np.ndarray, lang: str, strategy: str,
                captions: list[str], owner: np.ndarray) -> Result:
        with self.timings.stage(f"encode captions ({label}, {lang}, {strategy})"):
            texts = model.encode_texts(captions, self.batch_size)
        with self.timings.stage("metrics"):
            sim = similarity(images, texts, dtype=np.float32)
            ranks = retrieval_ranks(sim, owner)
            if self._heat is None and len(images) == self.n_images:
                self._heat = (label, lang, sim, owner, captions, ranks.i2t)
            return Result(label, lang, strategy, ranks, ranks.estimates(KS))

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
            result = self._result(label, model, images, lang, "direct", captions, owner)
            self.reference.append(result)
        self.reference_source = path.name

    def table(self) -> pd.DataFrame:
        """One row per model, language, strategy, direction and k: the recall with its interval and counts."""
        rows = []
        for r in self.results:
            for direction in DIRECTIONS:
                for k in KS:
                    e = r.estimates[f"{direction}_acc{k}"]
                    rows.append({"model": r.model, "language": r.language, "strategy": r.strategy,
                                 "direction": direction, "k": k, "recall": e.value, "low": e.low, "high": e.high,
                                 "hits": e.hits, "n": e.n, "method": e.method})
        return pd.DataFrame(rows)

    def paired_tests(self, direction: str = "t2i", k: int = 1) -> pd.DataFrame:
        """Exact McNemar tests of Recall@k on the same images.

        Each language against the first, each translated result against its direct one, and each model
        against the first, with the same language and strategy. Text→image pairs need one caption per
        image in both results; otherwise the image→text hits are paired.
        """
        rows = []
        by_key = {(r.model, r.language, r.strategy): r for r in self.results}
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
            "images": self.n_images,
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
    return f"{r.model} · {r.language} · {r.strategy}"


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
    table = load_captions(path, image_dir=path.parent, languages=languages, check_images=False)
    known = {b.name: b for b in BENCHMARKS.values()}
    source = path.parent / "SOURCE.json"
    if source.is_file():
        recorded = json.loads(source.read_text(encoding="utf-8")).get("benchmark") or ""
        if str(recorded).lower() in known:
            table.attrs["benchmark"] = known[str(recorded).lower()]
    return table


def start(dataset: str | os.PathLike, models: Sequence[str], languages: Sequence[str] | None = None,
          translator: str | None = None, batch_size: int | None = None, strict: bool = False,
          precision: str = "auto") -> ScaleRun:
    """Load the benchmark and the models (the demo model stands in for one that can't be loaded unless ``strict``).

    Args:
        dataset: ``"xtd10"``, ``"xm3600"``, a prepared benchmark folder, or a caption file.
        models: model ids, aliases, directories or ``"demo"``; the first is the reference for model tests
            and falls back to the demo model when it can't be loaded (unless ``strict``); the others are
            skipped then, and listed in :attr:`ScaleRun.skipped`.
        languages: caption languages; ``None``: all of the set's (the first is the reference language).
        translator: translation model template for the ``translated`` strategy, ``None`` to skip it.
        batch_size: encoder batch size (``None``: the model's default).
        strict: fail when a model can't be loaded.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`labclip.load_model`).

    Raises:
        LabclipError: unknown dataset or language, no model, or an unloadable model in strict mode.
    """
    if not models:
        raise LabclipError("the scale report needs at least one model")
    timings = Timings()
    with timings.stage("load captions"):
        table = resolve_dataset(dataset, languages)
    langs = list(languages or table.attrs["languages"])
    loaded, requested, fallbacks, skipped = {}, {}, {}, []
    for i, name in enumerate(dict.fromkeys(models)):
        with timings.stage(f"load model {name}"):
            try:
                model, reason = load_model_or_demo(name, strict or i > 0, precision=precision)
            except ModelUnavailable as err:
                skipped.append(f"model {name}: {err}")
                continue
        loaded[name], requested[name], fallbacks[name] = model, name, reason
    return ScaleRun(table, loaded, requested, fallbacks, langs, str(dataset) if str(dataset).lower() in BENCHMARKS
                    else Path(dataset).name, batch_size, translator or None, timings, skipped=skipped)


# ---- prose -------------------------------------------------------------------------------------------


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
    return f"{n} image{'s' * (n != 1)}"


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
    """The results in words, every number from this run."""
    lines = []
    for r in run.results:
        e = r.estimates["t2i_acc1"]
        lines.append(f"- {html.escape(_label(r))}: text→image R@1 {e:.1%} over {e.n} captions, image→text R@1 "
                     f"{r.estimates['i2t_acc1']:.1%} over {r.estimates['i2t_acc1'].n} images.")
    lines += [f"- {html.escape(significance(row))}" for _, row in tests.iterrows()]
    if tests.empty:
        lines.append("- No paired comparison: one model, one language and no translation in this run.")
    if run.reference:
        n = len(run.reference[0].ranks.i2t)
        widths = [_width(r) for r in run.reference]
        big = [_width(r) for r in run.results if r.strategy == "direct"]
        lines.append(f"- On the {n}-image reference set the widest text→image R@1 interval spans "
                     f"{100 * max(widths):.0f} percentage points; on the {run.n_images} benchmark images the "
                     f"widest spans {100 * max(big):.0f}.")
    return "\n".join(lines)


# ---- display -----------------------------------------------------------------------------------------


def title(run: ScaleRun, text: str) -> None:
    """Title, untrained-model banner, licence and the model/data line on the first page."""
    from IPython.display import Markdown, display

    from .present import header

    label, first = next(iter(run.models.items()))
    shown = SimpleNamespace(model=first, requested_model=run.requested[label], fallback_reason=run.fallbacks[label])
    header(shown, text, f"{run.n_images} images · languages: {', '.join(run.languages)} · "
                        f"dataset: {run.dataset} · run started {run.started}")
    for label, model in list(run.models.items())[1:]:
        if banner_text(model):
            display(Markdown(f"**{html.escape(label)} is an untrained stand-in: its numbers mean nothing.**"))
    for label, reason in run.fallbacks.items():
        if reason:
            display(Markdown(f"Requested model `{html.escape(run.requested[label])}` could not be loaded "
                             f"({html.escape(reason)}); the untrained demo model stands in."))
    for reason in run.skipped:
        display(Markdown(f"Skipped: {html.escape(reason)}"))
    display(Markdown(html.escape(licence_text(run))))


def results_table(run: ScaleRun) -> pd.DataFrame:
    """Recall@1/5/10 in both directions with 95% intervals, one row per model, language and strategy."""
    from IPython.display import HTML, Markdown, display

    table = run.table()
    table["shown"] = [f"{row.recall:.1%} [{row.low:.1%}, {row.high:.1%}]" for row in table.itertuples()]
    wide = table.pivot_table(index=["model", "language", "strategy"], columns=["direction", "k"], values="shown",
                             aggfunc="first", sort=False)
    wide.columns = [f"{DIRECTIONS[d]} R@{k}" for d, k in wide.columns]
    display(Markdown(f"## Recall@1/5/10 with 95% intervals\n\n{run.n_images} images. Intervals: Wilson score for "
                     "one observation per image, percentile bootstrap over images (seeded) for several captions "
                     "per image."))
    display(HTML(wide.reset_index().to_html(index=False, escape=True)))
    return table


def reference_beside(run: ScaleRun) -> None:
    """The small bundled set's result beside the benchmark's, same model and language."""
    from IPython.display import HTML, Markdown, display

    rows = []
    bench = {(r.model, r.language): r for r in run.results if r.strategy == "direct"}
    for ref in run.reference:
        big = bench.get((ref.model, ref.language))
        for d in DIRECTIONS:
            row = {"model": ref.model, "language": ref.language, "direction": DIRECTIONS[d],
                   f"{run.reference_source} ({len(ref.ranks.i2t)} images)": f"{ref.estimates[f'{d}_acc1']:.1%}"}
            if big is not None:
                row[f"{run.dataset} ({run.n_images} images)"] = f"{big.estimates[f'{d}_acc1']:.1%}"
            rows.append(row)
    n = len(run.reference[0].ranks.i2t) if run.reference else 0
    display(Markdown("## The small reference set beside the benchmark\n\nRecall@1 with 95% intervals"
                     + (f": with {n} images one image moves the figure by {100 / n:.0f} percentage points, with "
                        f"{run.n_images} by {100 / run.n_images:.2g}." if n else ".")))
    if rows:
        display(HTML(pd.DataFrame(rows).to_html(index=False, escape=True)))
    else:
        display(Markdown("The reference set shares no language with this run; nothing to place beside it."))


def tests_section(run: ScaleRun) -> pd.DataFrame:
    """Paired tests as a table and as sentences."""
    from IPython.display import HTML, Markdown, display

    tests = run.paired_tests()
    display(Markdown("## Paired tests on the same images\n\nExact McNemar test on per-image hits at Recall@1; "
                     f"significant means p < {ALPHA:.0%}."))
    if not tests.empty:
        shown = tests.assign(p_value=tests.p_value.map(p_value), recall_a=tests.recall_a.map("{:.1%}".format),
                             recall_b=tests.recall_b.map("{:.1%}".format),
                             direction=tests.direction.map(DIRECTIONS))
        display(HTML(shown.to_html(index=False, escape=True)))
    display(Markdown(summary_text(run, tests)))
    return tests


def recall_plot(run: ScaleRun) -> None:
    """Recall@1/5/10 text→image per model, language and strategy, with 95% error bars."""
    from IPython.display import HTML, display
    from matplotlib.figure import Figure

    from .present import png

    table = run.table()
    fig = Figure(figsize=(8, 3.2 + 0.2 * len(run.results)))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, d in zip(axes, DIRECTIONS):
        sub = table[table.direction == d]
        labels = sub.drop_duplicates(["model", "language", "strategy"])[["model", "language", "strategy"]]
        y = np.arange(len(labels))
        for i, k in enumerate(KS):
            rows = sub[sub.k == k]
            ax.errorbar(rows.recall * 100, y + (i - 1) * 0.2, xerr=[(rows.recall - rows.low) * 100,
                        (rows.high - rows.recall) * 100], fmt="o", capsize=3, label=f"R@{k}")
        ax.set_yticks(y, [f"{m} · {lang} · {s}" for m, lang, s in labels.itertuples(index=False)])
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"{DIRECTIONS[d]} recall (%), 95% interval")
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    display(HTML(png(fig)))


def hardest(ranks: np.ndarray, limit: int = HARDEST) -> np.ndarray:
    """Rows of the ``limit`` images whose own caption ranks worst (ties by row), for a readable heatmap."""
    return np.argsort(-ranks, kind="stable")[:limit]


def heatmap_figure(sim: np.ndarray, owner: np.ndarray, ranks: np.ndarray, names: Sequence[str],
                   captions: Sequence[str], limit: int = HEATMAP_LIMIT):
    """Images × their first captions; above ``limit`` images only the hardest ones, labelled with their rank.

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
    fig = Figure(figsize=(6 + 0.1 * len(rows), 5 + 0.1 * len(rows)))
    ax = fig.subplots()
    im = ax.imshow(sim[np.ix_(rows, columns)], cmap="viridis")
    ax.set_yticks(range(len(rows)), [_plain(label) for label in labels], fontsize=7)
    ax.set_xticks(range(len(rows)), [_plain(captions[c][:30]) for c in columns], rotation=90, fontsize=7)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    fig.tight_layout()
    return fig, note


def _plain(text: str) -> str:
    """User text for a matplotlib label: dollar signs escaped so mathtext never interprets it."""
    return str(text).replace("$", r"\$")


def heatmap(run: ScaleRun, limit: int = HEATMAP_LIMIT) -> None:
    """Similarity heatmap of the first model and language; above ``limit`` images, the hardest images only."""
    from IPython.display import HTML, Markdown, display

    from .present import png

    if run._heat is None:
        raise LabclipError("run.evaluate() first: the heatmap shows its first model and language")
    label, lang, sim, owner, captions, ranks = run._heat
    fig, note = heatmap_figure(sim, owner, ranks, run.captions["image"], captions, limit)
    display(Markdown(f"## Similarity heatmap ({html.escape(label)}, {lang})\n\n{html.escape(note)}"))
    display(HTML(png(fig)))


def published(run: ScaleRun) -> None:
    """Published figures for the same question, in a marked box with their source; not measured here."""
    from IPython.display import HTML, display

    rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{lang}</td><td>{v:.1f}%</td></tr>" for m, lang, v in PUBLISHED)
    display(HTML(
        '<div class="labclip-published" style="border:2px dashed #555;padding:8px 12px;margin:10px 0">'
        "<strong>Published results (not measured here)</strong><br>XTD10, text→image Recall@1, 1,000 images. "
        f"Source: {html.escape(PUBLISHED_SOURCE)}.<table><tr><th>model</th><th>language</th><th>R@1</th></tr>"
        f"{rows}</table></div>"))


def save(run: ScaleRun, output_dir: str | os.PathLike | None, name: str = "05_scale") -> dict:
    """Write the recall table, the paired tests and provenance as one JSON (atomically); return it."""
    from IPython.display import Markdown, display

    record = {"provenance": run.provenance(), "results": run.table().to_dict("records"),
              "paired_tests": [{k: v.to_dict() if isinstance(v, stats.Estimate) else v for k, v in row.items()}
                               for row in run.paired_tests().to_dict("records")],
              "reference": [{"model": r.model, "language": r.language, "source": run.reference_source,
                             **{k: v.to_dict() for k, v in r.estimates.items()}} for r in run.reference]}
    if output_dir:
        write_text(Path(output_dir) / f"{name}.json", json.dumps(record, indent=2, ensure_ascii=False, default=str))
    prov = record["provenance"]
    models = "; ".join(f"{m['requested']} → {m['used'].get('name')} ({m['used'].get('precision')}: "
                       f"{m['used'].get('precision_reason')})" for m in prov["models"])
    display(Markdown(f"## Provenance\n\nModels (requested → used, precision: why): {html.escape(models)}. Captions sha256 "
                     f"`{prov['captions_sha256'][:16]}…`. Started {prov['started']}."))
    return record

