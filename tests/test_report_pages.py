"""Reports a class can read on paper: rendered at 12, 36 and 120 images (generated pictures and captions, the demo
model), every printed word is at least 6 pt and no page but a report's last is more than two-thirds empty.

Font sizes come from the PDF itself (``pdftotext -bbox``, figures included: they are SVG with their text kept as
text), calibrated on a page printed at known sizes; emptiness from the pages rendered as images (``pdftoppm``).
"""

import csv
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageDraw

from labclip import LabclipError
from labclip.lab.report import PRINT_CSS, build_reports, chromium, to_pdf

pytestmark = pytest.mark.heavy

SIZES = (12, 36, 120)
NOTEBOOKS = ["01_matching", "02_languages", "03_lab_report", "04_zeroshot", "06_adapt"]
MIN_PT = 6.0
TITLE = "Práctica 3: emparejar imágenes y textos"
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
# A4 and the report's top and bottom page margins (lab/report.py PRINT_CSS), in mm.
PAGE_MM, TOP_MM, BOTTOM_MM = 297.0, 12.0, 15.0


def _tools() -> None:
    try:
        chromium()
    except LabclipError as err:
        pytest.skip(str(err))
    if shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils (pdftotext, pdftoppm) is not installed; make sysdeps installs it")


def make_set(folder, n: int):
    """``n`` drawn pictures, a caption file (English and Russian) and a label file (6 colour classes), as a
    teacher's own folder would hold them."""
    (folder / "fotos").mkdir(parents=True)
    rows, labels = [], []
    for i in range(n):
        colour, shape = COLOURS[i % 6], SHAPES[(i // 6) % 6]
        image = Image.new("RGB", (96, 96), "white")
        draw = ImageDraw.Draw(image)
        box = (10 + i % 7, 12, 84, 84 - i % 9)
        (draw.ellipse if shape in ("circle", "ring") else draw.rectangle)(box, fill=colour)
        name = f"fotos/p{i:03d}.png"
        image.save(folder / name)
        rows.append((name, f"a {colour} {shape} drawn on white paper, picture number {i}",
                     f"{colour} {shape} на белой бумаге, рисунок номер {i}"))
        labels.append((name, colour))
    for file, header, data in (("captions.csv", ["image", "en", "ru"], rows), ("labels.csv", ["image", "en"], labels)):
        with open(folder / file, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *data])
    return folder / "captions.csv", folder / "labels.csv", rows


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """The five reports at each size, once per session (about two minutes a size). The 36-image set asks for a
    hub model that is neither cached nor reachable, as on a fresh offline clone: the demo model stands in."""
    _tools()
    runs = {}
    for n in SIZES:
        work = tmp_path_factory.mktemp(f"set{n}")
        captions, labels, rows = make_set(work, n)
        params = {"model": "demo", "captions": str(captions), "labels": str(labels), "languages": ["en", "ru"]}
        with pytest.MonkeyPatch.context() as mp:  # offline, with an empty hub cache, here and in the kernels
            import huggingface_hub.constants as constants

            mp.setattr(constants, "HF_HUB_CACHE", str(work / "empty-hub-cache"))
            mp.setattr(constants, "HF_HUB_OFFLINE", True)
            mp.setenv("HF_HUB_CACHE", str(work / "empty-hub-cache"))
            mp.setenv("HF_HUB_OFFLINE", "1")
            if n == 36:
                params.update(model="openai/clip-vit-base-patch32", title=TITLE)
            build_reports(params, work / "reports", notebooks=NOTEBOOKS)
        runs[n] = (work / "reports", rows)
    return runs


@pytest.fixture(scope="session")
def bbox_ratio(tmp_path_factory):
    """Height of a word's box in ``pdftotext -bbox`` per point of font size, measured on a page Chromium prints
    with the reports' font at known sizes (so the sizes read from the reports are in points, not guessed)."""
    _tools()
    folder = tmp_path_factory.mktemp("calibrate")
    spans = "".join(f'<p style="font:{pt}pt \'DejaVu Sans\'">size{pt}pt</p>' for pt in (6, 8, 12))
    page = folder / "calibrate.html"
    page.write_text(f"<html><head>{PRINT_CSS}</head><body>{spans}</body></html>", encoding="utf-8")
    words = _words(to_pdf(page, folder / "calibrate.pdf"))[0][2]
    ratios = [(y1 - y0) / float(size[1]) for _, y0, _, y1, text in words if (size := re.fullmatch(r"size(\d+)pt", text))]
    assert len(ratios) == 3 and max(ratios) - min(ratios) < 0.02, ratios
    return float(np.mean(ratios))


def _words(pdf) -> list[tuple[float, float, list[tuple[float, float, float, float, str]]]]:
    """Per page: width, height and the words with their boxes (points)."""
    out = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = []
    for width, height, body in re.findall(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', out, re.S):
        words = [(float(a), float(b), float(c), float(d), html.unescape(t)) for a, b, c, d, t in re.findall(
            r'xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', body)]
        pages.append((float(width), float(height), words))
    return pages


def _filled(pdf, folder) -> list[float]:
    """Per page, how far down the printable area the lowest ink reaches (0 to 1), from the page as an image."""
    prefix = folder / pdf.stem
    subprocess.run(["pdftoppm", "-gray", "-r", "40", str(pdf), str(prefix)], check=True)
    filled = []
    for page in sorted(folder.glob(f"{pdf.stem}-*.pgm")):
        ink = np.asarray(Image.open(page)) < 235
        rows = ink.shape[0]
        top, bottom = round(rows * TOP_MM / PAGE_MM), round(rows * (PAGE_MM - BOTTOM_MM) / PAGE_MM)
        used = np.flatnonzero(ink[top:bottom].any(axis=1))
        filled.append((used.max() + 1) / (bottom - top) if len(used) else 0.0)
    return filled


@pytest.mark.parametrize("n", SIZES)
def test_every_printed_word_is_at_least_6_pt(rendered, bbox_ratio, n):
    out, _ = rendered[n]
    small = []
    for name in NOTEBOOKS:
        for number, (_, _, words) in enumerate(_words(out / f"{name}.pdf"), 1):
            small += [(name, number, text, round((y1 - y0) / bbox_ratio, 1)) for _, y0, _, y1, text in words
                      if (y1 - y0) / bbox_ratio < MIN_PT]
    assert not small, small[:10]


@pytest.mark.parametrize("n", SIZES)
def test_no_page_but_the_last_is_more_than_two_thirds_empty(rendered, tmp_path, n):
    out, _ = rendered[n]
    empty = {}
    for name in NOTEBOOKS:
        filled = _filled(out / f"{name}.pdf", tmp_path)
        for f in tmp_path.glob("*.pgm"):
            f.unlink()
        empty.update({(name, page): round(f, 2) for page, f in enumerate(filled[:-1], 1) if f < 1 / 3})
    assert not empty, empty


def test_figures_print_their_text_as_text(rendered):
    """The heatmap's values and the label bars' labels are words of the PDF (what the size check reads)."""
    out, _ = rendered[12]
    matching = " ".join(w[4] for page in _words(out / "01_matching.pdf") for w in page[2])
    assert "cosine" in matching and re.search(r"\b-?0\.\d\d\b", matching)
    zeroshot = " ".join(w[4] for page in _words(out / "04_zeroshot.pdf") for w in page[2])
    assert "✓" in zeroshot and "probability of each label" in zeroshot


def test_heatmap_form_follows_what_fits_and_the_full_matrix_is_kept(rendered):
    from labclip.lab import plots

    fits = plots.heatmap_capacity()
    assert 12 <= fits < 36
    for n in SIZES:
        out, rows = rendered[n]
        page = (out / "01_matching.html").read_text(encoding="utf-8")
        pdf = " ".join(subprocess.run(["pdftotext", str(out / "01_matching.pdf"), "-"], capture_output=True,
                                      text=True, check=True).stdout.split())
        sim = np.loadtxt(out / "similarity_en.csv", delimiter=",", skiprows=1, usecols=range(1, n + 1))
        metrics = json.loads((out / "01_matching.json").read_text(encoding="utf-8"))["metrics"]
        metrics = metrics.get("en", metrics)
        assert sim.shape == (n, n)
        assert np.diag(sim).mean() == pytest.approx(metrics["correct_mean"], abs=1e-5)
        if n <= fits:
            assert "hardest" not in pdf and "Full matrix" not in page
        else:
            assert f"Similarity matrix (English): the {fits} hardest images" in pdf
            assert f"The full {n} × {n} matrix: " + ("under “Full matrix” in the HTML page and in " if n <= 60 else
                                                      "in ") + "similarity_en.csv" in pdf
            assert ("Full matrix" in page) == (n <= 60)
            own_rank = 1 + (sim > np.diag(sim)[:, None]).sum(axis=1)
            for worst in np.argsort(-own_rank, kind="stable")[:3]:  # the hardest images are the ones shown
                assert f"rank {own_rank[worst]}:" in pdf


def test_top_k_table_stays_proportionate(rendered):
    """12 images: every top-3 caption in full, each on one line (the table uses the width); 36 and 120: one
    compact row per image in print, the full table on screen only, and 01 stays a few pages."""
    for n in SIZES:
        out, rows = rendered[n]
        pdf = subprocess.run(["pdftotext", str(out / "01_matching.pdf"), "-"], capture_output=True, text=True,
                             check=True).stdout
        pages = pdf.count("\f")
        page = (out / "01_matching.html").read_text(encoding="utf-8")
        if n * 3 <= 40:
            shown = [caption for _, caption, _ in rows if caption in pdf]
            assert len(shown) >= 3 and "All captions:" not in page
            assert pages <= 6
        else:
            assert "Top-3 captions, by the image each describes" in pdf and "All captions:" in page
            assert pages <= 5 + n // 40, pages


def test_demo_fallback_has_one_banner_and_content_starts_on_page_one(rendered):
    out, _ = rendered[36]
    for name in NOTEBOOKS:
        page = (out / f"{name}.html").read_text(encoding="utf-8")
        assert page.count('class="labclip-banner"') == 1, name
        banner = html.unescape(re.search(r'class="labclip-banner"[^>]*>(.*?)</div>', page, re.S)[1])
        assert "could not be loaded" in banner and "untrained demo model" in banner
        first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(out / f"{name}.pdf"), "-"],
                               capture_output=True, text=True, check=True).stdout
        after_banner = first[first.index("nothing about CLIP.") + len("nothing about CLIP."):]
        assert len(after_banner.split()) > 20, (name, after_banner)  # a section's heading, prose and more


def test_title_heads_every_report_with_its_own_name_under_it(rendered):
    out, _ = rendered[36]
    own = {"01_matching": "CLIP image–text matching", "04_zeroshot": "Zero-shot classification with prompt templates",
           "06_adapt": "Adapters: Russian captions and new labels on a CPU, scored on held-out images"}
    for name in NOTEBOOKS:
        page = html.unescape((out / f"{name}.html").read_text(encoding="utf-8"))
        assert re.search(r"<h1[^>]*>" + re.escape(TITLE), page), name
        if name in own:
            assert f">{own[name]}</p>" in page


def test_adapt_report_shows_only_the_shots_each_set_allows(rendered):
    for n in SIZES:
        out, _ = rendered[n]
        page = (out / "06_adapt.html").read_text(encoding="utf-8")
        result = json.loads((out / "06_adapt.json").read_text(encoding="utf-8"))
        rows = result["few_shot"]["top1"]
        allowed = sorted({r["shots"] for r in rows if r["method"] != "zero-shot" and r["shots_used"] >= r["shots"]})
        table = page[page.index("New labels from a few images"):]
        shown = sorted({int(k) for k in re.findall(r"<tr>\s*<td[^>]*>(?:linear probe|Tip-Adapter)</td>\s*<td[^>]*>(\d+)</td>",
                                                   table)})
        assert shown == allowed and "Fewest shots used" not in page
        assert ("You asked for" in table) == (allowed != [1, 2, 4, 8, 16])
