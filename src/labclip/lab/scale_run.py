"""The scale run: models × languages × strategies on a benchmark caption set, with intervals and paired tests.

:data:`SCALE` is the run for :func:`labclip.lab.runs.start`, which loads a benchmark (``"xtd10"``, ``"xm3600"``
or a prepared folder / caption file) and the models; :meth:`ScaleRun.evaluate` computes Recall@1/5/10 in both directions with 95% intervals for every
model, language and strategy, and exact McNemar tests between languages, strategies and models on the
same images. The bundled small caption set is evaluated with the same model as the small-n reference.
What ``notebooks/05_scale.ipynb`` displays is :mod:`labclip.lab.scale`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import stats
from ..bulk import DEFAULT_DECODE, encode_files
from ..bulk import record as bulk_record
from ..config import CAPTIONS_DIR
from ..data import CaptionSet, flatten_captions, load_captions
from ..datasets import BENCHMARKS, read_prepared
from ..datasets import load as load_benchmark
from ..errors import LabclipError
from ..metrics import RetrievalRanks, retrieval_ranks, similarity
from ..model import ClipModel, describe
from ..registry import FIRST_CAPTION
from ..translate import Translator, translator_name
from .provenance import Timings, sha256_file
from .runs import Kind, Loaded, Run
from .wording import DIRECTIONS, model_name

KS = (1, 5, 10)
REFERENCE_CAPTIONS = CAPTIONS_DIR / "short.csv"
ALPHA = 0.05
# Which captions a result counts. FIRST is CLIP_benchmark's definition, that of the published figures: the first
# caption of each image (clip_benchmark/datasets/crossmodal3600.py keeps captions[0]); ALL counts every caption.
FIRST = "first"
ALL = "all"
DEFINITIONS = {FIRST: FIRST_CAPTION,
               ALL: "all captions of each image"}


@dataclass
class Result:
    """Retrieval of one model, caption language and strategy on the benchmark images, with the first caption
    of each image (``captions == FIRST``) or all of them (``ALL``)."""

    model: str
    language: str
    strategy: str
    ranks: RetrievalRanks
    estimates: dict[str, stats.Estimate]
    captions: str = FIRST

    def hits(self, direction: str, k: int = 1) -> np.ndarray:
        """Per-image hits: image→text per image; text→image per image when each has one caption."""
        ranks = self.ranks.i2t if direction == "i2t" else self.ranks.t2i
        return ranks <= k


@dataclass
class Heat:
    """What the heatmap shows: the first model and language scored on every image, with the first caption of
    each image's similarities, the owner of each caption, the captions and each image's image→text rank."""

    model: str
    language: str
    sim: np.ndarray
    owner: np.ndarray
    captions: list[str]
    ranks: np.ndarray


@dataclass(kw_only=True)
class ScaleRun(Run):
    """A benchmark caption set, the models evaluated on it (the first is :attr:`model`), and the results
    computed so far."""

    captions: CaptionSet
    models: dict[str, ClipModel]
    requested: dict[str, str]
    fallbacks: dict[str, str | None]
    languages: list[str]
    dataset: str
    translator: str | None = None
    results: list[Result] = field(default_factory=list)
    reference: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reference_source: str = ""
    heat: Heat | None = None

    @property
    def benchmark(self):
        """The :class:`labclip.datasets.Benchmark` behind the caption set, or ``None`` for a plain file."""
        return self.captions.attrs.get("benchmark")

    @property
    def n_images(self) -> int:
        return len(self.captions)

    @property
    def untrained(self) -> bool:
        return any(m.untrained for m in self.models.values())

    def evaluate(self, reference: str | os.PathLike | None = REFERENCE_CAPTIONS) -> pd.DataFrame:
        """Every model × language × strategy on the benchmark, and the small reference set with the first model.

        Strategies: ``direct`` (the captions as written) and, with a translator, ``translated`` (each
        non-English caption machine-translated to English first). A translator that can't be loaded
        is skipped and listed in :attr:`skipped`. Each is scored with the first caption of each image
        (:data:`FIRST`, CLIP_benchmark's definition) and, where an image has several captions, with all of
        them as well (:data:`ALL`); the paired tests use the first.
        """
        for label, model in self.models.items():
            with self.timings.stage(f"encode images ({model_name(label)})"):
                images = encode_files(model, list(self.captions.paths), batch_size=self.batch_size)
            for lang in self.languages:
                captions, owner = flatten_captions(self.captions, lang)
                self.results += self._results(label, model, images, lang, "direct", captions, owner)
                if self.translator and lang != "en":
                    translated = self._translate(lang, captions)
                    if translated is not None:
                        self.results += self._results(label, model, images, lang, "translated", translated, owner)
        if reference is not None:
            self._evaluate_reference(Path(reference))
        return self.table()

    def _results(self, label: str, model: ClipModel, images: np.ndarray, lang: str, strategy: str,
                 captions: list[str], owner: np.ndarray) -> list[Result]:
        """The :data:`FIRST` result, and the :data:`ALL` one where some image has several captions; the
        captions are encoded once."""
        with self.timings.stage(f"encode captions ({model_name(label)}, {lang}, {strategy})"):
            texts = model.encode_texts(captions, self.batch_size)
        with self.timings.stage("metrics"):
            first = np.searchsorted(owner, np.arange(len(images)))
            out = [self._scored(label, lang, strategy, FIRST, images, texts[first], None, [captions[i] for i in first])]
            if len(captions) > len(images):
                out.append(self._scored(label, lang, strategy, ALL, images, texts, owner, captions))
            return out

    def _scored(self, label: str, lang: str, strategy: str, definition: str, images: np.ndarray, texts: np.ndarray,
                owner: np.ndarray | None, captions: list[str]) -> Result:
        sim = similarity(images, texts, dtype=np.float32)
        ranks = retrieval_ranks(sim, owner)
        if self.heat is None and len(images) == self.n_images:
            self.heat = Heat(label, lang, sim, ranks.owner, captions, ranks.i2t)
        return Result(label, lang, strategy, ranks, ranks.estimates(KS), definition)

    def _translate(self, lang: str, captions: list[str]) -> list[str] | None:
        name = translator_name(str(self.translator), lang)
        try:
            with self.timings.stage(f"translate {lang}"):
                return Translator(name).translate(captions)
        except LabclipError as err:
            self.skipped.append(f"translation {lang}→en ({name}): {err}")
            return None

    def _evaluate_reference(self, path: Path) -> None:
        table = load_captions(path, languages=None)
        label, model = next(iter(self.models.items()))
        with self.timings.stage("reference set"):
            images = model.encode_images(table.paths, self.batch_size)
        for lang in [lang for lang in self.languages if lang in table.attrs["languages"]]:
            captions, owner = flatten_captions(table, lang)
            self.reference.append(self._results(label, model, images, lang, "direct", captions, owner)[0])
        self.reference_source = path.name

    def table(self) -> pd.DataFrame:
        """One row per model, language, strategy, captions counted (:data:`FIRST` or :data:`ALL`), direction and
        k: the recall with its interval and counts."""
        rows = []
        for r in self.results:
            for direction in DIRECTIONS:
                for k in KS:
                    e = r.estimates[f"{direction}_acc{k}"]
                    rows.append({"model": r.model, "language": r.language, "strategy": r.strategy,
                                 "captions": r.captions,
                                 "direction": direction, "k": k, "recall": e.value, "low": e.low, "high": e.high,
                                 "hits": e.hits, "n": e.n, "method": e.method})
        return pd.DataFrame(rows)

    def paired_tests(self, direction: str = "t2i", k: int = 1) -> pd.DataFrame:
        """Exact McNemar tests of Recall@k on the same images.

        Each language against the first, each translated result against its direct one, and each model
        against the first, with the same language and strategy, all with the first caption of each image
        (:data:`FIRST`). Text→image pairs need one caption per image in both results; otherwise the
        image→text hits are paired.
        """
        rows = []
        by_key = {(r.model, r.language, r.strategy): r for r in self.results if r.captions == FIRST}
        first_model, first_lang = next(iter(self.models)), self.languages[0]
        for (model, lang, strategy), r in by_key.items():
            pairs = []
            if lang != first_lang and (model, first_lang, "direct") in by_key:
                pairs.append(("language", by_key[(model, first_lang, "direct")], r))
            if strategy == "translated":
                pairs.append(("strategy", by_key[(model, lang, "direct")], r))
            if model != first_model and (first_model, lang, strategy) in by_key:
                pairs.append(("model", by_key[(first_model, lang, strategy)], r))
            for factor, a, b in pairs:
                d = direction if len(a.ranks.t2i) == len(b.ranks.t2i) == self.n_images else "i2t"
                test = stats.paired_test(a.hits(d, k), b.hits(d, k))
                rows.append({"factor": factor, "a": _label(a), "b": _label(b), "direction": d, "k": k,
                             "recall_a": stats.proportion(a.hits(d, k)), "recall_b": stats.proportion(b.hits(d, k)),
                             "only_a": test.only_a, "only_b": test.only_b, "n": test.n, "p_value": test.p_value,
                             "significant": test.significant(ALPHA)})
        return pd.DataFrame(rows, columns=["factor", "a", "b", "direction", "k", "recall_a", "recall_b", "only_a",
                                           "only_b", "n", "p_value", "significant"])

    @property
    def image_paths(self) -> list[str]:
        return list(self.captions.paths)

    def facts(self) -> dict:
        """The benchmark and its licence, the caption file's hash, languages, every model (requested, used,
        why), the translator and what was left out."""
        bench = self.benchmark
        return {
            "dataset": self.dataset,
            "benchmark": None if bench is None else {"name": bench.name, "captions_licence": bench.captions_licence,
                                                     "images_licence": bench.images_licence,
                                                     "noncommercial": bench.noncommercial,
                                                     "citation": bench.citation},
            "captions_sha256": sha256_file(self.captions.attrs["source"]),
            "images": self.n_images, **bulk_record(DEFAULT_DECODE),
            "languages": self.languages,
            "models": [{"requested": self.requested[label], "used": describe(model),
                        "fallback_reason": self.fallbacks[label]} for label, model in self.models.items()],
            "translator": self.translator,
            "skipped": self.skipped,
            "batch_size": self.batch_size,
        }


def _label(r: Result) -> str:
    return f"{model_name(r.model)} · {r.language} · {r.strategy}"


def resolve_dataset(dataset: str | os.PathLike, languages: Sequence[str] | None = None) -> CaptionSet:
    """A benchmark name (prepared on first use), a prepared folder, or a caption file, as a caption set.

    Images are not decoded here: the encoder reads each one once, and a broken image fails there.
    """
    name = str(dataset)
    if name.lower() in BENCHMARKS:
        return load_benchmark(name, languages)
    path = Path(name)
    if path.is_dir():
        path = path / "captions.jsonl"
    if not path.is_file():
        raise LabclipError(f"dataset {name!r} is neither a benchmark ({', '.join(BENCHMARKS)}) nor a caption "
                           "file or prepared folder")
    return read_prepared(path, languages, check_images=False)


def _prepare_scale(timings: Timings, *, dataset: str | os.PathLike, languages: Sequence[str] | None = None,
                   translator: str | None = None) -> dict[str, Any]:
    """The benchmark as a caption set, its languages (``None``: all of the set's) and the translator template."""
    with timings.stage("load captions"):
        table = resolve_dataset(dataset, languages)
    name = str(dataset) if str(dataset).lower() in BENCHMARKS else Path(dataset).name
    return dict(captions=table, languages=list(languages or table.attrs["languages"]), dataset=name,
                translator=translator or None)


def _build_scale(inputs: dict[str, Any], loaded: list[Loaded], skipped: list[str], *, timings: Timings,
                 batch_size: int | None) -> ScaleRun:
    first = loaded[0]
    return ScaleRun(**inputs, models={one.requested: one.model for one in loaded},
                    requested={one.requested: one.requested for one in loaded},
                    fallbacks={one.requested: one.fallback_reason for one in loaded}, skipped=skipped,
                    model=first.model, requested_model=first.requested, fallback_reason=first.fallback_reason,
                    timings=timings, batch_size=batch_size)


SCALE = Kind(_prepare_scale, _build_scale, many=True, default_for="05_scale")
"""The scale run for :func:`labclip.lab.runs.start`: ``runs.start(SCALE, models, dataset=..., languages=...,
translator=...)``. ``dataset``: ``"xtd10"``, ``"xm3600"``, a prepared benchmark folder or a caption file;
``languages``: ``None`` for all of the set's (the first is the reference language); ``translator``: a translation
model template for the ``translated`` strategy. The first model falls back to the demo model when it is not cached
and the hub cannot be reached (unless ``strict``); any other that can't be loaded is left out and listed in
:attr:`ScaleRun.skipped`."""
