"""The report runner with a model + adapter, and the ``06_adapt`` report (HTML only, tiny model)."""

import html
import json
import re

import numpy as np
import pytest
from scipy.stats import binomtest

from labclip import load_model
from labclip.adapter import TextAdapter
from labclip.lab.report import NOTEBOOKS, OPTIONAL_NOTEBOOKS, build_reports


def _text(page: str) -> str:
    page = re.sub(r"<style.*?</style>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory, tiny_model_dir):
    rng = np.random.default_rng(2)
    dim = load_model(tiny_model_dir, cache=False).dim
    adapter = TextAdapter(rng.normal(size=(dim, dim)).astype(np.float32), rng.normal(size=dim).astype(np.float32),
                          {"source_model": str(tiny_model_dir)})
    return adapter.save(tmp_path_factory.mktemp("adapter") / "ru-en.safetensors"), adapter


def test_report_runner_uses_and_records_model_plus_adapter(tmp_path, tiny_model_dir, adapter_file):
    path, adapter = adapter_file
    out = tmp_path / "out"
    build_reports({"model": f"{tiny_model_dir}+adapter:{path}", "languages": ["ru"]}, out,
                  notebooks=["01_matching"], pdf=False)
    page = (out / "01_matching.html").read_text(encoding="utf-8")
    text = _text(page)
    assert re.search(r"\+ ?adapter:ru-en", text) and adapter.sha256 in text
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    # run.json names the model and its adapter as the page does, without machine paths
    assert run["fallback_reason"] is None and run["parameters"]["model"] == f"{tiny_model_dir.name}+adapter:{path.name}"


def test_adapt_report_shows_held_out_numbers_from_its_own_run(tmp_path, tiny_model_dir):
    assert "06_adapt" in OPTIONAL_NOTEBOOKS and "06_adapt" not in NOTEBOOKS
    out = tmp_path / "out"
    build_reports({"model": str(tiny_model_dir)}, out, notebooks=["06_adapt"], pdf=False)
    page = (out / "06_adapt.html").read_text(encoding="utf-8")
    text = _text(page)
    result = json.loads((out / "06_adapt.json").read_text(encoding="utf-8"))
    assert "labclip-banner" in page and "UNTRAINED" in text  # the tiny model is marked untrained
    for row in result["held_out"]["top1"]:
        low, high = binomtest(row["hits"], row["n"]).proportion_ci(method="wilson")
        assert f"{row['hits']}/{row['n']} ({100 * row['hits'] / row['n']:.1f}% [{100 * low:.1f}%, {100 * high:.1f}%])" in text
    for test in result["held_out"]["paired"]:
        assert f"fixed {test['only_after']} image(s) and broke {test['only_before']}" in text
    assert f"alpha {result['adapter_card']['alpha']:g} gives the highest mean cosine" in text
    zero = next(r for r in result["few_shot"]["top1"] if r["method"] == "zero-shot")
    assert f"Zero-shot gets {zero['hits']}/{zero['n']}" in text
    box = text[text.index("Published results (not measured here)"):]
    from labclip import registry

    imagenet = [p for p in registry.PUBLISHED if p.benchmark == "ImageNet"]
    assert {p.value for p in imagenet} == {75.6, 60.3, 62.0} and "Tip-Adapter" in box
    assert all(f"{p.value:.1f}%" in box and p.definition in box and p.source in box for p in imagenet)
    assert " nan" not in text.lower() and "Traceback" not in text
    assert "<script src=" not in page
    from test_scale import bare_percentages

    assert bare_percentages(page) == []  # every accuracy outside the published box carries its interval
    headers = {html.unescape(h).strip() for h in re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", page, flags=re.S)}
    assert {"Direction", "Captions", "Top-1 accuracy", "Method", "Shots per class", "Held out"} <= headers
    assert not headers & {"direction", "method", "shots", "used", "top-1", "95% interval"}  # raw keys, repeated interval
    assert str(tiny_model_dir) not in page  # the requested model by name, not by machine path


def test_adapt_notebook_is_generated_and_current():
    import sys

    import nbformat

    from labclip.config import NOTEBOOKS_DIR, PROJ_ROOT

    sys.path.insert(0, str(PROJ_ROOT / "scripts"))
    import build_notebooks

    committed = nbformat.read(NOTEBOOKS_DIR / "06_adapt.ipynb", as_version=4)
    assert committed == build_notebooks.build("06_adapt"), "run scripts/build_notebooks.py"
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert code[1].metadata.tags == ["parameters"] and not any("def " in c.source for c in code)
    assert "fit_text_adapter(" in "".join(c.source for c in code) and ".transform(" in "".join(c.source for c in code)


@pytest.mark.parametrize("per_class,shots", [(1, (1, 2, 4, 8, 16)), (4, (1, 2, 4, 8)), (12, (1, 2, 4))])
def test_few_shot_section_shows_only_the_shots_the_data_allows(monkeypatch, per_class, shots):
    """With 1 image per class (the default set) no few-shot row and no curve, said up front; with 4 per class some
    training fold lacks 2 of a class, so only the counts every fold has in full are shown and the rest named."""
    from labclip.adapt import evaluate_few_shot
    from labclip.lab import adapt_present
    from labclip.lab.adapt import FewShotRun

    rng = np.random.default_rng(0)
    classes = [f"class{c}" for c in range(6)]
    truth = np.repeat(np.arange(6), per_class)
    text = rng.normal(size=(6, 16))
    images = text[truth] + rng.normal(scale=2.0, size=(len(truth), 16))
    evaluation = evaluate_few_shot(images, truth, text, shots, folds=5, seed=0)
    fewest = min(np.bincount(truth[train], minlength=6).min() for train, _ in evaluation.folds)
    expected = [k for k in shots if k <= fewest]
    assert (expected == []) == (per_class == 1) and (expected == list(shots)) == (per_class == 12)
    run = FewShotRun(model=None, paths=[f"{i}.png" for i in range(len(truth))], classes=classes,
                     evaluation=evaluation, templates="imagenet7", language="en")
    shown = [adapt_present.few_shot(run).data]
    page = "\n".join(shown)
    table = re.findall(r"<tr>\s*<td[^>]*>([^<]*)</td>\s*<td[^>]*>([^<]*)</td>", page)
    assert sorted({int(k) for method, k in table if method != "zero-shot"}) == expected
    assert "Fewest shots used" not in page and not re.search(r"<td[^>]*>0</td>", page)
    assert page.count("data:image/svg+xml") == (1 if len(expected) > 1 else 0)
    intro = _text(shown[0])
    if expected == list(shots):
        assert "You asked for" not in intro
    elif not expected:
        assert "only zero-shot is shown" in intro and "a class has only 1 labelled image" in intro
        assert "best few-shot" not in page
    else:
        assert "You asked for 1, 2, 4 and 8 training images per class" in intro
        assert f"only for {' and '.join(map(str, expected))}" in intro
