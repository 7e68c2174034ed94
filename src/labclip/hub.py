"""Hugging Face hub access: local files first, the hub only when reachable, safe weight loading,
and one-line messages for what could not be loaded."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from .errors import LabclipError

T = TypeVar("T")

REPO_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*/*.json", "*/*.safetensors"]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached now (False at once when offline mode is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def from_hub(source: str, load: Callable[..., T]) -> T:
    """Run ``load(local_files_only=True)``; on a miss, ``load()`` again when the hub is reachable."""
    try:
        return load(local_files_only=True)
    except OSError:
        if Path(source).is_dir() or not hub_reachable():
            raise
        return load()


def repo_dir(source: str, local_files_only: bool = False) -> Path:
    """A local folder as is, or the snapshot folder of a hub repository (weights, configs, tokenizer)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=local_files_only, allow_patterns=REPO_PATTERNS))


def load_weights(folder: Path, names: Sequence[str] = ("model.safetensors", "pytorch_model.bin")) -> dict:
    """The state dict of the first of ``names`` present in ``folder``.

    Safetensors are read as they are; a ``.bin`` file only with ``torch.load(weights_only=True)``,
    which refuses anything but tensors. Nothing else is ever unpickled.

    Raises:
        LabclipError: none of the files is there.
    """
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    raise LabclipError(f"{folder}: no weights file ({' or '.join(names)})")


def load_failure(name: str, source: str, err: Exception, what: str = "model", demo: bool = True) -> str:
    """One line: what could not be loaded, why, and the ways out."""
    reason = " ".join(str(err).split()) or type(err).__name__
    if len(reason) > 200:
        reason = reason[:197] + "..."
    reason = f"{type(err).__name__}: {reason}"
    tried = f"'{name}'" if name == source else f"'{name}' ({source})"
    if Path(source).is_dir():
        hint = "check that the directory holds config.json, weights and tokenizer files saved with save_pretrained"
    else:
        if not hub_reachable():
            reason = "not in the local Hugging Face cache and the hub cannot be reached"
        hint = "connect to the network, put a downloaded copy in the Hugging Face cache (HF_HOME), " + (
            "pass a local model directory, or use the untrained 'demo' model" if demo
            else "or pass a local model directory")
    return f"could not load {what} {tried}: {reason}; {hint}"
