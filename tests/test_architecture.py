"""The import rules of ARCHITECTURE.md, checked on the source: the core never reaches up into the lab
layer or display libraries, data flows one way, and production code never imports the test helpers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "labclip"
DISPLAY = {"pandas", "matplotlib", "seaborn", "IPython", "nbconvert", "nbformat", "papermill"}

# Each core module may import only from earlier layers (captions + images → encoder → cached embeddings →
# similarity → metrics); labclip.lab sits on top of the whole core, the command line on top of everything.
CORE_LAYERS = [
    {"errors", "atomic", "registry"},
    {"config"},
    {"images", "text", "hub", "cache", "demo", "stats", "precision", "shards"},
    {"spec"},
    {"adapter", "data", "multilingual", "labels", "bulk"},
    {"finetune_file"},
    {"encoders"},
    {"model"},
    {"metrics", "crossval"},
    {"zeroshot", "translate", "datasets", "textmap", "fewshot", "parallel", "cultures", "finetune", "embed_ray"},
    {"adapt", "embed"},
    {"index"},
]
LAB_LAYERS = [{"tables", "provenance", "wording", "plotstyle"}, {"runs", "results"}, {"experiment", "scale_run"},
              {"compare", "adapt", "finetune"}, {"narrative", "plots", "scale_narrative"}, {"markup"}, {"present"},
              {"scale", "adapt_present", "finetune_report"}, {"cultures"}, {"report.params"}, {"report.publish"}, {"report.render"},
              {"report.execute"}, {"report.inputs"}, {"report.runner", "report", "reproduce"}]
PACKAGES = {"labclip.lab.report"}  # a package's __init__ only re-exports its modules
# The command line (labclip.cli.*, then the package and ``python -m``): every module in cli/commands/ is a command.
FRONT = [{"options", "inputs", "console", "output"}, {"loading"}, {"shardsearch", "watch"}, {"commands"}, {"cli"},
         {"__main__"}]
CORE = set().union(*CORE_LAYERS)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(["labclip", *(p for p in parts if p != "__init__")])


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (anywhere in it), as ``labclip.x`` or a top-level third-party name."""
    package = ["labclip", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module is None or module in ("labclip", "labclip.lab"):
                found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((module, node.lineno))
    return found


def _layer(module: str) -> tuple[int, int]:
    """(tier, layer): tier 0 core, 1 lab, 2 front end; (3, 0) for a module not placed yet."""
    short = module.removeprefix("labclip.lab.") if module.startswith("labclip.lab.") else module.split(".")[-1]
    if module in ("labclip.cli", "labclip.__main__") or module.startswith("labclip.cli."):
        part = module.split(".")[2 if module.startswith("labclip.cli.") else 1]
        return next(((2, i) for i, layer in enumerate(FRONT) if part in layer), (3, 0))
    layers = LAB_LAYERS if module.startswith("labclip.lab.") else CORE_LAYERS
    tier = 1 if layers is LAB_LAYERS else 0
    return next(((tier, i) for i, layer in enumerate(layers) if short in layer), (3, 0))


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and p.stem != "testing")


def test_every_module_has_a_place():
    placed = {_name(p) for p in SOURCES if not _name(p).startswith("labclip.cli.commands.")}
    expected = ({f"labclip.{m}" for m in CORE} | {f"labclip.lab.{m}" for m in set().union(*LAB_LAYERS)}
                | {f"labclip.cli.{m}" for m in set().union(*FRONT[:3])} | {"labclip.__main__", "labclip.cli.__main__"})
    assert placed == expected - PACKAGES, "add new modules to the layers here and in ARCHITECTURE.md"


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_imports_point_down_the_layers(path):
    me = _layer(_name(path))
    for module, line in _imports(path):
        if not module.startswith("labclip.") or module in ("labclip.__version__",):
            continue
        assert module != "labclip.testing", f"{_name(path)}:{line} imports the test helpers"
        them = _layer(module)
        assert them < me, f"{_name(path)}:{line} imports {module}, which sits above or beside it"


@pytest.mark.parametrize("path", [p for p in SOURCES if _layer(_name(p))[0] == 0], ids=_name)
def test_core_imports_no_display_library(path):
    for module, line in _imports(path):
        assert module.split(".")[0] not in DISPLAY, f"{_name(path)}:{line} imports {module}"


def test_package_init_exports_only_the_core():
    init = PACKAGE / "__init__.py"
    for module, line in _imports(init):
        if module.startswith("labclip."):
            assert _layer(module)[0] == 0, f"labclip/__init__.py:{line} imports {module}"


def test_importing_the_core_loads_no_display_library():
    modules = ["labclip", *sorted(f"labclip.{m}" for m in CORE)]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(set({sorted(DISPLAY)!r}) & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_api_is_small():
    import labclip

    assert 5 <= len(labclip.__all__) <= 8
    assert {"load_model", "load_captions", "similarity", "match_metrics"} <= set(labclip.__all__)
