"""End to end: papermill + nbconvert + Chromium on a tiny local model."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from labclip import LabclipError, load_model, match_metrics, similarity
from labclip.config import DEFAULT_CAPTIONS, NOTEBOOKS_DIR, PROJ_ROOT
from labclip.data import load_captions
from labclip.lab.narrative import share
from labclip.lab.report import CSP_META, NOTEBOOKS, build_reports, chromium
from labclip.testing import make_tiny_marian, make_tiny_model, make_tiny_sentence_transformer

BANNER = "labclip-banner"


def _pdf_text(path):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed; make sysdeps installs it")
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir):
    try:
        chromium()
    except LabclipError as err:
        pytest.skip(str(err))
    out = tmp_path_factory.mktemp("reports")
    work = tmp_path_factory.mktemp("multilingual")
    pair = f"{make_tiny_sentence_transformer(work / 'st')}+{tiny_model_dir}"
    params = {"model": str(tiny_model_dir), "languages": ["en", "ru"], "compare_models": [pair, "no/such-model"],
              "translator": str(make_tiny_marian(work / "mt"))}
    published = build_reports(params, out)
    return out, published


def test_every_notebook_gives_html_and_pdf(full_run):
    out, published = full_run
    for name in NOTEBOOKS:
        assert (out / f"{name}.html").stat().st_size > 10_000
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    run = (out / "latest").resolve()
    assert run.parent == (out / "runs").resolve() and {p.resolve().parent for p in published} == {run}
    assert not list((out / "runs").glob(".*")), "staging folder left behind"


def test_pages_are_numbered_and_carry_the_policy(full_run):
    out, _ = full_run
    for name in NOTEBOOKS:
        html = (out / f"{name}.html").read_text(encoding="utf-8")
        head = html[: html.index("</head>")]
        assert head.index(CSP_META) < head.index("<style") and "<script" not in html.lower()
        pages = _pdf_text(out / f"{name}.pdf").rstrip("\f").split("\f")
        for number, page in enumerate(pages, 1):
            assert re.search(rf"^\s*{number}\s*/\s*{len(pages)}\s*$", page, flags=re.MULTILINE), (name, number)


def test_html_embeds_heatmap_table_and_russian(full_run):
    out, _ = full_run
    html = (out / "01_matching.html").read_text(encoding="utf-8")
    assert "data:image/svg+xml;base64," in html  # figures keep their text as text (tests/test_report_pages.py)
    assert "Top-3 captions per image" in html and "<table" in html
    assert "a photo of a cup of coffee on a red saucer" in html
    assert "import labclip" not in html and "runs.start(" not in html  # code is hidden
    languages = (out / "02_languages.html").read_text(encoding="utf-8")
    assert ">astronaut.png<" in languages and "../images/" not in languages  # images by name, as the report shows them
    assert "чашка кофе" in languages.lower() or "чашки кофе" in languages.lower()
    assert "чашки кофе" in _pdf_text(out / "02_languages.pdf")


def test_languages_report_has_token_statistics_and_comparison(full_run):
    out, _ = full_run
    html = (out / "02_languages.html").read_text(encoding="utf-8")
    assert "Tokens per word" in html and "Bytes per token" in html and "Truncated" in html
    for strategy in (">raw<", ">translated<", ">multilingual<"):
        assert strategy in html
    assert "Translations by" in html and "no/such-model" in html  # the skipped model is named, not faked
    table = pd.read_csv(out / "comparison.csv")
    assert set(table.strategy) == {"raw", "translated", "multilingual"} and len(table) == 5
    assert "gap_pp" in table.columns and "gap_ratio" in table.columns


def test_zeroshot_report_compares_template_sets(full_run):
    out, _ = full_run
    html = (out / "04_zeroshot.html").read_text(encoding="utf-8")
    assert "Top-5 labels per image" in html and "Confusion matrix" in html
    for name in ("single", "imagenet7", "imagenet80"):
        assert f">{name}<" in html
    assert "Mean per-class recall" in html and "mean_per_class_recall" not in html


def test_untrained_model_banner_on_first_page(full_run):
    out, _ = full_run
    for name in NOTEBOOKS:
        assert BANNER in (out / f"{name}.html").read_text(encoding="utf-8")
    first_page = _pdf_text(out / "03_lab_report.pdf").split("\f")[0]
    assert "UNTRAINED DEMO MODEL" in first_page and "say nothing about CLIP" in " ".join(first_page.split())


def test_prose_numbers_equal_match_metrics(full_run, tiny_model_dir):
    out, _ = full_run
    captions = load_captions(DEFAULT_CAPTIONS)
    model = load_model(tiny_model_dir)
    images = model.encode_images(captions["path"])
    html = (out / "03_lab_report.html").read_text(encoding="utf-8")
    for lang in ("en", "ru"):
        m = match_metrics(similarity(images, model.encode_texts(captions[lang])), 3, model.logit_scale)
        assert f"top-1 {share(m.i2t.hits1, m.n)}" in html
        assert f"top-1 {share(m.t2i.hits1, m.n)}" in html
        assert f"cosine {m.correct_min:.3f} to {m.correct_max:.3f}" in html
        assert f"wrong pairs: {m.wrong_min:.3f} to {m.wrong_max:.3f}" in html
    saved = json.loads((out / "03_lab_report.json").read_text())
    assert saved["provenance"]["captions_sha256"] and saved["provenance"]["timings_s"]["encode images"] >= 0
    assert saved["metrics"]["en"]["n"] == len(captions)


def test_failed_run_leaves_earlier_reports_intact(full_run, tmp_path):
    out, _ = full_run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = tmp_path / "bad.csv"
    bad.write_text("image,en\nmissing.png,a ghost\n", encoding="utf-8")
    with pytest.raises(LabclipError, match="row 2: image 'missing.png' not found"):
        build_reports({"model": "demo", "captions": str(bad)}, out)
    broken = make_tiny_model(tmp_path / "broken", seed=1)  # a model that checks out but can't load: the notebook fails
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    with pytest.raises(LabclipError, match=r"notebook 01_matching failed .*executed notebook is kept at") as err:
        build_reports({"model": str(broken)}, out, notebooks=["01_matching"], pdf=False)
    kept = Path(str(err.value).split("kept at ")[1].split(";")[0])
    assert nbformat.read(kept, as_version=4).cells
    kept.unlink()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list((out / "runs").glob(".*"))


def test_no_banner_for_a_model_not_marked_untrained(tmp_path):
    plain = make_tiny_model(tmp_path / "plain", seed=1, mark_untrained=False)
    out = tmp_path / "out"
    build_reports({"model": str(plain), "languages": ["en"]}, out, notebooks=["03_lab_report"], pdf=False)
    html = (out / "03_lab_report.html").read_text(encoding="utf-8")
    assert BANNER not in html and "UNTRAINED" not in html
    assert "Abstract" in html and "Limitations" in html


def test_cli_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image;en\n;\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "labclip", "report", "--captions", str(bad), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("labclip: error:")]
    assert len(lines) == 1 and "bad.csv" in lines[0] and "row 2" in lines[0]
    assert not (tmp_path / "o").exists()


def test_params_yaml_and_strict(tmp_path):
    from labclip.cli import main as cli_main

    def main(argv):
        return cli_main(["report", *argv])

    params = tmp_path / "p.yaml"
    params.write_text("model: openai/clip-vit-base-patch32\nstrict: true\n")
    assert main(["--params", str(params), "--out", str(tmp_path / "o"), "--no-pdf"]) == 2
    params.write_text("modle: demo\n")
    assert main(["--params", str(params), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_notebooks_are_thin_stripped_and_up_to_date():
    sys.path.insert(0, str(PROJ_ROOT / "scripts"))
    import build_notebooks

    for name in build_notebooks.names():  # every source notebooks/NN_name.py, optional reports included
        committed = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
        assert committed == build_notebooks.build(name), f"run scripts/build_notebooks.py ({name})"
        code = [c for c in committed.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code)
        assert code[1].metadata.tags == ["parameters"]
        assert not any("def " in c.source for c in code)


def test_shipped_parameter_sets_are_valid():
    from labclip.lab.report import read_params

    for path in (PROJ_ROOT / "reports" / "params").glob("*.yaml"):
        params = read_params(path)
        if "captions" in params:
            load_captions(PROJ_ROOT / params["captions"], languages=params.get("languages"))


def test_every_accuracy_in_the_reports_has_its_interval(full_run):
    """Parse each rendered page: a percentage is an accuracy with ``[low, high]`` after it, or one of the few
    figures that are not accuracies (softmax probabilities, the 5% level). The optional reports get the same
    sweep: 05_scale in test_scale.py, 06_adapt in test_adapt_report.py."""
    from test_scale import bare_percentages

    out, _ = full_run
    for name in NOTEBOOKS:
        bare = bare_percentages((out / f"{name}.html").read_text(encoding="utf-8"), skip_columns={"probability"})
        assert bare == [], f"{name}: {bare[:5]}"
    page = (out / "04_zeroshot.html").read_text(encoding="utf-8")
    assert "Mean per-class recall" in page and "every class has the same number of images" in page  # one each


@pytest.mark.parametrize("table_rows", [3, 17])
def test_a_heading_and_its_sentence_never_end_a_page_without_their_table(tmp_path, monkeypatch, table_rows):
    """Print one section under fillers of growing height: wherever the page ends, the heading, its sentence and
    the first and last rows of a short table share a page (the 02_languages "Metrics by language" case)."""
    from labclip.lab import present
    from labclip.lab.report import PRINT_CSS, to_pdf

    try:
        chromium()
    except LabclipError as err:
        pytest.skip(str(err))
    shown = []
    monkeypatch.setattr(present, "display", lambda obj: shown.append(obj.data))
    frame = pd.DataFrame({"Metric": [f"row {i:02d}" for i in range(table_rows)], "Value": ["1/2 (50.0%)"] * table_rows})
    present.section("Metrics by language", "A sentence long enough to take two lines on an A4 page, as the "
                    "paired test's sentence does: " + "words " * 20 + "end of sentence.", present.table(frame))
    last = f"row {table_rows - 1:02d}"
    for filler in range(196, 262, 6):  # the section starts ever lower on the first page, then on the second
        page = (f"<html><head>{PRINT_CSS}</head><body><div style='height:{filler}mm'>filler</div>"
                f"{shown[0]}</body></html>")
        path = tmp_path / f"{filler}.html"
        path.write_text(page, encoding="utf-8")
        pages = _pdf_text(to_pdf(path, tmp_path / f"{filler}.pdf")).split("\f")
        where = {marker: next(i for i, p in enumerate(pages) if marker in p)
                 for marker in ("Metrics by language", "end of sentence", "row 00", last)}
        assert len(set(where.values())) == 1, (filler, where)


def test_german_only_caption_folder_renders_a_report_with_zeroshot_in_english(tmp_path, capsys):
    """An instructor's German-only set: 01–03 in German, 04 on the bundled labels in English, saying why."""
    import shutil

    from labclip.cli import main
    from labclip.config import IMAGES_DIR

    folder = tmp_path / "kurs"
    folder.mkdir()
    rows = {"cat.png": "eine getigerte Katze", "coffee.png": "eine Tasse Kaffee", "horse.png": "ein Pferd"}
    for name in rows:
        shutil.copy(IMAGES_DIR / name, folder / name)
    (folder / "de.csv").write_text("image,de\n" + "".join(f"{n},{c}\n" for n, c in rows.items()), encoding="utf-8")
    out = tmp_path / "o"
    assert main(["report", "--captions", str(folder / "de.csv"), "--langs", "de", "--model", "demo", "--no-pdf",
                 "--out", str(out)]) == 0
    assert "left out" not in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.html")) == [f"{n}.html" for n in NOTEBOOKS]
    matching = json.loads((out / "01_matching.json").read_text(encoding="utf-8"))
    assert matching["provenance"]["languages"] == ["de"]
    zeroshot = json.loads((out / "04_zeroshot.json").read_text(encoding="utf-8"))["provenance"]
    assert (zeroshot["language"], zeroshot["requested_language"]) == ("en", "de")
    assert zeroshot["language_gaps"] == ["labels", "single", "imagenet7", "imagenet80"]
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (out / "04_zeroshot.html").read_text(encoding="utf-8")))
    from labclip.config import DEFAULT_LABELS, shown_path

    assert (f"The first caption language is German, but the labels ({shown_path(DEFAULT_LABELS)}) have no German column and the "
            "template sets single, imagenet7, imagenet80 have no German version, so zero-shot classification runs "
            "on the labels and templates in English.") in page
    assert "template language: English" in page
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["left_out"] == {}


def test_zeroshot_without_labels_in_the_language_or_english_is_left_out_in_one_line(tmp_path, capsys):
    """Spanish captions and Spanish-only labels: no Spanish templates and no English labels, so 04 is left out
    beside other notebooks (one line says why), and asked for alone it is a one-line error."""
    from labclip.cli import main
    from labclip.config import IMAGES_DIR

    rows = [(IMAGES_DIR / name, caption) for name, caption in (("cat.png", "un gato"), ("coffee.png", "un café"))]
    captions, labels = tmp_path / "leyendas.csv", tmp_path / "etiquetas.csv"
    captions.write_text("image,es\n" + "".join(f"{p},{c}\n" for p, c in rows), encoding="utf-8")
    labels.write_text("image,es\n" + "".join(f"{p},{c.split()[1]}\n" for p, c in rows), encoding="utf-8")
    out = tmp_path / "o"
    base = ["report", "--captions", str(captions), "--labels", str(labels), "--out", str(out), "--no-pdf",
            "--model", "demo", "--langs", "es"]
    why = ("zero-shot classification has nothing to run on: template sets single, imagenet7, imagenet80 have no "
           "'es' version and for English: the labels have no 'en' column")
    assert main([*base, "--notebooks", "04_zeroshot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"labclip: error: 04_zeroshot: {why}"]
    assert main([*base, "--templates", "nosuchset"]) == 2
    assert "unknown template set 'nosuchset'" in capsys.readouterr().err
    assert not out.exists()
    assert main([*base, "--notebooks", "01_matching", "04_zeroshot"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "04_zeroshot" in line] == [f"labclip: 04_zeroshot left out: {why}"]
    assert sorted(p.name for p in out.glob("*.html")) == ["01_matching.html"]
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["left_out"] == {"04_zeroshot": why}
