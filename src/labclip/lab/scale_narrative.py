"""The scale report's words (05_scale, and 07_cultures on top of it): paired tests, the data's licence, which
captions the figures count. Every number comes from the run; user text goes through :func:`md`."""

from __future__ import annotations

import pandas as pd

from ..labels import p_value
from .scale_run import ALL, ALPHA, FIRST, Result, ScaleRun
from .wording import DIRECTIONS, language_name, md, model_name

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


