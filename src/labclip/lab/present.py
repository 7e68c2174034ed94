"""What the notebooks show: each report section as an :class:`Output` that Jupyter displays.

A notebook cell computes its data (a matching, a comparison, template scores) in readable library calls and
ends with one of these functions, which returns the section built from that data: heading, prose (sentences
from :mod:`narrative`) and its table or figure, in one HTML output so a page break does not separate them.
This is the one display path: every piece of user text is escaped, tables through pandas' Styler with
``escape="html"``, prose through :func:`narrative.md` and a Markdown renderer that escapes raw HTML, figures
through :func:`plots.plain`, embedded as ``data:`` images. Loading models, computing comparisons and writing
files happen in :mod:`runs`, :mod:`experiment`, :mod:`compare` and :mod:`report`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from IPython.display import HTML, display

from .. import zeroshot
from ..labels import format_metric, pct
from ..metrics import accuracy_keys, ranks, topk_indices, topk_undefined
from ..text import token_lengths
from ..translate import translator_name
from . import narrative, plots
from .experiment import Experiment, Matching, Run, ZeroShotRun, similarity_file
from .markup import (  # noqa: F401 - present's names for notebooks and the report modules
    BANNER_STYLE,
    INTERVALS_NOTE,
    KEEP_TOGETHER,
    KEEP_WITH_NEXT,
    LABEL_BAR_COLUMNS,
    LABEL_BAR_ROWS,
    PUBLISHED_STYLE,
    SCREEN_HEATMAP_LIMIT,
    SCREEN_ONLY,
    SHORT_TABLE,
    TABLE_STYLES,
    TOPK_ROWS,
    _labelled,
    block,
    item_name,
    png,
    prose,
    provenance_rows,
    screen_only,
    section_html,
    svg,
    table,
)
from .narrative import comparison_heading, md, public_path  # noqa: F401
from .results import Comparison
from .tables import captions_frame, confusion, token_stats, top_labels


class Output:
    """What a report cell shows: HTML parts (built here and in :mod:`markup`, user text escaped), each one output.

    Jupyter displays it when it is a cell's last expression (or given to ``display``); ``parts`` holds the HTML.
    """

    def __init__(self, *parts: str | Output | None) -> None:
        self.parts: list[str] = [p for part in parts if part
                                 for p in (part.parts if isinstance(part, Output) else [part])]

    @property
    def data(self) -> str:
        return "".join(self.parts)

    def _repr_html_(self) -> str:
        return self.data

    def _ipython_display_(self) -> None:
        for part in self.parts:  # one output each: Chromium moves an output taller than a page to the next page
            display(HTML(part))


class Section(Output):
    """One section: heading (plain text), prose (Markdown) and items (HTML) in one output, kept together on the
    page as :func:`markup.section_html` says."""

    def __init__(self, heading: str | None, text: str = "", *items: str, level: int = 2,
                 together: bool = False) -> None:
        super().__init__(section_html(heading, text, *items, level=level, together=together))


def section(heading: str | None, text: str = "", *items: str, level: int = 2, together: bool = False) -> None:
    """Display a :class:`Section` now (for report modules that display as they go)."""
    Section(heading, text, *items, level=level, together=together)._ipython_display_()


def note(markdown: str) -> Output:
    """Prose on its own (Markdown, raw HTML escaped)."""
    return Output(f"<div>{prose(markdown)}</div>")


def paragraph(markdown: str) -> None:
    """Display :func:`note` now."""
    note(markdown)._ipython_display_()


def title(exp: Experiment, text: str, report: str | None = None) -> Output:
    """The report title, with the untrained-model warning in it and as a banner under it."""
    langs = ", ".join(narrative.language_name(lang) for lang in exp.languages)
    return masthead(exp, text, f"{len(exp.captions)} images · languages: {langs} · run started {exp.started}", report)


def header(run: Run, text: str, details: str, report: str | None = None) -> None:
    """Display :func:`masthead` now."""
    masthead(run, text, details, report)._ipython_display_()


def masthead(run: Run, text: str, details: str, report: str | None = None) -> Output:
    """Title, the report's own name under it when the title is the user's (``report``), the model used (after a
    fallback also the model requested), details (plain text), and one banner that gives the fallback's reason
    and the untrained-model warning where they apply."""
    warning = narrative.banner_text(run.model)
    top = f"{text} — UNTRAINED DEMO MODEL, NUMBERS MEAN NOTHING" if warning else text
    used = f"Model: {html.escape(narrative.model_name(run.model.name))}"
    if run.fallback_reason:
        used = (f"Requested model: {html.escape(narrative.model_name(run.requested_model))} · "
                f"model used: {html.escape(narrative.model_name(run.model.name))}")
    parts = [f'<h1 style="font-size:1.5em;margin:0.2em 0">{html.escape(top)}</h1>']
    if report and report != text:
        parts.append(f'<p style="font-size:1.2em;margin:0">{html.escape(report)}</p>')
    parts.append(f"<p>{used} · {html.escape(details)}</p>")
    if run.fallback_reason:  # the reason says how to get the model, so the warning need not say it again
        stands_in = ("labclip's untrained demo model stands in: its weights are random, so these numbers say nothing "
                     "about CLIP." if run.model.is_demo else warning)
        notes: str | None = f"{narrative.fallback_note(run.requested_model, run.fallback_reason)} {stands_in or ''}"
    else:
        notes = warning
    if notes:
        parts.append(f'<div class="labclip-banner" style="{BANNER_STYLE}">⚠ {html.escape(notes.strip())}</div>')
    return Output("".join(parts))


def zeroshot_title(run: ZeroShotRun, text: str, report: str | None = None) -> Output:
    """Title and model line; where the run fell back to English, the sentence that says why."""
    fell_back = narrative.zeroshot_language_note(run)
    return Output(masthead(run, text, f"{len(run.data.paths)} labelled images · {len(run.data.classes)} classes · "
                                      f"template language: {narrative.language_name(run.language)}", report),
                  note(fell_back) if fell_back else None)


def zeroshot_predictions(run: ZeroShotRun, probs: np.ndarray, templates: str, k: int = 5) -> Output:
    """Top-k label probabilities per image (``probs``: :meth:`ZeroShotRun.probabilities` with the ensemble of the
    template set ``templates``), as bars with the true label marked."""
    count = len(zeroshot.load_templates(templates, run.language))
    top = top_labels(probs, run.data.classes, run.data.names, k)
    truth = [run.data.classes[t] for t in run.data.truth]
    rank = ranks(probs, run.data.truth)
    names, per = run.data.names, LABEL_BAR_COLUMNS * LABEL_BAR_ROWS
    figures = [svg(plots.label_bars(top[top["image"].isin(names[i:i + per])], run.data.paths[i:i + per],
                                    LABEL_BAR_COLUMNS, truth[i:i + per], rank[i:i + per]))
               for i in range(0, len(names), per)]
    first = Section(f"Top-{k} labels per image",
                    f"Class names {', '.join(md(c) for c in run.data.classes)}, each encoded under the {count} "
                    f"templates of the set {md(templates)} and averaged (OpenAI's prompt ensembling); "
                    + narrative.probability_note(run.model.logit_bias is not None, "classes") + ". The true label's "
                    f"bar is red and marked ✓; where it is not among the top {k}, its rank is written above the bars.",
                    figures[0])
    return Output(first, *(f'<div class="labclip-section">{more}</div>' for more in figures[1:]))


def template_comparison(run: ZeroShotRun, scores: pd.DataFrame, k: int = 5,
                        requested: Sequence[str] = ()) -> Output:
    """Single template vs ensembles on the same images (``scores``: :meth:`ZeroShotRun.compare`; ``requested``:
    the sets asked for, those without a version in the run's language named): one table, the paired test of the
    first set against the last, and the confusion matrix of the best."""
    skipped = sorted(set(requested) - set(scores["templates"]))
    missing = (f"There is no {md(narrative.language_name(run.language))} version of: {', '.join(map(md, skipped))}."
               if skipped else "")
    evaluated = {name: run.evaluated(name) for name in scores["templates"]}
    per_class: list[Any] = [figures["mean_per_class_recall"] for _, figures in evaluated.values()]
    balanced = scores.assign(mean_per_class_recall=per_class)
    keys = ["templates", "count", "acc1", f"acc{k}", "mean_per_class_recall"]
    shown = pd.DataFrame({key: [format_metric(key, v, n) for v, n in zip(balanced[key], scores["n"])]
                          for key in dict.fromkeys(keys)})
    undefined = topk_undefined(k, len(run.data.classes))
    text = " ".join(filter(None, [missing, f"{len(run.data.paths)} images; 95% intervals in brackets: Wilson score "
                                  f"for accuracies; {narrative.per_class_interval(balanced['mean_per_class_recall'].iloc[0])}.",
                                  undefined and f"Top-{k} shows — because {undefined}."]))
    if len(scores) > 1:
        first, last = scores["templates"].iloc[0], scores["templates"].iloc[-1]
        hits = {name: ranks(evaluated[name][0], run.data.truth) == 1 for name in (first, last)}
        text = " ".join([text, narrative.paired(hits[first], hits[last], md(first), md(last), "top-1 accuracy")])
    best = scores.sort_values("acc1", ascending=False, kind="stable").iloc[0]["templates"]
    return Output(Section("Prompt engineering: single template vs ensembles", text, table(_labelled(shown))),
                  Section(f"Confusion matrix ({best})", "", svg(plots.confusion_heatmap(
                      confusion(evaluated[best][0], run.data.truth, run.data.classes))), together=True))


def similarity_range(exp: Experiment, langs: Sequence[str]) -> tuple[float, float] | None:
    """The common colour scale of the languages' heatmaps: lowest and highest cosine over all of them (``None``
    for one language: its heatmap uses its own range)."""
    if len(langs) < 2:
        return None
    sims = [exp.matching(lang).sim for lang in langs]
    return min(float(s.min()) for s in sims), max(float(s.max()) for s in sims)


def heatmaps(exp: Experiment, langs: Sequence[str]) -> Output:
    """One :func:`heatmap` per language, on one colour scale."""
    scale = similarity_range(exp, langs)
    return Output(*(heatmap(exp, exp.matching(lang), scale) for lang in langs))


def heatmap(exp: Experiment, m: Matching, scale: tuple[float, float] | None = None) -> Section:
    """Caption × image similarity of one language; ``scale`` shares the colour range with other heatmaps.

    The printed form is chosen by what stays legible: every image when it fits a page with values and captions
    at readable sizes (:func:`plots.heatmap_capacity`), else the hardest images only; the full matrix then goes
    in the HTML page (on screen, up to ``SCREEN_HEATMAP_LIMIT`` images) and in ``similarity_<language>.csv``.
    """
    shared = " The colour scale is shared by the heatmaps of all languages in this run." if scale else ""
    vmin, vmax = scale or (float(m.sim.min()), float(m.sim.max()))
    n, fits = len(m.sim), plots.heatmap_capacity()
    title = f"Similarity matrix ({narrative.language_name(m.language)})"
    if n <= fits:
        return Section(title, "Cosine similarity of every caption (rows) with every image (columns); the correct "
                       f"pairs are outlined in red.{shared}",
                       svg(plots.similarity_heatmap(m.sim, exp.image_paths, m.captions, vmin=vmin, vmax=vmax)))
    rank = m.retrieval.i2t
    rows = np.sort(np.argsort(-rank, kind="stable")[:fits])
    where = (f"under “Full matrix” in the HTML page and in {similarity_file(m.language)}" if n <= SCREEN_HEATMAP_LIMIT
             else f"in {similarity_file(m.language)}")
    text = (f"{n} images are too many for legible cells ({fits} fit a page): these are the {fits} whose own captions "
            f"rank worst (rank before each caption), in the full matrix's colours, correct pairs in red.{shared} The "
            f"full {n} × {n} matrix: {md(where)} (written with the report's files).")
    labels = [f"rank {rank[i]}: {m.captions[i]}" for i in rows]
    items = [svg(plots.similarity_heatmap(m.sim[np.ix_(rows, rows)], [exp.image_paths[i] for i in rows],
                                          [m.captions[i] for i in rows], vmin=vmin, vmax=vmax, labels=labels))]
    if n <= SCREEN_HEATMAP_LIMIT:
        full = plots.similarity_heatmap(m.sim, exp.image_paths, m.captions, vmin=vmin, vmax=vmax,
                                        cell=plots.HEATMAP_MIN_CELL_PT)
        items.append(screen_only(f"Full matrix ({n} × {n})", png(full).replace("max-width:100%", "max-width:none")))
    return Section(f"{title}: the {fits} hardest images", text, *items)


def topk(m: Matching) -> Section:
    """The k best captions of each image: one row per image and rank while that stays short (``TOPK_ROWS``),
    else one compact row per image in print, with the full table on screen."""
    k, n = m.metrics.k, m.metrics.n
    full = pd.DataFrame({
        "image": m.topk["image"], "rank": m.topk["rank"].astype(str), "caption": m.topk["caption"],
        "cosine": [format_metric("cosine", v) for v in m.topk["cosine"]],
        "probability": [pct(v) for v in m.topk["probability"]],
        "correct": m.topk["correct"].map({True: "✓", False: ""}),
    })
    text = (narrative.probability_note(m.sigmoid, "all captions").capitalize()
            + ("" if m.sigmoid else ", as CLIP's zero-shot prediction computes them") + ". ✓ marks the correct caption.")
    if n * k <= TOPK_ROWS:
        return Section(f"Top-{k} captions per image", f"The {k} best captions of each of the {n} images. " + text,
                       table(_labelled(full)))
    rank = m.retrieval.i2t
    names = list(m.images)
    probability = m.topk["probability"].to_numpy().reshape(n, k)
    compact = pd.DataFrame({
        "Image": names,
        "Rank of its caption": [str(r) for r in rank],
        f"Top-{k} captions, by the image each describes (probability)": [
            " · ".join(f"{names[j]}{' ✓' if j == i else ''} ({pct(p)})" for j, p in zip(order, probability[i]))
            for i, order in enumerate(topk_indices(m.sim, k))],
    })
    return Section(f"Top-{k} captions per image",
                   f"The {k} best captions of each of the {n} images, each named by the image it describes (caption "
                   f"*i* belongs to image *i*), and the rank of the image's own caption. {text} The table with every "
                   "caption's text and cosine is in the HTML version of this report (on screen, under “All captions”).",
                   table(compact),
                   screen_only(f"All captions: the top {k} of each image with text, cosine and probability",
                               table(_labelled(full))))


def distributions(m: Matching) -> Section:
    """Correct vs wrong cosines (histograms, the separating threshold) with :func:`narrative.results`."""
    return Section("Correct vs wrong pairs", narrative.results(m),
                   svg(plots.similarity_distributions(m.sim, m.metrics.threshold)), together=True)


def accuracy(m: Matching) -> Section:
    """Top-1, top-k and mean reciprocal rank in both directions, with their 95% intervals."""
    x = m.metrics.to_dict()
    k, n = m.metrics.k, m.metrics.n
    keys = ("acc1", f"acc{k}", "mrr")
    e = narrative.estimates(m)
    rows = {direction: [format(e[f"{prefix}_mrr"], ".3f") if key == "mrr"
                        else format_metric(f"{prefix}_{key}", x[f"{prefix}_{key}"], n) for key in keys]
            for direction, prefix in (("Image→text", "i2t"), ("Text→image", "t2i"))}
    shown = pd.DataFrame(rows, index=["Top-1", f"Top-{k}", "Mean reciprocal rank"]).T
    return Section("Accuracy in both directions", f"{n} images; 95% intervals in brackets (Wilson score for "
                   "accuracies, seeded bootstrap over images for the mean reciprocal rank).", table(shown, index=True))


def distractors(m: Matching) -> Section:
    """Wrong captions by the number of top-k lists they enter."""
    k, n = m.metrics.k, m.metrics.n
    text = f"Wrong captions by the number of images (out of {n}) whose top-{k} they enter."
    if m.distractors.empty:
        return Section("Frequent distractors", text + " No wrong caption entered any top list.")
    shown = m.distractors.assign(appearances=[f"{a}/{n}" for a in m.distractors["appearances"]])
    return Section("Frequent distractors", text, table(_labelled(shown)))


def metrics_by_language(exp: Experiment, langs: Sequence[str]) -> str:
    """The table of every metric, one column per language, as HTML; accuracies, mean reciprocal ranks and the
    mean margin with their 95% intervals (as 01's accuracy table and results give them)."""
    columns = {narrative.language_name(lang): _with_intervals(exp.matching(lang)) for lang in langs}
    return table(narrative.metric_table(columns), index=True)


def _with_intervals(m: Matching) -> dict:
    """A matching's metrics, the mean reciprocal ranks and the mean margin as estimates with intervals."""
    e = narrative.estimates(m)
    return {**m.metrics.to_dict(), "i2t_mrr": e["i2t_mrr"], "t2i_mrr": e["t2i_mrr"],
            "margin_mean": narrative.margin_estimate(m)}


def captions(exp: Experiment, langs: Sequence[str]) -> Section:
    """The caption set: one row per image, one column per language."""
    shown = captions_frame(exp.captions)[["name", *langs]].rename(columns={"name": "Image"} | {
        lang: narrative.language_name(lang) for lang in langs})
    return Section("Captions", "", table(shown))


def language_metrics(exp: Experiment, metrics: pd.DataFrame, *, heading: str = "Metrics by language", level: int = 2,
                     paired: bool = True) -> Section:
    """``metrics`` (:meth:`Experiment.compare`: one column per language) as a table with intervals and as
    accuracy bars; with ``paired``, the exact McNemar test of the first two languages in one sentence."""
    langs = [str(lang) for lang in metrics.columns]
    text = " ".join(filter(None, [INTERVALS_NOTE, _languages_test(exp, langs) if paired else ""]))
    return Section(heading, text, metrics_by_language(exp, langs),
                   svg(plots.accuracy_bars(metrics.rename(columns=narrative.language_name), exp.top_k,
                                           n=len(exp.captions))), level=level)


def _languages_test(exp: Experiment, langs: Sequence[str]) -> str:
    """The exact McNemar test of the first two languages' image→text top-1 hits, in one sentence ("" for one language)."""
    if len(langs) < 2:
        return ""
    a, b = (exp.matching(lang) for lang in langs[:2])
    return narrative.paired(narrative._top1(a), narrative._top1(b), f"{md(narrative.language_name(langs[0]))} captions",
                            f"{md(narrative.language_name(langs[1]))} captions", "image→text top-1")


def token_statistics(exp: Experiment, langs: Sequence[str]) -> Section:
    """How the model's tokenizer splits each language's captions (:func:`tables.token_stats`): table, plot, and
    what it means."""
    clean = exp.model.openai_text_cleaning
    texts = {lang: exp.texts(lang) for lang in langs}
    stats = token_stats(exp.model.tokenizer, texts, exp.model.context_length, clean)
    lengths = pd.DataFrame([{"language": narrative.language_name(lang), "tokens": n} for lang in langs
                            for n in token_lengths(exp.model.tokenizer, texts[lang], clean)])
    shown = pd.DataFrame({
        "Language": stats["language"].map(narrative.language_name),
        "Tokens per caption": stats["tokens per caption"].map("{:.1f}".format),
        "Max tokens": stats["max tokens"].astype(str),
        "Tokens per word": stats["tokens per word"].map("{:.2f}".format),
        "Bytes per token": stats["bytes per token"].map("{:.2f}".format),
        "Truncated": [f"{t}/{c}" for t, c in zip(stats["truncated"], stats["captions"])],
    })
    unit = "CLIP BPE tokens" if narrative.is_openai_clip_tokenizer(exp.model) else "tokens"
    return Section("Tokens per caption", narrative.tokens(stats, exp.model, texts), table(shown),
                   svg(plots.token_lengths(lengths, exp.model.context_length, unit)))


def comparison(exp: Experiment, compared: Comparison, translator: str | None) -> Output:
    """Models × languages × strategies (``result`` of :func:`labclip.lab.compare.compare`): two tables, bars,
    translations, and what could not be compared."""
    result = compared.table
    langs = list(dict.fromkeys(result["language"])) if not result.empty else []
    title = narrative.comparison_heading(result)
    if result.empty:
        shown = [Section(title, narrative.comparison(compared))]
    else:
        setup = pd.DataFrame({"model": result["model"].map(narrative.model_name),
                              "language": result["language"].map(narrative.language_name),
                              "strategy": result["strategy"]})

        def columns(keys: Sequence[str]) -> pd.DataFrame:
            n = len(exp.captions)
            return _labelled(setup.assign(**{key: [format_metric(key, v, n) for v in result[key]] for key in keys}))

        shown = [Section(title, narrative.comparison(compared),
                         "<h3>Accuracy</h3>" + table(columns(list(dict.fromkeys(accuracy_keys(exp.top_k))))),
                         "<h3>Gap to English and similarity</h3>"
                         + table(columns(["gap_pp", "gap_ratio", "correct_mean", "margin_mean"])),
                         svg(plots.comparison_bars(result.assign(model=result["model"].map(narrative.model_name),
                                                                language=setup["language"]), n=len(exp.captions))))]
    for name, texts in compared.translations.items():
        lang = next((lang for lang in langs if name == translator_name(translator or "", lang)), None)
        if lang:
            frame = pd.DataFrame({"Image": exp.image_names, narrative.language_name(lang): exp.captions[lang],
                                  "English (translated)": texts})
            shown.append(Section(f"Translations by {narrative.model_name(name)}", "", table(frame), level=3))
    if compared.skipped:
        shown.append(Section("Not available in this run", "\n".join(f"- {md(s)}" for s in compared.skipped), level=3))
    return Output(*shown)


def published_box(text: str, frame: pd.DataFrame | None = None, after: str = "") -> Output:
    """The one marked box of published figures (``labclip.registry.PUBLISHED``, never measured here): prose
    (Markdown), a table of the figures with their sources, and a closing note."""
    items = [prose(text) if text else "", table(frame) if frame is not None else "", prose(after) if after else ""]
    return Output(f'<div class="labclip-published" style="{PUBLISHED_STYLE};{KEEP_TOGETHER}">'
                  f'<strong>Published results (not measured here)</strong>{"".join(items)}</div>')


def published(text: str, frame: pd.DataFrame | None = None, after: str = "") -> None:
    """Display :func:`published_box` now."""
    published_box(text, frame, after)._ipython_display_()


def published_results(exp: Experiment, langs: list[str]) -> Output:
    """The published figures of this run's model and languages (:func:`narrative.published`), if there are any."""
    text = narrative.published(exp, langs)
    return Output(published_box(text) if text else None)


def results(exp: Experiment, langs: Sequence[str]) -> Output:
    """The lab report's results: :func:`narrative.results` of each language's matching under one heading."""
    return Output(*(Section("Results" if n == 0 else None,
                            f"### {md(narrative.language_name(lang))} captions\n\n{narrative.results(exp.matching(lang))}")
                    for n, lang in enumerate(langs)))


def provenance(run: Run) -> Section:
    """Where the numbers came from: requested and used model, inputs, software, machine, timings."""
    prov = run.provenance()
    rows = [("requested model", narrative.model_name(prov["requested_model"])),
            ("model used", narrative.model_name(prov["model_used"]))]
    if prov["fallback_reason"]:
        rows.append(("why another model", prov["fallback_reason"]))
    for key, value in run.inputs().items():
        shown = public_path(value) if key.endswith("_file") else ", ".join(value) if isinstance(value, list) else value
        rows.append((item_name(key), shown))
    rows += [("images", prov["images"]), ("images sha256", prov["images_sha256"]), ("started", prov["started"])]
    return provenance_section(rows, prov)


def provenance_section(given: Sequence[tuple[str, object]], prov: Mapping) -> Section:
    """The provenance section: the model's facts, ``given`` (the report's own rows), versions, machine, timings."""
    return Section("Provenance", "", table(provenance_rows(given, prov)))


def provenance_table(given: Sequence[tuple[str, object]], prov: Mapping) -> None:
    """Display :func:`provenance_section` now."""
    provenance_section(given, prov)._ipython_display_()
