"""What the adapters notebook (``06_adapt``) shows: tables, figures and prose from an adapter run.

Display only: every function returns one displayable output of the run it is given (the runs are
:mod:`labclip.lab.adapt`, the figures :mod:`labclip.lab.plots`), built by :mod:`labclip.lab.markup`, which
escapes every table cell and all prose. Prose is written from the run's numbers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from ..adapter import public_card
from ..registry import published as registry_published
from . import plots, present
from .adapt import DIRECTIONS, FewShotRun, TextAdapterRun
from .narrative import language_name, md, model_name, pct, share
from .runs import save_json


def _variant_names(run: TextAdapterRun) -> dict[str, str]:
    src, tgt = language_name(run.source_lang), language_name(run.target_lang)
    return {"before": f"{src} captions, raw", "after": f"{src} captions, adapted (held out)",
            "target": f"{tgt} captions (reference)"}


def title(run: TextAdapterRun, text: str, report: str | None = None) -> present.Output:
    """Title (the report's own name under a user's title) with one banner for the fallback and the untrained
    model where they apply."""
    return present.masthead(run, text, f"{run.evaluation.n} images · {run.source_lang} → {run.target_lang} · "
                              f"{len(run.evaluation.folds)} folds · run started {run.started}", report)


def method(run: TextAdapterRun, fitted, cosine: np.ndarray) -> present.Output:
    """What the fit did on the rows it was fitted on: the mapped captions' cosine to their targets."""
    raw = np.sum(run.source_emb * run.target_emb, axis=1) if run.source_emb.shape == run.target_emb.shape else None
    src, tgt = md(language_name(run.source_lang)), md(language_name(run.target_lang))
    text = (f"Fitted on all {len(cosine)} caption pairs with alpha {fitted.card['alpha']:g}, the map brings the "
            f"{src} captions to a mean cosine of {np.mean(cosine):.3f} with their {tgt} counterparts")
    text += f" (raw: {raw.mean():.3f})." if raw is not None else "."
    text += (" These are the rows it was fitted on, so this says nothing yet about new captions; "
             "the next section scores images that each fold's map never saw.")
    return present.note(text)


def held_out(run: TextAdapterRun, scores: pd.DataFrame) -> present.Output:
    """Held-out before / after / target top-1 per direction with intervals (:meth:`TextAdapterRun.scores`), and the
    paired test."""
    names = _variant_names(run)
    rows = scores[scores["split"] == "held out"]
    table = present._labelled(pd.DataFrame({
        "direction": [DIRECTIONS[d] for d in rows["direction"]],
        "captions": [names[v] for v in rows["variant"]],
        "accuracy": [share(h, n) for h, n in zip(rows["hits"], rows["n"])],
    }))
    results = present.Section("Held-out results", "Each image is scored by an adapter fitted without it "
                    f"({len(run.evaluation.folds)} folds over images; alpha chosen by cross-validation inside "
                    "each training fold). Intervals are 95% Wilson intervals.", present.table(table),
                    present.svg(plots.held_out_figure(run, names)))
    paired = run.evaluation.paired()
    if not paired:
        return present.Output(results, present.note(
            "The source captions were encoded by another model, so there is no raw baseline in this image space to "
            "test against."))
    lines = []
    for test in paired:
        change = test["only_after"] - test["only_before"]
        verdict = ("a difference this small is expected by chance" if test["p_value"] >= 0.05
                   else "unlikely to be chance at the 5% level")
        lines.append(f"- {DIRECTIONS[test['direction']]}: the adapter fixed {test['only_after']} image(s) and broke "
                     f"{test['only_before']} (net {change:+d}); exact McNemar p = {test['p_value']:.3g}, {verdict}.")
    return present.Output(results, present.note("**Paired test, adapted against raw on the same images:**"
                                                          "\n\n" + "\n".join(lines)))


def alpha_curve(run: TextAdapterRun) -> present.Output:
    """The inner cross-validation over alpha of the final fit."""
    curve = run.alpha_curve()
    if curve.empty:
        return present.Section("Choosing alpha",
                                    f"Alpha was fixed at {run.adapter.card['alpha']:g}, so no curve was computed.")
    chosen = float(run.adapter.card["alpha"])
    text = (f"Over {run.adapter.card['cv_folds']} folds of the {run.adapter.card['groups']} images, alpha "
            f"{chosen:g} gives the highest mean cosine between mapped and target captions ({curve[chosen]:.3f}; "
            f"lowest on the grid {curve.min():.3f} at alpha {curve.idxmin():g}).")
    if run.adapter.card.get("alpha_at_grid_edge"):
        text += " The best alpha is at the edge of the grid, so a wider grid might do better."
    alphas = sorted(set(run.evaluation.alphas))
    text += (" Inside the outer folds, the alphas chosen were " + ", ".join(f"{a:g}" for a in alphas) + ".")
    return present.Section("Choosing alpha", text, present.svg(plots.alpha_curve_figure(run)))


def overfitting(run: TextAdapterRun) -> present.Output:
    """The final adapter on its own training images against the held-out scores: the overfitting lesson."""
    rows = run.scores()
    after: dict[tuple[str, str], Any] = {(r["split"], r["direction"]): r for r in rows.to_dict("records")
                                         if r["variant"] == "after"}
    table = present._labelled(pd.DataFrame([{
        "direction": DIRECTIONS[d],
        "training_accuracy": share(after[("training", d)]["hits"], after[("training", d)]["n"]),
        "held_out_accuracy": share(after[("held out", d)]["hits"], after[("held out", d)]["n"])}
        for d in ("i2t", "t2i")]))
    gaps = {d: after[("training", d)]["top1"] - after[("held out", d)]["top1"] for d in ("i2t", "t2i")}
    worst = max(gaps, key=lambda d: gaps[d])
    if gaps[worst] > 0:
        text = (f"On the images it was fitted on, the adapter scores up to {100 * gaps[worst]:.1f} percentage points "
                f"higher ({DIRECTIONS[worst]}) than on held-out images: training scores flatter a small-data adapter, "
                "which is why this report rates it on held-out images only.")
    else:
        text = ("Here the training scores are no higher than the held-out ones; still, only the held-out scores "
                "count, since on other data a fit this small can overfit.")
    return present.Section("Training against held-out scores", text, present.table(table))


def shots_shown(run: FewShotRun) -> list[int]:
    """The shot counts the data allows: those every class had in full in every training fold."""
    return [k for k in sorted(run.evaluation.shots_used) if run.evaluation.shots_used[k] >= k]


def _numbers(values: list[int]) -> str:
    words = [str(v) for v in values]
    return " and ".join(filter(None, [", ".join(words[:-1]), words[-1]])) if words else ""


def few_shot(run: FewShotRun) -> present.Output:
    """Probe and Tip-Adapter against zero-shot, over the shot counts the data allows (said up front when it
    allows fewer than asked), with intervals and paired tests."""
    rows = run.scores()
    asked, shown = sorted(run.evaluation.shots_used), shots_shown(run)
    rows = rows[(rows["method"] == "zero-shot") | rows["shots"].isin(shown)]
    tests = {(t["method"], t["shots"]): t for t in run.evaluation.paired()}
    names = {"zero-shot": "zero-shot", "probe": "linear probe", "tip": "Tip-Adapter"}
    records: list[Any] = list(rows.itertuples())
    table = present._labelled(pd.DataFrame([{"method": names[r.method], "shots": r.shots or "—",
                                             "accuracy": share(r.hits, r.n),
                                             "p_vs_zero_shot": f"{tests[(r.method, r.shots)]['p_value']:.3g}"
                                             if (r.method, r.shots) in tests else "—"} for r in records]))
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
    figures = [present.svg(plots.few_shot_figure(run, shown))] if len(shown) > 1 else []
    section = present.Section("New labels from a few images: linear probe and Tip-Adapter",
                                   f"{intro} {limit}".rstrip(), present.table(table), *figures)
    zero = rows[rows["method"] == "zero-shot"].iloc[0]
    text = f"Zero-shot gets {share(zero['hits'], zero['n'])}"
    if shown:
        best = rows[rows["method"] != "zero-shot"].sort_values("acc1", ascending=False).iloc[0]
        text += (f"; the best few-shot result is {names[best['method']]} with {best['shots']} "
                 f"shot{'' if best['shots'] == 1 else 's'}, {share(best['hits'], best['n'])} "
                 f"(exact McNemar p = {tests[(best['method'], best['shots'])]['p_value']:.3g} against zero-shot)")
    return present.Output(section, present.note(text + "."))


def published() -> present.Output:
    """Published figures (``labclip.registry.PUBLISHED``, ImageNet rows), in a box marked as not measured here."""
    rows = registry_published(benchmark="ImageNet")
    frame = pd.DataFrame({"Method": [p.definition for p in rows], "Model": [model_name(p.model) for p in rows],
                          "Data": [p.benchmark for p in rows], "Top-1 accuracy": [pct(p.value / 100) for p in rows],
                          "Source": [p.source for p in rows]})
    return present.published_box("", frame, "These come from the cited sources with full-size data sets; this report did "
                                 "not reproduce them.")


def save(run: TextAdapterRun, few: FewShotRun | None = None, output_dir: str | os.PathLike | None = None,
         name: str = "06_adapt") -> dict:
    """Held-out results, the adapter's card, the few-shot results and the provenance as one record, written as JSON
    into ``output_dir`` when one is given."""
    return save_json(output_dir, name, {
        "provenance": run.provenance(), "held_out": run.evaluation.summary(),
        "training": {d: {"hits": int(h.sum()), "n": len(h)} for d, h in run.training.items()},
        "adapter_card": public_card(run.adapter.card),
        **({"few_shot": {"top1": few.evaluation.counts(), "paired": few.evaluation.paired(),
                         "provenance": few.provenance()}} if few is not None else {})})


def provenance(run: TextAdapterRun, record: dict, few: FewShotRun | None = None) -> present.Output:
    """Where the numbers came from: the provenance table of a :func:`save` record."""
    prov = record["provenance"]
    rows = [("requested model", prov["requested_model"]), ("caption file", prov["captions_file"]),
            ("caption file sha256", prov["captions_sha256"]), ("images", prov["images"]),
            ("images sha256", prov["images_sha256"]), ("adapter weights sha256", run.adapter.sha256),
            ("adapter alpha", run.adapter.card["alpha"]), ("started", prov["started"])]
    if few is not None:
        rows += [("labels file", few.labels_file), ("labelled images", len(few.paths)),
                 ("labelled images sha256", record["few_shot"]["provenance"]["images_sha256"])]
    return present.provenance_section(rows, prov)


__all__ = ["alpha_curve", "few_shot", "held_out", "method", "overfitting", "provenance", "published", "save", "title"]
