"""Caption sets: one row per image, one column per language, validated before any work starts."""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import IMAGES_DIR
from .errors import LabclipError
from .images import load_image

RESERVED = ("image", "id")
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

    def column(self, name: str) -> list[str]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


@dataclass(frozen=True)
class CaptionSet:
    """A validated caption set: image names, absolute paths and one caption list per language.

    ``captions["en"]`` (or ``captions["image"]``, ``["path"]``, ``["id"]``) gives a column as a list;
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
    attrs: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.attrs["languages"] = self.languages
        self.attrs.setdefault("source", self.source)

    @property
    def languages(self) -> list[str]:
        """The language columns, in file order."""
        return list(self.captions)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, column: str) -> list[Cell]:
        columns = {"image": self.images, "path": self.paths, **({"id": self.ids} if self.ids is not None else {}),
                   **self.captions}
        if column not in columns:
            raise KeyError(column)
        return list(columns[column])

    def select(self, languages: Sequence[str]) -> CaptionSet:
        """The same set with only ``languages``, in that order."""
        missing = [lang for lang in languages if lang not in self.captions]
        if missing:
            raise LabclipError(f"{self.source}: unknown language {', '.join(map(repr, missing))}; "
                               f"the file has: {', '.join(self.languages)}")
        return CaptionSet(self.source, self.images, self.paths, {lang: self.captions[lang] for lang in languages},
                          self.ids, dict(self.attrs))



def load_captions(
    path: str | Path,
    image_dir: str | Path | None = None,
    languages: Sequence[str] | None = None,
    check_images: bool = True,
) -> CaptionSet:
    """Read and validate a caption set.

    The file is CSV (``,`` or ``;``, UTF-8 with or without BOM, any line ends), TSV, XLSX or
    JSON Lines (``.jsonl``, one object per image as in a Hugging Face imagefolder ``metadata.jsonl``:
    ``file_name`` may stand for ``image``, and a language may hold a list of captions).
    It has an ``image`` column with paths relative to ``image_dir``, an optional ``id`` column,
    and one column of captions per language (any other column, e.g. ``en``, ``ru``).

    Args:
        path: the caption file.
        image_dir: folder the ``image`` paths are relative to; defaults to ``data/images``.
        languages: languages that must be present; ``None`` accepts whatever the file has.
        check_images: open every image, so unreadable files are reported now.

    Returns:
        A :class:`CaptionSet`: image names, absolute paths, ids if given, and the captions of each
        language column in file order.

    Raises:
        LabclipError: one line naming the file and listing every problem with its
            spreadsheet row number (the header is row 1).
    """
    path = Path(path)
    image_dir = Path(image_dir) if image_dir is not None else IMAGES_DIR
    table = read_table(path)
    langs = [c for c in table.columns if c not in RESERVED]
    if "image" not in table.columns:
        raise LabclipError(f"{path}: no 'image' column (columns found: {', '.join(table.columns) or 'none'})")
    if not langs:
        raise LabclipError(f"{path}: no language column; add one caption column per language, e.g. 'en', 'ru'")
    missing_langs = [lang for lang in (languages or []) if lang not in langs]
    if missing_langs:
        raise LabclipError(
            f"{path}: unknown language {', '.join(map(repr, missing_langs))}; the file has: {', '.join(langs)}"
        )
    if not table.rows:
        raise LabclipError(f"{path}: no caption rows below the header")

    problems = _row_problems(table, langs, image_dir, check_images)
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise LabclipError(f"{path}: {len(problems)} problem{'s' * (len(problems) > 1)}: {shown}")

    images = table.column("image")
    return CaptionSet(str(path), images, [str((image_dir / name).resolve()) for name in images],
                      {lang: table.column(lang) for lang in langs},
                      table.column("id") if "id" in table.columns else None)


def read_table(path: str | Path, what: str = "caption file") -> Table:
    """Read a CSV (``,`` ``;`` or tab, UTF-8 with or without BOM), TSV, XLSX or JSON Lines file as strings.

    Raises:
        LabclipError: missing or unreadable file, a row that is not UTF-8, or a row with more
            cells than the header; the message names the file and the row.
    """
    path = Path(path)
    if not path.is_file():
        raise LabclipError(f"{path}: {what} not found")
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
    return Table(columns, [(row + [""] * len(columns))[: len(columns)] for _, row in body], [n for n, _ in body])


def _row_problems(table: Table, langs: list[str], image_dir: Path, check_images: bool) -> list[str]:
    problems: list[str] = []
    first_row: dict[str, int] = {}
    known: list[str] | None = None
    for line, cells in zip(table.lines, table.rows):
        row = dict(zip(table.columns, cells))
        name = row["image"]
        if not name:
            problems.append(f"row {line}: empty 'image' cell")
        elif name in first_row:
            problems.append(f"row {line}: duplicate image '{name}' (also row {first_row[name]})")
        else:
            first_row[name] = line
            file = image_dir / name
            if not file.is_file():
                if known is None:
                    known = sorted(str(p.relative_to(image_dir)) for p in image_dir.rglob("*") if p.is_file())
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(f"row {line}: image '{name}' not found in {image_dir}{hint}")
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
