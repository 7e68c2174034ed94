"""``labclip embed DIR --out EMB``: the embedding of every image under a folder, as Parquet shards.

Resumable: a rerun embeds only the files whose path and content hash no shard holds yet (a changed file is
embedded again and its old row dropped). Each shard is written whole or not at all. ``--engine ray`` runs the
same pipeline on Ray Data (:mod:`labclip.embed_ray`) and writes the same shards.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np

from . import __version__
from .bulk import DECODES, DEFAULT_DECODE, Plan, batches, plan, read_bytes, record
from .cache import sha256_bytes
from .config import shown_path
from .errors import LabclipError, at_least
from .images import IMAGE_SUFFIXES
from .precision import PRECISIONS
from .registry import DEFAULT_MODEL
from .shards import (
    Identity,
    check_identity,
    drop_rows,
    existing,
    next_index,
    shard_name,
    table,
    write_provenance,
    write_shard,
)
from .spec import shown_revision

SHARD_ROWS = 1024
ENGINES = ("local", "ray")
Write = Callable[[Sequence[int], np.ndarray], None]


def add_parser(subparsers) -> None:
    """Register ``labclip embed`` on the ``labclip`` command's subparsers."""
    p = subparsers.add_parser("embed", help="embed every image of a folder into Parquet shards (resumable)",
                              description="Write the embedding of every image under a folder to Parquet shards "
                              "(EMB/part-NNNNN.parquet) with the run's provenance (EMB/embed.json). A rerun embeds "
                              "only new or changed files.")
    p.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, required=True, metavar="EMB", help="folder of the shards (required)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="hub id, alias, local directory or 'demo'")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=PRECISIONS, help="fp32, bf16, fp16 or auto (default: auto, bulk work)")
    p.set_defaults(precision_default_for="embed")
    p.add_argument("--batch-size", type=_positive, metavar="N", help="images per forward pass (default: 32)")
    add_decode_option(p)
    p.add_argument("--workers", type=_natural, metavar="N",
                   help="decoding processes (default: one per core, beside an encoder thread per core; 0: decode "
                        "in this process)")
    p.add_argument("--shard-rows", type=_positive, default=SHARD_ROWS, metavar="N", help="images per shard")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: worker processes on this machine; ray: Ray Data (pip install 'labclip[ray]')")
    p.add_argument("--address", help="with --engine ray: the address of a running Ray cluster (default: start a "
                   "local Ray instance on this machine's cores)")


def add_decode_option(p: argparse.ArgumentParser) -> None:
    """``--decode`` of the bulk commands (``tag``, ``search``, ``embed``)."""
    p.add_argument("--decode", choices=DECODES, default=DEFAULT_DECODE,
                   help="draft: JPEGs decoded at a reduced DCT scale (at least twice the model's input) before "
                        "OpenAI's resize, in worker processes; exact: full-size decoding (OpenAI's preprocessing)")


def _positive(text: str) -> int:
    try:
        return at_least(text, 1, "N")
    except LabclipError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _natural(text: str) -> int:
    try:
        return at_least(text, 0, "N")
    except LabclipError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def listing(folder: Path) -> list[tuple[str, Path]]:
    """``(POSIX path relative to folder, path)`` of every image file under ``folder``, sorted by the former.

    Raises:
        LabclipError: no such folder, or no image in it.
    """
    if not folder.is_dir():
        raise LabclipError(f"{folder}: no such folder")
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LabclipError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def check_headers(files: Sequence[Path]) -> None:
    """Every file opens as an image (its header only; a truncated body still fails later, naming the file)."""
    from PIL import Image, UnidentifiedImageError

    for path in files:
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            detail = "not an image file Pillow can read" if isinstance(err, UnidentifiedImageError) else \
                " ".join(str(err).split())[:160]
            raise LabclipError(f"{path}: {detail}") from None


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise LabclipError(f"{out}: --out must be a folder (it is a file)")


@dataclass
class Writer:
    """Writes the shards of one run: rows by their position in ``names``/``hashes``."""

    out: Path
    identity: Identity
    names: list[str]
    hashes: list[str]
    written: list[str] = field(default_factory=list)

    def __call__(self, rows: Sequence[int], vectors: np.ndarray) -> None:
        name = shard_name(next_index(self.out))
        write_shard(self.out / name, table([self.names[i] for i in rows], [self.hashes[i] for i in rows],
                                           self.identity, vectors))
        self.written.append(name)


def embed_local(model, files: Sequence[Path], write: Write, decode: str = DEFAULT_DECODE, run: Plan | None = None,
                batch_size: int | None = None, shard_rows: int = SHARD_ROWS, progress: bool | None = None) -> None:
    """Encode ``files`` with the bulk pipeline (:func:`labclip.bulk.batches`) and hand every ``shard_rows``
    consecutive rows (positions in ``files``, embeddings) to ``write``; the last shard may be smaller."""
    rows: list[int] = []
    vectors: list[np.ndarray] = []
    for positions, encoded in batches(model, files, decode, run, batch_size, progress):
        rows += positions
        vectors.append(encoded)
        while len(rows) >= shard_rows:
            stacked = np.concatenate(vectors)
            write(rows[:shard_rows], stacked[:shard_rows])
            rows, vectors = rows[shard_rows:], [stacked[shard_rows:]]
    if rows:
        write(rows, np.concatenate(vectors))


def _load(args):
    from .model import load_model

    model = load_model(args.model, device=args.device, cache=False, precision=args.precision,
                       default_for=args.precision_default_for)
    if model.untrained:
        print(f"labclip: note: '{args.model}' is an untrained model; its embeddings mean nothing", file=sys.stderr)
    return model


def _engine(args, model, files: list[Path], write: Write, run: Plan) -> None:
    if args.engine == "local":
        embed_local(model, files, write, args.decode, run, args.batch_size, args.shard_rows)
        return
    from .embed_ray import embed_ray

    loader = partial(_reload, args.model, args.device, model.precision.name)
    embed_ray(loader, model.preprocess, files, write, args.decode, batch_size=args.batch_size or model.image_batch_size,
              shard_rows=args.shard_rows, address=args.address, workers=run.workers, threads=1, actors=run.threads,
              model_bytes=sum(t.numel() * t.element_size() for t in model.model.parameters()))


def _reload(name: str, device: str, precision: str):
    """The encoder a Ray actor loads once: the driver's model in the driver's resolved precision."""
    from .model import load_model

    return load_model(name, device=device, cache=False, precision=precision)


def run(args: argparse.Namespace) -> None:
    """``labclip embed``: list and check the images, load the model, embed what no shard holds, record the run."""
    started = time.perf_counter()
    check_out(args.out)
    files = listing(args.folder)
    check_headers([p for _, p in files])
    model = _load(args)
    identity = Identity(model.name, shown_revision(model.revision) or "", model.precision.name, args.decode)
    found = existing(args.out)
    check_identity(args.out, found.identity, identity)
    hashes = [sha256_bytes(read_bytes(p)) for _, p in files]
    todo = [i for i, (name, _) in enumerate(files) if found.done.get(name, ("",))[0] != hashes[i]]
    stale = {files[i][0] for i in todo if files[i][0] in found.done}
    if len(todo) < len(files):
        print(f"labclip: {len(files) - len(todo)} of {len(files)} images already in {args.out}", file=sys.stderr)
    writer = Writer(args.out, identity, [files[i][0] for i in todo], [hashes[i] for i in todo])
    cpu = plan(workers=args.workers)
    if todo:
        _engine(args, model, [files[i][1] for i in todo], writer, cpu)
    for shard in sorted({found.done[name][1] for name in stale}):
        drop_rows(shard, stale)
    write_provenance(args.out, _provenance(args, model, identity, cpu, len(files), writer, started))
    print(f"labclip: embedded {len(todo)} images into {len(writer.written)} shards in {args.out} "
          f"({len(files)} images listed)", file=sys.stderr)


def _provenance(args, model, identity: Identity, cpu: Plan, listed: int, writer: Writer, started: float) -> dict:
    from .model import describe

    return {
        "command": "embed", "labclip": __version__,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "folder": shown_path(args.folder), "images": listed, "embedded": len(writer.names),
        "shards_written": writer.written, "shard_rows": args.shard_rows, "engine": args.engine,
        "ray_address": "given" if args.address else None,
        **identity.as_dict(), **record(args.decode, cpu), "model_record": describe(model),
        "seconds": round(time.perf_counter() - started, 3),
    }


__all__ = ["add_decode_option", "add_parser", "embed_local", "listing", "run"]
