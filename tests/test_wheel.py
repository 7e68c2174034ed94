"""The installed wheel works outside the checkout: bundled data, the labclip command, packaged notebooks."""

import importlib.util
import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from labclip.config import CAPTIONS_DIR, IMAGES_DIR, PROJ_ROOT

pytestmark = pytest.mark.wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not installed (pip install -e '.[dev]')")
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(work / "dist")],
                   cwd=PROJ_ROOT, check=True, capture_output=True)
    (wheel,) = (work / "dist").glob("labclip-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The test environment's packages (torch, transformers, ...) are visible behind the venv's own, so nothing
    # is downloaded; its editable labclip is not (a .pth line adds a folder, not the .pth files inside it).
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    (Path(target) / "_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LABCLIP_ROOT")}
    env.update(LABCLIP_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")
    return wheel, venv, elsewhere, env


def _run(installed, *argv):
    _, venv, elsewhere, env = installed
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)


def test_wheel_carries_the_default_data_and_notebooks(installed):
    wheel, *_ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for image in IMAGES_DIR.iterdir():
        assert f"labclip/_bundled/data/images/{image.name}" in names
    for captions in CAPTIONS_DIR.iterdir():
        assert f"labclip/_bundled/data/captions/{captions.name}" in names
    assert "labclip/_bundled/data/labels.csv" in names
    assert {f"labclip/_bundled/notebooks/0{i}" for i in "1234"} <= {n[: len("labclip/_bundled/notebooks/0x")]
                                                                    for n in names}


def test_installed_package_finds_its_bundled_data(installed):
    _, venv, _, _ = installed
    result = _run(installed, "python", "-c", "import json, labclip, labclip.config as c; print(json.dumps("
                  "[labclip.__file__, str(c.DEFAULT_CAPTIONS), c.DEFAULT_CAPTIONS.is_file(), str(c.NOTEBOOKS_DIR), "
                  "c.CHECKOUT is None]))")
    assert result.returncode == 0, result.stderr
    module, captions, exists, notebooks, no_checkout = json.loads(result.stdout)
    assert module.startswith(str(venv)) and captions.startswith(str(venv)) and notebooks.startswith(str(venv))
    assert exists and no_checkout


def test_labclip_match_runs_outside_the_checkout(installed):
    _, _, elsewhere, _ = installed
    result = _run(installed, "labclip", "match", "--model", "demo", "--lang", "ru", "--out", "m.json")
    assert result.returncode == 0, result.stderr
    saved = json.loads((elsewhere / "m.json").read_text(encoding="utf-8"))
    assert saved["n"] == 12 and len(saved["rows"]) == 36 and "untrained" in result.stderr
    assert any("чашк" in row["caption"] for row in saved["rows"])
