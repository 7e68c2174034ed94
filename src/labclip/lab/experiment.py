"""Runs of the lab: a model with a caption set (paired matching) or with labelled images (zero-shot).

One :func:`start` opens either kind, through the one fallback policy (:func:`load_model_or_demo`);
each run encodes its images once, records its timings and writes its results with :meth:`Run.save`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..adapter import split_adapter
from ..atomic import write_text
from ..config import DEFAULT_CAPTIONS, DEFAULT_LABELS, DEFAULT_MODEL, DEMO_MODEL, shown_path
from ..data import CaptionSet, load_captions
from ..errors import LabclipError
from ..hub import ModelUnavailable, without_demo_hint
from ..metrics import (
    MatchMetrics,
    ZeroShotMetrics,
    match_metrics,
    retrieval_ranks,
    similarity,
    zeroshot_estimates,
    zeroshot_metrics,
)
from ..model import ClipModel, check_model, describe, load_model, shown_model
from ..stats import Estimate, interval_fields
from ..zeroshot import (
    LabelledImages,
    choose_language,
    class_embeddings,
    labelled_images,
    load_templates,
    probabilities,
)
from .provenance import Timings, machine, now, package_versions, sha256_file, sha256_files
from .tables import frequent_distractors, topk_table


def similarity_file(language: str) -> str:
    """The CSV name of one language's full similarity matrix (written by :meth:`Experiment.save`)."""
    return f"similarity_{re.sub(r'[^A-Za-z0-9_.-]+', '_', language)}.csv"


@dataclass
class Matching:
    """Paired matching of one caption language against the images."""

    language: str
    images: list[str]
    captions: list[str]
    sim: np.ndarray
    metrics: MatchMetrics
    topk: pd.DataFrame
    distractors: pd.DataFrame
    sigmoid: bool = False

    def estimates(self) -> dict[str, Estimate]:
        """Top-1 and top-k accuracy in both directions (Wilson) and the MRR (seeded bootstrap) with 95% intervals."""
        return retrieval_ranks(self.sim).estimates((1, self.metrics.k))


@dataclass(kw_only=True)
class Run:
    """A loaded model and a list of images; embeds the images once and records how the run went."""

    model: ClipModel
    batch_size: int | None = None
    requested_model: str = DEFAULT_MODEL
    fallback_reason: str | None = None
    timings: Timings = field(default_factory=Timings)
    started: str = field(default_factory=now)
    _image_emb: np.ndarray | None = None

    @property
    def image_paths(self) -> list[str]:
        raise NotImplementedError

    def image_embeddings(self) -> np.ndarray:
        """Embeddings of the images, computed once per run."""
        if self._image_emb is None:
            with self.timings.stage("encode images"):
                self._image_emb = self.model.encode_images(self.image_paths, self.batch_size)
        return self._image_emb

    def inputs(self) -> dict:
        """What this kind of run records about its inputs (beyond the images)."""
        return {}

    def figures(self) -> dict:
        """Named figures computed so far, JSON-ready."""
        return {}

    def provenance(self) -> dict:
        """Requested and used model (and why they differ), inputs, software, machine and stage timings."""
        return {
            "started": self.started,
            "requested_model": shown_model(self.requested_model),
            "model_used": self.model.name,
            "fallback_reason": self.fallback_reason,
            "model": describe(self.model),
            **self.inputs(),
            "images": len(self.image_paths),
            "images_sha256": sha256_files(self.image_paths),
            "batch_size": self.batch_size,
            "versions": package_versions(),
            "machine": machine(),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def save(self, output_dir: str | os.PathLike | None, name: str) -> dict:
        """Write ``{name}.json`` (provenance and metrics) into ``output_dir`` when one is given; return it."""
        payload = {"provenance": self.provenance(), "metrics": self.figures()}
        if output_dir is not None:
            write_text(Path(output_dir) / f"{name}.json",
                       json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return payload


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
        return self.captions["name"]

    @property
    def image_paths(self) -> list[str]:
        return self.captions["path"]

    @property
    def results(self) -> dict[str, Matching]:
        """The matchings computed so far, by language."""
        return dict(self._results)

    def matching(self, language: str) -> Matching:
        """Match the images against the captions of one language."""
        if language not in self.languages:
            raise LabclipError(f"unknown language {language!r}; the caption set has: {', '.join(self.languages)}")
        return self.match_texts(language, self.captions[language])

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
        captions = list(captions) if captions is not None else self.captions[label]
        scale = self.model.logit_scale
        metrics = metrics if metrics is not None else match_metrics(sim, self.top_k, scale)
        self._results[label] = Matching(
            language=label, images=self.image_names, captions=captions, sim=sim, metrics=metrics,
            topk=topk_table(sim, captions, metrics.k, scale, self.image_names, logit_bias=self.model.logit_bias),
            distractors=frequent_distractors(sim, captions, metrics.k), sigmoid=self.model.logit_bias is not None,
        )
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


def load_model_or_demo(name: str, strict: bool = False, device: str = "cpu", precision: str | None = "auto", *,
                       default_for: str | None = None) -> tuple[ClipModel, str | None]:
    """The one fallback policy: load ``name``; when it is not cached and the hub cannot be reached (and
    ``strict`` is false), use the demo model. A model the hub does not know and a missing local folder
    are errors (:class:`~labclip.errors.LabclipError`), never a fallback.

    A model with an adapter (``"MODEL+adapter:PATH"``) never falls back: the demo model would drop the
    adapter, so its loading error is raised.

    Returns:
        The model and, after a fallback, the reason (``None`` otherwise). The reason is printed
        once on stderr.
    """
    try:
        return load_model(name, device=device, precision=precision, default_for=default_for), None
    except ModelUnavailable as err:
        reason = _fallback(name, strict, err)
        return load_model(DEMO_MODEL, device=device, precision=precision, default_for=default_for), reason


@dataclass
class Loaded:
    """One model of a comparison: as requested, as loaded, and why the demo model stands in (else ``None``)."""

    requested: str
    model: ClipModel
    fallback_reason: str | None = None


def load_models(names: Sequence[str | os.PathLike | ClipModel], skipped: list[str], *, offline: str = "fallback",
                strict: bool = False, device: str = "cpu", precision: str | None = "auto",
                default_for: str | None = None) -> Iterator[Loaded]:
    """The models of a comparison, loaded one at a time as the caller asks for them (one policy for the
    languages comparison, the scale report and ``labclip compare``).

    Every name is checked first (:func:`labclip.model.check_model`, no weights read), so a name that is no
    model (a missing folder, an id the hub does not know) is an error before anything is computed. A model
    whose files then fail to load is left out: ``"model NAME: why"`` goes to ``skipped`` (one bad model
    does not end a comparison). A model that is not cached while the hub cannot be reached:

    - ``offline="fallback"`` (reports): the first falls back to the demo model, with its reason (unless
      ``strict``); any other is left out, listed in ``skipped``;
    - ``offline="error"`` (commands): :class:`~labclip.hub.ModelUnavailable` is raised before any model loads.

    Models given already loaded are passed on as they are.

    Raises:
        LabclipError: a name that is no model; in strict mode, a first model the demo model would replace.
        ModelUnavailable: ``offline="error"`` and a model is unavailable.
    """
    if offline not in ("fallback", "error"):
        raise ValueError(f"offline must be 'fallback' or 'error', not {offline!r}")
    names = [str(name) if isinstance(name, os.PathLike) else name for name in names]
    problems: dict[int, LabclipError] = {}  # by position: unavailable offline, or a folder without a model
    for n, name in enumerate(names):
        if not isinstance(name, str):
            continue
        try:
            check_model(name)
        except ModelUnavailable as err:
            if offline == "error" or (n == 0 and strict):
                raise
            problems[n] = err
        except LabclipError as err:
            if not Path(split_adapter(name)[0]).is_dir():
                raise
            problems[n] = err
    for n, name in enumerate(names):
        if not isinstance(name, str):
            yield Loaded(name.name, name)
            continue
        err = problems.get(n)
        if n == 0 and isinstance(err, ModelUnavailable):
            reason = _fallback(name, strict, err)
            yield Loaded(name, load_model(DEMO_MODEL, device=device, precision=precision, default_for=default_for),
                         reason)
            continue
        if err is None:
            try:
                model = load_model(name, device=device, precision=precision, default_for=default_for)
            except LabclipError as failed:  # broken files, or the cache changed since the check
                err = failed
            else:
                yield Loaded(name, model)
                continue
        skipped.append(_not_compared(name, err))


def _not_compared(name: str, err: LabclipError) -> str:
    """``"model NAME: why"``, a local folder named as reports name it (no machine path), no demo advice."""
    shown, text = shown_model(name), without_demo_hint(str(err))
    if shown != name:
        text = text.replace(str(name), shown)
    return f"model {shown}: {text}"


def check_model_or_demo(name: str, strict: bool = False) -> str | None:
    """What :func:`load_model_or_demo` would decide for ``name``, without reading weights or building a
    model (:func:`labclip.model.check_model`).

    Returns:
        The fallback reason when the demo model would stand in, else ``None``.

    Raises:
        LabclipError: as :func:`load_model_or_demo` would (unknown model, missing folder, ``strict``).
    """
    try:
        check_model(name)
    except ModelUnavailable as err:
        return _fallback(name, strict, err)
    return None


def _fallback(name: str, strict: bool, err: ModelUnavailable) -> str:
    """The demo model stands in for ``name``, which is unavailable (``err``): return the reason, said once
    on stderr; re-raise ``err`` in strict mode, for the demo model itself and for a model with an adapter."""
    if strict or name == DEMO_MODEL or split_adapter(name)[1] is not None or "+finetune:" in name:
        raise err
    reason = without_demo_hint(str(err))
    print(f"labclip: {reason} -- using the untrained demo model instead (strict mode turns this into an error)",
          file=sys.stderr)
    return reason


def start(
    model: str = DEFAULT_MODEL,
    captions: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    languages: Sequence[str] | None = None,
    top_k: int = 3,
    batch_size: int | None = None,
    strict: bool = False,
    device: str = "cpu",
    *,
    labels: str | os.PathLike | None = None,
    task: str = "matching",
    check_images: bool = True,
    precision: str | None = None,
    template_sets: Sequence[str] | None = None,
    default_for: str = "01_matching",
) -> Run:
    """Validate the inputs first, then load the model (or the demo model, see :func:`load_model_or_demo`).

    Args:
        model: hub id, alias, local folder or ``"demo"``.
        captions: caption file for ``task="matching"`` (default ``data/captions/default.csv``).
        image_dir: folder the caption file's image paths are relative to.
        languages: caption languages to use; for zero-shot, the first is the template and label language,
            or English where the labels or ``template_sets`` lack it (:func:`labclip.zeroshot.choose_language`;
            the run records what was missing).
        top_k: cut-off of top-k tables and accuracy.
        batch_size: items per forward pass (``None``: the model's default).
        strict: fail when the model can't be loaded instead of using the demo model.
        device: torch device.
        labels: labelled images for ``task="zeroshot"`` (default ``data/labels.csv``).
        task: ``"matching"`` gives an :class:`Experiment`, ``"zeroshot"`` a :class:`ZeroShotRun`.
        check_images: decode every image of the caption set now; ``False`` when the report runner has
            already checked them once for all notebooks.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`labclip.load_model`); ``None``:
            the default for the notebook ``default_for`` (:data:`labclip.precision.DEFAULTS`), recorded as such.
        template_sets: for zero-shot, the template sets the run will use (``None``: any).
    """
    if task not in ("matching", "zeroshot"):
        raise LabclipError(f"unknown task {task!r}; use 'matching' or 'zeroshot'")
    timings = Timings()
    if task == "zeroshot":
        wanted = (languages or ["en"])[0]
        source = Path(labels) if labels else DEFAULT_LABELS
        with timings.stage("load labelled images"):
            language, gaps = choose_language(source, wanted, template_sets)
            data = labelled_images(source, language)
    else:
        with timings.stage("load captions"):
            table = load_captions(Path(captions) if captions else DEFAULT_CAPTIONS, image_dir, languages,
                                  check_images=check_images)
            if languages:
                table = table.select(languages)
    with timings.stage("load model"):
        clip, reason = load_model_or_demo(model, strict, device, precision, default_for=default_for)
    common = dict(model=clip, batch_size=batch_size, requested_model=model, fallback_reason=reason, timings=timings)
    if task == "zeroshot":
        return ZeroShotRun(data=data, language=language, labels_source=str(source), requested_language=wanted,
                           language_gaps=gaps, **common)
    return Experiment(captions=table, top_k=top_k, **common)
