import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

import labclip
from labclip import LabclipError
from labclip.stats import (
    Estimate,
    bootstrap_interval,
    class_balanced,
    mean,
    paired_test,
    proportion,
    wilson_interval,
)


@pytest.mark.parametrize("hits,n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (54, 100), (1, 1000), (999, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy_and_statsmodels(hits, n, confidence):
    low, high = labclip.wilson_interval(hits, n, confidence)
    ref = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert (low, high) == pytest.approx(proportion_confint(hits, n, alpha=1 - confidence, method="wilson"), abs=1e-12)


def test_wilson_closed_form_and_edges():
    z = norm.ppf(0.975)
    p, n = 0.3, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(3, 10) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] > 0
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] < 1
    # the seed experiment: with 10 images a 50% accuracy has an interval about +-28 points wide
    low, high = wilson_interval(5, 10)
    assert 0.25 < (high - low) / 2 < 0.3


@pytest.mark.parametrize("args", [(0, 0), (5, 4), (-1, 3), (1.5, 3)])
def test_wilson_rejects_bad_counts(args):
    with pytest.raises(LabclipError):
        wilson_interval(*args)


def test_wilson_rejects_bad_confidence():
    with pytest.raises(LabclipError):
        wilson_interval(3, 10, confidence=95)


def _table(a, b):
    return [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]


@pytest.mark.parametrize("seed", range(12))
def test_mcnemar_matches_statsmodels_exact(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    a = rng.random(n) < rng.uniform(0.1, 0.9)
    b = np.where(rng.random(n) < rng.uniform(0.5, 0.95), a, ~a)
    ref = sm_mcnemar(_table(a, b), exact=True).pvalue
    assert labclip.mcnemar(a, b) == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert labclip.mcnemar(b, a) == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_mcnemar_by_hand():
    # 3 images right only under a, none only under b: p = 2 * 0.5**3
    a = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    assert labclip.mcnemar(a, b) == pytest.approx(0.25)
    test = paired_test(a, b)
    assert (test.only_a, test.only_b, test.n) == (3, 0, 6)
    assert not test.significant()
    many = np.ones(20, dtype=bool)
    assert paired_test(many, ~many).significant()
    assert paired_test(many, ~many).p_value == pytest.approx(2 * 0.5**20)


def test_mcnemar_without_discordant_pairs_is_one():
    a = np.array([True, False, True])
    assert labclip.mcnemar(a, a.copy()) == 1.0
    assert labclip.mcnemar([1, 0, 1], [1, 0, 1]) == 1.0


@pytest.mark.parametrize("a,b", [([True, False], [True]), ([], []), ([[True]], [[True]]), ([0, 2], [1, 1])])
def test_mcnemar_rejects_bad_input(a, b):
    with pytest.raises(LabclipError):
        labclip.mcnemar(a, b)


def test_bootstrap_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(1)
    values = rng.exponential(size=400)
    first = bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) == first
    assert bootstrap_interval(values, seed=4) != first
    low, high = first
    assert low < values.mean() < high
    # the percentile interval of the mean is close to the normal approximation for n = 400
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - 1.96 * se, abs=0.25 * se)
    assert high == pytest.approx(values.mean() + 1.96 * se, abs=0.25 * se)


def test_bootstrap_percentile_matches_manual_resampling():
    values = np.arange(12, dtype=float) ** 2
    low, high = bootstrap_interval(values, np.median, confidence=0.8, n_resamples=4000, seed=0)
    rng = np.random.default_rng(7)
    medians = np.median(values[rng.integers(0, 12, size=(20000, 12))], axis=1)
    ref_low, ref_high = np.percentile(medians, [10, 90])
    assert low == pytest.approx(ref_low, abs=8) and high == pytest.approx(ref_high, abs=8)


def test_bootstrap_rejects_tiny_and_unequal_samples():
    with pytest.raises(LabclipError):
        bootstrap_interval([1.0])
    with pytest.raises(LabclipError):
        bootstrap_interval((np.ones(3), np.ones(4)), lambda a, b, axis=-1: a.sum(axis))


def _exact_stratified_quantiles(counts, hits, quantiles):
    """Quantiles of the mean per-class recall under resampling within each class, by enumerating every outcome:
    a class of n images with h hits gives Binomial(n, h/n) hits in a resample, independently of the others."""
    from itertools import product

    from scipy.stats import binom

    values, weights = [], []
    for ks in product(*(range(n + 1) for n in counts)):
        values.append(np.mean([k / n for k, n in zip(ks, counts)]))
        weights.append(np.prod([binom.pmf(k, n, h / n) for k, n, h in zip(ks, counts, hits)]))
    order = np.argsort(values)
    cdf = np.cumsum(np.asarray(weights)[order])
    return [np.asarray(values)[order][np.searchsorted(cdf, q)] for q in quantiles]


def test_class_balanced_interval_matches_the_exact_stratified_bootstrap_distribution():
    counts, hits = (8, 12, 10), (2, 9, 5)
    classes = np.repeat(["cat", "dog", "owl"], counts)
    correct = np.concatenate([np.arange(n) < h for n, h in zip(counts, hits)])
    order = np.random.default_rng(0).permutation(len(correct))  # classes interleaved, as a labels file has them
    e = class_balanced(correct[order], classes[order], seed=1)
    assert e.value == pytest.approx(np.mean([h / n for n, h in zip(counts, hits)]))
    assert (e.low, e.high) == pytest.approx(_exact_stratified_quantiles(counts, hits, [0.025, 0.975]), abs=0.012)
    assert e.method == "stratified bootstrap" and e.n == sum(counts) and e.hits is None
    assert class_balanced(correct[order], classes[order], seed=1) == e


def test_class_balanced_resamples_within_classes():
    # every class all right or all wrong: resampling within a class changes nothing, so the interval is a point,
    # where resampling all images together would move the share of each class
    correct = np.array([True] * 5 + [False] * 6 + [True] * 5)
    classes = np.repeat([0, 1, 2], [5, 6, 5])
    e = class_balanced(correct, classes)
    assert e.method == "stratified bootstrap"
    assert e.value == pytest.approx(2 / 3) and e.low == e.high == pytest.approx(2 / 3)
    assert bootstrap_interval(correct, seed=0)[1] - bootstrap_interval(correct, seed=0)[0] > 0.1
    with pytest.raises(LabclipError):
        class_balanced(correct, classes[:-1])
    with pytest.raises(LabclipError):
        bootstrap_interval(correct, strata=classes[:-1])


def test_class_balanced_with_tiny_classes_resamples_all_images():
    # classes of one to three images: within-class resampling would hardly move the figure; instead images are
    # resampled together and each resample averages the classes it drew
    counts = [1, 2, 1, 3, 1, 2, 2]
    classes = np.repeat(np.arange(len(counts)), counts)
    correct = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    e = class_balanced(correct, classes, seed=2)
    rates = [np.mean(correct[classes == c]) for c in range(len(counts))]
    assert e.method == "bootstrap" and e.value == pytest.approx(np.mean(rates))
    rng = np.random.default_rng(11)
    reference = []
    for row in rng.integers(0, len(correct), size=(5000, len(correct))):
        drawn = {c: [correct[i] for i in row if classes[i] == c] for c in set(classes[row])}
        reference.append(np.mean([np.mean(v) for v in drawn.values()]))
    assert (e.low, e.high) == pytest.approx(tuple(np.percentile(reference, [2.5, 97.5])), abs=0.04)
    assert e.high - e.low > 0.2


@pytest.mark.parametrize("hits", [0, 3, 12])
def test_class_balanced_with_equal_classes_is_the_hit_rate_with_its_wilson_interval(hits):
    correct = np.arange(12) < hits
    e = class_balanced(correct, np.repeat(["a", "b", "c"], 4)[np.random.default_rng(0).permutation(12)])
    ref = binomtest(hits, 12).proportion_ci(method="wilson")
    assert e.value == pytest.approx(hits / 12) and (e.low, e.high) == pytest.approx((ref.low, ref.high))
    assert e.method == "wilson" and (e.hits, e.n) == (hits, 12)


def test_proportion_one_caption_per_image_is_wilson():
    hits = np.array([True] * 54 + [False] * 46)
    e = proportion(hits)
    assert (e.value, e.hits, e.n, e.method) == (0.54, 54, 100, "wilson")
    assert (e.low, e.high) == wilson_interval(54, 100)
    assert proportion(hits, groups=np.arange(100)) == e


def test_proportion_with_groups_bootstraps_images():
    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(300), 2)
    # captions of one image succeed or fail together: the effective sample is 300, not 600
    per_image = rng.random(300) < 0.4
    hits = per_image[images]
    e = proportion(hits, groups=images, seed=0)
    assert e.method == "cluster bootstrap" and e.n == 600 and e.hits == 2 * per_image.sum()
    assert e.value == pytest.approx(per_image.mean())
    image_low, image_high = wilson_interval(int(per_image.sum()), 300)
    caption_low, caption_high = wilson_interval(int(hits.sum()), 600)
    assert (e.high - e.low) == pytest.approx(image_high - image_low, rel=0.15)
    assert (e.high - e.low) > 1.2 * (caption_high - caption_low)
    assert proportion(hits, groups=images, seed=0) == e


def test_proportion_rejects_mismatched_groups():
    with pytest.raises(LabclipError):
        proportion([True, False], groups=[0])


def test_mean_estimate_and_formatting():
    values = np.array([1.0, 0.5, 1 / 3, 1.0, 0.25, 1.0])
    e = mean(values, seed=0)
    assert e.value == pytest.approx(values.mean())
    assert e.low <= e.value <= e.high and e.method == "bootstrap" and e.hits is None and e.n == 6
    f = Estimate(0.54, 0.509, 0.571, hits=540, n=1000)
    assert format(f, ".1%") == "54.0% [50.9%, 57.1%]"
    assert str(f) == "0.54 [0.509, 0.571]"
    assert f.to_dict() == {"value": 0.54, "low": 0.509, "high": 0.571, "hits": 540, "n": 1000,
                           "method": "wilson", "confidence": 0.95}


def test_public_api():
    assert {"wilson_interval", "mcnemar"} <= set(labclip.__all__)
