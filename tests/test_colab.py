"""The notebooks' first cell (Colab): it installs labclip whenever ``import labclip`` does not give the installed
package, and is harmless when run again. Run in a subprocess without site-packages, with the install simulated."""

import json
import subprocess
import sys

import nbformat
import pytest

from labclip.config import NOTEBOOKS_DIR
from labclip.lab.report import NOTEBOOKS, OPTIONAL_NOTEBOOKS

HARNESS = r'''
import json, os, subprocess, sys

site, cell, imported_before = sys.argv[1], open(sys.argv[2], encoding="utf-8").read(), sys.argv[3] == "1"
sys.path.append(site)  # where the simulated pip install puts the package (after the working folder, as on Colab)
calls = []


class Done:
    returncode = 0


def run(cmd, check=False, **kwargs):
    calls.append(" ".join(cmd[:2]) if cmd[0] == "git" else " ".join(cmd[1:4]))
    if "pip" in cmd:
        os.makedirs(os.path.join(site, "labclip"), exist_ok=True)
        with open(os.path.join(site, "labclip", "__init__.py"), "w", encoding="utf-8") as init:
            init.write("match_metrics = 'the installed package'\n")
    return Done()


subprocess.run = run
if imported_before:  # the same kernel ran the cell before and its install was interrupted
    import labclip
exec(compile(cell, "colab-cell", "exec"), {})
from labclip import match_metrics

print(json.dumps({"calls": calls, "match_metrics": match_metrics, "root": os.environ.get("LABCLIP_ROOT")}))
'''


def _cell() -> str:
    cells = {nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4).cells[1].source
             for name in NOTEBOOKS + OPTIONAL_NOTEBOOKS}
    assert len(cells) == 1, "every notebook starts with the same Colab cell"
    return cells.pop()


def _run_cell(tmp_path, site, imported_before: bool = False) -> dict:
    cell = tmp_path / "cell.py"
    cell.write_text(_cell(), encoding="utf-8")
    work = tmp_path / "content"  # Colab's working folder, holding the clone
    proc = subprocess.run([sys.executable, "-S", "-c", HARNESS, str(site), str(cell), "1" if imported_before else "0"],
                          cwd=work, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def clone(tmp_path):
    """A working folder after an interrupted install: the clone is there, nothing is installed."""
    folder = tmp_path / "content" / "labclip"
    (folder / "src" / "labclip").mkdir(parents=True)
    (folder / "src" / "labclip" / "__init__.py").write_text("raise ImportError('not this one')\n")
    (folder / "pyproject.toml").write_text("[project]\nname = 'labclip'\n")
    return folder


@pytest.mark.parametrize("imported_before", [False, True])
def test_an_interrupted_install_is_finished_on_the_next_run(tmp_path, clone, imported_before):
    site = tmp_path / "site"
    site.mkdir()
    result = _run_cell(tmp_path, site, imported_before)
    assert result["calls"] == ["-m pip install"]  # the clone is reused, the package installed
    assert result["match_metrics"] == "the installed package" and result["root"] == str(clone)


def test_nothing_is_installed_again_after_a_restart(tmp_path, clone):
    site = tmp_path / "site"
    (site / "labclip").mkdir(parents=True)
    (site / "labclip" / "__init__.py").write_text("match_metrics = 'the installed package'\n")
    result = _run_cell(tmp_path, site)
    assert result["calls"] == [] and result["match_metrics"] == "the installed package"


def test_a_fresh_runtime_clones_then_installs(tmp_path):
    (tmp_path / "content").mkdir()
    site = tmp_path / "site"
    site.mkdir()
    result = _run_cell(tmp_path, site)
    assert result["calls"] == ["git clone", "-m pip install"]
