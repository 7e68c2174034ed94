"""What a model is called and which model it is: the one name grammar and the one identity.

:class:`ModelSpec` parses every name a user may give (an alias, a hub id, a local folder, ``"demo"``, a
``TEXT+IMAGE`` pair, ``MODEL+finetune:PATH`` and ``MODEL+adapter:PATH``); nothing else splits a model
name. :class:`ModelId` is what a loaded model *is*: how reports name it and its revision (never a
machine path), the one content fingerprint, the provenance record's fields and the embedding cache's key.
:class:`LoadedModel` is the interface every loaded model has, with or without a text adapter.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .config import exists, shown_path
from .errors import LabclipError
from .hub import cached_revision
from .registry import DEMO_MODEL, ModelInfo, lookup, resolve_model_name

ADAPTER_MARK = "+adapter:"
FINETUNE_MARK = "+finetune:"
MARKS = {ADAPTER_MARK: "adapter", FINETUNE_MARK: "finetune"}
# huggingface_hub's own bookkeeping in a ``local_dir`` download (timestamps, locks): not part of the model.
BOOKKEEPING = (".cache",)


def _quoted(name: str) -> str:
    return repr(name[:80] + ("…" if len(name) > 80 else ""))


@dataclass(frozen=True)
class ModelSpec:
    """A model name, parsed once.

    Attributes:
        text: the model (or a pair's text tower) as written: an alias, a hub id, a folder or ``"demo"``.
        image: a ``TEXT+IMAGE`` pair's image model as written; ``None`` for one model.
        finetune: the path after ``+finetune:`` (fine-tuned weights put on the model), else ``None``.
        adapter: the path after ``+adapter:`` (a text adapter put on the model), else ``None``.
    """

    text: str
    image: str | None = None
    finetune: str | None = None
    adapter: str | None = None

    @classmethod
    def parse(cls, name: str | os.PathLike[str]) -> ModelSpec:
        """Split a model name into its parts; an existing folder or file is one model whatever it holds.

        ``+adapter:PATH`` and ``+finetune:PATH`` come last (each at most once, in either order), then the
        model: a path that exists, else ``TEXT+IMAGE`` (split at the first ``+`` whose left side exists,
        else at the first ``+``), else one name.

        Raises:
            LabclipError: an empty name, a mark without a model before it or a path after it, a part given
                twice, or a pair with an empty side.
        """
        name = os.fspath(name)
        if not name.strip():
            raise LabclipError("model '': the model name is empty")
        parts: dict[str, str] = {}
        rest = name
        while not exists(rest):
            found = max(MARKS, key=rest.rfind)
            at = rest.rfind(found)
            if at < 0:
                break
            rest, path = rest[:at], rest[at + len(found):]
            what = MARKS[found]
            if what in parts:
                raise LabclipError(f"model {_quoted(name)}: more than one '{found}' part")
            if not rest or not path:
                raise LabclipError(f"model {_quoted(name)}: '{found}PATH' needs a model before it and a path after it")
            parts[what] = path
        text, image = _pair(name, rest)
        return cls(text, image, parts.get("finetune"), parts.get("adapter"))

    @property
    def model(self) -> str:
        """The model without its fine-tuning and adapter: ``TEXT`` or ``TEXT+IMAGE`` as written."""
        return self.text if self.image is None else f"{self.text}+{self.image}"

    @property
    def is_demo(self) -> bool:
        return self.text == DEMO_MODEL and self.image is None

    @property
    def source(self) -> str:
        """The model (a pair's text tower) with its alias resolved: a hub id or a path."""
        return resolve_model_name(self.text)

    def info(self, image_model: str | None = None) -> ModelInfo:
        """The registry entry; a pair's image model (else ``image_model``) replaces a paired family's default."""
        return lookup(self.text, self.image or image_model)

    def without(self, *, finetune: bool = False, adapter: bool = False) -> ModelSpec:
        """This spec with its fine-tuning and/or adapter part dropped."""
        return replace(self, finetune=None if finetune else self.finetune, adapter=None if adapter else self.adapter)

    def shown(self, sep: str = "+") -> str:
        """How reports name it (:func:`shown_model`): hub ids as given, paths by :func:`labclip.config.shown_path`."""
        models = [self.text] if self.image is None else [self.text, self.image]
        shown = sep.join(shown_path(p) if Path(p).is_absolute() or exists(p) else p for p in models)
        for what, path in (("finetune", self.finetune), ("adapter", self.adapter)):
            if path is not None:
                shown += f"{sep}{what}:{shown_path(path)}"
        return shown

    def __str__(self) -> str:
        marks = "".join(f"{mark}{path}" for mark, path in ((FINETUNE_MARK, self.finetune), (ADAPTER_MARK, self.adapter))
                        if path is not None)
        return self.model + marks


def _pair(name: str, rest: str) -> tuple[str, str | None]:
    """``rest`` as one model or a ``TEXT+IMAGE`` pair (see :meth:`ModelSpec.parse`)."""
    if exists(rest) or "+" not in rest:
        return rest, None
    splits = [i for i, c in enumerate(rest) if c == "+"]
    at = next((i for i in splits if exists(rest[:i])), splits[0])
    text, image = rest[:at], rest[at + 1:]
    if not text or not image:
        raise LabclipError(f"model {_quoted(name)}: a pair is TEXT+IMAGE, a model on each side of the '+'")
    return text, image


def shown_model(name: str, sep: str = "+") -> str:
    """A model name as reports show it: hub ids as given; local folders (``TEXT+IMAGE`` pairs too) and the
    files of ``+finetune:``/``+adapter:`` parts by :func:`labclip.config.shown_path`, so no machine path is
    shown. A name the grammar refuses is shown as written (a path by its name)."""
    try:
        return ModelSpec.parse(name).shown(sep)
    except LabclipError:
        return shown_path(name) if Path(str(name)).is_absolute() else str(name)


# --------------------------------------------------------------------------------------------
# The one fingerprint: a folder's files by their contents


_DIGESTS: dict[tuple[object, ...], str] = {}


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a folder's files, by relative name and content (not by location or mtime;
    huggingface_hub's ``.cache`` bookkeeping left out). Remembered per process while no file's size,
    mtime, ctime or inode changes, so a large model is read once."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] not in BOOKKEEPING)
    stats = [(p.relative_to(root).as_posix(), p.stat()) for p in files]
    memo = (str(root.resolve()), *((n, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for n, s in stats))
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        for (rel, _), path in zip(stats, files):
            digest.update(rel.encode("utf-8", "surrogatepass") + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def content_digest(path: str | os.PathLike[str]) -> str:
    """:func:`folder_digest` of a folder, or the SHA-256 of one file's bytes."""
    if Path(path).is_dir():
        return folder_digest(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_key(source: str, revision: str | None) -> str:
    """What identifies one model source: a folder by its content, a hub id by id and revision."""
    if Path(source).is_dir():
        return f"content:{folder_digest(source)}"
    return f"hub:{source}@{revision}"


def fingerprint_sources(sources: Sequence[str], extra: str) -> str:
    """32 hex digits over :func:`source_key` of each source and ``extra`` (revision and options)."""
    keys = [source_key(s, None) for s in sources]
    return hashlib.sha256(f"{keys}|{extra}".encode()).hexdigest()[:32]


def shown_revision(revision: str | None) -> str | None:
    """A revision as every report and output file shows it: a hub commit as it is; ``local:<folder>`` as
    ``local:<name>@<fingerprint>`` (the folder named as :func:`shown_model` does, plus the first 12 hex
    digits of :func:`folder_digest`), or ``local:<name>`` once the folder is gone."""
    if revision and revision.startswith("local:"):
        folder = revision.removeprefix("local:")
        shown = "local:" + shown_model(folder)
        return f"{shown}@{folder_digest(folder)[:12]}" if Path(folder).is_dir() else shown
    return revision


def tower_revision(source: str, revision: str | None) -> str | None:
    """A tower's revision as output files record it (:func:`shown_revision`): a local folder by its name and
    fingerprint; an unknown hub revision from the cached snapshot."""
    if revision is None and Path(source).is_dir():
        revision = "local:" + str(Path(source).resolve())
    return shown_revision(revision) if revision else cached_revision(source)


# --------------------------------------------------------------------------------------------
# The one identity of a loaded model


@dataclass(frozen=True)
class ModelId:
    """Which model made the numbers, computed once from a loaded model (:meth:`of`).

    Attributes:
        name: how reports name the model asked for (``ClipModel.name``: no machine path).
        id: the model used: hub id, folder name, ``demo``, ``TEXT+IMAGE``; ``+adapter:LABEL`` with an adapter.
        revision: its revision as shown (:func:`shown_revision`); a pair's as ``TEXT_REV+IMAGE_REV``, an
            adapter's weights hash after ``+adapter:``.
        fingerprint: 32 hex digits over what the weights are: each folder's content, each hub id's
            revision, the adapter's and fine-tuning's contents (not paths, not mtimes).
        untrained: the weights are random.
        precision: the precision run (``fp32``, ``bf16``, ...), then how it was chosen.
        adapter: the adapter's card as reports show it, else ``None``.
        finetune: the fine-tuning's card as reports show it (``MODEL+finetune:LABEL``), else ``None``.
    """

    name: str
    id: str
    revision: str | None
    fingerprint: str
    untrained: bool
    precision: str
    precision_requested: str | None
    precision_reason: str | None
    precision_default: str | None
    adapter: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None
    images_key: str = ""
    captions_key: str = ""

    @classmethod
    def of_clip(cls, clip: Any) -> ModelId:
        """The identity of a :class:`labclip.model.ClipModel` (no adapter), from its sources and revisions."""
        if clip.is_demo:
            model_id, revision = DEMO_MODEL, shown_revision(clip.revision)
        elif clip.image_source and clip.image_source != clip.source:
            model_id = f"{clip.source}+{clip.image_source}"
            revision = "+".join(str(tower_revision(s, r)) for s, r in ((clip.source, clip.revision),
                                                                         (clip.image_source, clip.image_revision)))
        else:
            model_id, revision = clip.source, tower_revision(clip.source, clip.revision)
        image = source_key(clip.image_source or clip.source, clip.image_revision)
        towers = [image] + ([source_key(clip.source, clip.revision)] if clip.info.paired else [])
        weights = [*towers, f"finetune:{content_digest(clip.finetune)}" if clip.finetune else ""]
        options = f"{clip.precision.name}|{clip.preprocess}"
        shown_id, tuned = shown_model(model_id), clip.finetune_card
        if tuned:
            shown_id, revision = f"{shown_id}{FINETUNE_MARK}{tuned['label']}", f"{revision}{FINETUNE_MARK}{tuned['sha256'][:16]}"
        return cls(
            name=clip.name, id=shown_id, revision=revision, fingerprint=_hash(weights),
            untrained=bool(clip.untrained), precision=clip.precision.name,
            precision_requested=clip.precision.requested, precision_reason=clip.precision.reason,
            precision_default=clip.precision.default, finetune=tuned,
            images_key=_hash([image, weights[-1], options, "images"]), captions_key=_hash([*weights, options, "captions"]),
        )

    def with_adapter(self, name: str, card: dict[str, Any], untrained: bool) -> ModelId:
        """This identity with a text adapter on it (``card``: the adapter card as reports show it)."""
        sha = card["sha256"]
        return replace(self, name=name, id=f"{self.id}{ADAPTER_MARK}{card['label']}",
                       revision=f"{self.revision}{ADAPTER_MARK}{sha}", fingerprint=_hash([self.fingerprint, sha]),
                       untrained=untrained, adapter=card, captions_key=_hash([self.captions_key, sha]))

    def cache_key(self, images_only: bool = False) -> str:
        """The embedding cache's key: the image tower alone (``images_only``, so models sharing it share
        cached image embeddings), or the whole model; both with precision and preprocessing."""
        return self.images_key if images_only else self.captions_key

    def record(self, requested: str | None = None, fallback_reason: str | None = None) -> dict[str, Any]:
        """The provenance record's model fields (what :func:`labclip.lab.provenance.model_record` writes)."""
        record: dict[str, Any] = {
            "requested": shown_model(requested or self.name), "id": self.id, "revision": self.revision,
            "untrained": self.untrained, "fallback_reason": fallback_reason, "precision": self.precision,
            "precision_requested": self.precision_requested, "precision_reason": self.precision_reason,
            "precision_default": self.precision_default}
        if self.finetune is not None:
            record["finetune"] = self.finetune
        if self.adapter is not None:
            record["adapter"] = self.adapter
        return record


def _hash(parts: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoadedModel(Protocol):
    """What every loaded model offers, with or without a text adapter (``ClipModel``, ``AdaptedModel``; mypy
    checks both against it in :mod:`labclip.model`). Its name, revision and provenance are its ``identity``'s."""

    @property
    def dim(self) -> int: ...
    @property
    def identity(self) -> ModelId: ...
    @property
    def logit_bias(self) -> float | None: ...
    @property
    def logit_scale(self) -> float: ...
    @property
    def text_model(self) -> LoadedModel: ...
    def encode_images(self, images: Sequence[Any], batch_size: int | None = None) -> np.ndarray: ...
    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray: ...


__all__ = ["ADAPTER_MARK", "FINETUNE_MARK", "LoadedModel", "ModelId", "ModelSpec", "content_digest", "folder_digest",
           "shown_model", "shown_revision", "tower_revision"]
