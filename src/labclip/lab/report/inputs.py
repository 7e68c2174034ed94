"""What a run checks before any model loads: parameters, output folder, captions, labelled images, templates,
models to compare, benchmarks, Chromium."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import DEFAULT_CAPTIONS, DEFAULT_LABELS, shown_path
from ...data import load_captions
from ...errors import LabclipError
from ...precision import DEFAULTS, choose
from . import render
from .execute import notebook_path
from .params import CULTURES_NOTEBOOK, REPORT_PARAMS, SCALE_NOTEBOOK, check_params
from .publish import check_out_dir, published_names

ZEROSHOT = "04_zeroshot"


def check_inputs(params: dict[str, Any], out_dir: Path, notebooks: Sequence[str], pdf: bool,
                 into_existing: bool = False) -> None:
    """Everything that can be checked before a model is loaded: precision, captions, images, labels, output folder
    (see :func:`check_out_dir`).

    Raises:
        LabclipError: the first input that is wrong.
    """
    check_params(params)
    check_out_dir(out_dir, published_names(notebooks, pdf), into_existing)
    for name in notebooks:
        choose(params.get("precision"), default_for=name if name in DEFAULTS else "01_matching")
    unknown = [n for n in notebooks if not notebook_path(n).is_file()]
    if unknown:
        raise LabclipError(f"notebook {notebook_path(unknown[0])} not found; run from a labclip checkout "
                           "(or set LABCLIP_ROOT)")
    if set(notebooks) & set(REPORT_PARAMS["captions"].defaults):  # the dataset reports check their benchmark
        load_captions(params.get("captions") or DEFAULT_CAPTIONS, params.get("image_dir"), params.get("languages"))
    if ZEROSHOT in notebooks:
        _check_labelled_images(params)
    if "02_languages" in notebooks:
        _check_compare_models(params.get("compare_models") or [])
    if pdf:
        render.chromium()


def _check_labelled_images(params: dict[str, Any]) -> None:
    """The zero-shot report's templates exist, its labels have a language with templates, every image decodes."""
    from ...images import load_image
    from ...zeroshot import choose_language, labelled_images

    labels = params.get("labels") or DEFAULT_LABELS
    sets = params.get("template_sets") or REPORT_PARAMS.default(ZEROSHOT, "template_sets")
    _check_template_sets(sets, "en")
    try:
        language, _ = choose_language(labels, (params.get("languages") or ["en"])[0], sets)
    except LabclipError as err:
        raise LabclipError(f"{ZEROSHOT}: {err}") from None
    for image in labelled_images(labels, language).paths:
        load_image(image)


def _check_compare_models(models: Sequence[str]) -> None:
    """Each of ``compare_models`` is a model that can be had, or one that is only unavailable now (not cached,
    hub unreachable: the languages report skips it and says so); a missing folder or a name the hub does not
    know is an error now, not after notebooks ran."""
    from ...hub import ModelUnavailable
    from ...model import check_model

    for name in models:
        try:
            check_model(name)
        except ModelUnavailable:
            continue
        except LabclipError as err:
            raise LabclipError(f"--compare-models: {err}") from None


def zeroshot_left_out(params: dict[str, Any], notebooks: Sequence[str]) -> str | None:
    """Why 04_zeroshot can't run beside the other notebooks (``None`` when it can, or when it was asked for
    alone, where the error stands): neither the first caption language nor English has labels and templates
    (:func:`labclip.zeroshot.choose_language`)."""
    from ...zeroshot import choose_language

    if ZEROSHOT not in notebooks or len(notebooks) == 1:
        return None
    labels = params.get("labels") or DEFAULT_LABELS
    if not Path(labels).exists():
        return None
    sets = params.get("template_sets") or REPORT_PARAMS.default(ZEROSHOT, "template_sets")
    _check_template_sets(sets, "en")
    try:
        choose_language(labels, (params.get("languages") or ["en"])[0], sets)
    except LabclipError as err:
        return str(err)
    return None


def leave_out_zeroshot(params: dict[str, Any], notebooks: Sequence[str], left_out: dict[str, str]) -> list[str]:
    """``notebooks`` without 04_zeroshot when it can't run beside them (the reason goes in ``left_out`` and is
    said in one line)."""
    why = zeroshot_left_out(params, notebooks)
    if not why:
        return list(notebooks)
    left_out[ZEROSHOT] = why
    print(f"labclip: {ZEROSHOT} left out: {why}", file=sys.stderr)
    return [name for name in notebooks if name != ZEROSHOT]


def _check_template_sets(sets: Sequence[str], language: str) -> None:
    """Each template set of the zero-shot report exists in its language (the first of ``languages``)."""
    from ...zeroshot import load_templates, template_sets

    for name in sets:
        try:
            load_templates(name, language)
        except LabclipError as err:
            hint = ("" if name not in template_sets() else
                    f" (the zero-shot report uses the first of --langs / LANGS, '{language}'); put a language "
                    "with templates first, or leave that report out with --notebooks 01_matching 02_languages "
                    "03_lab_report")
            raise LabclipError(f"{ZEROSHOT}: {err}{hint}") from None


def prepare_datasets(params: dict[str, Any], notebooks: Sequence[str]) -> None:
    """Download or check the benchmark of the scale and cultures reports (the cultures report's regions too).

    Raises:
        LabclipError: no dataset given, or one that can't be had or has no regions.
    """
    from ..scale import resolve_dataset

    dataset = params.get("dataset")
    if not dataset:
        needs = ("the scale report needs a dataset: xtd10, xm3600, a prepared folder or a caption file"
                 if SCALE_NOTEBOOK in notebooks else "the cultures report needs a dataset: xm3600, a prepared "
                 "folder or a caption file with a 'region' column")
        raise LabclipError(needs)
    resolved = resolve_dataset(dataset, params.get("languages"))
    if CULTURES_NOTEBOOK in notebooks:
        from ..cultures import regions_of

        regions_of(resolved, shown_path(dataset) if Path(dataset).exists() else dataset)
