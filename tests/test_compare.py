import numpy as np
import pytest

from labclip import load_model, match_metrics, similarity
from labclip.config import CAPTIONS_DIR
from labclip.data import load_captions
from labclip.lab.compare import compare
from labclip.testing import make_tiny_marian, make_tiny_sentence_transformer
from labclip.translate import Translator


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    return make_tiny_marian(tmp_path_factory.mktemp("marian") / "opus-mt-ru-en", seed=3)


def test_each_caption_is_translated_once(marian, tmp_path):
    first = Translator(str(marian), cache=tmp_path)
    out = first.translate(["кошка", "пицца", "кошка"])
    assert first.model_calls == 2 and out[0] == out[2] and all(isinstance(t, str) for t in out)
    again = Translator(str(marian), cache=tmp_path)
    assert again.translate(["пицца", "кошка"]) == [out[1], out[0]]
    assert again.model_calls == 0
    assert again.translate(["гора"]) and again.model_calls == 1


def test_comparison_table(tmp_path, tiny_model_dir, marian, monkeypatch):
    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path / "cache"))
    st = make_tiny_sentence_transformer(tmp_path / "st", seed=5)
    captions = load_captions(CAPTIONS_DIR / "default.csv")
    pair = f"{st}+{tiny_model_dir}"
    result = compare(captions, ["en", "ru"], [str(tiny_model_dir), pair, "no/such-model"],
                     translator=str(marian), top_k=3)
    table = result.table
    keys = list(zip(table.model, table.language, table.strategy))
    tiny, shown_pair = "model", "st+model"  # local folders by their names, never machine paths
    assert keys == [(tiny, "en", "raw"), (tiny, "ru", "raw"), (tiny, "ru", "translated"),
                    (shown_pair, "en", "multilingual"), (shown_pair, "ru", "multilingual")]
    assert len(set(keys)) == len(keys)
    assert any("no/such-model" in s for s in result.skipped)

    clip = load_model(tiny_model_dir, cache=False)
    images = clip.encode_images(captions["path"])
    for lang, strategy, texts in [("ru", "raw", captions["ru"]),
                                  ("ru", "translated", result.translations[str(marian)])]:
        m = match_metrics(similarity(images, clip.encode_texts(texts)), 3, clip.logit_scale).to_dict()
        row = table[(table.model == tiny) & (table.language == lang) & (table.strategy == strategy)].iloc[0]
        for figure in ("i2t_acc1", "i2t_acc3", "t2i_acc1", "t2i_acc3", "correct_mean", "margin_mean"):
            assert row[figure] == pytest.approx(m[figure]), (lang, strategy, figure)
    en = table[(table.model == tiny) & (table.language == "en")].iloc[0]
    ru = table[(table.model == tiny) & (table.strategy == "raw") & (table.language == "ru")].iloc[0]
    assert ru.gap_pp == pytest.approx(100 * (en.i2t_acc1 - ru.i2t_acc1))
    assert en.gap_pp == 0
    if ru.i2t_acc1:
        assert ru.gap_ratio == pytest.approx(en.i2t_acc1 / ru.i2t_acc1)
    else:
        assert ru.gap_ratio is None or np.isnan(ru.gap_ratio)


def test_unavailable_translator_is_skipped_not_faked(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    captions = load_captions(CAPTIONS_DIR / "short.csv")
    result = compare(captions, ["en", "ru"], [str(tiny_model_dir)])
    assert set(result.table.strategy) == {"raw"}
    assert any("opus-mt-ru-en" in s for s in result.skipped)


def test_without_english_there_is_no_gap_and_the_prose_says_so(tiny_model_dir, tmp_path, monkeypatch):
    from labclip.lab.narrative import comparison

    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path / "cache"))
    captions = load_captions(CAPTIONS_DIR / "short.csv")
    result = compare(captions, ["ru"], [str(tiny_model_dir)], translator=None)
    table = result.table
    assert len(table) == 1 and table.gap_pp.isna().all() and table.gap_ratio.isna().all()
    text = comparison(result)
    assert "no English reference" in text and "nan" not in text.lower()
    with_english = compare(captions, ["en", "ru"], [str(tiny_model_dir)], translator=None)
    assert "behind English" in comparison(with_english) or "ahead of English" in comparison(with_english)
    # The bullet gives the accuracy as every other sentence does: k/n (rate [interval]).
    n, hits = len(captions), int(result.i2t_hits1[0].sum())
    assert f"image→text top-1 {hits}/{n} ({100 * hits / n:.1f}% [" in text


def test_ratio_sentence_when_an_accuracy_is_zero():
    """A zero accuracy has no ratio to English: the prose says why and keeps the difference in points."""
    import pandas as pd

    from labclip.lab.compare import gap
    from labclip.lab.narrative import comparison
    from labclip.lab.results import Comparison

    accuracies = {"en": 0.5, "ru": 0.0, "de": 0.2}
    table = pd.DataFrame([{"model": "m", "language": lang, "strategy": "raw", "i2t_acc1": acc,
                           "gap_pp": gap(0.5, acc)[0], "gap_ratio": gap(0.5, acc)[1]} for lang, acc in accuracies.items()])
    result = Comparison(table, n=10)
    lines = {line.split(",")[1].strip(): line for line in comparison(result).splitlines()[1:]}
    assert "50.0 percentage points behind English (English ÷ this is not defined, since this accuracy is 0 of 10)" \
        in lines["Russian"]
    assert "30.0 percentage points behind English (English ÷ this = 2.50×)" in lines["German"]
    assert "undefined" not in comparison(result)
