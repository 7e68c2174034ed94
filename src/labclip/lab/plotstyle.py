"""What every figure of the reports shares: text printed literally (no TeX, no mathtext from user text) and the
printed page's sizes, so a figure is drawn at the size it prints."""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from ..images import load_image

CORRECT_COLOUR = "#d62728"
LITERAL_TEXT: Any = {"text.usetex": False}  # matplotlib rc settings


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


# A printed page (A4 less the report's margins) and the smallest text a figure prints, in points: figures are
# drawn at their printed size, so a font size here is the size on paper.
PAGE_WIDTH_PT = 495.0  # A4 less the page margins and the notebook's own padding
PAGE_HEIGHT_PT = 640.0
MIN_TEXT_PT = 6.5
LABEL_PT = 7.0
HEATMAP_LABEL_PT = 165.0  # the caption column left of the cells (two lines of about 42 characters at LABEL_PT)
HEATMAP_MAX_CELL_PT = 28.0
# "-0.05" at MIN_TEXT_PT is about 17 pt wide and two caption lines at LABEL_PT about 17 pt high; a cell keeps
# a little room around them.
HEATMAP_MIN_CELL_PT = 19.0


def heatmap_capacity(page_width: float = PAGE_WIDTH_PT) -> int:
    """The most images a similarity heatmap shows on one printed page with its values and captions legible
    (values at ``MIN_TEXT_PT``, captions at ``LABEL_PT``, at least ``HEATMAP_MIN_CELL_PT`` per cell)."""
    across = int((page_width - HEATMAP_LABEL_PT) // HEATMAP_MIN_CELL_PT)
    down = int((PAGE_HEIGHT_PT - 60) // HEATMAP_MIN_CELL_PT) - 1  # a thumbnail row and the colour bar below
    return max(1, min(across, down))


def _caption_label(text: object, width: int = 42) -> str:
    """A caption in at most two lines of ``width`` characters (shortened with "[...]" beyond)."""
    return "\n".join(textwrap.wrap(textwrap.shorten(plain(text), 2 * width - 2, placeholder=" […]"), width)[:2])
