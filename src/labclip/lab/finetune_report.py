"""What the fine-tuning report (``08_finetune``) shows, and the prose it says: every sentence computed from the
run and conditional on its numbers (a gain is called a gain only when McNemar's exact test says so; rising
validation loss is named as overfitting). Tables and figures are returned as data, and each section as one
displayable output (:mod:`labclip.lab.markup`, which escapes all user text). :data:`FINETUNE` is the run for
:func:`labclip.lab.runs.start`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..config import DEFAULT_CAPTIONS
from ..data import CaptionSet, load_captions
from ..labels import pct
from ..spec import shown_model
from .finetune import DIRECTIONS, KS, VARIANTS, FinetuneEvaluation, FinetuneRun, run_finetune
from .plots import MIN_TEXT_PT, PAGE_WIDTH_PT, literal_text, plain, similarity_heatmap
from .present import Output, Section, masthead, provenance_section, svg, table
from .provenance import Timings, now, run_record
from .runs import Kind, Loaded, save_json

ALPHA = 0.05
COLOURS = {"zero_shot": "#9e9e9e", "ridge": "#ff7f0e", "finetuned": "#1f77b4"}


def _rate(row: dict[str, Any]) -> str:
    return f"{pct(row['recall'])} [{pct(row['low'])}–{pct(row['high'])}]"


def _lookup(evaluation: FinetuneEvaluation) -> tuple[dict[tuple[str, int, str], dict[str, Any]],
                                                       dict[tuple[str, int, str], dict[str, Any]]]:
    rates = {(r["direction"], r["k"], r["variant"]): r for r in evaluation.counts()}
    tests = {(r["direction"], r["k"], r["against"]): r for r in evaluation.paired()}
    return rates, tests


def gain_sentence(evaluation: FinetuneEvaluation, direction: str, k: int, against: str) -> str:
    """One direction's held-out recall@k after fine-tuning against ``against`` (zero-shot or the ridge
    adapter), called significant only when the exact McNemar test's p is below 0.05."""
    rates, tests = _lookup(evaluation)
    after, other, test = rates[direction, k, "finetuned"], rates[direction, k, against], tests[direction, k, against]
    name, p = VARIANTS[against], test["p_value"]
    head = (f"Held out ({evaluation.n} images), {DIRECTIONS[direction]} recall@{k} is {_rate(after)} after "
            f"fine-tuning against {_rate(other)} with the {name}")
    counts = f"{test['only_finetuned']} images right only after fine-tuning, {test['only_other']} only with the {name}"
    if p < ALPHA and after["hits"] > other["hits"]:
        return f"{head}: a significant gain (exact McNemar p = {p:.3g}; {counts})."
    if p < ALPHA:
        return f"{head}: significantly worse (exact McNemar p = {p:.3g}; {counts})."
    return (f"{head}: the difference is not significant (exact McNemar p = {p:.3g}; {counts}), so these images "
            f"show no clear gain from fine-tuning over the {name}.")


def overfitting_sentences(histories: Sequence[Any]) -> list[str]:
    """Whether validation loss rose after its lowest point (overfitting) or never fell, per training."""
    rose, never = [], []
    for n, h in enumerate(histories):
        losses = [v for v in h.val_loss if v is not None]
        if not losses:
            continue
        low = int(np.argmin(losses))
        if low == 0:
            never.append(n)
        if low < len(losses) - 1 and losses[-1] > losses[low]:
            rose.append((n, low, losses[low], len(losses) - 1, losses[-1], h.stopped_early))
    out = []
    if rose:
        n, low, a, last, b, stopped = rose[0]
        out.append(f"Validation loss rose after its lowest point in {len(rose)} of {len(histories)} trainings "
                   f"(training {n + 1}: {a:.3f} at epoch {low}, {b:.3f} at epoch {last}"
                   f"{', stopped early' if stopped else ''}): the text tower began to overfit its training "
                   "captions, and the weights kept are those of the epoch with the lowest validation loss.")
    if never:
        out.append(f"In {len(never)} of {len(histories)} trainings validation loss never fell below its value "
                   "before training, so fine-tuning did not help on the validation captions there.")
    if not rose and not never and histories:
        out.append("Validation loss fell to its lowest value in the last epoch of every training, so no "
                   "overfitting showed within the epochs run.")
    return out


def findings(evaluation: FinetuneEvaluation, untrained: bool = False) -> list[str]:
    """The report's conclusions: recall@1 against zero-shot and the ridge adapter per direction, then the
    validation curves, then (for an untrained model) that the numbers say nothing about CLIP."""
    out = [gain_sentence(evaluation, d, 1, against) for against in ("zero_shot", "ridge") for d in DIRECTIONS]
    out += overfitting_sentences(evaluation.histories)
    if untrained:
        out.append("The model is untrained (random weights): these numbers say nothing about CLIP, only that "
                   "the method runs.")
    return out


def recall_table(evaluation: FinetuneEvaluation) -> pd.DataFrame:
    """Held-out recall@1/5 per direction and variant, with 95% Wilson intervals."""
    rates, _ = _lookup(evaluation)
    rows = [{"Direction": DIRECTIONS[d], "Method": VARIANTS[v],
             **{f"R@{k}": _rate(rates[d, k, v]) for k in KS}} for d in DIRECTIONS for v in VARIANTS]
    return pd.DataFrame(rows)


def paired_table(evaluation: FinetuneEvaluation) -> pd.DataFrame:
    """Exact McNemar tests of fine-tuned against zero-shot and the ridge adapter."""
    return pd.DataFrame([{"Direction": DIRECTIONS[r["direction"]], "Recall": f"R@{r['k']}",
                          "Against": VARIANTS[r["against"]], "Right only fine-tuned": r["only_finetuned"],
                          "Right only other": r["only_other"], "Images": r["n"], "p (exact McNemar)": f"{r['p_value']:.3g}"}
                         for r in evaluation.paired()])


def curve_table(evaluation: FinetuneEvaluation) -> pd.DataFrame:
    """Train and validation loss (and validation recall@1) per epoch of every training."""
    rows = []
    for n, h in enumerate(evaluation.histories):
        for e, tr, vl, vr in zip(h.epochs, h.train_loss, h.val_loss, h.val_recall):
            rows.append({"training": n + 1, "epoch": e, "train loss": tr, "validation loss": vl,
                         "validation recall@1": vr})
    return pd.DataFrame(rows)


@literal_text
def loss_figure(evaluation: FinetuneEvaluation) -> Figure:
    """Train (dashed) and validation (solid) loss per epoch, one colour per training."""
    fig = Figure(figsize=(PAGE_WIDTH_PT / 72 * 0.7, 2.6))
    ax = fig.add_subplot()
    for n, h in enumerate(evaluation.histories):
        colour = f"C{n % 10}"
        ax.plot(h.epochs[1:], h.train_loss[1:], "--", color=colour, label=f"training {n + 1}: train")
        ax.plot(h.epochs, [np.nan if v is None else v for v in h.val_loss], "-o", ms=3, color=colour,
                label=f"training {n + 1}: validation")
    ax.set_xlabel("epoch (0: before training)", fontsize=MIN_TEXT_PT + 1.5)
    ax.set_ylabel("contrastive loss", fontsize=MIN_TEXT_PT + 1.5)
    ax.tick_params(labelsize=MIN_TEXT_PT + 1)
    ax.legend(fontsize=MIN_TEXT_PT, ncol=2)
    fig.tight_layout()
    return fig


@literal_text
def comparison_figure(evaluation: FinetuneEvaluation) -> Figure:
    """Held-out recall@1/5 per direction: zero-shot, ridge adapter, fine-tuned, with Wilson intervals."""
    rates, _ = _lookup(evaluation)
    fig = Figure(figsize=(PAGE_WIDTH_PT / 72 * 0.8, 2.4))
    ax = fig.add_subplot()
    groups = [(d, k) for d in DIRECTIONS for k in KS]
    width = 0.8 / len(VARIANTS)
    for i, v in enumerate(VARIANTS):
        rows = [rates[d, k, v] for d, k in groups]
        y = np.array([r["recall"] for r in rows])
        err = np.array([[r["recall"] - r["low"] for r in rows], [r["high"] - r["recall"] for r in rows]])
        ax.bar(np.arange(len(groups)) + (i - 1) * width, y, width, yerr=err, capsize=2, color=COLOURS[v],
               label=VARIANTS[v])
    ax.set_xticks(np.arange(len(groups)), [f"{DIRECTIONS[d]} R@{k}" for d, k in groups], fontsize=MIN_TEXT_PT + 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"held-out recall ({evaluation.n} images)", fontsize=MIN_TEXT_PT + 1)
    ax.tick_params(axis="y", labelsize=MIN_TEXT_PT + 1)
    ax.legend(fontsize=MIN_TEXT_PT, loc="upper left")
    fig.tight_layout()
    return fig


def heatmap_figures(run: FinetuneRun, limit: int = 8) -> list[Figure]:
    """Before/after cosine heatmaps of the first fold's held-out images (at most ``limit``), on one scale."""
    fold = run.evaluation.sims[0]
    rows = np.asarray(fold["rows"])[:limit]
    paths = [run.table.paths[i] for i in rows]
    captions = [plain(c if not isinstance(c, list) else c[0]) for c in (run.table[run.language][i] for i in rows)]
    before, after = fold["before"][:limit, :limit], fold["after"][:limit, :limit]
    lo, hi = float(min(before.min(), after.min())), float(max(before.max(), after.max()))
    return [similarity_heatmap(sim, paths, captions, title=title, vmin=lo, vmax=hi)
            for sim, title in ((before, "held-out images, zero-shot"), (after, "held-out images, fine-tuned"))]


def _prepare_finetune(timings: Timings, *, captions: str | os.PathLike[str] | None = None, language: str = "ru",
                      image_dir: str | os.PathLike[str] | None = None, **options: Any) -> tuple[CaptionSet, str, dict]:
    """The caption set (default: the default caption set) with ``language``, checked before the model loads."""
    with timings.stage("load captions"):
        table = load_captions(Path(captions or DEFAULT_CAPTIONS), None if image_dir is None else Path(image_dir),
                              [language])
    return table, language, options


def _build_finetune(inputs: tuple[CaptionSet, str, dict], loaded: list[Loaded], skipped: list[str], *,
                    timings: Timings, batch_size: int | None) -> FinetuneRun:
    (table, language, options), (one,) = inputs, loaded
    return run_finetune(one.model, table, language, requested_model=one.requested,
                        fallback_reason=one.fallback_reason, timings=timings, **options)


FINETUNE = Kind(_prepare_finetune, _build_finetune, default_for="08_finetune")
"""The fine-tuning run for :func:`labclip.lab.runs.start`: ``runs.start(FINETUNE, model, captions=...,
language=..., image_dir=..., config=FinetuneConfig(...), folds=..., out=...)``, then
:func:`labclip.lab.finetune.run_finetune`. The demo model stands in by the lab's one rule, never for a model with
``+finetune:`` or ``+adapter:``."""


def provenance_record(run: FinetuneRun) -> dict[str, Any]:
    """Requested and used model, inputs, hyper-parameters, software, machine and stage timings."""
    return run_record(run.model, requested=run.requested_model, fallback_reason=run.fallback_reason,
                      started=run.started, timings=run.timings, finished=now(), hyper_parameters=run.config.__dict__,
                      **run.card["data"], trainable_parameters=run.trained.trainable)


def save(run: FinetuneRun, output_dir: str | os.PathLike[str] | None, name: str = "08_finetune") -> dict[str, Any]:
    """The run's held-out results, findings and provenance as one record, written as JSON into ``output_dir`` when
    one is given (what the report runner reads back)."""
    return save_json(output_dir, name, {"provenance": provenance_record(run), "held_out": run.evaluation.summary(),
                                        "findings": findings(run.evaluation, bool(run.model.untrained))})


# --------------------------------------------------------------------------------------------
# The notebook's sections, each one displayable output


def figure(fig: Figure) -> Output:
    """One figure, as every report shows figures (:class:`labclip.lab.present.Section`)."""
    return Section(None, "", svg(fig))


def title(run: FinetuneRun, text: str, report: str | None = None) -> Output:
    """Title with the untrained-model and fallback banner (:func:`labclip.lab.present.masthead`)."""
    details = (f"{run.evaluation.n} held-out images · {run.language} captions · {len(run.evaluation.folds)} "
               f"split(s) · {run.config.method} · run started {run.started}")
    return masthead(run, text, details, report)  # type: ignore[arg-type]  # model, requested model, fallback


def summary(run: FinetuneRun) -> Output:
    """What fine-tuning bought, in the report's findings."""
    return Section("What fine-tuning bought on held-out images", " ".join(findings(run.evaluation, bool(run.model.untrained))))


def gallery_sentence(evaluation: FinetuneEvaluation) -> str:
    """How many captions each held-out image was ranked among, and whether recall@5 can tell methods apart."""
    sizes = sorted({len(test) for _, test in evaluation.folds})
    shown = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    text = (f"Each held-out image is ranked among its split's {shown} captions; no caption scored was trained on, "
            "and the ridge adapter was fitted on the same training images. 95% Wilson intervals in brackets.")
    if sizes[-1] <= max(KS):
        text += f" With at most {sizes[-1]} captions per gallery, recall@{max(KS)} is 100% for every method."
    return text


def held_out(run: FinetuneRun, recall: pd.DataFrame, paired: pd.DataFrame) -> Output:
    """Held-out recall with intervals (:func:`recall_table`), and the paired tests (:func:`paired_table`)."""
    return Section("Held-out recall", gallery_sentence(run.evaluation), table(recall), table(paired))


def curve(run: FinetuneRun, fig: Figure) -> Output:
    """Train and validation loss per epoch (:func:`loss_figure`), and whether it overfitted."""
    return Section("Training curve", " ".join(overfitting_sentences(run.evaluation.histories)), svg(fig))


def heatmaps(run: FinetuneRun) -> Output:
    """Before/after similarity heatmaps of held-out images."""
    return Section("Before and after on held-out images", "Cosine similarities of the first split's held-out images "
            "and their captions, zero-shot and after fine-tuning, on one colour scale.",
            *[svg(f) for f in heatmap_figures(run)])


def comparison(run: FinetuneRun) -> Output:
    """Fine-tuned against zero-shot and the ridge text adapter."""
    return Section("Fine-tuning against zero-shot and the ridge text adapter",
            " ".join(gain_sentence(run.evaluation, d, 1, "ridge") for d in DIRECTIONS),
            svg(comparison_figure(run.evaluation)))


def provenance(run: FinetuneRun, record: dict[str, Any]) -> Output:
    """Where the numbers came from: the provenance table of a :func:`save` record."""
    prov = record["provenance"]
    rows = [("requested model", shown_model(run.requested_model)), ("caption file", prov["captions"]),
            ("caption file sha256", prov["captions_sha256"]), ("images", prov["images"]),
            ("trainable parameters", prov["trainable_parameters"]),
            *((f"hyper-parameter: {k}", v) for k, v in prov["hyper_parameters"].items()), ("started", run.started)]
    return provenance_section(rows, prov)
