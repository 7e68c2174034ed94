"""Pages load nothing and run nothing, and Chromium prints them offline: checked with a local server."""

import http.server
import shutil
import subprocess
import threading

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from labclip import LabclipError
from labclip.lab.report import CHROMIUM_FLAGS, CSP_META, chromium, to_html, to_pdf

SECRET = "labclipsecret7d1f"
RAN = "labclipscriptran51c2"


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 that records every request it gets."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<p>remote content</p>")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def _hostile(url: str, secret_file) -> str:
    return (f'<p>visible text</p><img src="{url}/img.png"><iframe src="{url}/frame"></iframe>'
            f'<iframe src="{secret_file.as_uri()}"></iframe><link rel="stylesheet" href="{url}/style.css">'
            f'<script>document.write("{RAN}"); fetch("{url}/fetch")</script>'
            f'<div style="background: url({url}/bg.png)">styled</div>')


def _pdf_text(path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed; make sysdeps installs it")
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def _print_plain(html, pdf, tmp_path, flags=("--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer")):
    subprocess.run([chromium(), *flags, f"--user-data-dir={tmp_path / 'profile'}", f"--print-to-pdf={pdf}",
                    html.as_uri()], capture_output=True, timeout=120, check=True)
    return _pdf_text(pdf)


def test_hostile_output_is_neither_loaded_nor_run(tmp_path, server):
    try:
        chromium()
    except LabclipError as err:
        pytest.skip(str(err))
    url, seen = server
    secret = tmp_path / "secret.html"
    secret.write_text(f"<p>{SECRET}</p>", encoding="utf-8")
    page = _hostile(url, secret)

    # The controls show that this page, printed plainly, does leak: the checks below can fail.
    raw = tmp_path / "raw.html"
    raw.write_text(f"<html><head></head><body>{page}</body></html>", encoding="utf-8")
    leaked = _print_plain(raw, tmp_path / "raw.pdf", tmp_path)
    assert seen and SECRET in leaked and RAN in leaked
    seen.clear()
    # Chromium's flags alone keep it off the network, loopback included.
    _print_plain(raw, tmp_path / "flags.pdf", tmp_path, CHROMIUM_FLAGS)
    assert seen == []

    nb = new_notebook(cells=[new_code_cell("x", outputs=[new_output("display_data", {"text/html": page})])])
    nbformat.write(nb, tmp_path / "hostile.ipynb")
    html = to_html(tmp_path / "hostile.ipynb", tmp_path / "hostile.html")
    text = html.read_text(encoding="utf-8")
    assert CSP_META in text and "<script" not in text.lower()
    printed = _pdf_text(to_pdf(html, tmp_path / "hostile.pdf"))
    assert "visible text" in printed and "styled" in printed
    assert SECRET not in printed and RAN not in printed and "remote content" not in printed
    assert seen == []

    # The policy on its own (a plain Chromium, scripts left in) blocks the file, the script and the server.
    csp_only = tmp_path / "csp.html"
    csp_only.write_text(f"<html><head>{CSP_META}</head><body>{page}</body></html>", encoding="utf-8")
    printed = _print_plain(csp_only, tmp_path / "csp.pdf", tmp_path)
    assert SECRET not in printed and RAN not in printed and seen == []
