"""Figures: similarity heatmap with thumbnails, similarity distributions, accuracy bars.

Each function returns a ``matplotlib.figure.Figure`` without touching pyplot's global state. Text
that came from the user goes through :func:`plain`, so ``$...$`` prints as written, never as
mathtext, and figures are drawn with ``text.usetex`` off.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from .. import stats
from ..labels import metric_label, num
from ..metrics import accuracy_keys
from .adapt import FewShotRun, TextAdapterRun
from .plotstyle import (  # noqa: F401 - plots' names for the report modules and tests
    CORRECT_COLOUR,
    HEATMAP_LABEL_PT,
    HEATMAP_MAX_CELL_PT,
    HEATMAP_MIN_CELL_PT,
    LABEL_PT,
    LITERAL_TEXT,
    MIN_TEXT_PT,
    PAGE_HEIGHT_PT,
    PAGE_WIDTH_PT,
    _caption_label,
    _thumbnail,
    heatmap_capacity,
    literal_text,
    plain,
)
from .wording import DIRECTIONS


@literal_text
def similarity_heatmap(
    sim: np.ndarray,
    images: Sequence,
    captions: Sequence[str],
    title: str | None = None,
    mark_pairs: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    labels: Sequence[str] | None = None,
    cell: float | None = None,
) -> Figure:
    """Captions × images cosine matrix, thumbnails above the columns, values in the cells, a colour bar below.

    Like the figure in openai/CLIP's ``Interacting_with_CLIP`` notebook, drawn at its printed size: cells
    of at least ``HEATMAP_MIN_CELL_PT`` (use :func:`heatmap_capacity` images at most for a page), values at
    ``MIN_TEXT_PT`` or more, captions at ``LABEL_PT``. When ``mark_pairs``, the cell of each correct pair
    (caption ``i``, image ``i``) is outlined. Heatmaps that are compared with each other share
    ``vmin``/``vmax`` (default: this matrix's range). ``labels`` replace the caption texts as row labels;
    ``cell`` fixes the cell size in points (a figure wider than a page, for the screen).
    """
    data = np.asarray(sim, dtype=float).T
    n_captions, n_images = data.shape
    cell = cell or min(HEATMAP_MAX_CELL_PT, (PAGE_WIDTH_PT - HEATMAP_LABEL_PT - 8) / max(n_images, 1))
    value_pt = max(MIN_TEXT_PT, min(9.0, cell / 3.2))
    width, bottom, top = HEATMAP_LABEL_PT + cell * n_images + 8, 38.0, 4.0 + (16 if title else 0)
    height = bottom + cell * (n_captions + 1) + top
    fig = Figure(figsize=(width / 72, height / 72))
    ax = fig.add_axes((HEATMAP_LABEL_PT / width, bottom / height, cell * n_images / width,
                       cell * (n_captions + 1) / height))
    lo = float(data.min()) if vmin is None else vmin
    hi = float(data.max()) if vmax is None else vmax
    hi = hi if hi > lo else lo + 1e-6
    shown = ax.imshow(data, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    _colour_bar(fig, shown, (HEATMAP_LABEL_PT / width, 20 / height, min(200.0, cell * n_images) / width, 6 / height))
    rows = [_caption_label(c) for c in (labels if labels is not None else captions)]
    ax.set_yticks(range(n_captions), rows, fontsize=LABEL_PT)
    ax.tick_params(axis="y", length=0, pad=3)
    ax.set_xticks([])
    middle = (lo + hi) / 2
    for t in range(n_captions):
        for i in range(n_images):
            value = data[t, i]
            ax.text(i, t, num(value, 2), ha="center", va="center", fontsize=value_pt,
                    color="black" if value > middle else "white")
    for i, image in enumerate(images):
        ax.imshow(_thumbnail(image), extent=(i - 0.45, i + 0.45, -1.45, -0.55), origin="lower")
    if mark_pairs:
        for i in range(min(n_images, n_captions)):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=CORRECT_COLOUR,
                                   linewidth=1.5 if cell < 24 else 2.5))
    ax.set_xlim(-0.5, n_images - 0.5)
    ax.set_ylim(n_captions - 0.5, -1.5)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(plain(title), fontsize=10)
    return fig


def _colour_bar(fig: Figure, shown: AxesImage, box: tuple[float, float, float, float]) -> None:
    """A horizontal cosine-similarity colour bar in ``box`` (figure fractions), ticks at the smallest text size."""
    bar = fig.colorbar(shown, cax=fig.add_axes(box), orientation="horizontal")
    bar.set_label("cosine similarity", fontsize=LABEL_PT, labelpad=2)
    bar.ax.tick_params(labelsize=MIN_TEXT_PT, length=2, pad=1)
    bar.ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))


@literal_text
def similarity_distributions(sim: np.ndarray, threshold: float | None = None, title: str | None = None) -> Figure:
    """Correct-pair vs wrong-pair cosine similarities, with the separating threshold if any."""
    sim = np.asarray(sim, dtype=float)
    n = len(sim)
    eye = np.eye(n, dtype=bool)
    frame = pd.DataFrame({
        "cosine similarity": np.concatenate([sim[eye], sim[~eye]]),
        "pair": ["correct"] * n + ["wrong"] * int((~eye).sum()),
    })
    fig = Figure(figsize=(PAGE_WIDTH_PT / 72, 3.2), layout="constrained")
    ax = fig.subplots()
    sns.stripplot(data=frame, x="cosine similarity", y="pair", hue="pair", ax=ax, jitter=0.25, size=6, alpha=0.75,
                  palette={"correct": CORRECT_COLOUR, "wrong": "#7f7f7f"}, legend=False)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2)
        ax.text(threshold, -0.45, f" threshold {num(threshold)}", fontsize=9, va="bottom")
    if title:
        ax.set_title(plain(title), fontsize=11)
    return fig


def wilson_error_bars(ax, n: int | None) -> None:
    """95% Wilson intervals on every bar of ``ax`` (heights in percent, each an accuracy over ``n`` images)."""
    if not n:
        return
    for container in [c for c in ax.containers if isinstance(c, BarContainer)]:
        for bar in container:
            height = bar.get_height()
            if height != height:
                continue
            low, high = stats.wilson_interval(round(height / 100 * n), n)
            ax.errorbar(bar.get_x() + bar.get_width() / 2, height,
                        yerr=[[height - 100 * low], [100 * high - height]], fmt="none", ecolor="#333", capsize=2,
                        linewidth=0.8)


def _grouped_bars(data: pd.DataFrame, x: str, y: str, hue: str, n: int | None,
                  figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """Seaborn grouped bars of percentages, each labelled with its value, 95% Wilson intervals when ``n``
    (images) is given, on a 0–115% axis with no x label (the shared body of the bar figures)."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    sns.barplot(data=data, x=x, y=y, hue=hue, ax=ax, palette="Set2")
    for container in [c for c in ax.containers if isinstance(c, BarContainer)]:
        ax.bar_label(container, fmt="%.1f", fontsize=LABEL_PT, padding=8 if n else 0)
    wilson_error_bars(ax, n)
    ax.set_ylim(0, 115)
    ax.set_xlabel("")
    return fig, ax


@literal_text
def accuracy_bars(compare: pd.DataFrame, k: int = 3, title: str | None = None, n: int | None = None) -> Figure:
    """Grouped bars of top-1 and top-k accuracy in both directions, one group per language, with 95% Wilson
    intervals when ``n`` (images) is given."""
    figures = list(dict.fromkeys(accuracy_keys(k)))
    names = {key: metric_label(key) for key in figures}
    long = compare.loc[figures].rename(index=names, columns=plain).astype(float).mul(100)
    long = long.reset_index(names="figure").melt(id_vars="figure", var_name="language", value_name="accuracy (%)")
    fig, ax = _grouped_bars(long, "language", "accuracy (%)", "figure", n, (PAGE_WIDTH_PT / 72, 3.6))
    ax.legend(fontsize=8, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    if title:
        ax.set_title(plain(title), fontsize=11)
    return fig


def _clip(text: object, width: int = 16) -> str:
    """A label in at most ``width`` characters, cut with "…" (a single long word too)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


@literal_text
def label_bars(table: pd.DataFrame, images: Sequence, columns: int = 3, truth: Sequence[str] | None = None,
               truth_rank: Sequence[int] | None = None) -> Figure:
    """Each image beside horizontal bars of its top labels' probabilities (as in openai/CLIP's notebook), drawn
    at its printed size (labels at ``LABEL_PT``). With ``truth`` (each image's true label), the true label's bar
    is red and marked ✓; when it is not among the bars, its rank (``truth_rank``) is written under them."""
    names = list(dict.fromkeys(table["image"]))
    rows = (len(names) + columns - 1) // columns
    k = int(table.groupby("image").size().max()) if len(table) else 1
    row_pt = max(54.0, 11.0 * k + 14)
    fig = Figure(figsize=(PAGE_WIDTH_PT / 72, (rows * row_pt + 24) / 72), layout="constrained")
    engine: Any = fig.get_layout_engine()
    engine.set(w_pad=2 / 72, h_pad=2 / 72, wspace=0.02, hspace=0.02)
    grid = fig.subplots(rows, 2 * columns, squeeze=False, gridspec_kw={"width_ratios": [1, 2.3] * columns})
    for axis in grid.flat:
        axis.axis("off")
    for n, (name, image) in enumerate(zip(names, images)):
        picture, bars = grid[n // columns][2 * (n % columns)], grid[n // columns][2 * (n % columns) + 1]
        picture.imshow(_thumbnail(image))
        part = table[table["image"] == name].sort_values("rank")
        bars.axis("on")
        y = np.arange(len(part))
        true = truth[n] if truth is not None else None
        hit = [str(x) == str(true) for x in part["label"]]
        bars.barh(y, part["probability"], color=[CORRECT_COLOUR if h else "#4c72b0" for h in hit])
        bars.set_yticks(y, [plain(_clip(x)) + (" ✓" if h else "")
                            for x, h in zip(part["label"], hit)], fontsize=LABEL_PT)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
        bars.tick_params(axis="x", labelsize=MIN_TEXT_PT, length=2, pad=1)
        bars.tick_params(axis="y", length=0, pad=2)
        if true is not None and not any(hit):
            rank = f" (rank {truth_rank[n]})" if truth_rank is not None else ""
            bars.set_title(plain(f"true: {_clip(true)}{rank}"),
                           fontsize=MIN_TEXT_PT, color=CORRECT_COLOUR, loc="left", pad=2)
        for spine in ("top", "right"):
            bars.spines[spine].set_visible(False)
    marked = "; red bar and ✓: the image's true label" if truth is not None else ""
    fig.supxlabel(f"probability of each label (bars, 0–1){marked}", fontsize=LABEL_PT)
    return fig


@literal_text
def confusion_heatmap(matrix: pd.DataFrame, title: str | None = None) -> Figure:
    """True classes (rows) against predicted classes (columns), counts in the cells."""
    matrix = matrix.rename(index=plain, columns=plain)
    cell = min(28.0, (PAGE_WIDTH_PT - 110) / max(len(matrix), 1))
    side = (cell * len(matrix) + 90) / 72
    fig = Figure(figsize=(min(PAGE_WIDTH_PT / 72, side + 0.3), side), layout="constrained")
    ax = fig.subplots()
    text_pt = max(MIN_TEXT_PT, min(9.0, cell / 2.2))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, linewidths=0.5, linecolor="#ddd",
                annot_kws={"fontsize": text_pt})
    ax.tick_params(labelsize=max(MIN_TEXT_PT, min(LABEL_PT, cell / 1.6)))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(plain(title), fontsize=11)
    return fig


@literal_text
def token_lengths(lengths: pd.DataFrame, limit: int = 77, unit: str = "CLIP BPE tokens") -> Figure:
    """Tokens per caption by language (columns ``language``, ``tokens``), with the context limit."""
    lengths = lengths.assign(language=lengths["language"].map(plain))
    fig = Figure(figsize=(PAGE_WIDTH_PT / 72, 2.8), layout="constrained")
    ax = fig.subplots()
    sns.stripplot(data=lengths, x="tokens", y="language", hue="language", ax=ax, jitter=0.2, size=6, legend=False)
    ax.axvline(limit - 2, color=CORRECT_COLOUR, linestyle="--", linewidth=1)
    ax.text(limit - 2, -0.45, f" {limit}-token context", color=CORRECT_COLOUR, fontsize=8, va="bottom")
    ax.set_xlim(0, max(limit + 3, float(lengths["tokens"].max()) + 3))
    ax.set_xlabel(f"{plain(unit)} per caption (start and end tokens excluded)")
    return fig


@literal_text
def comparison_bars(table: pd.DataFrame, figure: str = "i2t_acc1", n: int | None = None) -> Figure:
    """Grouped bars of one figure per model and strategy, one bar per language (95% Wilson intervals with ``n``)."""
    data = table.assign(setup=[plain(f"{textwrap.shorten(m.split('/')[-1], 28)}\n{s}") for m, s in
                               zip(table["model"], table["strategy"])],
                        language=table["language"].map(plain), value=table[figure].astype(float) * 100)
    fig, ax = _grouped_bars(data, "setup", "value", "language", n, (PAGE_WIDTH_PT / 72, 3.6))
    ax.set_ylabel(f"{metric_label(figure)} (%)")
    ax.tick_params(axis="x", labelsize=8)
    return fig


# ---- the adapters report (06_adapt) -------------------------------------------------------------------

ADAPT_COLOURS = {"before": "#9e9e9e", "after": "#1f77b4", "target": "#2ca02c", "training": "#ff7f0e"}


@literal_text
def held_out_figure(run: TextAdapterRun, names: Mapping[str, str]) -> Figure:
    """Top-1 per direction and variant (named by ``names``) with 95% Wilson intervals."""
    rows = run.scores()
    rows = rows[rows["split"] == "held out"]
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.subplots()
    variants = [v for v in ("before", "after", "target") if v in set(rows["variant"])]
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        part = rows[rows["variant"] == variant].set_index("direction").loc[["i2t", "t2i"]]
        x = np.arange(2) + (i - (len(variants) - 1) / 2) * width
        err = np.vstack([part["top1"] - part["low"], part["high"] - part["top1"]])
        ax.bar(x, part["top1"], width, yerr=err, capsize=3, color=ADAPT_COLOURS[variant], label=plain(names[variant]))
    ax.set_xticks(range(2), [DIRECTIONS["i2t"], DIRECTIONS["t2i"]])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1, held out")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


@literal_text
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


@literal_text
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


# ---- the scale report (05_scale) -----------------------------------------------------------------------

HARDEST = 20


@literal_text
def recall_intervals(labels: Sequence[str], estimates: Sequence[Mapping[str, stats.Estimate]],
                     ks: Sequence[int] = (1, 5, 10)) -> Figure:
    """Recall@k per result (one row each, named by ``labels``) in both directions, with 95% error bars."""
    fig = Figure(figsize=(8, 1.6 + 0.32 * len(labels)))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(labels))[::-1]
    for ax, (d, name) in zip(axes, DIRECTIONS.items()):
        for i, k in enumerate(ks):
            e = [r[f"{d}_acc{k}"] for r in estimates]
            value = np.array([x.value for x in e]) * 100
            ax.errorbar(value, y + (1 - i) * 0.25, xerr=[value - [x.low * 100 for x in e],
                        [x.high * 100 for x in e] - value], fmt="o", markersize=4, capsize=2, label=f"R@{k}")
        ax.set_yticks(y, [plain(label) for label in labels], fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_title(name.capitalize(), fontsize=10)
        ax.set_xlabel("recall (%)")
        ax.grid(axis="x", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(ks), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if len(labels) < 4 else 0.06, 1, 1))
    return fig


def hardest(ranks: np.ndarray, limit: int = HARDEST) -> np.ndarray:
    """Rows of the ``limit`` images whose own caption ranks worst (ties by row), for a readable heatmap."""
    return np.argsort(-ranks, kind="stable")[:limit]


def heatmap_figure(sim: np.ndarray, owner: np.ndarray, ranks: np.ndarray, names: Sequence[str],
                   captions: Sequence[str], limit: int | None = None) -> tuple[Figure, str]:
    """Images × their first captions; above ``limit`` images (default: as many as a page shows legibly,
    :func:`labclip.lab.plots.heatmap_capacity`) only the hardest ones, labelled with their rank.

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
    limit = heatmap_capacity() if limit is None else limit
    n = len(names)
    rows = np.arange(n)
    note = f"All {n} images against the first caption of each."
    labels = list(names)
    if n > limit:
        rows = hardest(ranks, min(HARDEST, limit))
        note = (f"{n} images are too many to label on a page: shown are the {len(rows)} images whose own "
                f"captions rank worst among all {len(captions)} captions (rank in brackets), against the first "
                "caption of each.")
        labels = [f"{names[int(i)]} [{ranks[i]}]" for i in rows]
    columns = np.searchsorted(owner, rows)
    fig = Figure(figsize=(PAGE_WIDTH_PT / 72, 0.95 * PAGE_WIDTH_PT / 72))  # drawn at its printed size
    ax = fig.subplots()
    im = ax.imshow(sim[np.ix_(rows, columns)], cmap="viridis")
    ax.set_yticks(range(len(rows)), [plain(label) for label in labels], fontsize=LABEL_PT)
    ax.set_xticks(range(len(rows)), [plain(captions[c][:30]) for c in columns], rotation=90, fontsize=LABEL_PT)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label("cosine similarity", fontsize=LABEL_PT + 1)
    bar.ax.tick_params(labelsize=LABEL_PT)
    fig.tight_layout()
    return fig, note


# ---- the cultures report (07_cultures) -------------------------------------------------------------------


@literal_text
def region_heatmap(grids: Mapping[str, np.ndarray], regions: Sequence[str], languages: Sequence[str],
                   label: str) -> Figure:
    """Region × language recall (in %, one panel per model named by the keys of ``grids``) on one colour scale."""
    fig = Figure(figsize=(min(16, 2.5 + 0.35 * len(languages) * len(grids)), 1.8 + 0.3 * len(regions)))
    axes = np.atleast_1d(fig.subplots(1, len(grids), sharey=True))
    image = None
    for ax, (name, grid) in zip(axes, grids.items()):
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(languages)), [plain(x) for x in languages], rotation=90, fontsize=7)
        ax.set_yticks(range(len(regions)), [plain(x) for x in regions], fontsize=7)
        ax.set_title(plain(name), fontsize=9)
        ax.set_xlabel("caption language")
        if len(regions) * len(languages) <= 400:
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white" if v < 50 else "black")
    axes[0].set_ylabel("image region")
    assert image is not None
    fig.colorbar(image, ax=list(axes), label=label)
    return fig
