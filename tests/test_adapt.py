import json
import pickle
import sys
import types

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, GroupKFold
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from labclip import LabclipError, fewshot, load_model, textmap
from labclip.adapter import AdaptedModel, TextAdapter, apply_adapter, load_text_adapter
from labclip.config import DEFAULT_CAPTIONS
from labclip.fewshot import evaluate_few_shot, linear_probe, sample_k_shot, tip_adapter
from labclip.model import describe
from labclip.parallel import load_parallel_dataset, read_parallel
from labclip.spec import ModelSpec
from labclip.textmap import evaluate_text_adapter, fit_text_adapter

TEXTS = ["a cup of coffee", "чашка кофе", "a tabby cat", "полосатая кошка"]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted(n=600, d_in=48, d_out=24, noise=0.01, seed=0):
    """Unit source rows, and targets from a known affine map plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    x = unit(rng.normal(size=(n, d_in)))
    w = rng.normal(size=(d_in, d_out))
    b = rng.normal(size=d_out) * 0.2
    return x, x @ w + b + noise * rng.normal(size=(n, d_out)), w, b


def row_cosine(a, b):
    return np.sum(unit(a) * unit(b), axis=1)


# --- the text adapter -------------------------------------------------------------------------


def test_planted_map_is_recovered_on_held_out_rows():
    x, y, _, _ = planted(n=800, noise=0.01)
    adapter = fit_text_adapter(x[:600], y[:600])
    out = adapter.transform(x[600:])
    assert out.dtype == np.float32 and out.shape == (200, 24)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert row_cosine(out, y[600:]).mean() >= 0.99
    # a noisier plant is recovered less well: the check can fail
    xn, yn, _, _ = planted(n=800, noise=1.0)
    assert row_cosine(fit_text_adapter(xn[:600], yn[:600]).transform(xn[600:]), yn[600:]).mean() < 0.99


@pytest.mark.parametrize("n, alpha", [(300, 0.5), (20, 2.0), (300, 0.0), (20, 0.0)])
def test_fixed_alpha_equals_sklearn_ridge(n, alpha):
    x, y, _, _ = planted(n=n, noise=0.1)
    adapter = fit_text_adapter(x, y, alpha=alpha)
    reference = Ridge(alpha=alpha, fit_intercept=True, solver="svd").fit(x, y)
    np.testing.assert_allclose(adapter.weight, reference.coef_.T, atol=2e-4)
    np.testing.assert_allclose(adapter.bias, reference.intercept_, atol=2e-4)
    assert adapter.card["alpha"] == alpha and adapter.card["cv_folds"] == 0


def test_alpha_from_inner_cv_matches_grid_search_with_group_folds():
    x, y, _, _ = planted(n=240, noise=0.8, seed=3)
    groups = np.repeat(np.arange(80), 3)  # three captions per image
    grid = [0.01, 0.1, 1.0, 10.0, 100.0]
    adapter = fit_text_adapter(x, y, alpha=grid, groups=groups, cv=4)

    def cosine(y_true, y_pred):
        return row_cosine(y_pred, y_true).mean()

    search = GridSearchCV(Ridge(), {"alpha": grid}, cv=GroupKFold(4), scoring=make_scorer(cosine)).fit(
        x, y, groups=groups)
    assert adapter.card["alpha"] == search.best_params_["alpha"]
    # folds are equal-sized here, so the per-row mean equals GridSearchCV's mean over folds
    np.testing.assert_allclose([adapter.card["cv_cosine"][f"{a:g}"] for a in grid],
                               search.cv_results_["mean_test_score"], atol=1e-5)
    assert adapter.card["groups"] == 80 and adapter.card["cv_folds"] == 4
    # less data and more noise want a stronger penalty than plenty of clean data
    clean = fit_text_adapter(*planted(n=2000, noise=0.001)[:2], alpha=grid)
    assert clean.card["alpha"] < adapter.card["alpha"]


def test_inner_cv_keeps_captions_of_one_image_together(monkeypatch):
    x, y, _, _ = planted(n=120, noise=0.1)
    groups = np.tile(np.arange(30), 4)  # an image's captions are not neighbours
    scored = []
    real = textmap._Ridge.predict

    def recording(self, rows, alphas):
        scored.append(rows.copy())
        return real(self, rows, alphas)

    monkeypatch.setattr(textmap._Ridge, "predict", recording)
    fit_text_adapter(x, y, groups=groups, cv=5)
    row_group = {tuple(r): g for r, g in zip(np.round(x, 8), groups)}
    assert len(scored) == 5
    assert sorted(tuple(r) for rows in scored for r in np.round(rows, 8)) == sorted(row_group)
    for rows in scored:
        inside = [row_group[tuple(r)] for r in np.round(rows, 8)]
        assert len(inside) == 24 and all(inside.count(g) == 4 for g in inside)  # whole images only


def test_bad_inputs_are_one_line_errors():
    x, y, _, _ = planted(n=10)
    for call in (lambda: fit_text_adapter(x, y[:5]), lambda: fit_text_adapter(x, y, groups=np.zeros(10)),
                 lambda: fit_text_adapter(x, y, alpha=-1.0), lambda: fit_text_adapter(x[:, :, None], y)):
        with pytest.raises(LabclipError) as err:
            call()
        assert "\n" not in str(err.value)


# --- saving and loading -----------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    x, y, _, _ = planted(n=100)
    adapter = fit_text_adapter(x, y, alpha=1.0, card={"source_lang": "ru", "target_lang": "en"})
    adapter = adapter.with_card(held_out={"i2t_after": [9, 10]})
    path = adapter.save(tmp_path / "ru-en")
    assert path.name == "ru-en.safetensors" and (tmp_path / "ru-en.json").is_file()
    loaded = load_text_adapter(tmp_path / "ru-en.json")
    np.testing.assert_array_equal(loaded.weight, adapter.weight)
    np.testing.assert_array_equal(loaded.bias, adapter.bias)
    np.testing.assert_allclose(loaded.transform(x), adapter.transform(x), atol=1e-6)  # BLAS path may differ
    card = json.loads((tmp_path / "ru-en.json").read_text())
    assert card["held_out"] == {"i2t_after": [9, 10]} and card["source_lang"] == "ru"
    assert card["dim_in"] == 48 and card["dim_out"] == 24 and card["sha256"] == adapter.sha256
    assert loaded.card == card


def _expect_error(path, *words):
    with pytest.raises(LabclipError) as err:
        load_text_adapter(path)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_bad_adapter_files_are_rejected(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    x, y, _, _ = planted(n=50)
    good = fit_text_adapter(x, y, alpha=1.0).save(tmp_path / "good.safetensors")
    card = json.loads((tmp_path / "good.json").read_text())

    # a pickle under the right name is never unpickled
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps({"weight": np.zeros((2, 2))}))
    (tmp_path / "evil.json").write_text(json.dumps(card))
    _expect_error(tmp_path / "evil.safetensors", "not a safetensors")
    assert calls == []

    _expect_error(tmp_path / "missing.safetensors", "not found")
    (tmp_path / "nocard.safetensors").write_bytes(good.read_bytes())
    _expect_error(tmp_path / "nocard.safetensors", "card", "missing")

    def variant(name, tensors, card_changes=None):
        save_file(tensors, str(tmp_path / f"{name}.safetensors"))
        (tmp_path / f"{name}.json").write_text(json.dumps({**card, **(card_changes or {})}))
        return tmp_path / f"{name}.safetensors"

    w, b = good_w, good_b = load_text_adapter(good).weight, load_text_adapter(good).bias
    _expect_error(variant("shape", {"weight": w, "bias": b[:-1]}), "expected tensors")
    _expect_error(variant("extra", {"weight": w, "bias": b, "more": b}), "expected tensors")
    _expect_error(variant("f64", {"weight": w.astype(np.float64), "bias": b}), "float32")
    _expect_error(variant("nan", {"weight": np.full_like(w, np.nan), "bias": b}), "finite")
    _expect_error(variant("edited", {"weight": good_w * 2, "bias": good_b}), "hash")
    _expect_error(variant("dims", {"weight": w, "bias": b}, {"dim_in": 7}), "dimensions")
    _expect_error(variant("format", {"weight": w, "bias": b}, {"format": "other"}), "not a labclip")
    (tmp_path / "badjson.safetensors").write_bytes(good.read_bytes())
    (tmp_path / "badjson.json").write_text("{not json")
    _expect_error(tmp_path / "badjson.safetensors", "not a JSON")


# --- model + adapter --------------------------------------------------------------------------


def _images(n=3, size=32, seed=1):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_adapter_composes_with_a_tiny_model_on_the_text_side_only(tmp_path, tiny_model, tiny_model_dir):
    rng = np.random.default_rng(0)
    dim = tiny_model.dim
    adapter = TextAdapter(rng.normal(size=(dim, dim)).astype(np.float32), rng.normal(size=dim).astype(np.float32),
                          {"source_model": tiny_model.source})
    path = adapter.save(tmp_path / "tiny-ru-en.safetensors")

    adapted = apply_adapter(tiny_model, path)
    assert isinstance(adapted, AdaptedModel)
    raw = tiny_model.encode_texts(TEXTS)
    out = adapted.encode_texts(TEXTS)
    expected = raw @ adapter.weight + adapter.bias
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert np.abs(out - raw).max() > 0.1
    images = _images()
    np.testing.assert_array_equal(adapted.encode_images(images), tiny_model.encode_images(images))
    assert adapted.dim == tiny_model.dim and adapted.logit_scale == tiny_model.logit_scale

    assert adapted.identity.cache_key() != tiny_model.identity.cache_key()
    assert adapted.identity.cache_key(images_only=True) == tiny_model.identity.cache_key(images_only=True)
    facts = describe(adapted)
    assert facts["adapter"]["sha256"] == adapter.sha256 and "tiny-ru-en" in facts["name"]
    assert adapter.sha256 in facts["revision"]

    # the "MODEL+adapter:PATH" spelling loads the same thing
    again = load_model(f"{tiny_model_dir}+adapter:{path}", cache=False)
    assert isinstance(again, AdaptedModel)
    np.testing.assert_allclose(again.encode_texts(TEXTS), out, atol=1e-6)
    spec = ModelSpec.parse("ViT-B/32+adapter:a/b.safetensors")
    assert (str(spec.without(adapter=True)), spec.adapter) == ("ViT-B/32", "a/b.safetensors")
    assert ModelSpec.parse("ViT-B/32").adapter is None
    assert isinstance(load_model(str(tiny_model_dir), cache=False), type(tiny_model))


def test_adapter_must_fit_the_model(tiny_model):
    dim = tiny_model.dim
    wrong_dim = TextAdapter(np.eye(dim, dim + 1, dtype=np.float32), np.zeros(dim + 1, np.float32))
    with pytest.raises(LabclipError, match="dimensions"):
        apply_adapter(tiny_model, wrong_dim)
    other = TextAdapter(np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32),
                        {"source_model": "openai/clip-vit-large-patch14"})
    with pytest.raises(LabclipError, match="fitted on"):
        apply_adapter(tiny_model, other)
    assert apply_adapter(tiny_model, other, check_source=False).adapter is other


def test_adapter_fitted_on_tiny_model_embeddings_moves_russian_towards_english(tmp_path, tiny_model_dir):
    model = load_model(tiny_model_dir, cache=False)
    pairs = read_parallel(DEFAULT_CAPTIONS, "ru", "en")
    source, target = model.encode_texts(pairs.source), model.encode_texts(pairs.target)
    adapter = fit_text_adapter(source, target, alpha=0.1, card={"source_model": model.source})
    adapted = apply_adapter(model, adapter)
    after = np.sum(adapted.encode_texts(pairs.source) * target, axis=1)
    before = np.sum(source * target, axis=1)
    assert after.mean() > before.mean()


def test_adapter_from_a_local_multilingual_tower(tmp_path, tiny_model_dir, monkeypatch):
    from labclip.adapter import AdapterRevisionWarning, model_ref
    from labclip.testing import make_tiny_sentence_transformer

    tower = make_tiny_sentence_transformer(tmp_path / "st", seed=3)
    clip = load_model(tiny_model_dir, cache=False)
    source = load_model(f"{tower}+{tiny_model_dir}", cache=False)
    pairs = read_parallel(DEFAULT_CAPTIONS, "ru", "en")
    raw = source.encode_texts(pairs.source)
    card = {"source_model": model_ref(source), "source_revision": source.revision, "target_model": model_ref(clip),
            "target_revision": clip.revision}
    assert card["source_model"] == f"{tower.resolve()}+{tiny_model_dir.resolve()}"
    adapter = fit_text_adapter(raw, clip.encode_texts(pairs.target), alpha=0.1, card=card)
    path = adapter.save(tmp_path / "adapters" / "st-ru-en")

    monkeypatch.chdir(tiny_model_dir.parent)  # the target named by a relative path is the same folder
    model = load_model(f"{tiny_model_dir.name}+adapter:{path}", cache=False)
    assert model.separate_text_tower and model.untrained and model.tokenizer is model.text_model.tokenizer
    expected = unit(raw.astype(np.float64) @ adapter.weight + adapter.bias)
    np.testing.assert_allclose(model.encode_texts(pairs.source), expected, atol=1e-5)
    assert np.abs(model.encode_texts(pairs.source) - unit(clip.encode_texts(pairs.source) @ adapter.weight
                                                          + adapter.bias)).max() > 0.1
    np.testing.assert_array_equal(model.encode_images(_images()), clip.encode_images(_images()))
    assert describe(model)["adapter"]["text_tower"]["model"] == "st"  # the folder's name, not its machine path

    with pytest.raises(LabclipError, match="adapter's source text tower .* is not loaded"):
        apply_adapter(clip, adapter)
    with pytest.warns(AdapterRevisionWarning, match="fitted with target"):
        apply_adapter(clip, adapter.with_card(target_revision="0" * 40), load_source=lambda spec: source)
    other = load_model(f"{tower}+{tiny_model_dir}", cache=False)
    with pytest.raises(LabclipError, match="maps into the space of"):
        apply_adapter(other, adapter, load_source=lambda spec: source)


# --- few-shot classifiers ---------------------------------------------------------------------


def clusters(n_per_class=30, n_classes=3, dim=16, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_classes, dim)))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return unit(centres[labels] + spread * rng.normal(size=(len(labels), dim))), labels, centres


def test_linear_probe_separates_separable_classes():
    emb, labels, _ = clusters()
    train = sample_k_shot(labels, 10, seed=0)
    test = np.setdiff1d(np.arange(len(labels)), train)
    probs = linear_probe(emb[train], labels[train], emb[test])
    assert probs.shape == (len(test), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == labels[test]).all()
    # a class missing from training gets probability zero, columns stay aligned
    keep = labels[train] != 1
    probs = linear_probe(emb[train][keep], labels[train][keep], emb[test], n_classes=3)
    assert (probs[:, 1] == 0).all() and (probs.argmax(1)[labels[test] == 2] == 2).all()


def test_tip_adapter_with_zero_alpha_is_zero_shot():
    emb, labels, centres = clusters(spread=0.6, seed=2)
    text = unit(centres + 0.5 * np.random.default_rng(5).normal(size=centres.shape))
    train = sample_k_shot(labels, 4, seed=1)
    zero_shot = 100.0 * emb @ text.T
    logits = tip_adapter(emb[train], labels[train], emb, text, alpha=0.0, beta=5.5)
    np.testing.assert_array_equal(logits.argmax(1), zero_shot.argmax(1))
    np.testing.assert_allclose(logits, zero_shot, rtol=1e-12, atol=1e-9)
    # the cache term, written out with loops
    cache = np.zeros_like(zero_shot)
    for i in range(len(emb)):
        for j in train:
            cache[i, labels[j]] += np.exp(-3.0 * (1 - emb[i] @ emb[j]))
    np.testing.assert_allclose(tip_adapter(emb[train], labels[train], emb, text, alpha=2.0, beta=3.0),
                               zero_shot + 2.0 * cache, rtol=1e-10)


def test_k_shot_sampling_is_seeded_and_per_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    a = sample_k_shot(labels, 4, seed=7)
    assert np.array_equal(a, sample_k_shot(labels, 4, seed=7))
    assert not all(np.array_equal(a, sample_k_shot(labels, 4, seed=s)) for s in range(8, 12))
    assert np.bincount(labels[a]).tolist() == [4, 3, 4] and len(set(a)) == len(a)
    with pytest.raises(LabclipError):
        sample_k_shot(labels, 0)


# --- honest evaluation ------------------------------------------------------------------------


def caption_world(n=40, dim=24, seed=0, noise=0.05):
    """Images; English captions near their images; Russian captions a hidden rotation of English."""
    rng = np.random.default_rng(seed)
    images = unit(rng.normal(size=(n, dim)))
    english = unit(images + noise * rng.normal(size=(n, dim)))
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    russian = unit(english @ rotation + noise * rng.normal(size=(n, dim)))
    return images, russian, english


def reference_hits(images, texts):
    sim = unit(images) @ unit(texts).T
    return sim.argmax(axis=1) == np.arange(len(sim)), sim.argmax(axis=0) == np.arange(len(sim))


@pytest.mark.parametrize("folds", [5, "loo"])
def test_evaluation_never_fits_on_what_it_scores(folds):
    images, russian, english = caption_world()
    extra_src, extra_tgt = caption_world(n=30, seed=9)[1:]
    calls = []

    def recording_fit(x, y, **kwargs):
        calls.append((x.copy(), kwargs["groups"].copy()))
        inner = []
        real = textmap._Ridge.predict

        def spy(self, rows, alphas):
            inner.append(rows.copy())
            return real(self, rows, alphas)

        textmap._Ridge.predict = spy
        try:
            adapter = fit_text_adapter(x, y, **kwargs)
        finally:
            textmap._Ridge.predict = real
        calls[-1] += (inner, adapter.card["alpha"])
        return adapter

    result = evaluate_text_adapter(images, russian, english, folds=folds, extra=(extra_src, extra_tgt),
                                   fit=recording_fit)
    tests = np.concatenate([te for _, te in result.folds])
    assert sorted(tests.tolist()) == list(range(40))  # every image scored exactly once
    assert len(calls) == len(result.folds) == (5 if folds == 5 else 40)
    for (train, test), (x, groups, inner, alpha) in zip(result.folds, calls):
        assert set(train).isdisjoint(test)
        fitted = {tuple(r) for r in np.round(x, 8)}
        assert fitted == {tuple(r) for r in np.round(np.concatenate([russian[train], extra_src]), 8)}
        # the inner cross-validation scores alphas on training rows only, each once
        inner_rows = [tuple(r) for xs in inner for r in np.round(xs, 8)]
        assert len(inner) == 5 and sorted(inner_rows) == sorted(tuple(r) for r in np.round(x, 8))
        assert {tuple(r) for r in np.round(russian[test], 8)}.isdisjoint(inner_rows)
        assert len(np.unique(groups)) == len(x)
        # the fold's alpha is what fitting on its training rows alone gives
        alone = fit_text_adapter(np.concatenate([russian[train], extra_src]),
                                 np.concatenate([english[train], extra_tgt]), groups=groups)
        assert alone.card["alpha"] == alpha
    assert result.alphas == [c[3] for c in calls]


def test_evaluation_reports_before_and_after_per_image():
    images, russian, english = caption_world(n=60)
    result = evaluate_text_adapter(images, russian, english, folds=5, alpha=[0.01, 0.1, 1.0])
    before_i2t, before_t2i = reference_hits(images, russian)
    target_i2t, target_t2i = reference_hits(images, english)
    after_i2t, after_t2i = reference_hits(images, result.adapted)
    np.testing.assert_array_equal(result.hits["i2t"]["before"], before_i2t)
    np.testing.assert_array_equal(result.hits["t2i"]["before"], before_t2i)
    np.testing.assert_array_equal(result.hits["i2t"]["target"], target_i2t)
    np.testing.assert_array_equal(result.hits["t2i"]["after"], after_t2i)
    np.testing.assert_array_equal(result.hits["i2t"]["after"], after_i2t)
    assert result.hits["i2t"]["before"].mean() < 0.3 < 0.8 < result.hits["i2t"]["after"].mean()
    rows = {(r["direction"], r["variant"]): r for r in result.counts()}
    assert rows[("i2t", "after")]["hits"] == int(after_i2t.sum()) and rows[("i2t", "after")]["n"] == 60
    low, high = proportion_confint(int(before_t2i.sum()), 60, alpha=0.05, method="wilson")
    assert rows[("t2i", "before")]["low"] == pytest.approx(low) and rows[("t2i", "before")]["high"] == pytest.approx(high)
    paired = {r["direction"]: r for r in result.paired()}
    table = [[np.sum(before_i2t & after_i2t), np.sum(before_i2t & ~after_i2t)],
             [np.sum(~before_i2t & after_i2t), np.sum(~before_i2t & ~after_i2t)]]
    assert paired["i2t"]["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert paired["i2t"]["only_after"] == table[1][0] and paired["i2t"]["only_before"] == table[0][1]
    assert paired["i2t"]["p_value"] < 0.001
    assert result.cosine["after"].mean() > result.cosine["before"].mean()
    summary = json.loads(json.dumps(result.summary()))
    assert summary["top1"][1]["hits"] == int(after_i2t.sum()) and summary["paired"][0]["direction"] == "i2t"
    assert summary["cosine_to_target_after"] == pytest.approx(result.cosine["after"].mean())


def test_fold_gallery_ranks_only_within_each_fold():
    images, russian, english = caption_world(n=30)
    result = evaluate_text_adapter(images, russian, english, folds=3, alpha=0.1, gallery="fold")
    for _, test in result.folds:
        i2t, t2i = reference_hits(images[test], result.adapted[test])
        np.testing.assert_array_equal(result.hits["i2t"]["after"][test], i2t)
        np.testing.assert_array_equal(result.hits["t2i"]["after"][test], t2i)


def test_extra_pairs_only():
    images, russian, english = caption_world(n=20, seed=1)
    _, extra_ru, extra_en = caption_world(n=200, seed=1)  # same hidden rotation, other sentences
    result = evaluate_text_adapter(images, russian, english, folds="none", extra=(extra_ru[20:], extra_en[20:]))
    assert len(result.folds) == 1 and result.hits["i2t"]["after"].mean() > result.hits["i2t"]["before"].mean()
    with pytest.raises(LabclipError, match="extra"):
        evaluate_text_adapter(images, russian, english, folds="none")
    with pytest.raises(LabclipError, match="folds"):
        evaluate_text_adapter(images, russian, english, folds=50)


def test_few_shot_evaluation_is_out_of_fold(monkeypatch):
    emb, labels, centres = clusters(n_per_class=12, spread=0.5, seed=4)
    text = unit(centres + 0.8 * np.random.default_rng(1).normal(size=centres.shape))
    seen = []
    real = fewshot.linear_probe

    def spy(train_emb, train_labels, test_emb, **kwargs):
        seen.append((train_emb.copy(), test_emb.copy()))
        return real(train_emb, train_labels, test_emb, **kwargs)

    monkeypatch.setattr(fewshot, "linear_probe", spy)
    result = evaluate_few_shot(emb, labels, text, shots=(1, 2, 4), folds=4, seed=3)
    for train_emb, test_emb in seen:
        assert {tuple(r) for r in train_emb}.isdisjoint(tuple(r) for r in test_emb)
    assert len(seen) == 4 * 3
    zero = result.hits[("zero-shot", 0)]
    np.testing.assert_array_equal(zero, (unit(emb) @ text.T).argmax(1) == labels)
    assert result.shots_used == {1: 1, 2: 2, 4: 4}
    rows = {(r["method"], r["shots"]): r for r in result.counts()}
    assert rows[("probe", 4)]["n"] == 36 and rows[("tip", 4)]["hits"] == int(result.hits[("tip", 4)].sum())
    low, _ = proportion_confint(rows[("tip", 4)]["hits"], 36, alpha=0.05, method="wilson")
    assert rows[("tip", 4)]["low"] == pytest.approx(low)
    paired = {(r["method"], r["shots"]): r for r in result.paired()}
    probe4 = result.hits[("probe", 4)]
    assert paired[("probe", 4)]["only_method"] == int(np.sum(probe4 & ~zero))
    assert paired[("probe", 4)]["only_zero_shot"] == int(np.sum(zero & ~probe4)) and len(paired) == 6
    assert result.hits[("probe", 4)].mean() > zero.mean()
    assert evaluate_few_shot(emb, labels, text, shots=(1, 2, 4), folds=4, seed=3).hits.keys() == result.hits.keys()


# --- parallel sentences -----------------------------------------------------------------------


def test_read_parallel_from_a_caption_set_and_a_tsv(tmp_path):
    pairs = read_parallel(DEFAULT_CAPTIONS, "ru", "en")
    assert len(pairs) == 12 and pairs.groups[2] == "../images/coffee.png"  # the image as the caption file writes it
    assert pairs.source[2].startswith("фотография чашки") and pairs.target[2].startswith("a photo of a cup")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("en\tru\nA cat\tКошка\na dog\tсобака\n", encoding="utf-8")
    other = read_parallel(tsv, "ru", "en")
    assert other.source == ["Кошка", "собака"] and other.groups == ["row 2", "row 3"]
    assert other.without(["  a CAT "]).source == ["собака"]
    assert other.sha256 != read_parallel(tsv, "en", "ru").sha256
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps({"image": "a.jpg", "en": ["a cat", "a grey cat", "x"], "ru": ["кошка", "серая кошка"]},
                                ensure_ascii=False) + "\n" + json.dumps({"image": "b.jpg", "en": "a dog", "ru": "собака"},
                                                                         ensure_ascii=False) + "\n", encoding="utf-8")
    listed = read_parallel(jsonl, "ru", "en")
    assert listed.source == ["кошка", "серая кошка", "собака"] and listed.target == ["a cat", "a grey cat", "a dog"]
    assert listed.groups == ["a.jpg", "a.jpg", "b.jpg"]
    jsonl.write_text(json.dumps({"image": "a.jpg", "en": ["a cat"], "ru": []}) + "\n", encoding="utf-8")
    with pytest.raises(LabclipError, match="row 1: empty 'ru'"):
        read_parallel(jsonl, "ru", "en")


@pytest.mark.parametrize("text, words", [
    ("en\tru\na cat\t\n\tсобака\n", ["row 2: empty 'ru'", "row 3: empty 'en'"]),
    ("en\tde\na cat\tKatze\n", ["no 'ru' column", "en, de"]),
    ("en\tru\n", ["no rows"]),
])
def test_read_parallel_errors_name_the_row(tmp_path, text, words):
    tsv = tmp_path / "bad.tsv"
    tsv.write_text(text, encoding="utf-8")
    with pytest.raises(LabclipError) as err:
        read_parallel(tsv, "ru", "en")
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_hf_dataset_path_with_a_fake_datasets_package(monkeypatch, tmp_path):
    """The network is never used: ``datasets`` is a stand-in that yields rows like a streamed dataset."""
    monkeypatch.setenv("LABCLIP_CACHE", str(tmp_path))
    requested = []

    class Stream:
        def __init__(self, rows):
            self.rows = rows

        def select_columns(self, columns):
            return Stream([{c: r[c] for c in columns} for r in self.rows])

        def __iter__(self):
            return iter(self.rows)

    def load_dataset(name, **kwargs):
        requested.append((name, kwargs))
        return Stream([{"ru": ["кошка", "кот"], "en": ["a cat", "a tom cat"], "image": "x"},
                       {"ru": ["собака"], "en": ["a dog"], "image": "y"},
                       {"ru": ["ракета"], "en": ["a rocket"], "image": "z"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr("labclip.hub.hub_reachable", lambda timeout=3.0: True)
    pairs = load_parallel_dataset("someone/coco-ru", "ru", "en", limit=3)
    assert pairs.source == ["кошка", "кот", "собака"] and pairs.target == ["a cat", "a tom cat", "a dog"]
    assert pairs.groups == ["0", "0", "1"] and pairs.origin == "hf:someone/coco-ru:train"
    assert requested == [("someone/coco-ru", {"split": "train", "revision": None, "streaming": True})]
    # the second call reads labclip's cached copy, offline
    monkeypatch.setattr("labclip.hub.hub_reachable", lambda timeout=3.0: False)
    assert load_parallel_dataset("someone/coco-ru", "ru", "en", limit=3).source == pairs.source
    assert len(requested) == 1
    with pytest.raises(LabclipError, match="cannot be reached"):
        load_parallel_dataset("someone/other", "ru", "en")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(LabclipError, match="datasets"):
        load_parallel_dataset("someone/third", "ru", "en")
