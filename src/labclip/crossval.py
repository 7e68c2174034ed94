"""Folds over images and the per-item rows of an out-of-fold evaluation.

Every adapter evaluation scores each image with a model that never saw it: :func:`outer_folds`
splits the images, :func:`group_folds` splits a training set for choosing a hyperparameter, and
:func:`rate_row` and :func:`paired_row` turn per-image hits into table rows with intervals and tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import LabclipError
from .stats import paired_test, wilson_interval

Split = tuple[np.ndarray, np.ndarray]


def group_folds(n: int, groups: np.ndarray, cv: int) -> list[Split]:
    """``GroupKFold`` splits of ``n`` rows (at most ``cv``, at most one per group); rows of a group stay together.

    Raises:
        LabclipError: fewer than 2 groups.
    """
    from sklearn.model_selection import GroupKFold  # scikit-learn imports pandas: only when used

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise LabclipError("choosing alpha by cross-validation needs pairs from at least 2 images or groups; "
                           "pass a fixed alpha")
    return [(np.asarray(tr), np.asarray(te))
            for tr, te in GroupKFold(n_splits=min(cv, n_groups)).split(np.zeros(n), groups=groups)]


def outer_folds(n: int, groups: np.ndarray, folds: int | str, seed: int,
                strata: np.ndarray | None = None) -> list[Split]:
    """``(train, test)`` splits of ``n`` items for scoring every item out of fold.

    ``folds`` is ``"loo"`` (leave one group out) or a number of folds: stratified by ``strata`` when
    every stratum has that many items, shuffled by ``seed``, grouped when items share groups.

    Raises:
        LabclipError: ``folds`` is neither ``"loo"`` nor a number from 2 to the number of groups.
    """
    from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, StratifiedKFold

    n_groups = len(np.unique(groups))
    splitter: Any
    if folds == "loo":
        splitter = LeaveOneGroupOut()
    elif isinstance(folds, int) and 2 <= folds <= n_groups:
        if strata is not None and np.unique(strata, return_counts=True)[1].min() >= folds and n_groups == n:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        elif n_groups == n:
            splitter = KFold(folds, shuffle=True, random_state=seed)
        else:
            splitter = GroupKFold(folds)
    else:
        raise LabclipError(f"folds must be 'loo' or a number from 2 to {n_groups} (the number of images), "
                           f"got {folds!r}")
    y = strata if strata is not None else np.zeros(n)
    grouped = {"groups": groups} if isinstance(splitter, (GroupKFold, LeaveOneGroupOut)) else {}
    return [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(np.zeros((n, 1)), y, **grouped)]


def rate_row(row: dict[str, Any], hits: np.ndarray, name: str) -> dict[str, Any]:
    """``row`` plus ``hits, n``, the rate under ``name`` and its 95% Wilson interval ``low, high``."""
    k, n = int(hits.sum()), len(hits)
    low, high = wilson_interval(k, n)
    return {**row, "hits": k, "n": n, name: k / n, "low": low, "high": high}


def paired_row(row: dict[str, Any], a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> dict[str, Any]:
    """``row`` plus the exact McNemar test of hits ``a`` against ``b``: ``only_{name_a}, only_{name_b}, n, p_value``."""
    test = paired_test(a, b)
    return {**row, f"only_{name_a}": test.only_a, f"only_{name_b}": test.only_b, "n": test.n,
            "p_value": test.p_value}
