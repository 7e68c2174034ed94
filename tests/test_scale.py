"""The scale report: benchmark sets, intervals and paired tests recomputed independently, rendered HTML."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from labclip import datasets as ds
from labclip import registry
from labclip.cli import main as cli_main
from labclip.errors import LabclipError
from labclip.lab import narrative, runs, scale
from labclip.precision import DEFAULT_RULE

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


def main(argv: list[str]) -> int:
    return cli_main(["report", *argv])


@pytest.fixture(scope="module")
def xtd10(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    return ds.prepare("xtd10", source=FIXTURES / "xtd10", images=FIXTURES / "coco", root=root).parent


@pytest.fixture(scope="module")
def xm3600(tmp_path_factory) -> Path:
    return ds.prepare("xm3600", source=FIXTURES / "xm3600", root=tmp_path_factory.mktemp("bench")).parent


@pytest.fixture(scope="module")
def run(xtd10):
    r = runs.start(scale.SCALE, ["demo"], dataset=xtd10, languages=["en", "ru", "de"])
    r.evaluate()
    return r


def _ranks(sim: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks by full sorting (ties against the right answer), written apart from labclip.metrics."""
    n = sim.shape[0]
    i2t = np.array([min(1 + np.sum(sim[i] > sim[i, c]) + np.sum((sim[i] == sim[i, c]) & (owner != i))
                        for c in np.flatnonzero(owner == i)) for i in range(n)])
    t2i = np.array([1 + np.sum(sim[:, c] > sim[owner[c], c]) + np.sum(sim[:, c] == sim[owner[c], c]) - 1
                    for c in range(sim.shape[1])])
    return i2t, t2i


def test_intervals_and_p_values_match_independent_recomputation(run):
    model = run.models["demo"]
    images = model.encode_images(run.captions["path"])
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    table = run.table()
    hits = {}
    for lang in run.languages:
        texts = model.encode_texts(run.captions[lang])
        texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
        i2t, t2i = _ranks((images @ texts.T).astype(np.float32), np.arange(len(images)))
        hits[lang] = t2i <= 1
        for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
            for k in scale.KS:
                row = table[(table.language == lang) & (table.direction == direction) & (table.k == k)].iloc[0]
                count = int(np.sum(ranks <= k))
                low, high = proportion_confint(count, len(ranks), alpha=0.05, method="wilson")
                assert row.hits == count and row.n == len(ranks)
                assert row.low == pytest.approx(low, abs=1e-9) and row.high == pytest.approx(high, abs=1e-9)
    tests = run.paired_tests()
    assert set(tests.b) == {"demo · ru · direct", "demo · de · direct"}
    for _, test in tests.iterrows():
        a, b = hits[test.a.split(" · ")[1]], hits[test.b.split(" · ")[1]]
        expected = sm_mcnemar([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], exact=True).pvalue
        assert test.p_value == pytest.approx(expected)
        assert test.significant == (expected < 0.05)
        assert narrative.p_value(expected) in scale.significance(test)


def test_reference_set_is_measured_in_the_run(run):
    assert run.reference_source == "short.csv"
    assert {r.language for r in run.reference} == {"en", "ru"}
    assert all(len(r.ranks.i2t) == 12 for r in run.reference)


def test_several_captions_per_image_use_the_image_hits_for_tests(xm3600):
    r = runs.start(scale.SCALE, ["demo"], dataset=xm3600, languages=["en", "ru"])
    r.evaluate(reference=None)
    every = {res.language: len(res.ranks.t2i) for res in r.results if res.captions == scale.ALL}
    assert max(every.values()) > r.n_images
    test = r.paired_tests().iloc[0]  # on the first caption of each image: one text→image query per image
    assert test.direction == "t2i" and test.n == r.n_images
    table = r.table().query("direction == 't2i' and language == 'en'")
    assert set(table.query("captions == 'all'").method) == {"cluster bootstrap"}
    assert set(table.query("captions == 'first'").method) == {"wilson"}


def test_xm3600_is_scored_with_clip_benchmarks_first_caption_and_all_captions_labelled(xm3600):
    """CLIP_benchmark's crossmodal3600.py keeps captions[0] of each image; the all-captions figures come beside,
    labelled. Both recomputed here from the published file's records."""
    rows = [json.loads(line) for line in (FIXTURES / "xm3600" / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    r = runs.start(scale.SCALE, ["demo"], dataset=xm3600, languages=["en", "fil"])
    r.evaluate(reference=None)
    model = r.models["demo"]
    images = model.encode_images(r.captions["path"])
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    table = r.table()
    for lang in ("en", "fil"):
        first = [row[lang]["caption"][0] for row in rows]
        every = [c for row in rows for c in row[lang]["caption"]]
        owner = np.repeat(np.arange(len(rows)), [len(row[lang]["caption"]) for row in rows])
        for definition, texts, own in (("first", first, np.arange(len(rows))), ("all", every, owner)):
            emb = model.encode_texts(texts)
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            i2t, t2i = _ranks((images @ emb.T).astype(np.float32), own)
            for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
                row = table.query(f"language == '{lang}' and captions == '{definition}' and direction == '{direction}'"
                                  " and k == 1").iloc[0]
                assert (row.hits, row.n) == (int(np.sum(ranks <= 1)), len(ranks)), (lang, definition, direction)
    assert len(table.query("language == 'en' and captions == 'all' and direction == 't2i'")) == len(scale.KS)


def test_results_table_says_which_captions_each_figure_counts(xm3600):
    r = runs.start(scale.SCALE, ["demo"], dataset=xm3600, languages=["en"])
    r.evaluate(reference=None)
    shown = [scale.results_section(r)]
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", "".join(str(getattr(x, "data", x)) for x in shown)))
    assert ("&quot;First per image&quot; is CLIP_benchmark's definition, the one published figures use" in page
            and "(English has several per image)" in page)
    cells = re.findall(r">([^<>]*)</t[hd]>", "".join(str(getattr(x, "data", x)) for x in shown))
    assert cells.count("Captions") == 2 and cells.count("first per image") == 2 and cells.count("all") == 2
    shown = [scale.published(r)]
    box = "".join(str(getattr(x, "data", x)) for x in shown)
    assert "from the first caption of each image" in box
    rows = [p for p in registry.PUBLISHED if p.language == "en" and p.direction in ("t2i", "i2t")]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", box)
    assert rows and cells.count("first per image") == sum(p.definition == registry.FIRST_CAPTION for p in rows)
    assert box.count("<tr>") == len(rows) + 1 and all(f"{p.value:.1f}%" in cells for p in rows)
    assert all(p.source in [html.unescape(c) for c in cells] for p in rows)


def test_hardest_subset_above_the_limit(run):
    ranks = np.array([1, 7, 3, 7, 2])
    assert scale.hardest(ranks, 3).tolist() == [1, 3, 2]
    heat = run.heat
    sim, owner, captions, i2t = heat.sim, heat.owner, heat.captions, heat.ranks
    fig, note = scale.heatmap_figure(sim, owner, i2t, run.captions["image"], captions, limit=2)
    assert "too many" in note and len(fig.axes[0].get_yticklabels()) == min(scale.HARDEST, 2)
    fig, note = scale.heatmap_figure(sim, owner, i2t, run.captions["image"], captions)
    assert note.startswith("All 3 images") and len(fig.axes[0].get_yticklabels()) == 3


def test_unknown_dataset_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(LabclipError, match="neither a benchmark"):
        scale.resolve_dataset(tmp_path / "nothing")
    assert main(["--dataset", str(tmp_path / "nothing"), "--model", "demo", "--no-pdf",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labclip: error:")
    assert not (tmp_path / "o").exists()


class _Page(HTMLParser):
    """Visible text of a page outside the published-results box, with table cells of skipped columns left out."""

    def __init__(self, skip_columns: set[str]):
        super().__init__()
        self.skip_columns = {c.lower() for c in skip_columns}
        self.box = self.hidden = 0
        self.text: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] = []
        self._header: list[str] = []
        self._column = 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("style", "script")
        if tag == "div" and (self.box or ("class", "labclip-published") in attrs):
            self.box += 1
        if tag == "table":
            self._header = []
        if tag == "tr":
            self._row, self._column = [], 0
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        self.hidden -= tag in ("style", "script")
        if tag == "div" and self.box:
            self.box -= 1
        if tag in ("td", "th") and self._cell is not None:
            cell = " ".join("".join(self._cell).split())
            column = self._header[self._column] if self._column < len(self._header) else ""
            self._row.append(cell)
            self._column += 1
            self._cell = None
            if column.lower() not in self.skip_columns and not self.box:
                self.cells.append(cell)
                self.text.append(cell)
        if tag == "tr" and not self._header:
            self._header = list(self._row)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif not self.box and not self.hidden:
            self.text.append(data)


PERCENT = re.compile(r"\d+(?:\.\d+)?%")
WITH_INTERVAL = re.compile(r"\d+(?:\.\d+)?% \[\d+(?:\.\d+)?%, \d+(?:\.\d+)?%\]")
# Percentages that are not accuracies: confidence and significance levels, the seed report's quoted
# "233% improvement" and relative differences between two accuracies.
NOT_ACCURACIES = re.compile(r"95% (?:interval|Wilson)|(?:the|at|<) 5%|\"233% improvement\"|relative difference [+-]?\d+%")
# An interval on its own (a "95% interval" column beside the figure).
INTERVAL_RANGE = re.compile(r"\d+(?:\.\d+)?%–\d+(?:\.\d+)?%")


def bare_percentages(page: str, skip_columns: set[str] = frozenset()) -> list[str]:
    """Percentages on a rendered page that carry no interval (outside the published box and skipped columns)."""
    parsed = _Page(set(skip_columns))
    parsed.feed(page)
    text = INTERVAL_RANGE.sub("", WITH_INTERVAL.sub("", " ".join(parsed.text)))
    return PERCENT.findall(NOT_ACCURACIES.sub("", text))


def interval_cells(page: str) -> set[str]:
    parsed = _Page(set())
    parsed.feed(page)
    return {c for c in parsed.cells if WITH_INTERVAL.fullmatch(c)}


def test_scale_report_renders_offline_from_the_fixture_set(xtd10, tmp_path):
    out = tmp_path / "reports"
    assert main(["--dataset", str(xtd10), "--model", "demo", "--langs", "en", "ru", "--no-pdf",
                 "--out", str(out)]) == 0
    page = (out / "05_scale.html").read_text(encoding="utf-8")
    record = json.loads((out / "05_scale.json").read_text(encoding="utf-8"))
    assert not re.search(r"<script[^>]*\bsrc=", page) and "/work/" not in page and str(Path.home()) not in page
    first_page = page[: page.index("Recall@1/5/10 with 95% intervals")]
    assert "UNTRAINED DEMO MODEL" in first_page and "Noncommercial research use only" in first_page
    assert "Published results (not measured here)" in page and "54.0%" in page and "50.4%" in page
    assert bare_percentages(page) == []
    shown = interval_cells(page)
    for row in record["results"]:
        assert f"{row['recall']:.1%} [{row['low']:.1%}, {row['high']:.1%}]" in shown
        low, high = proportion_confint(row["hits"], row["n"], alpha=0.05, method="wilson")
        assert (row["low"], row["high"]) == pytest.approx((low, high))
    test = record["paired_tests"][0]
    expected = sm_mcnemar([[0, test["only_a"]], [test["only_b"], 0]], exact=True).pvalue
    assert test["p_value"] == pytest.approx(expected)
    assert narrative.p_value(expected) in page
    assert record["provenance"]["models"][0]["requested"] == "demo"
    assert record["provenance"]["benchmark"]["noncommercial"] is True
    used = record["provenance"]["model"]  # bulk work: auto by default, and what it resolved to (pinned in tests)
    assert (used["precision_requested"], used["precision"]) == ("auto", "fp32") and "auto" in used["precision_reason"]
    assert used["precision_default"] is True  # the default, with the rule and what auto resolved to
    assert used["precision_reason"] == f"default for 05_scale: {DEFAULT_RULE}; auto pinned to fp32 by LABCLIP_AUTO_PRECISION"
    assert f"(auto → fp32: {used['precision_reason']})" in page
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["precision"] == {"05_scale": {"requested": "auto", "used": "fp32", "reason": used["precision_reason"],
                                             "default": True}}


def test_scale_notebook_is_generated_thin_and_not_in_the_default_report():
    import sys

    import nbformat

    from labclip.config import NOTEBOOKS_DIR, PROJ_ROOT
    from labclip.lab.report import NOTEBOOKS, SCALE_NOTEBOOK

    sys.path.insert(0, str(PROJ_ROOT / "scripts"))
    import build_notebooks

    committed = nbformat.read(NOTEBOOKS_DIR / f"{SCALE_NOTEBOOK}.ipynb", as_version=4)
    assert committed == build_notebooks.build(SCALE_NOTEBOOK), "run scripts/build_notebooks.py"
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert code[1].metadata.tags == ["parameters"] and not any("def " in c.source for c in code)
    assert SCALE_NOTEBOOK not in NOTEBOOKS


def test_runner_checks_images_once_and_notebooks_can_skip_it(tmp_path):
    from labclip.lab import runs
    from labclip.lab.experiment import MATCHING

    (tmp_path / "a.png").write_bytes(b"not an image")
    (tmp_path / "c.csv").write_text("image,en\na.png,a cat\n", encoding="utf-8")
    with pytest.raises(LabclipError, match="a.png"):
        runs.start(MATCHING, "demo", captions=tmp_path / "c.csv", image_dir=tmp_path, default_for="01_matching")
    exp = runs.start(MATCHING, "demo", captions=tmp_path / "c.csv", image_dir=tmp_path, check_images=False,
                     default_for="01_matching")
    assert exp.image_names == ["a.png"]


def test_runner_decodes_images_once_then_tells_each_notebook_to_skip(tmp_path, monkeypatch):
    import papermill

    from labclip.lab import report

    checks, injected = [], []
    real = report.inputs.load_captions

    def counting(*args, **kwargs):
        checks.append(kwargs.get("check_images", True))
        return real(*args, **kwargs)

    class Stop(Exception):
        pass

    def execute(source, target, parameters, **kwargs):
        injected.append(parameters)
        raise Stop

    monkeypatch.setattr(report.inputs, "load_captions", counting)
    monkeypatch.setattr(papermill, "execute_notebook", execute)
    with pytest.raises(LabclipError, match="Stop"):
        report.build_reports({"model": "demo"}, tmp_path / "out", ["01_matching"], pdf=False)
    assert checks == [True] and injected[0]["check_images"] is False


def test_summary_names_each_significant_difference_and_counts_the_rest():
    import pandas as pd

    from labclip import stats

    e = stats.proportion([True, False, True])
    rows = [{"factor": "language", "a": "m · en · direct", "b": f"m · {lang} · direct", "direction": "t2i", "k": 1,
             "recall_a": e, "recall_b": e, "only_a": a, "only_b": b, "n": 40, "p_value": p, "significant": p < 0.05}
            for lang, a, b, p in (("ru", 12, 1, 0.0034), ("de", 3, 2, 1.0), ("fr", 5, 1, 0.22))]
    text = scale.summary_text(SimpleRun(), pd.DataFrame(rows))
    assert "Languages: 1 of 3 differences is significant at 5%; the other 2 are not (smallest p = 0.22)" in text
    assert "m · en · direct vs m · ru · direct" in text and "p = 0.0034" in text and "m · de" not in text


class SimpleRun:
    reference: list = []


def test_scale_pages_show_no_machine_paths(xtd10, tiny_model_dir):
    r = runs.start(scale.SCALE, ["demo", str(tiny_model_dir)], dataset=xtd10, languages=["en", "ru"])
    r.evaluate(reference=None)
    tests = r.paired_tests()
    record = scale.save(r, None)
    shown = [scale.results_section(r), scale.tests_section(r, tests), scale.tests_summary(r, tests),
             scale.recall_section(scale.recall_figure(r)), scale.heatmap(r), scale.title(r, "t"),
             scale.provenance(r, record)]
    page = "".join(obj.data for obj in shown)
    assert str(tiny_model_dir) not in page and str(tiny_model_dir.parent) not in page
    assert tiny_model_dir.name in page and "Only first right" in page
    assert not any(str(tiny_model_dir) in stage for stage in record["provenance"]["timings_s"])


def test_scale_languages_need_not_be_in_the_default_caption_set(xtd10, tmp_path):
    """`make report-scale DATASET=xtd10 LANGS="en de"`: German is in the benchmark, not in data/captions/default.csv."""
    from labclip.lab.report import SCALE_NOTEBOOK, check_inputs

    check_inputs({"dataset": str(xtd10), "languages": ["en", "de"]}, tmp_path / "out", [SCALE_NOTEBOOK], pdf=False)
    with pytest.raises(LabclipError, match="'de'"):
        check_inputs({"languages": ["en", "de"]}, tmp_path / "out", ["01_matching"], pdf=False)


def test_saved_json_says_which_captions_each_row_counts(xm3600, tmp_path):
    r = runs.start(scale.SCALE, ["demo"], dataset=xm3600, languages=["ru"])
    r.evaluate(reference=None)
    scale.save(r, tmp_path)
    saved = json.loads((tmp_path / "05_scale.json").read_text(encoding="utf-8"))
    assert {row["captions"] for row in saved["results"]} == {"first", "all"}
    assert "CLIP_benchmark" in saved["captions_counted"]["first"]
