"""Paths, model names and defaults: the one place they are defined.

In a source checkout (``data/`` and ``pyproject.toml`` beside ``src/``, or ``LABCLIP_ROOT``) the
data, notebooks and reports are the checkout's. An installed wheel carries the default images,
caption sets, labels and notebooks as package data (``labclip/_bundled/``, found with
``importlib.resources``) and writes reports under the working directory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import platformdirs

from .errors import LabclipError

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


def shown_model(name: str, sep: str = "+") -> str:
    """A model name as reports show it: hub ids as given; local folders (``TEXT+IMAGE`` pairs too) and
    the file of a ``MODEL+adapter:PATH`` by :func:`shown_path`, so no machine path is shown.

    Args:
        name: a model spec (hub id, alias, folder, ``A+B`` pair, ``MODEL+adapter:PATH``).
        sep: what joins the parts (reports write ``" + "``).
    """
    model, mark, adapter = str(name).rpartition("+adapter:")
    name, adapter = (model, adapter) if mark and model and adapter else (str(name), None)
    model, mark, tuned = name.rpartition("+finetune:")
    if mark and model and tuned:
        return shown_model(model, sep) + f"{sep}finetune:{shown_path(tuned)}" + (f"{sep}adapter:{shown_path(adapter)}" if adapter else "")
    parts = [name] if exists(name) else name.split("+")
    shown = sep.join(shown_path(p) if p and (Path(p).is_absolute() or exists(p)) else p for p in parts)
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
