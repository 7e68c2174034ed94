"""Cells that must hold one value (an image name, a label) refuse a JSON Lines list with one line naming
the file and the row; before, they crashed with a TypeError. Found by mypy (``Cell = str | list[str]``)."""

import pytest
from PIL import Image

from labclip import LabclipError, load_captions
from labclip.zeroshot import labelled_images


def _images(folder, names):
    for name in names:
        Image.new("RGB", (8, 8), "red").save(folder / name)


def test_a_list_of_image_names_is_a_user_error(tmp_path):
    _images(tmp_path, ["a.jpg", "b.jpg"])
    path = tmp_path / "captions.jsonl"
    path.write_text('{"image": "a.jpg", "en": "a"}\n{"image": ["b.jpg"], "en": ["b", "c"]}\n', encoding="utf-8")
    with pytest.raises(LabclipError, match=r"captions\.jsonl: row 2, 'image': expected one value, got a list"):
        load_captions(path)
    path.write_text('{"image": "a.jpg", "en": "a"}\n{"image": "b.jpg", "en": ["b", "c"]}\n', encoding="utf-8")
    assert load_captions(path)["en"] == ["a", ["b", "c"]]  # several captions per image stay allowed


def test_a_list_of_labels_is_a_user_error(tmp_path):
    _images(tmp_path, ["a.jpg", "b.jpg"])
    path = tmp_path / "labels.jsonl"
    path.write_text('{"image": "a.jpg", "label": "cat"}\n{"image": "b.jpg", "label": ["dog", "cat"]}\n',
                    encoding="utf-8")
    with pytest.raises(LabclipError, match=r"labels\.jsonl: image 'b\.jpg' has a list of labels"):
        labelled_images(path)
    path.write_text('{"image": "a.jpg", "label": "cat"}\n{"image": "b.jpg", "label": "dog"}\n', encoding="utf-8")
    assert labelled_images(path).classes == ["cat", "dog"]
