"""Intervals and p-values in the lab prose equal an independent recomputation from the run's similarities."""

from __future__ import annotations

import re

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from labclip.lab import experiment, narrative

SHARE = re.compile(r"(\d+)/(\d+) \((\d+\.\d)% \[(\d+\.\d)%, (\d+\.\d)%\]\)")


@pytest.fixture(scope="module")
def exp(tiny_model_dir):
    return experiment.start(str(tiny_model_dir), languages=["en", "ru"])


def _top1_hits(sim: np.ndarray) -> np.ndarray:
    """Image i is right when its own caption beats every other caption strictly (a tie is a miss)."""
    wrong = np.where(np.eye(len(sim), dtype=bool), -np.inf, sim)
    return np.diag(sim) > wrong.max(axis=1)


def test_shares_in_prose_are_wilson_intervals_of_the_hits(exp):
    text = narrative.results(exp.matching("en")) + narrative.abstract(exp, ["en", "ru"])
    found = SHARE.findall(text)
    assert len(found) >= 4
    for hits, n, value, low, high in found:
        lo, hi = proportion_confint(int(hits), int(n), alpha=0.05, method="wilson")
        assert (float(value), float(low), float(high)) == pytest.approx(
            (100 * int(hits) / int(n), 100 * lo, 100 * hi), abs=0.051)
    sim = exp.matching("en").sim
    assert f"{int(_top1_hits(sim).sum())}/{len(sim)} (" in narrative.results(exp.matching("en"))


def test_discussion_reports_the_exact_mcnemar_test_of_the_two_languages(exp):
    a, b = (_top1_hits(exp.matching(lang).sim) for lang in ("en", "ru"))
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    p = sm_mcnemar(table, exact=True).pvalue
    text = narrative.discussion(exp, ["en", "ru"])
    assert f"{int(np.sum(a & ~b))} are right only with English captions and {int(np.sum(~a & b))} only with " \
           "Russian captions" in text
    assert narrative.p_value(p) in text
    assert ("is significant at the 5% level" in text) == (p < 0.05)
    assert ("is not significant at the 5% level" in text) == (p >= 0.05)


def test_strategy_comparison_prose_tests_each_language_against_english(exp, tiny_model_dir):
    from labclip.lab import compare

    table = compare.compare(exp.captions, ["en", "ru"], [str(tiny_model_dir)], translator=None)
    text = narrative.comparison(table)
    a, b = (_top1_hits(exp.matching(lang).sim) for lang in ("en", "ru"))
    p = sm_mcnemar([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], exact=True).pvalue
    assert f"{int(np.sum(a & ~b))} are right only with English captions and {int(np.sum(~a & b))} only with " \
           "these raw captions" in text
    assert narrative.p_value(p) in text
