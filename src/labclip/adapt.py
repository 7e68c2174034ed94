"""The old import path of the adapter code, for the lab layer, the command line and the 06_adapt notebook.

The code lives in :mod:`labclip.textmap` (the ridge text map and its evaluation), :mod:`labclip.fewshot`
(linear probe, Tip-Adapter), :mod:`labclip.crossval` (folds) and :mod:`labclip.parallel` (parallel text).
"""

from .adapter import TextAdapter
from .fewshot import FewShotEvaluation, evaluate_few_shot
from .parallel import ParallelText, load_parallel_dataset, read_parallel
from .textmap import AdapterEvaluation, evaluate_text_adapter, fit_text_adapter

__all__ = [
    "AdapterEvaluation",
    "FewShotEvaluation",
    "ParallelText",
    "TextAdapter",
    "evaluate_few_shot",
    "evaluate_text_adapter",
    "fit_text_adapter",
    "load_parallel_dataset",
    "read_parallel",
]
