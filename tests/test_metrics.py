import math

import numpy as np
import pytest

from labclip import LabclipError, match_metrics, similarity, stats
from labclip.lab.tables import frequent_distractors, topk_table
from labclip.metrics import contrastive_loss, correct_ranks, ranks, zeroshot_metrics


def test_similarity_is_cosine_of_unnormalised_rows():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0], [5.0, 0.0], [1.0, 1.0]])
    expected = np.array([[0.8, 0.6, 7 / (5 * math.sqrt(2))], [0.0, 1.0, 1 / math.sqrt(2)]])
    np.testing.assert_allclose(similarity(a, b), expected, atol=1e-12)


# Images 0 and 1 rank their own caption first; image 2 prefers caption 1 (0.6 > 0.5),
# and caption 2 prefers image 1 (0.7 > 0.5).
SIM = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.3, 0.8, 0.7],
        [0.4, 0.6, 0.5],
    ]
)


def test_ranks_by_hand():
    assert correct_ranks(SIM).tolist() == [1, 1, 2]
    # columns: caption 0 -> [0.9, 0.3, 0.4] rank 1; caption 1 -> [0.1, 0.8, 0.6] rank 1;
    # caption 2 -> [0.2, 0.7, 0.5]: 0.7 beats 0.5 -> rank 2
    assert correct_ranks(SIM.T).tolist() == [1, 1, 2]


def test_match_metrics_by_hand():
    m = match_metrics(SIM, k=2, logit_scale=1.0)
    assert m.n == 3
    assert m.i2t.acc1 == pytest.approx(2 / 3)
    assert m.i2t.hits1 == 2
    assert m.i2t.acck == 1.0
    assert m.t2i.acc1 == pytest.approx(2 / 3)
    assert m.i2t.mrr == pytest.approx((1 + 1 + 0.5) / 3)
    assert m.correct_mean == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    assert (m.correct_min, m.correct_max) == (0.5, 0.9)
    assert (m.wrong_min, m.wrong_max) == (0.1, 0.7)
    assert m.wrong_mean == pytest.approx((0.1 + 0.2 + 0.3 + 0.7 + 0.4 + 0.6) / 6)
    # margins: 0.9-0.2, 0.8-0.7, 0.5-0.6
    assert m.margin_mean == pytest.approx((0.7 + 0.1 - 0.1) / 3)
    assert m.margin_min == pytest.approx(-0.1)
    assert m.separable is False
    assert m.threshold is None


def test_separable_threshold_is_gap_midpoint():
    sim = np.array([[0.30, 0.10], [0.22, 0.28]])
    m = match_metrics(sim, k=1)
    assert m.separable is True
    assert m.threshold == pytest.approx((0.28 + 0.22) / 2)
    assert m.i2t.acc1 == m.t2i.acc1 == 1.0


def test_tie_counts_as_miss():
    sim = np.array([[0.5, 0.5], [0.1, 0.9]])
    m = match_metrics(sim, k=2)
    assert m.i2t.acc1 == 0.5
    assert m.i2t.acck == 1.0
    assert m.separable is False  # 0.5 correct is not above 0.5 wrong


def test_contrastive_loss_by_hand():
    sim = np.array([[0.3, 0.1], [0.2, 0.4]])
    s = 10.0
    rows = [-math.log(math.exp(3) / (math.exp(3) + math.exp(1))), -math.log(math.exp(4) / (math.exp(2) + math.exp(4)))]
    cols = [-math.log(math.exp(3) / (math.exp(3) + math.exp(2))), -math.log(math.exp(4) / (math.exp(1) + math.exp(4)))]
    expected = (sum(rows) / 2 + sum(cols) / 2) / 2
    assert contrastive_loss(sim, s) == pytest.approx(expected)
    assert match_metrics(sim, logit_scale=s).contrastive_loss == pytest.approx(expected)


def test_contrastive_loss_matches_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, (6, 6))
    logits = torch.tensor(100.0 * sim)
    labels = torch.arange(6)
    expected = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    assert contrastive_loss(sim, 100.0) == pytest.approx(float(expected), rel=1e-9)


def test_flat_names_are_one_scheme_for_matching_and_zero_shot():
    flat = match_metrics(SIM, k=2, logit_scale=1.0).to_dict()
    assert flat["i2t_acc1"] == pytest.approx(2 / 3) and flat["i2t_acc2"] == 1.0 and flat["t2i_hits1"] == 2
    assert flat["k"] == 2 and flat["n"] == 3 and flat["threshold"] is None
    zs = zeroshot_metrics(SIM, [0, 1, 2], k=2).to_dict()
    assert zs["acc1"] == flat["i2t_acc1"] and zs["acc2"] == flat["i2t_acc2"]


def test_one_rank_computation_for_both_tasks():
    truth = [2, 0, 1]
    scores = np.empty_like(SIM)
    scores[:, truth] = SIM  # the true column of row i holds SIM[i, i]; the others are row i's wrong captions
    assert ranks(scores, truth).tolist() == correct_ranks(SIM).tolist()


def test_match_metrics_carry_the_ranks_hits_and_margins_they_come_from():
    """What the lab layer needs per image (top-1 hits, margins, intervals) comes from the result, computed once."""
    m = match_metrics(SIM, k=2)
    np.testing.assert_array_equal(m.ranks.i2t, correct_ranks(SIM))
    np.testing.assert_array_equal(m.ranks.t2i, correct_ranks(SIM.T))
    assert {d: h.tolist() for d, h in m.ranks.hits(1).items()} == {"i2t": [True, True, False], "t2i": [True, True, False]}
    # margins by hand: 0.9 - 0.2, 0.8 - 0.7, 0.5 - 0.6
    np.testing.assert_allclose(m.margins, [0.7, 0.1, -0.1], atol=1e-12)
    margin = stats.mean(m.margins)
    assert margin.value == pytest.approx(m.margin_mean) and margin.low <= margin.value <= margin.high
    e = m.ranks.estimates((1, 2))
    assert (e["i2t_acc1"].hits, e["i2t_acc1"].n) == (2, 3) and e["t2i_acc2"].value == pytest.approx(m.t2i.acck)
    assert "ranks" not in m.to_dict() and "margins" not in m.to_dict() and "ranks" not in repr(m)
    assert m == match_metrics(SIM.copy(), k=2)


def test_non_square_is_rejected():
    with pytest.raises(LabclipError, match="square"):
        match_metrics(np.zeros((2, 3)))


def test_topk_table_by_hand():
    caps = ["a", "b", "c"]
    table = topk_table(SIM, caps, k=2, logit_scale=1.0, images=["x", "y", "z"])
    assert len(table) == 6
    z = table[table.image == "z"]
    assert z.caption.tolist() == ["b", "c"]
    assert z.correct.tolist() == [False, True]
    expected_p = math.exp(0.6) / (math.exp(0.4) + math.exp(0.6) + math.exp(0.5))
    assert z.probability.iloc[0] == pytest.approx(expected_p)
    assert z.cosine.tolist() == [0.6, 0.5]


def test_topk_table_scores_sigmoid_models_pair_by_pair():
    """With a ``logit_bias`` (SigLIP) each listed pair's probability is its own sigmoid, by hand, the same
    number the full matrix gives that pair; no overflow far below the bias."""
    import warnings

    from labclip.metrics import match_probabilities

    caps = ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = topk_table(SIM, caps, k=2, logit_scale=10.0, images=["x", "y", "z"], logit_bias=-6.0)
        far = topk_table(-SIM, caps, k=1, logit_scale=1e4, logit_bias=-10.0)
    z = table[table.image == "z"]
    assert z.caption.tolist() == ["b", "c"]
    assert z.probability.tolist() == pytest.approx([1 / (1 + math.exp(-(10 * 0.6 - 6))),
                                                     1 / (1 + math.exp(-(10 * 0.5 - 6)))], rel=1e-12)
    assert not np.allclose(table.groupby("image").probability.sum(), 1.0)  # not a softmax over the captions
    full = match_probabilities(SIM, 10.0, -6.0)
    expected = [full["xyz".index(row.image), caps.index(row.caption)] for row in table.itertuples()]
    assert table.probability.tolist() == pytest.approx(expected, rel=1e-12)
    assert (far.probability >= 0).all() and far.probability.max() < 1e-300


def test_frequent_distractors_by_hand():
    table = frequent_distractors(SIM, ["a", "b", "c"], k=2)
    # top-2 lists: x -> a, c ; y -> b, c ; z -> b, c  => wrong entries: c (x), c (y), b (z)
    assert table.to_dict("list") == {"caption": ["c", "b"], "appearances": [2, 1]}


def test_gap_in_the_seed_reports_three_forms():
    from labclip.lab.narrative import gap

    assert gap(1.0, 0.3) == {"points": "+70.0 percentage points", "ratio": "3.33×", "relative": "+233%"}
    assert gap(0.5, 0.0)["ratio"].startswith("undefined")


# ---- retrieval with several captions per image, and the memory of the metrics ----

from labclip import metrics as metrics_module  # noqa: E402
from labclip.metrics import RetrievalRanks, retrieval_metrics, retrieval_ranks, topk_indices  # noqa: E402


def _random_set(seed, n_images, ties):
    """Similarities with 1-3 captions per image; ``ties`` rounds them to a coarse grid so many values tie."""
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(n_images), rng.integers(1, 4, n_images))
    rng.shuffle(owner)
    sim = rng.uniform(-1, 1, (n_images, len(owner))).astype(np.float32)
    sim[owner, np.arange(len(owner))] += 0.4
    if ties:
        sim = np.round(sim * 4) / 4
    return sim, owner


def _reference_hits(sim, owner, k):
    """Sort every row and column in full, wrong answers first among equal scores, and look for a right one."""
    n, m = sim.shape
    positive = np.zeros((n, m), dtype=bool)
    positive[owner, np.arange(m)] = True
    i2t = []
    for i in range(n):
        order = np.lexsort((positive[i], -sim[i].astype(np.float64)))
        i2t.append(positive[i, order[:k]].any())
    t2i = []
    for c in range(m):
        order = np.lexsort((positive[:, c], -sim[:, c].astype(np.float64)))
        t2i.append(positive[order[:k], c].any())
    return np.array(i2t), np.array(t2i)


def _reference_ranks(sim, owner):
    n, m = sim.shape
    i2t = [1 + sum(sim[i, c] >= max(sim[i, owner == i]) for c in range(m) if owner[c] != i) for i in range(n)]
    t2i = [1 + sum(sim[j, c] >= sim[owner[c], c] for j in range(n) if j != owner[c]) for c in range(m)]
    return np.array(i2t), np.array(t2i)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_retrieval_matches_brute_force(seed, ties, monkeypatch):
    monkeypatch.setattr(metrics_module, "BLOCK_ELEMENTS", 50)  # many small blocks, uneven last block
    sim, owner = _random_set(seed, 17, ties)
    ranks = retrieval_ranks(sim, owner)
    ref_i2t, ref_t2i = _reference_ranks(sim, owner)
    np.testing.assert_array_equal(ranks.i2t, ref_i2t)
    np.testing.assert_array_equal(ranks.t2i, ref_t2i)
    m = retrieval_metrics(sim, owner, ks=(1, 2, 5, 10))
    for k in (1, 2, 5, 10):
        i2t, t2i = _reference_hits(sim, owner, k)
        assert m[f"i2t_acc{k}"] == pytest.approx(i2t.mean()) and m[f"i2t_hits{k}"] == i2t.sum()
        assert m[f"t2i_acc{k}"] == pytest.approx(t2i.mean()) and m[f"t2i_hits{k}"] == t2i.sum()
    assert m["i2t_mrr"] == pytest.approx(np.mean(1 / ref_i2t))
    assert m["t2i_mrr"] == pytest.approx(np.mean(1 / ref_t2i))
    assert (m["n_images"], m["n_captions"]) == sim.shape


def test_retrieval_matches_clip_benchmark_recall():
    """CLIP_benchmark's recall_at_k (top-k by torch, positives counted), on scores without ties."""
    torch = pytest.importorskip("torch")
    sim, owner = _random_set(11, 40, ties=False)
    scores = torch.tensor(sim.T)  # texts x images, as CLIP_benchmark builds it
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), torch.tensor(owner)] = True

    def recall_at_k(s, pos, k):
        top = torch.topk(s, k, dim=1)[1]
        onehot = torch.nn.functional.one_hot(top, num_classes=s.shape[1])
        return (onehot * pos.view(len(s), 1, -1)).sum(dim=(1, 2)) / pos.sum(dim=1)

    m = retrieval_metrics(sim, owner)
    for k in (1, 5, 10):
        assert m[f"t2i_acc{k}"] == pytest.approx((recall_at_k(scores, positive, k) > 0).float().mean().item())
        assert m[f"i2t_acc{k}"] == pytest.approx((recall_at_k(scores.T, positive.T, k) > 0).float().mean().item())


def test_paired_retrieval_agrees_with_match_metrics():
    sim, _ = _random_set(3, 12, ties=True)
    sim = sim[:, :12]
    m = match_metrics(sim, k=5).to_dict()
    r = retrieval_metrics(sim, ks=(1, 5))
    for name in ("i2t_acc1", "i2t_acc5", "t2i_acc1", "t2i_acc5", "i2t_hits1", "t2i_hits1", "i2t_mrr", "t2i_mrr"):
        assert r[name] == pytest.approx(m[name]), name


def test_retrieval_estimates_pick_the_interval_by_captions_per_image():
    sim, owner = _random_set(5, 60, ties=False)
    est = retrieval_ranks(sim, owner).estimates(ks=(1,))
    assert est["i2t_acc1"].method == "wilson" and est["i2t_acc1"].n == 60
    assert est["t2i_acc1"].method == "cluster bootstrap" and est["t2i_acc1"].n == len(owner)
    assert est["i2t_mrr"].method == "bootstrap"
    m = retrieval_metrics(sim, owner, ks=(1,))
    for name, e in est.items():
        assert e.value == pytest.approx(m[name]) and e.low <= e.value <= e.high
    paired = retrieval_ranks(np.eye(8, dtype=np.float32))
    assert paired.estimates(ks=(1,))["t2i_acc1"].method == "wilson"


@pytest.mark.parametrize("owner,match", [([0, 1], "one image index per caption"), ([0, 1, 5], "outside"),
                                         ([0, 0, 0], "no caption"), ([0.0, 1.0, 1.0], "one image index")])
def test_retrieval_rejects_bad_owner(owner, match):
    with pytest.raises(LabclipError, match=match):
        retrieval_ranks(np.zeros((2, 3)), owner)


def test_retrieval_needs_owner_for_rectangular():
    with pytest.raises(LabclipError, match="owner"):
        retrieval_ranks(np.zeros((2, 3)))


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_topk_indices_equals_stable_argsort(k, monkeypatch):
    monkeypatch.setattr(metrics_module, "BLOCK_ELEMENTS", 30)
    rng = np.random.default_rng(k)
    sim = np.round(rng.uniform(-1, 1, (9, 11)) * 3) / 3  # many ties
    np.testing.assert_array_equal(topk_indices(sim, k), np.argsort(-sim, axis=1, kind="stable")[:, :k])


def _dense_match_metrics(sim):
    """The paired-set figures computed densely in float64, as the seed code did."""
    sim = sim.astype(np.float64)
    n = len(sim)
    off = ~np.eye(n, dtype=bool)
    correct = np.diag(sim)
    best_wrong = np.where(off, sim, -np.inf).max(axis=1)
    logits = 50.0 * sim
    log_p_rows = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    log_p_cols = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))
    return {
        "wrong_mean": sim[off].mean(), "wrong_min": sim[off].min(), "wrong_max": sim[off].max(),
        "margin_mean": np.mean(correct - best_wrong), "margin_min": np.min(correct - best_wrong),
        "contrastive_loss": -(np.diag(log_p_rows).mean() + np.diag(log_p_cols).mean()) / 2,
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blockwise_match_metrics_equal_dense_computation(dtype, monkeypatch):
    monkeypatch.setattr(metrics_module, "BLOCK_ELEMENTS", 40)
    rng = np.random.default_rng(2)
    sim = (np.round(rng.uniform(-0.2, 0.4, (13, 13)) * 20) / 20).astype(dtype)
    got = match_metrics(sim, logit_scale=50.0).to_dict()
    for name, value in _dense_match_metrics(sim).items():
        assert got[name] == pytest.approx(value, rel=1e-6 if dtype == np.float32 else 1e-12), name


def test_topk_table_probabilities_sum_to_one_over_all_captions():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-0.3, 0.3, (4, 6)).astype(np.float32)
    table = topk_table(sim, list("abcdef"), k=6, logit_scale=20.0)
    sums = table.groupby("image").probability.sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-6)
    first = table[table.image == "0"].iloc[0]
    assert first.probability == pytest.approx(np.exp(20 * sim[0].max()) / np.exp(20 * sim[0].astype(float)).sum(), rel=1e-6)


def test_metrics_extra_memory_is_a_fraction_of_the_matrix(monkeypatch):
    """With small blocks, the metrics of a 1200 x 1200 float32 matrix allocate far less than the matrix."""
    import tracemalloc

    monkeypatch.setattr(metrics_module, "BLOCK_ELEMENTS", 1 << 14)
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, (1200, 1200)).astype(np.float32)
    matrix_bytes = sim.nbytes
    for run in (lambda: match_metrics(sim, k=5), lambda: retrieval_metrics(sim, ks=(1, 5, 10)),
                lambda: topk_indices(sim, 10), lambda: retrieval_ranks(sim, np.arange(1200))):
        tracemalloc.start()
        run()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 0.25 * matrix_bytes


def test_similarity_can_stay_float32():
    a = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    s32 = similarity(a, a, dtype=np.float32)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32, similarity(a, a), rtol=1e-6)
    assert isinstance(retrieval_ranks(s32), RetrievalRanks)


def test_matching_json_records_each_accuracy_with_its_interval(tiny_model, tmp_path):
    """01/02's JSON: the same ``{key}_low``/``{key}_high`` beside each accuracy and MRR."""
    import json

    from scipy.stats import binomtest

    from labclip.config import DEFAULT_CAPTIONS
    from labclip.data import load_captions
    from labclip.lab.experiment import Experiment

    exp = Experiment(model=tiny_model, captions=load_captions(DEFAULT_CAPTIONS, None, ["en"]), top_k=3)
    m = exp.matching("en")
    exp.save(tmp_path, "01_matching")
    saved = json.loads((tmp_path / "01_matching.json").read_text(encoding="utf-8"))["metrics"]["en"]
    n = len(m.sim)
    correct = m.sim[np.arange(n), np.arange(n)]
    for key, hits in (("i2t_acc1", (m.sim > correct[:, None]).sum(axis=1) == 0),
                      ("t2i_acc1", (m.sim > correct[None, :]).sum(axis=0) == 0),
                      ("i2t_acc3", (m.sim >= correct[:, None]).sum(axis=1) <= 3)):
        assert saved[key] == pytest.approx(hits.mean())
        assert (saved[f"{key}_low"], saved[f"{key}_high"]) == pytest.approx(tuple(binomtest(int(hits.sum()), n).proportion_ci(method="wilson")))
    for key in ("i2t_mrr", "t2i_mrr"):
        assert saved[f"{key}_low"] <= saved[key] <= saved[f"{key}_high"]
