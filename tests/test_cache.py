import subprocess
import sys
import textwrap

import numpy as np
import pytest

from labclip import load_model
from labclip.config import CAPTIONS_DIR
from labclip.data import load_captions
from labclip.lab.experiment import MATCHING
from labclip.lab.runs import start
from labclip.testing import make_tiny_model

TEXTS = ["a cup of coffee", "чашка кофе", "a red car"]


@pytest.fixture
def images():
    return load_captions(CAPTIONS_DIR / "default.csv")["path"][:5]


def test_second_encode_comes_from_cache_and_is_identical(tiny_model_dir, tmp_path, images):
    fresh = load_model(tiny_model_dir, cache=False)
    cached = load_model(tiny_model_dir, cache=tmp_path)
    first = cached.encode_images(images)
    assert cached.cache.stats["images"].misses == 5 and cached.cache.stats["images"].hits == 0
    again = load_model(tiny_model_dir, cache=tmp_path)
    second = again.encode_images(images)
    assert again.cache.stats["images"].hits == 5 and again.cache.stats["images"].misses == 0
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(second, fresh.encode_images(images), atol=1e-6)
    texts = again.encode_texts(TEXTS)
    assert again.encode_texts(TEXTS).tolist() == texts.tolist()
    assert again.cache.stats["captions"].hits == 3
    np.testing.assert_allclose(texts, fresh.encode_texts(TEXTS), atol=1e-6)


def test_corrupt_and_mismatched_entries_are_recomputed(tiny_model_dir, tmp_path, images):
    model = load_model(tiny_model_dir, cache=tmp_path)
    reference = model.encode_images(images[:2])
    files = sorted((tmp_path / model.cache.namespaces["images"] / "images").rglob("*.npy"))
    assert len(files) == 2
    files[0].write_bytes(b"\x93NUMPY garbage")
    np.save(files[1], np.ones(7, dtype=np.float32))  # wrong dimension
    again = load_model(tiny_model_dir, cache=tmp_path)
    np.testing.assert_array_equal(again.encode_images(images[:2]), reference)
    assert again.cache.stats["images"].corrupt == 2 and again.cache.stats["images"].hits == 0
    assert np.load(files[1]).shape == (model.dim,)  # repaired


def test_pickled_entry_is_never_unpickled(tiny_model_dir, tmp_path, images):
    model = load_model(tiny_model_dir, cache=tmp_path)
    model.encode_images(images[:1])
    (entry,) = (tmp_path / model.cache.namespaces["images"] / "images").rglob("*.npy")
    np.save(entry, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    again = load_model(tiny_model_dir, cache=tmp_path)
    again.encode_images(images[:1])
    assert again.cache.stats["images"].corrupt == 1


def test_other_weights_do_not_share_entries(tmp_path, images):
    a = load_model(make_tiny_model(tmp_path / "a", seed=1), cache=tmp_path / "c")
    b = load_model(make_tiny_model(tmp_path / "b", seed=2), cache=tmp_path / "c")
    a.encode_images(images[:2])
    b.encode_images(images[:2])
    assert b.cache.stats["images"].hits == 0 and a.cache.namespaces != b.cache.namespaces


def test_two_processes_at_once(tiny_model_dir, tmp_path, images):
    script = textwrap.dedent(f"""
        import numpy as np
        from labclip import load_model
        m = load_model({str(tiny_model_dir)!r}, cache={str(tmp_path / 'c')!r})
        for _ in range(3):
            e = m.encode_images({images!r}, batch_size=2)
        np.save({str(tmp_path)!r} + '/out-' + __import__('sys').argv[1] + '.npy', e)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)]) for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    np.testing.assert_array_equal(np.load(tmp_path / "out-0.npy"), np.load(tmp_path / "out-1.npy"))
    assert not [p for p in (tmp_path / "c").rglob(".*") if p.is_file()], "temporary files left behind"


def test_new_caption_set_encodes_no_image(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path))
    first = start(MATCHING, str(tiny_model_dir), captions=CAPTIONS_DIR / "default.csv", default_for="01_matching")
    first.matching("en")
    second = start(MATCHING, str(tiny_model_dir), captions=CAPTIONS_DIR / "short.csv", default_for="01_matching")
    second.matching("ru")
    stats = second.model.cache.stats["images"]
    assert stats.misses == 0 and stats.hits == len(second.captions)
    assert "12 images from the cache, 0 encoded" in second.provenance()["model"]["cache"]



def test_summary_counts_each_image_once(tiny_model_dir, images, tmp_path):
    from labclip import load_model

    load_model(tiny_model_dir, cache=tmp_path / "c").encode_images(images)
    model = load_model(tiny_model_dir, cache=tmp_path / "c")
    for _ in range(3):  # three languages share one image set
        model.encode_images(images)
    model.encode_texts(["a cat", "a dog"])
    model.encode_texts(["a cat"])
    n = len(images)
    assert model.cache.stats["images"].hits == 3 * n
    assert model.cache.summary() == f"{n} images from the cache, 0 encoded; 0 captions from the cache, 2 encoded"
