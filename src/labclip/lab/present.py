"""What the notebooks show: one call per report section, each displaying tables, figures or prose.

Display only: every function shows what it is given (a run, a matching, a table). Loading models,
computing comparisons and writing files happen in :mod:`experiment`, :mod:`compare` and :mod:`report`.
"""

from __future__ import annotations

import html
import io

import pandas as pd
from IPython.display import HTML, Image, Markdown, display
from matplotlib.figure import Figure

from .. import zeroshot
from ..metrics import accuracy_keys, ranks
from ..model import ClipModel
from ..text import token_lengths
from ..translate import translator_name
from . import narrative, plots
from .experiment import Experiment, Matching, Run, ZeroShotRun
from .tables import captions_frame, confusion, token_stats, top_labels

BANNER_STYLE = ("border:3px solid #c62828;background:#ffebee;color:#8e0000;padding:10px 14px;"
                "margin:8px 0 14px 0;font-size:15px;font-weight:bold;border-radius:4px")


def figure(fig: Figure, dpi: int = 110) -> None:
    """Display a figure as an embedded PNG (works with or without pyplot's inline backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    display(Image(data=buffer.getvalue(), format="png"))


def title(exp: Experiment, text: str) -> None:
    """The report title, with the untrained-model warning in it and as a banner under it."""
    header(exp.model, text, f"{len(exp.captions)} images · languages: {', '.join(exp.languages)} · "
                            f"run started {exp.started}")


def header(model: ClipModel, text: str, details: str) -> None:
    warning = narrative.banner_text(model)
    heading = f"{text} — UNTRAINED DEMO MODEL, NUMBERS MEAN NOTHING" if warning else text
    display(Markdown(f"# {heading}\n\nModel: `{model.name}` · {details}"))
    if warning:
        display(HTML(f'<div class="labclip-banner" style="{BANNER_STYLE}">⚠ {html.escape(warning)}</div>'))


def zeroshot_title(run: ZeroShotRun, text: str) -> None:
    header(run.model, text, f"{len(run.data.paths)} labelled images · {len(run.data.classes)} classes · "
                            f"template language: {run.language}")
    if run.fallback_reason:
        display(Markdown(f"The requested model could not be loaded: {run.fallback_reason}"))


def zeroshot_predictions(run: ZeroShotRun, templates: str, k: int = 5) -> None:
    """Top-k label probabilities per image, with the ensemble of one template set."""
    prompts = zeroshot.load_templates(templates, run.language)
    table = top_labels(run.probabilities(prompts), run.data.classes, run.data.paths, k)
    display(Markdown(f"## Top-{k} labels per image\n\nClass names {', '.join(run.data.classes)}, each encoded under "
                     f"the {len(prompts)} templates of `{templates}` and averaged (OpenAI's prompt ensembling); "
                     "probabilities are the softmax over classes at the model's logit scale."))
    figure(plots.label_bars(table, run.data.paths))


def template_comparison(run: ZeroShotRun, sets: list[str], k: int = 5) -> pd.DataFrame:
    """Single template vs ensembles on the same images: one table, one bar chart, one confusion matrix."""
    usable = zeroshot.available_sets(sets, run.language)
    skipped = sorted(set(sets) - set(usable))
    table = run.compare(usable, k)
    note = f" (no {run.language!r} version of: {', '.join(skipped)})" if skipped else ""
    display(Markdown(f"## Prompt engineering: single template vs ensembles{note}"))
    n = len(run.data.paths)
    display(Markdown(f"{n} labelled images; accuracies with 95% Wilson intervals."))
    display(table.style.format({"acc1": lambda v: narrative.rate(v, n), f"acc{k}": lambda v: narrative.rate(v, n),
                                "mean_per_class_recall": "{:.1%}"})
            .hide(axis="index"))
    if len(table) > 1:
        first, last = table["templates"].iloc[0], table["templates"].iloc[-1]
        hits = [ranks(run.probabilities(zeroshot.load_templates(name, run.language)), run.data.truth) == 1
                for name in (first, last)]
        display(Markdown(narrative.paired(*hits, f"`{first}`", f"`{last}`", "top-1 accuracy")))
    best = table.sort_values("acc1", ascending=False, kind="stable").iloc[0]["templates"]
    probs = run.probabilities(zeroshot.load_templates(best, run.language))
    display(Markdown(f"## Confusion matrix (`{best}`)"))
    figure(plots.confusion_heatmap(confusion(probs, run.data.truth, run.data.classes)))
    return table


def heatmap(exp: Experiment, m: Matching) -> None:
    display(Markdown(f"## Similarity matrix ({narrative.language_name(m.language)})\n\nCosine similarity of every "
                     "caption (rows) with every image (columns); the correct pairs are outlined in red."))
    figure(plots.similarity_heatmap(m.sim, exp.image_paths, m.captions))


def topk(m: Matching) -> None:
    k = int(m.metrics.k)
    display(Markdown(f"## Top-{k} captions per image\n\nProbabilities are the softmax over all captions at the "
                     "model's logit scale, as CLIP's zero-shot prediction computes them. ✓ marks the correct caption."))
    table = m.topk.assign(correct=m.topk["correct"].map({True: "✓", False: ""}))
    display(table.style.format({"cosine": "{:.3f}", "probability": "{:.1%}"}).hide(axis="index"))


def distributions(m: Matching) -> None:
    display(Markdown("## Correct vs wrong pairs\n\n" + narrative.results(m)))
    figure(plots.similarity_distributions(m.sim, m.metrics.threshold))


def accuracy(m: Matching) -> None:
    x = m.metrics
    k = x.k
    e = narrative.estimates(m)
    table = pd.DataFrame(
        {"top-1": [format(e[f"{d}_acc1"], ".1%") for d in ("i2t", "t2i")],
         f"top-{k}": [format(e[f"{d}_acc{k}"], ".1%") for d in ("i2t", "t2i")],
         "MRR": [format(e[f"{d}_mrr"], ".3f") for d in ("i2t", "t2i")]},
        index=["image → text", "text → image"],
    )
    display(Markdown(f"## Accuracy in both directions\n\n{x.n} images; 95% intervals in brackets (Wilson score for "
                     "accuracies, seeded bootstrap over images for MRR)."))
    display(table.style)


def distractors(m: Matching) -> None:
    k = int(m.metrics.k)
    display(Markdown(f"## Frequent distractors\n\nWrong captions by the number of images whose top-{k} they enter."))
    if m.distractors.empty:
        display(Markdown("No wrong caption entered any top list."))
    else:
        display(m.distractors.style.hide(axis="index"))


def languages(exp: Experiment, langs: list[str]) -> None:
    """Side-by-side metrics, accuracy bars and one heatmap per language."""
    display(Markdown("## Captions"))
    display(captions_frame(exp.captions)[["image", *langs]].style.hide(axis="index"))
    table = exp.compare(langs)
    n = len(exp.captions)
    accuracies = [key for key in table.index if "_acc" in key]
    display(Markdown(f"## Metrics by language\n\nAccuracies over {n} images with 95% Wilson intervals."))
    display(table.style.format(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
            .format(lambda v: narrative.rate(v, n), subset=pd.IndexSlice[accuracies, :]))
    figure(plots.accuracy_bars(table, exp.top_k, n=n))
    if len(langs) > 1:
        a, b = exp.matching(langs[0]), exp.matching(langs[1])
        display(Markdown(narrative.paired(narrative._top1(a), narrative._top1(b),
                                          f"{narrative.language_name(langs[0])} captions",
                                          f"{narrative.language_name(langs[1])} captions", "image→text top-1")))
    token_statistics(exp, langs)
    for lang in langs:
        heatmap(exp, exp.matching(lang))


def token_statistics(exp: Experiment, langs: list[str]) -> pd.DataFrame:
    """How the model's tokenizer splits each language's captions: table, plot, and what it means."""
    clean = exp.model.openai_text_cleaning
    captions = {lang: exp.captions[lang] for lang in langs}
    stats = token_stats(exp.model.tokenizer, captions, exp.model.context_length, clean)
    lengths = pd.DataFrame([{"language": lang, "tokens": n} for lang in langs
                            for n in token_lengths(exp.model.tokenizer, captions[lang], clean)])
    display(Markdown("## Tokens per caption\n\n" + narrative.tokens(stats)))
    display(stats.style.format({"tokens per caption": "{:.1f}", "tokens per word": "{:.2f}",
                                "bytes per token": "{:.2f}"}).hide(axis="index"))
    figure(plots.token_lengths(lengths, exp.model.context_length))
    return stats


def comparison(exp: Experiment, table: pd.DataFrame, translator: str | None) -> None:
    """Models × languages × strategies (a table from :func:`labclip.lab.compare.compare`): table, bars, translations."""
    langs = list(dict.fromkeys(table["language"])) if not table.empty else []
    display(Markdown("## Fixing the language gap: raw captions, translation to English, multilingual encoders\n\n"
                     + narrative.comparison(table, len(exp.captions))))
    display(table.style.format({c: lambda v: narrative.rate(v, len(exp.captions)) for c in accuracy_keys(exp.top_k)}
                               | {"correct_mean": "{:.3f}", "margin_mean": "{:.3f}", "gap_pp": "{:+.1f}",
                                  "gap_ratio": lambda v: "—" if v is None or v != v else f"{v:.2f}×"})
                        .hide(axis="index"))
    figure(plots.comparison_bars(table, n=len(exp.captions)))
    for name, texts in table.attrs["translations"].items():
        lang = next((lang for lang in langs if name == translator_name(translator or "", lang)), None)
        if lang:
            display(Markdown(f"### Translations by `{name}`"))
            display(pd.DataFrame({"image": exp.image_names, lang: exp.captions[lang], "en (translated)": texts})
                    .style.hide(axis="index"))
    if table.attrs["skipped"]:
        display(Markdown("### Not available in this run\n\n" + "\n".join(f"- {s}" for s in table.attrs["skipped"])))


def lab_report(exp: Experiment, langs: list[str]) -> None:
    """The write-up: abstract, method, results, discussion, limitations."""
    display(Markdown("## Abstract\n\n" + narrative.abstract(exp, langs)))
    display(Markdown("## Method\n\n" + narrative.method(exp)))
    display(Markdown("## Results"))
    for lang in langs:
        m = exp.matching(lang)
        display(Markdown(f"### {narrative.language_name(lang)} captions\n\n" + narrative.results(m)))
    first = exp.matching(langs[0])
    heatmap(exp, first)
    topk(first)
    if len(langs) > 1:
        display(Markdown("### Languages compared"))
        table = exp.compare(langs)
        display(table.style.format(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)))
        figure(plots.accuracy_bars(table, exp.top_k))
    display(Markdown("## Discussion\n\n" + narrative.discussion(exp, langs)))
    display(Markdown("## Limitations\n\n" + narrative.limitations(exp)))


def provenance(run: Run) -> None:
    """Show where the numbers came from: requested and used model, inputs, software, machine, timings."""
    prov = run.provenance()
    rows = [("requested model", prov["requested_model"]), ("model used", prov["model_used"])]
    if prov["fallback_reason"]:
        rows.append(("why another model", prov["fallback_reason"]))
    rows += [(key.replace("_", " "), ", ".join(value) if isinstance(value, list) else value)
             for key, value in run.inputs().items()]
    rows += [("images", prov["images"]), ("images sha256", prov["images_sha256"]), ("started", prov["started"])]
    _provenance_table(rows, prov)


def _provenance_table(rows: list[tuple], prov: dict) -> None:
    rows = [(f"model: {k}", v) for k, v in prov["model"].items()] + rows
    rows += [(f"version: {k}", v) for k, v in prov["versions"].items()]
    rows += [(f"machine: {k}", v) for k, v in prov["machine"].items()]
    rows += [(f"time: {k}", f"{v:.2f} s") for k, v in prov["timings_s"].items()]
    display(Markdown("## Provenance"))
    display(pd.DataFrame(rows, columns=["item", "value"]).astype(str).style.hide(axis="index"))

