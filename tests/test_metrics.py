import math

import numpy as np
import pytest

from labclip import LabclipError, match_metrics, similarity
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


def test_frequent_distractors_by_hand():
    table = frequent_distractors(SIM, ["a", "b", "c"], k=2)
    # top-2 lists: x -> a, c ; y -> b, c ; z -> b, c  => wrong entries: c (x), c (y), b (z)
    assert table.to_dict("list") == {"caption": ["c", "b"], "appearances": [2, 1]}


def test_gap_in_the_seed_reports_three_forms():
    from labclip.lab.narrative import gap

    assert gap(1.0, 0.3) == {"points": "+70.0 percentage points", "ratio": "3.33×", "relative": "+233%"}
    assert gap(0.5, 0.0)["ratio"].startswith("undefined")
