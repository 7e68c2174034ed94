"""One way a run opens (``runs.start`` with each module's ``Kind``), and notebooks 05–08 as cells that compute data
and end in what the library returns for display."""

from __future__ import annotations

import ast
import importlib

import pytest

from labclip.config import DEFAULT_CAPTIONS, NOTEBOOKS_DIR
from labclip.errors import LabclipError
from labclip.lab import adapt, cultures, finetune_report, runs, scale

RUN_MODULES = ["scale", "scale_run", "cultures", "adapt", "adapt_present", "finetune_report"]
NOTEBOOKS = ["05_scale", "06_adapt", "07_cultures", "08_finetune"]


def test_no_run_module_has_a_start_of_its_own():
    for name in RUN_MODULES:
        module = importlib.import_module(f"labclip.lab.{name}")
        assert not hasattr(module, "start"), f"labclip.lab.{name}.start: open runs with runs.start(KIND, ...)"
    kinds = {scale.SCALE: "05_scale", cultures.CULTURES: "07_cultures", adapt.TEXT_ADAPTER: "06_adapt",
             finetune_report.FINETUNE: "08_finetune"}
    assert all(isinstance(kind, runs.Kind) and kind.default_for == name for kind, name in kinds.items())


def test_a_run_without_a_precision_takes_its_kinds_default():
    run = runs.start(scale.SCALE, ["demo"], dataset=DEFAULT_CAPTIONS, languages=["en"])
    assert run.model.precision.default and "05_scale" in run.model.precision.reason
    assert "05_scale" in run.provenance()["models"][0]["used"]["precision_reason"]


def test_fine_tuning_checks_its_captions_before_any_model_loads(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(runs, "load_model", no_model)
    monkeypatch.setattr(runs, "check_model", no_model)
    (tmp_path / "c.csv").write_text("image,en\nmissing.png,a cat\n", encoding="utf-8")
    with pytest.raises(LabclipError, match="'ru'"):
        runs.start(finetune_report.FINETUNE, "demo", captions=tmp_path / "c.csv", language="ru")


def _code_cells(name: str) -> list[ast.Module]:
    source = (NOTEBOOKS_DIR / f"{name}.py").read_text(encoding="utf-8")
    cells = [cell for cell in source.split("# %%")[1:] if not cell.startswith((" [markdown]", ' tags=["parameters"]'))]
    return [ast.parse(cell) for cell in cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_cell_computes_and_ends_in_what_it_shows(name):
    cells = _code_cells(name)
    opened = [node for cell in cells for node in ast.walk(cell) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute) and node.func.attr == "start"]
    assert [ast.unparse(call.func) for call in opened] == ["runs.start"]
    for cell in cells:
        assert isinstance(cell.body[-1], ast.Expr) and isinstance(cell.body[-1].value, ast.Call), ast.unparse(cell)
        assert not any(isinstance(node, ast.Name) and node.id == "display" for node in ast.walk(cell))


@pytest.mark.parametrize("name", ["scale", "cultures", "adapt_present", "finetune_report"])
def test_report_sections_are_returned_not_displayed(name):
    tree = ast.parse(importlib.import_module(f"labclip.lab.{name}").__loader__.get_source(  # type: ignore[union-attr]
        f"labclip.lab.{name}"))
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    shown = {"display", "present.section", "present.paragraph", "present.header", "present.published",
             "present.provenance_table", "section", "header", "provenance_table"}
    assert not calls & shown
