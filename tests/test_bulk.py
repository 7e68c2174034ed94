"""The bulk image pipeline: JPEG draft decoding, decoding in worker processes, the decode mode in the cache key."""

import numpy as np
import pytest
from PIL import Image

from labclip import load_model
from labclip.bulk import Plan, cache_key, decode_file, draft_size, encode_files, plan, record, split_plan
from labclip.cache import EmbeddingCache
from labclip.demo import make_tiny_model
from labclip.errors import LabclipError
from labclip.images import load_image


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    """A tiny model with a 64 px input: draft decoding keeps at least 128 px on the shorter side."""
    return load_model(make_tiny_model(tmp_path_factory.mktemp("m64") / "model", seed=3, image_size=64), cache=False)


def smooth_jpeg(path, size, seed=0, quality=90):
    """A photo-like JPEG: low-frequency colour noise upscaled bicubically (real photos are mostly smooth)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8))
    small.resize(size, Image.Resampling.BICUBIC).save(path, quality=quality)
    return path


def test_plan_gives_the_encoder_every_core_and_as_many_decoders():
    assert plan(cores=1) == Plan(1, 1)
    assert plan(cores=2) == Plan(2, 2)
    assert plan(cores=16) == Plan(16, 16)
    assert plan(cores=16, workers=0) == Plan(0, 16)
    assert plan(cores=0) == Plan(1, 1)


def test_split_plan_shares_no_core():
    assert split_plan(cores=1) == Plan(1, 1)
    assert split_plan(cores=2) == Plan(1, 1)
    assert split_plan(cores=16) == Plan(12, 4)
    assert all(p.workers + p.threads <= max(2, c) for c in range(1, 65) for p in [split_plan(cores=c)])


def test_draft_decodes_a_large_jpeg_at_a_reduced_dct_scale(tmp_path):
    path = smooth_jpeg(tmp_path / "big.jpg", (1600, 1200))
    full, draft = load_image(path), load_image(path, draft=128)
    assert full.size == (1600, 1200)
    assert draft.size == (200, 150)  # 1/8: the smallest scale whose shorter side is still >= 128
    assert load_image(path, draft=200).size == (400, 300)  # 1/4: 1/8 would give 150 < 200
    assert load_image(tmp_path / "big.jpg", draft=None).size == full.size


def test_draft_is_the_exact_path_for_a_small_image(tmp_path, model64):
    # shorter side 200 < 2 * draft_size: no DCT scale applies, so the pixels are the exact path's, bit for bit
    path = smooth_jpeg(tmp_path / "small.jpg", (260, 200))
    assert draft_size(model64.preprocess) == 128
    exact, draft = decode_file(path, model64.preprocess, "exact"), decode_file(path, model64.preprocess, "draft")
    assert np.array_equal(exact, draft)
    png = tmp_path / "big.png"
    Image.open(smooth_jpeg(tmp_path / "b.jpg", (1600, 1200))).save(png)  # draft mode is for JPEGs only
    assert np.array_equal(decode_file(png, model64.preprocess, "draft"), decode_file(png, model64.preprocess, "exact"))


def test_exact_bulk_gives_encode_images_pixels_and_embeddings(tmp_path, model64):
    paths = [smooth_jpeg(tmp_path / f"{i}.jpg", (300 + 40 * i, 220), seed=i) for i in range(5)]
    expected = model64.pixel_values(paths)
    for workers in (0, 2):
        got = encode_files(model64, paths, "exact", Plan(workers, 1), batch_size=2)
        # the same pixels (checked below); fp32 GEMMs on another thread count or batch cut differ in the last bits
        np.testing.assert_allclose(got, model64.encode_images(paths), rtol=0, atol=2e-6)
    from labclip.bulk import pixel_values

    prepared = pixel_values(model64.preprocess, [decode_file(p, model64.preprocess, "exact") for p in paths])
    assert np.array_equal(prepared["pixel_values"].numpy(), expected.numpy())


def test_draft_embedding_stays_close_to_exact_on_a_large_jpeg(tmp_path, model64):
    path = smooth_jpeg(tmp_path / "photo.jpg", (4000, 3000))
    exact = encode_files(model64, [path], "exact", Plan(0, 1))[0]
    draft = encode_files(model64, [path], "draft", Plan(0, 1))[0]
    pixels = [decode_file(path, model64.preprocess, d).astype(int) for d in ("exact", "draft")]
    assert 0 < np.abs(pixels[0] - pixels[1]).max()  # a different decode, really
    assert np.abs(pixels[0] - pixels[1]).mean() < 2.0  # within a couple of grey levels on average
    assert float(exact @ draft) >= 0.995


def test_decode_mode_is_in_the_cache_key_and_exact_shares_encode_images_entries(tmp_path, model64):
    path = smooth_jpeg(tmp_path / "x.jpg", (900, 700))
    data = path.read_bytes()
    assert cache_key(data, "exact") == model64._image_key(path)
    assert cache_key(data, "draft") != cache_key(data, "exact")
    model64.cache = EmbeddingCache(tmp_path / "cache", {"images": "fp-images", "captions": "fp-captions"}, model64.dim)
    try:
        draft = encode_files(model64, [path], "draft", Plan(0, 1))
        exact = encode_files(model64, [path], "exact", Plan(0, 1))
        stats = model64.cache.stats["images"]
        assert (stats.misses, stats.hits) == (2, 0)  # two modes, two entries
        assert not np.array_equal(draft, exact)
        np.testing.assert_array_equal(encode_files(model64, [path], "draft", Plan(0, 1)), draft)
        np.testing.assert_array_equal(model64.encode_images([path]), exact)  # the exact entry, from the cache
        assert (stats.misses, stats.hits) == (2, 2)
    finally:
        model64.cache = None


def test_a_bad_file_is_one_line_naming_it_from_a_worker_process(tmp_path, model64):
    good = smooth_jpeg(tmp_path / "good.jpg", (300, 200))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:400])
    with pytest.raises(LabclipError, match=r"bad\.jpg: unreadable or truncated image") as err:
        encode_files(model64, [good, bad], "draft", Plan(1, 1))
    assert "\n" not in str(err.value)
    with pytest.raises(LabclipError, match="unknown decode mode 'fast'"):
        encode_files(model64, [good], "fast", Plan(0, 1))


def test_record_names_the_decode_mode_and_the_split():
    assert record("draft", Plan(3, 1)) | {"decode_rule": ""} == {"decode": "draft", "decode_rule": "",
                                                                   "decode_workers": 3, "encoder_threads": 1}
    with pytest.raises(LabclipError):
        record("fast")


def test_tag_and_search_record_the_decode_mode(tmp_path, tiny_model_dir, capsys):
    import json

    import pandas as pd

    from labclip.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        smooth_jpeg(folder / f"{i}.jpg", (400, 300), seed=i)
    out = tmp_path / "tags.csv"
    argv = ["tag", str(folder), "--labels", "cat,car", "--out", str(out), "--model", str(tiny_model_dir), "--no-cache"]
    assert main(argv) == 0
    assert set(pd.read_csv(out, dtype=str)["decode"]) == {"draft"}
    capsys.readouterr()
    assert main([*argv, "--decode", "exact"]) == 0
    assert "decode draft → exact" in capsys.readouterr().err
    assert set(pd.read_csv(out, dtype=str)["decode"]) == {"exact"}
    hits = tmp_path / "hits.json"
    assert main(["search", str(folder), "a cat", "--model", str(tiny_model_dir), "--out", str(hits), "--no-cache"]) == 0
    assert json.loads(hits.read_text())["decode"] == "draft"


def test_encoder_threads_give_one_threads_numbers_in_order(tmp_path, model64, monkeypatch):
    """Several encoder threads, each with one batch on one torch thread: the rows come back in input order and
    equal, bit for bit, the batches encoded one after another on one torch thread; torch's thread count is restored."""
    import threading

    import torch

    from labclip import bulk

    paths = [smooth_jpeg(tmp_path / f"{i}.jpg", (200 + 30 * i, 180), seed=i) for i in range(7)]
    items = [decode_file(p, model64.preprocess, "draft") for p in paths]
    with bulk.torch_threads(1):
        expected = np.concatenate([bulk.encode_prepared(model64, items[s:s + 2]) for s in range(0, 7, 2)])
    seen: list[tuple[str, int]] = []
    original = bulk.encode_prepared

    def spy(model, batch):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return original(model, batch)

    monkeypatch.setattr(bulk, "encode_prepared", spy)
    before = torch.get_num_threads()
    got = encode_files(model64, paths, "draft", Plan(2, 3), batch_size=2)
    assert np.array_equal(got, expected)
    assert len(seen) == 4 and all(name.startswith("labclip-encode") and n == 1 for name, n in seen)
    assert torch.get_num_threads() == before
    seen.clear()
    sizes: list[int] = []
    monkeypatch.setattr(bulk, "encode_prepared", lambda model, batch: sizes.append(len(batch)) or original(model, batch))
    encode_files(model64, paths, "draft", Plan(0, 2), batch_size=32)
    assert sizes == [4, 3]  # fewer files than two batches: each encoder thread still gets one
