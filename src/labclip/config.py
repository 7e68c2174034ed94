"""Paths, model names and defaults: the one place they are defined.

In a source checkout (``data/`` and ``pyproject.toml`` beside ``src/``, or ``LABCLIP_ROOT``) the
data, notebooks and reports are the checkout's. An installed wheel carries the default images,
caption sets, labels and notebooks as package data (``labclip/_bundled/``, found with
``importlib.resources``) and writes reports under the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import platformdirs

from .errors import LabclipError

# Model names are data in the registry; re-exported for code that reads its defaults from here.
from .registry import DEFAULT_MODEL, DEMO_MODEL  # noqa: F401

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = Path(str(files(__package__ or "labclip") / "_bundled"))


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


def exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists; ``False`` for a name no file can have (too long, a NUL byte, a symlink loop)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError, RuntimeError):
        return False


def _absolute(path: str | os.PathLike) -> Path:
    """The absolute path as written, ``..`` folded, symlinks not followed."""
    return Path(os.path.normpath(os.path.abspath(path)))


def _locations(path: str | os.PathLike) -> list[Path]:
    """Where a path is: as written, then with symlinks followed (when that can be worked out)."""
    found = [_absolute(path)]
    try:
        found.append(Path(path).resolve())
    except (OSError, ValueError, RuntimeError):
        pass
    return found


def shown_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """How reports name a file or folder without machine paths.

    Relative to the project root, else to ``base`` (e.g. the caption file's folder), else its name
    alone (a model in a cache folder is named by its folder). A path is taken as written first, so a
    link inside the project to a file elsewhere keeps its project name; the filesystem root is never
    a root to name paths by.
    """
    places = _locations(path)
    for root in (PROJ_ROOT, base):
        if root is None:
            continue
        for anchor in dict.fromkeys(_locations(root)):
            if anchor.parent == anchor:
                continue
            for place in places:
                if place.is_relative_to(anchor):
                    return place.relative_to(anchor).as_posix() or "."
    return places[0].name or places[-1].name


def shown_names(files: Sequence[str | os.PathLike], base: str | os.PathLike | None = None) -> list[str]:
    """The names reports give a set of image files: each path, as written, relative to the deepest folder
    that holds them all (``coffee.png``, ``cats/a.jpg``).

    That folder must lie within one level above ``base`` (the caption file's folder, so ``../images/``
    beside it is fine) and is never the filesystem root; otherwise (absolute paths or links to files
    elsewhere) each file is named by as few of its last path parts as keep the names distinct.
    """
    paths = [_absolute(f) for f in files]
    if not paths:
        return []
    common = Path(os.path.commonpath([str(p.parent) for p in paths]))
    floor = len(_absolute(base).parts) - 1 if base is not None else 2
    if common.parent != common and len(common.parts) >= floor:
        return [p.relative_to(common).as_posix() for p in paths]
    for k in range(1, max(len(p.parts) for p in paths)):
        names = ["/".join(p.parts[max(1, len(p.parts) - k):]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [p.name for p in paths]


def check_model_name(name: str) -> None:
    """A model name that no folder or hub id can have (a NUL byte, a part longer than a file name) is an error.

    Raises:
        LabclipError: naming the start of the name and what is wrong with it.
    """
    shown = repr(name[:40] + ("…" if len(name) > 40 else ""))
    if "\0" in name:
        raise LabclipError(f"model {shown}: a model name cannot hold a NUL byte")
    longest = max((len(part.encode("utf-8", "surrogatepass")) for part in name.replace("+", "/").split("/")), default=0)
    if longest > 255 or len(name) > 4096:
        raise LabclipError(f"model {shown} ({len(name)} characters): too long for a folder or a hub id")
