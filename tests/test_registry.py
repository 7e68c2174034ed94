"""The registry of model families and models, and the hub helpers' safe weight loading."""

import pickle

import pytest
import torch

from labclip.errors import LabclipError
from labclip.hub import load_weights
from labclip.lab.compare import is_multilingual
from labclip.registry import (
    ALIASES,
    BY_ID,
    DEFAULT_MODEL,
    FAMILIES,
    MODELS,
    available_models,
    closest,
    default_models,
    lookup,
)
from labclip.spec import ModelSpec
from labclip.testing import make_tiny_altclip, make_tiny_mclip, make_tiny_sentence_transformer


def test_every_entry_is_consistent():
    assert len(BY_ID) == len(MODELS), "duplicate ids"
    for info in MODELS:
        assert info.family in FAMILIES
        assert info.paired == (info.image_tower is not None), info.id
        if info.image_tower:
            assert BY_ID[info.image_tower].family == "clip"
        assert info.weights and info.context_length > 0 and info.languages
        assert info.multilingual == (len(info.languages) > 1), info.id
    assert DEFAULT_MODEL in default_models()
    assert set(available_models()) == set(BY_ID) | set(ALIASES)


def test_aliases_and_pairs_resolve_in_one_place():
    assert lookup("ViT-L/14@336px").id == "openai/clip-vit-large-patch14-336"
    pair = ModelSpec.parse("sentence-transformers/clip-ViT-B-32-multilingual-v1+ViT-B/16").info()
    assert pair.family == "sentence-transformers" and pair.image_source == "openai/clip-vit-base-patch16"
    assert lookup("M-CLIP/XLM-Roberta-Large-Vit-B-32").image_source == DEFAULT_MODEL
    unknown = lookup("someone/some-clip")
    assert unknown.family == "clip" and unknown.image_source == "someone/some-clip" and not unknown.languages
    assert closest("ViT-B/23") == "ViT-B/32" and closest("zzzz") is None


def test_local_folders_are_recognised_by_their_files(tmp_path):
    assert lookup(str(make_tiny_sentence_transformer(tmp_path / "st"))).family == "sentence-transformers"
    assert lookup(str(make_tiny_mclip(tmp_path / "mc"))).family == "m-clip"
    assert lookup(str(make_tiny_altclip(tmp_path / "alt"))).family == "altclip"
    assert lookup(str(tmp_path / "st")).image_source == DEFAULT_MODEL


def test_multilingual_comes_from_the_family(tiny_model, tmp_path):
    from labclip import load_model

    assert not is_multilingual(tiny_model) and tiny_model.family == "clip"
    alt = load_model(make_tiny_altclip(tmp_path / "alt"), cache=False)
    assert is_multilingual(alt) and alt.family == "altclip" and not alt.openai_text_cleaning


def test_weights_prefer_safetensors_and_never_unpickle_objects(tmp_path):
    from safetensors.torch import save_file

    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save({"w": torch.zeros(2, 3)}, tmp_path / "pytorch_model.bin")
    assert torch.equal(load_weights(tmp_path)["w"], torch.zeros(2, 3))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    assert torch.equal(load_weights(tmp_path)["w"], tensors["w"])

    evil = tmp_path / "evil"
    evil.mkdir()
    with open(evil / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": Exploit(str(tmp_path / "pwned"))}, f, protocol=2)
    with pytest.raises(LabclipError, match="refused to load"):
        load_weights(evil)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(LabclipError, match="no weights file"):
        load_weights(tmp_path / "evil", ("model.safetensors",))


class Exploit:
    """Unpickling it would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
