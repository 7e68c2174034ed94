"""A hostile caption set yields reports in which nothing is active or remote, and its text shows as written."""

import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from labclip import LabclipError
from labclip.config import IMAGES_DIR
from labclip.lab import plots, present
from labclip.lab.narrative import md
from labclip.lab.report import build_reports, chromium, to_pdf

IMG = '<img src="http://127.0.0.1:9/x" onerror=alert(1)>'
IFRAME = '<iframe src="file:///etc/passwd">'
SCRIPT = "<script>alert(1)</script>"
MD_IMAGE = "![x](http://127.0.0.1:9/y.png)"
MD_LINK = "[c](javascript:alert(1))"
MATH = r"$\frac{a}{b}$"
HOSTILE = [IMG, IFRAME, SCRIPT, MD_IMAGE, MD_LINK, MATH]
FILE_NAMES = ["<b onmouseover=alert(2)>.png", "$x$ [y](javascript:z).png", "plain.png"]
TITLE = f"{SCRIPT} {MD_IMAGE} {MATH}"
ACTIVE_TAGS = {"script", "iframe", "object", "embed", "frame", "frameset", "applet", "base"}


class Elements(HTMLParser):
    """Every start tag with its attributes, and all text as a browser would show it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Elements:
    found = Elements()
    found.feed(html)
    return found


def assert_inert(html: str, allow: frozenset = frozenset()) -> Elements:
    page = parse(html)
    for tag, attrs in page.tags:
        assert tag not in ACTIVE_TAGS - allow, (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            if name in ("src", "href", "srcset", "action", "formaction", "poster", "data", "xlink:href"):
                assert (value or "").startswith(("data:", "#")), (tag, name, value)
    return page


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    sources = ["astronaut.png", "cat.png", "coffee.png", "horse.png", "pizza.png", "rocket.jpg"]
    names = [*FILE_NAMES, "four.png", "five.png", "six.jpg"]
    for source, name in zip(sources, names):
        shutil.copy(IMAGES_DIR / source, folder / name)
    rows = [(name, HOSTILE[i], f"{HOSTILE[-1 - i]} Bild {i}") for i, name in enumerate(names)]
    with (folder / "captions.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "en", "de"])
        writer.writerows(rows)
    with (folder / "labels.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "en"])
        writer.writerows([(name, [SCRIPT, MATH, MD_LINK][i % 3]) for i, name in enumerate(names)])
    return folder


@pytest.fixture(scope="module")
def reports(hostile, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile-reports")
    params = {"model": str(tiny_model_dir), "captions": str(hostile / "captions.csv"), "image_dir": str(hostile),
              "languages": ["en", "de"], "title": TITLE, "compare_models": [], "translator": "",
              "labels": str(hostile / "labels.csv"), "template_sets": ["single"]}
    build_reports(params, out, pdf=False)
    return out


@pytest.mark.parametrize("name", ["01_matching", "02_languages", "03_lab_report", "04_zeroshot"])
def test_hostile_text_is_shown_escaped_and_nothing_is_active(reports, name):
    html = (reports / f"{name}.html").read_text(encoding="utf-8")
    page = assert_inert(html)
    text = " ".join(" ".join(page.text).split())
    if name == "04_zeroshot":
        for label in (SCRIPT, MATH, MD_LINK):
            assert label in text, label
        return
    shown = [caption for caption in HOSTILE if caption in text]
    assert shown == HOSTILE if name != "01_matching" else shown  # 01 shows only the captions in a top-k list
    if name != "02_languages":
        assert FILE_NAMES[0] in text
    if name == "03_lab_report":
        assert TITLE in text


def test_pdf_of_a_hostile_report_has_no_links_or_scripts(reports, tmp_path):
    try:
        chromium()
    except LabclipError as err:
        pytest.skip(str(err))
    pdf = to_pdf(reports / "03_lab_report.html", tmp_path / "hostile.pdf")
    data = pdf.read_bytes()
    assert b"/URI" not in data and b"/JavaScript" not in data and b"/Launch" not in data
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        squeezed = re.sub(r"\s+", "", text)
        for caption in (SCRIPT, MD_LINK, MATH):
            assert re.sub(r"\s+", "", caption) in squeezed, caption


def test_markdown_special_characters_render_as_text():
    for hostile in [*HOSTILE, "**bold** _em_ `code` # heading | a | b |", "<http://127.0.0.1:9/>"]:
        html = present.prose(f"Caption: {md(hostile)}.")
        page = assert_inert(html)
        assert {tag for tag, _ in page.tags} <= {"p"}, html
        assert "".join(page.text).strip() == f"Caption: {' '.join(hostile.split())}."


def test_tables_escape_cells_and_headers():
    import pandas as pd

    frame = pd.DataFrame({IMG: [SCRIPT, MD_IMAGE], "ok": [IFRAME, MATH]})
    page = assert_inert(present.table(frame), allow=frozenset())
    text = " ".join(page.text)
    for item in (IMG, SCRIPT, IFRAME, MATH):
        assert item in text


def test_figure_labels_print_dollars_literally():
    sim = np.array([[0.3, 0.1], [0.2, 0.4]])
    fig = plots.similarity_heatmap(sim, [Image.new("RGB", (8, 8))] * 2, [MATH, "costs $5 and $6"],
                                   title=MATH)
    present.png(fig)  # draws every text
    labels = [t for t in fig.axes[0].get_yticklabels() if t.get_text()]
    for label, expected in zip(labels, [MATH, "costs $5 and $6"]):
        shown, is_math = label._preprocess_math(label.get_text())
        assert not is_math and shown == expected
    assert not fig.axes[0].title.get_usetex()


def test_svg_figures_carry_user_text_escaped():
    """Figures are SVG with their text as text: a caption with markup stays characters, never an element."""
    import base64

    sim = np.array([[0.3, 0.1], [0.2, 0.4]])
    fig = plots.similarity_heatmap(sim, [Image.new("RGB", (8, 8))] * 2, [SCRIPT, "a & b"])
    src = re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', present.svg(fig))[1]
    svg = base64.b64decode(src).decode("utf-8")
    assert "<script" not in svg.lower() and "&lt;script" in svg and "a &amp; b" in svg
    assert "<text" in svg  # text kept as text, so the PDF's font sizes can be read back
