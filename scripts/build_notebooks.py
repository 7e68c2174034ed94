"""Build notebooks/NN_name.ipynb (committed for Colab) from the jupytext percent sources notebooks/NN_name.py.

Each source's parameters cell is generated from ``labclip.lab.report.params.REPORT_PARAMS`` (rewritten in the
source too), with the notebook's own title (the ``report="..."`` of its title call) as ``title``; the Colab cell
goes first among the code cells. Run it after editing a source or a parameter; a test checks both are current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext  # type: ignore[import-untyped]
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from labclip.config import REPO_URL  # noqa: E402
from labclip.lab.report.params import REPORT_PARAMS  # noqa: E402

SOURCES = ROOT / "notebooks"
PARAMETERS_CELL = re.compile(r'(# %% tags=\["parameters"\]\n)(.*?)(?=\n\n# %%|\Z)', flags=re.S)
OWN_TITLE = re.compile(r'report="([^"]+)"')

COLAB = f'''# Colab: install labclip (and fetch its data) unless `import labclip` gives the installed package; elsewhere
# this does nothing. Safe to run again, after a restart or an interrupted install.
import importlib, os, subprocess, sys
try:
    import labclip  # a clone folder named labclip/ imports as an empty namespace package: no file, no API
    installed = getattr(labclip, "__file__", None) is not None and hasattr(labclip, "match_metrics")
except Exception:  # not installed, or an install that broke half-way
    installed = False
if not installed:
    if not os.path.isfile("labclip/pyproject.toml"):
        subprocess.run(["git", "clone", "--depth=1", "{REPO_URL}", "labclip"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./labclip[report]"], check=True)
    for name in [m for m in sys.modules if m == "labclip" or m.startswith("labclip.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    import labclip
if os.path.isfile("labclip/pyproject.toml"):
    os.environ["LABCLIP_ROOT"] = os.path.abspath("labclip")'''


def names() -> list[str]:
    """Every notebook with a source: ``notebooks/NN_name.py``."""
    return sorted(p.stem for p in SOURCES.glob("[0-9][0-9]_*.py"))


def source(name: str) -> str:
    """The jupytext source of ``name`` with its parameters cell generated from ``REPORT_PARAMS``."""
    text = (SOURCES / f"{name}.py").read_text(encoding="utf-8")
    own = OWN_TITLE.search(text)
    if own is None or not PARAMETERS_CELL.search(text):
        raise SystemExit(f"notebooks/{name}.py needs a '# %% tags=[\"parameters\"]' cell and a title call with "
                         'report="<its own title>"')
    return PARAMETERS_CELL.sub(lambda m: m[1] + REPORT_PARAMS.cell(name, own[1]), text, count=1)


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as committed: intro, Colab cell, parameters, then the source's cells; no outputs."""
    read = jupytext.reads(source(name), fmt="py:percent")
    cells = []
    for cell in read.cells:
        meta = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        new = new_markdown_cell if cell.cell_type == "markdown" else new_code_cell
        cells.append(new(cell.source, metadata=meta))
    first_code = next(i for i, cell in enumerate(cells) if cell.cell_type == "code")
    cells.insert(first_code, new_code_cell(COLAB, metadata={"tags": ["remove-cell"]}))
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    })
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name}-{i}"
    return nb


def main() -> None:
    for name in names():
        path = SOURCES / f"{name}.py"
        text = source(name)
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            print(f"notebooks/{name}.py (parameters cell)")
        nbformat.write(build(name), SOURCES / f"{name}.ipynb")
        print(f"notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
