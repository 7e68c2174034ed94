"""Paths, model names and defaults: the one place they are defined.

In a source checkout (``data/`` and ``pyproject.toml`` beside ``src/``, or ``LABCLIP_ROOT``) the
data, notebooks and reports are the checkout's. An installed wheel carries the default images,
caption sets, labels and notebooks as package data (``labclip/_bundled/``, found with
``importlib.resources``) and writes reports under the working directory.
"""

from __future__ import annotations

import hashlib
import os
from importlib.resources import files
from pathlib import Path

import platformdirs

# Model names are data in the registry; re-exported for code that reads its defaults from here.
from .registry import ALIASES as MODEL_ALIASES  # noqa: F401
from .registry import DEFAULT_MODEL, DEMO_MODEL  # noqa: F401

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = Path(os.fspath(files(__package__ or "labclip") / "_bundled"))


def _checkout() -> Path | None:
    """The source checkout this package runs from, if any."""
    if os.environ.get("LABCLIP_ROOT"):
        return Path(os.environ["LABCLIP_ROOT"]).resolve()
    root = PACKAGE_DIR.parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "data" / "captions").is_dir() else None


CHECKOUT = _checkout()
PROJ_ROOT = CHECKOUT or Path.cwd()
DATA_DIR = CHECKOUT / "data" if CHECKOUT else BUNDLED_DIR / "data"
IMAGES_DIR = DATA_DIR / "images"
CAPTIONS_DIR = DATA_DIR / "captions"
DEFAULT_CAPTIONS = CAPTIONS_DIR / "default.csv"
DEFAULT_LABELS = DATA_DIR / "labels.csv"
NOTEBOOKS_DIR = CHECKOUT / "notebooks" if CHECKOUT else BUNDLED_DIR / "notebooks"
REPORTS_DIR = PROJ_ROOT / "reports"
ASSETS_DIR = PACKAGE_DIR / "assets"
CLIP_BPE_PATH = ASSETS_DIR / "bpe_simple_vocab_16e6.txt.gz"

REPO_URL = "https://github.com/labclip/labclip"

CONTEXT_LENGTH = 77


def cache_dir() -> Path:
    """labclip's own cache (demo model, embeddings); ``LABCLIP_CACHE`` overrides it."""
    override = os.environ.get("LABCLIP_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("labclip"))


def shown_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """How reports name a file or folder without machine paths.

    Relative to the project root, else to ``base`` (e.g. the caption file's folder), else its name
    alone (a model in a cache folder is named by its folder).
    """
    resolved = Path(path).resolve()
    for root in (PROJ_ROOT, base):
        if root is not None and resolved.is_relative_to(Path(root).resolve()):
            return resolved.relative_to(Path(root).resolve()).as_posix() or "."
    return resolved.name


def shown_model(name: str, sep: str = "+") -> str:
    """A model name as reports show it: hub ids as given; local folders (``TEXT+IMAGE`` pairs too) and
    the file of a ``MODEL+adapter:PATH`` by :func:`shown_path`, so no machine path is shown.

    Args:
        name: a model spec (hub id, alias, folder, ``A+B`` pair, ``MODEL+adapter:PATH``).
        sep: what joins the parts (reports write ``" + "``).
    """
    model, mark, adapter = str(name).rpartition("+adapter:")
    name, adapter = (model, adapter) if mark and model and adapter else (str(name), None)
    parts = [name] if Path(name).exists() else name.split("+")
    shown = sep.join(shown_path(p) if p and (Path(p).is_absolute() or Path(p).exists()) else p for p in parts)
    return shown if adapter is None else f"{shown}{sep}adapter:{shown_path(adapter)}"


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """12 hex digits that change with the folder's location and with any of its files' size or mtime, so
    two folders of the same name (or a model retrained in place) never share a revision."""
    folder = Path(folder)
    digest = hashlib.sha256(str(folder.resolve()).encode("utf-8"))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def shown_revision(revision: str | None) -> str | None:
    """A revision as every report and output file shows it: a hub commit as it is; ``local:<folder>`` as
    ``local:<name>@<fingerprint>`` (the folder named as :func:`shown_model` does, plus
    :func:`folder_fingerprint`), or ``local:<name>`` once the folder is gone."""
    if revision and revision.startswith("local:"):
        folder = revision.removeprefix("local:")
        shown = "local:" + shown_model(folder)
        return f"{shown}@{folder_fingerprint(folder)}" if Path(folder).is_dir() else shown
    return revision
