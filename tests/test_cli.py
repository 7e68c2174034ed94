import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from labclip.cli import main
from labclip.config import DEFAULT_CAPTIONS, IMAGES_DIR


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


def test_version_and_help_on_every_subcommand():
    result = subprocess.run([sys.executable, "-m", "labclip.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("labclip ")
    for command in ("match", "classify", "tag", "search", "eval", "compare"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0


def test_match(capsys, tiny_model_dir, tmp_path):
    code, out, err = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "ru", "--model", tiny_model_dir)
    assert code == 0 and "i2t_acc1:" in out and "t2i_acc3:" in out
    assert "фотография" in out or "рисунок" in out
    assert "untrained" in err
    code, _, _ = run(capsys, "match", DEFAULT_CAPTIONS, "--model", tiny_model_dir, "--out", tmp_path / "m.json")
    saved = json.loads((tmp_path / "m.json").read_text())
    assert code == 0 and saved["n"] == 12 and len(saved["rows"]) == 36


def test_match_unknown_language_is_user_error(capsys, tiny_model_dir):
    code, out, err = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "de", "--model", tiny_model_dir)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("labclip: error:") and "unknown language 'de'" in err


def test_classify(capsys, tiny_model_dir, folder, tmp_path):
    images = sorted(folder.iterdir())
    code, out, _ = run(capsys, "classify", *images, "--labels", "cat,car,pizza,dog", "--top-k", "2",
                       "--templates", "single", "--model", tiny_model_dir)
    assert code == 0 and out.count("cat.png") == 2
    code, _, _ = run(capsys, "classify", *images, "--labels", "cat,car", "--model", tiny_model_dir,
                     "--out", tmp_path / "c.csv")
    table = pd.read_csv(tmp_path / "c.csv")
    assert code == 0 and len(table) == 6
    assert table.groupby("image").probability.sum().round(6).eq(1.0).all()


@pytest.mark.parametrize("extra,message", [
    (["--labels", " , "], "no labels"),
    (["--labels", "cat", "--templates", "fancy"], "unknown template set 'fancy'"),
])
def test_classify_user_errors(capsys, tiny_model_dir, extra, message):
    code, _, err = run(capsys, "classify", IMAGES_DIR / "cat.png", *extra, "--model", tiny_model_dir)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_tag_resumes_without_reencoding(capsys, tiny_model_dir, folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ncar\npizza\n", encoding="utf-8")
    out = tmp_path / "tags.csv"
    args = ["tag", folder, "--labels-file", labels, "--out", out, "--top-k", "2", "--model", tiny_model_dir,
            "--no-cache"]
    code, _, err = run(capsys, *args)
    assert code == 0 and "tagged 3 new images" in err
    first = pd.read_csv(out)
    assert len(first) == 6 and set(first.image) == {"cat.png", "red_car.png", "pizza.png"}
    shutil.copy(IMAGES_DIR / "coffee.png", folder / "coffee.png")
    code, _, err = run(capsys, *args)
    assert code == 0 and "3 of 4 images already tagged" in err and "tagged 1 new images" in err
    second = pd.read_csv(out)
    assert len(second) == 8
    pd.testing.assert_frame_equal(second.iloc[:6], first)
    code, _, err = run(capsys, *args)
    assert "tagged 0 new images" in err


def test_search(capsys, tiny_model_dir, folder):
    code, out, _ = run(capsys, "search", folder, "a red car", "--top", "2", "--model", tiny_model_dir)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    scores = [float(line.split()[-1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    code, _, err = run(capsys, "search", folder / "nope", "car", "--model", tiny_model_dir)
    assert code == 2 and "no such folder" in err


def test_eval(capsys, tiny_model_dir, tmp_path):
    root = tmp_path / "root"
    for cls, names in {"cat": ["cat.png"], "car": ["red_car.png"], "food": ["pizza.png", "coffee.png"]}.items():
        (root / cls).mkdir(parents=True)
        for n in names:
            shutil.copy(IMAGES_DIR / n, root / cls / n)
    Image.new("RGB", (10, 10)).save(root / "cat" / "extra.png")
    code, out, _ = run(capsys, "eval", root, "--templates", "single", "--model", tiny_model_dir)
    assert code == 0 and "acc1:" in out and "acc5:" in out and "mean_per_class_recall:" in out
    code, _, _ = run(capsys, "eval", root, "--model", tiny_model_dir, "--out", tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["n"] == 5 and {r["class"] for r in saved["rows"]} == {"cat", "car", "food"}
    assert saved["acc5"] == 1.0  # three classes: the true one is always in the top 5
    code, _, err = run(capsys, "eval", tmp_path / "missing", "--model", tiny_model_dir)
    assert code == 2 and "no such folder" in err


def test_compare(capsys, tiny_model_dir, tmp_path):
    from labclip.testing import make_tiny_marian

    marian = make_tiny_marian(tmp_path / "mt")
    code, out, err = run(capsys, "compare", DEFAULT_CAPTIONS, "--langs", "en", "ru", "--models", tiny_model_dir,
                         "--translator", marian)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4 and "translated" in out and "gap_pp" in lines[0]
    code, _, err = run(capsys, "compare", DEFAULT_CAPTIONS, "--models", tiny_model_dir, "--translator", "none",
                       "--out", tmp_path / "c.csv")
    table = pd.read_csv(tmp_path / "c.csv")
    assert code == 0 and list(table.strategy) == ["raw", "raw"] and list(table.language) == ["en", "ru"]
