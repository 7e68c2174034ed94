"""Parallel sentences: pairs of captions in two languages from a table or a Hugging Face dataset.

The text map (:mod:`labclip.textmap`) fits on them; :meth:`ParallelText.without` drops the captions
being evaluated from a training corpus.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .atomic import write_atomic
from .config import cache_dir
from .data import problems_error, read_table
from .errors import LabclipError


@dataclass
class ParallelText:
    """Pairs of sentences in two languages; ``groups`` names the image (or row) each pair belongs to."""

    source: list[str]
    target: list[str]
    groups: list[str]
    source_lang: str
    target_lang: str
    origin: str

    def __len__(self) -> int:
        return len(self.source)

    @property
    def sha256(self) -> str:
        """Hash of the pairs and their groups."""
        payload = json.dumps([self.source_lang, self.target_lang, self.source, self.target, self.groups],
                             ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def without(self, texts: Iterable[str]) -> ParallelText:
        """The pairs whose source and target both differ from every one of ``texts`` (case and
        spacing ignored): drop the captions being evaluated from a training corpus."""
        held = {_norm(t) for t in texts}
        keep = [i for i, (s, t) in enumerate(zip(self.source, self.target)) if _norm(s) not in held
                and _norm(t) not in held]
        return ParallelText([self.source[i] for i in keep], [self.target[i] for i in keep],
                            [self.groups[i] for i in keep], self.source_lang, self.target_lang, self.origin)


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split())


def read_parallel(path: str | os.PathLike[str], source_lang: str, target_lang: str) -> ParallelText:
    """Parallel sentences from a CSV/TSV/XLSX/JSON Lines table with a column per language.

    A caption set works as it is (its ``image`` column groups the pairs by image); any other
    table needs a column per language, e.g. ``ru`` and ``en``, and may have an ``image`` column.
    A cell with a list of captions (JSON Lines) is paired with the other language's list element
    by element, up to the shorter list: in sets such as Crossmodal-3600 the captions of one image
    were written separately per language, so such pairs describe the same image rather than
    translate each other.

    Raises:
        LabclipError: one line naming the file and every problem with its row number (header = row 1).
    """
    path = Path(path)
    table = read_table(path, "parallel text file")
    source_lang, target_lang = source_lang.lower(), target_lang.lower()
    missing = [lang for lang in (source_lang, target_lang) if lang not in table.columns]
    if missing:
        raise LabclipError(f"{path}: no {' or '.join(map(repr, missing))} column (columns found: "
                           f"{', '.join(table.columns) or 'none'})")
    if source_lang == target_lang:
        raise LabclipError(f"{path}: source and target language are both {source_lang!r}")
    has_image = "image" in table.columns
    pairs: list[tuple[str, str, str]] = []
    problems: list[str] = []
    for line, values in zip(table.lines, table.rows):
        row = dict(zip(table.columns, values))
        cells = [[str(c).strip() for c in (row[lang] if isinstance(row[lang], list) else [row[lang]])]
                 for lang in (source_lang, target_lang)]
        for lang, cell in zip((source_lang, target_lang), cells):
            if not any(cell):
                problems.append(f"row {line}: empty '{lang}' sentence")
        group = str(row["image"]).strip() if has_image else f"row {line}"
        pairs.extend((s, t, group) for s, t in zip(*cells) if s and t)
    if not table.rows:
        problems.append("no rows below the header")
    if problems:
        raise problems_error(path, problems, most=10)
    source, target, groups = (list(column) for column in zip(*pairs))
    return ParallelText(source, target, groups, source_lang, target_lang, str(path))


def load_parallel_dataset(
    name: str,
    source_lang: str,
    target_lang: str,
    split: str = "train",
    revision: str | None = None,
    limit: int = 20000,
    source_column: str | None = None,
    target_column: str | None = None,
) -> ParallelText:
    """Parallel captions from a Hugging Face dataset, kept as a TSV in labclip's cache.

    Streams the first ``limit`` rows with ``datasets`` (no image download) and reads only the two
    text columns (named after the languages unless given). A cell that is a list (several
    captions per image, e.g. ``romrawinjp/multilingual-coco``) is paired element by element, and
    the pairs of one row share a group. Later calls read the cached TSV, offline too.

    Raises:
        LabclipError: ``datasets`` missing, the hub unreachable with nothing cached, or bad columns.
    """
    src_col, tgt_col = source_column or source_lang, target_column or target_lang
    key = hashlib.sha256(json.dumps([name, revision, split, src_col, tgt_col, limit]).encode()).hexdigest()[:20]
    cached = cache_dir() / "parallel" / f"{key}.tsv"
    if not cached.is_file():
        _download_parallel(name, split, revision, limit, src_col, tgt_col, cached, source_lang, target_lang)
    found = read_parallel(cached, source_lang, target_lang)
    found.origin = f"hf:{name}" + (f"@{revision}" if revision else "") + f":{split}"
    return found


def _download_parallel(name: str, split: str, revision: str | None, limit: int, src_col: str, tgt_col: str,
                       cached: Path, source_lang: str, target_lang: str) -> None:
    from .hub import hub_reachable

    try:
        import datasets
    except ImportError:
        raise LabclipError("reading a Hugging Face dataset needs the 'datasets' package "
                           "(pip install 'labclip[adapt]')") from None
    if not hub_reachable():
        raise LabclipError(f"dataset '{name}' is not in labclip's cache and the Hugging Face hub cannot be "
                           "reached; connect to the network or pass a CSV/TSV of parallel sentences")
    rows: list[tuple[str, str, str]] = []
    try:
        stream = datasets.load_dataset(name, split=split, revision=revision, streaming=True)
        for i, row in enumerate(stream.select_columns([src_col, tgt_col])):
            if len(rows) >= limit:
                break
            src, tgt = row[src_col], row[tgt_col]
            pairs = zip(src, tgt) if isinstance(src, list) and isinstance(tgt, list) else [(src, tgt)]
            rows.extend((f"{i}", str(s), str(t)) for s, t in pairs if str(s).strip() and str(t).strip())
    except Exception as err:  # noqa: BLE001 - any failure of a remote dataset is one user-facing line
        reason = " ".join(str(err).split())[:200]
        raise LabclipError(f"could not read dataset '{name}' ({split}, columns {src_col!r}, {tgt_col!r}): "
                           f"{type(err).__name__}: {reason}") from None
    if not rows:
        raise LabclipError(f"dataset '{name}' ({split}) gave no non-empty {src_col!r}/{tgt_col!r} pairs")

    def write(f: IO[str]) -> None:
        out = csv.writer(f, delimiter="\t", lineterminator="\n")
        out.writerow(["image", source_lang, target_lang])
        out.writerows(rows[:limit])

    write_atomic(cached, write)
