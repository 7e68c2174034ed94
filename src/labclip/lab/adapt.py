"""Adapter runs of the lab: a text adapter fitted and scored on a caption set, and few-shot image
classifiers on labelled images; each with the facts its report and JSON record.

The fitting and the honest evaluation are :mod:`labclip.adapt`; this module loads the inputs,
encodes them once, runs the evaluation and keeps everything a notebook or the ``labclip adapt``
command shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..adapt import (
    AdapterEvaluation,
    FewShotEvaluation,
    ParallelText,
    TextAdapter,
    evaluate_few_shot,
    evaluate_text_adapter,
    fit_text_adapter,
)
from ..adapter import model_ref
from ..config import DEFAULT_CAPTIONS, DEFAULT_LABELS
from ..data import CaptionSet, flatten_captions, load_captions
from ..errors import LabclipError
from ..metrics import correct_ranks
from ..model import ClipModel, describe
from ..spec import shown_revision
from ..stats import wilson_interval
from ..zeroshot import class_embeddings, labelled_images, load_templates
from .provenance import Timings, sha256_file, sha256_files
from .runs import Kind, Loaded, Run
from .wording import DIRECTIONS

SHOTS = (1, 2, 4, 8, 16)


def _first(texts: list[str], owner: np.ndarray, n: int) -> list[str]:
    """The first caption of each of ``n`` images."""
    first: dict[int, str] = {}
    for text, row in zip(texts, owner):
        first.setdefault(int(row), text)
    return [first[i] for i in range(n)]


@dataclass(kw_only=True)
class TextAdapterRun(Run):
    """A text adapter scored out of fold on a caption set, then fitted on all of it.

    Attributes:
        model: the model whose images and target-language captions set the space.
        source_model: the model that encoded the source captions (``model`` itself by default).
        evaluation: held-out before/after/target hits per image (:func:`labclip.adapt.evaluate_text_adapter`).
        training: top-1 hits per direction of the final adapter on the images it was fitted on.
        adapter: fitted on every pair; its card holds the held-out summary.
    """

    source_model: ClipModel
    captions: CaptionSet
    source_lang: str
    target_lang: str
    evaluation: AdapterEvaluation
    training: dict[str, np.ndarray]
    adapter: TextAdapter
    image_emb: np.ndarray
    source_emb: np.ndarray
    target_emb: np.ndarray
    parallel: ParallelText | None = None

    def scores(self) -> pd.DataFrame:
        """Top-1 per direction for before (raw source captions), after (adapted, held out), the
        target language, and the final adapter on its own training images, with 95% Wilson intervals."""
        rows = [{**row, "split": "held out"} for row in self.evaluation.counts()]
        for direction, hits in self.training.items():
            low, high = wilson_interval(int(hits.sum()), len(hits))
            rows.append({"direction": direction, "variant": "after", "hits": int(hits.sum()), "n": len(hits),
                         "top1": float(hits.mean()), "low": low, "high": high, "split": "training"})
        return pd.DataFrame(rows)

    def paired(self) -> pd.DataFrame:
        """Exact McNemar test of after against before on the same held-out images, per direction."""
        return pd.DataFrame(self.evaluation.paired())

    def alpha_curve(self) -> pd.Series:
        """Mean inner-cross-validated cosine to the target captions per alpha (the final fit's grid)."""
        curve = self.adapter.card.get("cv_cosine", {})
        return pd.Series({float(a): c for a, c in curve.items()}, name="cosine").sort_index()

    def card(self) -> dict:
        return dict(self.adapter.card)

    @property
    def image_paths(self) -> list[str]:
        return list(self.captions.paths)

    def facts(self) -> dict:
        source = self.captions.attrs["source"]
        facts = {"captions_file": Path(source).name, "captions_sha256": sha256_file(source),
                 "images": len(self.image_paths), "images_sha256": sha256_files(self.image_paths),
                 "source_lang": self.source_lang, "target_lang": self.target_lang}
        if self.source_model is not self.model:
            facts["source_model"] = describe(self.source_model)
        if self.parallel is not None:
            facts["parallel"] = {"origin": Path(self.parallel.origin).name, "pairs": len(self.parallel),
                                 "sha256": self.parallel.sha256}
        return facts


def run_text_adapter(
    model: ClipModel,
    captions: str | os.PathLike | CaptionSet,
    source_lang: str = "ru",
    target_lang: str = "en",
    *,
    image_dir: str | os.PathLike | None = None,
    source_model: ClipModel | None = None,
    parallel: ParallelText | None = None,
    folds: int | str = 5,
    alpha: float | Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    requested_model: str | None = None,
    fallback_reason: str | None = None,
    timings: Timings | None = None,
) -> TextAdapterRun:
    """Score a ``source_lang``→``target_lang`` text adapter out of fold on a caption set, then fit it on all.

    Args:
        model: a loaded model; its image embeddings and ``target_lang`` caption embeddings are the target space.
        captions: a caption set (or its file) with both language columns (its images are the held-out test).
        source_model: encodes the ``source_lang`` captions (default: ``model``).
        parallel: more sentence pairs to fit on in every fold; pairs that repeat a caption of the
            caption set are dropped first, so nothing scored is fitted on.
        folds: folds over images, or ``"loo"``.
        alpha: fixed ridge penalty, or ``None`` to choose it by cross-validation inside each training fold.

    Raises:
        LabclipError: bad captions, too few images for the folds, or an adapter that does not fit.
    """
    timings = Timings() if timings is None else timings
    source_model = source_model or model
    if not isinstance(captions, CaptionSet):
        with timings.stage("load captions"):
            captions = load_captions(Path(captions), Path(image_dir) if image_dir else None, [source_lang, target_lang])
    images, source, target, parallel, extra = _encode(model, source_model, captions, source_lang, target_lang,
                                                      parallel, batch_size, timings)
    with timings.stage("evaluate (cross-validated)"):
        evaluation = evaluate_text_adapter(images, source, target, folds=folds, alpha=alpha,
                                           extra=None if extra is None else extra[:2], seed=seed)
        if source_model is not model:
            for hits in evaluation.hits.values():
                hits.pop("before", None)
    card = _card(model, source_model, captions, source_lang, target_lang, parallel)
    with timings.stage("fit on all pairs"):
        x, y, groups = source, target, np.arange(len(captions))
        if extra is not None:
            x, y, groups = (np.concatenate([x, extra[0]]), np.concatenate([y, extra[1]]),
                            np.concatenate([groups, extra[2]]))
        adapter = fit_text_adapter(x, y, alpha=alpha, groups=list(groups), card=card)
        adapter = adapter.with_card(held_out=evaluation.summary())
    sim = images.astype(np.float64) @ adapter.transform(source).astype(np.float64).T
    training = {"i2t": correct_ranks(sim) == 1, "t2i": correct_ranks(sim.T) == 1}
    return TextAdapterRun(
        model=model, source_model=source_model, captions=captions, source_lang=source_lang, target_lang=target_lang,
        evaluation=evaluation, training=training, adapter=adapter, image_emb=images, source_emb=source,
        target_emb=target, parallel=parallel, requested_model=requested_model or model.name,
        fallback_reason=fallback_reason, timings=timings, batch_size=batch_size)


def _card(model: ClipModel, source_model: ClipModel, captions: CaptionSet, source_lang: str, target_lang: str,
          parallel: ParallelText | None) -> dict:
    """What the adapter's card records of its source and target towers and the data it was fitted on."""
    return {"source_model": model_ref(source_model), "source_revision": shown_revision(source_model.revision),
            "target_model": model_ref(model), "target_revision": shown_revision(model.revision),
            "source_lang": source_lang, "target_lang": target_lang,
            "data": {"captions": Path(captions.source).name, "captions_sha256": sha256_file(captions.source),
                     **({"parallel": Path(parallel.origin).name, "parallel_sha256": parallel.sha256}
                        if parallel is not None else {})},
            "labclip_version": __version__}


def _encode(model: ClipModel, source_model: ClipModel, table: CaptionSet, source_lang: str, target_lang: str,
            parallel: ParallelText | None, batch_size: int | None, timings: Timings) -> tuple:
    """Images, first source and target captions, the parallel pairs left after dropping the set's captions and
    their embeddings with their groups (``None`` without pairs)."""
    n = len(table)
    src_texts, src_owner = flatten_captions(table, source_lang)
    tgt_texts, tgt_owner = flatten_captions(table, target_lang)
    with timings.stage("encode images"):
        images = model.encode_images(table.paths, batch_size)
    with timings.stage("encode captions"):
        source = source_model.encode_texts(_first(src_texts, src_owner, n), batch_size)
        target = model.encode_texts(_first(tgt_texts, tgt_owner, n), batch_size)
    if parallel is None:
        return images, source, target, None, None
    parallel = parallel.without(src_texts + tgt_texts)
    if not len(parallel):
        raise LabclipError("every parallel pair repeats a caption of the caption set; nothing left to fit on")
    with timings.stage("encode parallel pairs"):
        extra = (source_model.encode_texts(parallel.source, batch_size),
                 model.encode_texts(parallel.target, batch_size),
                 n + pd.factorize(pd.Series(parallel.groups))[0])
    return images, source, target, parallel, extra


def _prepare_text_adapter(timings: Timings, *, captions: str | os.PathLike | None = None,
                          image_dir: str | os.PathLike | None = None, source_lang: str = "ru", target_lang: str = "en",
                          **options: Any) -> tuple[CaptionSet, list[str], dict[str, Any]]:
    """The caption set (default: the default caption set) with both languages, checked before the model loads."""
    with timings.stage("load captions"):
        table = load_captions(Path(captions) if captions else DEFAULT_CAPTIONS,
                              Path(image_dir) if image_dir else None, [source_lang, target_lang])
    return table, [source_lang, target_lang], options


def _build_text_adapter(inputs: tuple[CaptionSet, list[str], dict[str, Any]], loaded: list[Loaded],
                        skipped: list[str], *, timings: Timings, batch_size: int | None) -> TextAdapterRun:
    (table, (source_lang, target_lang), options), (one,) = inputs, loaded
    return run_text_adapter(one.model, table, source_lang, target_lang, requested_model=one.requested,
                            fallback_reason=one.fallback_reason, timings=timings, batch_size=batch_size, **options)


TEXT_ADAPTER = Kind(_prepare_text_adapter, _build_text_adapter, default_for="06_adapt")
"""The text adapter run for :func:`labclip.lab.runs.start`: ``runs.start(TEXT_ADAPTER, model, captions=...,
image_dir=..., source_lang="ru", target_lang="en", folds=..., alpha=..., seed=...)``; the model falls back to the
demo model by the lab's one rule (never a model with an adapter or fine-tuned weights), then
:func:`run_text_adapter` scores and fits the adapter."""



@dataclass(kw_only=True)
class FewShotRun(Run):
    """Linear probe and Tip-Adapter over shots against zero-shot, every image scored out of fold."""

    paths: list[str]
    classes: list[str]
    evaluation: FewShotEvaluation
    templates: str
    language: str
    labels_file: str = ""

    def scores(self) -> pd.DataFrame:
        """Top-1 accuracy per method and shot count, with 95% Wilson intervals."""
        return pd.DataFrame(self.evaluation.counts())

    def paired(self) -> pd.DataFrame:
        """Exact McNemar test of each method and shot count against zero-shot."""
        return pd.DataFrame(self.evaluation.paired())

    def images_per_class(self) -> tuple[int, int]:
        """(fewest, most) labelled images of a class."""
        counts = np.bincount(self.evaluation.truth, minlength=len(self.classes))
        return int(counts.min()), int(counts.max())

    @property
    def image_paths(self) -> list[str]:
        return self.paths

    def facts(self) -> dict:
        return {"labels_file": self.labels_file, "labelled_images": len(self.paths),
                "images_sha256": sha256_files(self.paths), "classes": self.classes, "templates": self.templates,
                "language": self.language}


def run_few_shot(
    model,
    labels: str | os.PathLike | None = None,
    shots: Sequence[int] = SHOTS,
    *,
    folds: int | str = 5,
    seed: int = 0,
    templates: str = "imagenet7",
    language: str = "en",
    batch_size: int | None = None,
    requested_model: str | None = None,
) -> FewShotRun:
    """Zero-shot, linear probe and Tip-Adapter on labelled images (a folder of class folders or a CSV;
    default ``data/labels.csv``)."""
    timings = Timings()
    labels = labels or DEFAULT_LABELS
    data = labelled_images(Path(labels), language)
    prompts = load_templates(templates, language)
    with timings.stage("encode images"):
        images = model.encode_images(data.paths, batch_size)
    with timings.stage("encode class prompts"):
        text = class_embeddings(model, data.classes, prompts)
    with timings.stage("evaluate (cross-validated)"):
        evaluation = evaluate_few_shot(images, data.truth, text, shots, folds=folds, seed=seed,
                                       logit_scale=model.logit_scale)
    return FewShotRun(model=model, paths=data.paths, classes=data.classes, evaluation=evaluation, templates=templates,
                      language=language, labels_file=Path(labels).name, requested_model=requested_model or model.name,
                      timings=timings, batch_size=batch_size)


__all__ = ["DIRECTIONS", "SHOTS", "FewShotRun", "TextAdapterRun", "TEXT_ADAPTER", "run_few_shot", "run_text_adapter"]
