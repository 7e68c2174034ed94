"""Intervals and p-values in the lab prose equal an independent recomputation from the run's similarities."""

from __future__ import annotations

import re

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from labclip.lab import narrative, runs
from labclip.lab.experiment import MATCHING

SHARE = re.compile(r"(\d+)/(\d+) \((\d+\.\d)% \[(\d+\.\d)%, (\d+\.\d)%\]\)")


@pytest.fixture(scope="module")
def exp(tiny_model_dir):
    return runs.start(MATCHING, str(tiny_model_dir), languages=["en", "ru"], default_for="01_matching")


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
    if np.sum(a != b) == 0:  # no discordant image: nothing for McNemar to test, and the prose says so
        assert f"English captions and Russian captions get {_same(a)} right" in text
        assert "no difference to test" in text and "McNemar" not in text
        return
    assert f"{int(np.sum(a & ~b))} {'is' if np.sum(a & ~b) == 1 else 'are'} right only with English captions and {int(np.sum(~a & b))} only with " \
           "Russian captions" in text
    assert narrative.p_value(p) in text
    assert ("is significant at the 5% level" in text) == (p < 0.05)
    assert ("no detectable difference in image→text top-1 at the 5% level" in text) == (p >= 0.05)
    assert "matched better" not in text


def _same(hits: np.ndarray) -> str:
    right = int(hits.sum())
    return "none of them" if right == 0 else "all of them" if right == len(hits) else f"exactly the same {right}"


@pytest.mark.parametrize("a,b", [
    ([1, 0, 1, 0], [1, 0, 1, 0]),
    ([0, 0, 0], [0, 0, 0]),
    ([1, 1], [1, 1]),
    ([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]),
    ([1, 1, 1, 0], [0, 0, 1, 1]),
])
def test_paired_sentence_tests_only_when_some_image_is_right_with_one_method_alone(a, b):
    a, b = np.array(a, dtype=bool), np.array(b, dtype=bool)
    text = narrative.paired(a, b, "A", "B", "top-1")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a == only_b == 0:
        assert text == (f"On the same {len(a)} images, A and B get {_same(a)} right (top-1): no image is right "
                        "with only one of them, so there is no difference to test.")
    else:
        p = sm_mcnemar([[np.sum(a & b), only_a], [only_b, np.sum(~a & ~b)]], exact=True).pvalue
        assert f"{only_a} {'is' if only_a == 1 else 'are'} right only with A and {only_b} only with B" in text
        assert narrative.p_value(p) in text


def test_strategy_comparison_prose_tests_each_language_against_english(exp, tiny_model_dir):
    from labclip.lab import compare

    table = compare.compare(exp.captions, ["en", "ru"], [str(tiny_model_dir)], translator=None)
    text = narrative.comparison(table)
    a, b = (_top1_hits(exp.matching(lang).sim) for lang in ("en", "ru"))
    p = sm_mcnemar([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], exact=True).pvalue
    if np.sum(a != b) == 0:
        assert f"English captions and these raw captions get {_same(a)} right" in text
        assert "no difference to test" in text
    else:
        assert f"{int(np.sum(a & ~b))} {'is' if np.sum(a & ~b) == 1 else 'are'} right only with English captions and {int(np.sum(~a & b))} only with " \
               "these raw captions" in text
        assert narrative.p_value(p) in text
