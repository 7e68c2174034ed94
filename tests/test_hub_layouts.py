"""Hub caches as huggingface_hub writes them (blobs + relative symlinks + refs/main, plain copies, local_dir
downloads): every revision labclip records is the snapshot's commit; legacy checkpoints load; a failed load
names the model and the part of it that failed; one broken model does not end a comparison."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hub_replicas import commit_of, etag_of, git_blob_sha1, snapshot_dir, write_local_dir, write_replica
from labclip import load_model
from labclip.cli import main, model_record
from labclip.config import CAPTIONS_DIR
from labclip.data import load_captions
from labclip.errors import LabclipError
from labclip.hub import ModelUnavailable
from labclip.model import check_model, describe

CLIP = "openai/clip-vit-base-patch32"
ST = "sentence-transformers/clip-ViT-B-32-multilingual-v1"
MCLIP = "M-CLIP/XLM-Roberta-Large-Vit-B-32"
MT = "Helsinki-NLP/opus-mt-ru-en"


def _use(monkeypatch, cache: Path, tmp_path: Path) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # and the same for the report's kernels
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path / "labclip-cache"))


@pytest.fixture(scope="module", params=["symlinks", "copies"])
def layout_cache(request, tmp_path_factory):
    cache = tmp_path_factory.mktemp(f"hub-{request.param}")
    for repo in (CLIP, ST, MCLIP, "xlm-roberta-large", MT):
        write_replica(cache, repo, request.param)
    return request.param, cache


def test_the_replica_is_what_huggingface_hub_writes(layout_cache):
    """huggingface_hub's own cache scan reads the replica as a download of the commit, and each blob is named by
    its ETag: the sha256 of an LFS file, the git sha1 of a small one."""
    from huggingface_hub import scan_cache_dir

    layout, cache = layout_cache
    info = scan_cache_dir(cache)
    assert not info.warnings
    repos = {repo.repo_id: repo for repo in info.repos}
    assert set(repos) >= {CLIP, ST, MCLIP, MT}
    for repo_id in (CLIP, ST, MCLIP, MT):
        (revision,) = repos[repo_id].revisions
        assert revision.commit_hash == commit_of(repo_id) and revision.refs == {"main"}
    snap = snapshot_dir(cache, CLIP)
    config, weights = snap / "config.json", snap / "model.safetensors"
    if layout == "copies":
        assert not config.is_symlink() and config.is_file()
        return
    assert config.is_symlink() and not os.path.isabs(os.readlink(config))
    assert os.readlink(config) == f"../../blobs/{git_blob_sha1(config.read_bytes())}"
    assert os.readlink(weights) == f"../../blobs/{hashlib.sha256(weights.read_bytes()).hexdigest()}"
    assert os.readlink(snapshot_dir(cache, ST) / "2_Dense" / "config.json").startswith("../../../blobs/")
    # the blob of config.json has a 40-hex name too: the very name the old code took for the commit
    assert len(Path(os.readlink(config)).name) == 40 and Path(os.readlink(config)).name != commit_of(CLIP)


def test_every_recorded_revision_is_the_snapshot_commit(layout_cache, monkeypatch, tmp_path):
    from labclip.translate import Translator

    _, cache = layout_cache
    _use(monkeypatch, cache, tmp_path)
    clip = load_model(CLIP, cache=tmp_path / "emb")
    assert clip.revision == clip.image_revision == commit_of(CLIP)
    assert describe(clip)["revision"] == commit_of(CLIP) and model_record(clip)["revision"] == commit_of(CLIP)
    st = load_model(ST, cache=False)
    assert (st.revision, st.image_revision) == (commit_of(ST), commit_of(CLIP))
    assert model_record(st)["revision"] == f"{commit_of(ST)}+{commit_of(CLIP)}"
    assert load_model(MCLIP, cache=False).revision == commit_of(MCLIP)
    assert Translator(MT, cache=tmp_path / "t").revision == commit_of(MT)


def test_cache_keys_are_the_same_whichever_way_the_cache_is_laid_out(monkeypatch, tmp_path):
    """Same commit, same files: a symlinked cache and a copied one give the same embedding and translation
    cache keys (keyed by the commit; the old code keyed the symlinked one by config.json's blob hash)."""
    from labclip.translate import Translator

    keys = {}
    for layout in ("symlinks", "copies"):
        cache = tmp_path / layout
        for repo in (CLIP, MT):
            write_replica(cache, repo, layout)
        _use(monkeypatch, cache, tmp_path)
        model = load_model(CLIP, cache=tmp_path / "emb")
        keys[layout] = (model.cache.namespaces, Translator(MT, cache=tmp_path / "t").cache_file)
    assert keys["symlinks"] == keys["copies"]


def test_out_files_and_the_report_record_the_commit(monkeypatch, tmp_path):
    from labclip.lab.report import build_reports

    cache = tmp_path / "hub"
    write_replica(cache, CLIP, "symlinks")
    _use(monkeypatch, cache, tmp_path)
    for out in (tmp_path / "m.json", tmp_path / "m.csv"):
        assert main(["match", str(CAPTIONS_DIR / "short.csv"), "--model", CLIP, "--out", str(out)]) == 0
    record = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))["provenance"]["model"]
    assert record["revision"] == commit_of(CLIP)
    assert set(pd.read_csv(tmp_path / "m.csv").model_revision) == {commit_of(CLIP)}
    published = build_reports({"model": CLIP, "captions": str(CAPTIONS_DIR / "short.csv")}, tmp_path / "out",
                              notebooks=["01_matching"], pdf=False)
    prov = json.loads(next(p for p in published if p.name == "01_matching.json").read_text(encoding="utf-8"))
    assert prov["provenance"]["model"]["revision"] == commit_of(CLIP) and not prov["provenance"]["fallback_reason"]


def test_a_local_dir_download_records_its_commit_until_a_file_changes(tmp_path):
    folder = write_local_dir(tmp_path / "clip-vit-base-patch32", CLIP)
    metadata = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    assert metadata.read_text().splitlines()[:2] == [commit_of(CLIP), etag_of("config.json",
                                                                               (folder / "config.json").read_bytes())]
    model = load_model(folder, cache=False)
    assert model.revision == commit_of(CLIP) and model_record(model)["revision"] == commit_of(CLIP)
    later = os.stat(folder / "config.json").st_mtime + 60
    os.utime(folder / "config.json", (later, later))  # edited after the download: no longer that commit
    changed = load_model(folder, cache=False)
    assert changed.revision.startswith("local:")
    assert model_record(changed)["revision"].startswith("local:clip-vit-base-patch32@")


def test_a_snapshot_folder_given_as_a_path_is_its_commit(monkeypatch, tmp_path):
    cache = tmp_path / "hub"
    snap = write_replica(cache, CLIP, "symlinks")
    assert load_model(snap, cache=False).revision == commit_of(CLIP)


# --- checkpoints saved by transformers before 4.31 ------------------------------------------------------------

def test_mclip_ignores_exactly_the_keys_transformers_ignores(monkeypatch, tmp_path):
    cache = tmp_path / "hub"
    for repo in (CLIP, MCLIP, "xlm-roberta-large"):
        write_replica(cache, repo, "copies")
    _use(monkeypatch, cache, tmp_path)
    weights = snapshot_dir(cache, MCLIP) / "pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    assert "transformer.embeddings.position_ids" in state  # as transformers 4.8 saved it
    load_model(MCLIP, cache=False)  # loads (its encodings are checked in test_hub against a direct computation)
    torch.save({**state, "transformer.embeddings.extra": torch.zeros(2)}, weights)
    with pytest.raises(LabclipError) as refused:
        load_model(MCLIP, cache=False)
    message = str(refused.value)
    assert message.startswith(f"could not load model '{MCLIP}': its text tower")
    assert "unexpected ['transformer.embeddings.extra']" in message and str(cache) not in message


# --- messages name the model and the part that failed ---------------------------------------------------------

def test_a_missing_image_tower_is_named_as_such(monkeypatch, tmp_path, tiny_model_dir):
    from labclip.lab.compare import compare

    cache = tmp_path / "hub"
    write_replica(cache, ST, "symlinks")  # its image tower (OpenAI's CLIP) is not cached
    _use(monkeypatch, cache, tmp_path)
    expected = (f"could not load model '{ST}': its image tower '{CLIP}' is not in the local Hugging Face cache and "
                "the hub cannot be reached")
    for attempt in (lambda: load_model(ST, cache=False), lambda: check_model(ST)):
        with pytest.raises(ModelUnavailable) as missing:
            attempt()
        assert str(missing.value).startswith(expected), str(missing.value)
    # a report's comparison (the demo model stands in only for the first): "not compared: model X: why"
    table = compare(load_captions(CAPTIONS_DIR / "short.csv", languages=["en"]), ["en"],
                    [load_model(tiny_model_dir, cache=False), ST], translator=None)
    assert list(table.table.model) == [tiny_model_dir.name]
    (reason,) = table.skipped
    assert reason.startswith(f"model {ST}: {expected}") and "'demo' model" not in reason


def test_a_missing_base_configuration_is_named_as_such(monkeypatch, tmp_path):
    cache = tmp_path / "hub"
    for repo in (CLIP, MCLIP):  # M-CLIP's modelBase (xlm-roberta-large) is not cached
        write_replica(cache, repo, "copies")
    _use(monkeypatch, cache, tmp_path)
    with pytest.raises(ModelUnavailable, match=f"^could not load model '{MCLIP}': its text tower's base "
                                                "configuration \\(modelBase\\) 'xlm-roberta-large' is not in"):
        load_model(MCLIP, cache=False)


# --- one broken model does not end a comparison ---------------------------------------------------------------

@pytest.fixture
def broken(tiny_model_dir, tmp_path):
    folder = tmp_path / "broken-clip"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    return folder


@pytest.mark.parametrize("position", [0, 1, 2])
def test_cli_compare_leaves_out_a_broken_model_and_says_why(capsys, tiny_model_dir, broken, tmp_path, position):
    models = [str(tiny_model_dir), "demo"]
    models.insert(position, str(broken))
    out = tmp_path / "c.csv"
    code = main(["compare", str(CAPTIONS_DIR / "short.csv"), "--langs", "en", "--translator", "none",
                 "--models", *models, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert list(pd.read_csv(out).model) == [m if m == "demo" else Path(m).name for m in models if m != str(broken)]
    (line,) = [line for line in err.splitlines() if "broken-clip" in line]
    assert line.startswith("labclip: not compared: model broken-clip: could not load model 'broken-clip'")
    assert str(tmp_path) not in line


def test_cli_compare_json_lists_the_models_not_compared(capsys, tiny_model_dir, broken, tmp_path):
    """The --out JSON of a comparison says which models it left out and why, as the console does."""
    out = tmp_path / "c.json"
    code = main(["compare", str(CAPTIONS_DIR / "short.csv"), "--langs", "en", "--translator", "none",
                 "--models", str(tiny_model_dir), str(broken), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    written = json.loads(out.read_text(encoding="utf-8"))
    (reason,) = written["not_compared"]
    assert f"labclip: not compared: {reason}" in err.splitlines()
    assert reason.startswith("model broken-clip: could not load model 'broken-clip'") and str(tmp_path) not in reason
    assert {row["model"] for row in written["rows"]} == {tiny_model_dir.name}


def test_cli_compare_strict_fails_on_a_broken_model(capsys, tiny_model_dir, broken, tmp_path):
    out = tmp_path / "c.csv"
    code = main(["compare", str(CAPTIONS_DIR / "short.csv"), "--langs", "en", "--translator", "none", "--strict",
                 "--models", str(tiny_model_dir), str(broken), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("labclip: error: model broken-clip: could not")
    assert err.endswith("(--strict)") and not out.exists()


def test_cli_compare_with_every_model_broken_is_one_line_exit_2(capsys, broken, tmp_path):
    out = tmp_path / "c.csv"
    code = main(["compare", str(CAPTIONS_DIR / "short.csv"), "--langs", "en", "--translator", "none",
                 "--models", str(broken), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("labclip: error: no model could be loaded")
    assert "broken-clip" in err and not out.exists()


def test_report_comparison_and_scale_run_list_a_broken_model(tiny_model_dir, broken, tmp_path, monkeypatch):
    """The languages report's comparison (a loaded model first, further models by name) and the scale report
    keep the other models' rows and name the broken one with the reason."""
    from labclip.lab import compare, present, runs, scale
    from labclip.lab.experiment import Experiment

    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path / "cache"))
    captions = load_captions(CAPTIONS_DIR / "short.csv", languages=["en"])
    first = load_model(tiny_model_dir)
    table = compare.compare(captions, ["en"], [first, str(broken), "demo"], translator=None)
    assert list(table.table.model) == [first.name, "demo"]
    (reason,) = table.skipped
    assert reason.startswith("model broken-clip: could not load model 'broken-clip'") and str(tmp_path) not in reason
    shown = present.comparison(Experiment(model=first, captions=captions), table, None).parts
    assert any("<h3>Not available in this run</h3>" in part and "broken-clip" in part for part in shown)

    run = runs.start(scale.SCALE, [str(broken), str(tiny_model_dir)], dataset=str(CAPTIONS_DIR / "short.csv"),
                     languages=["en"])
    assert list(run.models) == [str(tiny_model_dir)]
    assert len(run.skipped) == 1 and run.skipped[0].startswith("model broken-clip: ")
    assert np.isfinite(run.evaluate(reference=None)["recall"]).all()
