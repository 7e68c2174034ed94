"""Encoding stores each finished batch in the cache, so an interrupted run loses at most one batch."""

import numpy as np
import pytest

from labclip import load_model

TEXTS = ["a cat", "a red car", "a cup of hot coffee", "two dogs running on a long sandy beach", "x", "a tree"]


@pytest.mark.parametrize("what", ["captions", "images"])
def test_interrupted_encoding_keeps_finished_batches(tiny_model_dir, tmp_path, what):
    from labclip.config import CAPTIONS_DIR
    from labclip.data import load_captions

    items = TEXTS if what == "captions" else load_captions(CAPTIONS_DIR / "default.csv")["path"][:6]
    encode = "encode_texts" if what == "captions" else "encode_images"
    reference = getattr(load_model(tiny_model_dir, cache=False), encode)(items)

    model = load_model(tiny_model_dir, cache=tmp_path)
    forward, calls = model._forward, []

    def fail_on_second_batch(kind, inputs):
        calls.append(len(next(iter(inputs.values()))))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(kind, inputs)

    model._forward = fail_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        getattr(model, encode)(items, batch_size=2)
    assert calls == [2, 2]

    probe = load_model(tiny_model_dir, cache=tmp_path)
    keys = _caption_keys(probe, items) if what == "captions" else [probe._image_key(x) for x in items]
    cached = [probe.cache.get(what, key) for key in keys]
    stored = [i for i, vector in enumerate(cached) if vector is not None]
    assert len(stored) == 2  # the first batch, and only it
    for i in stored:
        np.testing.assert_allclose(cached[i], reference[i], atol=1e-6)

    resumed = load_model(tiny_model_dir, cache=tmp_path)
    np.testing.assert_allclose(getattr(resumed, encode)(items, batch_size=2), reference, atol=1e-6)
    assert (resumed.cache.stats[what].hits, resumed.cache.stats[what].misses) == (2, 4)


def _caption_keys(model, texts):
    from labclip.cache import sha256_bytes

    prefix = "openai-clean-v2:" if model.openai_text_cleaning else "raw:"
    return [sha256_bytes((prefix + t).encode("utf-8")) for t in texts]
