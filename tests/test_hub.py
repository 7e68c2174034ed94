"""Models loaded by hub id from hub-layout cache replicas (HF_HUB_OFFLINE), against direct transformers
computations; safe .bin loading; "not found" vs "unreachable"; the README model table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hub_replicas import FILES, commit_of, snapshot_dir, write_all
from labclip import hub, load_model, registry
from labclip.config import CAPTIONS_DIR, PROJ_ROOT
from labclip.data import load_captions
from labclip.errors import LabclipError
from labclip.images import load_image
from labclip.metrics import match_probabilities

EN = ["a photo of a cup of coffee", "a red car", "a cat", "a rocket"]
RU = ["фотография чашки кофе на красном блюдце", "кошка", "ракета", "лошадь"]


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-hub-cache")
    write_all(cache)
    return cache


@pytest.fixture
def offline_hub(hub_cache, monkeypatch, tmp_path):
    """The replicas as the Hugging Face cache, offline mode on, a fresh labclip cache."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path / "labclip-cache"))
    return hub_cache


@pytest.fixture(scope="module")
def images():
    return load_captions(CAPTIONS_DIR / "default.csv")["path"][:4]


def _unit(x: torch.Tensor) -> np.ndarray:
    x = getattr(x, "pooler_output", x)
    return torch.nn.functional.normalize(x.float(), dim=-1).numpy()


def _mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def _matches_transformers(model, direct, tokenizer, texts: list[str], images) -> None:
    """``model``'s text and image embeddings equal those of the transformers model ``direct`` (with ``tokenizer``)."""
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    pixels = model.pixel_values(images)  # preprocessing equals OpenAI's (test_fidelity), not HF's rounding
    with torch.no_grad():
        text = _unit(direct.eval().get_text_features(**batch))
        image = _unit(direct.get_image_features(pixel_values=pixels))
    np.testing.assert_allclose(model.encode_texts(texts), text, atol=1e-5)
    np.testing.assert_allclose(model.encode_images(images), image, atol=1e-5)


def test_every_named_model_has_a_replica():
    named = set(registry.BY_ID) | set(registry.ALIASES.values()) | set(registry.SUPPORT_REPOS)
    named |= {m.image_tower for m in registry.MODELS if m.image_tower}
    assert named <= set(FILES)


@pytest.mark.parametrize("name", ["openai/clip-vit-base-patch32", "ViT-B/32", "ViT-B/16", "ViT-L/14",
                                  "ViT-L/14@336px"])
def test_clip_by_hub_id_matches_transformers(offline_hub, images, name):
    from transformers import CLIPModel, CLIPTokenizer

    model = load_model(name, cache=False)
    repo = registry.resolve_model_name(name)
    snap = snapshot_dir(offline_hub, repo)
    assert model.revision == commit_of(repo) and not model.untrained
    direct = CLIPModel.from_pretrained(snap, use_safetensors=True)
    _matches_transformers(model, direct, CLIPTokenizer.from_pretrained(snap), EN, images)


def test_sentence_transformers_by_hub_id(offline_hub, images):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, DistilBertModel

    name = "sentence-transformers/clip-ViT-B-32-multilingual-v1"
    model = load_model(name, cache=False)
    snap = snapshot_dir(offline_hub, name)
    assert model.revision == commit_of(name)
    assert model.image_revision == commit_of("openai/clip-vit-base-patch32")
    texts = EN + RU
    batch = AutoTokenizer.from_pretrained(snap)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = DistilBertModel.from_pretrained(snap, use_safetensors=True)(**batch).last_hidden_state
    weight = load_file(str(snap / "2_Dense" / "model.safetensors"))["linear.weight"]
    expected = _unit(_mean_pool(hidden, batch["attention_mask"]) @ weight.T)
    np.testing.assert_allclose(model.encode_texts(texts), expected, atol=1e-5)
    clip = load_model("openai/clip-vit-base-patch32", cache=False)
    np.testing.assert_allclose(model.encode_images(images), clip.encode_images(images), atol=1e-6)


def test_mclip_bin_only_with_model_base_from_cache(offline_hub):
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    name = "M-CLIP/XLM-Roberta-Large-Vit-B-32"
    snap = snapshot_dir(offline_hub, name)
    assert not list(snap.glob("*.safetensors"))
    model = load_model(name, cache=False)
    assert model.revision == commit_of(name)
    state = torch.load(snap / "pytorch_model.bin", weights_only=True)
    # saved by transformers 4.8: the position_ids buffer is in the file (and is arange, as the model's own)
    legacy = state.pop("transformer.embeddings.position_ids")
    assert torch.equal(legacy, torch.arange(legacy.shape[-1]).expand(1, -1))
    base = XLMRobertaConfig.from_pretrained(snapshot_dir(offline_hub, "xlm-roberta-large"))
    xlmr = XLMRobertaModel(base).eval()
    xlmr.load_state_dict({k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")})
    texts = EN + RU
    batch = AutoTokenizer.from_pretrained(snap)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = _mean_pool(xlmr(**batch).last_hidden_state, batch["attention_mask"])
    expected = _unit(pooled @ state["LinearTransformation.weight"].T + state["LinearTransformation.bias"])
    np.testing.assert_allclose(model.encode_texts(texts), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["BAAI/AltCLIP-m18", "BAAI/AltCLIP-m9", "BAAI/AltCLIP"])
def test_altclip_bin_only_by_hub_id(offline_hub, images, name):
    from transformers import AltCLIPModel, AutoTokenizer

    snap = snapshot_dir(offline_hub, name)
    assert not list(snap.glob("*.safetensors"))
    model = load_model(name, cache=False)
    assert model.revision == commit_of(name)
    _matches_transformers(model, AltCLIPModel.from_pretrained(snap), AutoTokenizer.from_pretrained(snap), EN + RU, images)


def test_siglip_pads_to_64_and_scores_with_sigmoid(offline_hub, images):
    from transformers import AutoTokenizer, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    name = "google/siglip-base-patch16-256-multilingual"
    snap = snapshot_dir(offline_hub, name)
    model = load_model(name, cache=False)
    assert model.revision == commit_of(name) and model.context_length == 64
    direct = SiglipModel.from_pretrained(snap).eval()
    texts = EN + RU
    batch = AutoTokenizer.from_pretrained(snap)(texts, padding="max_length", max_length=64, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 64
    pixels = SiglipImageProcessorPil.from_pretrained(snap)([load_image(p) for p in images],
                                                            return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = direct(input_ids=batch["input_ids"], pixel_values=pixels)
    text, image = model.encode_texts(texts), model.encode_images(images)
    np.testing.assert_allclose(text, _unit(out.text_embeds), atol=1e-5)
    np.testing.assert_allclose(image, _unit(out.image_embeds), atol=2e-3)
    probs = match_probabilities(image @ text.T, model.logit_scale, model.logit_bias)
    direct_probs = torch.sigmoid(out.logits_per_image).numpy()
    np.testing.assert_allclose(probs, direct_probs, atol=2e-3)
    assert not np.allclose(probs.sum(axis=1), 1.0)
    # the top-k table of reports and `labclip match` scores each listed pair with the same sigmoid
    from labclip.lab.tables import topk_table
    from labclip.metrics import topk_indices

    table = topk_table(image @ text.T, texts, k=3, logit_scale=model.logit_scale, logit_bias=model.logit_bias)
    order = topk_indices(image @ text.T, 3)
    np.testing.assert_allclose(table.probability, np.take_along_axis(direct_probs, order, axis=1).ravel(), atol=2e-3)


def test_siglip_captions_are_canonicalised_as_trained(offline_hub):
    """SigLIP saw canonical text: 'A Photo of a CAT!' embeds exactly as 'a photo of a cat' does, and labclip's
    canonical form is the tokenizer's own ``canonicalize_text`` (big_vision's)."""
    from transformers import SiglipModel, SiglipTokenizer

    from labclip.text import siglip_text

    name = "google/siglip-base-patch16-256-multilingual"
    snap = snapshot_dir(offline_hub, name)
    model = load_model(name, cache=False)
    shouted, trained = model.encode_texts(["A Photo of a CAT!", "a photo of a cat"])
    np.testing.assert_array_equal(shouted, trained)
    from labclip.lab.narrative import text_processing

    assert registry.TEXT_HANDLING[registry.CANONICAL] in text_processing(model)
    tokenizer = SiglipTokenizer(vocab_file=str(snap / "spiece.model"))
    for text in ["A Photo of a CAT!", "  Кошка,  на КРЫШЕ...\t(ночью)", "it's 5 o'clock — «tea»?", *EN, *RU]:
        assert siglip_text(text, registry.CANONICAL) == tokenizer.canonicalize_text(text)
    batch = tokenizer(["a photo of a cat"], padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        direct = _unit(SiglipModel.from_pretrained(snap).eval().get_text_features(input_ids=batch["input_ids"]))
    np.testing.assert_allclose(trained[None], direct, atol=1e-5)


@pytest.mark.parametrize("name", ["google/siglip2-base-patch16-224", "google/siglip2-base-patch32-256"])
def test_siglip2_lowercases_pads_to_64_and_matches_transformers(offline_hub, images, name):
    """Fixed-resolution SigLIP 2: ``SiglipModel`` with the Gemma tokenizer, captions lower-cased as in training."""
    from transformers import AutoTokenizer, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    snap = snapshot_dir(offline_hub, name)
    assert {"tokenizer.json", "tokenizer.model"} <= {p.name for p in snap.iterdir()}
    model = load_model(name, cache=False)
    assert model.revision == commit_of(name) and model.context_length == 64 and model.family == "siglip"
    tokenizer = AutoTokenizer.from_pretrained(snap)
    assert type(tokenizer).__name__ == "GemmaTokenizer" and tokenizer("A")["input_ids"] != tokenizer("a")["input_ids"]
    texts = ["A Photo of a CUP of Coffee", "Кошка", *EN, *RU]
    assert tokenizer.padding_side == "left"  # Gemma's default; SigLIP 2 was trained with pads appended
    batch = tokenizer([t.lower() for t in texts], padding="max_length", max_length=64, padding_side="right",
                      return_tensors="pt")
    assert (batch["input_ids"][:, -1] == tokenizer.pad_token_id).all()
    raw = tokenizer(texts, padding="max_length", max_length=64, padding_side="right", return_tensors="pt")
    pixels = SiglipImageProcessorPil.from_pretrained(snap)([load_image(p) for p in images],
                                                            return_tensors="pt")["pixel_values"]
    direct = SiglipModel.from_pretrained(snap).eval()
    with torch.no_grad():
        out = direct(input_ids=batch["input_ids"], pixel_values=pixels)
        unlowered = _unit(direct.get_text_features(input_ids=raw["input_ids"]))
    text = model.encode_texts(texts)
    np.testing.assert_allclose(text, _unit(out.text_embeds), atol=1e-5)
    assert not np.allclose(text[:2], unlowered[:2], atol=1e-3)  # lower-casing changes what the model sees
    from labclip.lab.narrative import image_processing, text_processing

    assert registry.TEXT_HANDLING[registry.LOWERCASE] in text_processing(model)
    assert "bilinear resize to 32×32" in image_processing(model.preprocess)
    np.testing.assert_allclose(model.encode_images(images), _unit(out.image_embeds), atol=2e-3)


def test_siglip2_naflex_goes_through_siglip2model_with_max_num_patches(offline_hub, images):
    from transformers import AutoTokenizer, Siglip2Model
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    name = "google/siglip2-base-patch16-naflex"
    snap = snapshot_dir(offline_hub, name)
    model = load_model(name, cache=False)
    assert model.revision == commit_of(name) and model.preprocess.max_num_patches == 16
    from labclip.lab.narrative import image_processing

    assert "at most 16 patches of 8 px" in image_processing(model.preprocess)
    processor = Siglip2ImageProcessorPil.from_pretrained(snap)
    inputs = processor([load_image(p) for p in images], return_tensors="pt")
    assert len(set(map(tuple, inputs["spatial_shapes"].tolist()))) > 1  # aspect ratios kept, not squared
    tokenizer = AutoTokenizer.from_pretrained(snap)
    texts = ["A Red CAR", *RU]
    batch = tokenizer([t.lower() for t in texts], padding="max_length", max_length=64, padding_side="right",
                      return_tensors="pt")
    direct = Siglip2Model.from_pretrained(snap).eval()
    with torch.no_grad():
        out = direct(input_ids=batch["input_ids"], **inputs)
    np.testing.assert_allclose(model.encode_texts(texts), _unit(out.text_embeds), atol=1e-5)
    np.testing.assert_allclose(model.encode_images(images), _unit(out.image_embeds), atol=1e-4)
    probs = match_probabilities(model.encode_images(images) @ model.encode_texts(texts).T, model.logit_scale,
                                model.logit_bias)
    np.testing.assert_allclose(probs, torch.sigmoid(out.logits_per_image).numpy(), atol=1e-4)


def test_translator_revision_and_cache_key(offline_hub, tmp_path):
    from transformers import MarianMTModel, MarianTokenizer

    from labclip.translate import Translator

    name = "Helsinki-NLP/opus-mt-ru-en"
    snap = snapshot_dir(offline_hub, name)
    translator = Translator(name, cache=tmp_path / "t")
    assert translator.revision == commit_of(name)
    tokenizer, direct = MarianTokenizer.from_pretrained(snap), MarianMTModel.from_pretrained(snap).eval()
    batch = tokenizer(RU, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = direct.generate(**batch, max_new_tokens=8, num_beams=1, do_sample=False)
    translator.max_new_tokens = 8
    assert translator.translate(RU) == tokenizer.batch_decode(out, skip_special_tokens=True)

    moved = _new_revision(offline_hub, name)
    try:
        again = Translator(name, cache=tmp_path / "t")
        assert again.revision == moved and again.cache_file != translator.cache_file
        again.translate(RU[:1])
        assert again.model_calls == 1
    finally:
        _restore_revision(offline_hub, name)


def test_translator_loads_without_the_sacremoses_advice(offline_hub, tmp_path):
    import importlib.util
    import warnings

    from transformers import MarianTokenizer

    from labclip.translate import Translator

    name = "Helsinki-NLP/opus-mt-ru-en"
    with warnings.catch_warnings(record=True) as direct:
        warnings.simplefilter("always")
        tokenizer = MarianTokenizer.from_pretrained(snapshot_dir(offline_hub, name))
    if importlib.util.find_spec("sacremoses") is None:  # the advice labclip silences does exist
        assert any("sacremoses" in str(w.message) for w in direct)
    calls = []
    tokenizer.punc_normalizer = lambda text: calls.append(text) or text  # what sacremoses would provide
    tokenizer(["Привет, мир!", "кот"], padding=True)
    assert tokenizer("кот")["input_ids"] and calls == []  # never used while tokenising: the advice is noise
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        Translator(name, cache=tmp_path / "t")
    assert not [w for w in ours if "sacremoses" in str(w.message)]


def test_embedding_cache_keyed_by_revision(offline_hub, tmp_path):
    name = "sentence-transformers/clip-ViT-B-32-multilingual-v1"
    first = load_model(name, cache=tmp_path / "emb")
    first.encode_texts(RU)
    _new_revision(offline_hub, name)
    try:
        second = load_model(name, cache=tmp_path / "emb")
        assert second.revision != first.revision
        assert second.cache.namespaces["captions"] != first.cache.namespaces["captions"]
        second.encode_texts(RU)
        assert second.cache.stats["captions"].hits == 0
    finally:
        _restore_revision(offline_hub, name)


def _new_revision(cache: Path, repo: str) -> str:
    """Copy the replica to a second commit and point refs/main at it (as a hub update would)."""
    old = snapshot_dir(cache, repo)
    new_commit = "f" * 40
    shutil.copytree(old, old.parent / new_commit, symlinks=True, dirs_exist_ok=True)
    (old.parents[1] / "refs" / "main").write_text(new_commit)
    return new_commit


def _restore_revision(cache: Path, repo: str) -> None:
    (snapshot_dir(cache, repo).parents[1] / "refs" / "main").write_text(commit_of(repo))


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_in_bin_weights_are_refused(offline_hub, tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"weight": torch.zeros(2), "payload": _Evil(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(LabclipError, match="refused"):
        hub.load_weights(folder)
    assert not marker.exists()

    # The same file in place of M-CLIP's weights (our loader) and AltCLIP-m9's (transformers' loader).
    import huggingface_hub.constants as constants

    evil_cache = tmp_path / "hub"
    for repo in ("M-CLIP/XLM-Roberta-Large-Vit-B-32", "xlm-roberta-large", "BAAI/AltCLIP-m9"):
        shutil.copytree(snapshot_dir(offline_hub, repo).parents[1], snapshot_dir(evil_cache, repo).parents[1])
    for repo in ("M-CLIP/XLM-Roberta-Large-Vit-B-32", "BAAI/AltCLIP-m9"):
        shutil.copy(folder / "pytorch_model.bin", snapshot_dir(evil_cache, repo) / "pytorch_model.bin")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(evil_cache))
    for repo in ("M-CLIP/XLM-Roberta-Large-Vit-B-32", "BAAI/AltCLIP-m9"):
        with pytest.raises(LabclipError):
            load_model(repo, cache=False)
        assert not marker.exists()


def test_readme_model_table_agrees_with_registry():
    text = (PROJ_ROOT / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6 and "/" in cells[0]:
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(registry.BY_ID)
    for model_id, (_, family, languages, size, licence, default) in rows.items():
        info = registry.BY_ID[model_id]
        assert family == info.family and licence == (info.licence or "not stated on the hub page")
        assert languages == (", ".join(info.languages) if len(info.languages) <= 9 else
                             f"{len(info.languages)} languages, ru included")
        assert size == (f"{info.download_gb:.2f} GB" if info.download_gb is not None else "not checked")
        assert default == ("default" if info.default else "opt-in")


def test_default_set_fits_the_download_budget_and_supports_russian():
    extra = [registry.BY_ID[m] for m in registry.default_models(["en", "ru"])[1:]]
    assert registry.default_models(["en", "ru"])[0] == registry.DEFAULT_MODEL
    assert {m.family for m in extra} >= {"siglip"} and all(m.supports("ru") for m in extra)
    assert all(not m.paired or m.image_tower == registry.DEFAULT_MODEL for m in extra)
    assert sum(m.download_gb for m in extra) + registry.TRANSLATORS["Helsinki-NLP/opus-mt-ru-en"] < 2.5
    assert "BAAI/AltCLIP" not in registry.default_models(["en", "ru"])
    assert "M-CLIP/XLM-Roberta-Large-Vit-B-32" not in registry.default_models(["en", "ru"])
    assert registry.BY_ID["BAAI/AltCLIP-m9"].supports("ru") and registry.BY_ID["BAAI/AltCLIP-m18"].supports("ru")


def test_closest_known_id():
    assert registry.closest("openai/clip-vit-base-patch23") == "openai/clip-vit-base-patch32"
    assert registry.closest("ViT-B/23") == "ViT-B/32"
    assert registry.closest("completely/unrelated-thing-xyz") is None


# --- the command line against a fake hub ---------------------------------------------------------------------

def _cli(args, endpoint, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "empty-hub"), LABCLIP_CACHE=str(tmp_path / "lc"),
               PYTHONPATH=str(PROJ_ROOT / "src"), HF_HUB_DISABLE_TELEMETRY="1")
    return subprocess.run([sys.executable, "-m", "labclip.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("model, hint", [("openai/clip-vit-base-patch23", "openai/clip-vit-base-patch32"),
                                          ("ViT-B/23", "ViT-B/32")])
def test_model_the_hub_does_not_know_is_one_line_exit_2(fake_hub, tmp_path, model, hint):
    out = tmp_path / "m.csv"
    result = _cli(["compare", str(CAPTIONS_DIR / "default.csv"), "--langs", "en", "--models", model,
                   "--translator", "none", "--out", str(out)], fake_hub, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "not found on the Hugging Face hub" in lines[0] and f"did you mean '{hint}'" in lines[0]
    assert not out.exists()


def test_missing_local_path_is_one_line_exit_2(fake_hub, tmp_path):
    result = _cli(["compare", str(CAPTIONS_DIR / "default.csv"), "--langs", "en", "--models",
                   "./models/no-such-clip", "--translator", "none"], fake_hub, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no such model directory" in lines[0], result.stderr


def test_unreachable_hub_is_an_error_with_the_hint(tmp_path):
    out = tmp_path / "c.csv"
    result = _cli(["compare", str(CAPTIONS_DIR / "default.csv"), "--langs", "en", "--models",
                   "openai/clip-vit-base-patch32", "--translator", "none", "--out", str(out)],
                  "http://127.0.0.1:9", tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "hub cannot be reached" in lines[0] and "(--models demo)" in lines[0] and not out.exists()


def test_status_classification(fake_hub, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub)
    assert hub.status("openai/no-such-model", timeout=5) == "not found"
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert hub.status("openai/clip-vit-base-patch32", timeout=5) == "unreachable"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.status("openai/clip-vit-base-patch32") == "unreachable"


def test_report_json_and_title_carry_request_and_reason(offline_hub, tmp_path, monkeypatch):
    from labclip.lab.report import build_reports

    missing = "openai/clip-vit-base-patch16-not-cached"
    published = build_reports({"model": missing}, tmp_path / "out", notebooks=["01_matching"], pdf=False)
    report = next(p for p in published if p.name == "01_matching.json")
    import json

    prov = json.loads(report.read_text(encoding="utf-8"))["provenance"]
    assert prov["requested_model"] == missing and prov["model"]["name"] == "demo"
    assert "hub cannot be reached" in prov["fallback_reason"]
    page = next(p for p in published if p.suffix == ".html").read_text(encoding="utf-8")
    assert re.search(r"Requested model: (<code>)?openai/clip-vit-base-patch16-not-cached", page)
    assert "could not be loaded" in page
    # The demo model already stands in: neither the JSON nor the page advises using it, and the page names
    # the failure once ("could not be loaded: 'X' is not in the local cache", not "...: could not load model 'X': ...").
    assert "'demo' model" not in prov["fallback_reason"] and "'demo' model" not in page
    assert "or pass a local model directory" in prov["fallback_reason"]
    assert "could not be loaded: could not load" not in page
    assert re.search(f"could not be loaded: (&#x27;|&#39;|'){missing}(&#x27;|&#39;|') is not in the local Hugging Face "
                     "cache", page)


def test_default_comparison_runs_on_the_replicas(offline_hub):
    from labclip.lab.compare import compare
    from labclip.registry import DEFAULT_MODEL

    captions = load_captions(CAPTIONS_DIR / "default.csv", languages=["en", "ru"])
    result = compare(captions, ["en", "ru"], None)
    table = result.table
    expected = set(registry.default_models(["en", "ru"]))
    assert set(table["model"]) == expected and not result.skipped
    for model in expected:
        rows = table[table.model == model]
        assert set(rows.language) == {"en", "ru"} and rows["i2t_acc1"].notna().all()
    assert set(table[table.model == DEFAULT_MODEL].strategy) == {"raw", "translated"}
    assert set(table[table.model != DEFAULT_MODEL].strategy) == {"multilingual"}


def test_compare_command_compares_clip_the_sentence_transformers_tower_and_siglip2(offline_hub, capsys):
    from labclip.cli import main

    expected = registry.default_models(["en", "ru"])
    assert expected == [registry.DEFAULT_MODEL, "sentence-transformers/clip-ViT-B-32-multilingual-v1",
                        registry.DEFAULT_MULTILINGUAL]
    assert main(["compare", str(CAPTIONS_DIR / "default.csv"), "--langs", "en", "ru"]) == 0
    out = capsys.readouterr().out
    for model in expected:
        rows = [line.split() for line in out.splitlines() if line.split()[:1] == [model]]
        assert {row[1] for row in rows} == {"en", "ru"}, model
    assert "not compared" not in out


def test_readme_states_the_default_download_total():
    extra = sum(registry.BY_ID[m].download_gb for m in registry.default_models()[1:])
    total = extra + registry.TRANSLATORS["Helsinki-NLP/opus-mt-ru-en"]
    assert (f"The default set downloads {extra:.2f} GB beyond the main CLIP model, {total:.2f} GB with the "
            "Russian→English translator") in " ".join((PROJ_ROOT / "README.md").read_text(encoding="utf-8").split())


def test_siglip_report_probabilities_are_per_pair_sigmoids(offline_hub):
    from labclip.lab.experiment import Experiment

    model = load_model("google/siglip-base-patch16-256-multilingual", cache=False)
    exp = Experiment(model=model, captions=load_captions(CAPTIONS_DIR / "default.csv", languages=["en", "ru"]),
                     top_k=3)
    m = exp.matching("ru")
    expected = torch.sigmoid(torch.from_numpy(model.logit_scale * m.sim + model.logit_bias)).numpy()
    for row in m.topk.itertuples():
        i, j = m.images.index(row.image), m.captions.index(row.caption)
        assert row.probability == pytest.approx(expected[i, j], rel=1e-9)
    assert not np.allclose(m.topk.groupby("image").probability.sum(), 1.0)


def test_load_failure_without_the_demo_advice_where_the_demo_model_already_stands_in():
    line = hub.load_failure("m/x", "m/x", hub.ModelUnavailable("'m/x' is not in the local Hugging Face cache"))
    assert line.endswith("pass a local model directory, or use the untrained 'demo' model")
    assert hub.without_demo_hint(line) == ("could not load model 'm/x': 'm/x' is not in the local Hugging Face cache; "
                                           "connect to the network, put a downloaded copy in the Hugging Face cache "
                                           "(HF_HOME), or pass a local model directory")
