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
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
REPORTS_DIR = PROJ_ROOT / "reports"
ASSETS_DIR = PACKAGE_DIR / "assets"
CLIP_BPE_PATH = ASSETS_DIR / "bpe_simple_vocab_16e6.txt.gz"

REPO_URL = "https://github.com/labclip/labclip"

# Model names are data in the registry; re-exported here for code that reads its defaults from config.
from .registry import ALIASES as MODEL_ALIASES  # noqa: E402,F401
from .registry import DEFAULT_MODEL, DEMO_MODEL  # noqa: E402,F401

CONTEXT_LENGTH = 77


def cache_dir() -> Path:
    """labclip's own cache (demo model, embeddings); ``LABCLIP_CACHE`` overrides it."""
    override = os.environ.get("LABCLIP_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("labclip"))
