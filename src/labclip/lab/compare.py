"""Models × languages × strategies (raw captions, translated to English, multilingual encoder), side by side."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import write_text
from ..data import CaptionSet
from ..errors import LabclipError
from ..metrics import accuracy_keys
from ..model import ClipModel
from ..registry import default_models
from ..stats import interval_fields
from ..translate import DEFAULT_TRANSLATOR, Translator, translator_name
from .experiment import Experiment, Loaded, Matching, load_models
from .provenance import model_record, row_provenance
from .results import Comparison


def is_multilingual(model: ClipModel) -> bool:
    """Whether the text encoder was trained for many languages (not OpenAI's English CLIP)."""
    return model.multilingual


def gap(reference: float, other: float) -> tuple[float, float | None]:
    """(difference in percentage points, reference / other); the ratio is ``None`` when ``other`` is 0."""
    return 100 * (reference - other), (reference / other if other else None)


def compare(
    captions: CaptionSet,
    languages: Sequence[str],
    models: Sequence[str | ClipModel] | Iterable[Loaded | ClipModel] | None = None,
    translator: str | None = DEFAULT_TRANSLATOR,
    top_k: int = 3,
    reference: str = "en",
    strict: bool = False,
    precision: str | None = None,
    default_for: str = "compare",
) -> Comparison:
    """One row per model × language × strategy with top-1/top-k in both directions, mean correct
    similarity, mean margin, the ends of each accuracy's 95% Wilson interval (``i2t_acc1_low``,
    ``i2t_acc1_high``, ...), and the gap to the reference language (same model, untranslated) in
    percentage points and as a ratio (both missing, never guessed, where the model has no
    reference-language row).

    ``models=None`` compares :func:`labclip.registry.default_models` for ``languages``. Models are loaded
    one at a time by :func:`labclip.lab.experiment.load_models` (given as names or models, or as an iterator
    of :class:`~labclip.lab.experiment.Loaded` that the caller loads itself): the first falls back to the demo
    model when it is not cached and the hub cannot be reached (unless ``strict``); any other model that cannot
    be loaded, offline or with broken files, and translators that can't be loaded, are left out and listed in
    :attr:`~labclip.lab.results.Comparison.skipped` ("model NAME: why"). A model the hub does not know, or a
    missing local folder, is an error. The result also keeps the translations, each row's record and its
    per-image image→text top-1 hits, for paired tests. Image embeddings are computed once per model
    and shared through the cache by models with the same image encoder.
    Models given by name are loaded in ``precision`` (see :func:`labclip.load_model`; ``None``: the default for
    ``default_for``, a command or notebook of :data:`labclip.precision.DEFAULTS`).
    """
    result = Comparison(pd.DataFrame(), reference, len(captions))
    translations: dict[str, list[str] | None] = {}
    chosen = default_models(languages) if models is None else models
    if not isinstance(chosen, Iterator):
        chosen = load_models(list(chosen), result.skipped, strict=strict, precision=precision,  # type: ignore[arg-type]
                             default_for=default_for)
    rows = []
    for item in chosen:
        loaded = item if isinstance(item, Loaded) else Loaded(item.name, item)
        rows += _model_rows(result, loaded, captions, languages, translator, top_k, translations)
    table = pd.DataFrame(rows)
    if not table.empty:
        reference_rows = table[(table.language == reference) & (table.strategy != "translated")]
        base = dict(zip(reference_rows["model"], reference_rows["i2t_acc1"]))
        gaps = [gap(base[model], acc) if model in base else (np.nan, None)
                for model, acc in zip(table["model"], table["i2t_acc1"])]
        table["gap_pp"] = [g[0] for g in gaps]
        table["gap_ratio"] = [g[1] for g in gaps]
    result.table = table
    result.translations = {mt: t for mt, t in translations.items() if t is not None}
    return result


def _model_rows(result: Comparison, loaded: Loaded, captions: CaptionSet, languages: Sequence[str],
                translator: str | None, top_k: int, translations: dict[str, list[str] | None]) -> list[dict]:
    """One model's rows (raw or multilingual, then translated), its records and hits kept in ``result``."""
    model, fallback, reference = loaded.model, loaded.fallback_reason, result.reference
    exp = Experiment(model=model, captions=captions, top_k=top_k)
    label = model.name + (" (fallback)" if fallback else "")
    record = model_record(model, str(loaded.requested), fallback)
    strategy = "multilingual" if is_multilingual(model) else "raw"
    matched = [(lang, strategy, exp.matching(lang)) for lang in languages]
    for lang in languages if strategy != "multilingual" and translator else []:
        if lang == reference:
            continue
        mt = translator_name(str(translator), lang)
        if mt not in translations:
            try:
                translations[mt] = Translator(mt).translate(exp.texts(lang))
            except LabclipError as err:
                result.skipped.append(f"translation {lang}→{reference} ({mt}): {err}")
                translations[mt] = None
        texts = translations[mt]
        if texts is not None:
            matched.append((lang, "translated", exp.match_texts(f"{lang}→{reference}", texts)))
    result.records += [record] * len(matched)
    result.i2t_hits1 += [m.top1 for _, _, m in matched]
    return [_row(label, lang, how, m) for lang, how, m in matched]


def save(result: Comparison, output_dir: str | os.PathLike | None, name: str = "comparison.csv") -> None:
    """Write the comparison table as CSV into ``output_dir`` (atomically); nothing when it is ``None``. Each row
    carries who made it as ``compare --out`` writes it (:func:`labclip.lab.provenance.row_provenance`: the model's
    id, revision and untrained flag, the model asked for, the labclip version)."""
    if output_dir is None:
        return
    table = result.table
    if len(result.records) == len(table):
        columns = pd.DataFrame([row_provenance(r) for r in result.records])
        table = pd.concat([table.drop(columns=[c for c in columns if c in table]).reset_index(drop=True), columns],
                          axis=1)
    write_text(Path(output_dir) / name, table.to_csv(index=False))


def _row(model: str, language: str, strategy: str, matching: Matching) -> dict:
    m, keys = matching.metrics, dict.fromkeys(accuracy_keys(matching.metrics.k))
    figures, estimates = m.to_dict(), matching.estimates()
    return {"model": model, "language": language, "strategy": strategy, **{key: figures[key] for key in keys},
            "correct_mean": m.correct_mean, "margin_mean": m.margin_mean,
            **interval_fields({key: estimates[key] for key in keys})}
