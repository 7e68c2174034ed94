import numpy as np
import pytest
from PIL import Image

from labclip import LabclipError
from labclip.lab.tables import confusion, top_labels
from labclip.metrics import zeroshot_metrics
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
