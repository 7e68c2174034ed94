"""What a report records about how its numbers were made: inputs, model, software, machine, time."""

from __future__ import annotations

import hashlib
import os
import platform
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..adapter import ADAPTER_MARK
from ..config import DEMO_MODEL, shown_model, shown_revision

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


def tower_revision(source: str, revision: str | None) -> str | None:
    """A tower's revision as output files record it (:func:`labclip.config.shown_revision`, as the reports
    show it): a local folder by its name and fingerprint, without its machine path."""
    if revision is None and Path(source).is_dir():
        revision = "local:" + str(Path(source).resolve())
    return shown_revision(revision) if revision else hub_revision(source)


def model_record(model, requested: str | None = None, fallback_reason: str | None = None) -> dict:
    """Who made the numbers: the requested model, the model used (id and revision) and whether it is untrained.

    A multilingual text encoder paired with a CLIP image encoder is ``TEXT+IMAGE``, with revision
    ``TEXT_REVISION+IMAGE_REVISION``. A model with a text adapter is ``MODEL+adapter:LABEL``, with
    revision ``REVISION+adapter:SHA256`` and the adapter's card under ``adapter``. Local folders and files
    are named as reports name them (:func:`labclip.config.shown_model`), never by their machine path.
    """
    if model.is_demo:
        model_id, revision = DEMO_MODEL, shown_revision(model.revision)
    elif model.image_source and model.image_source != model.source:
        model_id = f"{model.source}+{model.image_source}"
        revision = "+".join(str(tower_revision(s, r)) for s, r in ((model.source, model.revision),
                                                                     (model.image_source, model.image_revision)))
    else:
        model_id, revision = model.source, tower_revision(model.source, model.revision)
    model_id = shown_model(model_id)
    record = {"requested": shown_model(requested or model.name), "id": model_id, "revision": revision,
              "untrained": bool(model.untrained), "fallback_reason": fallback_reason,
              "precision": model.precision.name, "precision_requested": model.precision.requested,
              "precision_reason": model.precision.reason, "precision_default": model.precision.default}
    tuned = getattr(model, "finetune_card", None)
    if tuned:  # MODEL+finetune:LABEL; its revision already carries the fine-tuned weights' hash
        model_id = record["id"] = f"{model_id}+finetune:{tuned['label']}"
        record["finetune"] = tuned
    card = getattr(model, "adapter_card", None)
    if card is not None:
        record.update(id=f"{model_id}{ADAPTER_MARK}{card['label']}", revision=f"{revision}{ADAPTER_MARK}{card['sha256']}",
                      adapter=card)
    return record


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
