"""One run of the lab: a caption set, a model, and the matching results per language."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import DEFAULT_CAPTIONS, DEFAULT_MODEL, DEMO_MODEL
from .data import load_captions
from .errors import LabclipError
from .metrics import frequent_distractors, match_metrics, similarity, topk_table
from .model import ClipModel, describe, load_model
from .provenance import Timings, machine, now, package_versions, sha256_file, sha256_files


@dataclass
class Matching:
    """Paired matching of one caption language against the images."""

    language: str
    images: list[str]
    captions: list[str]
    sim: np.ndarray
    metrics: dict
    topk: pd.DataFrame
    distractors: pd.DataFrame


@dataclass
class Experiment:
    """A loaded caption set and model; computes and keeps embeddings and results."""

    model: ClipModel
    captions: pd.DataFrame
    top_k: int = 3
    batch_size: int | None = None
    requested_model: str = DEFAULT_MODEL
    fallback_reason: str | None = None
    timings: Timings = field(default_factory=Timings)
    started: str = field(default_factory=now)
    _image_emb: np.ndarray | None = None
    _results: dict[str, Matching] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.captions.attrs["languages"])

    @property
    def image_names(self) -> list[str]:
        return self.captions["image"].tolist()

    @property
    def image_paths(self) -> list[str]:
        return self.captions["path"].tolist()

    @property
    def results(self) -> dict[str, Matching]:
        """The matchings computed so far, by language."""
        return dict(self._results)

    def image_embeddings(self) -> np.ndarray:
        """Embeddings of the images, computed once per experiment."""
        if self._image_emb is None:
            with self.timings.stage("encode images"):
                self._image_emb = self.model.encode_images(self.image_paths, self.batch_size)
        return self._image_emb

    def matching(self, language: str) -> Matching:
        """Match the images against the captions of one language."""
        if language not in self.languages:
            raise LabclipError(f"unknown language {language!r}; the caption set has: {', '.join(self.languages)}")
        return self.match_texts(language, self.captions[language].tolist())

    def match_texts(self, label: str, captions: list[str]) -> Matching:
        """Match the images against any paired caption list (e.g. translations), remembered under ``label``."""
        if label not in self._results:
            images = self.image_embeddings()
            with self.timings.stage(f"encode captions ({label})"):
                texts = self.model.encode_texts(captions, self.batch_size)
            with self.timings.stage("metrics"):
                sim = similarity(images, texts)
                scale = self.model.logit_scale
                self._results[label] = Matching(
                    language=label,
                    images=self.image_names,
                    captions=captions,
                    sim=sim,
                    metrics=match_metrics(sim, self.top_k, scale),
                    topk=topk_table(sim, captions, self.top_k, scale, self.image_names),
                    distractors=frequent_distractors(sim, captions, self.top_k),
                )
        return self._results[label]

    def compare(self, languages: Sequence[str] | None = None) -> pd.DataFrame:
        """Metrics side by side: one column per language, one row per named figure."""
        langs = list(languages or self.languages)
        return pd.DataFrame({lang: pd.Series(self.matching(lang).metrics) for lang in langs})

    def provenance(self) -> dict:
        """Inputs, model, software, machine and stage timings of this run."""
        return {
            "started": self.started,
            "requested_model": self.requested_model,
            "fallback_reason": self.fallback_reason,
            "model": describe(self.model),
            "captions_file": self.captions.attrs.get("source"),
            "captions_sha256": sha256_file(self.captions.attrs["source"]),
            "images": len(self.captions),
            "images_sha256": sha256_files(self.image_paths),
            "top_k": self.top_k,
            "batch_size": self.batch_size,
            "versions": package_versions(),
            "machine": machine(),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def load_model_or_demo(name: str, strict: bool = False, device: str = "cpu") -> tuple[ClipModel, str | None]:
    """Load ``name``; when it can't be loaded and ``strict`` is false, fall back to the demo model.

    Returns:
        The model and, after a fallback, the reason (``None`` otherwise). The reason is printed
        once on stderr.
    """
    try:
        return load_model(name, device=device), None
    except LabclipError as err:
        if strict or name == DEMO_MODEL:
            raise
        print(f"labclip: {err} -- using the untrained demo model instead (strict mode turns this into an error)",
              file=sys.stderr)
        return load_model(DEMO_MODEL, device=device), str(err)


def start(
    model: str = DEFAULT_MODEL,
    captions: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    languages: Sequence[str] | None = None,
    top_k: int = 3,
    batch_size: int | None = None,
    strict: bool = False,
    device: str = "cpu",
    check_images: bool = True,
) -> Experiment:
    """Validate the caption set, then load the model (or the demo model, see :func:`load_model_or_demo`).

    ``check_images=False`` skips decoding every image, for a runner that has already checked them once.
    """
    timings = Timings()
    with timings.stage("load captions"):
        table = load_captions(Path(captions) if captions else DEFAULT_CAPTIONS, image_dir, languages,
                              check_images=check_images)
    if languages:
        table.attrs["languages"] = list(languages)
    with timings.stage("load model"):
        clip, reason = load_model_or_demo(model, strict, device)
    return Experiment(clip, table, top_k, batch_size, requested_model=model, fallback_reason=reason, timings=timings)
