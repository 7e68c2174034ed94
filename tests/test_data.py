import csv
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labclip import LabclipError, load_captions
from labclip.config import CAPTIONS_DIR, DATA_DIR, IMAGES_DIR, PROJ_ROOT
from labclip.images import load_image
from labclip.lab.tables import captions_frame


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name, colour in [("coffee.png", "brown"), ("cat.png", "orange"), ("car.png", "red")]:
        Image.new("RGB", (8, 8), colour).save(d / name)
    return d


def _write(path: Path, text: str, encoding="utf-8", newline="\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def test_default_set_loads_with_en_and_ru():
    df = load_captions(CAPTIONS_DIR / "default.csv")
    assert len(df) >= 10
    assert df.languages == ["en", "ru"]
    assert all(Path(p).is_file() for p in df["path"])
    assert all(re.search("[а-яё]", caption) for caption in df["ru"])
    frame = captions_frame(df)
    assert frame.columns.tolist() == ["image", "path", "name", "en", "ru"] and frame["ru"].tolist() == df["ru"]


def test_every_caption_set_loads():
    for path in [*CAPTIONS_DIR.glob("*.csv"), DATA_DIR / "labels.csv"]:
        df = load_captions(path)
        assert len(df) >= 10, path
        assert all(Path(p).parent == IMAGES_DIR.resolve() for p in df["path"]), path
        assert df["name"] == [Path(p).name for p in df["path"]]


# --- an instructor's own folder: images beside the caption file ---------------------------------


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def own_folder(tmp_path):
    """Images beside captions.csv whose names collide with bundled images but whose pixels differ."""
    folder = tmp_path / "lab3"
    (folder / "more").mkdir(parents=True)
    Image.new("RGB", (16, 16), (0, 90, 200)).save(folder / "coffee.png")
    Image.new("RGB", (16, 16), (250, 250, 0)).save(folder / "horse.png")
    Image.new("RGB", (16, 16), (10, 200, 10)).save(folder / "more" / "cat.png")
    _write(folder / "captions.csv", "image,en,notes,path\ncoffee.png,a blue square,mine,x\n"
           "horse.png,a yellow square,mine,y\nmore/cat.png,a green square,,z\n")
    return folder


def test_own_folder_images_are_the_users(own_folder, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    df = load_captions(own_folder / "captions.csv")
    assert df["path"] == [str(own_folder / n) for n in ("coffee.png", "horse.png", "more/cat.png")]
    assert df["name"] == df["image"] == ["coffee.png", "horse.png", "more/cat.png"]
    for name in ("coffee.png", "horse.png"):
        path = df["path"][df["name"].index(name)]
        assert _sha(path) == _sha(own_folder / name) != _sha(IMAGES_DIR / name)
    assert df.attrs["languages"] == ["en"]
    assert df["notes"] == ["mine", "mine", ""]  # kept, never a caption language or a crash
    assert df["path.1"] == ["x", "y", "z"]  # the file's own path column, renamed


def test_image_dir_overrides_and_absolute_paths(own_folder, image_dir, tmp_path):
    df = load_captions(_write(tmp_path / "c.csv", "image,en\ncoffee.png,brown\n"), image_dir=own_folder)
    assert df["path"] == [str(own_folder / "coffee.png")]
    absolute = _write(tmp_path / "abs.csv", f"image,en\n{own_folder / 'horse.png'},yellow\n{image_dir / 'cat.png'},cat\n")
    df = load_captions(absolute, image_dir=tmp_path / "ignored")
    assert df["path"] == [str(own_folder / "horse.png"), str(image_dir / "cat.png")]
    with pytest.raises(LabclipError, match=r"row 2: image 'cofee.png' not found in .*lab3; did you mean 'coffee.png'"):
        load_captions(_write(tmp_path / "typo.csv", "image,en\ncofee.png,x\n"), image_dir=own_folder)


def test_file_name_column_and_language_columns(own_folder):
    meta = _write(own_folder / "metadata.csv", "file_name,pt-BR,zh_hans,url,caption\ncoffee.png,café,咖啡,u,c\n"
                  "horse.png,cavalo,马,v,h\n")
    df = load_captions(meta)
    assert df.attrs["languages"] == ["pt-br", "zh_hans"]
    assert df["path"] == [str(own_folder / "coffee.png"), str(own_folder / "horse.png")]
    assert load_captions(meta, languages=["caption"]).attrs["languages"] == ["caption"]
    _write(own_folder / "blank.csv", "image,en,notes\ncoffee.png,a cup,\n")
    assert load_captions(own_folder / "blank.csv").attrs["languages"] == ["en"]  # an empty note is no problem
    with pytest.raises(LabclipError, match=r"row 3: duplicate image 'more/../coffee.png' \(also row 2\)"):
        load_captions(_write(own_folder / "dup.csv", "image,en\ncoffee.png,a\nmore/../coffee.png,b\n"))


def test_sources_and_images_match():
    with open(IMAGES_DIR / "SOURCES.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    listed = {r["file"] for r in rows}
    present = {p.name for p in IMAGES_DIR.iterdir() if p.name != "SOURCES.csv"}
    assert listed == present
    assert all(r["licence"] and r["author"] and r["source"] and r["shows"] for r in rows)
    captioned = set(load_captions(CAPTIONS_DIR / "default.csv")["name"])
    assert captioned == present


def test_excel_russian_locale_csv(tmp_path, image_dir):
    text = "\ufeffimage ; en ; ru\n coffee.png ; a cup of coffee ;  чашка кофе \ncat.png;a cat;кошка\n"
    path = _write(tmp_path / "excel.csv", text, newline="\r\n")
    df = load_captions(path, image_dir)
    assert captions_frame(df).columns.tolist() == ["image", "path", "name", "en", "ru"]
    assert df.languages == ["en", "ru"]
    assert df["ru"] == ["чашка кофе", "кошка"]
    assert df["image"] == ["coffee.png", "cat.png"]


def test_tsv_and_xlsx(tmp_path, image_dir):
    tsv = _write(tmp_path / "c.tsv", "id\timage\tde\n1\tcar.png\tein rotes Auto\n")
    df = load_captions(tsv, image_dir)
    assert df.languages == ["de"] and df["id"] == ["1"]
    pytest.importorskip("openpyxl")
    import pandas as pd

    xlsx = tmp_path / "c.xlsx"
    pd.DataFrame({"image": ["cat.png"], "en": ["a cat"], "ru": ["кошка"]}).to_excel(xlsx, index=False)
    assert load_captions(xlsx, image_dir)["ru"] == ["кошка"]


def test_all_row_problems_reported_together(tmp_path, image_dir):
    text = (
        "image,en,ru\n"
        "coffee.png,a cup of coffee,чашка кофе\n"
        "cofee.png,a cup,чашка\n"
        "cat.png,,кошка\n"
        "coffee.png,again,снова\n"
    )
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(LabclipError) as err:
        load_captions(path, image_dir)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "3 problems" in msg
    assert "row 3: image 'cofee.png' not found" in msg and "did you mean 'coffee.png'" in msg
    assert "row 4: empty 'en' caption" in msg
    assert "row 5: duplicate image 'coffee.png' (also row 2)" in msg


def test_unknown_language_and_missing_columns(tmp_path, image_dir):
    path = _write(tmp_path / "c.csv", "image,en\ncat.png,a cat\n")
    with pytest.raises(LabclipError, match=r"unknown language 'ru'; the file has: en"):
        load_captions(path, image_dir, languages=["en", "ru"])
    with pytest.raises(LabclipError, match="no language column"):
        load_captions(_write(tmp_path / "d.csv", "image\ncat.png\n"), image_dir)
    with pytest.raises(LabclipError, match=r"unknown language 'es'; the file has: no language column "
                                           r"\(columns found: image, español\)"):
        load_captions(_write(tmp_path / "f.csv", "image,Español\ncat.png,un gato\n"), image_dir, languages=["es"])
    with pytest.raises(LabclipError, match="no 'image' \\(or 'file_name'\\) column"):
        load_captions(_write(tmp_path / "e.csv", "file,en\ncat.png,a cat\n"), image_dir)
    with pytest.raises(LabclipError, match="caption file not found"):
        load_captions(tmp_path / "nope.csv", image_dir)


def test_wrong_encoding_names_the_row(tmp_path, image_dir):
    path = _write(tmp_path / "cp1251.csv", "image,ru\ncat.png,кошка\n", encoding="cp1251")
    with pytest.raises(LabclipError, match=r"cp1251.csv: row 2 is not UTF-8.*CSV UTF-8"):
        load_captions(path, image_dir)


def test_unreadable_image_is_a_row_problem(tmp_path, image_dir):
    (image_dir / "notes.png").write_text("not an image")
    path = _write(tmp_path / "c.csv", "image,en\nnotes.png,notes\n")
    with pytest.raises(LabclipError, match=r"row 2: image 'notes.png': not an image file") as err:
        load_captions(path, image_dir)
    assert str(image_dir) not in str(err.value)  # named as the caption file writes it


# --- image files as phones and editors produce them -------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "white")
    img.paste((255, 0, 0), (0, 0, 20, 20))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    top = np.asarray(out)[5, 10]
    assert top[0] > 200 and top[1] < 60  # the red half is now on top


def test_cmyk_jpeg_is_converted(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    out = load_image(tmp_path / "cmyk.jpg")
    assert out.mode == "RGB"
    r, g, b = np.asarray(out)[8, 8]
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_png_is_scaled(tmp_path):
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "16.png")
    out = load_image(tmp_path / "16.png")
    assert out.mode == "RGB" and abs(int(np.asarray(out)[0, 0, 0]) - 128) <= 1


def test_transparency_goes_on_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")).min() == 255
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert np.asarray(load_image(tmp_path / "pal.png")).min() == 255
    la = Image.new("LA", (8, 8), (0, 128))
    la.save(tmp_path / "la.png")
    assert abs(int(np.asarray(load_image(tmp_path / "la.png"))[0, 0, 0]) - 127) <= 1


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    r, g, b = np.asarray(load_image(tmp_path / "a.gif"))[0, 0]
    assert r > 200 and b < 60


def test_truncated_jpeg_is_rejected(tmp_path):
    Image.new("RGB", (64, 64), "green").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(LabclipError, match=r"cut.jpg: unreadable or truncated"):
        load_image(tmp_path / "cut.jpg")


def test_decompression_bomb_is_rejected(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(LabclipError, match="decompression bomb"):
        load_image(tmp_path / "big.png")


def test_non_image_and_missing(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"hello")
    with pytest.raises(LabclipError, match="not an image"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(LabclipError, match="not found"):
        load_image(tmp_path / "y.jpg")


def test_make_data_reproduces_committed_images(tmp_path):
    pytest.importorskip("skimage")
    script = PROJ_ROOT / "scripts" / "make_images.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    if result.returncode != 0 and "font" in result.stderr + result.stdout:
        pytest.skip("Noto fonts are not installed (make data installs them)")
    assert result.returncode == 0, result.stderr
    for committed in IMAGES_DIR.iterdir():
        fresh = tmp_path / committed.name
        assert hashlib.sha256(fresh.read_bytes()).digest() == hashlib.sha256(committed.read_bytes()).digest(), (
            committed.name
        )
