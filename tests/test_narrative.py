"""The report's prose says only what the run supports: model family, languages, scripts, bundled data."""

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from labclip import load_model, match_metrics
from labclip.config import DEFAULT_CAPTIONS, IMAGES_DIR
from labclip.data import load_captions
from labclip.lab.experiment import Experiment
from labclip.lab.narrative import (
    abstract,
    discussion,
    format_metric,
    language_name,
    limitations,
    method,
    metric_label,
    metric_table,
    num,
    published,
    results,
    script,
    text_processing,
    tokens,
)
from labclip.lab.tables import token_stats
from labclip.metrics import retrieval_metrics, zeroshot_metrics
from labclip.testing import make_tiny_sentence_transformer

GERMAN = {"astronaut.png": "Ein Foto einer Astronautin vor der amerikanischen Flagge",
          "cat.png": "Nahaufnahme des Gesichts einer getigerten Katze",
          "coffee.png": "Eine Tasse Kaffee auf einer roten Untertasse",
          "horse.png": "Ein Pferd auf einer Wiese"}


def _prose(exp: Experiment, langs: list[str]) -> str:
    captions = {lang: exp.captions[lang] for lang in langs}
    stats = token_stats(exp.model.tokenizer, captions, exp.model.context_length, exp.model.openai_text_cleaning)
    parts = [abstract(exp, langs), method(exp), discussion(exp, langs), limitations(exp),
             tokens(stats, exp.model, captions), published(exp, langs) or "",
             *(results(exp.matching(lang)) for lang in langs)]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def german(tmp_path_factory):
    folder = tmp_path_factory.mktemp("german")
    for name in GERMAN:
        shutil.copy(IMAGES_DIR / name, folder / name)
    path = folder / "captions.csv"
    path.write_text("image,de\n" + "".join(f"{name},{text}\n" for name, text in GERMAN.items()), encoding="utf-8")
    return load_captions(path, folder)


def test_german_only_prose_says_nothing_about_russian_cyrillic_or_emoji(german, tiny_model):
    exp = Experiment(model=tiny_model, captions=german, requested_model="openai/clip-vit-base-patch32")
    text = _prose(exp, ["de"]).lower()
    for word in ("russian", "cyrillic", "emoji", "pictogram", "written by", "english"):
        assert word not in text, word
    assert not re.search(r"\bnan\b", text)
    assert "german" in text and "latin script" in text
    assert "captions.csv" in text and str(german.source) not in text  # by name, not machine path


def test_no_english_reference_is_said_not_printed_as_nan(german, tiny_model, tmp_path):
    folder = tmp_path / "defr"
    shutil.copytree(Path(german.source).parent, folder)
    (folder / "captions.csv").write_text(
        "image,de,fr\n" + "".join(f"{n},{t},une photo numéro {i}\n" for i, (n, t) in enumerate(GERMAN.items())),
        encoding="utf-8")
    exp = Experiment(model=tiny_model, captions=load_captions(folder / "captions.csv", folder))
    text = _prose(exp, ["de", "fr"])
    assert "no English captions" in text
    assert not re.search(r"\bnan\b", text.lower())


def test_bundled_set_with_openai_tokenizer(tiny_model):
    captions = load_captions(DEFAULT_CAPTIONS)
    exp = Experiment(model=tiny_model, captions=captions)
    text = _prose(exp, ["en", "ru"])
    assert "byte-level BPE" in text and f"{tiny_model.context_length}-token context" in text
    assert "Cyrillic script" in text and "Latin script" in text
    with (IMAGES_DIR / "SOURCES.csv").open(encoding="utf-8") as handle:
        emoji = {row["file"] for row in csv.DictReader(handle) if "emoji" in row["source"].lower()}
    drawn = len(emoji & set(captions["name"]))  # the shipped set lists ../images/x.png
    assert drawn and f"{drawn} of the {len(captions)} images are pictograms" in text
    assert "written by labclip's authors" in text
    assert "expected to match" not in text and "fall apart" not in text


def test_bundled_set_with_another_tokenizer_does_not_claim_openai_bpe(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path / "cache"))
    pair = load_model(f"{make_tiny_sentence_transformer(tmp_path / 'st', seed=5)}+{tiny_model_dir}", cache=False)
    exp = Experiment(model=pair, captions=load_captions(DEFAULT_CAPTIONS))
    text = _prose(exp, ["en", "ru"])
    assert "OpenAI" not in text_processing(pair) and "BPE" not in text
    assert type(pair.tokenizer).__name__ in text and f"{pair.context_length}-token context" in text


def test_published_box_only_for_a_listed_model_and_a_non_english_language(german, tiny_model):
    bundled = load_captions(DEFAULT_CAPTIONS)
    assert published(Experiment(model=tiny_model, captions=bundled), ["en", "ru"]) is None  # a model without published figures
    fell_back = Experiment(model=tiny_model, captions=bundled, requested_model="ViT-B/32", fallback_reason="offline")
    box = published(fell_back, ["en", "ru"])
    assert "English 54.0%" in box and "Russian 0.4%" in box and "not measured" in box and "open_clip" in box
    assert published(fell_back, ["en"]) is None
    german_box = published(Experiment(model=tiny_model, captions=german, requested_model="ViT-B/32", fallback_reason="x"),
                           ["de"])
    assert "German 13.1%" in german_box and "Russian" not in german_box


def test_script_from_unicode_names():
    assert script(["кошка на крыше"]) == "Cyrillic"
    assert script(["eine Katze, 3 Äpfel"]) == "Latin"
    assert script(["一只猫"]) == "Han"
    assert script(["123 !?"]) is None


def test_metric_labels_are_human_for_every_figure():
    sim = np.random.default_rng(0).normal(size=(5, 5))
    owner = np.array([0, 0, 1, 2, 3, 4, 4])
    keys = (list(match_metrics(sim, 3).to_dict()) + list(zeroshot_metrics(np.eye(4), [0, 1, 2, 3], 3).to_dict())
            + list(retrieval_metrics(np.random.default_rng(1).normal(size=(5, 7)), owner, ks=(1, 5))))
    for key in keys:
        label = metric_label(key)
        assert "_" not in label and label != key and label[0].isupper(), key
    assert metric_label("i2t_acc3") == "Image→text top-3" and metric_label("t2i_acc1") == "Text→image top-1"
    assert metric_label("t2i_hits5") == "Text→image top-5 hits" and metric_label("n_captions") == "Captions"


def test_one_number_format():
    assert format_metric("i2t_acc1", 10 / 12, 12) == "10/12 (83.3% [55.2%, 95.3%])"
    assert format_metric("t2i_acc3", 0.5) == "50.0%"
    assert format_metric("acc5", 1 / 3, 3) == "1/3 (33.3% [6.1%, 79.2%])"
    assert format_metric("mean_per_class_recall", 0.25) == "25.0%"
    assert format_metric("i2t_hits1", 4, 12) == "4/12"
    assert format_metric("threshold", None) == "—" and format_metric("gap_ratio", float("nan")) == "—"
    assert format_metric("separable", False) == "no" and format_metric("separable", True) == "yes"
    assert format_metric("margin_min", -0.0004) == "0.000" and num(-0.004, 2) == "0.00"
    assert format_metric("gap_pp", 8.333) == "+8.3 pp"


def test_metric_table_has_no_raw_keys_or_python_values():
    sim = np.array([[0.3, 0.1, 0.2], [0.2, 0.1, 0.25], [0.0, 0.05, 0.4]])
    m = match_metrics(sim, 2)
    assert m.threshold is None and m.separable is False
    frame = metric_table({language_name("en"): m.to_dict(), language_name("de"): m.to_dict()})
    cells = " ".join(frame.index) + " " + " ".join(frame.to_numpy().ravel())
    assert list(frame.columns) == ["English", "German"]
    for raw in ("i2t_acc1", "i2t_hits1", "margin_min", "None", "False", "nan", "-0.000"):
        assert raw not in cells, raw
    assert frame.loc["Image→text top-1", "English"] .startswith(f"{m.i2t.hits1}/3 ({100 * m.i2t.acc1:.1f}% [")


def test_prose_reads_naturally_for_one_and_several_languages(german, tiny_model):
    from labclip.lab.narrative import _names

    assert _names(["en"]) == "English" and _names(["en", "ru"]) == "English and Russian"
    assert _names(["de", "fr", "es"]) == "German, French and Spanish"
    exp = Experiment(model=tiny_model, captions=german)
    assert "in German using" in abstract(exp, ["de"])
    said = discussion(exp, ["de"])
    assert tiny_model.untrained and "random weights" in said and "between languages" not in said
    data = next(line for line in method(exp).splitlines() if line.startswith("- **Data.**"))
    assert "…." not in data and data.count("…") == 2


def test_demo_model_is_named_as_such_in_the_abstract_and_fallback_named_once(german):
    from labclip.lab.narrative import fallback_note

    exp = Experiment(model=load_model("demo"), captions=german, requested_model="openai/clip-vit-base-patch32")
    assert "using **labclip's untrained demo model**" in abstract(exp, ["de"])
    reason = ("could not load model 'ViT-B/32' (openai/clip-vit-base-patch32): 'openai/clip-vit-base-patch32' is not "
              "in the local Hugging Face cache and the hub cannot be reached; connect to the network")
    note = fallback_note("ViT-B/32", reason)
    assert note == ("The requested model ViT-B/32 could not be loaded: 'openai/clip-vit-base-patch32' is not in the "
                    "local Hugging Face cache and the hub cannot be reached; connect to the network.")
    assert fallback_note("m", "something else broke.") == "The requested model m could not be loaded: something else broke."


@pytest.fixture(scope="module")
def eight_pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eight")
    names = sorted(p.name for p in IMAGES_DIR.iterdir() if p.suffix in (".png", ".jpg"))[:8]
    path = folder / "captions.csv"
    path.write_text("image,en,de\n" + "".join(f"{IMAGES_DIR / n},a {n},ein {n}\n" for n in names), encoding="utf-8")
    return load_captions(path)


def _with_hits(model, captions, hits: dict[str, int]) -> Experiment:
    """An experiment whose language ``lang`` gets exactly the first ``hits[lang]`` images right (image→text top-1)."""
    exp = Experiment(model=model, captions=captions)
    n = len(captions)
    for lang, right in hits.items():
        sim = np.full((n, n), 0.1) + 0.01 * np.arange(n)[None, :]
        sim[np.arange(n), (np.arange(n) + 1) % n] = 0.5  # every image prefers the next image's caption ...
        sim[np.arange(right), np.arange(right)] = 0.9  # ... except the first ``right``, which prefer their own
        exp.record(lang, sim, captions=captions[lang])
    return exp


@pytest.mark.parametrize("hits", [{"en": 1, "de": 0}, {"en": 3, "de": 1}, {"en": 8, "de": 0}, {"en": 8, "de": 2}])
def test_a_gap_is_claimed_only_when_the_paired_test_detects_it(tiny_model, eight_pairs, hits):
    """1/8 vs 0/8 (p = 1) is 'no detectable difference', never 'matched better' or an undefined ratio; a detected
    gap is given in points, and as a ratio only when the other language got any right."""
    from statsmodels.stats.contingency_tables import mcnemar

    exp = _with_hits(tiny_model, eight_pairs, hits)
    said = abstract(exp, ["en", "de"]) + "\n" + discussion(exp, ["en", "de"])
    a, b = (np.arange(8) < hits[lang] for lang in ("en", "de"))
    p = mcnemar([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], exact=True).pvalue
    assert "undefined" not in said and "matched better" not in said and "in this run" not in said
    assert f"Image→text top-1: {hits['en']}/8 (" in said and f"{hits['de']}/8 (" in said
    if p >= 0.05:
        assert ("no detectable difference in image→text top-1 (" + ("p = 1" if p == 1 else f"p = {p:.3g}")) in said
        assert "percentage points" not in said
    else:
        points = 100 * (hits["en"] - hits["de"]) / 8
        assert f"is {points:+.1f} percentage points (" in said
        ratio = "German captions get none right, so there is no ratio" if hits["de"] == 0 else \
            f"ratio {hits['en'] / hits['de']:.2f}×"
        assert ratio in said
