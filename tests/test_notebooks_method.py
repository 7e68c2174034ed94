"""Notebooks 01–04 show their method as library calls; each cell's report section is the Output it returns."""

import ast
import re

import pytest

from labclip.config import NOTEBOOKS_DIR
from labclip.lab import experiment, present

METHOD_NOTEBOOKS = ["01_matching", "02_languages", "03_lab_report", "04_zeroshot"]


def _code_cells(name: str) -> list[ast.Module]:
    text = (NOTEBOOKS_DIR / f"{name}.py").read_text(encoding="utf-8")
    cells = re.split(r"^# %%.*$", text, flags=re.M)[1:]
    heads = re.findall(r"^# %%.*$", text, flags=re.M)
    return [ast.parse(body) for head, body in zip(heads, cells) if "[markdown]" not in head]


def _present_calls(node: ast.AST) -> list[str]:
    return [call.func.attr for call in ast.walk(node) if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "present"]


def test_an_output_displays_each_part_as_its_own_html_output(monkeypatch):
    shown = []
    monkeypatch.setattr(present, "display", shown.append)
    out = present.Output("<p>a</p>", None, present.Output("<p>b</p>"), present.note("x <script>y</script>"))
    out._ipython_display_()
    assert [h.data for h in shown] == out.parts and len(shown) == 3
    assert out._repr_html_() == "".join(out.parts) and "<script>" not in out._repr_html_()
    section = present.Section("Fish & <chips>", "*one* <b>two</b>")
    assert len(section.parts) == 1 and "<h2>Fish &amp; &lt;chips&gt;</h2>" in section.parts[0]
    assert "&lt;b&gt;two&lt;/b&gt;" in section.parts[0] and "<em>one</em>" in section.parts[0]


def test_the_report_modules_display_path_is_the_same_section(monkeypatch):
    """``present.section`` (the report modules that display as they go) shows what ``Section`` returns."""
    shown = []
    monkeypatch.setattr(present, "display", shown.append)
    present.section("Heading", "Some *prose*.", "<table><tr><td>1</td></tr></table>", level=3)
    assert [h.data for h in shown] == present.Section("Heading", "Some *prose*.", "<table><tr><td>1</td></tr></table>",
                                                      level=3).parts


@pytest.mark.parametrize("name", METHOD_NOTEBOOKS)
def test_each_section_call_is_the_last_expression_of_its_cell(name):
    """A section a cell builds but does not end with would show nothing: every ``present.`` call is in the
    cell's last statement, and the method cells compute with the run, not inside ``present``."""
    calls = 0
    for cell in _code_cells(name):
        for statement in cell.body[:-1]:
            assert not _present_calls(statement), (name, ast.unparse(statement))
        calls += len(_present_calls(cell.body[-1])) if cell.body else 0
    assert calls >= 3, name


@pytest.mark.parametrize("name", METHOD_NOTEBOOKS)
def test_notebooks_open_their_run_with_the_one_start(name):
    source = (NOTEBOOKS_DIR / f"{name}.py").read_text(encoding="utf-8")
    assert "runs.start(" in source and "experiment.start(" not in source
    assert not hasattr(experiment, "start")  # one start: labclip.lab.runs.start with the run's kind
