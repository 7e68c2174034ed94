"""labclip tag --watch (a real subprocess, watchdog, SIGINT) and labclip calibrate."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labclip.cli import main
from labclip.cli.commands.calibrate import choose, curve
from labclip.config import IMAGES_DIR

SRC = Path(__file__).resolve().parents[1] / "src"


def wait_for(check, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def tagged(out):
    if not out.is_file():
        return set()
    return set(pd.read_csv(out)["image"])


def test_watch_tags_arrivals_waits_for_half_written_files_and_stops_cleanly(tmp_path, tiny_model_dir):
    watched, results = tmp_path / "inbox", tmp_path / "results"
    watched.mkdir()
    results.mkdir()
    shutil.copy(IMAGES_DIR / "cat.png", watched / "before.png")
    out = results / "tags.csv"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "labclip", "tag", str(watched), "--watch", "--out", str(out),
                             "--labels", "cat,car,pizza", "--model", str(tiny_model_dir), "--no-cache",
                             "--flag", "cat", "--threshold", "0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    printed: list[str] = []
    threading.Thread(target=lambda: printed.extend(proc.stdout), daemon=True).start()
    try:
        assert wait_for(lambda: any("watching" in line for line in lines), 120), lines
        assert wait_for(lambda: "before.png" in tagged(out), 5)  # what was there before the watch began

        start = time.monotonic()
        shutil.copy(IMAGES_DIR / "red_car.png", watched / "car.png")
        assert wait_for(lambda: "car.png" in tagged(out), 2.0), "not tagged within 2 s"
        assert time.monotonic() - start <= 2.0

        data = (IMAGES_DIR / "pizza.png").read_bytes()
        with open(watched / "pizza.png", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(1.5)
            assert "pizza.png" not in tagged(out), "a half-written file was tagged"
            f.write(data[len(data) // 2:])
        assert wait_for(lambda: "pizza.png" in tagged(out), 3.0)
        assert wait_for(lambda: any(line.startswith("pizza.png: ") for line in printed), 2), printed
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 130
    rows = pd.read_csv(out)
    assert set(rows["image"]) == {"before.png", "car.png", "pizza.png"}
    assert (rows.groupby("image").size() == 3).all()
    assert rows["flagged"].all() and set(rows["flag"]) == {"cat"}
    assert sorted(p.name for p in results.iterdir()) == ["tags.csv"]
    assert sorted(p.name for p in watched.iterdir()) == ["before.png", "car.png", "pizza.png"]
    assert any("ms after it arrived" in line for line in printed)
    for name in ("before.png", "car.png", "pizza.png"):  # tagged once: its own reads of a file are no arrival
        assert sum(line.startswith(f"{name}: ") for line in printed) == 1, printed


def test_watch_rows_are_those_tag_resumes_from(tmp_path, tiny_model_dir, capsys):
    """A later labclip tag with the same options reuses the rows tag --watch wrote."""
    from labclip.cli import watch

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat.png", "pizza.png"):
        shutil.copy(IMAGES_DIR / name, folder / name)
    out = tmp_path / "tags.csv"
    common = [folder, "--labels", "cat,car,pizza", "--out", out, "--model", tiny_model_dir, "--no-cache"]
    from labclip.cli import _parser

    args = _parser().parse_args(["tag", *map(str, common), "--watch"])
    tagger = watch.start(args)
    tagger.tag([(folder / "cat.png", time.monotonic()), (folder / "pizza.png", time.monotonic())])
    assert main(["tag", *map(str, common)]) == 0
    err = capsys.readouterr().err
    assert "2 of 2 images already tagged" in err and "tagged 0 new images" in err


@pytest.mark.parametrize("argv, fragment", [
    (["--watch", "--flag", "dog", "--threshold", "0.5"], "--flag 'dog' is not one of the labels"),
    (["--watch", "--flag", "cat"], "--flag LABEL and --threshold T go together"),
    (["--flag", "cat", "--threshold", "0.5"], "--flag needs --watch"),
    (["--watch", "--flag", "cat", "--threshold", "1.5"], "--threshold must lie between 0 and 1"),
])
def test_watch_option_errors_are_one_line(tmp_path, capsys, argv, fragment):
    code = main(["tag", str(tmp_path), "--labels", "cat,car", "--out", str(tmp_path / "t.csv"), *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "t.csv").exists()


def test_calibration_curve_equals_an_independent_computation():
    from sklearn.metrics import precision_score, recall_score
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 2)  # ties on purpose
    positive = rng.random(200) < 0.3 + 0.5 * scores
    table = curve(scores, positive)
    assert list(table["threshold"]) == sorted(set(scores.tolist()))
    for row in table.itertuples():
        flagged = scores >= row.threshold
        assert row.flag_precision == pytest.approx(precision_score(positive, flagged))
        assert row.flag_recall == pytest.approx(recall_score(positive, flagged))
        low, high = proportion_confint(int((flagged & positive).sum()), int(flagged.sum()), method="wilson")
        assert (row.flag_precision_low, row.flag_precision_high) == pytest.approx((low, high))
        low, high = proportion_confint(int((flagged & positive).sum()), int(positive.sum()), method="wilson")
        assert (row.flag_recall_low, row.flag_recall_high) == pytest.approx((low, high))
    target = 0.8
    chosen = choose(table, target)
    candidates = [t for t in sorted(set(scores.tolist()))
                  if precision_score(positive, scores >= t, zero_division=0) >= target]
    assert chosen["threshold"] == candidates[0]


def test_calibrate_command_writes_the_table_and_threshold(tmp_path, tiny_model_dir, capsys):
    root = tmp_path / "labelled"
    for label, names in {"cat": ["cat.png", "horse.png"], "food": ["pizza.png", "coffee.png"],
                         "car": ["red_car.png"]}.items():
        (root / label).mkdir(parents=True)
        for name in names:
            shutil.copy(IMAGES_DIR / name, root / label / name)
    out = tmp_path / "calibration.csv"
    code = main(["calibrate", str(root), "--flag", "cat", "--target-precision", "0.5", "--model",
                 str(tiny_model_dir), "--no-cache", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "flag 'cat' (2 of 5 images)" in printed
    table = pd.read_csv(out)
    summary = dict(pd.read_csv(out.with_name("calibration.summary.csv")).values)
    assert len(table) >= 2 and table["positives"].eq(2).all()
    good = table[table["flag_precision"] >= 0.5]
    assert float(summary["threshold"]) == pytest.approx(good["threshold"].min())
    assert summary["labels"] == "car,cat,food" and summary["model"] == table["model"][0]
