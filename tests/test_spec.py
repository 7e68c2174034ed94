"""The one model-name grammar (ModelSpec.parse) and the one identity of a loaded model (ModelId)."""

import os
import re
import shutil
import sys
import types

import numpy as np
import pytest

from labclip.adapter import TextAdapter, apply_adapter
from labclip.errors import LabclipError
from labclip.model import check_model, load_model
from labclip.spec import ModelSpec, folder_digest, shown_model, shown_revision

PAIR = "sentence-transformers/clip-ViT-B-32-multilingual-v1"


@pytest.mark.parametrize(("name", "parts"), [
    ("ViT-B/32", ("ViT-B/32", None, None, None)),
    ("openai/clip-vit-base-patch16", ("openai/clip-vit-base-patch16", None, None, None)),
    ("demo", ("demo", None, None, None)),
    (f"{PAIR}+ViT-B/16", (PAIR, "ViT-B/16", None, None)),
    ("ViT-B/32+adapter:a/b.safetensors", ("ViT-B/32", None, None, "a/b.safetensors")),
    ("ViT-B/32+finetune:ckpt", ("ViT-B/32", None, "ckpt", None)),
    ("ViT-B/32+finetune:ckpt+adapter:a.safetensors", ("ViT-B/32", None, "ckpt", "a.safetensors")),
    ("ViT-B/32+adapter:a.safetensors+finetune:ckpt", ("ViT-B/32", None, "ckpt", "a.safetensors")),
    (f"{PAIR}+ViT-B/16+adapter:x", (PAIR, "ViT-B/16", None, "x")),
])
def test_every_form_of_a_model_name_parses_into_its_parts(name, parts):
    spec = ModelSpec.parse(name)
    assert (spec.text, spec.image, spec.finetune, spec.adapter) == parts
    assert ModelSpec.parse(str(spec)) == spec


def test_a_local_folder_is_one_model_even_with_a_plus_in_its_name(tmp_path):
    folder = tmp_path / "clip+ru"
    folder.mkdir()
    spec = ModelSpec.parse(str(folder))
    assert (spec.text, spec.image, spec.adapter) == (str(folder), None, None)
    with_adapter = ModelSpec.parse(f"{folder}+adapter:{tmp_path / 'a.safetensors'}")
    assert with_adapter.text == str(folder) and with_adapter.adapter == str(tmp_path / "a.safetensors")
    paired = ModelSpec.parse(f"{folder}+ViT-B/16")  # the pair splits after the folder, not at its first '+'
    assert (paired.text, paired.image) == (str(folder), "ViT-B/16")
    assert shown_model(str(folder)) == "clip+ru" and shown_model(f"{folder}+ViT-B/16", " + ") == "clip+ru + ViT-B/16"


def test_shown_names_carry_no_machine_path(tmp_path):
    spec = ModelSpec.parse(f"ViT-B/32+finetune:{tmp_path / 'ft'}+adapter:{tmp_path / 'ad.safetensors'}")
    assert spec.shown() == "ViT-B/32+finetune:ft+adapter:ad.safetensors"
    assert str(tmp_path) not in spec.shown(" + ")


@pytest.mark.parametrize(("name", "message"), [
    ("", "the model name is empty"),
    ("+adapter:a.safetensors", "needs a model before it and a path after it"),
    ("ViT-B/32+adapter:", "needs a model before it and a path after it"),
    ("ViT-B/32+finetune:", "needs a model before it and a path after it"),
    ("ViT-B/32+adapter:a+adapter:b", "more than one '+adapter:' part"),
    ("ViT-B/32+", "a pair is TEXT+IMAGE"),
    ("+ViT-B/32", "a pair is TEXT+IMAGE"),
])
def test_malformed_names_are_one_line_errors(name, message):
    with pytest.raises(LabclipError, match=re.escape(message)) as err:
        ModelSpec.parse(name)
    assert "\n" not in str(err.value) and str(err.value).startswith("model ")


def test_registry_entry_of_a_pair_names_its_image_tower():
    info = ModelSpec.parse(f"{PAIR}+ViT-B/16").info()
    assert info.family == "sentence-transformers" and info.image_source == "openai/clip-vit-base-patch16"


def _copy(src, dst, touch=False):
    shutil.copytree(src, dst)
    if touch:
        for path in dst.rglob("*"):
            os.utime(path, (1_000_000, 1_000_000))
    return dst


def test_same_weights_anywhere_have_one_fingerprint_and_a_changed_file_another(tmp_path, tiny_model_dir):
    copy = _copy(tiny_model_dir, tmp_path / "elsewhere" / "renamed", touch=True)
    a, b = (load_model(d, cache=False).identity for d in (tiny_model_dir, copy))
    assert a.fingerprint == b.fingerprint and a.cache_key() == b.cache_key()
    assert folder_digest(tiny_model_dir) == folder_digest(copy)
    assert a.revision.rsplit("@", 1)[1] == b.revision.rsplit("@", 1)[1] == folder_digest(copy)[:12]

    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only the content differs
    changed = load_model(copy, cache=False).identity
    assert changed.fingerprint != a.fingerprint and changed.cache_key() != a.cache_key()
    assert changed.cache_key(images_only=True) != a.cache_key(images_only=True)
    assert changed.revision != a.revision and shown_revision(f"local:{copy}") == changed.revision


def test_identity_record_is_the_provenance_record(tiny_model_dir, tmp_path):
    from labclip.lab.provenance import model_record

    model = load_model(tiny_model_dir, cache=False)
    assert model.identity.record() == model_record(model)
    assert model.identity.name == model.name == tiny_model_dir.name
    rng = np.random.default_rng(0)
    adapter = TextAdapter(rng.normal(size=(model.dim, model.dim)).astype(np.float32),
                          rng.normal(size=model.dim).astype(np.float32), {})
    adapted = apply_adapter(model, adapter.save(tmp_path / "ru-en.safetensors"))
    ident = adapted.identity
    assert ident.id == f"{tiny_model_dir.name}+adapter:ru-en"
    assert ident.revision == f"{model.identity.revision}+adapter:{adapter.sha256}"  # the base's revision, once
    assert ident.fingerprint != model.identity.fingerprint and ident.adapter["sha256"] == adapter.sha256
    assert ident.cache_key(images_only=True) == model.identity.cache_key(images_only=True)
    assert ident.cache_key() != model.identity.cache_key()


def test_loaded_models_share_one_interface(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir, cache=False)
    rng = np.random.default_rng(1)
    adapter = TextAdapter(rng.normal(size=(model.dim, model.dim)).astype(np.float32),
                          rng.normal(size=model.dim).astype(np.float32), {})
    adapted = apply_adapter(model, adapter)
    for loaded in (model, adapted):
        assert loaded.text_model is model and loaded.family == "clip" and loaded.dim == model.dim
        assert loaded.logit_scale == model.logit_scale and loaded.logit_bias is None and loaded.untrained
    assert model.adapter_card is None and adapted.adapter_card["sha256"] == adapter.sha256


def test_finetune_part_goes_through_labclip_finetune(monkeypatch, tmp_path, tiny_model_dir):
    weights = tmp_path / "ft.safetensors"
    weights.write_bytes(b"weights")
    name = f"{tiny_model_dir}+finetune:{weights}"
    monkeypatch.setitem(sys.modules, "labclip.finetune", None)  # an installation without the module
    with pytest.raises(LabclipError, match=r"'\+finetune:' needs labclip.finetune"):
        load_model(name, cache=False)

    calls = []
    fake = types.ModuleType("labclip.finetune")
    fake.apply_finetune = lambda model, path: calls.append((model.source, path))
    monkeypatch.setitem(sys.modules, "labclip.finetune", fake)
    tuned = load_model(name, cache=tmp_path / "cache")
    plain = load_model(tiny_model_dir, cache=tmp_path / "cache")
    assert calls == [(str(tiny_model_dir), str(weights))]
    assert tuned.name == f"{tiny_model_dir.name}+finetune:ft.safetensors" and tuned.finetune == str(weights)
    assert tuned.identity.fingerprint != plain.identity.fingerprint
    assert tuned.cache.namespaces["captions"] != plain.cache.namespaces["captions"]  # no embedding of the base model is reused

    check_model(name)
    with pytest.raises(LabclipError, match="no fine-tuned weights at"):
        check_model(f"{tiny_model_dir}+finetune:{tmp_path / 'missing'}")
    with pytest.raises(LabclipError, match="no fine-tuned weights at"):
        load_model(f"{tiny_model_dir}+finetune:{tmp_path / 'missing'}", cache=False)


def test_a_demo_identity_is_its_seeded_revision():
    model = load_model("demo", cache=False)
    assert model.identity.id == "demo" and model.identity.revision == model.revision
    assert model.identity.fingerprint == load_model("demo", cache=False).identity.fingerprint
