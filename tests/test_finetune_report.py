"""The ``08_finetune`` report (HTML only, tiny model) and ``MODEL+finetune:DIR`` in the report runner."""

import html
import json
import re

import pytest

from labclip.lab.report import NOTEBOOKS, OPTIONAL_NOTEBOOKS, build_reports


def _text(page: str) -> str:
    page = re.sub(r"<style.*?</style>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_finetune_report_shows_its_own_run_with_intervals_and_prose(tmp_path, tiny_model_dir):
    assert "08_finetune" in OPTIONAL_NOTEBOOKS and "08_finetune" not in NOTEBOOKS
    out = tmp_path / "out"
    build_reports({"model": str(tiny_model_dir), "languages": ["ru"]}, out, notebooks=["08_finetune"], pdf=False)
    page = (out / "08_finetune.html").read_text(encoding="utf-8")
    text = _text(page)
    result = json.loads((out / "08_finetune.json").read_text(encoding="utf-8"))
    assert "labclip-banner" in page and "UNTRAINED" in text
    for sentence in result["findings"]:
        assert sentence in text
    for row in result["held_out"]["recall"]:
        assert f"{100 * row['recall']:.1f}% [{100 * row['low']:.1f}%–{100 * row['high']:.1f}%]" in text
    for test in result["held_out"]["paired"]:
        assert f"{test['p_value']:.3g}" in text
    assert {"Training curve", "Held-out recall", "Before and after on held-out images"} <= set(
        re.findall(r"<h2>(.*?)</h2>", page))
    assert "<script src=" not in page and str(tiny_model_dir) not in page
    assert " nan" not in text.lower() and "Traceback" not in text


@pytest.fixture(scope="module")
def finetune_dir(tmp_path_factory, tiny_model_dir):
    from labclip.cli import main

    out = tmp_path_factory.mktemp("ftr") / "tuned"
    assert main(["finetune", "data/captions/default.csv", "--lang", "ru", "--model", str(tiny_model_dir),
                 "--out", str(out), "--epochs", "1", "--folds", "2"]) == 0
    return out


def test_report_runner_uses_and_records_model_plus_finetune(tmp_path, tiny_model_dir, finetune_dir):
    out = tmp_path / "out"
    build_reports({"model": f"{tiny_model_dir}+finetune:{finetune_dir}", "languages": ["ru"]}, out,
                  notebooks=["01_matching"], pdf=False)
    text = _text((out / "01_matching.html").read_text(encoding="utf-8"))
    card = json.loads((finetune_dir / "finetune.json").read_text(encoding="utf-8"))
    assert re.search(r"\+ ?finetune:tuned", text) and card["sha256"][:16] in text
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["fallback_reason"] is None
    assert run["parameters"]["model"] == f"{tiny_model_dir.name}+finetune:{finetune_dir.name}"
    assert str(finetune_dir.parent) not in json.dumps(run)
