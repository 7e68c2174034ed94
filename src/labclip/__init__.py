"""labclip: reproducible CLIP image–text matching lab reports.

The method in five names::

    model = load_model("ViT-B/32")                    # or "demo", a hub id, a local folder
    captions = load_captions("data/captions/default.csv")
    sim = similarity(model.encode_images(captions["path"]), model.encode_texts(captions["en"]))
    match_metrics(sim).i2t.acc1                        # image → text top-1 accuracy

``available_models()`` lists the registry; ``wilson_interval`` and ``mcnemar`` give the
uncertainty of a figure and a paired comparison; everything else lives in submodules (``labclip.lab``
for experiments, tables, figures and reports).
"""

from importlib.metadata import PackageNotFoundError, version

from .data import load_captions
from .errors import LabclipError
from .metrics import match_metrics, similarity
from .model import load_model
from .registry import available_models
from .stats import mcnemar, wilson_interval

try:
    __version__ = version("labclip")
except PackageNotFoundError:
    __version__ = "0+unknown"

__all__ = [
    "LabclipError",
    "available_models",
    "load_captions",
    "load_model",
    "match_metrics",
    "mcnemar",
    "similarity",
    "wilson_interval",
]
