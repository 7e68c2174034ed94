"""labclip: reproducible CLIP image–text matching lab reports."""

from importlib.metadata import PackageNotFoundError, version

from .data import load_captions
from .errors import LabclipError
from .metrics import frequent_distractors, match_metrics, similarity, topk_table
from .model import load_model
from .stats import mcnemar, wilson_interval

try:
    __version__ = version("labclip")
except PackageNotFoundError:
    __version__ = "0+unknown"

__all__ = [
    "LabclipError",
    "frequent_distractors",
    "load_captions",
    "load_model",
    "match_metrics",
    "mcnemar",
    "similarity",
    "topk_table",
    "wilson_interval",
]
