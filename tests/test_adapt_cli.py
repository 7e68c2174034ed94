"""``labclip adapt`` and the adapter hook of ``load_model``, run in-process on the tiny model."""

import json

import numpy as np
import pytest

from labclip import LabclipError, load_model
from labclip.adapter import AdaptedModel, TextAdapter, load_text_adapter
from labclip.cli import main
from labclip.config import DEFAULT_CAPTIONS, DEFAULT_LABELS
from labclip.data import load_captions
from labclip.lab.experiment import load_model_or_demo
from labclip.metrics import correct_ranks
from labclip.model import describe
from labclip.parallel import read_parallel
from labclip.textmap import evaluate_text_adapter
from labclip.zeroshot import class_embeddings, labelled_images, load_templates


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory, tiny_model_dir):
    """A random adapter for the tiny model, saved with its card."""
    rng = np.random.default_rng(1)
    model = load_model(tiny_model_dir, cache=False)
    adapter = TextAdapter(rng.normal(size=(model.dim, model.dim)).astype(np.float32),
                          rng.normal(size=model.dim).astype(np.float32), {"source_model": str(tiny_model_dir)})
    return adapter.save(tmp_path_factory.mktemp("adapter") / "ru-en.safetensors")


def test_load_model_takes_an_adapter_by_argument_or_by_name(tiny_model_dir, adapter_file):
    by_name = load_model(f"{tiny_model_dir}+adapter:{adapter_file}", cache=False)
    by_argument = load_model(tiny_model_dir, cache=False, adapter=adapter_file)
    plain = load_model(tiny_model_dir, cache=False)
    assert isinstance(by_name, AdaptedModel) and isinstance(by_argument, AdaptedModel)
    adapter = load_text_adapter(adapter_file)
    raw = plain.encode_texts(["a cat", "кошка"])
    expected = raw @ adapter.weight + adapter.bias
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(by_name.encode_texts(["a cat", "кошка"]), expected, atol=1e-5)
    np.testing.assert_allclose(by_argument.encode_texts(["a cat", "кошка"]), expected, atol=1e-5)
    facts = describe(by_name)
    assert facts["adapter"]["sha256"] == adapter.sha256 and facts["adapter"]["label"] == "ru-en"
    assert "adapter" not in describe(plain)


def test_an_adapter_is_never_dropped_by_the_demo_fallback(adapter_file):
    with pytest.raises(LabclipError, match="no such model directory|could not load model"):
        load_model_or_demo(f"/nonexistent/labclip-model+adapter:{adapter_file}")
    with pytest.raises(LabclipError, match="adapter weights not found"):
        load_model_or_demo("demo+adapter:/nonexistent/adapter.safetensors")


def test_match_with_model_plus_adapter_records_the_adapter(capsys, tmp_path, tiny_model_dir, adapter_file):
    out = tmp_path / "m.json"
    code, _, err = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "ru", "--model",
                       f"{tiny_model_dir}+adapter:{adapter_file}", "--no-cache", "--out", out)
    assert code == 0, err
    result = json.loads(out.read_text(encoding="utf-8"))
    model = result["provenance"]["model"]
    adapter = load_text_adapter(adapter_file)
    assert model["id"].endswith("+adapter:ru-en") and model["revision"].endswith(f"+adapter:{adapter.sha256}")
    assert model["adapter"]["sha256"] == adapter.sha256
    # the top-1 figure is the adapted model's, computed here without labclip's matching code
    plain = load_model(tiny_model_dir, cache=False)
    table = load_captions(DEFAULT_CAPTIONS, None, ["ru"])
    images = plain.encode_images(table["path"])
    texts = adapter.transform(plain.encode_texts(table["ru"]))
    assert result["i2t_acc1"] == pytest.approx(np.mean(correct_ranks(images @ texts.T) == 1))


def test_adapt_text_scores_held_out_then_saves_the_adapter(capsys, tmp_path, tiny_model_dir):
    out, results = tmp_path / "adapters" / "ru-en.safetensors", tmp_path / "r.json"
    code, printed, err = run(capsys, "adapt", "text", "--model", tiny_model_dir, "--no-cache", "--folds", "4",
                             "--alpha", "1", "--out", out, "--json", results)
    assert code == 0, err
    adapter = load_text_adapter(out)
    payload = json.loads(results.read_text(encoding="utf-8"))
    # the same held-out evaluation, computed independently from the model's embeddings
    model = load_model(tiny_model_dir, cache=False)
    table = load_captions(DEFAULT_CAPTIONS, None, ["ru", "en"])
    images = model.encode_images(table["path"])
    ru, en = model.encode_texts(table["ru"]), model.encode_texts(table["en"])
    expected = evaluate_text_adapter(images, ru, en, folds=4, alpha=1.0, seed=0)
    assert payload["held_out"]["top1"] == json.loads(json.dumps(expected.counts()))
    assert adapter.card["held_out"]["top1"] == payload["held_out"]["top1"]
    assert adapter.card["source_lang"] == "ru" and adapter.card["pairs"] == len(table) and adapter.card["alpha"] == 1
    after = {r["direction"]: r for r in expected.counts() if r["variant"] == "after"}
    assert "image→text top-1, held out" in printed and f"ru adapted {after['i2t']['hits']}/12" in printed
    from scipy.stats import binomtest

    ci = binomtest(after["i2t"]["hits"], 12).proportion_ci(method="wilson")
    assert (f"ru adapted {after['i2t']['hits']}/12 ({100 * after['i2t']['hits'] / 12:.1f}% "
            f"[{100 * ci.low:.1f}%, {100 * ci.high:.1f}%]);") in printed  # the interval once, in brackets
    assert "95% CI" not in printed
    assert "McNemar after vs before p = " in printed and "not a test" in printed
    # the final fit on all 12 pairs is ridge regression with alpha 1 (closed form, checked here)
    x, y = ru.astype(np.float64), en.astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.solve(xc.T @ xc + np.eye(x.shape[1]), xc.T @ yc)
    np.testing.assert_allclose(adapter.weight, w, atol=1e-4)
    assert payload["provenance"]["model"]["requested"] == tiny_model_dir.name
    assert str(tiny_model_dir.parent) not in json.dumps(payload, ensure_ascii=False)  # no machine paths
    assert payload["provenance"]["captions_sha256"] and payload["adapter"]["file"] == "ru-en.safetensors"
    # the saved adapter is a model: it loads and matches through the same CLI
    code, _, err = run(capsys, "match", DEFAULT_CAPTIONS, "--lang", "ru", "--model", f"{tiny_model_dir}+adapter:{out}",
                       "--no-cache")
    assert code == 0, err


def test_adapt_text_with_a_parallel_file_drops_pairs_it_will_score(capsys, tmp_path, tiny_model_dir):
    parallel = tmp_path / "pairs.tsv"
    rows = ["ru\ten", "кошка на диване\ta cat on a sofa", "красная машина\ta red car"]
    first = read_parallel(DEFAULT_CAPTIONS, "ru", "en")
    rows.append(f"{first.source[0]}\t{first.target[0]}")  # a pair of the caption set: must not be fitted on
    parallel.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "a.safetensors"
    code, _, err = run(capsys, "adapt", "text", "--model", tiny_model_dir, "--no-cache", "--parallel", parallel,
                       "--folds", "loo", "--alpha", "0.5", "--out", out)
    assert code == 0, err
    assert load_text_adapter(out).card["pairs"] == 12 + 2


@pytest.mark.parametrize("argv, words", [
    (["text", "--out", "x.pt"], "--out must end in .safetensors"),
    (["text", "--out", "a.safetensors", "--source-lang", "en"], "both 'en'"),
    (["text", "--out", "a.safetensors", "--folds", "1"], "at least 2 folds"),
    (["text", "--out", "a.safetensors", "--alpha", "-1"], "alpha must be 0 or more"),
    (["text", "--out", "a.safetensors", "--json", "r.csv"], "--out must end in .json"),
    (["fewshot", "--shots", "0,2"], "shot counts must be 1 or more"),
    (["fewshot", "--labels", "/nonexistent/labels.csv"], "no such folder or CSV file"),
    (["text"], "--out"),
])
def test_adapt_user_errors_are_one_line_and_write_nothing(capsys, tmp_path, monkeypatch, tiny_model_dir, argv, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "adapt", *argv, "--model", tiny_model_dir, "--no-cache")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and lines[-1].startswith("labclip: error: ") and words in lines[-1], err
    assert not [line for line in lines if not line.startswith("labclip:")]
    assert list(tmp_path.iterdir()) == []


def test_adapt_fewshot_against_zero_shot(capsys, tmp_path, tiny_model_dir):
    results = tmp_path / "f.json"
    code, printed, err = run(capsys, "adapt", "fewshot", "--model", tiny_model_dir, "--no-cache", "--shots", "1,2",
                             "--folds", "3", "--json", results)
    assert code == 0, err
    payload = json.loads(results.read_text(encoding="utf-8"))
    model = load_model(tiny_model_dir, cache=False)
    data = labelled_images(DEFAULT_LABELS)
    text = class_embeddings(model, data.classes, load_templates("imagenet7", "en"))
    zero = (model.encode_images(data.paths) @ text.T).argmax(axis=1) == np.asarray(data.truth)
    rows = {(r["method"], r["shots"]): r for r in payload["top1"]}
    assert rows[("zero-shot", 0)]["hits"] == zero.sum() and set(rows) == {
        ("zero-shot", 0), ("probe", 1), ("tip", 1), ("probe", 2), ("tip", 2)}
    assert {(r["method"], r["shots"]) for r in payload["paired"]} == set(rows) - {("zero-shot", 0)}
    assert "Tip-Adapter, 2 shots" in printed and "linear probe, 1 shot:" in printed
    assert payload["provenance"]["model"]["requested"] == tiny_model_dir.name
    assert str(tiny_model_dir.parent) not in json.dumps(payload, ensure_ascii=False)  # no machine paths
