"""A command's inputs, checked before any model is loaded: labels, image folders and files, ``--out``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import LabclipError
from ..images import IMAGE_SUFFIXES


def count(n: int, word: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def labels(args: argparse.Namespace) -> list[str]:
    """The labels of ``--labels`` and ``--labels-file``, in order, without blanks or repeats."""
    found: list[str] = []
    if args.labels:
        found += [x.strip() for x in args.labels.split(",")]
    if args.labels_file:
        try:
            found += [x.strip() for x in args.labels_file.read_text(encoding="utf-8-sig").splitlines()]
        except OSError as err:
            raise LabclipError(f"{args.labels_file}: cannot read labels file ({err.strerror})") from None
    found = [x for x in dict.fromkeys(found) if x]
    if not found:
        raise LabclipError("no labels: give --labels 'cat,dog' or --labels-file FILE")
    return found


def folder_images(folder: Path) -> list[Path]:
    """The image files in ``folder`` and below it, sorted."""
    if not folder.is_dir():
        raise LabclipError(f"{folder}: no such folder")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise LabclipError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def given_images(paths: Sequence[Path]) -> list[Path]:
    """Image files as given, a folder as its images (recursively, as ``tag`` and ``search`` read it)."""
    images: list[Path] = []
    for path in paths:
        images += folder_images(path) if path.is_dir() else [path]
    return list(dict.fromkeys(images))


def check_files(paths: Sequence[Path]) -> None:
    """Every image exists and decodes, before any model is loaded."""
    from ..images import load_image

    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise LabclipError(f"{count(len(missing), 'image')} not found: {', '.join(missing[:5])}"
                           + (" ..." if len(missing) > 5 else ""))
    for path in paths:
        load_image(path)


def check_out(out: Path | None, suffixes: Sequence[str] = (".csv", ".json")) -> None:
    """A bad ``--out`` is reported before any model is loaded."""
    if out is None:
        return
    if out.suffix.lower() not in suffixes:
        raise LabclipError(f"{out}: --out must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise LabclipError(f"{out}: --out is a folder; give a file name")
    folder = out.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise LabclipError(f"{out}: cannot write there ({folder} is not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LabclipError(f"{out}: cannot write there (no write permission in {folder})")
