"""Paths, model names and defaults: the one place they are defined."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout holds data/ beside src/; an installed copy (e.g. in Colab) is pointed at its
# checkout with LABCLIP_ROOT.
PROJ_ROOT = Path(os.environ.get("LABCLIP_ROOT") or PACKAGE_DIR.parents[1]).resolve()
DATA_DIR = PROJ_ROOT / "data"
IMAGES_DIR = DATA_DIR / "images"
CAPTIONS_DIR = DATA_DIR / "captions"
DEFAULT_CAPTIONS = CAPTIONS_DIR / "default.csv"
DEFAULT_LABELS = DATA_DIR / "labels.csv"
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
REPORTS_DIR = PROJ_ROOT / "reports"
ASSETS_DIR = PACKAGE_DIR / "assets"
CLIP_BPE_PATH = ASSETS_DIR / "bpe_simple_vocab_16e6.txt.gz"

REPO_URL = "https://github.com/labclip/labclip"

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEMO_MODEL = "demo"

MODEL_ALIASES: dict[str, str] = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
    "ViT-L/14@336px": "openai/clip-vit-large-patch14-336",
}

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
