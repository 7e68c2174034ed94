"""Runs of the lab: a model with a caption set (paired matching) or with labelled images (zero-shot).

:func:`labclip.lab.runs.start` opens either kind (inputs checked first, then the model by the one fallback
rule): ``runs.start(MATCHING, model, captions=..., languages=...)`` gives an :class:`Experiment`,
``runs.start(ZEROSHOT, model, labels=..., languages=...)`` a :class:`ZeroShotRun`. Each run encodes its
images once, records its timings and writes its results with :meth:`Run.save`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..atomic import write_text
from ..config import DEFAULT_CAPTIONS, DEFAULT_LABELS, shown_path
from ..data import CaptionSet, load_captions
from ..errors import LabclipError
from ..metrics import MatchMetrics, ZeroShotMetrics, similarity, zeroshot_estimates, zeroshot_metrics
from ..stats import Estimate, interval_fields
from ..zeroshot import (
    LabelledImages,
    choose_language,
    class_embeddings,
    labelled_images,
    load_templates,
    probabilities,
)
from .provenance import Timings, sha256_file
from .results import Matching, matching
from .runs import Kind, Loaded, Run, check_model_or_demo, load_model_or_demo, load_models

__all__ = ["MATCHING", "ZEROSHOT", "Experiment", "Loaded", "Matching", "Run", "ZeroShotRun", "check_model_or_demo",
           "load_model_or_demo", "load_models", "similarity_file"]


def similarity_file(language: str) -> str:
    """The CSV name of one language's full similarity matrix (written by :meth:`Experiment.save`)."""
    return f"similarity_{re.sub(r'[^A-Za-z0-9_.-]+', '_', language)}.csv"


@dataclass(kw_only=True)
class Experiment(Run):
    """A caption set and a model; computes and keeps the matching of each language."""

    captions: CaptionSet
    top_k: int = 3
    _results: dict[str, Matching] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return self.captions.languages

    @property
    def image_names(self) -> list[str]:
        return cast(list[str], self.captions["name"])

    @property
    def image_paths(self) -> list[str]:
        return list(self.captions.paths)

    def texts(self, language: str) -> list[str]:
        """The captions of one language, one per image (a paired set)."""
        return cast(list[str], self.captions[language])

    @property
    def results(self) -> dict[str, Matching]:
        """The matchings computed so far, by language."""
        return dict(self._results)

    def matching(self, language: str) -> Matching:
        """Match the images against the captions of one language."""
        if language not in self.languages:
            raise LabclipError(f"unknown language {language!r}; the caption set has: {', '.join(self.languages)}")
        return self.match_texts(language, self.texts(language))

    def match_texts(self, label: str, captions: list[str]) -> Matching:
        """Match the images against any paired caption list (e.g. translations), remembered under ``label``."""
        if label not in self._results:
            images = self.image_embeddings()
            with self.timings.stage(f"encode captions ({label})"):
                texts = self.model.encode_texts(captions, self.batch_size)
            with self.timings.stage("metrics"):
                self.record(label, similarity(images, texts), captions=captions)
        return self._results[label]

    def record(self, label: str, sim: np.ndarray, metrics: MatchMetrics | None = None,
               captions: Sequence[str] | None = None) -> Matching:
        """Keep a similarity matrix computed elsewhere (e.g. in a notebook) with its tables, under ``label``.

        Args:
            label: a caption language of the set, or any name when ``captions`` are given.
            sim: images × captions cosine similarity.
            metrics: its :func:`labclip.match_metrics` (computed here when ``None``).
            captions: the captions, when they are not the set's ``label`` column.
        """
        shown = list(captions) if captions is not None else self.texts(label)
        self._results[label] = matching(label, sim, shown, self.image_names, top_k=self.top_k, metrics=metrics,
                                        logit_scale=self.model.logit_scale, logit_bias=self.model.logit_bias)
        return self._results[label]

    def save(self, output_dir: str | os.PathLike | None, name: str) -> dict:
        """Write ``{name}.json`` and, per language matched, its full similarity matrix as
        ``similarity_<language>.csv`` (rows: images; columns: the caption of each image) into ``output_dir``
        when one is given; return the JSON's content."""
        payload = super().save(output_dir, name)
        if output_dir is not None:
            for label, m in self._results.items():
                frame = pd.DataFrame(np.asarray(m.sim, dtype=np.float64), index=pd.Index(m.images, name="image"),
                                     columns=m.images)
                write_text(Path(output_dir) / similarity_file(label), frame.to_csv(float_format="%.6f"))
        return payload

    def compare(self, languages: Sequence[str] | None = None) -> pd.DataFrame:
        """Metrics side by side: one column per language, one row per named figure."""
        langs = list(languages or self.languages)
        return pd.DataFrame({lang: pd.Series(self.matching(lang).metrics.to_dict()) for lang in langs})

    def inputs(self) -> dict:
        return {"captions_file": shown_path(self.captions.source), "captions_sha256": sha256_file(self.captions.source),
                "languages": self.languages, "top_k": self.top_k}

    def figures(self) -> dict:
        """Each matching's figures with the ``{key}_low``/``{key}_high`` ends of their 95% intervals."""
        return {label: {**m.metrics.to_dict(), **interval_fields(m.estimates())} for label, m in self._results.items()}


@dataclass(kw_only=True)
class ZeroShotRun(Run):
    """Labelled images and a model; class embeddings per template set, metrics per set."""

    data: LabelledImages
    language: str = "en"
    labels_source: str | None = None
    requested_language: str | None = None
    language_gaps: list[str] = field(default_factory=list)
    _scores: dict[str, ZeroShotMetrics] = field(default_factory=dict)
    _estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    _probabilities: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def image_paths(self) -> list[str]:
        return self.data.paths

    def probabilities(self, templates: Sequence[str]) -> np.ndarray:
        """Class probabilities of every image with the ensemble of ``templates``."""
        with self.timings.stage("encode class prompts"):
            classes = class_embeddings(self.model, self.data.classes, templates)
        return probabilities(self.model, self.image_embeddings(), classes)

    def evaluate(self, template_set: str, k: int = 5) -> ZeroShotMetrics:
        """Metrics of one named template set in this run's language (remembered for :meth:`figures`)."""
        templates = load_templates(template_set, self.language)
        probs = self.probabilities(templates)
        self._probabilities[template_set] = probs
        self._scores[template_set] = zeroshot_metrics(probs, self.data.truth, k)
        self._estimates[template_set] = zeroshot_estimates(probs, self.data.truth, k)
        return self._scores[template_set]

    def evaluated(self, template_set: str) -> tuple[np.ndarray, dict[str, Estimate]]:
        """The class probabilities and the figures with intervals that :meth:`evaluate` computed for
        ``template_set`` (no prompt is encoded again)."""
        return self._probabilities[template_set], self._estimates[template_set]

    def compare(self, sets: Sequence[str], k: int = 5) -> pd.DataFrame:
        """Metrics per named template set available in this run's language."""
        rows = [{"templates": name, "count": len(load_templates(name, self.language)),
                 **self.evaluate(name, k).to_dict()} for name in sets]
        return pd.DataFrame(rows)

    def inputs(self) -> dict:
        return {"labels_file": self.labels_source and shown_path(self.labels_source), "classes": self.data.classes,
                "language": self.language, "requested_language": self.requested_language,
                "language_gaps": self.language_gaps}

    def figures(self) -> dict:
        """Each template set's figures with the ``{key}_low``/``{key}_high`` ends of their 95% intervals (Wilson for
        accuracies, :func:`labclip.stats.class_balanced` for the mean per-class recall)."""
        return {name: {**m.to_dict(), **interval_fields(self._estimates[name])} for name, m in self._scores.items()}


def _common(loaded: list[Loaded], timings: Timings, batch_size: int | None) -> dict[str, Any]:
    (one,) = loaded
    return dict(model=one.model, batch_size=batch_size, requested_model=one.requested,
                fallback_reason=one.fallback_reason, timings=timings)


def _prepare_matching(timings: Timings, *, captions: str | os.PathLike | None = None,
                      image_dir: str | os.PathLike | None = None, languages: Sequence[str] | None = None,
                      top_k: int = 3, check_images: bool = True, **unused: Any) -> dict[str, Any]:
    with timings.stage("load captions"):
        table = load_captions(Path(captions) if captions else DEFAULT_CAPTIONS,
                              Path(image_dir) if image_dir else None, languages, check_images=check_images)
    return dict(captions=table, top_k=top_k)


def _build_matching(inputs: dict[str, Any], loaded: list[Loaded], skipped: list[str], *, timings: Timings,
                    batch_size: int | None) -> Experiment:
    return Experiment(**inputs, **_common(loaded, timings, batch_size))


def _prepare_zeroshot(timings: Timings, *, labels: str | os.PathLike | None = None,
                      languages: Sequence[str] | None = None, template_sets: Sequence[str] | None = None,
                      **unused: Any) -> dict[str, Any]:
    wanted = (languages or ["en"])[0]
    source = Path(labels) if labels else DEFAULT_LABELS
    with timings.stage("load labelled images"):
        language, gaps = choose_language(source, wanted, template_sets)
        data = labelled_images(source, language)
    return dict(data=data, language=language, labels_source=str(source), requested_language=wanted,
                language_gaps=gaps)


def _build_zeroshot(inputs: dict[str, Any], loaded: list[Loaded], skipped: list[str], *, timings: Timings,
                    batch_size: int | None) -> ZeroShotRun:
    return ZeroShotRun(**inputs, **_common(loaded, timings, batch_size))


MATCHING: Kind[Experiment] = Kind(_prepare_matching, _build_matching)
"""An :class:`Experiment` for :func:`labclip.lab.runs.start`. Its inputs: ``captions`` (a caption file, default
``data/captions/default.csv``), ``image_dir`` (the folder its image paths are relative to), ``languages`` (the
caption columns to use), ``top_k`` (cut-off of top-k tables and accuracy), ``check_images`` (decode every image
now; ``False`` when the report runner has already checked them once for all notebooks)."""
ZEROSHOT: Kind[ZeroShotRun] = Kind(_prepare_zeroshot, _build_zeroshot)
"""A :class:`ZeroShotRun` for :func:`labclip.lab.runs.start`. Its inputs: ``labels`` (labelled images, default
``data/labels.csv``), ``languages`` (the first is the template and label language, or English where the labels
or ``template_sets`` lack it: :func:`labclip.zeroshot.choose_language`; the run records what was missing),
``template_sets`` (the template sets the run will use; ``None``: any)."""
