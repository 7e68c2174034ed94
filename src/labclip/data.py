"""Caption sets: one row per image, one column per language, validated before any work starts."""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import shown_names
from .errors import LabclipError, UnknownLanguage
from .images import load_image

IMAGE_COLUMNS = ("image", "file_name")
# A caption column is named by a language tag: ISO 639-1 code, optionally with region or script
# (en, pt-BR, zh_Hans). Other columns (notes, path, ...) are kept and ignored unless ``languages`` names them,
# which is how a three-letter code (Crossmodal-3600's fil, quz) or Indonesian's ``id`` is used.
LANGUAGE_TAG = re.compile(r"[a-z]{2}(?:[-_][a-z0-9]{2,8})*")
NOT_LANGUAGES = ("id",)
# Image identifiers: ``image_id`` (as labclip's prepared benchmarks write it), or ``id`` unless it is a language.
ID_COLUMNS = ("image_id", "id")
DELIMITERS = (",", ";", "\t")


Cell = str | list[str]


@dataclass(frozen=True)
class Table:
    """A spreadsheet as strings: lower-case stripped column names, stripped cells, header excluded.

    A JSON Lines cell may be a list of strings (several captions). ``lines`` holds the row number
    of each data row as the user sees it (the spreadsheet row; the line of a JSON Lines file).
    """

    columns: list[str]
    rows: list[list[Cell]]
    lines: list[int] = field(default_factory=list)

    def column(self, name: str) -> list[Cell]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def strings(self, name: str, path: Path) -> list[str]:
        """A column that must hold one value per row (an image name, an id), not a list.

        Raises:
            LabclipError: naming the file and the first row whose cell is a list.
        """
        cells = self.column(name)
        for line, cell in zip(self.lines, cells):
            if not isinstance(cell, str):
                raise LabclipError(f"{path}: row {line}, '{name}': expected one value, got a list")
        return [str(cell) for cell in cells]


@dataclass(frozen=True)
class CaptionSet:
    """A validated caption set: image names, absolute paths and one caption list per language.

    ``captions["en"]`` (or ``captions["image"]``, ``["path"]``, ``["name"]``, ``["id"]``, or a kept
    non-caption column such as ``["notes"]``) gives a column as a list; ``names`` are what reports show
    (no machine paths);
    ``attrs`` holds ``languages``, ``source`` and whatever a loader adds (e.g. ``benchmark``);
    the lab layer turns the whole set into a DataFrame (:func:`labclip.lab.tables.captions_frame`).
    A caption cell is a string, or a list of strings when a JSON Lines set gives several captions
    per image (see :func:`flatten_captions`).
    """

    source: str
    images: list[str]
    paths: list[str]
    captions: dict[str, list[Cell]]
    ids: list[str] | None = field(default=None)
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    names: list[str] | None = field(default=None)
    extra: dict[str, list[Cell]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.names is None:
            object.__setattr__(self, "names", short_names(self.paths))
        self.attrs["languages"] = self.languages
        self.attrs.setdefault("source", self.source)

    @property
    def languages(self) -> list[str]:
        """The language columns, in file order."""
        return list(self.captions)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def id_name(self) -> str:
        """The column that holds :attr:`ids`: ``id``, or ``image_id`` where ``id`` is Indonesian."""
        return "image_id" if "id" in self.captions else "id"

    def __getitem__(self, column: str) -> list[Cell]:
        columns: dict[str, Sequence[Cell]] = {
            **self.extra, "image": self.images, "path": self.paths, "name": self.names or [],
            **({self.id_name: self.ids} if self.ids is not None else {}), **self.captions}
        if column not in columns:
            raise KeyError(column)
        return list(columns[column])


def language_columns(columns: Sequence[str]) -> list[str]:
    """The columns of a caption or labels file named by a language code (``en``, ``pt-br``), in file order."""
    return [c for c in columns if c not in ("image", *NOT_LANGUAGES) and LANGUAGE_TAG.fullmatch(c)]


def load_captions(
    path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    languages: Sequence[str] | None = None,
    check_images: bool = True,
) -> CaptionSet:
    """Read and validate a caption set.

    The file is CSV (``,`` or ``;``, UTF-8 with or without BOM, any line ends), TSV, XLSX or
    JSON Lines (``.jsonl``, one object per image as in a Hugging Face imagefolder ``metadata.jsonl``;
    a language may hold a list of captions).
    It has an ``image`` column (or ``file_name``, as in Hugging Face ``imagefolder`` metadata)
    whose relative paths are resolved against the caption file's own folder (absolute paths are
    used as they are), an optional ``image_id`` or ``id`` column, and one column of captions per language
    named by its two-letter code (``en``, ``ru``, ``pt-BR``). Other columns are kept and ignored (``path`` and
    ``name`` columns as ``path.1`` and ``name.1``); ``languages`` may name any of them, e.g. ``fil`` or
    ``id`` (Indonesian; the ids then come from ``image_id``).

    Args:
        path: the caption file.
        image_dir: folder the relative image paths are resolved against instead of the caption
            file's folder.
        languages: caption columns to use, which must be present (any column name may be given);
            ``None`` uses every column named by a language code.
        check_images: open every image, so unreadable files are reported now.

    Returns:
        A :class:`CaptionSet`: image names as written, absolute paths, the names reports show (each
        path relative to the folder that holds all images), ids if given, the captions of each
        language column in file order, and any other columns (``extra``).

    Raises:
        LabclipError: one line naming the file and listing every problem with its
            spreadsheet row number (the header is row 1).
    """
    path = Path(path)
    base = Path(image_dir) if image_dir is not None else path.parent
    table, langs = _caption_columns(path, read_table(path), languages)
    images = table.strings("image", path)
    files = [_resolve(base, name) for name in images]
    problems = _row_problems(table, files, langs, check_images)
    if problems:
        raise problems_error(path, problems)

    ids = next((c for c in ID_COLUMNS if c in table.columns and c not in langs), None)
    extra = {c: table.column(c) for c in table.columns if c not in ("image", ids, *langs)}
    return CaptionSet(str(path), images, [str(f) for f in files],
                      {lang: table.column(lang) for lang in langs},
                      table.strings(ids, path) if ids else None,
                      names=short_names([base.absolute() / name for name in images], base), extra=extra)


def _caption_columns(path: Path, table: Table, languages: Sequence[str] | None) -> tuple[Table, list[str]]:
    """The table with its image column named ``image`` (and a file's own ``path``/``name`` kept as
    ``path.1``/``name.1``, since labclip adds those), and the language columns to use."""
    column = next((c for c in IMAGE_COLUMNS if c in table.columns), None)
    if column is None:
        raise LabclipError(f"{path}: no 'image' (or 'file_name') column "
                           f"(columns found: {', '.join(table.columns) or 'none'})")
    renames = {column: "image", "path": "path.1", "name": "name.1"}
    table = Table([renames.get(c, c) for c in table.columns], table.rows, table.lines)
    found = language_columns(table.columns)
    missing_langs = [lang for lang in (languages or []) if lang not in table.columns]
    if missing_langs:
        has = ", ".join(found) or f"no language column (columns found: {', '.join(table.columns)})"
        raise UnknownLanguage(f"{path}: unknown language {', '.join(map(repr, missing_langs))}; the file has: {has}",
                              found)
    langs = list(languages) if languages else found
    if not langs:
        raise LabclipError(f"{path}: no language column; add one caption column per language named by its code, "
                           f"e.g. 'en', 'ru' (columns found: {', '.join(table.columns)})")
    if not table.rows:
        raise LabclipError(f"{path}: no caption rows below the header")
    return table, langs


def problems_error(path: str | os.PathLike[str], problems: Sequence[str], most: int = 20) -> LabclipError:
    """One line naming the file, the number of problems and the first ``most`` of them."""
    shown = "; ".join(problems[:most]) + (f"; and {len(problems) - most} more" if len(problems) > most else "")
    return LabclipError(f"{path}: {len(problems)} problem{'s' * (len(problems) > 1)}: {shown}")


def _resolve(base: Path, name: str) -> Path:
    """The file a cell names, symlinks followed; as written when they can't be (a loop, a NUL byte)."""
    path = base / name if name else base
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return Path(os.path.normpath(path.absolute()))


def short_names(files: Sequence[str | os.PathLike[str]], base: str | os.PathLike[str] | None = None) -> list[str]:
    """The names reports show for image files (:func:`labclip.config.shown_names`): no machine paths."""
    return shown_names(files, base)


def _suggestion(name: str, file: Path) -> str:
    """``; did you mean '...'?`` naming the closest file in the folder the missing one was looked for in."""
    siblings = [p.name for p in file.parent.iterdir() if p.is_file()] if file.parent.is_dir() else []
    close = difflib.get_close_matches(file.name, siblings, n=1, cutoff=0.5)
    return f"; did you mean '{name[: len(name) - len(file.name)]}{close[0]}'?" if close else ""


def read_table(path: str | os.PathLike[str], what: str = "caption file") -> Table:
    """Read a CSV (``,`` ``;`` or tab, UTF-8 with or without BOM), TSV, XLSX or JSON Lines file as strings.

    Raises:
        LabclipError: missing or unreadable file, a row that is not UTF-8, or a row with more
            cells than the header; the message names the file and the row.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise LabclipError(f"{path}: {what} is a broken link or a symlink loop")
    if not path.is_file():
        raise LabclipError(f"{path}: {what} not found")
    try:
        return _read_table(path)
    except OSError as err:
        raise LabclipError(f"{path}: cannot read the {what} ({err.strerror or type(err).__name__})") from None


def _read_table(path: Path) -> Table:
    suffix = path.suffix.lower()
    if _is_jsonl(path):
        return _read_jsonl(path)
    if suffix in (".xlsx", ".xlsm"):
        return _table(path, _read_xlsx(path))
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
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    except csv.Error as err:
        raise LabclipError(f"{path}: unreadable as a '{sep}'-separated table ({err})") from None
    return _table(path, rows)


def _read_xlsx(path: Path) -> list[list[str]]:
    try:
        import openpyxl
    except ImportError:
        raise LabclipError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl)") from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            return [["" if v is None else str(v) for v in row] for row in book.worksheets[0].iter_rows(values_only=True)]
        finally:
            book.close()
    except Exception as err:  # noqa: BLE001 - a broken workbook is a user error
        raise LabclipError(f"{path}: unreadable spreadsheet ({type(err).__name__}: {err})") from None


def _table(path: Path, rows: list[list[str]]) -> Table:
    """Header and data rows (row 1 is the header); blank lines and empty spreadsheet rows are dropped,
    short rows padded."""
    blank = (lambda row: not any(c.strip() for c in row)) if path.suffix.lower() in (".xlsx", ".xlsm") \
        else (lambda row: len(row) <= 1 and not "".join(row).strip())
    numbered = [(n, [cell.strip() for cell in row]) for n, row in enumerate(rows, start=1) if not blank(row)]
    if not numbered:
        return Table([], [], [])
    (_, header), body = numbered[0], numbered[1:]
    columns = [c.lower() for c in header]
    for n, row in body:
        if len(row) > len(columns) and any(row[len(columns):]):
            raise LabclipError(f"{path}: row {n} has {len(row)} cells but the header has {len(columns)}")
    padded: list[list[Cell]] = [list((row + [""] * len(columns))[: len(columns)]) for _, row in body]
    return Table(columns, padded, [n for n, _ in body])


def _row_problems(table: Table, files: list[Path], langs: list[str], check_images: bool) -> list[str]:
    problems: list[str] = []
    first_row: dict[Path, int] = {}
    for line, cells, file in zip(table.lines, table.rows, files):
        row = dict(zip(table.columns, cells))
        name = str(row["image"])  # a list was refused by Table.strings
        if not name:
            problems.append(f"row {line}: empty 'image' cell")
        elif file in first_row:
            problems.append(f"row {line}: duplicate image '{name}' (also row {first_row[file]})")
        else:
            first_row[file] = line
            if "\0" in name:
                problems.append(f"row {line}: image name {name!r} holds a NUL byte")
            elif file.is_symlink() and not file.exists():
                problems.append(f"row {line}: image '{name}' is a broken link or a symlink loop")
            elif not file.is_file():
                problems.append(f"row {line}: image '{name}' not found in {file.parent}{_suggestion(name, file)}")
            elif check_images:
                try:
                    load_image(file)
                except LabclipError as err:
                    problems.append(f"row {line}: image '{name}': {str(err).removeprefix(f'{file}: ')}")
        for lang in langs:
            cell = row[lang]
            if not cell or (isinstance(cell, list) and not all(cell)):
                problems.append(f"row {line}: empty '{lang}' caption")
    return problems


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def _read_jsonl(path: Path) -> Table:
    """One JSON object per line; a cell is a string or a list of strings (several captions).

    Rows are numbered by their line in the file.
    """
    records, lines = [], []
    try:
        text = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise LabclipError(f"{path}: not UTF-8; save the file as UTF-8") from None
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LabclipError(f"{path}: row {number} is not valid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            raise LabclipError(f"{path}: row {number} is nested too deeply to be a caption row") from None
        except ValueError as err:  # e.g. an integer of more digits than Python converts
            raise LabclipError(f"{path}: row {number} is not usable JSON ({' '.join(str(err).split())[:120]})") from None
        if not isinstance(record, dict):
            raise LabclipError(f"{path}: row {number} is not a JSON object")
        for key, value in record.items():
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                record[key] = [v.strip() for v in value]
                continue
            if isinstance(value, (dict, list)):
                raise LabclipError(f"{path}: row {number}, '{key}': expected a caption or a list of captions")
            record[key] = "" if value is None else str(value).strip()
        records.append({str(k).strip().lower(): v for k, v in record.items()})
        lines.append(number)
    columns = list(dict.fromkeys(key for record in records for key in record))
    if "image" not in columns and "file_name" in columns:
        records = [{("image" if k == "file_name" else k): v for k, v in r.items()} for r in records]
        columns = ["image" if c == "file_name" else c for c in columns]
    return Table(columns, [[r.get(c, "") for c in columns] for r in records], lines)


def flatten_captions(table: CaptionSet, language: str, per_image: int | None = None) -> tuple[list[str], np.ndarray]:
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
