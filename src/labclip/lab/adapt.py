"""Adapter runs of the lab: a text adapter fitted and scored on a caption set, and few-shot image
classifiers on labelled images; each with the facts its report and JSON record.

The fitting and the honest evaluation are :mod:`labclip.adapt`; this module loads the inputs,
encodes them once, runs the evaluation and keeps everything a notebook or the ``labclip adapt``
command shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
from ..config import shown_model, shown_revision
from ..data import CaptionSet, flatten_captions, load_captions
from ..errors import LabclipError
from ..metrics import correct_ranks
from ..model import describe
from ..registry import published as registry_published
from ..stats import wilson_interval
from ..zeroshot import class_embeddings, labelled_images, load_templates
from .provenance import Timings, machine, now, package_versions, sha256_file, sha256_files

DIRECTIONS = {"i2t": "image→text", "t2i": "text→image"}
SHOTS = (1, 2, 4, 8, 16)
# Published figures (labclip.registry.PUBLISHED), shown only in a box marked as not measured here, with their sources.
PUBLISHED = registry_published(benchmark="ImageNet")


def _first(texts: list[str], owner: np.ndarray, n: int) -> list[str]:
    """The first caption of each of ``n`` images."""
    first = {}
    for text, row in zip(texts, owner):
        first.setdefault(int(row), text)
    return [first[i] for i in range(n)]


@dataclass
class TextAdapterRun:
    """A text adapter scored out of fold on a caption set, then fitted on all of it.

    Attributes:
        model: the model whose images and target-language captions set the space.
        source_model: the model that encoded the source captions (``model`` itself by default).
        evaluation: held-out before/after/target hits per image (:func:`labclip.adapt.evaluate_text_adapter`).
        training: top-1 hits per direction of the final adapter on the images it was fitted on.
        adapter: fitted on every pair; its card holds the held-out summary.
    """

    model: object
    source_model: object
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
    requested_model: str = ""
    fallback_reason: str | None = None
    timings: Timings = field(default_factory=Timings)
    started: str = field(default_factory=now)

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

    def provenance(self) -> dict:
        paths = list(self.captions["path"])
        prov = {"started": self.started, "requested_model": _shown(self.requested_model),
                "fallback_reason": self.fallback_reason, "model": describe(self.model), "captions_file": Path(self.captions.attrs["source"]).name,
                "captions_sha256": sha256_file(self.captions.attrs["source"]), "images": len(paths),
                "images_sha256": sha256_files(paths), "source_lang": self.source_lang,
                "target_lang": self.target_lang, "versions": package_versions(), "machine": machine(),
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}
        if self.source_model is not self.model:
            prov["source_model"] = describe(self.source_model)
        if self.parallel is not None:
            prov["parallel"] = {"origin": Path(self.parallel.origin).name, "pairs": len(self.parallel),
                                "sha256": self.parallel.sha256}
        return prov


def _shown(model: str | None) -> str | None:
    return None if model is None else shown_model(model)


def run_text_adapter(
    model,
    captions: str | os.PathLike,
    source_lang: str = "ru",
    target_lang: str = "en",
    *,
    image_dir: str | os.PathLike | None = None,
    source_model=None,
    parallel: ParallelText | None = None,
    folds: int | str = 5,
    alpha: float | Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    requested_model: str | None = None,
) -> TextAdapterRun:
    """Score a ``source_lang``→``target_lang`` text adapter out of fold on a caption set, then fit it on all.

    Args:
        model: a loaded model; its image embeddings and ``target_lang`` caption embeddings are the target space.
        captions: a caption set with both language columns (its images are the held-out test).
        source_model: encodes the ``source_lang`` captions (default: ``model``).
        parallel: more sentence pairs to fit on in every fold; pairs that repeat a caption of the
            caption set are dropped first, so nothing scored is fitted on.
        folds: folds over images, or ``"loo"``.
        alpha: fixed ridge penalty, or ``None`` to choose it by cross-validation inside each training fold.

    Raises:
        LabclipError: bad captions, too few images for the folds, or an adapter that does not fit.
    """
    timings = Timings()
    source_model = source_model or model
    with timings.stage("load captions"):
        table = load_captions(captions, image_dir, [source_lang, target_lang])
    n = len(table)
    src_texts, src_owner = flatten_captions(table, source_lang)
    tgt_texts, tgt_owner = flatten_captions(table, target_lang)
    with timings.stage("encode images"):
        images = model.encode_images(table["path"], batch_size)
    with timings.stage("encode captions"):
        source = source_model.encode_texts(_first(src_texts, src_owner, n), batch_size)
        target = model.encode_texts(_first(tgt_texts, tgt_owner, n), batch_size)
    extra, extra_groups = None, np.empty(0, dtype=int)
    if parallel is not None:
        parallel = parallel.without(src_texts + tgt_texts)
        if not len(parallel):
            raise LabclipError("every parallel pair repeats a caption of the caption set; nothing left to fit on")
        with timings.stage("encode parallel pairs"):
            extra = (source_model.encode_texts(parallel.source, batch_size),
                     model.encode_texts(parallel.target, batch_size))
        extra_groups = n + pd.factorize(pd.Series(parallel.groups))[0]
    with timings.stage("evaluate (cross-validated)"):
        evaluation = evaluate_text_adapter(images, source, target, folds=folds, alpha=alpha, extra=extra, seed=seed)
        if source_model is not model:
            for hits in evaluation.hits.values():
                hits.pop("before", None)
    card = {"source_model": model_ref(source_model), "source_revision": shown_revision(source_model.revision),
            "target_model": model_ref(model), "target_revision": shown_revision(model.revision),
            "source_lang": source_lang, "target_lang": target_lang,
            "data": {"captions": Path(table.attrs["source"]).name, "captions_sha256": sha256_file(table.attrs["source"]),
                     **({"parallel": Path(parallel.origin).name, "parallel_sha256": parallel.sha256}
                        if parallel is not None else {})},
            "labclip_version": __version__}
    with timings.stage("fit on all pairs"):
        x, y, groups = source, target, np.arange(n)
        if extra is not None:
            x, y, groups = np.concatenate([x, extra[0]]), np.concatenate([y, extra[1]]), np.concatenate(
                [groups, extra_groups])
        adapter = fit_text_adapter(x, y, alpha=alpha, groups=groups, card=card)
        adapter = adapter.with_card(held_out=evaluation.summary())
    sim = images.astype(np.float64) @ adapter.transform(source).astype(np.float64).T
    training = {"i2t": correct_ranks(sim) == 1, "t2i": correct_ranks(sim.T) == 1}
    return TextAdapterRun(model, source_model, table, source_lang, target_lang, evaluation, training, adapter,
                          images, source, target, parallel, requested_model or model.name, timings=timings)


def start(
    model: str,
    captions: str | os.PathLike | None = None,
    source_lang: str = "ru",
    target_lang: str = "en",
    *,
    strict: bool = False,
    precision: str | None = None,
    default_for: str = "06_adapt",
    **options,
) -> TextAdapterRun:
    """Load the model in ``precision`` through the lab's one fallback policy (the demo model when it can't
    be loaded, unless ``strict``; ``precision=None``: the default for ``default_for``, recorded as such), then :func:`run_text_adapter` on ``captions`` (default: the default
    caption set)."""
    from ..config import DEFAULT_CAPTIONS
    from .experiment import load_model_or_demo

    clip, reason = load_model_or_demo(model, strict, precision=precision, default_for=default_for)
    run = run_text_adapter(clip, captions or DEFAULT_CAPTIONS, source_lang, target_lang,
                           requested_model=model, **options)
    run.fallback_reason = reason
    return run


@dataclass
class FewShotRun:
    """Linear probe and Tip-Adapter over shots against zero-shot, every image scored out of fold."""

    model: object
    paths: list[str]
    classes: list[str]
    evaluation: FewShotEvaluation
    templates: str
    language: str
    labels_file: str = ""
    requested_model: str = ""
    timings: Timings = field(default_factory=Timings)
    started: str = field(default_factory=now)

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

    def provenance(self) -> dict:
        return {"started": self.started, "requested_model": _shown(self.requested_model), "model": describe(self.model),
                "labels_file": self.labels_file, "labelled_images": len(self.paths), "images_sha256": sha256_files(self.paths),
                "classes": self.classes, "templates": self.templates, "language": self.language,
                "versions": package_versions(), "machine": machine(),
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}


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
    from ..config import DEFAULT_LABELS

    timings = Timings()
    labels = labels or DEFAULT_LABELS
    data = labelled_images(labels, language)
    prompts = load_templates(templates, language)
    with timings.stage("encode images"):
        images = model.encode_images(data.paths, batch_size)
    with timings.stage("encode class prompts"):
        text = class_embeddings(model, data.classes, prompts)
    with timings.stage("evaluate (cross-validated)"):
        evaluation = evaluate_few_shot(images, data.truth, text, shots, folds=folds, seed=seed,
                                       logit_scale=model.logit_scale)
    return FewShotRun(model, data.paths, data.classes, evaluation, templates, language, Path(labels).name,
                      requested_model or model.name, timings)


__all__ = ["PUBLISHED", "SHOTS", "FewShotRun", "TextAdapterRun", "run_few_shot", "run_text_adapter", "start"]
