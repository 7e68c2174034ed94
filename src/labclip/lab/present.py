"""What the notebooks show: one call per report section, each displaying tables, figures or prose.

Each section is one HTML output (heading, prose and its table or figure together, so a page break
does not separate them). Every piece of user text is escaped: tables through pandas' Styler with
``escape="html"``, prose through :func:`narrative.md` and a Markdown renderer that escapes raw
HTML, figures through :func:`plots.plain`. Figures are embedded as ``data:`` PNGs.

Display only: every function shows what it is given (a run, a matching, a table). Loading models,
computing comparisons and writing files happen in :mod:`experiment`, :mod:`compare` and :mod:`report`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from IPython.display import HTML, display

from .. import zeroshot
from ..labels import format_metric, metric_label, pct
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
    block,  # noqa: F401
    joined,
    paragraph_html,
    png,
    prose,
    published_html,
    screen_only,
    section_html,
    svg,
    table,
)
from .narrative import comparison_heading, md, public_path  # noqa: F401
from .results import Comparison
from .tables import captions_frame, confusion, token_stats, top_labels


def section(heading: str | None, text: str = "", *items: str, level: int = 2, together: bool = False) -> None:
    """Display :func:`~labclip.lab.markup.section_html`."""
    display(section_html(heading, text, *items, level=level, together=together))


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns=lambda c: metric_label(str(c), short=True))


def title(exp: Experiment, text: str, report: str | None = None) -> None:
    """The report title, with the untrained-model warning in it and as a banner under it."""
    langs = ", ".join(narrative.language_name(lang) for lang in exp.languages)
    header(exp, text, f"{len(exp.captions)} images · languages: {langs} · run started {exp.started}", report)


def header(run: Run, text: str, details: str, report: str | None = None) -> None:
    """Display :func:`header_html`."""
    display(header_html(run, text, details, report))


def header_html(run: Run, text: str, details: str, report: str | None = None) -> HTML:
    """Title, the report's own name under it when the title is the user's (``report``), the model used (after a
    fallback also the model requested), details (plain text), and one banner that gives the fallback's reason
    and the untrained-model warning where they apply."""
    warning = narrative.banner_text(run.model)
    heading = f"{text} — UNTRAINED DEMO MODEL, NUMBERS MEAN NOTHING" if warning else text
    used = f"Model: {html.escape(narrative.model_name(run.model.name))}"
    if run.fallback_reason:
        used = (f"Requested model: {html.escape(narrative.model_name(run.requested_model))} · "
                f"model used: {html.escape(narrative.model_name(run.model.name))}")
    parts = [f'<h1 style="font-size:1.5em;margin:0.2em 0">{html.escape(heading)}</h1>']
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
    return HTML("".join(parts))


def zeroshot_title(run: ZeroShotRun, text: str, report: str | None = None) -> None:
    """Title and model line; where the run fell back to English, the sentence that says why."""
    header(run, text, f"{len(run.data.paths)} labelled images · {len(run.data.classes)} classes · "
                      f"template language: {narrative.language_name(run.language)}", report)
    note = narrative.zeroshot_language_note(run)
    if note:
        paragraph(note)


def zeroshot_predictions(run: ZeroShotRun, templates: str, k: int = 5) -> None:
    """Top-k label probabilities per image, with the ensemble of one template set."""
    prompts = zeroshot.load_templates(templates, run.language)
    probs = run.probabilities(prompts)
    top = top_labels(probs, run.data.classes, run.data.names, k)
    truth = [run.data.classes[t] for t in run.data.truth]
    rank = ranks(probs, run.data.truth)
    names, per = run.data.names, LABEL_BAR_COLUMNS * LABEL_BAR_ROWS
    figures = [svg(plots.label_bars(top[top["image"].isin(names[i:i + per])], run.data.paths[i:i + per],
                                    LABEL_BAR_COLUMNS, truth[i:i + per], rank[i:i + per]))
               for i in range(0, len(names), per)]
    section(f"Top-{k} labels per image",
            f"Class names {', '.join(md(c) for c in run.data.classes)}, each encoded under the {len(prompts)} "
            f"templates of the set {md(templates)} and averaged (OpenAI's prompt ensembling); "
            + narrative.probability_note(run.model.logit_bias is not None, "classes") + ". The true label's bar is red "
            f"and marked ✓; where it is not among the top {k}, its rank is written above the bars.", figures[0])
    for more in figures[1:]:  # one output each: Chromium moves an output taller than a page to the next page
        display(HTML(f'<div class="labclip-section">{more}</div>'))


def template_comparison(run: ZeroShotRun, sets: list[str], k: int = 5) -> pd.DataFrame:
    """Single template vs ensembles on the same images: one table and one confusion matrix."""
    usable = zeroshot.available_sets(sets, run.language)
    skipped = sorted(set(sets) - set(usable))
    scores = run.compare(usable, k)
    note = (f"There is no {md(narrative.language_name(run.language))} version of: {', '.join(map(md, skipped))}."
            if skipped else "")
    evaluated = {name: run.evaluated(name) for name in scores["templates"]}
    hits = {name: ranks(probs, run.data.truth) == 1 for name, (probs, _) in evaluated.items()}
    per_class: list[Any] = [figures["mean_per_class_recall"] for _, figures in evaluated.values()]
    balanced = scores.assign(mean_per_class_recall=per_class)
    keys = ["templates", "count", "acc1", f"acc{k}", "mean_per_class_recall"]
    shown = pd.DataFrame({key: [format_metric(key, v, n) for v, n in zip(balanced[key], scores["n"])]
                          for key in dict.fromkeys(keys)})
    undefined = topk_undefined(k, len(run.data.classes))
    note = " ".join(filter(None, [note, f"{len(run.data.paths)} images; 95% intervals in brackets: Wilson score "
                                  f"for accuracies; {narrative.per_class_interval(balanced['mean_per_class_recall'].iloc[0])}.",
                                  undefined and f"Top-{k} shows — because {undefined}."]))
    if len(scores) > 1:
        first, last = scores["templates"].iloc[0], scores["templates"].iloc[-1]
        note = " ".join([note, narrative.paired(hits[first], hits[last], f"{md(first)}", f"{md(last)}",
                                                "top-1 accuracy")])
    section("Prompt engineering: single template vs ensembles", note, table(_labelled(shown)))
    best = scores.sort_values("acc1", ascending=False, kind="stable").iloc[0]["templates"]
    probs, _ = evaluated[best]
    section(f"Confusion matrix ({best})", "", svg(plots.confusion_heatmap(
        confusion(probs, run.data.truth, run.data.classes))), together=True)
    return scores


def similarity_range(exp: Experiment, langs: Sequence[str]) -> tuple[float, float]:
    """The common colour scale of the languages' heatmaps: lowest and highest cosine over all of them."""
    sims = [exp.matching(lang).sim for lang in langs]
    return min(float(s.min()) for s in sims), max(float(s.max()) for s in sims)


def heatmap(exp: Experiment, m: Matching, scale: tuple[float, float] | None = None) -> None:
    """Caption × image similarity of one language; ``scale`` shares the colour range with other heatmaps.

    The printed form is chosen by what stays legible: every image when it fits a page with values and captions
    at readable sizes (:func:`plots.heatmap_capacity`), else the hardest images only; the full matrix then goes
    in the HTML page (on screen, up to ``SCREEN_HEATMAP_LIMIT`` images) and in ``similarity_<language>.csv``.
    """
    shared = " The colour scale is shared by the heatmaps of all languages in this run." if scale else ""
    vmin, vmax = scale or (float(m.sim.min()), float(m.sim.max()))
    n, fits = len(m.sim), plots.heatmap_capacity()
    heading = f"Similarity matrix ({narrative.language_name(m.language)})"
    if n <= fits:
        section(heading, "Cosine similarity of every caption (rows) with every image (columns); the correct pairs "
                f"are outlined in red.{shared}",
                svg(plots.similarity_heatmap(m.sim, exp.image_paths, m.captions, vmin=vmin, vmax=vmax)))
        return
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
    section(f"{heading}: the {fits} hardest images", text, *items)


def topk(m: Matching) -> None:
    """The k best captions of each image: one row per image and rank while that stays short (``TOPK_ROWS``),
    else one compact row per image in print, with the full table on screen."""
    k, n = m.metrics.k, m.metrics.n
    full = pd.DataFrame({
        "image": m.topk["image"], "rank": m.topk["rank"].astype(str), "caption": m.topk["caption"],
        "cosine": [format_metric("cosine", v) for v in m.topk["cosine"]],
        "probability": [pct(v) for v in m.topk["probability"]],
        "correct": m.topk["correct"].map({True: "✓", False: ""}),
    })
    note = (narrative.probability_note(m.sigmoid, "all captions").capitalize()
            + ("" if m.sigmoid else ", as CLIP's zero-shot prediction computes them") + ". ✓ marks the correct caption.")
    if n * k <= TOPK_ROWS:
        section(f"Top-{k} captions per image", f"The {k} best captions of each of the {n} images. " + note,
                table(_labelled(full)))
        return
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
    section(f"Top-{k} captions per image",
            f"The {k} best captions of each of the {n} images, each named by the image it describes (caption *i* "
            f"belongs to image *i*), and the rank of the image's own caption. {note} The table with every caption's "
            "text and cosine is in the HTML version of this report (on screen, under “All captions”).",
            table(compact),
            screen_only(f"All captions: the top {k} of each image with text, cosine and probability",
                        table(_labelled(full))))


def distributions(m: Matching) -> None:
    section("Correct vs wrong pairs", narrative.results(m),
            svg(plots.similarity_distributions(m.sim, m.metrics.threshold)), together=True)


def accuracy(m: Matching) -> None:
    x = m.metrics.to_dict()
    k, n = m.metrics.k, m.metrics.n
    keys = ("acc1", f"acc{k}", "mrr")
    e = narrative.estimates(m)
    rows = {direction: [format(e[f"{prefix}_mrr"], ".3f") if key == "mrr"
                        else format_metric(f"{prefix}_{key}", x[f"{prefix}_{key}"], n) for key in keys]
            for direction, prefix in (("Image→text", "i2t"), ("Text→image", "t2i"))}
    shown = pd.DataFrame(rows, index=["Top-1", f"Top-{k}", "Mean reciprocal rank"]).T
    section("Accuracy in both directions", f"{n} images; 95% intervals in brackets (Wilson score for accuracies, "
            "seeded bootstrap over images for the mean reciprocal rank).", table(shown, index=True))


def distractors(m: Matching) -> None:
    k, n = m.metrics.k, m.metrics.n
    text = f"Wrong captions by the number of images (out of {n}) whose top-{k} they enter."
    if m.distractors.empty:
        section("Frequent distractors", text + " No wrong caption entered any top list.")
        return
    shown = m.distractors.assign(appearances=[f"{a}/{n}" for a in m.distractors["appearances"]])
    section("Frequent distractors", text, table(_labelled(shown)))


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


def languages(exp: Experiment, langs: list[str]) -> None:
    """Captions, side-by-side metrics, accuracy bars, token statistics and one heatmap per language."""
    captions = captions_frame(exp.captions)[["name", *langs]].rename(columns={"name": "Image"} | {
        lang: narrative.language_name(lang) for lang in langs})
    section("Captions", "", table(captions))
    section("Metrics by language", " ".join(filter(None, [INTERVALS_NOTE, _languages_test(exp, langs)])),
            metrics_by_language(exp, langs),
            svg(plots.accuracy_bars(exp.compare(langs).rename(columns=narrative.language_name), exp.top_k,
                                    n=len(exp.captions))))
    _published(exp, langs)
    token_statistics(exp, langs)
    scale = similarity_range(exp, langs) if len(langs) > 1 else None
    for lang in langs:
        heatmap(exp, exp.matching(lang), scale)


def token_statistics(exp: Experiment, langs: list[str]) -> pd.DataFrame:
    """How the model's tokenizer splits each language's captions: table, plot, and what it means."""
    clean = exp.model.openai_text_cleaning
    captions = {lang: exp.texts(lang) for lang in langs}
    stats = token_stats(exp.model.tokenizer, captions, exp.model.context_length, clean)
    lengths = pd.DataFrame([{"language": narrative.language_name(lang), "tokens": n} for lang in langs
                            for n in token_lengths(exp.model.tokenizer, captions[lang], clean)])
    shown = pd.DataFrame({
        "Language": stats["language"].map(narrative.language_name),
        "Tokens per caption": stats["tokens per caption"].map("{:.1f}".format),
        "Max tokens": stats["max tokens"].astype(str),
        "Tokens per word": stats["tokens per word"].map("{:.2f}".format),
        "Bytes per token": stats["bytes per token"].map("{:.2f}".format),
        "Truncated": [f"{t}/{c}" for t, c in zip(stats["truncated"], stats["captions"])],
    })
    unit = "CLIP BPE tokens" if narrative.is_openai_clip_tokenizer(exp.model) else "tokens"
    section("Tokens per caption", narrative.tokens(stats, exp.model, captions), table(shown),
            svg(plots.token_lengths(lengths, exp.model.context_length, unit)))
    return stats


def _languages_test(exp: Experiment, langs: Sequence[str]) -> str:
    """The exact McNemar test of the first two languages' image→text top-1 hits, in one sentence ("" for one language)."""
    if len(langs) < 2:
        return ""
    a, b = (exp.matching(lang) for lang in langs[:2])
    return narrative.paired(narrative._top1(a), narrative._top1(b), f"{md(narrative.language_name(langs[0]))} captions",
                            f"{md(narrative.language_name(langs[1]))} captions", "image→text top-1")


def comparison(exp: Experiment, compared: Comparison, translator: str | None) -> None:
    """Models × languages × strategies (``result`` of :func:`labclip.lab.compare.compare`): two tables, bars,
    translations, and what could not be compared."""
    result = compared.table
    langs = list(dict.fromkeys(result["language"])) if not result.empty else []
    k = exp.top_k
    heading = narrative.comparison_heading(result)
    if result.empty:
        section(heading, narrative.comparison(compared))
    else:
        setup = pd.DataFrame({"model": result["model"].map(narrative.model_name),
                              "language": result["language"].map(narrative.language_name),
                              "strategy": result["strategy"]})

        def columns(keys: Sequence[str]) -> pd.DataFrame:
            n = len(exp.captions)
            return _labelled(setup.assign(**{key: [format_metric(key, v, n) for v in result[key]] for key in keys}))

        section(heading, narrative.comparison(compared),
                "<h3>Accuracy</h3>" + table(columns(list(dict.fromkeys(accuracy_keys(k))))),
                "<h3>Gap to English and similarity</h3>"
                + table(columns(["gap_pp", "gap_ratio", "correct_mean", "margin_mean"])),
                svg(plots.comparison_bars(result.assign(model=result["model"].map(narrative.model_name),
                                                       language=setup["language"]), n=len(exp.captions))))
    for name, texts in compared.translations.items():
        lang = next((lang for lang in langs if name == translator_name(translator or "", lang)), None)
        if lang:
            shown = pd.DataFrame({"Image": exp.image_names, narrative.language_name(lang): exp.captions[lang],
                                  "English (translated)": texts})
            section(f"Translations by {narrative.model_name(name)}", "", table(shown), level=3)
    if compared.skipped:
        section("Not available in this run", "\n".join(f"- {md(s)}" for s in compared.skipped), level=3)


def published(text: str, frame: pd.DataFrame | None = None, after: str = "") -> None:
    """Display :func:`~labclip.lab.markup.published_html`."""
    display(published_html(text, frame, after))


def paragraph(markdown: str) -> None:
    """Display :func:`~labclip.lab.markup.paragraph_html`."""
    display(paragraph_html(markdown))


def lab_report(exp: Experiment, langs: list[str]) -> None:
    """The write-up: abstract, method, results, discussion, published figures, limitations."""
    section("Abstract", narrative.abstract(exp, langs))
    section("Method", narrative.method(exp))
    for n, lang in enumerate(langs):
        results = f"### {md(narrative.language_name(lang))} captions\n\n{narrative.results(exp.matching(lang))}"
        section("Results" if n == 0 else None, results)
    first = exp.matching(langs[0])
    heatmap(exp, first, similarity_range(exp, langs) if len(langs) > 1 else None)
    topk(first)
    if len(langs) > 1:
        section("Languages compared", INTERVALS_NOTE, metrics_by_language(exp, langs),
                svg(plots.accuracy_bars(exp.compare(langs).rename(columns=narrative.language_name), exp.top_k,
                                        n=len(exp.captions))),
                level=3)
    section("Discussion", narrative.discussion(exp, langs))
    _published(exp, langs)
    section("Limitations", narrative.limitations(exp))


def _published(exp: Experiment, langs: list[str]) -> None:
    text = narrative.published(exp, langs)
    if text:
        published(text)


def provenance(run: Run) -> None:
    """Show where the numbers came from: requested and used model, inputs, software, machine, timings."""
    prov = run.provenance()
    rows = [("requested model", narrative.model_name(prov["requested_model"])),
            ("model used", narrative.model_name(prov["model_used"]))]
    if prov["fallback_reason"]:
        rows.append(("why another model", prov["fallback_reason"]))
    for key, value in run.inputs().items():
        shown = public_path(value) if key.endswith("_file") else ", ".join(value) if isinstance(value, list) else value
        rows.append((_item(key), shown))
    rows += [("images", prov["images"]), ("images sha256", prov["images_sha256"]), ("started", prov["started"])]
    provenance_table(rows, prov)


def _shown(key: str, value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("name", "source", "image_source", "requested model", "model used") and isinstance(value, str):
        return narrative.model_name(value)
    if key in ("revision", "image_revision") and isinstance(value, str):
        return narrative.public_revision(value)
    return str(value)


# Provenance keys whose plain spelling (underscores as spaces) would read wrong.
PROVENANCE_ITEMS = {"top_k": "top-k", "memory_gib": "memory (GiB)", "cpus": "CPUs", "cuda": "CUDA",
                    "embedding_dim": "embedding dimensions", "image_size": "image size (px)"}


def _item(key: str) -> str:
    return PROVENANCE_ITEMS.get(key, key.replace("_", " "))


def provenance_table(given: Sequence[tuple[str, object]], prov: Mapping) -> None:
    """Display :func:`provenance_html`."""
    display(provenance_html(given, prov))


def provenance_html(given: Sequence[tuple[str, object]], prov: Mapping) -> HTML:
    """The provenance section: the model's facts, ``given`` (the report's own rows), versions, machine, timings."""
    rows = [(f"model: {_item(k)}", _shown(k, v)) for k, v in prov["model"].items()]
    rows += [(k, _shown(k, v)) for k, v in given]
    rows += [(f"version: {k}", _shown(k, v)) for k, v in prov["versions"].items()]
    rows += [(f"machine: {_item(k)}", _shown(k, v)) for k, v in prov["machine"].items()]
    rows += [(f"time: {k}", f"{v:.2f} s") for k, v in prov["timings_s"].items()]
    return section_html("Provenance", "", table(pd.DataFrame(rows, columns=["Item", "Value"])))
