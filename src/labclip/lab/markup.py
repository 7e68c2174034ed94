"""HTML for the reports: escaped tables, escaped Markdown prose, figures as ``data:`` images, screen-only blocks,
and the page-break styles; sections, the published box and prose as displayable ``HTML`` objects, which a notebook
cell shows as its last expression (:mod:`labclip.lab.present` displays them for the section calls)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib
import mistune
import pandas as pd
from IPython.display import HTML
from matplotlib.figure import Figure

from . import plots

BANNER_STYLE = ("border:3px solid #c62828;background:#ffebee;color:#8e0000;padding:6px 10px;"
                "margin:4px 0 6px 0;font-size:11.5px;font-weight:bold;border-radius:4px")
PUBLISHED_STYLE = "border:2px solid #1565c0;background:#e3f2fd;padding:6px 12px;margin:8px 0;border-radius:4px"
KEEP_TOGETHER = "break-inside:avoid;page-break-inside:avoid"
KEEP_WITH_NEXT = "break-inside:avoid;page-break-inside:avoid;break-after:avoid;page-break-after:avoid"
INTERVALS_NOTE = ("95% intervals in brackets: Wilson score for accuracies, a seeded bootstrap over images for the mean "
                  "reciprocal ranks and the mean margin.")
SCREEN_ONLY = "labclip-screen"  # shown in the HTML page, left out of the PDF (report.PRINT_CSS)
SCREEN_HEATMAP_LIMIT = 60  # images of the largest full heatmap the HTML page carries as a picture
TOPK_ROWS = 40  # rows of the longest top-k table printed in full (one row per image and rank)
LABEL_BAR_COLUMNS, LABEL_BAR_ROWS = 3, 4  # images side by side, and rows of them per figure (a third of a page)
SHORT_TABLE = 25  # rows a section keeps on one page with its heading (a longer table may start under it)
TABLE_STYLES: Any = [{"selector": "th, td", "props": "overflow-wrap:break-word;word-break:normal;vertical-align:top"}]

_markdown = mistune.create_markdown(escape=True, plugins=["strikethrough", "table"])


def prose(markdown: str) -> str:
    """Markdown as HTML, with any raw HTML in it escaped."""
    return str(_markdown(markdown))


def png(fig: Figure, dpi: int = 110) -> str:
    """A figure as an ``<img>`` with a ``data:`` PNG (nothing is loaded from anywhere)."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(plots.LITERAL_TEXT):
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%;height:auto" alt="figure">'


def svg(fig: Figure) -> str:
    """A figure as an ``<img>`` with a ``data:`` SVG whose text stays text: it prints at the size it was drawn,
    sharp at any zoom, and its font sizes can be read back from the PDF (nothing is loaded from anywhere)."""
    buffer = io.BytesIO()
    rc: Any = {**plots.LITERAL_TEXT, "svg.fonttype": "none", "svg.hashsalt": "labclip"}
    with matplotlib.rc_context(rc):
        fig.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.03, facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/svg+xml;base64,{data}" style="max-width:100%;height:auto" alt="figure">'


def screen_only(summary: str, item: str) -> str:
    """``item`` (HTML) folded under ``summary`` (plain text) on screen, and left out of the printed PDF."""
    return (f'<details class="{SCREEN_ONLY}"><summary>{html.escape(summary)}</summary>'
            f'<div style="overflow-x:auto">{item}</div></details>')


def table(frame: pd.DataFrame, index: bool = False) -> str:
    """A table as HTML with every cell and header escaped (values should already be display strings)."""
    styler = (frame.style.format(escape="html").format_index(escape="html", axis=0)
              .format_index(escape="html", axis=1).set_table_styles(TABLE_STYLES))
    return (styler if index else styler.hide(axis="index")).to_html()


def block(heading: str, *items: str, level: int = 3) -> str:
    """A sub-heading (plain text) and its items (HTML) kept on one page."""
    return f'<div style="{KEEP_TOGETHER}"><h{level}>{html.escape(heading)}</h{level}>{"".join(items)}</div>'


def section_html(heading: str | None, text: str = "", *items: str, level: int = 2, together: bool = False) -> HTML:
    """One section: heading (plain text), prose (Markdown) and items (HTML) as one displayable output.

    A section without items, or with ``together``, stays on one page; otherwise the heading and
    prose stay with the first item when it is a figure or a table of at most ``SHORT_TABLE`` rows,
    and ask not to be parted from a longer table.
    """
    head = f"<h{level}>{html.escape(heading)}</h{level}>" if heading else ""
    lead = head + (prose(text) if text else "")
    together = together or not items
    if items and not together:
        lead = f'<div class="labclip-lead" style="{KEEP_WITH_NEXT}">{lead}</div>' if lead else ""
        if items[0].startswith("<img") or _short_table(items[0]):
            lead, items = f'<div style="{KEEP_TOGETHER}">{lead}{items[0]}</div>', items[1:]
    style = f' style="{KEEP_TOGETHER}"' if together else ""
    return HTML(f'<div class="labclip-section"{style}>{lead}{"".join(items)}</div>')


def _short_table(item: str) -> bool:
    return "<table" in item and item.count("<tr") <= SHORT_TABLE


def published_html(text: str, frame: pd.DataFrame | None = None, after: str = "") -> HTML:
    """The one marked box of published figures (``labclip.registry.PUBLISHED``, never measured here): prose
    (Markdown), a table of the figures with their sources, and a closing note."""
    items = [prose(text) if text else "", table(frame) if frame is not None else "", prose(after) if after else ""]
    return HTML(f'<div class="labclip-published" style="{PUBLISHED_STYLE};{KEEP_TOGETHER}">'
                f'<strong>Published results (not measured here)</strong>{"".join(items)}</div>')


def paragraph_html(markdown: str) -> HTML:
    """Prose on its own (Markdown, raw HTML escaped)."""
    return HTML(f"<div>{prose(markdown)}</div>")


def joined(*parts: HTML) -> HTML:
    """Displayable parts (a title and its notes, say) as one output."""
    return HTML("".join(str(part.data) for part in parts))
