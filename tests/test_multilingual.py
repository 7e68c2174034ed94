"""Multilingual text towers on tiny local models of the same architectures, against direct computations."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AltCLIPModel, AutoTokenizer, DistilBertModel, XLMRobertaConfig, XLMRobertaModel

from labclip import load_model, similarity
from labclip.config import CAPTIONS_DIR
from labclip.data import load_captions
from labclip.testing import make_tiny_altclip, make_tiny_mclip, make_tiny_sentence_transformer

TEXTS = ["a photo of a cup of coffee", "фотография чашки кофе на красном блюдце", "кошка", "a red car"]


def _mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def _normalise(x):
    return torch.nn.functional.normalize(x, dim=-1).numpy()


@pytest.fixture(scope="module")
def images():
    return load_captions(CAPTIONS_DIR / "default.csv")["path"][:4]


def test_sentence_transformers_layout(tmp_path, tiny_model_dir, images):
    st = make_tiny_sentence_transformer(tmp_path / "st", seed=5)
    model = load_model(st, image_model=tiny_model_dir, cache=False)
    assert model.info.paired and model.multilingual and not model.openai_text_cleaning

    tokenizer = AutoTokenizer.from_pretrained(st)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = DistilBertModel.from_pretrained(st)(**batch).last_hidden_state
    weight = load_file(str(st / "2_Dense" / "model.safetensors"))["linear.weight"]
    expected = _normalise(_mean_pool(hidden, batch["attention_mask"]) @ weight.T)
    np.testing.assert_allclose(model.encode_texts(TEXTS), expected, atol=1e-5)

    clip = load_model(tiny_model_dir, cache=False)
    np.testing.assert_allclose(model.encode_images(images), clip.encode_images(images), atol=1e-6)
    assert similarity(model.encode_images(images), model.encode_texts(TEXTS)).shape == (4, 4)
    assert model.untrained


def test_mclip_layout(tmp_path, tiny_model_dir):
    mclip = make_tiny_mclip(tmp_path / "mclip", seed=6)
    model = load_model(mclip, image_model=tiny_model_dir, cache=False)

    tokenizer = AutoTokenizer.from_pretrained(mclip)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    state = load_file(str(mclip / "model.safetensors"))
    xlmr = XLMRobertaModel(XLMRobertaConfig.from_pretrained(mclip / "base"), add_pooling_layer=False).eval()
    xlmr.load_state_dict({k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")},
                         strict=False)
    with torch.no_grad():
        pooled = _mean_pool(xlmr(**batch).last_hidden_state, batch["attention_mask"])
    expected = _normalise(pooled @ state["LinearTransformation.weight"].T + state["LinearTransformation.bias"])
    np.testing.assert_allclose(model.encode_texts(TEXTS), expected, atol=1e-5)


def test_altclip_native(tmp_path, images):
    alt = make_tiny_altclip(tmp_path / "alt", seed=7)
    model = load_model(alt, cache=False)
    assert not model.info.paired and model.multilingual and not model.openai_text_cleaning
    direct = AltCLIPModel.from_pretrained(alt).eval()
    tokenizer = AutoTokenizer.from_pretrained(alt)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = direct.get_text_features(**batch)
        pixels = model.pixel_values(images)
        img = direct.get_image_features(pixel_values=pixels)
    out, img = getattr(out, "pooler_output", out), getattr(img, "pooler_output", img)
    np.testing.assert_allclose(model.encode_texts(TEXTS), _normalise(out), atol=1e-5)
    np.testing.assert_allclose(model.encode_images(images), _normalise(img), atol=1e-5)
    assert model.logit_scale == pytest.approx(100.0, rel=1e-5)


def test_shared_image_encoder_shares_cached_image_embeddings(tmp_path, tiny_model_dir, images):
    st = make_tiny_sentence_transformer(tmp_path / "st", seed=5)
    clip = load_model(tiny_model_dir, cache=tmp_path / "cache")
    clip.encode_images(images)
    multi = load_model(st, image_model=tiny_model_dir, cache=tmp_path / "cache")
    multi.encode_images(images)
    assert multi.cache.stats["images"].hits == len(images) and multi.cache.stats["images"].misses == 0
    assert multi.cache.namespaces["captions"] != clip.cache.namespaces["captions"]
