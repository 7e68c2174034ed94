"""Fine-tuning the text tower (labclip.finetune, labclip.lab.finetune): the loss as written, a learnable task and a
shuffled one on held-out images, seeded determinism, resume after an interruption, and ``MODEL+finetune:DIR``."""

import csv
import json

import numpy as np
import pytest
import torch

from labclip import load_model
from labclip.cli import main
from labclip.errors import LabclipError
from labclip.finetune import FinetuneConfig, Pairs, Trainer, clip_loss, sigmoid_loss
from labclip.lab.finetune import evaluate_finetune, fresh_copy, image_splits
from labclip.lab.finetune_report import findings, gallery_sentence
from labclip.metrics import contrastive_loss

WORDS = "cat car pizza mountain island rocket horse astronaut galaxy coffee cup red saucer photo".split()
COLOURS = "red blue green black white big small old new".split()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices run fastest, and reproducibly, on one thread (two threads spin on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return load_model(tiny_model_dir, cache=False, precision="fp32")


def synthetic(model, shuffled: bool = False, n: int = 60) -> tuple[Pairs, list[str]]:
    """Captions whose image embeddings are their own text embeddings after a fixed low-rank reflection of the
    embedding space (``I - 2UUᵀ``, rank 8): a text tower that learns the reflection matches every caption,
    held-out ones included. ``shuffled`` pairs each caption with another caption's image: nothing to learn."""
    rng = np.random.default_rng(0)
    texts = [f"a {c} {w}" for c in COLOURS for w in WORDS][:n]
    rng.shuffle(texts)
    u = np.linalg.qr(rng.normal(size=(model.dim, 8)))[0]
    images = model.encode_texts(texts) @ (np.eye(model.dim) - 2 * u @ u.T)
    images = (images / np.linalg.norm(images, axis=1, keepdims=True)).astype(np.float32)
    if shuffled:
        images = images[rng.permutation(n)]
    return Pairs(texts, np.arange(n), images), texts


CONFIG = FinetuneConfig(epochs=10, batch_size=16, lr=5e-3, patience=3)


def test_clip_loss_is_the_seed_formula_on_a_fixed_batch():
    rng = np.random.default_rng(1)
    image, text = (rng.normal(size=(6, 8)) for _ in range(2))
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    got = clip_loss(torch.tensor(image), torch.tensor(text), torch.tensor(30.0))
    assert float(got) == pytest.approx(contrastive_loss(image @ text.T, 30.0), rel=1e-9)
    logits = 10.0 * image @ text.T - 2.0
    expected = -sum(np.log(1 / (1 + np.exp(-(1 if i == j else -1) * logits[i, j])))
                    for i in range(6) for j in range(6)) / 6
    got = sigmoid_loss(torch.tensor(image), torch.tensor(text), torch.tensor(10.0), torch.tensor(-2.0))
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_learnable_task_gains_significantly_on_held_out_images(base):
    pairs, first = synthetic(base)
    evaluation, _ = evaluate_finetune(base, pairs, first, CONFIG, folds=3)
    tests = {(r["direction"], r["k"], r["against"]): r for r in evaluation.paired()}
    rates = {(r["direction"], r["k"], r["variant"]): r["hits"] for r in evaluation.counts()}
    for direction, k in (("i2t", 1), ("i2t", 5), ("t2i", 5)):
        assert tests[direction, k, "zero_shot"]["p_value"] < 0.05
        assert rates[direction, k, "finetuned"] > rates[direction, k, "zero_shot"]
    assert evaluation.n == 60 and sorted(evaluation.images) == list(range(60))  # every image scored once, held out
    said = findings(evaluation)
    i2t_r1 = next(s for s in said if "image→text recall@1" in s)
    assert "a significant gain" in i2t_r1
    assert all(h.val_loss[h.best_epoch] < h.val_loss[0] for h in evaluation.histories)
    gallery = gallery_sentence(evaluation)
    assert "split's 20 captions" in gallery and "100% for every method" not in gallery
    small = gallery_sentence(type(evaluation)(evaluation.hits, evaluation.images, image_splits(12, 5), []))
    assert "split's 2–3 captions" in small and "recall@5 is 100% for every method" in small


def test_shuffled_pairs_gain_nothing_and_the_prose_says_so(base):
    pairs, first = synthetic(base, shuffled=True)
    evaluation, _ = evaluate_finetune(base, pairs, first, CONFIG, folds=3)
    against_zero = [r for r in evaluation.paired() if r["against"] == "zero_shot"]
    assert all(r["p_value"] >= 0.05 for r in against_zero)
    said = findings(evaluation, untrained=True)
    assert all("not significant" in s and "no clear gain" in s for s in said[:4])
    assert "significant gain" not in " ".join(said)
    assert said[-1].startswith("The model is untrained")


def _train(model, seed: int = 0, checkpoint=None, on_epoch=None, epochs: int = 4):
    pairs, _ = synthetic(model, n=24)
    config = FinetuneConfig(epochs=epochs, batch_size=8, lr=5e-3, seed=seed, patience=0)
    trainer = Trainer(fresh_copy(model), config, pairs.subset(np.arange(18)), pairs.subset(np.arange(18, 24)),
                      checkpoint)
    return trainer.fit(on_epoch=on_epoch)


def test_one_seed_gives_identical_weights_and_another_seed_other_weights(base):
    a, b, c = _train(base), _train(base), _train(base, seed=1)
    assert a.tensors.keys() == b.tensors.keys() and len(a.tensors) > 0
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.history.val_loss == b.history.val_loss
    assert not all(torch.equal(a.tensors[k], c.tensors[k]) for k in a.tensors)


def test_resume_after_interruption_gives_the_uninterrupted_weights(base, tmp_path):
    whole = _train(base)
    checkpoint = tmp_path / "checkpoint.pt"

    def stop_after_two(history):
        if history.epochs[-1] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(base, checkpoint=checkpoint, on_epoch=stop_after_two)
    assert checkpoint.is_file() and not list(tmp_path.glob(".*.tmp"))
    resumed = _train(base, checkpoint=checkpoint)
    assert resumed.resumed_from == 2
    assert all(torch.equal(whole.tensors[k], resumed.tensors[k]) for k in whole.tensors)
    assert resumed.history.train_loss == whole.history.train_loss
    with pytest.raises(LabclipError, match="other settings"):
        _train(base, checkpoint=checkpoint, epochs=5)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_model_dir):
    """``labclip finetune`` on a small caption set of the tiny model (images from the repository's data)."""
    from labclip.config import DATA_DIR

    folder = tmp_path_factory.mktemp("ft")
    images = sorted((DATA_DIR / "images").glob("*.png"))[:10]
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "ru"])
        writer.writerows([str(p), f"фотография {i} <b>&amp;</b>"] for i, p in enumerate(images))
    out = folder / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    code = main(["finetune", str(folder / "captions.csv"), "--lang", "ru", "--model", str(tiny_model_dir),
                 "--out", str(out), "--epochs", "2", "--folds", "2", "--pairs-per-batch", "4"])
    torch.set_num_threads(threads)
    assert code == 0
    return folder, out


def test_finetune_command_writes_weights_and_card(finetuned, tiny_model_dir):
    _, out = finetuned
    assert sorted(p.name for p in out.iterdir()) == ["finetune.json", "finetune.safetensors"]  # checkpoints removed
    card = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    assert card["method"] == "lora" and card["seed"] == 0 and card["trainable_parameters"] > 0
    assert card["held_out"]["images"] == 10 and len(card["held_out"]["histories"]) == 2
    assert {"base_model", "base_revision", "data_sha256", "hyper_parameters", "sha256"} <= card.keys()
    assert str(tiny_model_dir.parent) not in card["base_revision"]


def test_plus_finetune_loads_in_match_and_changes_only_the_captions(finetuned, tiny_model_dir, tmp_path):
    folder, out = finetuned
    spec = f"{tiny_model_dir}+finetune:{out}"
    tuned, plain = load_model(spec, cache=False), load_model(tiny_model_dir, cache=False)
    texts = ["фотография 1", "a cat"]
    assert not np.allclose(tuned.encode_texts(texts), plain.encode_texts(texts), atol=1e-6)
    assert main(["match", str(folder / "captions.csv"), "--lang", "ru", "--model", spec,
                 "--out", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv", encoding="utf-8")))
    assert rows[0]["model"] == f"{tiny_model_dir.name}+finetune:{out.name}"
    assert "+finetune:" in rows[0]["model_revision"] and str(tmp_path) not in rows[0]["model_revision"]


def test_finetune_is_never_dropped_for_the_demo_model():
    from labclip.hub import ModelUnavailable
    from labclip.lab.runs import _fallback

    with pytest.raises(ModelUnavailable):
        _fallback("org/not-cached+finetune:/some/dir", False, ModelUnavailable("not cached, hub unreachable"))


def test_bad_inputs_are_one_line_errors_and_write_nothing(finetuned, tiny_model_dir, tmp_path, capsys):
    folder, out = finetuned
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = ["finetune", str(folder / "captions.csv"), "--lang", "ru", "--model", str(tiny_model_dir)]
    assert main([*args, "--out", str(foreign)]) == 2
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert main([*args, "--out", str(tmp_path / "new"), "--lang", "xx"]) == 2
    assert main([*args, "--out", str(tmp_path / "new"), "--epochs", "0"]) == 2
    assert not (tmp_path / "new").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("labclip: error:") for line in err if "error" in line)
    other = tmp_path / "other"
    from labclip.testing import make_tiny_model

    make_tiny_model(other, seed=3)
    with pytest.raises(LabclipError, match="was trained on"):
        load_model(f"{other}+finetune:{out}", cache=False)


SIGLIP = "google/siglip-base-patch16-256-multilingual"
ST = "sentence-transformers/clip-ViT-B-32-multilingual-v1"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    from hub_replicas import write_replica

    cache = tmp_path_factory.mktemp("hub")
    for repo in (SIGLIP, ST, "openai/clip-vit-base-patch32"):
        write_replica(cache, repo)
    return cache


@pytest.mark.parametrize(("repo", "method"), [(SIGLIP, "lora"), (ST, "layers")])
def test_other_families_fine_tune_and_reload(hub_cache, tmp_path, monkeypatch, repo, method):
    """SigLIP (sigmoid loss with the model's logit bias) and a separate multilingual text tower, through the
    hub replicas: training changes the tower, and the saved folder put on a freshly loaded model gives the
    trained tower's embeddings."""
    import huggingface_hub.constants as constants

    from labclip.finetune import embed_texts, save_finetune

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(repo, cache=False, precision="fp32")
    pairs, texts = synthetic(model, n=12)
    trainer = Trainer(model, FinetuneConfig(method=method, epochs=2, batch_size=6, lr=1e-3), pairs)  # no validation:
    # the last epoch's weights are kept (with validation, a loss that never fell would keep the untouched tower)
    image, text = torch.tensor(pairs.images[:6]), embed_texts(model, texts[:6]).detach()
    if repo == SIGLIP:
        assert model.logit_bias is not None
        assert float(trainer.loss(image, text)) == pytest.approx(
            float(sigmoid_loss(image, text, torch.tensor(model.logit_scale), torch.tensor(model.logit_bias))))
    trained = trainer.fit()
    assert trained.history.epochs == [0, 1, 2]
    with torch.no_grad():
        after = embed_texts(model, texts).numpy()
    assert not np.allclose(after, load_model(repo, cache=False).encode_texts(texts), atol=1e-5)
    save_finetune(trained, model, tmp_path / "ft")
    reloaded = load_model(f"{repo}+finetune:{tmp_path / 'ft'}", cache=False)
    np.testing.assert_allclose(reloaded.encode_texts(texts), after, atol=2e-5)


def test_a_learned_temperature_is_saved_and_put_on_the_model(base, tiny_model_dir, tmp_path):
    from labclip.finetune import save_finetune

    pairs, _ = synthetic(base, n=16)
    config = FinetuneConfig(epochs=2, batch_size=8, lr=5e-2, learn_temperature=True, method="layers")
    trained = Trainer(fresh_copy(base), config, pairs).fit()
    assert trained.logit_scale != pytest.approx(base.logit_scale)
    save_finetune(trained, base, tmp_path / "ft")
    tuned = load_model(f"{tiny_model_dir}+finetune:{tmp_path / 'ft'}", cache=False)
    assert tuned.logit_scale == pytest.approx(trained.logit_scale)
    fixed = Trainer(fresh_copy(base), FinetuneConfig(epochs=1, batch_size=8, method="layers"), pairs).fit()
    assert fixed.logit_scale == pytest.approx(base.logit_scale)


def test_finetune_command_resumes_after_ctrl_c_to_the_same_weights(finetuned, tiny_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    folder, _ = finetuned
    args = ["finetune", str(folder / "captions.csv"), "--lang", "ru", "--model", str(tiny_model_dir), "--epochs", "3",
            "--folds", "holdout", "--pairs-per-batch", "4", "--patience", "0"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    calls, run_epoch = [], Trainer.run_epoch

    def interrupted(self, on_batch=None):
        calls.append(self.epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run_epoch(self, on_batch)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    assert main([*args, "--out", str(tmp_path / "again")]) == 130
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["checkpoints"]
    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    assert main([*args, "--out", str(tmp_path / "again")]) == 0
    whole, again = (load_file(str(tmp_path / d / "finetune.safetensors")) for d in ("whole", "again"))
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)
    card = json.loads((tmp_path / "again" / "finetune.json").read_text(encoding="utf-8"))
    assert card["resumed_from_epoch"] == 2 and card["history"]["epochs"] == [0, 1, 2, 3]


def test_a_model_with_a_text_adapter_is_refused_before_anything_is_trained(tiny_model):
    from labclip.adapter import TextAdapter, apply_adapter
    from labclip.finetune import prepare

    dim = tiny_model.dim
    adapted = apply_adapter(tiny_model, TextAdapter(np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32)),
                            check_source=False)
    with pytest.raises(LabclipError, match="not a model with a text adapter"):
        prepare(adapted, FinetuneConfig())
