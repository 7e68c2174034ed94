"""``labclip tag DIR --watch --out FILE.csv``: tag images as they arrive in a folder (watchdog).

Rows are those of ``labclip tag`` (``image, rank, label, probability`` and the model and option columns), so a
later ``labclip tag`` resumes from them. A file counts as arrived when its size and modification time have not
changed for ``STABLE_S`` and it decodes; until then it waits, however slowly it is written. The table is rewritten
atomically after each batch of arrivals; Ctrl-C stops the observer and leaves no temporary file.
With ``--flag LABEL --threshold T`` (T from ``labclip calibrate``) each image whose probability of LABEL is at
least T is printed as flagged, and the rows carry ``flag``, ``threshold``, ``flag_probability`` and ``flagged``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import write_texts
from ..bulk import encode_files
from ..errors import LabclipError
from ..images import IMAGE_SUFFIXES, load_image
from ..lab.provenance import model_columns
from .inputs import labels as labels_of
from .loading import identity, load

STABLE_S = 0.4
POLL_S = 0.1
TAG_KEY = ("model", "model_revision", "model_untrained", "precision", "labels_sha256", "templates", "template_lang",
           "top_k", "decode")


def tag_key(args: argparse.Namespace, record: dict, names: list[str]) -> dict[str, str]:
    """What a tags row depends on; rows are reused only when all of it is the same."""
    labels_sha = hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()[:16]
    values = {**model_columns(record), "labels_sha256": labels_sha, "templates": args.templates,
              "template_lang": args.lang, "top_k": args.top_k, "decode": args.decode}
    return {k: str(values[k]) for k in TAG_KEY}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--watch``, ``--flag`` and ``--threshold`` on ``labclip tag``."""
    p.add_argument("--watch", action="store_true", help="keep running and tag images as they arrive, until Ctrl-C (default: tag the folder once)")
    p.add_argument("--flag", metavar="LABEL", help="with --watch: print images whose probability of LABEL "
                   "reaches --threshold (calibrate T with labclip calibrate; default: none)")
    p.add_argument("--threshold", type=float, metavar="T", help="with --flag: the probability that flags an image (default: none, give it with --flag)")


def is_candidate(path: Path, folder: Path, out: Path) -> bool:
    """An image file of the watched folder (no hidden or temporary file, not the output)."""
    name = path.relative_to(folder)
    return (path.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in name.parts)
            and path.resolve() != out.resolve())


@dataclass
class Pending:
    """Files seen but not yet tagged: their last (size, mtime) and when it last changed."""

    seen: dict[Path, tuple[tuple[int, int], float, float]] = field(default_factory=dict)
    tagged: dict[Path, tuple[int, int]] = field(default_factory=dict)
    closed: set[Path] = field(default_factory=set)

    def add(self, path: Path, closed: bool = False) -> None:
        """Note an event on ``path``; ``closed``: its writer closed it (no need to wait for its size to settle)."""
        if path not in self.seen:
            self.seen[path] = ((-1, -1), time.monotonic(), time.monotonic())
        if closed:
            self.closed.add(path)

    def ready(self) -> list[tuple[Path, float]]:
        """Files whose writer closed them or whose size and mtime held still for ``STABLE_S``, and that decode,
        with when they arrived."""
        now, done = time.monotonic(), []
        for path, (state, changed, arrived) in list(self.seen.items()):
            try:
                stat = path.stat()
            except OSError:
                del self.seen[path]
                continue
            current = (stat.st_size, stat.st_mtime_ns)
            if current == self.tagged.get(path):
                del self.seen[path]
            elif current != state and path not in self.closed:
                self.seen[path] = (current, now, arrived)
            elif (path in self.closed or now - changed >= STABLE_S) and stat.st_size and _decodes(path):
                done.append((path, arrived))
                self.tagged[path] = current
                del self.seen[path]
            self.closed.discard(path)
        return done


def _decodes(path: Path) -> bool:
    try:
        load_image(path)
    except LabclipError:
        return False
    return True


def _observer(folder: Path, events: queue.Queue):
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if not event.is_directory and event.event_type in ("created", "modified", "moved", "closed"):
                path = Path(os.fsdecode(getattr(event, "dest_path", "") or event.src_path))
                events.put((path, event.event_type in ("closed", "moved")))

    observer = Observer()
    observer.schedule(Handler(), str(folder), recursive=True)
    observer.start()
    return observer


@dataclass
class Tagger:
    """The model, labels and output of one ``tag --watch`` run."""

    args: argparse.Namespace
    model: Any
    classes: np.ndarray
    labels: list[str]
    key: dict[str, str]
    table: pd.DataFrame | None

    def tag(self, ready: list[tuple[Path, float]]) -> None:
        """Tag ``ready`` files, rewrite the table atomically, print each image's latency."""
        from ..lab.tables import top_labels
        from ..zeroshot import probabilities

        paths = [p for p, _ in ready]
        start = time.monotonic()
        probs = probabilities(self.model, encode_files(self.model, paths, self.args.decode), self.classes)
        names = [p.relative_to(self.args.folder).as_posix() for p in paths]
        new = top_labels(probs, self.labels, names, self.args.top_k).assign(
            **self.key, precision_requested=self.model.precision.requested,
            precision_default=self.model.precision.default)
        if self.args.flag:
            scores = dict(zip(names, probs[:, self.labels.index(self.args.flag)]))
            new = new.assign(flag=self.args.flag, threshold=self.args.threshold,
                             flag_probability=new["image"].map(scores),
                             flagged=new["image"].map(lambda n: bool(scores[n] >= self.args.threshold)))
        old = self.table if self.table is not None else None
        table = new if old is None or old.empty else pd.concat([old[~old["image"].isin(names)], new], ignore_index=True)
        try:
            write_texts({self.args.out: table.to_csv(index=False)})
        except OSError as err:
            raise LabclipError(f"{self.args.out}: cannot write ({err.strerror}); it keeps the images tagged "
                               "before") from None
        self.table = table
        done = time.monotonic()
        for name, (_, arrived), row in zip(names, ready, probs):
            top = int(np.argmax(row))
            flag = ""
            if self.args.flag:
                flag = f"  FLAGGED {self.args.flag}" if scores[name] >= self.args.threshold else ""
            print(f"{name}: {self.labels[top]} {row[top]:.3f} ({(done - arrived) * 1000:.0f} ms after it "
                  f"arrived, {(done - start) * 1000 / len(paths):.0f} ms to tag){flag}", flush=True)


def _check(args: argparse.Namespace, labels: list[str]) -> pd.DataFrame | None:
    if args.out.suffix.lower() != ".csv":
        raise LabclipError(f"{args.out}: --out must end in .csv")
    if not args.folder.is_dir():
        raise LabclipError(f"{args.folder}: no such folder")
    if not args.watch:
        raise LabclipError("--flag needs --watch (moderation tags images as they arrive)")
    if (args.flag is None) != (args.threshold is None):
        raise LabclipError("--flag LABEL and --threshold T go together")
    if args.flag is not None and args.flag not in labels:
        raise LabclipError(f"--flag {args.flag!r} is not one of the labels ({', '.join(labels)})")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise LabclipError(f"--threshold must lie between 0 and 1, got {args.threshold}")
    if not args.out.is_file():
        return None
    try:
        return pd.read_csv(args.out, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabclipError(f"{args.out}: existing tags file is unreadable ({type(err).__name__})") from None


def start(args: argparse.Namespace) -> Tagger:
    """Check the options, load the model and the existing table (which must come from the same options)."""
    from ..zeroshot import class_embeddings, load_templates

    labels = labels_of(args)
    table = _check(args, labels)
    templates = load_templates(args.templates, args.lang)
    model = load(args)
    key = tag_key(args, identity(model), labels)
    if table is not None and len(table):
        differs = [c for c in TAG_KEY if c not in table.columns or set(table[c]) != {key[c]}]
        if differs:
            raise LabclipError(f"{args.out} was made with other options ({', '.join(differs)}); give another --out "
                               "or retag it with labclip tag first")
    return Tagger(args, model, class_embeddings(model, labels, templates), labels, key, table)


def run(args: argparse.Namespace) -> None:
    """Tag what is in ``args.folder`` and not yet in ``args.out``, then every image that arrives, until Ctrl-C."""
    tagger = start(args)
    folder = args.folder
    events: queue.Queue = queue.Queue()
    observer = _observer(folder, events)
    pending = Pending()
    done = set(tagger.table["image"]) if tagger.table is not None and "image" in tagger.table else set()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and is_candidate(path, folder, args.out) and path.relative_to(folder).as_posix() not in done:
            pending.add(path)
    print(f"labclip: watching {folder} ({len(done)} images already in {args.out}); Ctrl-C stops", file=sys.stderr,
          flush=True)
    try:
        while True:
            time.sleep(POLL_S)
            while not events.empty():
                path, closed = events.get()
                if path.is_file() and is_candidate(path, folder, args.out):
                    pending.add(path, closed)
            ready = pending.ready()
            if ready:
                tagger.tag(ready)
    finally:
        observer.stop()
        observer.join()
        count = 0 if tagger.table is None else tagger.table["image"].nunique()
        print(f"labclip: stopped watching; {args.out} lists {count} images", file=sys.stderr)
