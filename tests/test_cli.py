import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labclip import cli
from labclip.cli import main
from labclip.config import DEFAULT_CAPTIONS, IMAGES_DIR

MODEL_COMMANDS = ("match", "classify", "tag", "search", "eval")
NEVER_LOADED = "/nonexistent/labclip-model"  # any load of this fails with "could not load model"


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("cat.png", "red_car.png", "pizza.png"):
        shutil.copy(IMAGES_DIR / name, d / name)
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, out, err, *fragments):
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labclip: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def direct_matching(model, lang="en"):
    """Independent computation of the paired matching figures from the model's own encoders."""
    captions = pd.read_csv(DEFAULT_CAPTIONS)
    images = model.encode_images([IMAGES_DIR / name for name in captions["image"]])
    texts = model.encode_texts(captions[lang])
    sim = images @ texts.T
    n = len(sim)
    i2t_rank = 1 + (sim > sim[np.arange(n), np.arange(n)][:, None]).sum(axis=1)
    t2i_rank = 1 + (sim > sim[np.arange(n), np.arange(n)][None, :]).sum(axis=0)
    return n, int((i2t_rank == 1).sum()), int((t2i_rank == 1).sum())


# --- grammar and help ---------------------------------------------------------------------------------------

def test_version_and_help_on_every_subcommand(capsys):
    result = subprocess.run([sys.executable, "-m", "labclip.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("labclip ")
    for command in (*MODEL_COMMANDS, "compare"):
        assert main([command, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: labclip {command}")


def all_parsers(parser: argparse.ArgumentParser, prog: str = "labclip") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command, nested subcommands (``adapt fewshot``) included."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from all_parsers(child, f"{prog} {name}")


def test_help_texts_print_percent_signs_once(capsys):
    """argparse %-formats option help (which needs %%) but prints descriptions as written."""
    seen = []
    for prog, _ in all_parsers(cli._parser()):
        assert main([*prog.split()[1:], "--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: {prog}") and "%%" not in text and "%(" not in text, prog
        seen.append(prog)
    assert {"labclip adapt fewshot", "labclip adapt text", "labclip report", "labclip tag"} <= set(seen)
    fewshot = " ".join(dict(all_parsers(cli._parser()))["labclip adapt fewshot"].format_help().split())
    assert "95% Wilson intervals" in fewshot


def test_every_option_has_a_description_and_its_default_in_help():
    formatter = cli._HelpFormatter("labclip")
    for command, parser in subparsers().items():
        for flag, action in options(parser).items():
            text = formatter._get_help_string(action)
            assert action.help, f"{command} {flag} has no description"
            if not action.required:
                assert "default" in text, f"{command} {flag}: no default in {text!r}"
            if action.default not in (None, False) and not isinstance(action.default, list):
                assert str(action.default) in text, f"{command} {flag}: {text!r}"


def test_same_option_names_across_subcommands():
    parsers = subparsers()
    for command in (*MODEL_COMMANDS, "compare"):
        flags = options(parsers[command])
        assert {"--top-k", "--device", "--batch-size", "--no-cache"} <= set(flags), command
        assert ("--models" if command == "compare" else "--model") in flags
        assert "--top" not in flags
    for command in ("match", "classify", "search", "eval", "compare"):
        assert "--out" in options(parsers[command])
    assert options(parsers["match"])["--lang"].default == "en"


@pytest.mark.parametrize("argv,fragments", [
    (["match", DEFAULT_CAPTIONS, "--top-k", "0"], ["--top-k", "1 or more"]),
    (["classify", "x.png", "--labels", "a,b", "--top-k", "-2"], ["--top-k", "1 or more"]),
    (["eval", ".", "--top-k", "three"], ["--top-k", "whole number"]),
    (["compare", DEFAULT_CAPTIONS, "--top-k", "0"], ["--top-k"]),
    (["search", ".", "car", "--top-k", "0"], ["--top-k"]),
    (["search", ".", "car", "--batch-size", "0"], ["--batch-size"]),
    (["search", ".", ""], ["query is empty"]),
    (["search", ".", "   "], ["query is empty"]),
    (["match", DEFAULT_CAPTIONS, "--device", "gpu"], ["--device", "not a torch device"]),
    (["match", DEFAULT_CAPTIONS, "--nonsense"], ["unrecognized arguments"]),
    (["frobnicate"], ["invalid choice"]),
    (["search", ".", "car", "--top", "2"], ["unrecognized arguments: --top"]),  # one name: --top-k
])
def test_argument_errors_are_one_line_exit_2(capsys, argv, fragments):
    assert_user_error(*run(capsys, *argv), *fragments)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_is_a_user_error_before_loading(capsys, monkeypatch, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for command in (["match", DEFAULT_CAPTIONS], ["compare", DEFAULT_CAPTIONS], ["search", ".", "car"]):
        assert_user_error(*run(capsys, *command, "--device", device, "--model" if command[0] != "compare"
                               else "--models", NEVER_LOADED), "--device", "use --device cpu")


def test_cuda_index_beyond_the_devices_is_rejected(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert_user_error(*run(capsys, "search", ".", "car", "--device", "cuda:1"), "1 CUDA device")
    assert cli._device("cuda:0") == "cuda:0"


# --- report -------------------------------------------------------------------------------------------------

def test_report_options_reach_the_runner(monkeypatch):
    import labclip.lab.report

    seen = []
    monkeypatch.setattr(labclip.lab.report, "run", lambda args: seen.append(args) or 0)
    argv = ["--image-dir", "my/photos", "--model", "demo", "--no-pdf", "--langs", "en", "ru"]
    assert main(["report", *argv]) == 0
    (args,) = seen
    assert (args.image_dir, args.model, args.no_pdf, args.languages) == ("my/photos", "demo", True, ["en", "ru"])


def test_report_help_is_the_report_parser(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: labclip report") and "--captions" in out and "--image-dir" in out


def test_report_without_the_report_extra_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "papermill", None)  # import papermill now raises ModuleNotFoundError
    code, out, err = run(capsys, "report", "--model", "demo", "--no-pdf", "--out", tmp_path / "r")
    assert_user_error(code, out, err, "pip install 'labclip[report]'", "papermill")
    assert not (tmp_path / "r").exists()


# --- model loading ------------------------------------------------------------------------------------------

def test_offline_error_names_the_demo_flag(capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for argv in (["match", DEFAULT_CAPTIONS, "--model"], ["search", IMAGES_DIR, "car", "--model"]):
        assert_user_error(*run(capsys, *argv, "labclip-test/not-a-cached-model"), "--model demo",
                          "labclip-test/not-a-cached-model")


def test_loading_bar_silenced_only_while_loading(tiny_model_dir, capfd):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    with cli._quiet_loading():
        CLIPModel.from_pretrained(tiny_model_dir)
        assert not are_progress_bars_disabled()  # hub download bars stay
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    CLIPModel.from_pretrained(tiny_model_dir)
    assert "Loading weights" in capfd.readouterr().err  # the control: outside the scope the bar is back


def test_batch_size_and_no_cache_reach_the_model(capsys, tiny_model_dir, monkeypatch):
    from labclip.model import ClipModel

    batches = []
    original = ClipModel._encode
    monkeypatch.setattr(ClipModel, "_encode", lambda self, items, size, what, **kw: batches.append(
        (what, size, self.cache)) or original(self, items, size, what, **kw))
    code, _, _ = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", tiny_model_dir, "--translator", "none",
                     "--batch-size", "5", "--no-cache", "--device", "cpu")
    assert code == 0 and batches and all(size == 5 and cache is None for _, size, cache in batches)


# --- match --------------------------------------------------------------------------------------------------

def test_match_prints_human_labels_and_report_number_format(capsys, tiny_model_dir, tiny_model):
    n, i2t_hits, t2i_hits = direct_matching(tiny_model, "ru")
    code, out, err = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "ru", "--model", tiny_model_dir)
    assert code == 0 and "untrained" in err
    assert f"Image→text top-1: {i2t_hits}/{n} ({100 * i2t_hits / n:.1f}% [" in out
    assert f"Text→image top-1: {t2i_hits}/{n} ({100 * t2i_hits / n:.1f}% [" in out
    assert "i2t_acc1" not in out and "hits" not in out and "contrastive_loss" not in out
    assert "фотография" in out or "рисунок" in out
    for number in (w for line in out.splitlines() for w in line.split() if w.endswith("%")):
        assert len(number.strip("(%").split(".")[1]) == 1  # every percentage has one decimal
    assert "-0.000" not in out


def test_match_csv_keeps_summary_and_provenance(capsys, tiny_model_dir, tiny_model, tmp_path):
    n, i2t_hits, _ = direct_matching(tiny_model)
    code, _, _ = run(capsys, "match", DEFAULT_CAPTIONS, "--model", tiny_model_dir, "--out", tmp_path / "m.csv")
    rows = pd.read_csv(tmp_path / "m.csv")
    summary = pd.read_csv(tmp_path / "m.summary.csv", index_col="name")["value"]
    assert code == 0 and len(rows) == 3 * n
    assert float(summary["i2t_acc1"]) == pytest.approx(i2t_hits / n) and int(summary["n"]) == n
    # a folder outside the project is named by its folder name alone, as reports name it
    assert set(rows.model) == {tiny_model_dir.name} and rows.model_untrained.all()
    assert {r.rsplit("@", 1)[0] for r in rows.model_revision} == {"local:" + tiny_model_dir.name}
    assert summary["model"] == tiny_model_dir.name and summary["torch_version"]
    code, _, _ = run(capsys, "match", DEFAULT_CAPTIONS, "--model", tiny_model_dir, "--out", tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert str(tiny_model_dir.parent) not in text and str(tmp_path) not in text  # no machine paths
    saved = json.loads(text)
    assert saved["n"] == n and len(saved["rows"]) == 3 * n and saved["i2t_acc1"] == pytest.approx(i2t_hits / n)
    model = saved["provenance"]["model"]
    assert model["id"] == model["requested"] == tiny_model_dir.name and model["untrained"] is True
    assert re.fullmatch(rf"local:{re.escape(tiny_model_dir.name)}@[0-9a-f]{{12}}", model["revision"])
    assert saved["provenance"]["versions"]["torch"] and len(saved["provenance"]["inputs_sha256"]) == 64


def test_match_unknown_language_is_user_error(capsys, tiny_model_dir):
    code, out, err = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "de", "--model", tiny_model_dir)
    assert_user_error(code, out, err, "unknown language 'de'")


@pytest.mark.parametrize("out,fragment", [
    ("m.txt", "must end in .csv or .json"),
    ("a_file.txt/m.csv", "is not a folder"),
    ("a_dir.csv", "is a folder"),
])
def test_bad_out_is_reported_before_any_model_is_loaded(capsys, tmp_path, out, fragment):
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "a_dir.csv").mkdir()
    for argv in (["match", DEFAULT_CAPTIONS], ["search", IMAGES_DIR, "car"], ["eval", tmp_path],
                 ["classify", IMAGES_DIR / "cat.png", "--labels", "a,b"]):
        code, outp, err = run(capsys, *argv, "--model", NEVER_LOADED, "--out", tmp_path / out)
        assert_user_error(code, outp, err, fragment)
        assert "could not load" not in err


def test_unwritable_out_folder_is_reported_before_loading(capsys, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits: let access() answer as it would for a user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(locked) else real_access(p, mode))
    try:
        code, out, err = run(capsys, "match", DEFAULT_CAPTIONS, "--model", NEVER_LOADED, "--out",
                             locked / "sub" / "m.csv")
        assert_user_error(code, out, err, "no write permission")
    finally:
        locked.chmod(0o700)


def test_missing_image_is_reported_before_any_model_is_loaded(capsys, tmp_path):
    shutil.copy(IMAGES_DIR / "cat.png", tmp_path / "cat.png")
    (tmp_path / "captions.csv").write_text("image,en\ncat.png,a cat\ngone.png,a dog\n", encoding="utf-8")
    code, out, err = run(capsys, "match", tmp_path / "captions.csv", "--image-dir", tmp_path,
                         "--model", NEVER_LOADED)
    assert_user_error(code, out, err, "gone.png")
    assert "could not load" not in err
    code, out, err = run(capsys, "classify", tmp_path / "cat.png", tmp_path / "gone.png", "--labels", "a,b",
                         "--model", NEVER_LOADED)
    assert_user_error(code, out, err, "1 image not found", "gone.png")
    (tmp_path / "broken.png").write_text("not an image")
    code, out, err = run(capsys, "classify", tmp_path / "cat.png", tmp_path / "broken.png", "--labels", "a,b",
                         "--model", NEVER_LOADED)
    assert_user_error(code, out, err, "broken.png: not an image file")
    assert "could not load" not in err


# --- classify, search, eval ---------------------------------------------------------------------------------

def test_classify(capsys, tiny_model_dir, folder, tmp_path):
    images = sorted(folder.iterdir())
    code, out, _ = run(capsys, "classify", *images, "--labels", "cat,car,pizza,dog", "--top-k", "2",
                       "--templates", "single", "--model", tiny_model_dir)
    assert code == 0 and out.count("cat.png") == 2 and "Probability" in out
    code, _, _ = run(capsys, "classify", *images, "--labels", "cat,car", "--model", tiny_model_dir,
                     "--out", tmp_path / "c.csv")
    table = pd.read_csv(tmp_path / "c.csv")
    assert code == 0 and len(table) == 6
    assert table.groupby("image").probability.sum().round(6).eq(1.0).all()
    assert set(table.model) == {tiny_model_dir.name} and table.model_untrained.all()


def test_classify_takes_a_folder_and_names_images_as_match_does(capsys, tiny_model_dir, folder, tmp_path,
                                                                 monkeypatch):
    (folder / "more").mkdir()
    shutil.copy(IMAGES_DIR / "coffee.png", folder / "more" / "coffee.png")
    (folder / "notes.txt").write_text("not an image")
    files = sorted(p for p in folder.rglob("*.png"))
    options = ["--labels", "cat,car", "--top-k", "1", "--model", tiny_model_dir, "--no-cache"]
    code, _, _ = run(capsys, "classify", *files, *options, "--out", tmp_path / "files.csv")
    assert code == 0
    monkeypatch.chdir(tmp_path)  # a folder given relative to the working folder
    code, _, err = run(capsys, "classify", "photos", *options, "--out", tmp_path / "folder.csv")
    assert code == 0 and "not found" not in err
    by_files, by_folder = pd.read_csv(tmp_path / "files.csv"), pd.read_csv(tmp_path / "folder.csv")
    assert sorted(by_folder.image) == sorted(["cat.png", "more/coffee.png", "pizza.png", "red_car.png"])
    pd.testing.assert_frame_equal(by_folder.sort_values("image", ignore_index=True),
                                  by_files.sort_values("image", ignore_index=True))
    code, out, _ = run(capsys, "classify", folder / "more" / "coffee.png", folder / "cat.png", *options)
    assert code == 0 and re.search(r"^\s*more/coffee\.png\s", out, flags=re.M) and str(tmp_path) not in out
    (tmp_path / "empty").mkdir()
    assert_user_error(*run(capsys, "classify", "empty", *options), "empty: no image files")


def test_search_names_images_relative_to_the_folder_that_holds_them(capsys, tiny_model_dir, folder, tmp_path):
    (folder / "more").mkdir()
    shutil.copy(IMAGES_DIR / "coffee.png", folder / "more" / "coffee.png")
    code, _, _ = run(capsys, "search", folder.absolute(), "a cup", "--model", tiny_model_dir, "--no-cache",
                     "--out", tmp_path / "s.csv")
    names = set(pd.read_csv(tmp_path / "s.csv").image)
    assert code == 0 and names == {"cat.png", "red_car.png", "pizza.png", "more/coffee.png"}


@pytest.mark.parametrize("extra,message", [
    (["--labels", " , "], "no labels"),
    (["--labels", "cat", "--templates", "fancy"], "unknown template set 'fancy'"),
])
def test_classify_user_errors(capsys, tiny_model_dir, extra, message):
    assert_user_error(*run(capsys, "classify", IMAGES_DIR / "cat.png", *extra, "--model", tiny_model_dir), message)


def test_search(capsys, tiny_model_dir, tiny_model, folder, tmp_path):
    code, out, _ = run(capsys, "search", folder, "a red car", "--top-k", "2", "--model", tiny_model_dir)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    images = sorted(folder.iterdir())
    scores = tiny_model.encode_images(images) @ tiny_model.encode_texts(["a red car"])[0]
    best = np.argsort(-scores, kind="stable")[:2]
    assert [line.split()[1] for line in lines[1:]] == [images[i].name for i in best]
    assert [line.split()[-1] for line in lines[1:]] == [f"{scores[i]:.3f}" for i in best]
    code, _, _ = run(capsys, "search", folder, "a red car", "--model", tiny_model_dir, "--out", tmp_path / "s.json")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["query"] == "a red car" and len(saved["rows"]) == 3 and saved["provenance"]["model"]["untrained"]
    code, _, err = run(capsys, "search", folder / "nope", "car", "--model", tiny_model_dir)
    assert_user_error(code, "", err, "no such folder")


@pytest.fixture
def labelled(tmp_path):
    root = tmp_path / "root"
    for cls, names in {"cat": ["cat.png"], "car": ["red_car.png"], "food": ["pizza.png", "coffee.png"]}.items():
        (root / cls).mkdir(parents=True)
        for n in names:
            shutil.copy(IMAGES_DIR / n, root / cls / n)
    Image.new("RGB", (10, 10)).save(root / "cat" / "extra.png")
    return root


def test_eval(capsys, tiny_model_dir, labelled, tmp_path):
    code, out, _ = run(capsys, "eval", labelled, "--templates", "single", "--top-k", "2", "--model", tiny_model_dir)
    assert code == 0 and "Top-1 accuracy:" in out and "Top-2 accuracy:" in out and "Mean per-class recall:" in out
    assert "acc1" not in out
    code, _, _ = run(capsys, "eval", labelled, "--model", tiny_model_dir, "--out", tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["n"] == 5 and {r["class"] for r in saved["rows"]} == {"cat", "car", "food"}
    # three classes: every class is in the top 5, so top-5 is undefined (null, with the reason), not 100%
    assert saved["acc5"] is None and "acc5_low" not in saved
    assert saved["acc5_undefined"] == "top-5 accuracy is undefined with 3 classes: every class is among the top 5"
    code, _, _ = run(capsys, "eval", labelled, "--model", tiny_model_dir, "--out", tmp_path / "e.csv")
    summary = pd.read_csv(tmp_path / "e.summary.csv", index_col="name")["value"]
    assert code == 0 and float(summary["acc1"]) == pytest.approx(saved["acc1"]) and pd.isna(summary["acc5"])
    assert float(summary["mean_per_class_recall"]) == pytest.approx(saved["mean_per_class_recall"])
    per_class = pd.read_csv(tmp_path / "e.csv")
    assert sorted(per_class["class"]) == ["car", "cat", "food"] and per_class.model_untrained.all()
    code, out, _ = run(capsys, "eval", labelled, "--templates", "single", "--model", tiny_model_dir)
    assert code == 0 and ("Top-5 accuracy: — (top-5 accuracy is undefined with 3 classes: every class is among "
                          "the top 5)") in out and "100.0%" not in out.split("Top-5 accuracy:")[1].split("\n")[0]
    assert "why undefined" not in out
    code, out, _ = run(capsys, "eval", labelled, "--templates", "single", "--top-k", "3", "--model", tiny_model_dir)
    assert "Top-3 accuracy: —" in out
    code, _, err = run(capsys, "eval", tmp_path / "missing", "--model", tiny_model_dir)
    assert_user_error(code, "", err, "no such folder")


def _wilson(hits: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(method="wilson")
    return ci.low, ci.high


def _shown(hits: int, n: int) -> str:
    low, high = _wilson(hits, n)
    return f"{hits}/{n} ({100 * hits / n:.1f}% [{100 * low:.1f}%, {100 * high:.1f}%])"


def test_eval_prints_and_writes_every_interval(capsys, tiny_model, tiny_model_dir, labelled, tmp_path):
    from labclip.stats import class_balanced
    from labclip.zeroshot import class_embeddings, labelled_images, load_templates, probabilities

    data = labelled_images(labelled)
    probs = probabilities(tiny_model, tiny_model.encode_images(data.paths),
                          class_embeddings(tiny_model, data.classes, load_templates("single", "en")))
    truth = np.asarray(data.truth)
    hits = probs.argmax(axis=1) == truth
    top2 = (probs >= probs[np.arange(len(truth)), truth][:, None]).sum(axis=1) <= 2
    n = len(truth)
    code, out, _ = run(capsys, "eval", labelled, "--templates", "single", "--top-k", "2", "--model", tiny_model_dir)
    assert code == 0 and f"Top-1 accuracy: {_shown(int(hits.sum()), n)}" in out
    assert f"Top-2 accuracy: {_shown(int(top2.sum()), n)}" in out
    balanced = class_balanced(hits, truth)
    assert f"Mean per-class recall: {100 * balanced.value:.1f}% [{100 * balanced.low:.1f}%, " in out
    for c, name in enumerate(data.classes):  # the per-class table: each accuracy with its interval
        k, m = int(hits[truth == c].sum()), int((truth == c).sum())
        assert any(line.split()[:1] == [name] and _shown(k, m) in line for line in out.splitlines())
    assert "_low" not in out and "low" not in out.lower()

    code, _, _ = run(capsys, "eval", labelled, "--templates", "single", "--top-k", "2", "--model", tiny_model_dir,
                     "--out", tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert code == 0 and saved["acc1"] == pytest.approx(hits.mean())
    for key, h in (("acc1", hits), ("acc2", top2)):
        assert (saved[f"{key}_low"], saved[f"{key}_high"]) == pytest.approx(_wilson(int(h.sum()), n))
    per_class = [np.mean(hits[truth == c]) for c in range(len(data.classes))]
    assert saved["mean_per_class_recall"] == pytest.approx(np.mean(per_class))
    assert (saved["mean_per_class_recall_low"], saved["mean_per_class_recall_high"]) == pytest.approx(
        (balanced.low, balanced.high))
    for row in saved["rows"]:
        k, m = round(row["accuracy"] * row["images"]), row["images"]
        assert (row["accuracy_low"], row["accuracy_high"]) == pytest.approx(_wilson(k, m))

    code, _, _ = run(capsys, "eval", labelled, "--templates", "single", "--top-k", "2", "--model", tiny_model_dir,
                     "--out", tmp_path / "e.csv")
    summary = pd.read_csv(tmp_path / "e.summary.csv", index_col="name")["value"]
    assert code == 0 and float(summary["acc1_low"]) == pytest.approx(saved["acc1_low"])
    assert float(summary["mean_per_class_recall_high"]) == pytest.approx(saved["mean_per_class_recall_high"])
    rows = pd.read_csv(tmp_path / "e.csv")
    assert list(rows.columns[:5]) == ["class", "images", "accuracy", "accuracy_low", "accuracy_high"]


def test_match_writes_intervals_beside_every_accuracy(capsys, tiny_model, tiny_model_dir, tmp_path):
    n, i2t_hits, t2i_hits = direct_matching(tiny_model, "ru")
    code, out, _ = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "ru", "--model", tiny_model_dir)
    mrr = next(line for line in out.splitlines() if line.startswith("Image→text MRR") or "mean reciprocal" in line)
    assert code == 0 and "[" in mrr  # the mean reciprocal rank carries its bootstrap interval
    code, _, _ = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "ru", "--model", tiny_model_dir,
                     "--out", tmp_path / "m.json")
    saved = json.loads((tmp_path / "m.json").read_text())
    assert code == 0
    for key, hits in (("i2t_acc1", i2t_hits), ("t2i_acc1", t2i_hits)):
        assert saved[key] == pytest.approx(hits / n)
        assert (saved[f"{key}_low"], saved[f"{key}_high"]) == pytest.approx(_wilson(hits, n))
    assert saved["i2t_acc3_low"] <= saved["i2t_acc3"] <= saved["i2t_acc3_high"]
    assert saved["i2t_mrr_low"] <= saved["i2t_mrr"] <= saved["i2t_mrr_high"]


def test_eval_lang_picks_the_label_column(capsys, tiny_model_dir, tmp_path):
    for name in ("cat.png", "red_car.png"):
        shutil.copy(IMAGES_DIR / name, tmp_path / name)
    (tmp_path / "labels.csv").write_text("image,en,ru\ncat.png,cat,кошка\nred_car.png,car,машина\n", encoding="utf-8")
    code, _, _ = run(capsys, "eval", tmp_path / "labels.csv", "--lang", "ru", "--templates", "single",
                     "--model", tiny_model_dir, "--out", tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))
    assert code == 0 and [r["class"] for r in saved["rows"]] == ["кошка", "машина"]


# --- tag ----------------------------------------------------------------------------------------------------

def test_tag_resumes_identical_work_only(capsys, tiny_model_dir, folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ncar\npizza\n", encoding="utf-8")
    out = tmp_path / "tags.csv"
    common = ["tag", folder, "--labels-file", labels, "--out", out, "--model", tiny_model_dir, "--no-cache"]
    args = [*common, "--top-k", "2"]
    code, _, err = run(capsys, *args)
    assert code == 0 and "tagged 3 new images" in err
    first = pd.read_csv(out)
    assert len(first) == 6 and set(first.image) == {"cat.png", "red_car.png", "pizza.png"}
    assert set(first.model) == {tiny_model_dir.name} and set(first.top_k) == {2}
    shutil.copy(IMAGES_DIR / "coffee.png", folder / "coffee.png")
    code, _, err = run(capsys, *args)
    assert code == 0 and "3 of 4 images already tagged" in err and "tagged 1 new image;" in err
    second = pd.read_csv(out)
    assert len(second) == 8
    pd.testing.assert_frame_equal(second.iloc[:6], first)
    code, _, err = run(capsys, *args)
    assert "tagged 0 new images" in err and len(pd.read_csv(out)) == 8

    code, _, err = run(capsys, *common, "--top-k", "3")  # another top-k: everything again
    assert code == 0 and "other options" in err and "top k 2 → 3" in err
    assert "labclip: re-tagged 4 images; " in err and "new image" not in err
    third = pd.read_csv(out)
    assert len(third) == 12 and set(third.top_k) == {3}

    shutil.copy(IMAGES_DIR / "horse.png", folder / "horse.png")  # a new file and other options at once
    code, _, err = run(capsys, *common, "--top-k", "1")
    assert code == 0 and "labclip: tagged 1 new image and re-tagged 4 images; " in err and "lists 5 images" in err
    assert len(pd.read_csv(out)) == 5

    labels.write_text("cat\ndog\n", encoding="utf-8")
    code, _, err = run(capsys, *common, "--top-k", "3")
    assert "labels sha256" in err and set(pd.read_csv(out).label) <= {"cat", "dog"}


def test_tag_redoes_rows_of_another_model(capsys, tiny_model_dir, folder, tmp_path):
    from labclip.testing import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=1)
    out = tmp_path / "tags.csv"
    common = ["tag", folder, "--labels", "cat,car,pizza", "--out", out, "--no-cache"]
    run(capsys, *common, "--model", other)
    code, _, err = run(capsys, *common, "--model", tiny_model_dir)
    assert code == 0 and "model " in err and "re-tagged 3 images;" in err and "new image" not in err
    rows = pd.read_csv(out)
    assert set(rows.model) == {tiny_model_dir.name} and len(rows) == 9


def test_tag_old_file_without_options_is_redone(capsys, tiny_model_dir, folder, tmp_path):
    out = tmp_path / "tags.csv"
    out.write_text("image,rank,label,probability\ncat.png,1,dog,0.9\n", encoding="utf-8")
    code, _, err = run(capsys, "tag", folder, "--labels", "cat,car", "--out", out, "--model", tiny_model_dir)
    assert code == 0 and "older labclip" in err and "tagged 2 new images and re-tagged 1 image;" in err
    assert "dog" not in set(pd.read_csv(out).label)


def test_tag_out_must_be_csv(capsys, folder, tmp_path):
    code, out, err = run(capsys, "tag", folder, "--labels", "a,b", "--out", tmp_path / "t.json",
                         "--model", NEVER_LOADED)
    assert_user_error(code, out, err, "must end in .csv")


# --- compare ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command,columns,hint", [
    ("eval", "image,es", "try --lang es"),
    ("match", "image,es", "try --lang es"),
    ("match", "image,es,fr", "try --lang es or --lang fr"),
    ("compare", "image,es", "try --langs es"),
])
def test_file_without_the_asked_language_names_the_option_for_its_own(capsys, tmp_path, command, columns, hint):
    for name in ("cat.png", "red_car.png"):
        shutil.copy(IMAGES_DIR / name, tmp_path / name)
    words = ",".join(["gato"] * (columns.count(",")))
    rows = "".join(f"{name},{words}\n" for name in ("cat.png", "red_car.png"))
    (tmp_path / "l.csv").write_text(f"{columns}\n{rows}", encoding="utf-8")
    models = ["--models" if command == "compare" else "--model", NEVER_LOADED]
    code, out, err = run(capsys, command, tmp_path / "l.csv", *models, "--out", tmp_path / "o.json")
    assert_user_error(code, out, err, hint)
    found = ", ".join(columns.split(",")) if command == "eval" else ", ".join(columns.split(",")[1:])
    assert found in err and sorted(p.name for p in tmp_path.iterdir()) == ["cat.png", "l.csv", "red_car.png"]


def test_labels_file_without_an_image_column_gives_no_language_hint(capsys, tmp_path):
    (tmp_path / "l.csv").write_text("file,es\ncat.png,gato\n", encoding="utf-8")
    code, out, err = run(capsys, "eval", tmp_path / "l.csv", "--model", NEVER_LOADED)
    assert_user_error(code, out, err, "columns found: file, es")
    assert "--lang" not in err


def test_compare(capsys, tiny_model_dir, tmp_path):
    from labclip.testing import make_tiny_marian

    marian = make_tiny_marian(tmp_path / "mt")
    code, out, err = run(capsys, "compare", DEFAULT_CAPTIONS, "--langs", "en", "ru", "--models", tiny_model_dir,
                         "--translator", marian)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4 and "translated" in out and "Gap to English" in lines[0]
    code, _, err = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", tiny_model_dir, "--translator", "none",
                       "--out", tmp_path / "c.csv")
    table = pd.read_csv(tmp_path / "c.csv")
    assert code == 0 and list(table.strategy) == ["raw", "raw"] and list(table.language) == ["en", "ru"]
    assert set(table.model) == {tiny_model_dir.name} and table.model_untrained.all()
    assert {r.rsplit("@", 1)[0] for r in table.model_revision} == {"local:" + tiny_model_dir.name}
    assert str(tiny_model_dir.parent) not in (tmp_path / "c.csv").read_text()


def test_compare_shows_and_writes_every_accuracy_with_its_interval(capsys, tiny_model, tiny_model_dir, tmp_path):
    n, en_hits, _ = direct_matching(tiny_model, "en")
    _, ru_hits, ru_t2i = direct_matching(tiny_model, "ru")
    code, out, _ = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", tiny_model_dir, "--translator", "none")
    lines = out.strip().splitlines()
    assert code == 0 and "low" not in lines[0].lower() and "high" not in lines[0].lower()
    assert _shown(en_hits, n) in lines[1] and _shown(ru_hits, n) in lines[2] and _shown(ru_t2i, n) in lines[2]
    code, _, _ = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", tiny_model_dir, "--translator", "none",
                     "--out", tmp_path / "c.csv")
    table = pd.read_csv(tmp_path / "c.csv")
    assert code == 0
    for row, hits in zip(table.itertuples(), (en_hits, ru_hits)):
        assert (row.i2t_acc1_low, row.i2t_acc1_high) == pytest.approx(_wilson(hits, n))
    for key in ("i2t_acc3", "t2i_acc1", "t2i_acc3"):
        for value, low, high in zip(table[key], table[f"{key}_low"], table[f"{key}_high"]):
            assert (low, high) == pytest.approx(_wilson(round(value * n), n))


@pytest.mark.parametrize("position", [0, 1])
def test_compare_offline_is_an_error_with_the_hint_like_every_command(capsys, monkeypatch, tiny_model_dir, tmp_path,
                                                                      position):
    """One offline rule: only ``report`` falls back; compare exits 2 with the hint, first model or not, before
    anything is computed or written."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # not cached + hub unreachable
    missing = "labclip-test/not-cached"
    models = [str(tiny_model_dir)]
    models.insert(position, missing)
    code, out, err = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", *models, "--translator", "none",
                         "--out", tmp_path / "c.json")
    assert_user_error(code, out, err, f"could not load model '{missing}'", "is not in the local Hugging Face cache",
                      "the untrained demo model (--models demo)")
    assert not (tmp_path / "c.json").exists() and "encoding" not in err
    code, _, err = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", "demo", "--langs", "en", "--translator",
                       "none", "--out", tmp_path / "c.csv")
    assert code == 0 and set(pd.read_csv(tmp_path / "c.csv").model) == {"demo"}


def test_compare_missing_local_model_is_an_error(capsys, tiny_model_dir, tmp_path):
    missing = str(tmp_path / "no-such-model")
    code, out, err = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", tiny_model_dir, missing,
                         "--translator", "none", "--out", tmp_path / "c.json")
    assert code == 2 and err.strip().count("\n") == 0 and "no such model directory" in err
    assert not (tmp_path / "c.json").exists()


# --- provenance helpers -------------------------------------------------------------------------------------

def test_hub_revision_comes_from_the_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--labclip-test--tower"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cli._hub_revision("labclip-test/tower") == commit
    assert cli._hub_revision("labclip-test/absent") is None


def test_paired_model_records_both_towers(tiny_model_dir, tmp_path):
    from labclip.model import load_model
    from labclip.testing import make_tiny_sentence_transformer

    text = make_tiny_sentence_transformer(tmp_path / "st", out_features=32)
    model = load_model(f"{text}+{tiny_model_dir}", cache=False)
    record = cli.model_record(model)
    assert record["id"] == f"{text.name}+{tiny_model_dir.name}"
    assert re.fullmatch(rf"local:{re.escape(text.name)}@[0-9a-f]{{12}}\+local:{re.escape(tiny_model_dir.name)}@[0-9a-f]{{12}}",
                        record["revision"])


def test_two_local_folders_share_a_revision_only_when_their_files_do(tiny_model_dir, tmp_path):
    import shutil

    from labclip.model import load_model

    twin = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / tiny_model_dir.name)
    first = cli.model_record(load_model(str(tiny_model_dir), cache=False))
    second = cli.model_record(load_model(str(twin), cache=False))
    assert first["id"] == second["id"] == tiny_model_dir.name
    assert first["revision"] == second["revision"]  # the same weights wherever they are (the revision is content)
    assert str(tmp_path) not in second["revision"]
    before = second["revision"]
    weights = twin / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # retrained in place: same name, same size, other weights
    mtime = weights.stat().st_mtime_ns
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(mtime, mtime))
    assert cli.model_record(load_model(str(twin), cache=False))["revision"] != before  # so tag re-tags


def test_number_format_matches_the_reports():
    assert cli.fmt("i2t_acc3", 10 / 12, 12) == "10/12 (83.3% [55.2%, 95.3%])"
    assert cli.fmt("acc1", 0.5, None) == "50.0%"
    assert cli.fmt("probability", 0.12345) == "12.3%"
    assert cli.fmt("margin_min", -0.0001) == "0.000"
    assert cli.fmt("separable", False) == "no" and cli.fmt("threshold", None) == "—"
    assert cli.label("t2i_acc5") == "Text→image top-5" and cli.label("acc5") == "Top-5 accuracy"


# --- a quiet console ----------------------------------------------------------------------------------------

def test_console_drops_only_the_known_noise():
    import logging

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    for name, prefix in cli.KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        handler = Keep()
        logger.addHandler(handler)
        try:
            with cli._console():
                logger.warning(prefix + " (1000 > 77)")
                logger.warning("something else")
            logger.warning(prefix + " (after)")
        finally:
            logger.removeHandler(handler)
        assert seen[-2:] == ["something else", prefix + " (after)"]


def test_multilingual_compare_prints_labclip_lines_only(tiny_model_dir, tmp_path):
    """In a real process (transformers' log handler writes to the process's own stderr)."""
    from labclip.testing import make_tiny_mclip

    mclip = make_tiny_mclip(tmp_path / "mclip", out_features=32)
    long = " ".join(["horse"] * 100)
    (tmp_path / "c.csv").write_text(f"image,en\ncat.png,{long}\nhorse.png,a horse\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "labclip.cli", "compare", tmp_path / "c.csv", "--image-dir", IMAGES_DIR, "--langs", "en",
         "--models", tiny_model_dir, f"{mclip}+{tiny_model_dir}", "--translator", "none", "--no-cache"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith(("labclip: ", "encoding ")) for line in lines), lines
    assert sum("labclip: warning: caption" in line for line in lines) == 2  # once per model that truncates it


@pytest.mark.parametrize("which", ["demo", "local"])
def test_output_files_and_reports_show_one_revision_form(capsys, tiny_model_dir, tmp_path, which):
    from labclip.lab import narrative
    from labclip.model import describe, load_model

    name = "demo" if which == "demo" else str(tiny_model_dir)
    model = load_model(name, cache=False)
    expected = "demo-model-v1" if which == "demo" else None
    shown = describe(model)["revision"]
    if expected:
        assert shown == expected
    else:
        assert re.fullmatch(rf"local:{re.escape(tiny_model_dir.name)}@[0-9a-f]{{12}}", shown)
    assert narrative.public_revision(model.revision) == shown
    assert cli.model_record(model)["revision"] == shown
    code, _, _ = run(capsys, "match", "--model", name, "--out", tmp_path / "m.json", "--no-cache")
    assert code == 0 and json.loads((tmp_path / "m.json").read_text())["provenance"]["model"]["revision"] == shown
    code, _, _ = run(capsys, "match", "--model", name, "--out", tmp_path / "m.csv", "--no-cache")
    assert code == 0 and set(pd.read_csv(tmp_path / "m.csv").model_revision) == {shown}
