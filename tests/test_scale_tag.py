"""`labclip tag` on large folders: finished chunks are on disk before the next one starts."""

from __future__ import annotations

import shutil

import pandas as pd

from labclip.cli import main
from labclip.cli.commands import tag
from labclip.config import IMAGES_DIR


def test_interrupted_tag_keeps_finished_rows_and_resumes(tmp_path, tiny_model_dir, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ("cat.png", "red_car.png", "pizza.png")
    for name in names:
        shutil.copy(IMAGES_DIR / name, folder / name)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ncar\npizza\n", encoding="utf-8")
    out = tmp_path / "tags.csv"
    argv = [str(a) for a in ("tag", folder, "--labels-file", labels, "--out", out, "--model", tiny_model_dir,
                             "--no-cache", "--top-k", "1")]
    monkeypatch.setattr(tag, "TAG_CHUNK", 1)
    real, calls = tag.encode_files, []  # tag encodes through the bulk pipeline

    def interrupted(model, images, *args, **kwargs):
        calls.append(list(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(tag, "encode_files", interrupted)
    assert main(argv) != 0
    assert "interrupted" in capsys.readouterr().err
    kept = pd.read_csv(out)
    assert [len(c) for c in calls] == [1, 1, 1]
    assert len(kept) == 2 and set(kept.image) == {c[0].name for c in calls[:2]}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(tag, "encode_files", real)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "2 of 3 images already tagged" in err and "tagged 1 new image;" in err
    final = pd.read_csv(out)
    assert sorted(final.image) == sorted(names)
    pd.testing.assert_frame_equal(final.iloc[:2], kept)
