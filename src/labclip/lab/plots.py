"""Figures: similarity heatmap with thumbnails, similarity distributions, accuracy bars.

Each function returns a ``matplotlib.figure.Figure`` without touching pyplot's global state. Text
that came from the user goes through :func:`plain`, so ``$...$`` prints as written, never as
mathtext, and figures are drawn with ``text.usetex`` off.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageOps

from .. import stats
from ..images import load_image
from ..labels import metric_label, num
from ..metrics import accuracy_keys

CORRECT_COLOUR = "#d62728"
LITERAL_TEXT = {"text.usetex": False}


def literal_text(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a plotting function with TeX rendering off, whatever the user's matplotlibrc says."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(LITERAL_TEXT):
            return draw(*args, **kwargs)
    return wrapper


def plain(text: object) -> str:
    """User text as matplotlib shows it literally: each ``$`` escaped, so no mathtext is parsed."""
    return str(text).replace("$", r"\$")


def _thumbnail(image, side: int = 96) -> np.ndarray:
    picture = image if isinstance(image, Image.Image) else load_image(image)
    return np.asarray(ImageOps.pad(picture.convert("RGB"), (side, side), color=(255, 255, 255)))


@literal_text
def similarity_heatmap(
    sim: np.ndarray,
    images: Sequence,
    captions: Sequence[str],
    title: str | None = None,
    mark_pairs: bool = True,
    wrap: int = 38,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Captions × images cosine matrix, thumbnails above the columns, values in the cells, a colour bar.

    Like the figure in openai/CLIP's ``Interacting_with_CLIP`` notebook; when ``mark_pairs``,
    the cell of each correct pair (caption ``i``, image ``i``) is outlined. Heatmaps that are
    compared with each other share ``vmin``/``vmax`` (default: this matrix's range).
    """
    data = np.asarray(sim, dtype=float).T
    n_captions, n_images = data.shape
    fig = Figure(figsize=(4.4 + 0.72 * n_images, 1.6 + 0.6 * n_captions), layout="constrained")
    ax = fig.subplots()
    lo = float(data.min()) if vmin is None else vmin
    hi = float(data.max()) if vmax is None else vmax
    hi = hi if hi > lo else lo + 1e-6
    shown = ax.imshow(data, cmap="viridis", vmin=lo, vmax=hi)
    bar = fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.01)
    bar.set_label("cosine similarity", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    labels = [plain(textwrap.shorten(str(c), 90)) for c in captions]
    ax.set_yticks(range(n_captions), ["\n".join(textwrap.wrap(c, wrap)) for c in labels], fontsize=9)
    ax.set_xticks([])
    middle = (lo + hi) / 2
    for t in range(n_captions):
        for i in range(n_images):
            value = data[t, i]
            ax.text(i, t, num(value, 2), ha="center", va="center", fontsize=8,
                    color="black" if value > middle else "white")
    for i, image in enumerate(images):
        ax.imshow(_thumbnail(image), extent=(i - 0.45, i + 0.45, -1.55, -0.65), origin="lower")
    if mark_pairs:
        for i in range(min(n_images, n_captions)):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=CORRECT_COLOUR, linewidth=2.5))
    ax.set_xlim(-0.5, n_images - 0.5)
    ax.set_ylim(n_captions - 0.5, -1.7)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(plain(title), fontsize=12)
    return fig


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
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.subplots()
    sns.stripplot(data=frame, x="cosine similarity", y="pair", hue="pair", ax=ax, jitter=0.25, size=6, alpha=0.75,
                  palette={"correct": CORRECT_COLOUR, "wrong": "#7f7f7f"}, legend=False)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2)
        ax.text(threshold, -0.45, f" threshold {num(threshold)}", fontsize=9, va="bottom")
    if title:
        ax.set_title(plain(title), fontsize=11)
    return fig


@literal_text
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
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=7, padding=8 if n else 0)
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
    fig, ax = _grouped_bars(long, "language", "accuracy (%)", "figure", n, (8, 3.6))
    ax.legend(fontsize=8, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    if title:
        ax.set_title(plain(title), fontsize=11)
    return fig


@literal_text
def label_bars(table: pd.DataFrame, images: Sequence, columns: int = 3) -> Figure:
    """Each image beside horizontal bars of its top labels' probabilities (as in openai/CLIP's notebook)."""
    names = list(dict.fromkeys(table["image"]))
    rows = (len(names) + columns - 1) // columns
    fig = Figure(figsize=(4.2 * columns, 1.9 * rows), layout="constrained")
    grid = fig.subplots(rows, 2 * columns, squeeze=False, gridspec_kw={"width_ratios": [1, 1.6] * columns})
    for axis in grid.flat:
        axis.axis("off")
    for n, (name, image) in enumerate(zip(names, images)):
        picture, bars = grid[n // columns][2 * (n % columns)], grid[n // columns][2 * (n % columns) + 1]
        picture.imshow(_thumbnail(image))
        part = table[table["image"] == name].sort_values("rank")
        bars.axis("on")
        y = np.arange(len(part))
        bars.barh(y, part["probability"], color="#4c72b0")
        bars.set_yticks(y, [plain(textwrap.shorten(str(x), 22)) for x in part["label"]], fontsize=8)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
        for spine in ("top", "right"):
            bars.spines[spine].set_visible(False)
    fig.supxlabel("probability of each label (bars, 0–1)", fontsize=8)
    return fig


@literal_text
def confusion_heatmap(matrix: pd.DataFrame, title: str | None = None) -> Figure:
    """True classes (rows) against predicted classes (columns), counts in the cells."""
    matrix = matrix.rename(index=plain, columns=plain)
    side = 2.5 + 0.45 * len(matrix)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, linewidths=0.5, linecolor="#ddd")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(plain(title), fontsize=11)
    return fig


@literal_text
def token_lengths(lengths: pd.DataFrame, limit: int = 77, unit: str = "CLIP BPE tokens") -> Figure:
    """Tokens per caption by language (columns ``language``, ``tokens``), with the context limit."""
    lengths = lengths.assign(language=lengths["language"].map(plain))
    fig = Figure(figsize=(8, 2.8), layout="constrained")
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
    fig, ax = _grouped_bars(data, "setup", "value", "language", n, (max(8.0, 1.6 * data["setup"].nunique() + 2), 3.6))
    ax.set_ylabel(f"{metric_label(figure)} (%)")
    ax.tick_params(axis="x", labelsize=8)
    return fig
