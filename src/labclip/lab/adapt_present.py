"""What the adapters notebook (``06_adapt``) shows: tables, figures and prose from an adapter run.

Display only: every function shows the run it is given; the runs are :mod:`labclip.lab.adapt`.
Prose is written from the run's numbers; user text (language codes, labels) is escaped.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown, display
from matplotlib.figure import Figure

from ..adapter import public_card
from ..atomic import write_text
from .adapt import DIRECTIONS, PUBLISHED, FewShotRun, TextAdapterRun
from .narrative import language_name, model_name, pct, share
from .present import PUBLISHED_STYLE, _labelled, _provenance_table, header, svg

COLOURS = {"before": "#9e9e9e", "after": "#1f77b4", "target": "#2ca02c", "training": "#ff7f0e"}


def figure(fig: Figure) -> None:
    """Display a figure as an embedded PNG."""
    display(HTML(svg(fig)))


def _esc(text: object) -> str:
    return html.escape(str(text))


def _variant_names(run: TextAdapterRun) -> dict[str, str]:
    src, tgt = _esc(language_name(run.source_lang)), _esc(language_name(run.target_lang))
    return {"before": f"{src} captions, raw", "after": f"{src} captions, adapted (held out)",
            "target": f"{tgt} captions (reference)"}


def title(run: TextAdapterRun, text: str, report: str | None = None) -> None:
    """Title (the report's own name under a user's title) with one banner for the fallback and the untrained
    model where they apply."""
    header(run, text, f"{run.evaluation.n} images · {_esc(run.source_lang)} → {_esc(run.target_lang)} · "
                            f"{len(run.evaluation.folds)} folds · run started {run.started}", report)


def method(run: TextAdapterRun, fitted, cosine: np.ndarray) -> None:
    """What the fit did on the rows it was fitted on: the mapped captions' cosine to their targets."""
    raw = np.sum(run.source_emb * run.target_emb, axis=1) if run.source_emb.shape == run.target_emb.shape else None
    src, tgt = _esc(language_name(run.source_lang)), _esc(language_name(run.target_lang))
    text = (f"Fitted on all {len(cosine)} caption pairs with alpha {fitted.card['alpha']:g}, the map brings the "
            f"{src} captions to a mean cosine of {np.mean(cosine):.3f} with their {tgt} counterparts")
    text += f" (raw: {raw.mean():.3f})." if raw is not None else "."
    text += (" These are the rows it was fitted on, so this says nothing yet about new captions; "
             "the next section scores images that each fold's map never saw.")
    display(Markdown(text))


def held_out_figure(run: TextAdapterRun) -> Figure:
    """Top-1 per direction and variant with 95% Wilson intervals."""
    rows = run.scores()
    rows = rows[rows["split"] == "held out"]
    names = _variant_names(run)
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.subplots()
    variants = [v for v in ("before", "after", "target") if v in set(rows["variant"])]
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        part = rows[rows["variant"] == variant].set_index("direction").loc[["i2t", "t2i"]]
        x = np.arange(2) + (i - (len(variants) - 1) / 2) * width
        err = np.vstack([part["top1"] - part["low"], part["high"] - part["top1"]])
        ax.bar(x, part["top1"], width, yerr=err, capsize=3, color=COLOURS[variant], label=html.unescape(names[variant]))
    ax.set_xticks(range(2), [DIRECTIONS["i2t"], DIRECTIONS["t2i"]])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1, held out")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def held_out(run: TextAdapterRun) -> None:
    """Held-out before / after / target top-1 per direction with intervals, and the paired test."""
    names = _variant_names(run)
    rows = run.scores()
    rows = rows[rows["split"] == "held out"]
    table = _labelled(pd.DataFrame({
        "direction": [DIRECTIONS[d] for d in rows["direction"]],
        "captions": [names[v] for v in rows["variant"]],
        "accuracy": [share(h, n) for h, n in zip(rows["hits"], rows["n"])],
    }))
    display(Markdown("## Held-out results\n\nEach image is scored by an adapter fitted without it "
                     f"({len(run.evaluation.folds)} folds over images; alpha chosen by cross-validation inside "
                     "each training fold). Intervals are 95% Wilson intervals."))
    display(HTML(table.to_html(index=False, escape=False)))
    figure(held_out_figure(run))
    paired = run.evaluation.paired()
    if not paired:
        display(Markdown("The source captions were encoded by another model, so there is no raw baseline in "
                         "this image space to test against."))
        return
    lines = []
    for test in paired:
        change = test["only_after"] - test["only_before"]
        verdict = ("a difference this small is expected by chance" if test["p_value"] >= 0.05
                   else "unlikely to be chance at the 5% level")
        lines.append(f"- {DIRECTIONS[test['direction']]}: the adapter fixed {test['only_after']} image(s) and broke "
                     f"{test['only_before']} (net {change:+d}); exact McNemar p = {test['p_value']:.3g}, {verdict}.")
    display(Markdown("**Paired test, adapted against raw on the same images:**\n\n" + "\n".join(lines)))


def alpha_curve_figure(run: TextAdapterRun) -> Figure:
    curve = run.alpha_curve()
    fig = Figure(figsize=(5.5, 3.0))
    ax = fig.subplots()
    ax.semilogx(curve.index, curve.values, marker="o")
    chosen = float(run.adapter.card["alpha"])
    ax.axvline(chosen, color="#d62728", linestyle="--", label=f"chosen alpha {chosen:g}")
    ax.set_xlabel("alpha (ridge penalty)")
    ax.set_ylabel("mean cosine, cross-validated")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def alpha_curve(run: TextAdapterRun) -> None:
    """The inner cross-validation over alpha of the final fit."""
    curve = run.alpha_curve()
    display(Markdown("## Choosing alpha"))
    if curve.empty:
        display(Markdown(f"Alpha was fixed at {run.adapter.card['alpha']:g}, so no curve was computed."))
        return
    figure(alpha_curve_figure(run))
    chosen = float(run.adapter.card["alpha"])
    text = (f"Over {run.adapter.card['cv_folds']} folds of the {run.adapter.card['groups']} images, alpha "
            f"{chosen:g} gives the highest mean cosine between mapped and target captions ({curve[chosen]:.3f}; "
            f"lowest on the grid {curve.min():.3f} at alpha {curve.idxmin():g}).")
    if run.adapter.card.get("alpha_at_grid_edge"):
        text += " The best alpha is at the edge of the grid, so a wider grid might do better."
    alphas = sorted(set(run.evaluation.alphas))
    text += (" Inside the outer folds, the alphas chosen were " + ", ".join(f"{a:g}" for a in alphas) + ".")
    display(Markdown(text))


def overfitting(run: TextAdapterRun) -> None:
    """The final adapter on its own training images against the held-out scores: the overfitting lesson."""
    rows = run.scores()
    after = rows[rows["variant"] == "after"].set_index(["split", "direction"])
    table = _labelled(pd.DataFrame([{"direction": DIRECTIONS[d],
                                     "training_accuracy": share(after.loc[("training", d), "hits"],
                                                                after.loc[("training", d), "n"]),
                                     "held_out_accuracy": share(after.loc[("held out", d), "hits"],
                                                                after.loc[("held out", d), "n"])}
                                    for d in ("i2t", "t2i")]))
    display(Markdown("## Training against held-out scores"))
    display(HTML(table.to_html(index=False, escape=False)))
    gaps = {d: after.loc[("training", d), "top1"] - after.loc[("held out", d), "top1"] for d in ("i2t", "t2i")}
    worst = max(gaps, key=gaps.get)
    if gaps[worst] > 0:
        text = (f"On the images it was fitted on, the adapter scores up to {100 * gaps[worst]:.1f} percentage points "
                f"higher ({DIRECTIONS[worst]}) than on held-out images: training scores flatter a small-data adapter, "
                "which is why this report rates it on held-out images only.")
    else:
        text = ("Here the training scores are no higher than the held-out ones; still, only the held-out scores "
                "count, since on other data a fit this small can overfit.")
    display(Markdown(text))


def shots_shown(run: FewShotRun) -> list[int]:
    """The shot counts the data allows: those every class had in full in every training fold."""
    return [k for k in sorted(run.evaluation.shots_used) if run.evaluation.shots_used[k] >= k]


def few_shot_figure(run: FewShotRun, shots: list[int] | None = None) -> Figure:
    rows = run.scores()
    zero = rows[rows["method"] == "zero-shot"].iloc[0]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    shots = shots if shots is not None else sorted(set(rows["shots"]) - {0})
    ax.axhspan(zero["low"], zero["high"], color="#9e9e9e", alpha=0.2)
    ax.axhline(zero["acc1"], color="#616161", linestyle="--", label="zero-shot")
    for method, name, colour in (("probe", "linear probe", "#1f77b4"), ("tip", "Tip-Adapter", "#ff7f0e")):
        part = rows[rows["method"] == method].set_index("shots").loc[shots]
        ax.plot(shots, part["acc1"], marker="o", color=colour, label=name)
        ax.fill_between(shots, part["low"], part["high"], color=colour, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel("top-1, held out")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _numbers(values: list[int]) -> str:
    words = [str(v) for v in values]
    return " and ".join(filter(None, [", ".join(words[:-1]), words[-1]])) if words else ""


def few_shot(run: FewShotRun) -> None:
    """Probe and Tip-Adapter against zero-shot, over the shot counts the data allows (said up front when it
    allows fewer than asked), with intervals and paired tests."""
    rows = run.scores()
    asked, shown = sorted(run.evaluation.shots_used), shots_shown(run)
    rows = rows[(rows["method"] == "zero-shot") | rows["shots"].isin(shown)]
    tests = {(t["method"], t["shots"]): t for t in run.evaluation.paired()}
    names = {"zero-shot": "zero-shot", "probe": "linear probe", "tip": "Tip-Adapter"}
    table = _labelled(pd.DataFrame([{"method": names[r.method], "shots": r.shots or "—",
                                     "accuracy": share(r.hits, r.n),
                                     "p_vs_zero_shot": f"{tests[(r.method, r.shots)]['p_value']:.3g}"
                                     if (r.method, r.shots) in tests else "—"} for r in rows.itertuples()]))
    low, high = run.images_per_class()
    intro = (f"{len(run.paths)} labelled images of {len(run.classes)} classes ({low}–{high} per class), "
             f"{len(run.evaluation.folds)} folds; each image is classified by models fitted on the other folds' "
             "images only.")
    if not shown:
        limit = (f"You asked for {_numbers(asked)} training images per class, but a class has only {low} labelled "
                 f"image{'' if low == 1 else 's'}, so in some fold it has no training image: no few-shot result can "
                 "be scored on this set, and only zero-shot is shown. A labelled folder with more images per class "
                 "gives a curve.")
    elif shown != asked:
        limit = (f"You asked for {_numbers(asked)} training images per class; every class has them in every "
                 f"training fold only for {_numbers(shown)}, so only {'that count is' if len(shown) == 1 else 'those are'}"
                 " shown.")
    else:
        limit = ""
    display(Markdown(f"## New labels from a few images: linear probe and Tip-Adapter\n\n{intro} {limit}".rstrip()))
    display(HTML(table.to_html(index=False, escape=True)))
    if len(shown) > 1:
        figure(few_shot_figure(run, shown))
    zero = rows[rows["method"] == "zero-shot"].iloc[0]
    text = f"Zero-shot gets {share(zero['hits'], zero['n'])}"
    if shown:
        best = rows[rows["method"] != "zero-shot"].sort_values("acc1", ascending=False).iloc[0]
        text += (f"; the best few-shot result is {names[best['method']]} with {best['shots']} "
                 f"shot{'' if best['shots'] == 1 else 's'}, {share(best['hits'], best['n'])} "
                 f"(exact McNemar p = {tests[(best['method'], best['shots'])]['p_value']:.3g} against zero-shot)")
    display(Markdown(text + "."))


def published() -> None:
    """Published figures (``labclip.registry.PUBLISHED``, ImageNet rows), in a box marked as not measured here."""
    rows = "".join(f"<tr><td>{_esc(p.definition)}</td><td>{_esc(model_name(p.model))}</td><td>{_esc(p.benchmark)}</td>"
                   f"<td>{_esc(pct(p.value / 100))}</td><td>{_esc(p.source)}</td></tr>" for p in PUBLISHED)
    display(HTML(f'<div class="labclip-published" style="{PUBLISHED_STYLE}"><b>Published results (not measured here)</b>'
                 "<table><tr><th>Method</th><th>Model</th><th>Data</th><th>Top-1 accuracy</th><th>Source</th></tr>"
                 f"{rows}</table>These come from the cited sources with full-size data sets; this report did "
                 "not reproduce them.</div>"))


def provenance(run: TextAdapterRun, few: FewShotRun | None = None, output_dir: str | os.PathLike | None = None,
               name: str = "06_adapt") -> dict:
    """Where the numbers came from; with ``output_dir``, also write results and provenance as JSON."""
    prov = run.provenance()
    rows = [("requested model", prov["requested_model"]), ("caption file", prov["captions_file"]),
            ("caption file sha256", prov["captions_sha256"]), ("images", prov["images"]),
            ("images sha256", prov["images_sha256"]), ("adapter weights sha256", run.adapter.sha256),
            ("adapter alpha", run.adapter.card["alpha"]), ("started", prov["started"])]
    if few is not None:
        rows += [("labels file", few.labels_file), ("labelled images", len(few.paths)),
                 ("labelled images sha256", few.provenance()["images_sha256"])]
    _provenance_table(rows, prov)
    if output_dir is not None:
        payload = {"provenance": prov, "held_out": run.evaluation.summary(),
                   "training": {d: {"hits": int(h.sum()), "n": len(h)} for d, h in run.training.items()},
                   "adapter_card": public_card(run.adapter.card),
                   **({"few_shot": {"top1": few.evaluation.counts(), "paired": few.evaluation.paired(),
                                    "provenance": few.provenance()}} if few is not None else {})}
        write_text(Path(output_dir) / f"{name}.json", json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    return prov


__all__ = ["alpha_curve", "few_shot", "held_out", "method", "overfitting", "provenance", "published", "title"]
