"""A text adapter from another (multilingual) text tower, composed as ``MODEL+adapter:PATH``: fitted with
``labclip adapt text --source-model``, loaded by hub id from hub-layout replicas (offline), checked
against embeddings computed here with transformers, and used by ``labclip match`` and the report runner."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
import torch

from hub_replicas import commit_of, snapshot_dir, write_replica
from labclip import LabclipError, load_model
from labclip.adapter import AdaptedModel, load_text_adapter
from labclip.cli import main
from labclip.config import DEFAULT_CAPTIONS
from labclip.data import load_captions
from labclip.lab.experiment import check_model_or_demo, load_model_or_demo
from labclip.lab.narrative import text_processing
from labclip.metrics import correct_ranks
from labclip.model import check_model, describe

CLIP = "openai/clip-vit-base-patch32"
ST = "sentence-transformers/clip-ViT-B-32-multilingual-v1"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-hub-cache")
    for repo in (CLIP, ST, "openai/clip-vit-base-patch16"):
        write_replica(cache, repo)
    return cache


@pytest.fixture
def offline_hub(hub_cache, monkeypatch, tmp_path):
    """The replicas as the Hugging Face cache, offline, here and in the report runner's kernels."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path / "labclip-cache"))
    return hub_cache


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def st_embeddings(cache, texts: list[str]) -> np.ndarray:
    """The multilingual tower's text embeddings, computed with transformers and the Dense weights."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, DistilBertModel

    snap = snapshot_dir(cache, ST)
    batch = AutoTokenizer.from_pretrained(snap)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = DistilBertModel.from_pretrained(snap, use_safetensors=True)(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    weight = load_file(str(snap / "2_Dense" / "model.safetensors"))["linear.weight"]
    return torch.nn.functional.normalize(pooled @ weight.T, dim=-1).numpy()


def adapted_by_hand(adapter, embeddings: np.ndarray) -> np.ndarray:
    out = embeddings.astype(np.float64) @ adapter.weight.astype(np.float64) + adapter.bias
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def multilingual_adapter(offline_hub, tmp_path, capsys):
    """``labclip adapt text`` from the multilingual tower's Russian captions onto CLIP's English ones."""
    out = tmp_path / "adapters" / "st-ru-en.safetensors"
    code, _, err = run(capsys, "adapt", "text", "--model", CLIP, "--source-model", ST, "--folds", "3",
                       "--alpha", "0.5", "--no-cache", "--out", out)
    assert code == 0, err
    return out


def test_card_names_source_and_target_towers(offline_hub, multilingual_adapter):
    card = load_text_adapter(multilingual_adapter).card
    assert card["target_model"] == CLIP and card["target_revision"] == commit_of(CLIP)
    assert card["source_model"] == f"{ST}+{CLIP}" and card["source_revision"] == commit_of(ST)
    assert card["source_lang"] == "ru" and card["target_lang"] == "en"


def test_model_plus_adapter_encodes_text_through_the_source_tower(offline_hub, multilingual_adapter):
    adapter = load_text_adapter(multilingual_adapter)
    model = load_model(f"{CLIP}+adapter:{multilingual_adapter}", cache=False)
    assert isinstance(model, AdaptedModel) and model.separate_text_tower
    table = load_captions(DEFAULT_CAPTIONS, None, ["ru", "en"])
    russian = list(table["ru"])
    expected = adapted_by_hand(adapter, st_embeddings(offline_hub, russian))
    np.testing.assert_allclose(model.encode_texts(russian), expected, atol=1e-5)
    # the adapter was fitted on this: on its own training pairs it must beat the raw tower's cosine
    clip = load_model(CLIP, cache=False)
    english = clip.encode_texts(list(table["en"]))
    raw_cosine = np.sum(st_embeddings(offline_hub, russian) * english, axis=1).mean()
    assert np.sum(expected * english, axis=1).mean() > raw_cosine
    # images go through CLIP's image tower, untouched
    np.testing.assert_array_equal(model.encode_images(table["path"][:3]), clip.encode_images(table["path"][:3]))
    # the tokenizer and context are the source tower's (what the report's token statistics use)
    assert model.context_length == model.text_model.context_length != clip.context_length
    assert model.tokenizer is model.text_model.tokenizer
    facts = describe(model)
    assert facts["source"] == CLIP and facts["revision"].endswith(f"+adapter:{adapter.sha256}")
    assert facts["adapter"]["text_tower"] == {"model": ST, "revision": commit_of(ST)}
    assert facts["adapter"]["text_path"].startswith(f"captions → {ST} text tower → adapter st-ru-en → {CLIP} space")
    method = " ".join(text_processing(model).replace("\\", "").split())
    assert "DistilBertTokenizer" in method or "PreTrainedTokenizerFast" in method
    assert f"Captions are encoded by the text tower of {ST} (revision {commit_of(ST)}), not by {CLIP}'s own" in method
    assert "linear text adapter st-ru-en" in method and "fitted on 12 caption pairs, ru→en, alpha 0.5" in method


def test_adapter_for_another_target_is_a_one_line_error(offline_hub, multilingual_adapter):
    check_model(f"{CLIP}+adapter:{multilingual_adapter}")  # target and source tower available
    for check in (lambda spec: load_model(spec, cache=False), check_model):
        with pytest.raises(LabclipError) as caught:
            check(f"ViT-B/16+adapter:{multilingual_adapter}")
        message = str(caught.value)
        assert "\n" not in message and CLIP in message and "ViT-B/16" in message


def test_a_missing_source_tower_is_an_error_never_a_fallback(offline_hub, multilingual_adapter, tmp_path,
                                                             monkeypatch):
    import huggingface_hub.constants as constants

    only_clip = tmp_path / "only-clip"
    write_replica(only_clip, CLIP)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(only_clip))
    with pytest.raises(LabclipError, match="sentence-transformers"):
        load_model_or_demo(f"{CLIP}+adapter:{multilingual_adapter}")
    # the report runner's check, which reads no weights, decides the same
    with pytest.raises(LabclipError, match="sentence-transformers"):
        check_model_or_demo(f"{CLIP}+adapter:{multilingual_adapter}")


def test_match_uses_and_records_the_source_tower(offline_hub, multilingual_adapter, tmp_path, capsys):
    out = tmp_path / "m.json"
    code, _, err = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "ru", "--model",
                       f"{CLIP}+adapter:{multilingual_adapter}", "--no-cache", "--out", out)
    assert code == 0, err
    result = json.loads(out.read_text(encoding="utf-8"))
    record = result["provenance"]["model"]
    assert record["id"] == f"{CLIP}+adapter:st-ru-en" and record["adapter"]["text_tower"]["model"] == ST
    table = load_captions(DEFAULT_CAPTIONS, None, ["ru"])
    images = load_model(CLIP, cache=False).encode_images(table["path"])
    texts = adapted_by_hand(load_text_adapter(multilingual_adapter), st_embeddings(offline_hub, list(table["ru"])))
    assert result["i2t_acc1"] == pytest.approx(np.mean(correct_ranks(images @ texts.T) == 1))
    assert result["t2i_acc1"] == pytest.approx(np.mean(correct_ranks(texts @ images.T) == 1))


def test_report_runner_says_text_goes_through_source_tower_and_adapter(offline_hub, multilingual_adapter, tmp_path,
                                                                       capsys):
    out = tmp_path / "reports"
    code, _, err = run(capsys, "report", "--model", f"{CLIP}+adapter:{multilingual_adapter}", "--langs", "ru",
                       "--notebooks", "01_matching", "--no-pdf", "--out", out)
    assert code == 0, err
    page = html.unescape(re.sub(r"<[^>]+>", " ", (out / "01_matching.html").read_text(encoding="utf-8")))
    text = " ".join(page.split())
    assert f"captions → {ST} text tower → adapter st-ru-en → {CLIP} space; images → {CLIP} image tower" in text
    assert "0 captions from the cache, 12 encoded" in text  # counted by the source tower's cache
    run_record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run_record["fallback_reason"] is None
    assert str(tmp_path) not in (out / "01_matching.html").read_text(encoding="utf-8")
