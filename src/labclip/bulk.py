"""Bulk image encoding: decoding and resizing in worker processes, JPEG draft decoding, batched encoding.

``tag``, ``search``, ``05_scale`` and ``embed`` go through :func:`encode_files`; reports 01–04 and 06 keep
:meth:`labclip.model.ClipModel.encode_images` (OpenAI's exact preprocessing, one decoding thread).
Two decode modes:

- ``exact``: the full-size image, resized bicubically as ``clip._transform`` does (the same pixels as
  ``encode_images``);
- ``draft``: a JPEG is first decoded at a reduced DCT scale (1/2, 1/4 or 1/8, Pillow's draft mode) whose
  shorter side is still at least twice the model's input, then resized bicubically as above. A picture with a
  shorter side under four times the input, and every other format, gives exactly ``exact``'s pixels.

The decode mode is part of the embedding cache's key and of what a run records (:func:`record`).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .cache import sha256_bytes
from .errors import LabclipError
from .images import (
    PREPROCESS_VERSION,
    NaflexPreprocess,
    Preprocess,
    SquarePreprocess,
    _center_crop,
    _resize_shorter_side,
    load_image,
)
from .precision import to_dtype

DECODES = ("exact", "draft")
DEFAULT_DECODE = "draft"
DECODE_RULE = ("draft: JPEGs decoded at the smallest DCT scale that keeps the shorter side at least twice the model's "
               "input, then OpenAI's bicubic resize and crop; exact: full-size decoding (OpenAI's preprocessing)")
# Prepared images waiting for the encoder, per decoding process: bounds memory when decoding outruns encoding.
AHEAD = 8

Prepared = np.ndarray | Image.Image


@dataclass(frozen=True)
class Plan:
    """How a bulk run shares the CPU: ``workers`` decoding processes (0: decode on a thread of this process)
    and ``threads`` encoder threads, each encoding whole batches on one torch thread."""

    workers: int
    threads: int


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan(cores: int | None = None, workers: int | None = None) -> Plan:
    """An encoder thread per core, each encoding whole batches on one torch thread, and as many decoding processes
    as cores. Encoders that each own a batch never wait for one another, so a core taken by a decoder (or by
    another program) slows one batch rather than stalling every thread of a shared matrix product. With draft
    decoding a 12 MP JPEG costs a fraction of encoding it, so the decoders mostly wait with ``AHEAD`` prepared
    images each. ``make bench`` (bench_bulk) times this plan beside :func:`split_plan`. ``workers`` overrides the
    count of decoding processes; ``cores`` defaults to :func:`available_cores` (tests pass their own)."""
    cores = available_cores() if cores is None else max(1, int(cores))
    return Plan(cores if workers is None else max(0, int(workers)), cores)


def split_plan(cores: int | None = None) -> Plan:
    """The alternative :func:`plan` is measured against: a quarter of the cores (at least one) encode, the
    decoders take the rest, and no core is shared."""
    cores = available_cores() if cores is None else max(1, int(cores))
    threads = max(1, cores // 4)
    return Plan(max(1, cores - threads), threads)


def check_decode(decode: str) -> str:
    if decode not in DECODES:
        raise LabclipError(f"unknown decode mode {decode!r}; use one of {', '.join(DECODES)}")
    return decode


def draft_size(preprocess: Preprocess | SquarePreprocess | NaflexPreprocess) -> int:
    """The shorter side a draft decode keeps at least: twice the side the model's preprocessing resizes to."""
    return 2 * int(preprocess.resize)


def decode_file(path: str | os.PathLike, preprocess: Preprocess | SquarePreprocess | NaflexPreprocess,
                decode: str = DEFAULT_DECODE) -> Prepared:
    """Read one image and bring it to the model's input size: a ``(crop, crop, 3)`` uint8 array, resized and
    cropped as ``preprocess`` does (normalising is left to :func:`pixel_values`, on the whole batch); a NaFlex
    model's patches are made per batch, so it gets the decoded image.

    Raises:
        LabclipError: the file is missing or not a readable image (one line naming it).
    """
    image = load_image(Path(path), draft=draft_size(preprocess) if check_decode(decode) == "draft" else None)
    if isinstance(preprocess, NaflexPreprocess):
        return image
    if isinstance(preprocess, SquarePreprocess):
        image = image.convert("RGB").resize((preprocess.crop, preprocess.crop), Image.Resampling(preprocess.resample))
    else:
        image = _center_crop(_resize_shorter_side(image, preprocess.resize), preprocess.crop).convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def pixel_values(preprocess: Preprocess | SquarePreprocess | NaflexPreprocess,
                 items: Sequence[Prepared]) -> dict[str, torch.Tensor]:
    """The image tower's inputs for a batch of :func:`decode_file` results: the same elementwise arithmetic as
    ``Preprocess.__call__`` (``/255``, ``-mean``, ``/std`` in float32), so the values are identical."""
    if isinstance(preprocess, NaflexPreprocess):
        return preprocess.batch(items)
    pixels = torch.from_numpy(np.stack([np.asarray(x) for x in items])).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor(preprocess.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(preprocess.std, dtype=torch.float32)[:, None, None]
    return {"pixel_values": pixels.to(torch.float32).div(255).sub(mean).div(std)}


def encode_prepared(model, items: Sequence[Prepared]) -> np.ndarray:
    """One batch of decoded images through ``model``'s image tower: ``(n, dim)`` float32 unit rows."""
    inputs = pixel_values(model.preprocess, items)
    inputs = to_dtype({k: v.to(model.device) for k, v in inputs.items()}, model.precision.dtype)
    with torch.inference_mode():
        return F.normalize(model.image(**inputs).float(), dim=-1).cpu().numpy()


def cache_key(data: bytes, decode: str) -> str:
    """The embedding cache's key of an image file's bytes: ``exact`` shares ``encode_images``' entries,
    ``draft`` has its own."""
    tag = PREPROCESS_VERSION if decode == "exact" else f"{PREPROCESS_VERSION}|decode={decode}"
    return sha256_bytes(tag.encode() + b"\0" + data)


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise LabclipError(f"{path}: cannot read image file ({err.strerror})") from None


def _bounded(pool: Executor, fn: Callable[[str], Prepared], items: Iterable[str], ahead: int
             ) -> Generator[Prepared, None, None]:
    """``pool.map(fn, items)`` in order, with at most ``ahead`` results submitted but not yet taken; what is
    still pending when the caller stops (an error, Ctrl-C) is cancelled."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """The decoding processes, started once per process and count and kept for later calls (``tag`` encodes
    chunk by chunk); ``forkserver``: no torch state or thread is forked."""
    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        pool = _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=context)
    return pool


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _POOLS.clear()


@contextmanager
def decoded(paths: Sequence[str], preprocess, decode: str, workers: int) -> Iterator[Iterator[Prepared]]:
    """:func:`decode_file` over ``paths`` in order: in ``workers`` processes, or on this process when ``workers``
    is 0 or there is one path."""
    fn = partial(decode_file, preprocess=preprocess, decode=check_decode(decode))
    if workers <= 0 or len(paths) <= 1:
        yield (fn(p) for p in paths)
        return
    items = _bounded(_pool(workers), fn, paths, AHEAD * workers)
    try:
        yield items
    finally:
        items.close()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _quiet(small: bool, progress: bool | None, model) -> bool | None:
    """tqdm's ``disable``, as ``ClipModel`` decides it: no bar for one batch; ``progress`` (default: the model's)
    ``None`` shows it only on a terminal."""
    shown = getattr(model, "progress", None) if progress is None else progress
    return True if small else None if shown is None else not shown


def _encoded(model, chunks: Iterable[list[int]], items: Iterator[Prepared], threads: int
             ) -> Iterator[tuple[list[int], np.ndarray]]:
    """``(chunk, embeddings)`` in order, at most ``threads`` batches encoding at once, each on its own thread with
    one torch thread: a batch's numbers are those of a one-thread run whatever the count of encoder threads."""
    with torch_threads(1), ThreadPoolExecutor(threads, thread_name_prefix="labclip-encode",
                                              initializer=torch.set_num_threads, initargs=(1,)) as pool:
        pending: deque[tuple[list[int], Future]] = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(encode_prepared, model, [next(items) for _ in chunk])))
                if len(pending) >= threads:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def batches(model, paths: Sequence[str | os.PathLike], decode: str = DEFAULT_DECODE, run: Plan | None = None,
            batch_size: int | None = None, progress: bool | None = None) -> Iterator[tuple[list[int], np.ndarray]]:
    """Encode image files in order, yielding ``(positions in paths, embeddings)`` per batch as it finishes.

    Cached embeddings (``model.cache``, keyed by content and decode mode) are yielded first; the rest are
    decoded by ``run.workers`` processes (default :func:`plan`) while ``run.threads`` encoder threads each
    encode a batch (``batch_size``, smaller where the files would leave a thread without one) on one torch thread.
    """
    run = run or plan()
    size = max(1, batch_size or model.image_batch_size)
    names = [str(p) for p in paths]
    keys = [cache_key(read_bytes(p), decode) for p in names] if model.cache is not None else []
    todo = []
    for i, key in enumerate(keys):
        vector = model.cache.get("images", key)
        if vector is None:
            todo.append(i)
        else:
            yield [i], vector[None, :]
    todo = todo if model.cache is not None else list(range(len(names)))
    threads = max(1, run.threads)
    share = min(size, max(1, -(-len(todo) // threads)))  # every encoder thread gets a batch
    chunks = (todo[start:start + share] for start in range(0, len(todo), share))
    with decoded([names[i] for i in todo], model.preprocess, decode, run.workers) as items, \
            tqdm(total=len(todo), desc="encoding images", unit="image",
                 disable=_quiet(len(todo) <= size, progress, model)) as bar:
        for chunk, vectors in _encoded(model, chunks, items, threads):
            for i, vector in zip(chunk, vectors):
                if model.cache is not None:
                    model.cache.put("images", keys[i], vector)
            bar.update(len(chunk))
            yield chunk, vectors


def encode_files(model, paths: Sequence[str | os.PathLike], decode: str = DEFAULT_DECODE, run: Plan | None = None,
                 batch_size: int | None = None, progress: bool | None = None) -> np.ndarray:
    """``(len(paths), dim)`` float32 unit rows of image files, through the bulk pipeline (see :func:`batches`)."""
    out = np.empty((len(paths), model.dim), dtype=np.float32)
    for rows, vectors in batches(model, paths, decode, run, batch_size, progress):
        out[rows] = vectors
    return out


def record(decode: str, run: Plan | None = None) -> dict:
    """What a bulk run records beside the model: the decode mode, its rule, and how the CPU was shared."""
    out: dict = {"decode": check_decode(decode), "decode_rule": DECODE_RULE}
    if run is not None:
        out.update(decode_workers=run.workers, encoder_threads=run.threads)
    return out


__all__ = ["DECODES", "DEFAULT_DECODE", "Plan", "batches", "decode_file", "encode_files", "plan", "record",
           "split_plan"]
