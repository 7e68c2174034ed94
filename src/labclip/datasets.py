"""Standard multilingual retrieval benchmarks as labclip caption sets.

:func:`prepare` turns a benchmark's published files into a folder that :func:`labclip.load_captions`
reads: ``captions.jsonl`` (one object per image: ``image_id``, ``file_name``, Crossmodal-3600's ``image/locale`` as
``region``, one key per language, by the
code the benchmark publishes (``id`` is Indonesian, ``fil`` Filipino), holding a caption or a list of
captions), ``images/``, ``LICENSE`` and ``SOURCE.json`` (which lists the languages; :func:`read_prepared`
reads a folder with them). The files come from the
publishers' URLs on first use, or from a local copy passed as ``source=``; both go through the same
parsing. The folder is built beside its final place and renamed into it, so it is complete or absent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .atomic import write_text
from .config import cache_dir
from .errors import LabclipError

CAPTIONS_FILE = "captions.jsonl"
SOURCE_FILE = "SOURCE.json"
LICENSE_FILE = "LICENSE"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Benchmark:
    """What a report must say about a benchmark: what it is, where it comes from, what it may be used for."""

    name: str
    title: str
    homepage: str
    languages: tuple[str, ...]
    captions_licence: str
    images_licence: str
    noncommercial: bool
    citation: str


XM3600 = Benchmark(
    name="xm3600",
    title="Crossmodal-3600 (3,600 images, human captions in 36 languages)",
    homepage="https://google.github.io/crossmodal-3600/",
    languages=("ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hr", "hu",
               "id", "it", "ja", "ko", "mi", "nl", "no", "pl", "pt", "quz", "ro", "ru", "sv", "sw", "te", "th",
               "tr", "uk", "vi", "zh"),
    captions_licence="CC BY 4.0 (Google LLC), https://creativecommons.org/licenses/by/4.0/",
    images_licence="Open Images photos from Flickr; each image's licence and author are in image_attributions.csv",
    noncommercial=False,
    citation="Thapliyal, Pont-Tuset, Chen and Soricut. Crossmodal-3600: A Massively Multilingual Multimodal "
             "Evaluation Dataset. EMNLP 2022.",
)
XTD10 = Benchmark(
    name="xtd10",
    title="XTD10 (1,000 MSCOCO 2014 images, one caption in each of 11 languages)",
    homepage="https://github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10",
    languages=("de", "en", "es", "fr", "it", "ja", "ko", "pl", "ru", "tr", "zh"),
    captions_licence="Adobe Research License: noncommercial research and teaching only (LICENSE.md upstream); "
                     "de and fr come from MIC, ja from STAIR Captions, en from COCO Captions",
    images_licence="MSCOCO 2014 images from Flickr, each under its own licence (COCO terms of use)",
    noncommercial=True,
    citation="Aggarwal and Kale. Towards Zero-shot Cross-lingual Image Retrieval. arXiv:2012.05107, 2020.",
)
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (XM3600, XTD10)}

XM3600_URLS = {
    "captions.zip": "https://google.github.io/crossmodal-3600/web-data/captions.zip",
    "images.tgz": "https://open-images-dataset.s3.amazonaws.com/crossmodal-3600/images.tgz",
    "image_attributions.csv": "https://google.github.io/crossmodal-3600/web-data/image_attributions.csv",
}
XTD10_COMMIT = "d77ff16148468c84287f3efcbf602a015c5e4954"
XTD10_URL = f"https://raw.githubusercontent.com/adobe-research/Cross-lingual-Test-Dataset-XTD10/{XTD10_COMMIT}"
# Where each published XTD10 caption file lives in its repository, and the language code it uses.
XTD10_FILES = {lang: f"XTD10/test_1kcaptions_{lang}.txt" for lang in ("en", "es", "it", "ko", "pl", "ru", "tr", "zh")}
XTD10_FILES |= {"de": "MIC/test_1kcaptions_de.txt", "fr": "MIC/test_1kcaptions_fr.txt",
                "jp": "STAIR/test_1kcaptions_jp.txt"}
XTD10_LANGUAGE_CODES = {"jp": "ja"}  # XTD10 writes Japanese as "jp"; labclip uses ISO 639-1 like Crossmodal-3600
XTD10_IMAGE_LIST = "XTD10/test_image_names.txt"
COCO_IMAGES_URL = "http://images.cocodataset.org"


def prepare(name: str, source: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
            root: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Build a benchmark's caption-set folder once and return its ``captions.jsonl``.

    Args:
        name: ``"xm3600"`` or ``"xtd10"`` (see :data:`BENCHMARKS`).
        source: a folder holding the published files instead of downloading them. Crossmodal-3600:
            ``captions.jsonl`` or ``captions.zip``, and ``images.tgz`` or the ``<key>.jpg`` files
            (any depth), optionally ``image_attributions.csv``. XTD10: ``test_image_names.txt`` and
            ``test_1kcaptions_<lang>.txt`` (any depth, e.g. a clone of the repository), optionally
            ``LICENSE.md`` and the COCO images.
        images: a folder with the images when they are not in ``source``. XTD10: the COCO 2014
            images (``train2014/``, ``val2014/`` or flat); missing ones are downloaded one by one
            from images.cocodataset.org.
        root: where benchmark folders live; defaults to ``<labclip cache>/datasets``.
        force: rebuild even when the folder exists.

    Returns:
        Path of the folder's ``captions.jsonl``; pass its folder as ``image_dir`` to
        :func:`labclip.load_captions`, or use :func:`load`.

    Raises:
        LabclipError: unknown benchmark, files missing or malformed, or a download failed
            (offline: the message says which URL and how to pass a local copy).
    """
    benchmark = _benchmark(name)
    base = Path(root) if root is not None else cache_dir() / "datasets"
    target = base / benchmark.name
    if (target / CAPTIONS_FILE).is_file() and not force:
        return target / CAPTIONS_FILE
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{benchmark.name}-", dir=base))
    try:
        build = _build_xm3600 if benchmark is XM3600 else _build_xtd10
        build(staging / "out", Path(source) if source is not None else None,
              Path(images) if images is not None else None, staging / "download")
        _publish(staging / "out", target, staging / "old")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / CAPTIONS_FILE


def load(name: str, languages: Sequence[str] | None = None, check_images: bool = False, **kwargs):
    """:func:`prepare` a benchmark, then read it with :func:`read_prepared`.

    Args:
        name: benchmark name.
        languages: languages that must be present (``None``: all, by their published codes).
        check_images: decode every image now (slow for thousands).
        **kwargs: passed to :func:`prepare`.

    Returns:
        The :class:`labclip.data.CaptionSet`; ``attrs["benchmark"]`` holds the :class:`Benchmark`.
    """
    return read_prepared(prepare(name, **kwargs), languages, check_images)


def read_prepared(path: str | os.PathLike, languages: Sequence[str] | None = None, check_images: bool = False):
    """Read a caption set, taking its languages from the ``SOURCE.json`` beside it when there is one.

    A prepared benchmark lists its languages by their published codes, three-letter ones and Indonesian's
    ``id`` included, which a caption file's columns alone would not offer (:data:`labclip.data.LANGUAGE_TAG`).

    Args:
        path: a prepared folder or its ``captions.jsonl`` (or any caption file).
        languages: languages that must be present; ``None``: those ``SOURCE.json`` lists, else the file's.
        check_images: decode every image now (slow for thousands).

    Returns:
        The :class:`labclip.data.CaptionSet`, images resolved against the file's folder;
        ``attrs["benchmark"]`` holds the :class:`Benchmark` that ``SOURCE.json`` names, if any.
    """
    from .data import load_captions

    path = Path(path)
    if path.is_dir():
        path = path / CAPTIONS_FILE
    source = path.parent / SOURCE_FILE
    recorded = {}
    if source.is_file():
        try:
            recorded = json.loads(source.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise LabclipError(f"{source}: not valid JSON; delete the folder and prepare it again") from None
    declared = recorded.get("languages") if isinstance(recorded, dict) else None
    if languages is None and isinstance(declared, list) and all(isinstance(x, str) for x in declared):
        languages = declared
    table = load_captions(path, image_dir=path.parent, languages=languages, check_images=check_images)
    benchmark = BENCHMARKS.get(str(recorded.get("benchmark") or "").lower()) if isinstance(recorded, dict) else None
    if benchmark is not None:
        table.attrs["benchmark"] = benchmark
    return table


def _benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise LabclipError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def _publish(built: Path, target: Path, trash: Path) -> None:
    """Rename the finished folder into place; an older copy is moved aside first and removed after."""
    if target.exists():
        os.replace(target, trash)
    try:
        os.replace(built, target)
    except OSError:
        if not (target / CAPTIONS_FILE).is_file():  # another process won the race with a complete copy
            raise


# ---- Crossmodal-3600 ----

def _build_xm3600(out: Path, source: Path | None, images: Path | None, download: Path) -> None:
    if source is None:
        source = download
        for file, url in XM3600_URLS.items():
            _download(url, source / file, XM3600, hint="pass source= a folder with the published files")
    retrieved = "local copy" if source != download else list(XM3600_URLS.values())
    rows = [json.loads(line) for line in _xm3600_caption_lines(source) if line.strip()]
    keys = [_xm3600_key(row, n) for n, row in enumerate(rows, start=1)]
    (out / "images").mkdir(parents=True)
    found = _copy_images(_xm3600_image_files(source if images is None else images), set(keys), out / "images")
    _require_images(keys, found, XM3600, source)
    languages = list(dict.fromkeys(k for row in rows for k, v in row.items() if isinstance(v, dict) and "caption" in v))
    records = []
    for line, (key, row) in enumerate(zip(keys, rows), start=1):
        record: dict[str, Any] = {"image_id": key, "file_name": f"images/{key}.jpg"}
        if isinstance(row.get("image/locale"), str) and row["image/locale"]:
            record["region"] = row["image/locale"]  # where the image was taken (labclip.cultures)
        for lang in languages:
            cell = row.get(lang, {})
            captions = cell.get("caption", []) if isinstance(cell, dict) else None
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise LabclipError(f"captions.jsonl line {line}: '{lang}' captions are not a list of strings")
            record[lang] = captions
        records.append(record)
    attributions = _find(source, "image_attributions.csv")
    if attributions is not None:
        shutil.copyfile(attributions, out / "image_attributions.csv")
    _write_outputs(out, XM3600, records, languages, retrieved, licence_text=None)


def _xm3600_caption_lines(source: Path) -> list[str]:
    jsonl = _find(source, "captions.jsonl")
    if jsonl is not None:
        return jsonl.read_text(encoding="utf-8-sig").splitlines()
    archive = _find(source, "captions.zip")
    if archive is None:
        raise LabclipError(f"{source.name}: no captions.jsonl or captions.zip (Crossmodal-3600's caption file)")
    try:
        with zipfile.ZipFile(archive) as z:
            member = next((m for m in z.namelist() if Path(m).name == "captions.jsonl"), None)
            if member is None:
                raise LabclipError(f"{archive.name}: holds no captions.jsonl")
            return z.read(member).decode("utf-8-sig").splitlines()
    except zipfile.BadZipFile:
        raise LabclipError(f"{archive.name}: not a zip archive (an interrupted download?)") from None


def _xm3600_key(row: dict, line: int) -> str:
    key = row.get("image/key") if isinstance(row, dict) else None
    if not isinstance(key, str) or not key or Path(key).name != key:
        raise LabclipError(f"captions.jsonl line {line}: no valid 'image/key'")
    return key


def _xm3600_image_files(source: Path) -> Iterator[tuple[str, IO[bytes] | Path]]:
    """(key, file) for every ``<key>.jpg`` in a folder or in ``images.tgz`` (read member by member)."""
    archive = _find(source, "images.tgz")
    if archive is None:
        for path in source.rglob("*.jpg"):
            yield path.stem, path
        return
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() and member.name.endswith(".jpg") else None
                if handle is not None:
                    yield Path(member.name).stem, handle
    except tarfile.TarError as err:
        raise LabclipError(f"{archive.name}: unreadable archive ({err}); delete it and download again") from None


# ---- XTD10 ----

def _build_xtd10(out: Path, source: Path | None, images: Path | None, download: Path) -> None:
    if source is None:
        source = download
        for file in (XTD10_IMAGE_LIST, *XTD10_FILES.values(), "LICENSE.md"):
            _download(f"{XTD10_URL}/{file}", source / file, XTD10,
                      hint="pass source= a folder with the published files (a clone of the repository)")
    retrieved = "local copy" if source != download else f"{XTD10_URL} (commit {XTD10_COMMIT})"
    names_file = _find(source, Path(XTD10_IMAGE_LIST).name)
    if names_file is None:
        raise LabclipError(f"{source.name}: no test_image_names.txt (XTD10's image list)")
    names = _lines(names_file)
    captions: dict[str, list[str]] = {}
    for code, file in XTD10_FILES.items():
        path = _find(source, Path(file).name)
        if path is None:
            continue
        lines = _lines(path)
        if len(lines) != len(names):
            raise LabclipError(f"{path.name}: {len(lines)} captions for {len(names)} images in test_image_names.txt")
        captions[XTD10_LANGUAGE_CODES.get(code, code)] = lines
    if not captions:
        raise LabclipError(f"{source.name}: no test_1kcaptions_<language>.txt files (XTD10's captions)")
    (out / "images").mkdir(parents=True)
    wanted = set(names)
    local = [p for folder in (images, source) if folder is not None for p in folder.rglob("*.jpg")]
    found = _copy_images(((p.name, p) for p in local), wanted, out / "images")
    for name in sorted(wanted - found):
        split = "train2014" if "_train2014_" in name else "val2014"
        _download(f"{COCO_IMAGES_URL}/{split}/{name}", out / "images" / name, XTD10, what="COCO image",
                  hint="pass images= a folder with the COCO 2014 train and val images")
        found.add(name)
    _require_images(names, found, XTD10, source)
    languages = [lang for lang in XTD10.languages if lang in captions]
    records = [{"image_id": Path(name).stem, "file_name": f"images/{name}",
                **{lang: captions[lang][i] for lang in languages}}
               for i, name in enumerate(names)]
    licence = _find(source, "LICENSE.md")
    _write_outputs(out, XTD10, records, languages, retrieved,
                   licence_text=licence.read_text(encoding="utf-8") if licence else None)


def _lines(path: Path) -> list[str]:
    """Lines of a published text file: UTF-8 with or without BOM, LF or CRLF, with or without a last newline."""
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]


# ---- shared ----

def _find(folder: Path, name: str) -> Path | None:
    direct = folder / name
    if direct.is_file():
        return direct
    return next((p for p in sorted(folder.rglob(name)) if p.is_file()), None)


def _copy_images(files, wanted: set[str], dest: Path) -> set[str]:
    """Copy the wanted images (by key or file name) into ``dest``; return what was found."""
    found: set[str] = set()
    for key, file in files:
        if key not in wanted or key in found:
            continue
        name = key if key.endswith(".jpg") else f"{key}.jpg"
        if isinstance(file, Path):
            shutil.copyfile(file, dest / name)
        else:
            with open(dest / name, "wb") as f:
                shutil.copyfileobj(file, f)
        found.add(key)
    return found


def _require_images(keys: Sequence[str], found: set[str], benchmark: Benchmark, source: Path) -> None:
    missing = [k for k in keys if k not in found]
    if missing:
        raise LabclipError(f"{benchmark.name}: {len(missing)} of {len(keys)} images missing from {source.name} "
                           f"(first: {missing[0]}); pass the complete image files")


def _download(url: str, dest: Path, benchmark: Benchmark, hint: str, what: str = "file") -> None:
    """Stream ``url`` into ``dest`` (through a temporary name); one-line LabclipError when it fails."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(partial, "wb") as f, tqdm(
            total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
            desc=f"{benchmark.name}: {dest.name}", disable=what != "file",
        ) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
        os.replace(partial, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err or type(err).__name__
        raise LabclipError(f"cannot download {benchmark.name} {what} {url} ({reason}); "
                           f"connect to the network or {hint}") from None


def _write_outputs(out: Path, benchmark: Benchmark, records: list[dict], languages: list[str],
                   retrieved, licence_text: str | None) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_text(out / CAPTIONS_FILE, body)
    counts = {lang: sum(len(r[lang]) if isinstance(r[lang], list) else 1 for r in records) for lang in languages}
    write_text(out / SOURCE_FILE, json.dumps({
        "benchmark": benchmark.name,
        "title": benchmark.title,
        "homepage": benchmark.homepage,
        "retrieved_from": retrieved,
        "retrieved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": len(records),
        "captions": counts,
        "languages": languages,
        "captions_licence": benchmark.captions_licence,
        "images_licence": benchmark.images_licence,
        "noncommercial": benchmark.noncommercial,
        "citation": benchmark.citation,
        "captions_sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
    }, ensure_ascii=False, indent=2) + "\n")
    notice = [f"{benchmark.title}", f"Source: {benchmark.homepage}", f"Captions: {benchmark.captions_licence}",
              f"Images: {benchmark.images_licence}", f"Cite: {benchmark.citation}"]
    if benchmark.noncommercial:
        notice.insert(1, "NONCOMMERCIAL RESEARCH USE ONLY: do not use this set for commercial purposes.")
    if licence_text:
        notice += ["", "Upstream licence text follows.", "", licence_text]
    write_text(out / LICENSE_FILE, "\n".join(notice).rstrip() + "\n")
