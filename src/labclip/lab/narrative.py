"""The lab report's words: metric labels and number formats, and prose computed from a run (Markdown).

Every sentence is either computed from the run or conditional on one of its facts (the model
family and tokenizer, the languages and scripts of the captions, whether the bundled caption set
is used, whether the model is untrained). Text that came from the user goes through :func:`md`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from .. import stats as _stats
from ..config import CAPTIONS_DIR, DEFAULT_CAPTIONS
from ..labels import (  # noqa: F401
    METRIC_LABELS,
    format_metric,
    is_hit_count,
    metric_label,
    missing,
    num,
    p_value,
    pct,
    rate,
    share,
)
from ..model import ClipModel
from ..registry import published as registry_published
from ..registry import resolve_model_name
from . import compare
from .experiment import Experiment, Matching, ZeroShotRun
from .provenance import sha256_file
from .results import Comparison
from .tables import token_stats
from .wording import (  # noqa: F401 - narrative's names for reports and notebooks
    DIRECTIONS,
    LANGUAGE_NAMES,
    adapter_text,
    banner_text,
    fallback_note,
    image_processing,
    is_openai_clip_tokenizer,
    language_name,
    md,
    model_name,
    public_path,
    public_revision,
    script,
    text_processing,
)

XTD10_T2I_R1 = dict(benchmark="XTD10", direction="t2i", metric="R@1")  # the figures the languages reports cite


def metric_table(metrics: Mapping[str, Mapping[str, object]], keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Metrics side by side as display strings: one column per name (e.g. language), labelled rows.

    ``k`` and the hit counts are left out (the accuracies show them as ``k/n``).
    """
    columns = list(metrics)
    keys = list(keys) if keys is not None else [k for k in metrics[columns[0]] if k != "k" and not is_hit_count(k)]
    cells = {name: [format_metric(key, m.get(key), cast(int | None, m.get("n"))) for key in keys]
             for name, m in metrics.items()}
    return pd.DataFrame(cells, index=[metric_label(key) for key in keys])


def zeroshot_language_note(run: ZeroShotRun) -> str:
    """Why a zero-shot run is in English although its first language is another (``""`` when it is not):
    what lacked that language, from the run's record."""
    wanted = run.requested_language
    if not run.language_gaps or wanted is None or wanted == run.language:
        return ""
    name = md(language_name(wanted))
    parts = []
    if "labels" in run.language_gaps:
        parts.append(f"the labels ({md(public_path(run.labels_source))}) have no {name} column")
    sets = [s for s in run.language_gaps if s != "labels"]
    if sets:
        parts.append(f"the template set{'s' * (len(sets) > 1)} {', '.join(map(md, sets))} "
                     f"{'have' if len(sets) > 1 else 'has'} no {name} version")
    return (f"The first caption language is {name}, but {' and '.join(parts)}, so zero-shot classification runs "
            f"on the labels and templates in {language_name(run.language)}.")


def _bundled_caption_hashes() -> set[str]:
    files = {DEFAULT_CAPTIONS, *(p for p in CAPTIONS_DIR.glob("*") if p.is_file())} if CAPTIONS_DIR.is_dir() else set()
    return {sha256_file(p) for p in files if Path(p).is_file()}


def uses_bundled_captions(exp: Experiment) -> bool:
    """Whether the run's caption file is one that ships with labclip (compared by content)."""
    source = exp.captions.source
    return bool(source) and Path(source).is_file() and sha256_file(source) in _bundled_caption_hashes()


def pictograms(exp: Experiment) -> int:
    """How many of the run's images their folder's SOURCES.csv lists as rendered from an emoji font."""
    count = 0
    for path in map(Path, exp.image_paths):
        sources = path.parent / "SOURCES.csv"
        if sources.is_file():
            with sources.open(encoding="utf-8", newline="") as handle:
                rows = {row.get("file"): row for row in csv.DictReader(handle)}
            row = rows.get(path.name) or {}
            count += "emoji" in (row.get("source") or "").lower()
    return count


def _model_id(name: str | None) -> str | None:
    return resolve_model_name(name) if name else None


def gap(reference: float, other: float) -> dict[str, str]:
    """A gap between two accuracies in the three forms people quote.

    ``points``: difference in percentage points; ``ratio``: reference / other;
    ``relative``: (reference − other) / other, the "233% improvement" form.
    """
    points, ratio = compare.gap(reference, other)
    if ratio is None:
        return {"points": f"{points:+.1f} percentage points", "ratio": "undefined (the other score is 0)",
                "relative": "undefined"}
    return {"points": f"{points:+.1f} percentage points", "ratio": f"{ratio:.2f}×",
            "relative": f"{100 * (ratio - 1):+.0f}%"}


def _direction_summary(m: Matching) -> str:
    x = m.metrics
    return (f"image→text top-1 {share(x.i2t.hits1, x.n)}, text→image top-1 "
            f"{share(x.t2i.hits1, x.n)}")


def _names(languages: Iterable[str]) -> str:
    """``English``, ``English and Russian``, ``German, French and Spanish``."""
    names = [md(language_name(lang)) for lang in languages]
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else ""


def abstract(exp: Experiment, languages: list[str]) -> str:
    first = exp.matching(languages[0])
    used = "labclip's untrained demo model" if exp.model.is_demo else md(model_name(exp.model.name))
    lines = [
        f"We matched **{first.metrics.n} images** with one caption each in {_names(languages)} using "
        f"**{used}** and cosine similarity of CLIP embeddings, in both retrieval directions."
    ]
    for lang in languages:
        lines.append(f"With {md(language_name(lang))} captions: {_direction_summary(exp.matching(lang))}.")
    if len(languages) > 1:
        lines.append(_gap_sentence(exp, languages[0], languages[1]))
    if exp.model.untrained:
        lines.append("**The model is untrained, so these figures are placeholders that only show the pipeline works.**")
    return " ".join(lines)


def _gap_sentence(exp: Experiment, a: str, b: str) -> str:
    """The image→text top-1 gap of two languages as the abstract states it: a gap in points (and as a ratio where
    the second language got any right) only when the exact McNemar test detects it."""
    name_a, name_b = md(language_name(a)), md(language_name(b))
    test = _stats.paired_test(_top1(exp.matching(a)), _top1(exp.matching(b)))
    if test.only_a == test.only_b == 0:
        return f"{name_a} and {name_b} captions get the same images right (image→text top-1)."
    if not test.significant(0.05):
        return (f"Between {name_a} and {name_b} captions there is no detectable difference in image→text top-1 "
                f"({p_value(test.p_value)}, exact McNemar test).")
    ref, other = exp.matching(a).metrics, exp.matching(b).metrics
    g = gap(ref.i2t.acc1, other.i2t.acc1)
    forms = (f"{name_b} captions get none right, so there is no ratio" if other.i2t.hits1 == 0
             else f"ratio {g['ratio']}, relative difference {g['relative']}")
    return (f"The image→text top-1 gap between {name_a} and {name_b} is {g['points']} ({forms}; exact McNemar "
            f"test, {p_value(test.p_value)}).")


def method(exp: Experiment) -> str:
    model, pre = exp.model, exp.model.preprocess
    prov = exp.provenance()
    source = model_name(model.source)
    revision = f"revision {md(public_revision(model.revision))}" if model.revision else "no revision recorded"
    mean = ", ".join(f"{v:.3f}" for v in pre.mean)
    std = ", ".join(f"{v:.3f}" for v in pre.std)
    return "\n".join([
        f"- **Model.** {md(model_name(model.name))} loaded through Hugging Face transformers from {md(source)} ({revision}); "
        f"{model.dim}-dimensional embeddings, learned temperature (logit scale) {model.logit_scale:.1f}.",
        f"- **Image preprocessing.** {image_processing(pre)}, RGB, normalised with mean ({mean}) and std ({std}) "
        "from the model's image processor. EXIF orientation is applied and transparency is composited on white "
        "when files are read.",
        f"- **Text preprocessing.** {text_processing(model)}",
        f"- **Data.** {prov['images']} images and the caption file {md(public_path(prov['captions_file']))} "
        f"(sha256 {prov['captions_sha256'][:12]}…; images hash {prov['images_sha256'][:12]}…). "
        "Caption *i* describes image *i*.",
        "- **Scoring.** Both embeddings are L2-normalised and compared by cosine similarity. Image→text accuracy asks "
        "whether an image's own caption scores highest among all captions; text→image asks the reverse. A tie with "
        f"a wrong candidate counts as a miss. Top-{exp.top_k} accuracy, mean reciprocal rank, the margin between "
        "the correct caption and the best wrong one, and CLIP's symmetric contrastive loss are reported.",
    ])


def paired(hits_a, hits_b, a: str, b: str, what: str = "accuracy", alpha: float = 0.05) -> str:
    """One sentence on an exact McNemar test of two methods' per-image hits on the same images; when no image
    is right with only one of them, a plain statement that there is no difference to test."""
    test = _stats.paired_test(hits_a, hits_b)
    if test.only_a == test.only_b == 0:
        right = int(np.count_nonzero(hits_a))
        which = "none of them" if right == 0 else "all of them" if right == test.n else f"exactly the same {right}"
        return (f"On the same {test.n} images, {a} and {b} get {which} right ({what}): no image is right with "
                "only one of them, so there is no difference to test.")
    verdict = (f"the difference in {what} is significant at the 5% level" if test.significant(alpha)
               else f"no detectable difference in {what} at the 5% level")
    verb = "is" if test.only_a == 1 else "are"
    return (f"On the same {test.n} images, {test.only_a} {verb} right only with {a} and {test.only_b} only with {b}; "
            f"{verdict} (exact McNemar test, {p_value(test.p_value)}).")


def estimates(m: Matching) -> dict[str, _stats.Estimate]:
    """Accuracy and MRR of a matching with 95% intervals (Wilson; seeded bootstrap over images for MRR)."""
    return m.estimates()


def margin_estimate(m: Matching) -> _stats.Estimate:
    """Mean margin of the correct caption over the best wrong one, with a seeded bootstrap interval over images."""
    return m.margin()


def _top1(m: Matching) -> np.ndarray:
    return m.top1


def results(m: Matching) -> str:
    x = m.metrics
    k, n = x.k, x.n
    e = estimates(m)
    lines = [
        f"- Image→text: top-1 {share(x.i2t.hits1, n)}, top-{k} {format_metric(f'i2t_acc{k}', x.i2t.acck, n)}, "
        f"mean reciprocal rank {e['i2t_mrr']:.3f}.",
        f"- Text→image: top-1 {share(x.t2i.hits1, n)}, top-{k} {format_metric(f't2i_acc{k}', x.t2i.acck, n)}, "
        f"mean reciprocal rank {e['t2i_mrr']:.3f}.",
        f"- Correct pairs: cosine {num(x.correct_min)} to {num(x.correct_max)} (mean {num(x.correct_mean)}); "
        f"wrong pairs: {num(x.wrong_min)} to {num(x.wrong_max)} (mean {num(x.wrong_mean)}).",
        f"- Margin of the correct caption over the best wrong one: mean {margin_estimate(m):.3f}, "
        f"smallest {num(x.margin_min)}.",
    ]
    if x.separable:
        lines.append(f"- Every correct pair scores above every wrong pair; a threshold of {num(cast(float, x.threshold))} "
                     "separates them.")
    else:
        lines.append(f"- Correct and wrong pairs overlap (lowest correct {num(x.correct_min)} ≤ highest wrong "
                     f"{num(x.wrong_max)}), so no single threshold separates them.")
    lines.append(f"- CLIP's symmetric contrastive loss at the model's logit scale: {num(x.contrastive_loss)}.")
    return "\n".join(lines)


def _script_note(texts: Iterable[str]) -> str:
    found = script(texts)
    return f" ({found} script)" if found else ""


def discussion(exp: Experiment, languages: list[str]) -> str:
    parts = []
    if exp.model.untrained:
        parts.append("The model behind these numbers has random weights, so "
                     + ("any difference between languages or captions is noise." if len(languages) > 1 else
                        "which captions it matches says nothing about the captions or the images."))
    if len(languages) > 1:
        a, b = languages[0], languages[1]
        ma, mb = exp.matching(a).metrics, exp.matching(b).metrics
        parts.append(f"Image→text top-1: {share(ma.i2t.hits1, ma.n)} with {md(language_name(a))} captions, "
                     f"{share(mb.i2t.hits1, mb.n)} with {md(language_name(b))} captions. " + paired(_top1(exp.matching(a)), _top1(exp.matching(b)), f"{md(language_name(a))} captions",
                            f"{md(language_name(b))} captions", "image→text top-1"))
        captions = {lang: exp.texts(lang) for lang in (a, b)}
        stats = token_stats(exp.model.tokenizer, captions, exp.model.context_length, exp.model.openai_text_cleaning)
        per_word = dict(zip(stats["language"], stats["tokens per word"]))
        parts.append(f"The model's tokenizer spends {per_word[a]:.2f} tokens per word on "
                     f"{md(language_name(a))}{_script_note(captions[a])} captions and "
                     f"{per_word[b]:.2f} on {md(language_name(b))}{_script_note(captions[b])} "
                     "ones.")
    parts.append("Accuracy on a paired set says whether the right caption wins; the similarity ranges and margins say "
                 "by how much, which matters when choosing a threshold for automated tagging.")
    return "\n\n".join(parts)


def published(exp: Experiment, languages: list[str]) -> str | None:
    """Published figures for the run's model and languages (Markdown), or ``None`` where none apply.

    Shown only for a model with XTD10 text→image recall@1 figures in ``labclip.registry.PUBLISHED`` (the one
    used, or the one requested when the run fell back to another) and only with a non-English language of the
    run among them.
    """
    used, requested = _model_id(exp.model.source), _model_id(exp.requested_model)
    model = used if registry_published(**XTD10_T2I_R1, model=used or "") else \
        requested if exp.fallback_reason else None
    figures = {p.language: p.value for p in registry_published(**XTD10_T2I_R1, model=model or "")}
    shown = [lang for lang in dict.fromkeys(["en", *languages]) if figures and lang in figures]
    if not figures or not any(lang != "en" for lang in shown):
        return None
    which = "" if model == used else " (requested by this run, which could not load it)"
    values = "; ".join(f"{md(language_name(lang))} {figures[lang]:.1f}%" for lang in shown)
    sources = "; ".join(dict.fromkeys(p.source for p in registry_published(**XTD10_T2I_R1, model=model or "")))
    return (f"{md(model)}{which}, text→image recall@1 on the XTD10 benchmark (1,000 MS-COCO images, captions "
            f"translated by people): {values}. Source: {sources}. These figures come from a different "
            "image set and were not measured by this run.")


def limitations(exp: Experiment) -> str:
    n = len(exp.captions)
    bundled = uses_bundled_captions(exp)
    items = [
        f"- {n} images: one image more or less changes an accuracy by {100 / n:.1f} percentage points, so small "
        "differences are not significant.",
    ]
    if bundled:
        items.append("- One caption per image and language, written by labclip's authors (the bundled caption set); "
                     "other wordings change the scores (compare the short caption set).")
        drawn = pictograms(exp)
        if drawn:
            items.append(f"- {drawn} of the {n} images are pictograms rendered from an emoji font (see "
                         "data/images/SOURCES.csv), not photographs.")
    else:
        items.append(f"- One caption per image and language, from {md(public_path(exp.captions.source))}; "
                     "other wordings change the scores.")
    if exp.model.untrained:
        items.insert(0, "- **The model is untrained (random weights): no claim about CLIP's accuracy can be drawn "
                        "from this report.** Real-weight numbers require access to the Hugging Face hub.")
    if exp.fallback_reason:
        items.insert(1, f"- {md(fallback_note(exp.requested_model, exp.fallback_reason))}")
    return "\n".join(items)


def tokens(stats: pd.DataFrame, model: ClipModel | None = None, captions: Mapping[str, list[str]] | None = None) -> str:
    """How the tokenizer splits each language's captions, with this run's numbers."""
    rows: Any = stats.set_index("language")
    what = ("The tokenizer" if model is None else "CLIP's byte-level BPE" if is_openai_clip_tokenizer(model)
            else f"The {md(type(model.tokenizer).__name__)} tokenizer")
    parts = [f"{md(language_name(lang))}{_script_note(captions[lang]) if captions else ''}: "
             f"{r['tokens per caption']:.1f} tokens per caption on average ({r['tokens per word']:.2f} per word, "
             f"{r['bytes per token']:.2f} UTF-8 bytes per token; {int(r['truncated'])} of {int(r['captions'])} "
             "captions exceed the context)"
             for lang, r in rows.iterrows()]
    text = f"{what} splits the captions as follows. " + "; ".join(parts) + "."
    if "en" in rows.index:
        for other in (lang for lang in rows.index if lang != "en"):
            ratio = rows.loc[other, "tokens per word"] / rows.loc["en", "tokens per word"]
            text += (f" A {md(language_name(other))} word costs {ratio:.1f}× as many tokens as an English one, and "
                     f"each token covers {rows.loc[other, 'bytes per token']:.2f} UTF-8 bytes against "
                     f"{rows.loc['en', 'bytes per token']:.2f} for English.")
    elif len(rows) > 1:
        text += " There are no English captions in this run to compare the other languages with."
    return text


def comparison(result: Comparison) -> str:
    """How the strategies compare in this run (:func:`labclip.lab.compare.compare`), in words."""
    table, reference = result.table, result.reference
    if table.empty:
        return "No model could be loaded for the comparison."
    strategies = set(table["strategy"])
    lines = ["Each row is one model, caption language and strategy: *raw* feeds the captions to the model as they are"]
    if "translated" in strategies:
        lines[0] += (", *translated* first translates them to English with a machine-translation model and scores "
                     "them with the same CLIP")
    if "multilingual" in strategies:
        lines[0] += ", *multilingual* uses a text encoder trained (or distilled) for many languages"
    lines[0] += "."
    has_reference = reference in set(table["language"])
    if has_reference:
        lines[0] += (f" The gap is measured against the same model's {language_name(reference)} image→text top-1, in "
                     f"percentage points and as a ratio ({language_name(reference)} ÷ this); both forms are given so "
                     "neither is misread.")
    else:
        lines[0] += (f" There are no {language_name(reference)} captions in this run, so there is no "
                     f"{language_name(reference)} reference to measure a gap against.")
    n, hits = result.n, result.i2t_hits1
    rows: Any = table[table.language != reference].itertuples()
    for r in rows:
        line = (f"- {md(model_name(r.model))}, {md(language_name(r.language))}, {r.strategy}: image→text top-1 "
                f"{format_metric('i2t_acc1', r.i2t_acc1, n)}")
        if not missing(r.gap_pp):
            ratio = (f"{language_name(reference)} ÷ this = {format_metric('gap_ratio', r.gap_ratio)}"
                     if not missing(r.gap_ratio) else
                     f"{language_name(reference)} ÷ this is not defined, since this accuracy is 0{f' of {n}' if n else ''}")
            line += (f", {abs(r.gap_pp):.1f} percentage points {'behind' if r.gap_pp >= 0 else 'ahead of'} "
                     f"{language_name(reference)} ({ratio})")
        elif has_reference:
            line += f" (this model has no {language_name(reference)} result to compare with)"
        line += "."
        if hits:
            same = table[(table.model == r.model) & (table.strategy != "translated")]
            for ref, name in ((same[same.language == reference], f"{language_name(reference)} captions"),
                              (same[same.language == r.language] if r.strategy == "translated" else same.iloc[:0],
                               f"untranslated {md(language_name(r.language))} captions")):
                if len(ref):
                    line += " " + paired(hits[ref.index[0]], hits[r.Index], name, f"these {r.strategy} captions",
                                         "image→text top-1")
        lines.append(line)
    return "\n".join(lines)


def probability_note(sigmoid: bool, over: str) -> str:
    """What a match probability is for this model (softmax, or SigLIP's sigmoid), in words."""
    if sigmoid:
        return (f"probabilities are SigLIP's sigmoid of logit scale × cosine + bias, each pair on its own "
                f"(they need not sum to 1 over {over})")
    return f"probabilities are the softmax over {over} at the model's logit scale"


def per_class_interval(e: _stats.Estimate) -> str:
    """How the mean per-class recall's interval was made, in words."""
    if e.method == "wilson":
        return ("every class has the same number of images, so the mean per-class recall equals the top-1 "
                "accuracy and carries its Wilson interval")
    how = ("resampled within each class so that every class keeps its count" if e.method == "stratified bootstrap"
           else f"resampled all together, since a class has fewer than {_stats.MIN_STRATUM} images (resampling "
                "within so small a class would hardly move it); each resample averages the classes it drew")
    return f"for the mean per-class recall a seeded percentile bootstrap over images, {how}"


STRATEGY_HEADINGS = {"raw": "raw captions", "translated": "translation to English",
                     "multilingual": "multilingual encoders"}


def comparison_heading(result: pd.DataFrame) -> str:
    """The comparison's heading, naming only the strategies that ran (``raw`` alone fixes nothing)."""
    ran = [phrase for strategy, phrase in STRATEGY_HEADINGS.items()
           if not result.empty and (result["strategy"] == strategy).any()]
    if not ran:
        return "Comparing caption languages"
    if ran == [STRATEGY_HEADINGS["raw"]]:
        return "The language gap with raw captions"
    return f"Fixing the language gap: {', '.join(ran)}"
