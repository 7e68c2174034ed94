"""Hugging Face hub access: local files first, the hub only when it answers, safe weight loading,
and one-line messages for what could not be loaded.

Reachability and "not found" are asked of ``huggingface_hub`` itself (so ``HF_ENDPOINT``,
``HTTPS_PROXY`` and ``HF_HUB_OFFLINE`` are honoured). Weights are read from safetensors where a
repository has them; ``pytorch_model.bin`` only through ``torch.load(weights_only=True)``, which
unpickles tensors and containers and refuses everything else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .errors import LabclipError
from .registry import ModelInfo

T = TypeVar("T")

REACH_TIMEOUT = 5.0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SMALL_FILES = ("json", "txt", "model", "spm")
COMMIT = re.compile(r"[0-9a-f]{40}")


class ModelUnavailable(LabclipError):
    """The model is not in the local cache and the hub cannot be reached: the one case for a demo fallback."""


def did_you_mean(name: str) -> str:
    """``"; did you mean 'X'?"`` with the closest id or alias the registry knows, else ``""``."""
    from .registry import closest

    near = closest(name)
    return f"; did you mean '{near}'?" if near and near != name else ""


def is_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a hub id (``org/name`` or ``name``), not of a file path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def status(repo_id: str, timeout: float = REACH_TIMEOUT) -> str:
    """What the hub says of ``repo_id``: ``"found"``, ``"not found"``, ``"gated"`` or ``"unreachable"``."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return "unreachable"
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError:
        return "gated"
    except RepositoryNotFoundError:
        return "not found"
    except HfHubHTTPError as err:
        code = getattr(err.response, "status_code", None)
        if code == 404:
            return "not found"
        return "unreachable" if code is None or code >= 500 else "found"
    except Exception:  # noqa: BLE001 - connection refused, DNS, proxy, timeout, offline mode: not reachable
        return "unreachable"
    return "found"


def hub_reachable(timeout: float = REACH_TIMEOUT) -> bool:
    """Whether the hub answers now (any answer about the default model counts; False at once offline)."""
    from .registry import DEFAULT_MODEL

    return status(DEFAULT_MODEL, timeout) != "unreachable"


def require(repo_id: str) -> None:
    """Raise the right error for a hub id that is not in the local cache.

    Raises:
        LabclipError: ``repo_id`` is neither a folder nor a hub id, or the hub says the repository does
            not exist (with the closest known id) or is gated.
        ModelUnavailable: the hub cannot be reached.
    """
    if not is_repo_id(repo_id):
        raise LabclipError(f"'{repo_id}': no such model directory{did_you_mean(repo_id)}")
    answer = status(repo_id)
    if answer == "not found":
        raise LabclipError(f"model '{repo_id}' was not found on the Hugging Face hub{did_you_mean(repo_id)}")
    if answer == "gated":
        raise LabclipError(f"model '{repo_id}' is gated on the Hugging Face hub: accept its licence on the hub "
                           "and log in (hf auth login)")
    if answer == "unreachable":
        raise ModelUnavailable(f"'{repo_id}' is not in the local Hugging Face cache and the hub cannot be reached")


def is_cached(repo_id: str) -> bool:
    """Whether the local cache's current snapshot of ``repo_id`` has its ``config.json`` and a weight file."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name), str)

    return cached("config.json") and any(cached(name) for name in WEIGHT_FILES)


def check_source(source: str) -> None:
    """Raise what :func:`from_hub` would raise for ``source``, without loading anything: a local folder
    needs ``config.json`` (or ``modules.json``); a hub id is fine when cached (:func:`is_cached`) and
    otherwise goes to :func:`require`.

    Raises:
        LabclipError: a folder without a model config; the hub says "not found" or "gated".
        ModelUnavailable: not cached and the hub cannot be reached.
    """
    folder = Path(source)
    if folder.is_dir():
        if not any((folder / name).is_file() for name in ("config.json", "modules.json")):
            raise LabclipError(f"{source}: no config.json (or modules.json) in the model directory")
        return
    if not is_cached(source):
        require(source)


def from_hub(source: str, load: Callable[..., T]) -> T:
    """Run ``load(local_files_only=True)``; on a miss, ``load()`` again when the hub says the model exists.

    Raises:
        LabclipError: the hub says there is no such model.
        ModelUnavailable: not cached and the hub cannot be reached.
    """
    try:
        return load(local_files_only=True)
    except OSError:
        if Path(source).is_dir():
            raise
        require(source)
        return load()


def revision_of(folder: str | os.PathLike[str]) -> str | None:
    """The commit a model folder holds, as ``huggingface_hub`` recorded it, else ``None``.

    A hub cache snapshot (``models--org--name/snapshots/<commit>/``, or a folder inside one) is named by
    its commit; its files are symlinks into ``blobs/`` (named by each file's git or LFS hash), so the
    path is never resolved. A ``local_dir`` download (plain files) records the commit of each file in
    ``.cache/huggingface/download/<file>.metadata``; it counts only when every recorded file is unchanged
    since its download and all name the same commit.
    """
    path = Path(os.path.abspath(folder))
    for part in (path, *path.parents):
        if part.parent.name == "snapshots" and COMMIT.fullmatch(part.name):
            return part.name
    return _local_dir_commit(path)


def _local_dir_commit(folder: Path) -> str | None:
    """The one commit of a ``local_dir`` download's metadata files (``commit\\netag\\ntimestamp``, as
    ``huggingface_hub._local_folder.write_download_metadata`` writes them), read without writing any lock."""
    records = folder / ".cache" / "huggingface" / "download"
    commits = set()
    for meta in records.rglob("*.metadata") if records.is_dir() else ():
        try:
            commit, _etag, stamp = meta.read_text(encoding="utf-8").splitlines()[:3]
            changed = (folder / meta.relative_to(records).with_suffix("")).stat().st_mtime - 1 > float(stamp)
        except (OSError, ValueError):
            return None
        if changed or not COMMIT.fullmatch(commit):
            return None
        commits.add(commit)
    return commits.pop() if len(commits) == 1 else None


def cached_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot ``refs/main`` points at (the one a load just used), or ``None``.

    transformers 5 leaves ``config._commit_hash`` empty, so the revision is read off the cached file's
    snapshot folder, as ``huggingface_hub.try_to_load_from_cache`` names it.
    """
    from huggingface_hub import try_to_load_from_cache

    if Path(repo_id).exists() or not is_repo_id(repo_id):
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return revision_of(Path(found).parent) if isinstance(found, str) else None


def snapshot(repo_id: str, local_files_only: bool = False) -> Path:
    """The local folder of a hub repository with its configs, tokenizer files and one weight file per
    folder: ``model.safetensors`` where the folder has one, else ``pytorch_model.bin``."""
    from huggingface_hub import HfApi, snapshot_download

    if local_files_only:
        return Path(snapshot_download(repo_id, local_files_only=True))
    files = HfApi().list_repo_files(repo_id)
    weights = []
    for folder in {f.rpartition("/")[0] for f in files}:
        prefix = f"{folder}/" if folder else ""
        weights += [prefix + w for w in WEIGHT_FILES if prefix + w in files][:1]
    small = [f for f in files if f.rsplit(".", 1)[-1] in SMALL_FILES]
    return Path(snapshot_download(repo_id, allow_patterns=small + weights))


def repo_dir(source: str, local_files_only: bool = False) -> Path:
    """A local folder as is, or the snapshot folder of a hub repository (see :func:`snapshot`)."""
    if Path(source).is_dir():
        return Path(source)
    return snapshot(source, local_files_only=local_files_only)


def load_weights(folder: Path, names: Sequence[str] = WEIGHT_FILES) -> dict[str, Any]:
    """The state dict of the first of ``names`` present in ``folder``.

    Safetensors are read as they are; a ``.bin`` file only with ``torch.load(weights_only=True)``,
    which refuses anything but tensors. Nothing else is ever unpickled.

    Raises:
        LabclipError: none of the files is there, or a ``.bin`` file holds more than tensors.
    """
    import pickle

    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
            return state
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
            raise LabclipError(f"{path}: refused to load: not a plain tensor file "
                               f"({' '.join(str(err).split())[:160]})") from None
    raise LabclipError(f"{folder}: no weights file ({' or '.join(names)})")


DEMO_HINT = "pass a local model directory, or use the untrained 'demo' model"
NO_DEMO_HINT = "or pass a local model directory"


class PartFailed(Exception):
    """One part of a model (e.g. a paired model's ``"image tower"``, from ``source``) could not be loaded;
    ``cause`` says why. :func:`load_failure` names the part; nothing else sees this exception."""

    def __init__(self, part: str, source: str, cause: Exception):
        super().__init__(f"{part} '{source}': {cause}")
        self.part, self.source, self.cause = part, source, cause


def loading_part(part: str, source: str, load: Callable[[], T]) -> T:
    """``load()``; whatever it raises is raised as a :class:`PartFailed` naming ``part`` and ``source``
    (the innermost part named wins, e.g. a text tower's base configuration)."""
    try:
        return load()
    except PartFailed:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the part that failed
        raise PartFailed(part, source, err) from err


def load_failure(name: str, source: str, err: Exception, what: str = "model", demo: bool = True) -> str:
    """One line: what could not be loaded (the part of it, for a :class:`PartFailed`), why, and the ways out."""
    part = err if isinstance(err, PartFailed) else None
    if part is not None:
        err, source = part.cause, part.source
    if isinstance(err, LabclipError):
        reason = str(err)
    else:
        reason = " ".join(str(err).split()) or type(err).__name__
        if len(reason) > 200:
            reason = reason[:197] + "..."
        reason = f"{type(err).__name__}: {reason}"
    if part is not None:
        quoted = f"'{part.source}'"
        reason = f"its {part.part} {reason}" if reason.startswith(quoted) else f"its {part.part} {quoted}: {reason}"
    tried = f"'{name}'" if name == source or part is not None else f"'{name}' ({source})"
    if Path(source).is_dir():
        hint = "; check that the directory holds config.json, weights and tokenizer files saved with save_pretrained"
    elif isinstance(err, ModelUnavailable) or not isinstance(err, LabclipError):
        hint = "; connect to the network, put a downloaded copy in the Hugging Face cache (HF_HOME), " + (
            DEMO_HINT if demo else NO_DEMO_HINT)
    else:
        hint = ""
    return f"could not load {what} {tried}: {reason}{hint}"


def without_demo_hint(message: str) -> str:
    """A :func:`load_failure` line without its advice to use the demo model, for where the demo model
    already stands in (reports, their JSON) or where it cannot (a comparison's further models)."""
    return message.replace(DEMO_HINT, NO_DEMO_HINT)


def loading_error(name: str, info: ModelInfo, err: Exception) -> LabclipError:
    """The one line for a loading failure, naming the model and, for a paired model, the part that failed
    (:class:`labclip.hub.PartFailed`); :class:`ModelUnavailable` stays itself (the fallback case)."""
    cause = err.cause if isinstance(err, PartFailed) else err
    if isinstance(cause, ModelUnavailable):
        return ModelUnavailable(load_failure(name, info.id, err))
    if isinstance(err, LabclipError):
        return err
    return LabclipError(load_failure(name, info.id, err))


def part_of(info: ModelInfo, source: str) -> str | None:
    """Which tower of a paired model ``source`` is (``None`` for a model that is one repository)."""
    if not info.paired:
        return None
    return "image tower" if source == info.image_source else "text tower"


def check_sources(name: str, info: ModelInfo) -> None:
    """Raise what loading ``info``'s towers would raise for a missing or unknown source, without loading
    anything (:func:`labclip.model.check_model`)."""
    for source in dict.fromkeys([info.image_source, info.id]):
        part = part_of(info, source)
        try:
            check_source(source)
        except ModelUnavailable as err:
            raise ModelUnavailable(load_failure(name, info.id, PartFailed(part, source, err) if part else err)) \
                from err
        except LabclipError as err:
            if Path(source).is_dir() or part:
                raise LabclipError(load_failure(name, info.id, PartFailed(part, source, err) if part else err)) \
                    from err
            raise
