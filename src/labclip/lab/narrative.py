"""The lab report's prose, written from a run's own numbers (Markdown strings)."""

from __future__ import annotations

import numpy as np

from .. import stats
from ..metrics import retrieval_ranks
from ..model import ClipModel
from . import compare
from .experiment import Experiment, Matching
from .tables import token_stats

LANGUAGE_NAMES = {"en": "English", "ru": "Russian", "de": "German", "fr": "French", "es": "Spanish",
                  "uk": "Ukrainian", "zh": "Chinese", "ja": "Japanese"}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def share(hits: int, n: int) -> str:
    """``"10/12 (83.3% [55.2%, 95.3%])"``: a count, its rate and the rate's 95% Wilson interval."""
    return f"{hits}/{n} ({interval(hits, n)})"


def interval(hits: int, n: int) -> str:
    """``"83.3% [55.2%, 95.3%]"``: a rate with its 95% Wilson score interval."""
    low, high = stats.wilson_interval(hits, n)
    return format(stats.Estimate(hits / n, low, high, hits, n), ".1%")


def rate(x: float, n: int) -> str:
    """An accuracy over ``n`` images (a fraction) as :func:`interval` shows it."""
    return interval(round(float(x) * n), n)


def p_value(p: float) -> str:
    """``"p = 0.0312"``, or ``"p < 0.001"``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def paired(hits_a, hits_b, a: str, b: str, what: str = "accuracy", alpha: float = 0.05) -> str:
    """One sentence on an exact McNemar test of two methods' per-image hits on the same images."""
    test = stats.paired_test(hits_a, hits_b)
    verdict = "significant" if test.significant(alpha) else "not significant"
    return (f"On the same {test.n} images, {test.only_a} are right only with {a} and {test.only_b} only with {b}; "
            f"the difference in {what} is {verdict} at the 5% level (exact McNemar test, {p_value(test.p_value)}).")


def estimates(m: Matching) -> dict[str, stats.Estimate]:
    """Accuracy and MRR of a matching with 95% intervals (Wilson; seeded bootstrap over images for MRR)."""
    return retrieval_ranks(m.sim).estimates((1, m.metrics.k))


def margin_estimate(m: Matching) -> stats.Estimate:
    """Mean margin of the correct caption over the best wrong one, with a seeded bootstrap interval over images."""
    sim = np.asarray(m.sim, dtype=np.float64)
    wrong = np.where(np.eye(len(sim), dtype=bool), -np.inf, sim).max(axis=1)
    return stats.mean(np.diag(sim) - wrong)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def num(x: float) -> str:
    return f"{x:.3f}"


def gap(reference: float, other: float) -> dict[str, str]:
    """A gap between two accuracies in the three forms people quote.

    ``points``: difference in percentage points; ``ratio``: reference / other;
    ``relative``: (reference − other) / other, the seed report's "233% improvement" form.
    """
    points, ratio = compare.gap(reference, other)
    if ratio is None:
        return {"points": f"{points:+.1f} percentage points", "ratio": "undefined (the other score is 0)",
                "relative": "undefined"}
    return {"points": f"{points:+.1f} percentage points", "ratio": f"{ratio:.2f}×",
            "relative": f"{100 * (ratio - 1):+.0f}%"}


def banner_text(model: ClipModel) -> str | None:
    """The warning every display of an untrained model's numbers carries, or ``None``."""
    if not model.untrained:
        return None
    which = "labclip's untrained demo model" if model.is_demo else f"the untrained test model '{model.name}'"
    return (f"These numbers come from {which}, whose weights are random: they say nothing about CLIP. "
            "Run with real weights (e.g. openai/clip-vit-base-patch32 where the Hugging Face hub is reachable) "
            "for meaningful results.")


def _direction_summary(m: Matching) -> str:
    x = m.metrics
    return (f"image→text top-1 {share(x.i2t.hits1, x.n)}, text→image top-1 "
            f"{share(x.t2i.hits1, x.n)}")


def abstract(exp: Experiment, languages: list[str]) -> str:
    first = exp.matching(languages[0])
    lines = [
        f"We matched **{first.metrics.n} images** with one caption each in "
        f"{', '.join(language_name(lang) for lang in languages)} using **{exp.model.name}** and cosine "
        "similarity of CLIP embeddings, in both retrieval directions."
    ]
    for lang in languages:
        lines.append(f"With {language_name(lang)} captions: {_direction_summary(exp.matching(lang))}.")
    if len(languages) > 1:
        ref, other = exp.matching(languages[0]).metrics, exp.matching(languages[1]).metrics
        g = gap(ref.i2t.acc1, other.i2t.acc1)
        lines.append(
            f"The image→text top-1 gap between {language_name(languages[0])} and {language_name(languages[1])} "
            f"is {g['points']} (ratio {g['ratio']}, relative difference {g['relative']})."
        )
    if exp.model.untrained:
        lines.append("**The model is untrained, so these figures are placeholders that only show the pipeline works.**")
    return " ".join(lines)


def method(exp: Experiment) -> str:
    model, pre = exp.model, exp.model.preprocess
    prov = exp.provenance()
    return "\n".join([
        f"- **Model.** `{model.name}` loaded through Hugging Face transformers from `{model.source}` "
        f"(revision `{model.revision}`); {model.dim}-dimensional embeddings, learned temperature "
        f"(logit scale) {model.logit_scale:.1f}.",
        f"- **Image preprocessing.** As OpenAI's `clip` does it: bicubic resize of the shorter side to {pre.resize} px, "
        f"centre crop to {pre.crop}×{pre.crop}, RGB, normalised with CLIP's mean and std. EXIF orientation is applied "
        "and transparency is composited on white when files are read.",
        "- **Text preprocessing.** OpenAI's cleaning (ftfy, HTML unescaping, whitespace), lower-casing, CLIP's byte-level "
        "BPE with a 77-token context; each batch is padded to its longest caption.",
        f"- **Data.** {prov['images']} images and the caption file `{prov['captions_file']}` "
        f"(sha256 `{prov['captions_sha256'][:12]}…`); images hash `{prov['images_sha256'][:12]}…`. "
        "Caption *i* describes image *i*.",
        "- **Scoring.** Both embeddings are L2-normalised and compared by cosine similarity. Image→text accuracy asks "
        "whether an image's own caption scores highest among all captions; text→image asks the reverse. A tie with "
        f"a wrong candidate counts as a miss. Top-{exp.top_k} accuracy, mean reciprocal rank, the margin between "
        "the correct caption and the best wrong one, and CLIP's symmetric contrastive loss are reported.",
    ])


def results(m: Matching) -> str:
    x = m.metrics
    k = x.k
    e = estimates(m)
    lines = [
        f"- Image→text: top-1 {share(x.i2t.hits1, x.n)}, top-{k} {rate(x.i2t.acck, x.n)}, "
        f"MRR {e['i2t_mrr']:.3f}.",
        f"- Text→image: top-1 {share(x.t2i.hits1, x.n)}, top-{k} {rate(x.t2i.acck, x.n)}, "
        f"MRR {e['t2i_mrr']:.3f}.",
        f"- Correct pairs: cosine {num(x.correct_min)} to {num(x.correct_max)} (mean {num(x.correct_mean)}); "
        f"wrong pairs: {num(x.wrong_min)} to {num(x.wrong_max)} (mean {num(x.wrong_mean)}).",
        f"- Margin of the correct caption over the best wrong one: mean {margin_estimate(m):.3f}, "
        f"smallest {num(x.margin_min)}.",
    ]
    if x.separable:
        lines.append(f"- Every correct pair scores above every wrong pair; a threshold of {num(x.threshold)} "
                     "separates them.")
    else:
        lines.append(f"- Correct and wrong pairs overlap (lowest correct {num(x.correct_min)} ≤ highest wrong "
                     f"{num(x.wrong_max)}), so no single threshold separates them.")
    lines.append(f"- CLIP's symmetric contrastive loss at the model's logit scale: {num(x.contrastive_loss)}.")
    return "\n".join(lines)


def discussion(exp: Experiment, languages: list[str]) -> str:
    parts = []
    if exp.model.untrained:
        parts.append("The model behind these numbers has random weights, so any difference between languages or "
                     "captions is noise; the discussion below describes what to look for with real weights.")
    if len(languages) > 1:
        a, b = languages[0], languages[1]
        ma, mb = exp.matching(a).metrics, exp.matching(b).metrics
        better = a if ma.i2t.acc1 > mb.i2t.acc1 else b if mb.i2t.acc1 > ma.i2t.acc1 else None
        if better is None:
            parts.append(f"{language_name(a)} and {language_name(b)} captions reached the same image→text top-1 "
                         "accuracy in this run.")
        else:
            high, low = (ma, mb) if better == a else (mb, ma)
            parts.append(f"{language_name(better)} captions matched better in this run "
                         f"({share(high.i2t.hits1, high.n)} vs {share(low.i2t.hits1, low.n)} image→text top-1).")
        parts.append(paired(_top1(exp.matching(a)), _top1(exp.matching(b)), f"{language_name(a)} captions",
                            f"{language_name(b)} captions", "image→text top-1"))
        stats = token_stats(exp.model.tokenizer, {lang: exp.captions[lang] for lang in (a, b)},
                            exp.model.context_length, exp.model.openai_text_cleaning).set_index("language")
        parts.append(f"The tokenizer spends {stats.loc[a, 'tokens per word']:.2f} tokens per word on "
                     f"{language_name(a)} captions and {stats.loc[b, 'tokens per word']:.2f} on {language_name(b)} "
                     "ones. OpenAI's CLIP was trained on English captions and its byte-level BPE splits Cyrillic words "
                     "into many rare tokens, so with real OpenAI weights Russian captions are expected to match far "
                     "worse than English ones; multilingual text encoders distilled into CLIP's space close most "
                     "of that gap (see the languages report).")
    parts.append("Accuracy on a paired set says whether the right caption wins; the similarity ranges and margins say "
                 "by how much, which matters when choosing a threshold for automated tagging.")
    return "\n\n".join(parts)


def _top1(m: Matching) -> np.ndarray:
    return retrieval_ranks(m.sim).i2t == 1


def limitations(exp: Experiment) -> str:
    n = len(exp.captions)
    items = [
        f"- {n} images: one image more or less changes an accuracy by {100 / n:.1f} percentage points, so small "
        "differences are not significant.",
        "- One caption per image, written by us; other wordings change the scores (compare the short caption set).",
        "- Several images are pictograms rendered from emoji fonts rather than photographs.",
    ]
    if exp.model.untrained:
        items.insert(0, "- **The model is untrained (random weights): no claim about CLIP's accuracy can be drawn "
                        "from this report.** Real-weight numbers require access to the Hugging Face hub.")
    if exp.fallback_reason:
        items.insert(1, f"- The requested model `{exp.requested_model}` could not be loaded: {exp.fallback_reason}")
    return "\n".join(items)


def tokens(stats) -> str:
    """Why non-English captions cost more tokens, with this run's numbers."""
    rows = stats.set_index("language")
    parts = [f"CLIP's byte-level BPE splits {language_name(lang)} captions into {r['tokens per caption']:.1f} tokens "
             f"on average ({r['tokens per word']:.2f} per word, {r['bytes per token']:.2f} UTF-8 bytes per token; "
             f"{int(r['truncated'])} of {int(r['captions'])} captions exceed the context)"
             for lang, r in rows.iterrows()]
    text = "; ".join(parts) + "."
    if "en" in rows.index and len(rows) > 1:
        other = [lang for lang in rows.index if lang != "en"][0]
        ratio = rows.loc[other, "tokens per word"] / rows.loc["en", "tokens per word"]
        text += (f" A {language_name(other)} word costs {ratio:.1f}× as many tokens as an English one: the vocabulary "
                 "was learned from mostly English text, so Cyrillic words fall apart into rare byte-level pieces the "
                 "text encoder saw little of in training.")
    return text


def comparison(table, n: int) -> str:
    """How the strategies compare in this run, in words (``n``: images behind each accuracy)."""
    if table.empty:
        return "No model could be loaded for the comparison."
    lines = ["Each row is one model, caption language and strategy: *raw* feeds the captions to the model as they "
             "are, *translated* first translates them to English with a MarianMT model and scores them with the "
             "same English CLIP, *multilingual* uses a text encoder trained (or distilled) to put many languages "
             "into CLIP's image space. The gap is measured against the same model's English image→text top-1, in "
             "percentage points and as a ratio (the seed report's \"233% improvement\" is the ratio 100/30 "
             "minus one; both forms are given so neither is misread)."]
    hits = table.attrs.get("i2t_hits1")
    for r in table[table.language != "en"].itertuples():
        ratio = "undefined" if r.gap_ratio is None or r.gap_ratio != r.gap_ratio else f"{r.gap_ratio:.2f}×"
        line = (f"- `{r.model}`, {language_name(r.language)}, {r.strategy}: image→text top-1 {rate(r.i2t_acc1, n)}, "
                f"{r.gap_pp:+.1f} percentage points behind English (English/this = {ratio}).")
        if hits:
            same = table[(table.model == r.model) & (table.strategy != "translated")]
            for ref, name in ((same[same.language == "en"], "English captions"),
                              (same[same.language == r.language] if r.strategy == "translated" else same.iloc[:0],
                               f"untranslated {language_name(r.language)} captions")):
                if len(ref):
                    line += " " + paired(hits[ref.index[0]], hits[r.Index], name, f"these {r.strategy} captions",
                                         "image→text top-1")
        lines.append(line)
    return "\n".join(lines)
