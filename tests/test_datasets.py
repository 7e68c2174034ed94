import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from labclip import LabclipError, load_captions
from labclip import datasets as ds
from labclip.data import flatten_captions

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
XM = FIXTURES / "xm3600"
XTD = FIXTURES / "xtd10"
COCO = FIXTURES / "coco"


def _published_xm3600(tmp_path) -> Path:
    """captions.zip, images.tgz and image_attributions.csv as the publishers serve them."""
    folder = tmp_path / "published"
    folder.mkdir()
    with zipfile.ZipFile(folder / "captions.zip", "w") as z:
        z.write(XM / "captions.jsonl", "captions.jsonl")
    with tarfile.open(folder / "images.tgz", "w:gz") as tar:
        for image in sorted((XM / "images").iterdir()):
            tar.add(image, image.name)
    shutil.copy(XM / "image_attributions.csv", folder)
    return folder


def _fixture_rows():
    return [json.loads(line) for line in (XM / "captions.jsonl").read_text(encoding="utf-8").splitlines()]


def _published_languages(row: dict) -> list[str]:
    return [key for key, value in row.items() if isinstance(value, dict) and "caption" in value]


def test_xm3600_fixture_is_the_published_schema():
    rows = _fixture_rows()
    for row in rows:
        assert list(row)[:2] == ["image/key", "image/locale"]
        assert sorted(_published_languages(row)) == sorted(ds.XM3600.languages) and len(row) == 2 + 36
        for lang in _published_languages(row):
            assert sorted(row[lang]) == ["caption", "caption/tokenized", "caption/tokenized/lowercase"]
            assert len(row[lang]["caption"]) == len(row[lang]["caption/tokenized"]) >= 1


def test_xm3600_from_a_local_copy(tmp_path):
    path = ds.prepare("xm3600", source=XM, root=tmp_path)
    assert path == tmp_path / "xm3600" / "captions.jsonl"
    table = ds.read_prepared(path)
    rows = _fixture_rows()
    # every language by its published code, Indonesian's "id" and the three-letter fil and quz included
    assert table.attrs["languages"] == _published_languages(rows[0]) and len(table.languages) == 36
    assert table.ids == [r["image/key"] for r in rows] and table["image_id"] == table.ids
    for lang in _published_languages(rows[0]):
        assert table[lang] == [r[lang]["caption"] for r in rows], lang
    assert table["id"][0] == ["Bus merah di jalan", "Bus jalan"]
    assert table.attrs["benchmark"] is ds.XM3600
    assert ds.read_prepared(path, ["fil", "id"]).languages == ["fil", "id"]
    assert load_captions(path, image_dir=path.parent, languages=["quz"])["quz"] == [r["quz"]["caption"] for r in rows]
    captions, owner = flatten_captions(table, "ru")
    assert captions == [c for r in rows for c in r["ru"]["caption"]]
    assert owner.tolist() == [0, 1, 1, 2, 2]
    for r in rows:
        copied = path.parent / "images" / f"{r['image/key']}.jpg"
        assert copied.read_bytes() == (XM / "images" / copied.name).read_bytes()
    source = json.loads((path.parent / "SOURCE.json").read_text(encoding="utf-8"))
    assert source["images"] == 3 and source["languages"] == _published_languages(rows[0])
    assert source["captions"] == {lang: sum(len(r[lang]["caption"]) for r in rows) for lang in source["languages"]}
    assert {lang: source["captions"][lang] for lang in ("en", "ru", "de", "id")} == {"en": 5, "ru": 5, "de": 5, "id": 5}
    assert source["noncommercial"] is False and source["retrieved_from"] == "local copy"
    assert "CC BY 4.0" in (path.parent / "LICENSE").read_text(encoding="utf-8")
    assert (path.parent / "image_attributions.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_xm3600_download_goes_through_the_published_archives(tmp_path, monkeypatch):
    published = _published_xm3600(tmp_path)
    monkeypatch.setattr(ds, "XM3600_URLS", {name: (published / name).as_uri() for name in ds.XM3600_URLS})
    path = ds.prepare("xm3600", root=tmp_path / "cache")
    local = ds.prepare("xm3600", source=XM, root=tmp_path / "local")
    assert path.read_text(encoding="utf-8") == local.read_text(encoding="utf-8")
    assert sorted(p.name for p in (path.parent / "images").iterdir()) == sorted(p.name for p in (XM / "images").iterdir())
    source = json.loads((path.parent / "SOURCE.json").read_text(encoding="utf-8"))
    assert source["retrieved_from"] == list(ds.XM3600_URLS.values())
    # the archives were temporary: only the finished folder remains
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["xm3600"]


def test_max_one_caption_per_image_like_clip_benchmark(tmp_path):
    table = ds.load("xm3600", source=XM, root=tmp_path)
    captions, owner = flatten_captions(table, "en", per_image=1)
    assert captions == [r["en"]["caption"][0] for r in _fixture_rows()]
    assert owner.tolist() == [0, 1, 2]
    assert table.attrs["benchmark"] is ds.XM3600


def test_offline_download_fails_in_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "XM3600_URLS", {name: f"http://127.0.0.1:9/{name}" for name in ds.XM3600_URLS})
    with pytest.raises(LabclipError) as err:
        ds.prepare("xm3600", root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and "cannot download xm3600" in message and "source=" in message
    assert list(tmp_path.iterdir()) == []


def test_xtd10_from_a_local_copy(tmp_path):
    path = ds.prepare("xtd10", source=XTD, images=COCO, root=tmp_path)
    table = load_captions(path, image_dir=path.parent)
    names = (XTD / "XTD10" / "test_image_names.txt").read_text(encoding="utf-8").split()
    assert table["image"] == [f"images/{n}" for n in names]
    assert table.attrs["languages"] == ["de", "en", "ja", "ru"]  # XTD10's "jp" is ISO "ja"
    assert table["ru"] == (XTD / "XTD10" / "test_1kcaptions_ru.txt").read_bytes().decode("utf-8").split("\r\n")
    assert table["ja"] == (XTD / "STAIR" / "test_1kcaptions_jp.txt").read_text(encoding="utf-8").split()
    licence = (path.parent / "LICENSE").read_text(encoding="utf-8")
    assert "NONCOMMERCIAL" in licence and "ADOBE RESEARCH LICENSE" in licence
    assert json.loads((path.parent / "SOURCE.json").read_text(encoding="utf-8"))["noncommercial"] is True
    captions, owner = flatten_captions(table, "en")
    assert len(captions) == 3 and owner.tolist() == [0, 1, 2]


def test_xtd10_download_uses_the_repository_layout_and_coco_urls(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "XTD10_URL", XTD.as_uri())
    # the fixture holds 4 of the 11 languages
    monkeypatch.setattr(ds, "XTD10_FILES", {k: v for k, v in ds.XTD10_FILES.items() if (XTD / v).is_file()})
    monkeypatch.setattr(ds, "COCO_IMAGES_URL", COCO.as_uri())
    path = ds.prepare("xtd10", root=tmp_path)
    local = ds.prepare("xtd10", source=XTD, images=COCO, root=tmp_path / "local")
    assert path.read_text(encoding="utf-8") == local.read_text(encoding="utf-8")
    image = path.parent / "images" / "COCO_val2014_000000000033.jpg"
    assert image.read_bytes() == (COCO / "val2014" / image.name).read_bytes()


def test_xtd10_missing_images_offline_say_how_to_pass_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "COCO_IMAGES_URL", "http://127.0.0.1:9")
    with pytest.raises(LabclipError, match="images="):
        ds.prepare("xtd10", source=XTD, root=tmp_path)


def test_xtd10_misaligned_captions_are_rejected(tmp_path):
    source = tmp_path / "xtd"
    shutil.copytree(XTD, source)
    (source / "XTD10" / "test_1kcaptions_en.txt").write_text("only one caption\n", encoding="utf-8")
    with pytest.raises(LabclipError, match="test_1kcaptions_en.txt: 1 captions for 3 images"):
        ds.prepare("xtd10", source=source, images=COCO, root=tmp_path / "out")


def test_missing_image_is_an_error(tmp_path):
    source = tmp_path / "xm"
    shutil.copytree(XM, source)
    (source / "images" / "1b2c3d4e5f607182.jpg").unlink()
    with pytest.raises(LabclipError, match="1 of 3 images missing"):
        ds.prepare("xm3600", source=source, root=tmp_path / "out")


def test_prepared_folder_is_reused_and_a_failed_rebuild_keeps_it(tmp_path, monkeypatch):
    path = ds.prepare("xm3600", source=XM, root=tmp_path)
    before = path.read_bytes()

    def fail(*args):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(ds, "_build_xm3600", fail)
    assert ds.prepare("xm3600", source=XM, root=tmp_path) == path
    monkeypatch.undo()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "captions.jsonl").write_text('{"image/key": "x", "en": {"caption": ["a"]}}\n', encoding="utf-8")
    with pytest.raises(LabclipError, match="missing"):
        ds.prepare("xm3600", source=broken, root=tmp_path, force=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "xm3600"]


def test_unknown_benchmark():
    with pytest.raises(LabclipError, match="known: xm3600, xtd10"):
        ds.prepare("flickr")


def test_benchmarks_record_their_licences():
    assert ds.BENCHMARKS["xtd10"].noncommercial and not ds.BENCHMARKS["xm3600"].noncommercial
    assert len(ds.XM3600.languages) == 36 and "ru" in ds.XM3600.languages
    assert len(ds.XTD10.languages) == 11 and "ru" in ds.XTD10.languages


# ---- JSON Lines caption sets in load_captions ----

@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), "red").save(d / name)
    return d


def _jsonl(path, *rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_with_file_name_and_caption_lists(tmp_path, image_dir):
    path = _jsonl(tmp_path / "set.jsonl", {"file_name": "a.png", "en": [" a red square ", "red"], "ru": "красный"},
                  {"file_name": "b.png", "en": ["another"], "ru": "ещё"})
    table = load_captions(path, image_dir)
    assert table["image"] == ["a.png", "b.png"]
    assert table["en"] == [["a red square", "red"], ["another"]]
    assert table["ru"] == ["красный", "ещё"]
    captions, owner = flatten_captions(table, "en")
    assert captions == ["a red square", "red", "another"] and owner.tolist() == [0, 0, 1]


def test_jsonl_problems_name_the_line(tmp_path, image_dir):
    path = _jsonl(tmp_path / "set.jsonl", {"image": "a.png", "en": ["ok"]}, {"image": "b.png", "en": ["fine", " "]})
    with pytest.raises(LabclipError, match="row 2: empty 'en' caption"):
        load_captions(path, image_dir)
    path.write_text('{"image": "a.png", "en": "x"}\n{"image": "b.png", "en": \n', encoding="utf-8")
    with pytest.raises(LabclipError, match="row 2 is not valid JSON"):
        load_captions(path, image_dir)
    _jsonl(path, {"image": "a.png", "en": {"caption": ["nested"]}})
    with pytest.raises(LabclipError, match="row 1, 'en': expected a caption or a list of captions"):
        load_captions(path, image_dir)


def test_a_folder_prepared_before_image_id_still_reads(tmp_path):
    """labclip once wrote the image key as "id", which Indonesian's captions then overwrote."""
    path = ds.prepare("xm3600", source=XM, root=tmp_path)
    old = tmp_path / "old"
    shutil.copytree(path.parent, old)
    lines = [json.loads(line) for line in (old / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    written = [{"id": r["id"], **{k: v for k, v in r.items() if k not in ("image_id", "id")}} for r in lines]
    (old / "captions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in written),
                                        encoding="utf-8")
    table = ds.read_prepared(old)
    assert len(table.languages) == 36 and table["id"] == [r["id"] for r in lines] and table.ids is None
