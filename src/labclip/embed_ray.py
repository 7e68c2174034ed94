"""``labclip embed --engine ray``: the bulk pipeline on Ray Data (optional extra ``labclip[ray]``).

A path list → decode and resize in ``map_batches`` tasks (:func:`labclip.bulk.decode_file`, the local engine's
code) → encode in ``map_batches`` on an actor pool, each actor loading labclip's encoder once → rows in their
input order, handed to the same shard writer as the local engine, so both write the same shards. Ray runs on
a local instance (this machine's cores, no dashboard) unless ``address`` names a running cluster, whose nodes
must see the images at the same paths.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .bulk import decode_file, encode_prepared, torch_threads
from .errors import LabclipError
from .images import NaflexPreprocess


def decode_batch(batch: dict[str, np.ndarray], preprocess, decode: str) -> dict[str, np.ndarray]:
    """A Ray Data batch of paths → the same batch with each image's ``(crop, crop, 3)`` uint8 pixels; a file that
    does not decode gets blank pixels and its one-line error in ``error`` (the driver raises it, in input order)."""
    pixels, errors = [], []
    for path in batch["path"]:
        try:
            pixels.append(np.asarray(decode_file(str(path), preprocess, decode)))
            errors.append("")
        except LabclipError as err:
            pixels.append(np.zeros((preprocess.crop, preprocess.crop, 3), dtype=np.uint8))
            errors.append(str(err))
    return {"index": np.asarray(batch["index"]), "pixels": np.stack(pixels), "error": np.asarray(errors, dtype=object)}


class Encoder:
    """A Ray actor's encoder: ``loader()`` runs once per actor; each batch of pixels becomes unit vectors."""

    def __init__(self, loader: Callable[[], object], threads: int = 1) -> None:
        self.model = loader()
        self.threads = threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch_threads(self.threads):
            vectors = encode_prepared(self.model, list(batch["pixels"]))
        return {"index": np.asarray(batch["index"]), "embedding": vectors, "error": batch["error"]}


def user_error(err: BaseException) -> LabclipError | None:
    """The :class:`LabclipError` a Ray task raised (Ray wraps it), if any, found along the exception chain."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LabclipError):
            return LabclipError(str(current).splitlines()[0] if str(current) else type(current).__name__)
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    found = re.search(r"labclip\.errors\.LabclipError: (.+)", str(err))
    return LabclipError(found[1]) if found else None


def start(address: str | None, cpus: int) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray instance on ``cpus`` cores (no dashboard,
    no usage report); ``True`` when this call started it (and so shuts it down). A running instance is reused."""
    try:
        import ray
        import ray.data
    except ModuleNotFoundError:
        raise LabclipError("--engine ray needs Ray Data: pip install 'labclip[ray]'") from None
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports nothing home unless a user asks it to
    options = {"address": address} if address else {"num_cpus": cpus, "include_dashboard": False}
    ray.init(**options, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return True


def embed_ray(loader: Callable[[], object], preprocess, files: Sequence[Path],
              write: Callable[[Sequence[int], np.ndarray], None], decode: str = "draft", *, batch_size: int = 32,
              shard_rows: int = 1024, address: str | None = None, workers: int = 1, threads: int = 1,
              actors: int = 1, model_bytes: int = 1, progress: bool | None = None) -> None:
    """Embed ``files`` on Ray Data and hand every ``shard_rows`` consecutive rows (positions in ``files``,
    embeddings) to ``write``, in input order, as :func:`labclip.embed.embed_local` does.

    Args:
        loader: builds the encoder in each actor (picklable, e.g. a ``functools.partial`` of ``load_model``).
        preprocess: the model's preprocessing (decoding tasks resize and crop with it).
        workers, threads: a local instance gets ``workers + actors × threads`` cores; each actor encodes on
            ``threads`` torch threads (one, as the local engine's encoder threads do, gives the same numbers).
        actors: encoder actors (each holds one model).
        model_bytes: the memory an encoder actor asks Ray for (its weights).

    Raises:
        LabclipError: Ray Data is not installed, a NaFlex model (its patches are not fixed-size arrays), or a
            file that does not decode (one line naming it).
    """
    if isinstance(preprocess, NaflexPreprocess):
        raise LabclipError("--engine ray takes fixed-size image models; use --engine local for NaFlex models")
    started = start(address, max(1, workers) + max(1, actors) * max(1, threads))
    import ray

    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        items = [{"index": i, "path": str(p)} for i, p in enumerate(files)]
        data = ray.data.from_items(items).map_batches(
            partial(decode_batch, preprocess=preprocess, decode=decode), batch_size=batch_size, batch_format="numpy",
            num_cpus=1)
        # An actor asks for its model's memory: Ray places it where that fits, and the differing resource request
        # keeps decoding in parallel tasks rather than fused into the encoder actors.
        data = data.map_batches(Encoder, fn_constructor_kwargs={"loader": loader, "threads": threads},
                                batch_size=batch_size, batch_format="numpy", num_cpus=threads,
                                memory=max(1, model_bytes), compute=ray.data.ActorPoolStrategy(size=actors))
        with tqdm(total=len(files), desc="encoding images", unit="image",
                  disable=None if progress is None else not progress) as bar:
            for batch in data.iter_batches(batch_size=shard_rows, batch_format="numpy"):
                failed = [str(e) for e in batch["error"] if e]
                if failed:
                    raise LabclipError(failed[0])
                write([int(i) for i in batch["index"]], np.asarray(batch["embedding"], dtype=np.float32))
                bar.update(len(batch["index"]))
    except LabclipError:
        raise
    except Exception as err:  # noqa: BLE001 - a task's user error comes back wrapped by Ray
        found = user_error(err)
        if found is None:
            raise
        raise found from None
    finally:
        if started:
            ray.shutdown()


__all__ = ["Encoder", "decode_batch", "embed_ray"]
