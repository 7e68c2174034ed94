"""What every run of the lab shares: one :class:`Run` base, one :func:`start`, one fallback rule.

A run opens the same way whatever it measures (:func:`start`): its inputs are read and checked first,
then its models are loaded by :func:`load_models` (the first model falls back to the demo model when it
is not cached and the hub cannot be reached; any other that cannot be loaded is left out with its
reason), each stage timed. Its provenance is :func:`labclip.lab.provenance.run_record`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import numpy as np

from ..atomic import write_text
from ..config import DEFAULT_MODEL, DEMO_MODEL
from ..errors import LabclipError
from ..hub import ModelUnavailable, without_demo_hint
from ..model import ClipModel, check_model, load_model
from ..spec import ModelSpec, shown_model
from .provenance import Timings, now, run_record, sha256_files


@dataclass(kw_only=True)
class Run:
    """A loaded model (the first of a comparison), how it was asked for, and how the run went; embeds its
    images once and records itself with :meth:`provenance` and :meth:`save`."""

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

    def facts(self) -> dict:
        """The run's own entries of its provenance: its inputs, images and options."""
        return {**self.inputs(), "images": len(self.image_paths), "images_sha256": sha256_files(self.image_paths),
                "batch_size": self.batch_size}

    def figures(self) -> dict:
        """Named figures computed so far, JSON-ready."""
        return {}

    def provenance(self) -> dict:
        """Requested and used model (and why they differ), inputs, software, machine and stage timings."""
        return run_record(self.model, requested=self.requested_model, fallback_reason=self.fallback_reason,
                          started=self.started, timings=self.timings, **self.facts())

    def save(self, output_dir: str | os.PathLike | None, name: str) -> dict:
        """Write ``{name}.json`` (provenance and metrics) into ``output_dir`` when one is given; return it."""
        return save_json(output_dir, name, {"provenance": self.provenance(), "metrics": self.figures()})


def save_json(output_dir: str | os.PathLike | None, name: str, payload: dict) -> dict:
    """Write ``payload`` as ``{name}.json`` into ``output_dir`` (atomically) when one is given; return it."""
    if output_dir is not None:
        write_text(Path(output_dir) / f"{name}.json", json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    return payload


@dataclass
class Loaded:
    """One model of a comparison: as requested, as loaded, and why the demo model stands in (else ``None``)."""

    requested: str
    model: ClipModel
    fallback_reason: str | None = None


R = TypeVar("R")


@dataclass(frozen=True)
class Kind(Generic[R]):
    """One kind of run for :func:`start`: how it reads and checks its inputs (``prepare(timings, **inputs)``),
    how it is made once its models load (``build(inputs, loaded, skipped, timings=, batch_size=)``), and
    whether it compares several models; ``default_for`` names the notebook whose default precision applies when a
    caller names none (:data:`labclip.precision.DEFAULTS`). Each kind is a constant of its module (``scale.SCALE``,
    ``cultures.CULTURES``, ``adapt.TEXT_ADAPTER``, ``finetune_report.FINETUNE``); there is no other way to open
    one."""

    prepare: Callable[..., Any]
    build: Callable[..., R]
    many: bool = False
    default_for: str | None = None


def start(kind: Kind[R], models: str | Sequence[str], *, strict: bool = False, device: str = "cpu",
          precision: str | None = None, default_for: str | None = None, batch_size: int | None = None,
          **inputs: Any) -> R:
    """The one way a run opens: ``kind.prepare`` reads and checks the inputs, then the models load (one model
    through :func:`load_model_or_demo`; several through :func:`load_models`, the first loaded first), each
    stage timed, and ``kind.build`` makes the run.

    Args:
        kind: what kind of run (a :class:`Kind`).
        models: the model (or, for a comparison, the models; the first is the reference).
        strict: fail when the (first) model can't be loaded instead of using the demo model.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``; ``None``: the default for ``default_for``
            (:data:`labclip.precision.DEFAULTS`), recorded as such.
        default_for: the notebook or command whose default precision applies (``None``: the kind's).
        batch_size: encoder batch size (``None``: the model's default).
        inputs: the kind's own inputs, passed to ``kind.prepare``.

    Raises:
        LabclipError: bad inputs (before any model loads), a name that is no model, no model that loads,
            or an unavailable (first) model in strict mode.
    """
    timings, default_for = Timings(), default_for or kind.default_for
    prepared = kind.prepare(timings, **inputs)
    if isinstance(models, str) and not kind.many:
        with timings.stage("load model"):
            model, reason = load_model_or_demo(models, strict, device, precision, default_for=default_for)
        return kind.build(prepared, [Loaded(models, model, reason)], [], timings=timings, batch_size=batch_size)
    if not models:
        raise LabclipError("a comparison needs at least one model")
    loaded, skipped = load_all(list(dict.fromkeys([models] if isinstance(models, str) else models)), timings,
                               strict=strict, device=device, precision=precision, default_for=default_for)
    return kind.build(prepared, loaded, skipped, timings=timings, batch_size=batch_size)


def load_all(names: Sequence[str], timings: Timings, *, strict: bool = False,
             **options: Any) -> tuple[list[Loaded], list[str]]:
    """:func:`load_models` with a timing per model (``load model NAME``) and the reasons of those left out.

    Raises:
        LabclipError: as :func:`load_models`, or when no model loads at all.
    """
    loaded, skipped = [], []  # type: tuple[list[Loaded], list[str]]
    each = load_models(names, skipped, strict=strict, **options)
    while True:
        began = time.perf_counter()
        one = next(each, None)
        if one is None:
            break
        timings[f"load model {shown_model(one.requested, ' + ')}"] = time.perf_counter() - began
        loaded.append(one)
    if not loaded:
        raise LabclipError("no model could be loaded: " + "; ".join(skipped))
    return loaded, skipped


def load_model_or_demo(name: str, strict: bool = False, device: str = "cpu", precision: str | None = "auto", *,
                       default_for: str | None = None) -> tuple[ClipModel, str | None]:
    """The one fallback policy: load ``name``; when it is not cached and the hub cannot be reached (and
    ``strict`` is false), use the demo model. A model the hub does not know and a missing local folder
    are errors (:class:`~labclip.errors.LabclipError`), never a fallback.

    A model with an adapter or fine-tuned weights (``"MODEL+adapter:PATH"``, ``"MODEL+finetune:DIR"``) never
    falls back: the demo model would drop them, so its loading error is raised.

    Returns:
        The model and, after a fallback, the reason (``None`` otherwise). The reason is printed
        once on stderr.
    """
    try:
        return _load(name, device, precision, default_for), None
    except ModelUnavailable as err:
        reason = _fallback(name, strict, err)
        return _load(DEMO_MODEL, device, precision, default_for), reason


def _load(name: str, device: str, precision: str | None, default_for: str | None) -> ClipModel:
    """:func:`labclip.model.load_model`; a model with a text adapter stands in for a :class:`ClipModel`."""
    return cast(ClipModel, load_model(name, device=device, precision=precision, default_for=default_for))


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
    given: list[str | ClipModel] = [str(name) if isinstance(name, os.PathLike) else name for name in names]
    problems: dict[int, LabclipError] = {}  # by position: unavailable offline, or a folder without a model
    for n, name in enumerate(given):
        if not isinstance(name, str):
            continue
        try:
            check_model(name)
        except ModelUnavailable as err:
            if offline == "error" or (n == 0 and strict):
                raise
            problems[n] = err
        except LabclipError as err:
            if not Path(str(_base(name))).is_dir():
                raise
            problems[n] = err
    for n, name in enumerate(given):
        if not isinstance(name, str):
            yield Loaded(name.name, name)
            continue
        problem = problems.get(n)
        if n == 0 and isinstance(problem, ModelUnavailable):
            reason = _fallback(name, strict, problem)
            yield Loaded(name, _load(DEMO_MODEL, device, precision, default_for), reason)
            continue
        if problem is None:
            try:
                model = _load(name, device, precision, default_for)
            except LabclipError as failed:  # broken files, or the cache changed since the check
                problem = failed
            else:
                yield Loaded(name, model)
                continue
        skipped.append(_not_compared(name, problem))


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


def _base(name: str) -> ModelSpec | str:
    """``name`` without its ``+finetune:``/``+adapter:`` parts (:meth:`labclip.spec.ModelSpec.parse`)."""
    try:
        return ModelSpec.parse(name).without(finetune=True, adapter=True)
    except LabclipError:
        return name


def _has_parts(name: str) -> bool:
    try:
        spec = ModelSpec.parse(name)
    except LabclipError:
        return False
    return spec.adapter is not None or spec.finetune is not None


def _fallback(name: str, strict: bool, err: ModelUnavailable) -> str:
    """The demo model stands in for ``name``, which is unavailable (``err``): return the reason, said once
    on stderr; re-raise ``err`` in strict mode, for the demo model itself and for a model with an adapter or
    fine-tuned weights."""
    if strict or name == DEMO_MODEL or _has_parts(name):
        raise err
    reason = without_demo_hint(str(err))
    print(f"labclip: {reason} -- using the untrained demo model instead (strict mode turns this into an error)",
          file=sys.stderr)
    return reason


