import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

import labclip
from labclip import LabclipError, load_model, similarity
from labclip.registry import ALIASES as MODEL_ALIASES
from labclip.registry import resolve_model_name
from labclip.testing import make_tiny_model

TEXTS = ["a cup of coffee", "a photo of a calico cat", "чашка кофе", "snowy mountains at dawn"]


def _images(size=32, n=3, seed=1):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_similarity_equals_transformers_logits(tiny_model, tiny_model_dir):
    images = _images()
    ours = similarity(tiny_model.encode_images(images), tiny_model.encode_texts(TEXTS))

    model = CLIPModel.from_pretrained(tiny_model_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_model_dir)
    inputs = processor(text=TEXTS, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    reference = (out.logits_per_image / model.logit_scale.exp()).detach().numpy()
    assert ours.shape == (3, 4)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert np.abs(ours).max() > 1e-3  # not trivially zero


def test_embeddings_are_unit_float32(tiny_model):
    emb = tiny_model.encode_texts(TEXTS)
    assert emb.dtype == np.float32 and emb.shape == (4, tiny_model.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    img = tiny_model.encode_images(_images())
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-6)


def test_logit_scale_is_100(tiny_model):
    assert tiny_model.logit_scale == pytest.approx(100.0, rel=1e-5)


def test_batching_and_padding_do_not_change_embeddings(tiny_model):
    one_by_one = np.concatenate([tiny_model.encode_texts([t]) for t in TEXTS])
    longest = tiny_model.encode_texts(TEXTS, batch_size=4)
    np.testing.assert_allclose(longest, one_by_one, atol=1e-6)
    # padding every caption to 77, as clip.tokenize does, gives the same vectors
    tok = tiny_model.tokenizer(TEXTS, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        out = tiny_model.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    padded = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1).numpy()
    np.testing.assert_allclose(longest, padded, atol=1e-5)
    imgs = _images(n=5)
    np.testing.assert_allclose(
        tiny_model.encode_images(imgs, batch_size=2), tiny_model.encode_images(imgs, batch_size=5), atol=1e-6
    )


def test_paths_and_pil_give_same_embeddings(tiny_model, tmp_path):
    images = _images()
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    np.testing.assert_allclose(tiny_model.encode_images(paths), tiny_model.encode_images(images), atol=1e-6)


def test_same_seed_same_weights(tmp_path):
    a = load_model(make_tiny_model(tmp_path / "a", seed=3)).encode_texts(TEXTS)
    b = load_model(make_tiny_model(tmp_path / "b", seed=3)).encode_texts(TEXTS)
    c = load_model(make_tiny_model(tmp_path / "c", seed=4)).encode_texts(TEXTS)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_aliases_come_from_one_table():
    assert resolve_model_name("ViT-B/32") == "openai/clip-vit-base-patch32"
    assert resolve_model_name("ViT-L/14@336px") == "openai/clip-vit-large-patch14-336"
    assert set(MODEL_ALIASES) == {"ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"}
    assert resolve_model_name("some/other-model") == "some/other-model"


def test_demo_model_loads_offline_and_is_marked():
    demo = load_model("demo")
    assert demo.name == "demo" and demo.is_demo and demo.untrained
    assert demo.encode_texts(["a cat"]).shape == (1, demo.dim)
    assert labclip.load_model("demo").source == demo.source  # built once, then cached


def test_directory_without_weights_is_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LabclipError) as err:
        load_model(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "save_pretrained" in message


def test_unreachable_hub_model_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LabclipError) as err:
        load_model("ViT-B/32")
    message = str(err.value)
    assert "\n" not in message
    assert "'ViT-B/32' (openai/clip-vit-base-patch32)" in message
    for way_out in ("network", "HF_HOME", "local model directory", "'demo'"):
        assert way_out in message


@pytest.mark.slow
def test_real_openai_weights_match_english_captions():
    from labclip.hub import hub_reachable

    if not hub_reachable():
        pytest.skip("the Hugging Face hub is unreachable; real weights cannot be fetched")
    model = load_model("ViT-B/32")
    assert model.logit_scale == pytest.approx(100.0)


class _Terminal:
    """A stderr that says it is a terminal."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_or_when_asked(tiny_model_dir, capsys, monkeypatch):
    import sys

    from labclip.config import IMAGES_DIR

    model = load_model(tiny_model_dir, cache=False)
    paths = sorted(IMAGES_DIR.glob("*.png"))[:3]
    model.encode_images(paths, batch_size=1)  # three batches, stderr captured: not a terminal
    assert "encoding images" not in capsys.readouterr().err
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model.encode_images(paths, batch_size=1)
    assert "encoding images" in terminal.text and "3/3" in terminal.text
    terminal.text = ""
    model.progress = False  # what the benchmarks set
    model.encode_images(paths, batch_size=1)
    assert terminal.text == ""
    monkeypatch.undo()
    model.progress = True
    model.encode_images(paths, batch_size=1)
    assert "encoding images" in capsys.readouterr().err
