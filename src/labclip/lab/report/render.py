"""Rendering: an executed notebook as a self-contained HTML page (nbconvert), printed to PDF by Chromium offline."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ...errors import LabclipError
from .publish import remove

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PDF_TIMEOUT_S = 180
# Pages load nothing and run nothing: images are data: URIs, styles inline.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
       "base-uri 'none'; form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
# Chromium flags for printing: no network (every request goes to a proxy that does not exist,
# loopback included, and no host name resolves), no background services, a throw-away profile.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--disable-extensions", "--disable-default-apps", "--no-default-browser-check", "--mute-audio",
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
)
# Class that keeps a heading with the content that follows it (for display code that wraps both).
KEEP_TOGETHER = "labclip-keep"
# Class of a section's heading and lead paragraph (lab/present.py): kept whole and with the table or figure after it.
LEAD = "labclip-lead"
PRINT_CSS = f"""
<style>
@page {{
  size: A4; margin: 12mm 11mm 15mm 11mm;
  @bottom-center {{ content: counter(page) " / " counter(pages); font: 8pt "DejaVu Sans", sans-serif; color: #555; }}
}}
@media print {{
  body {{ font-size: 10pt; }}
  .jp-OutputArea-output img {{ max-width: 100% !important; max-height: 235mm; width: auto; height: auto !important;
    break-inside: avoid; object-fit: contain; }}
  table, .jp-OutputArea-child:has(table) {{ break-inside: auto; }}
  table {{ font-size: 7.5pt; }}
  .labclip-screen {{ display: none !important; }}
  tr, img, .{KEEP_TOGETHER} {{ break-inside: avoid; }}
  .jp-OutputArea-output, .jp-RenderedHTMLCommon {{ overflow: visible !important; }}
  .jp-OutputArea-child {{ display: block !important; overflow: visible !important; }}
  h1, h2, h3, h4 {{ break-after: avoid; }}
  /* A heading with its lead paragraph stays whole and with what follows (the first table rows, a figure), also
     across cells. Chromium honours break-after: avoid by breaking inside the block instead, between the heading
     and its sentence or inside the sentence, unless the block is also break-inside: avoid. */
  .{LEAD} {{ break-inside: avoid; break-after: avoid; }}
  .jp-OutputArea-child:has(> .jp-RenderedMarkdown :is(h1, h2, h3, h4)):not(:has(table, img, ul, ol, p + p)) {{
    break-inside: avoid; break-after: avoid; }}
  .jp-Cell:has(.jp-OutputArea-child:last-child > .jp-RenderedMarkdown :is(h1, h2, h3, h4)):not(
    :has(.jp-OutputArea-child:last-child :is(table, img, ul, ol, p + p))) {{ break-after: avoid; }}
}}
body {{ font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; }}
.jp-OutputArea-output table {{ border-collapse: collapse; margin: 6px 0 12px 0; max-width: 100%; table-layout: auto;
  width: auto; }}
.jp-OutputArea-output th, .jp-OutputArea-output td {{ border: 1px solid #ccc; padding: 2px 4px;
  text-align: left !important; overflow-wrap: anywhere; word-break: normal; max-width: 48em; }}
.jp-OutputArea-output details > summary {{ cursor: pointer; color: #1565c0; margin: 4px 0; }}
.jp-OutputArea-output img {{ max-width: 100%; height: auto; }}
</style>
"""


def chromium() -> str:
    """The Chromium (or Chrome) executable.

    Raises:
        LabclipError: none is installed.
    """
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise LabclipError("PDF output needs Chromium: run `make sysdeps` (apt-get install chromium) or pass --no-pdf")


def secure_html(body: str) -> str:
    """Remove every ``<script>`` element and put the Content-Security-Policy first in ``<head>``."""
    body = re.sub(r"<script\b[^>]*>.*?</script\s*>", "", body, flags=re.IGNORECASE | re.DOTALL)
    body = re.sub(r"<script\b[^>]*/?>", "", body, flags=re.IGNORECASE)
    head = re.search(r"<head\b[^>]*>", body, flags=re.IGNORECASE)
    if head is None:
        return f"<head>{CSP_META}</head>{body}"
    return body[: head.end()] + CSP_META + body[head.end():]


def to_html(executed: Path, target: Path) -> Path:
    """Render an executed notebook as a self-contained HTML page: code hidden, no script, CSP first."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = without_stderr(cell)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags={"remove-cell", "parameters", "injected-parameters"}), enabled=True
    )
    body, _ = exporter.from_notebook_node(nb)
    body = secure_html(body).replace("</head>", PRINT_CSS + "</head>", 1)
    target.write_text(body, encoding="utf-8")
    return target


def to_pdf(html: Path, target: Path, timeout: float | None = None) -> Path:
    """Print an HTML page to an A4 PDF with headless Chromium, offline, with page numbers.

    Raises:
        LabclipError: Chromium failed or did not finish within ``timeout`` seconds (it is stopped).
    """
    timeout = PDF_TIMEOUT_S if timeout is None else timeout
    profile = None
    try:
        profile = tempfile.mkdtemp(prefix="labclip-chromium-")
        cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={target}",
               html.resolve().as_uri()]
        # Its own session, so that the whole process tree can be stopped on a timeout or Ctrl-C; its own
        # temporary folder inside the profile, so that its singleton socket and lock go with the profile.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, "TMPDIR": profile})
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabclipError(f"Chromium did not print {html.name} to PDF within {timeout:g} s") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        remove(profile)
    if proc.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise LabclipError(f"Chromium could not print {html.name} to PDF: {last}")
    return target




def without_stderr(cell: Any) -> list[Any]:
    """A code cell's outputs without its stderr stream (warnings that name library files)."""
    return [o for o in cell.get("outputs", []) if not (o.output_type == "stream" and o.name == "stderr")]
