"""What a report records about how its numbers were made: inputs, model, software, machine, time."""

from __future__ import annotations

import hashlib
import os
import platform
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..model import ClipModel, describe
from ..spec import shown_model

PACKAGES = ("labclip", "torch", "transformers", "tokenizers", "numpy", "pandas", "pillow", "matplotlib", "papermill", "nbconvert")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: Iterable[str | Path]) -> str:
    """One hash over several files: their names and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, object]:
    import torch

    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory,
        "cuda": torch.cuda.is_available(),
    }


class Timings(dict):
    """Seconds per named stage, in the order the stages ran."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hub_revision(repo_id: str) -> str | None:
    """The commit of a hub model's cached snapshot (``refs/main``), or ``None``."""
    from ..hub import cached_revision

    return cached_revision(repo_id)


def model_record(model, requested: str | None = None, fallback_reason: str | None = None) -> dict:
    """Who made the numbers: the requested model, the model used (id and revision) and whether it is untrained.

    A multilingual text encoder paired with a CLIP image encoder is ``TEXT+IMAGE``, with revision
    ``TEXT_REVISION+IMAGE_REVISION``. A model with a text adapter is ``MODEL+adapter:LABEL``, with
    revision ``REVISION+adapter:SHA256`` and the adapter's card under ``adapter``. Local folders and files
    are named as reports name them (:func:`labclip.spec.shown_model`), never by their machine path.
    The fields are the model's identity's (:meth:`labclip.spec.ModelId.record`).
    """
    return model.identity.record(requested, fallback_reason)


def model_columns(record: dict) -> dict:
    """The model columns every row of an output CSV carries (``compare --out`` and ``reports/comparison.csv`` add
    :func:`row_provenance`'s)."""
    return {"model": record["id"], "model_revision": record["revision"] or "", "model_untrained": record["untrained"],
            "precision": record["precision"], "precision_requested": record["precision_requested"],
            "precision_default": record["precision_default"]}


def row_provenance(record: dict) -> dict:
    """Who made one row of a comparison table: the model columns, the model asked for, and the labclip version;
    the one builder of these columns for ``compare --out`` and the languages report's ``comparison.csv``."""
    from .. import __version__

    return {**model_columns(record), "requested_model": record["requested"], "labclip_version": __version__}


def output_provenance(models: Sequence[dict], inputs: Iterable[str | Path] = (), *, several: bool = False) -> dict:
    """The ``provenance`` block of a command's output file: labclip version, time, the model records
    (:func:`model_record`; ``several`` lists them as ``models``), library versions, machine, input hashes."""
    from .. import __version__

    block = {"labclip": __version__, "created": now(),
             **({"models": list(models)} if several else {"model": models[0]}),
             "versions": package_versions(), "machine": machine()}
    inputs = list(inputs)
    if inputs:
        block["inputs_sha256"] = sha256_files(inputs)
    return block


def environment(timings: Mapping[str, float], *, digits: int = 3, with_machine: bool = True) -> dict:
    """What every record of labclip ends with: package versions, the machine (unless ``with_machine`` is false)
    and the seconds per stage, rounded to ``digits`` (the runs' JSON files and the report runner's ``run.json``)."""
    return {"versions": package_versions(), **({"machine": machine()} if with_machine else {}),
            "timings_s": {k: round(v, digits) for k, v in timings.items()}}


def run_record(model: ClipModel, *, requested: str | None, fallback_reason: str | None, started: str,
               timings: Mapping[str, float], **facts: object) -> dict:
    """The one provenance builder of the lab's runs: the model requested and the model used (and why they
    differ), the run's own facts (inputs, hashes, options) in the order given, then :func:`environment`."""
    return {"started": started, "requested_model": shown_model(requested or model.name), "model_used": model.name,
            "fallback_reason": fallback_reason, "model": describe(model), **facts, **environment(timings)}
