import re

import numpy as np
import pytest
from PIL import Image

from labclip import LabclipError
from labclip.lab.tables import confusion, top_labels
from labclip.labels import format_metric
from labclip.metrics import zeroshot_estimates, zeroshot_metrics
from labclip.zeroshot import class_embeddings, labelled_images, load_templates, probabilities


def test_template_sets():
    assert len(load_templates("imagenet80")) == 80
    assert len(load_templates("cifar")) == 18
    assert len(load_templates("imagenet7")) == 7 and set(load_templates("imagenet7")) <= set(load_templates("imagenet80"))
    assert load_templates("single", "ru") == ["на фотографии {}."]
    with pytest.raises(LabclipError, match="unknown template set 'nope'; known: cifar, imagenet7, imagenet80, single"):
        load_templates("nope")
    assert len(load_templates("imagenet80", "ru")) == 41
    with pytest.raises(LabclipError, match="no 'de' version; it has: en, ru"):
        load_templates("imagenet80", "de")


def test_ensembling_equals_direct_computation(tiny_model):
    labels, templates = ["cat", "red car", "pizza"], ["a photo of a {}.", "a drawing of a {}.", "art of the {}."]
    ours = class_embeddings(tiny_model, labels, templates)
    expected = []
    for label in labels:
        e = np.stack([tiny_model.encode_texts([t.format(label)])[0] for t in templates])
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        m = e.mean(0)
        expected.append(m / np.linalg.norm(m))
    np.testing.assert_allclose(ours, np.stack(expected), atol=1e-6)
    single = class_embeddings(tiny_model, labels, templates[:1])
    np.testing.assert_allclose(single, tiny_model.encode_texts([f"a photo of a {x}." for x in labels]), atol=1e-6)


def test_probabilities_sum_to_one(tiny_model):
    images = [Image.new("RGB", (40, 40), c) for c in ("red", "green", "blue")]
    probs = probabilities(tiny_model, tiny_model.encode_images(images),
                          class_embeddings(tiny_model, ["a", "b", "c", "d"], ["{}"]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    table = top_labels(probs, ["a", "b", "c", "d"], ["r", "g", "b"], k=2)
    assert len(table) == 6 and (table.groupby("image").probability.apply(lambda p: p.is_monotonic_decreasing)).all()


def test_zeroshot_metrics_by_hand():
    probs = np.array([
        [0.7, 0.2, 0.1],  # true 0: rank 1
        [0.5, 0.3, 0.2],  # true 1: rank 2
        [0.1, 0.6, 0.3],  # true 2: rank 2
        [0.2, 0.2, 0.6],  # true 2: rank 1
    ])
    m = zeroshot_metrics(probs, [0, 1, 2, 2], k=2)
    assert m.acc1 == 0.5 and m.acck == 1.0 and m.k == 2
    assert m.mean_per_class_recall == pytest.approx((1 + 0 + 0.5) / 3)
    tie = zeroshot_metrics(np.array([[0.5, 0.5], [0.1, 0.9]]), [0, 1], k=1)
    assert tie.acc1 == 0.5
    c = confusion(probs, [0, 1, 2, 2], ["a", "b", "c"])
    assert c.loc["b", "a"] == 1 and c.loc["c", "b"] == 1 and c.to_numpy().sum() == 4


@pytest.mark.parametrize("n_classes", [2, 4, 5])
def test_top_k_with_k_classes_or_fewer_is_undefined(n_classes):
    rng = np.random.default_rng(n_classes)
    probs = rng.random((12, n_classes))
    truth = np.arange(12) % n_classes
    m = zeroshot_metrics(probs, truth, k=5)
    assert m.acck is None and m.to_dict()["acc5"] is None
    assert m.to_dict()["acc5_undefined"] == (f"top-5 accuracy is undefined with {n_classes} classes: every class is "
                                             "among the top 5")
    assert m.acc1 == np.mean(probs.argmax(axis=1) == truth)
    assert "acc5" not in zeroshot_estimates(probs, truth, k=5) and "acc1" in zeroshot_estimates(probs, truth, k=5)
    assert format_metric("acc5", m.acck, 12) == "—"


def test_top_k_with_more_classes_than_k_is_counted():
    rng = np.random.default_rng(6)
    probs = rng.random((30, 6))
    truth = np.arange(30) % 6
    m = zeroshot_metrics(probs, truth, k=5)
    in_top5 = [t in np.argsort(-row)[:5] for row, t in zip(probs, truth)]
    assert m.acck == np.mean(in_top5) < 1 and "acc5_undefined" not in m.to_dict()
    assert zeroshot_estimates(probs, truth, k=5)["acc5"].value == m.acck


def test_labelled_folder_and_errors(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "root" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "root" / cls / "1.png")
    (tmp_path / "root" / "dog" / "notes.txt").write_text("x")
    data = labelled_images(tmp_path / "root")
    assert data.classes == ["cat", "dog"] and data.truth == [0, 1] and len(data.paths) == 2
    with pytest.raises(LabclipError, match="no such folder"):
        labelled_images(tmp_path / "missing")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cat" / "1.png")
    with pytest.raises(LabclipError, match="only one class"):
        labelled_images(tmp_path / "one")


def _wilson(hits: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(method="wilson")
    return ci.low, ci.high


def test_zeroshot_json_records_each_figure_with_its_interval(tiny_model, tmp_path):
    """04_zeroshot's JSON: accuracies with Wilson intervals, the mean per-class recall with class_balanced's."""
    import json
    import shutil

    from labclip.config import IMAGES_DIR
    from labclip.lab.experiment import ZeroShotRun
    from labclip.stats import class_balanced

    for cls, names in {"cat": ["cat.png", "cameraman.png"], "car": ["red_car.png"],
                       "food": ["pizza.png", "coffee.png", "astronaut.png"]}.items():
        (tmp_path / "root" / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(IMAGES_DIR / name, tmp_path / "root" / cls / name)
    data = labelled_images(tmp_path / "root")
    run = ZeroShotRun(model=tiny_model, data=data)
    run.evaluate("single", k=2)
    run.save(tmp_path, "04_zeroshot")
    saved = json.loads((tmp_path / "04_zeroshot.json").read_text(encoding="utf-8"))["metrics"]["single"]
    probs = probabilities(tiny_model, tiny_model.encode_images(data.paths),
                          class_embeddings(tiny_model, data.classes, load_templates("single")))
    truth = np.asarray(data.truth)
    hits = probs.argmax(axis=1) == truth
    top2 = (probs >= probs[np.arange(len(truth)), truth][:, None]).sum(axis=1) <= 2
    for key, h in (("acc1", hits), ("acc2", top2)):
        assert saved[key] == pytest.approx(h.mean())
        assert (saved[f"{key}_low"], saved[f"{key}_high"]) == pytest.approx(_wilson(int(h.sum()), len(h)))
    assert saved["mean_per_class_recall"] == pytest.approx(np.mean([hits[truth == c].mean() for c in range(3)]))
    balanced = class_balanced(hits, truth)
    assert balanced.method == "bootstrap"  # unequal classes, one of a single image
    assert (saved["mean_per_class_recall_low"], saved["mean_per_class_recall_high"]) == pytest.approx(
        (balanced.low, balanced.high))
    assert saved["mean_per_class_recall_low"] <= saved["mean_per_class_recall"] <= saved["mean_per_class_recall_high"]



def test_template_comparison_encodes_each_set_once_and_shows_the_json_interval(tiny_model, tmp_path, monkeypatch):
    """04's table and confusion matrix reuse what evaluate computed: each set's prompts are encoded once."""
    import shutil

    from labclip.config import IMAGES_DIR
    from labclip.lab import experiment, present
    from labclip.lab.experiment import ZeroShotRun
    from labclip.labels import format_metric

    for cls, names in {"cat": ["cat.png", "cameraman.png"], "food": ["pizza.png", "coffee.png"]}.items():
        (tmp_path / "root" / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(IMAGES_DIR / name, tmp_path / "root" / cls / name)
    run = ZeroShotRun(model=tiny_model, data=labelled_images(tmp_path / "root"))
    encoded = []
    real = experiment.class_embeddings
    monkeypatch.setattr(experiment, "class_embeddings", lambda m, c, t: encoded.append(tuple(t)) or real(m, c, t))
    sets = ["single", "imagenet7"]
    shown = present.template_comparison(run, run.compare(sets, 2), k=2, requested=sets).parts
    assert sorted(encoded) == sorted({tuple(load_templates(s)) for s in ("single", "imagenet7")})
    html = "".join(str(getattr(x, "data", x)) for x in shown)
    for name in ("single", "imagenet7"):
        figures = run.evaluated(name)[1]
        assert format_metric("mean_per_class_recall", figures["mean_per_class_recall"], 4) in html


def test_template_comparison_shows_undefined_top_k_with_its_reason(tiny_model, tmp_path, monkeypatch):
    import json
    import shutil

    from labclip.config import IMAGES_DIR
    from labclip.lab import present
    from labclip.lab.experiment import ZeroShotRun

    for cls, names in {"cat": ["cat.png", "cameraman.png"], "food": ["pizza.png", "coffee.png"]}.items():
        (tmp_path / "root" / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(IMAGES_DIR / name, tmp_path / "root" / cls / name)
    run = ZeroShotRun(model=tiny_model, data=labelled_images(tmp_path / "root"))
    html = present.template_comparison(run, run.compare(["single", "imagenet7"], 2), k=2)._repr_html_()
    assert "Top-2 shows — because top-2 accuracy is undefined with 2 classes: every class is among the top 2." in html
    assert len(re.findall(r"<td [^>]*>—</td>", html)) == 2
    figures = json.loads(json.dumps(run.figures()))
    assert figures["single"]["acc2"] is None and "acc2_low" not in figures["single"]
    html = present.template_comparison(run, run.compare(["single"], 1), k=1)._repr_html_()
    assert "undefined" not in html and "—" not in html


def test_zeroshot_language_falls_back_to_english_and_says_what_was_missing(tmp_path):
    from labclip.config import DEFAULT_LABELS
    from labclip.zeroshot import choose_language, language_gaps

    assert choose_language(DEFAULT_LABELS, "ru") == ("ru", [])
    assert choose_language(DEFAULT_LABELS, "de", ["single"]) == ("en", ["labels", "single"])
    assert choose_language(DEFAULT_LABELS, "de") == ("en", ["labels", "cifar", "imagenet7", "imagenet80", "single"])
    neutral = tmp_path / "neutral.csv"
    neutral.write_text("image,label\ncat.png,Katze\n", encoding="utf-8")
    assert language_gaps(neutral, "de", ["single"]) == ["single"]
    assert language_gaps(tmp_path, "de", ["single", "imagenet7"]) == ["single", "imagenet7"]  # class folders: any language
    german = tmp_path / "de.csv"
    german.write_text("image,de\ncat.png,Katze\n", encoding="utf-8")
    with pytest.raises(LabclipError, match="nothing to run on: template set single has no 'de' version and for "
                                           "English: the labels have no 'en' column"):
        choose_language(german, "de", ["single"])
