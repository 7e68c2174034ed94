"""Fine-tuning runs of the lab: the text tower fine-tuned on a caption set (:mod:`labclip.finetune`) and scored
honestly on images it never saw, against zero-shot and against the ridge text adapter on the same split.

Images are split into folds (k-fold for small sets, one 80/20 hold-out for large ones); in each fold a fresh copy
of the model is fine-tuned on the training images' captions, with a validation part of them for early stopping,
and scored on the held-out images, each ranked only among its fold's captions (no caption in a gallery was
trained on). The ridge adapter (:func:`labclip.adapt.fit_text_adapter`, the model's own caption embeddings
mapped onto the image embeddings) is fitted on the same training images. Every held-out image gets a hit per
direction, recall@k and variant, so exact McNemar tests pair them.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..adapt import fit_text_adapter
from ..data import CaptionSet, flatten_captions, load_captions
from ..errors import LabclipError
from ..finetune import FinetuneConfig, Pairs, Trained, Trainer, embed_texts, save_finetune
from ..stats import paired_test, wilson_interval
from .provenance import Timings, now, sha256_file
from .wording import DIRECTIONS

VARIANTS = {"zero_shot": "zero-shot tower", "ridge": "ridge text adapter", "finetuned": "fine-tuned tower"}
KS = (1, 5)
HOLDOUT_FROM = 200  # images; below, k-fold
CHECKPOINTS = "checkpoints"


def image_splits(n: int, folds: int | str = "auto", seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` image rows: ``"auto"`` is 5 folds below ``HOLDOUT_FROM`` images, else ``"holdout"`` (one
    random 20% of the images held out); a number is that many folds."""
    if folds == "auto":
        folds = 5 if n < HOLDOUT_FROM else "holdout"
    order = np.random.default_rng(seed).permutation(n)
    if folds == "holdout":
        cut = max(2, round(0.2 * n))
        parts = [order[:cut]]
    elif isinstance(folds, int) and 2 <= folds <= n // 2:
        parts = list(np.array_split(order, folds))
    else:
        raise LabclipError(f"--folds must be 'auto', 'holdout' or a number from 2 to {n // 2} "
                           f"(half the {n} images), got {folds!r}")
    return [(np.sort(np.setdiff1d(order, test)), np.sort(test)) for test in parts]


def validation_split(train: np.ndarray, seed: int, fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Training images split into fitting and validation (early stopping) images: at least 2 of each."""
    if len(train) < 4:
        raise LabclipError(f"fine-tuning needs at least 4 training images per fold (2 to fit, 2 to validate), "
                           f"got {len(train)}; use fewer folds or more images")
    order = np.random.default_rng([seed, 1]).permutation(train)
    cut = min(max(2, round(fraction * len(train))), len(train) - 2)
    return np.sort(order[cut:]), np.sort(order[:cut])


def gallery_hits(images: np.ndarray, texts: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """Per direction and k, whether each image (row ``i``, its caption row ``i``) is within the top k."""
    sim = images.astype(np.float64) @ texts.astype(np.float64).T
    correct = np.diag(sim)
    ranks = {"i2t": 1 + (sim > correct[:, None]).sum(axis=1), "t2i": 1 + (sim > correct[None, :]).sum(axis=0)}
    return {d: {k: r <= k for k in KS} for d, r in ranks.items()}


@dataclass
class FinetuneEvaluation:
    """Held-out hits of the three variants and each fold's training curve.

    Attributes:
        hits: ``hits[direction][variant][k]``: one boolean per image (images in ``folds``' test order).
        images: the image rows, in that order.
        folds: ``(train, test)`` image rows of each fold.
        histories: each fold's :class:`labclip.finetune.History`.
        sims: per fold, the held-out ``images × captions`` cosines before and after (for heatmaps).
    """

    hits: dict[str, dict[str, dict[int, np.ndarray]]]
    images: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    histories: list[Any]
    sims: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.images)

    def counts(self) -> list[dict[str, Any]]:
        """One row per direction, k and variant: ``hits, n, recall, low, high`` (95% Wilson interval)."""
        rows = []
        for direction, variants in self.hits.items():
            for k in KS:
                for variant, by_k in variants.items():
                    h = int(by_k[k].sum())
                    low, high = wilson_interval(h, self.n)
                    rows.append({"direction": direction, "k": k, "variant": variant, "hits": h, "n": self.n,
                                 "recall": h / self.n, "low": low, "high": high})
        return rows

    def paired(self) -> list[dict[str, Any]]:
        """Exact McNemar of fine-tuned against zero-shot and against the ridge adapter, per direction and k."""
        rows = []
        for direction, variants in self.hits.items():
            for k in KS:
                for other in ("zero_shot", "ridge"):
                    t = paired_test(variants["finetuned"][k], variants[other][k])
                    rows.append({"direction": direction, "k": k, "against": other, "only_finetuned": t.only_a,
                                 f"only_{other}": t.only_b, "only_other": t.only_b, "n": t.n, "p_value": t.p_value})
        return rows

    def summary(self) -> dict[str, Any]:
        """Plain numbers for the card and the run's JSON."""
        return {"images": self.n, "folds": len(self.folds), "recall": self.counts(), "paired": self.paired(),
                "histories": [asdict(h) for h in self.histories]}


def fresh_copy(model: Any) -> Any:
    """A deep copy of ``model`` to fine-tune (its embedding cache left behind, the original untouched)."""
    cache, model.cache = model.cache, None
    try:
        return copy.deepcopy(model)
    finally:
        model.cache = cache


def embed(model: Any, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    """Unit caption embeddings through a (fine-tuned) tower, without gradients."""
    with torch.no_grad():
        return torch.cat([embed_texts(model, texts[s:s + batch]) for s in range(0, len(texts), batch)]).cpu().numpy()


Callbacks = tuple[Callable[[float], None] | None, Callable[[Any], None] | None]
Progress = Callable[[str, Trainer], Callbacks]  # told each training as it starts; returns fit's callbacks


def train_fold(model: Any, pairs: Pairs, train: np.ndarray, config: FinetuneConfig,
               checkpoint: Path | None, progress: Progress | None, what: str) -> tuple[Any, Trainer, Trained]:
    """Fine-tune a fresh copy of ``model`` on ``train`` images (a validation part held back for early stopping)."""
    fit, val = validation_split(train, config.seed)
    tuned = fresh_copy(model)
    trainer = Trainer(tuned, config, pairs.subset(fit), pairs.subset(val), checkpoint)
    on_batch, on_epoch = progress(what, trainer) if progress is not None else (None, None)
    return tuned, trainer, trainer.fit(on_batch, on_epoch)


def evaluate_finetune(model: Any, pairs: Pairs, first: list[str], config: FinetuneConfig, *,
                      folds: int | str = "auto", checkpoints: Path | None = None,
                      progress: Progress | None = None) -> tuple[FinetuneEvaluation, dict[str, Any] | None]:
    """Cross-validate fine-tuning over images; ``first[i]`` is image ``i``'s caption scored in its fold.

    Returns:
        The evaluation, and for a single hold-out the fine-tuned model, trainer and result of that split (the
        weights the evaluation scored), else ``None``.
    """
    splits = image_splits(len(pairs.images), folds, config.seed)
    before = model.encode_texts(first)
    hits: dict[str, dict[str, dict[int, list[np.ndarray]]]] = {
        d: {v: {k: [] for k in KS} for v in VARIANTS} for d in DIRECTIONS}
    histories, sims, kept = [], [], None
    for n, (train, test) in enumerate(splits):
        ridge = fit_text_adapter(before[train], pairs.images[train], groups=list(train), card={})
        tuned, trainer, trained = train_fold(model, pairs, train, config,
                                             checkpoints / f"fold-{n}.pt" if checkpoints else None, progress,
                                             f"fold {n + 1}/{len(splits)}")
        after = embed(tuned, [first[i] for i in test])
        texts = {"zero_shot": before[test], "ridge": ridge.transform(before[test]), "finetuned": after}
        for variant, emb in texts.items():
            for d, by_k in gallery_hits(pairs.images[test], emb).items():
                for k in KS:
                    hits[d][variant][k].append(by_k[k])
        histories.append(trained.history)
        sims.append({"rows": test, "before": pairs.images[test] @ before[test].T, "after": pairs.images[test] @ after.T})
        if len(splits) == 1:
            kept = {"model": tuned, "trainer": trainer, "trained": trained}
    joined = {d: {v: {k: np.concatenate(parts) for k, parts in by_k.items()} for v, by_k in variants.items()}
              for d, variants in hits.items()}
    return FinetuneEvaluation(joined, np.concatenate([t for _, t in splits]), splits, histories, sims), kept


@dataclass
class FinetuneRun:
    """A fine-tuning run: its inputs, held-out evaluation, the final weights and where they were written."""

    model: Any
    table: CaptionSet
    language: str
    config: FinetuneConfig
    evaluation: FinetuneEvaluation
    trained: Trained
    tuned: Any
    requested_model: str
    out: Path | None = None
    timings: Timings = field(default_factory=Timings)
    fallback_reason: str | None = None
    started: str = field(default_factory=now)

    @property
    def card(self) -> dict[str, Any]:
        return {"language": self.language, "held_out": self.evaluation.summary(),
                "data": {"captions": Path(self.table.attrs["source"]).name,
                         "captions_sha256": sha256_file(self.table.attrs["source"]), "images": len(self.table)}}


def caption_pairs(model: Any, table: CaptionSet, language: str) -> tuple[Pairs, list[str]]:
    """Every caption of ``language`` paired with its image's embedding, and each image's first caption."""
    texts, owner = flatten_captions(table, language)
    if len(table) < 6:
        raise LabclipError(f"fine-tuning needs at least 6 images with '{language}' captions, got {len(table)}")
    images = model.encode_images(table["path"])
    first: dict[int, str] = {}
    for text, row in zip(texts, owner):
        first.setdefault(int(row), text)
    return Pairs(texts, owner, images), [first[i] for i in range(len(table))]


def run_finetune(model: Any, captions: str | os.PathLike[str] | CaptionSet, language: str, *,
                 image_dir: str | os.PathLike[str] | None = None, config: FinetuneConfig | None = None,
                 folds: int | str = "auto", out: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None, requested_model: str | None = None,
                 fallback_reason: str | None = None, timings: Timings | None = None) -> FinetuneRun:
    """Fine-tune ``model``'s text tower on a caption set, score it held out, and (with ``out``) save the weights.

    With one hold-out split the saved weights are the ones scored; with k folds a final run on all images (a
    validation part held back) gives them, and the card's held-out results are those of the same recipe.
    Checkpoints go to ``out/checkpoints/`` after every epoch; a run started again with the same settings resumes
    from them, and they are removed once the weights are written.
    """
    config = config or FinetuneConfig()
    timings = Timings() if timings is None else timings
    table = captions
    if not isinstance(table, CaptionSet):
        with timings.stage("load captions"):
            table = load_captions(Path(table), None if image_dir is None else Path(image_dir), [language])
    with timings.stage("encode images"):
        pairs, first = caption_pairs(model, table, language)
    checkpoints = Path(out) / CHECKPOINTS if out is not None else None
    with timings.stage("fine-tune and evaluate"):
        evaluation, kept = evaluate_finetune(model, pairs, first, config, folds=folds, checkpoints=checkpoints,
                                             progress=progress)
    if kept is None:
        with timings.stage("fine-tune on all images"):
            tuned, _, trained = train_fold(model, pairs, np.arange(len(table)), config,
                                           checkpoints / "final.pt" if checkpoints else None, progress, "final")
    else:
        tuned, trained = kept["model"], kept["trained"]
    run = FinetuneRun(model, table, language, config, evaluation, trained, tuned, requested_model or model.name,
                      Path(out) if out is not None else None, timings, fallback_reason)
    if out is not None:
        save_finetune(trained, model, out, **run.card)
        if checkpoints is not None and checkpoints.is_dir():
            shutil.rmtree(checkpoints)
    return run
