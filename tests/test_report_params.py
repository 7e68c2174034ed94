"""Every report parameter is declared once (``labclip.lab.report.params.REPORT_PARAMS``): the options of
``labclip report``, the checks of a parameter file, what papermill injects, the notebooks' parameters cells and the
Makefile's variables all follow it."""

import argparse
import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from labclip.cli import report_parser
from labclip.config import NOTEBOOKS_DIR, PROJ_ROOT
from labclip.errors import LabclipError
from labclip.lab.report import NOTEBOOKS, OPTIONAL_NOTEBOOKS, REPORT_PARAMS, Param, ReportParams, read_params

MAKEFILE = (PROJ_ROOT / "Makefile").read_text(encoding="utf-8")
FORWARD = re.compile(r"\$\(if \$\((\w+)\),(--[\w-]+)")
SAMPLE = {"flag": [], "list": ["a", "b"], "count": ["7"], "choice": ["bf16"], "text": ["some text"]}


def test_each_notebook_declares_exactly_its_parameters_with_the_declared_defaults():
    for name in NOTEBOOKS + OPTIONAL_NOTEBOOKS:
        declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"))
        assert set(declared) == {p.name for p in REPORT_PARAMS if name in p.defaults}, name
        for key, info in declared.items():
            if key != "title":
                assert ast.literal_eval(info["default"]) == REPORT_PARAMS.default(name, key), (name, key)
        own = ast.literal_eval(declared["title"]["default"])
        assert f'report="{own}"' in (NOTEBOOKS_DIR / f"{name}.py").read_text(encoding="utf-8"), name
        injected = REPORT_PARAMS.for_notebook(name, dict.fromkeys(REPORT_PARAMS.names, "x"))
        assert set(injected) <= set(declared), name


def test_every_parameter_is_an_option_of_labclip_report_and_arrives_typed():
    argv = [word for p in REPORT_PARAMS if p.flag for word in (p.flag, *SAMPLE[p.kind])]
    given = REPORT_PARAMS.from_args(report_parser().parse_args(argv))
    assert set(given) == set(REPORT_PARAMS.names)
    for p in REPORT_PARAMS:
        if p.flag:
            expected = {"flag": True, "list": ["a", "b"], "count": 7, "choice": "bf16", "text": "some text"}[p.kind]
            assert given[p.name] == expected, p.name
    assert REPORT_PARAMS.check(given) == given
    assert REPORT_PARAMS.from_args(report_parser().parse_args(["--translator", "none"])) == {"translator": ""}
    notebook_only = [p.name for p in REPORT_PARAMS if not p.flag]
    options = {a.dest for a in report_parser()._actions}
    assert notebook_only and not set(notebook_only) & options


@pytest.mark.parametrize("argv", [["--top-k", "0"], ["--batch-size", "x"], ["--precision", "int8"]])
def test_a_bad_option_is_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        report_parser().parse_args(argv)
    assert exit_.value.code == 2 and argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("line", ["strict: maybe", "languages: 3", "top_k: 0", "model: [a, b]", "model: ''",
                                  "compare_models: ['']"])
def test_a_bad_parameter_file_names_the_file_and_the_parameter(tmp_path, line):
    path = tmp_path / "p.yaml"
    path.write_text(line + "\n", encoding="utf-8")
    key = line.split(":")[0]
    with pytest.raises(LabclipError, match=rf"p\.yaml: '{key}': "):
        read_params(path)


def test_a_parameter_file_gets_the_options_types(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("languages: de\ntop_k: '4'\ntitle: 3\ntranslator: ''\nstrict: true\n", encoding="utf-8")
    assert read_params(path) == {"languages": ["de"], "top_k": 4, "title": "3", "translator": "", "strict": True}


def test_paths_are_resolved_for_the_kernels_and_shown_without_the_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    given = {"captions": "c.csv", "model": "my-model", "translator": "Helsinki-NLP/opus-mt-de-en",
             "compare_models": ["openai/clip-vit-base-patch16"], "languages": ["en"]}
    resolved = REPORT_PARAMS.resolved(given)
    assert resolved["captions"] == str(tmp_path / "c.csv") and resolved["model"] == str(tmp_path / "my-model")
    assert {k: resolved[k] for k in ("translator", "compare_models", "languages")} == \
        {k: given[k] for k in ("translator", "compare_models", "languages")}
    shown = REPORT_PARAMS.shown(resolved)
    assert str(tmp_path) not in repr(shown) and shown["captions"].endswith("c.csv") and "my-model" in shown["model"]


def test_the_makefile_forwards_each_parameter_by_its_declared_variable_and_option():
    variables = set(re.findall(r"^([A-Z_]+) \?=", MAKEFILE, flags=re.M))
    declared = REPORT_PARAMS.make_variables()
    assert set(declared) <= variables, set(declared) - variables
    for var, flag in FORWARD.findall(MAKEFILE):
        if var != "PARAMS":
            assert declared.get(var) == flag, (var, flag)
    args = re.search(r"^REPORT_ARGS = (.*?)\n(?=\S)", MAKEFILE, flags=re.M | re.S)[1]
    assert {v: f for v, f in FORWARD.findall(args) if v != "PARAMS"} == REPORT_PARAMS.report_args()
    dataset_args = re.search(r"^DATASET_ARGS = (.*)$", MAKEFILE, flags=re.M)[1]
    assert dict(FORWARD.findall(dataset_args)) == {v: f for v, f in declared.items()
                                                   if v not in REPORT_PARAMS.report_args()}
    for target in ("report", "report-adapt", "report-scale", "report-cultures"):
        recipe = re.search(rf"^{target}:.*?\n((?:\t.*\n)+)", MAKEFILE, flags=re.M)[1]
        assert "$(REPORT_ARGS)" in recipe and ("DATASET" in recipe) == (target in ("report-scale", "report-cultures"))


def test_a_new_parameter_is_one_declaration():
    extra = Param("gamma", "count", {"01_matching": 2}, comment="sharpness", help="the gamma", flag="--gamma",
                  make="GAMMA")
    params = ReportParams((*REPORT_PARAMS.params, extra))
    parser = argparse.ArgumentParser()
    params.add_arguments(parser)
    assert params.from_args(parser.parse_args(["--gamma", "3"])) == {"gamma": 3}
    assert "gamma = 2  # sharpness" in params.cell("01_matching", "T").splitlines()
    assert params.for_notebook("01_matching", {"gamma": 3}) == {"gamma": 3}
    assert params.for_notebook("02_languages", {"gamma": 3}) == {}
    assert params.report_args()["GAMMA"] == "--gamma"
    with pytest.raises(LabclipError, match="p.yaml: 'gamma': must be 1 or more"):
        params.check({"gamma": 0}, "p.yaml")


def test_notebook_sources_are_registered_current_and_lint_clean():
    sys.path.insert(0, str(PROJ_ROOT / "scripts"))
    import build_notebooks

    assert build_notebooks.names() == sorted(NOTEBOOKS + OPTIONAL_NOTEBOOKS)
    for name in build_notebooks.names():
        path = NOTEBOOKS_DIR / f"{name}.py"
        assert build_notebooks.source(name) == path.read_text(encoding="utf-8"), f"run scripts/build_notebooks.py ({name})"
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed")
    sources = [str(p) for p in sorted(Path(NOTEBOOKS_DIR).glob("[0-9][0-9]_*.py"))]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *sources], cwd=PROJ_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
