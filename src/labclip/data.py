"""Caption sets: one row per image, one column per language, validated before any work starts."""

from __future__ import annotations

import difflib
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LabclipError
from .images import load_image

IMAGE_COLUMNS = ("image", "file_name")
# A caption column is named by a language tag: ISO 639-1 code, optionally with region or script
# (en, pt-BR, zh_Hans). Other columns (notes, path, ...) are kept and ignored unless ``languages`` names them.
LANGUAGE_TAG = re.compile(r"[a-z]{2}(?:[-_][a-z0-9]{2,8})*")
NOT_LANGUAGES = ("id",)
DELIMITERS = (",", ";", "\t")


def load_captions(
    path: str | Path,
    image_dir: str | Path | None = None,
    languages: Sequence[str] | None = None,
    check_images: bool = True,
) -> pd.DataFrame:
    """Read and validate a caption set.

    The file is CSV (``,`` or ``;``, UTF-8 with or without BOM, any line ends), TSV, XLSX or
    JSON Lines (``.jsonl``, one object per image as in a Hugging Face imagefolder ``metadata.jsonl``;
    a language may hold a list of captions).
    It has an ``image`` column (or ``file_name``, as in Hugging Face ``imagefolder`` metadata)
    whose relative paths are resolved against the caption file's own folder (absolute paths are
    used as they are), an optional ``id`` column, and one column of captions per language named
    by its code (``en``, ``ru``, ``pt-BR``). Other columns are kept and ignored (``path`` and
    ``name`` columns as ``path.1`` and ``name.1``).

    Args:
        path: the caption file.
        image_dir: folder the relative image paths are resolved against instead of the caption
            file's folder.
        languages: caption columns to use, which must be present (any column name may be given);
            ``None`` uses every column named by a language code.
        check_images: open every image, so unreadable files are reported now.

    Returns:
        A DataFrame with ``image`` (as written), ``path`` (absolute), ``name`` (shown in reports: the
        path relative to the folder that holds all images), ``id`` if given, the language columns and
        any other columns; ``df.attrs["languages"]`` lists the languages used, ``df.attrs["source"]`` the file.

    Raises:
        LabclipError: one line naming the file and listing every problem with its
            spreadsheet row number (the header is row 1).
    """
    path = Path(path)
    base = Path(image_dir) if image_dir is not None else path.parent
    table = _read_table(path)
    table.columns = [str(c).strip().lower() for c in table.columns]
    table = table.apply(lambda col: col.map(_strip))
    column = next((c for c in IMAGE_COLUMNS if c in table.columns), None)
    if column is None:
        raise LabclipError(f"{path}: no 'image' (or 'file_name') column "
                           f"(columns found: {', '.join(table.columns) or 'none'})")
    # labclip adds ``path`` and ``name``; such columns in the file are kept as ``path.1``, ``name.1``
    # (pandas' names for duplicates).
    table = table.rename(columns={column: "image", "path": "path.1", "name": "name.1"})
    found = [c for c in table.columns if c not in (*IMAGE_COLUMNS, *NOT_LANGUAGES) and LANGUAGE_TAG.fullmatch(c)]
    missing_langs = [lang for lang in (languages or []) if lang not in table.columns]
    if missing_langs:
        raise LabclipError(f"{path}: unknown language {', '.join(map(repr, missing_langs))}; "
                           f"the file has: {', '.join(found) or 'no language column'}")
    langs = list(languages) if languages else found
    if not langs:
        raise LabclipError(f"{path}: no language column; add one caption column per language named by its code, "
                           f"e.g. 'en', 'ru' (columns found: {', '.join(table.columns)})")
    if table.empty:
        raise LabclipError(f"{path}: no caption rows below the header")

    files = [_resolve(base, name) for name in table["image"]]
    problems = _row_problems(table, files, langs, check_images, line_offset=1 if _is_jsonl(path) else 2)
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise LabclipError(f"{path}: {len(problems)} problem{'s' * (len(problems) > 1)}: {shown}")

    table.insert(1, "path", [str(f) for f in files])
    table.insert(2, "name", short_names(files))
    table.attrs["languages"] = langs
    table.attrs["source"] = str(path)
    return table.reset_index(drop=True)


def _resolve(base: Path, name: str) -> Path:
    return (base / name).resolve() if name else base.resolve()


def short_names(files: Sequence[str | os.PathLike]) -> list[str]:
    """Each path relative to the deepest folder that holds them all (``coffee.png``, ``cats/a.jpg``)."""
    files = [Path(f) for f in files]
    common = Path(os.path.commonpath([str(f.parent) for f in files]))
    return [f.relative_to(common).as_posix() for f in files]


def _suggestion(name: str, file: Path) -> str:
    """``; did you mean '...'?`` naming the closest file in the folder the missing one was looked for in."""
    siblings = [p.name for p in file.parent.iterdir() if p.is_file()] if file.parent.is_dir() else []
    close = difflib.get_close_matches(file.name, siblings, n=1, cutoff=0.5)
    return f"; did you mean '{name[: len(name) - len(file.name)]}{close[0]}'?" if close else ""


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LabclipError(f"{path}: caption file not found")
    suffix = path.suffix.lower()
    if _is_jsonl(path):
        return _read_jsonl(path)
    if suffix in (".xlsx", ".xlsm"):
        try:
            return pd.read_excel(path, dtype=str, keep_default_na=False).astype(str)
        except ImportError:
            raise LabclipError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl)") from None
        except Exception as err:  # noqa: BLE001 - a broken workbook is a user error
            raise LabclipError(f"{path}: unreadable spreadsheet ({type(err).__name__}: {err})") from None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise LabclipError(
            f"{path}: row {line} is not UTF-8 (byte 0x{raw[err.start]:02x}); save the file as 'CSV UTF-8'"
        ) from None
    first = text.splitlines()[0] if text.strip() else ""
    sep = "\t" if suffix == ".tsv" else max(DELIMITERS, key=first.count)
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        detail = " ".join(str(err).split())
        raise LabclipError(f"{path}: unreadable as a '{sep}'-separated table ({detail})") from None


def _row_problems(table: pd.DataFrame, files: list[Path], langs: list[str], check_images: bool,
                  line_offset: int = 2) -> list[str]:
    problems: list[str] = []
    first_row: dict[Path, int] = {}
    for (index, row), file in zip(table.iterrows(), files):
        line = int(index) + line_offset
        name = row["image"]
        if not name:
            problems.append(f"row {line}: empty 'image' cell")
        elif file in first_row:
            problems.append(f"row {line}: duplicate image '{name}' (also row {first_row[file]})")
        else:
            first_row[file] = line
            if not file.is_file():
                problems.append(f"row {line}: image '{name}' not found in {file.parent}{_suggestion(name, file)}")
            elif check_images:
                try:
                    load_image(file)
                except LabclipError as err:
                    problems.append(f"row {line}: {err}")
        for lang in langs:
            cell = row[lang]
            if not cell or (isinstance(cell, list) and not all(cell)):
                problems.append(f"row {line}: empty '{lang}' caption")
    return problems


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; a cell is a string or a list of strings (several captions).

    The index is the line number minus one, so problems name the line of the file.
    """
    records, index = [], []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise LabclipError(f"{path}: not UTF-8; save the file as UTF-8") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LabclipError(f"{path}: row {number} is not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise LabclipError(f"{path}: row {number} is not a JSON object")
        for key, value in record.items():
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                continue
            if isinstance(value, (dict, list)):
                raise LabclipError(f"{path}: row {number}, '{key}': expected a caption or a list of captions")
            record[key] = "" if value is None else str(value)
        records.append({str(k).strip().lower(): v for k, v in record.items()})
        index.append(number - 1)
    table = pd.DataFrame.from_records(records, index=index).fillna("")
    if "image" not in table.columns and "file_name" in table.columns:
        table = table.rename(columns={"file_name": "image"})
    return table


def _strip(cell):
    return [c.strip() for c in cell] if isinstance(cell, list) else str(cell).strip()


def flatten_captions(table: pd.DataFrame, language: str,
                     per_image: int | None = None) -> tuple[list[str], np.ndarray]:
    """All captions of one language, in row order, with the row (image) each belongs to.

    A cell holds one caption or a list of captions (JSON Lines sets such as Crossmodal-3600).

    Args:
        table: a caption set from :func:`load_captions`.
        language: its column.
        per_image: keep at most this many captions per image (``1``: the first, as CLIP_benchmark
            evaluates Crossmodal-3600); ``None`` keeps all.

    Returns:
        ``(captions, owner)``: ``owner[c]`` is the row of caption ``c``, as
        :func:`labclip.metrics.retrieval_metrics` takes it.
    """
    cells = [(cell if isinstance(cell, list) else [cell])[:per_image] for cell in table[language]]
    owner = np.repeat(np.arange(len(cells)), [len(c) for c in cells])
    return [caption for cell in cells for caption in cell], owner
