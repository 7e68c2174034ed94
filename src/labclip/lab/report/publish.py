"""Publishing a run: the output folder's marker and lock, the checks before a run, the atomic switch of
``latest`` and pruning of older runs (only labclip's own)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from ...errors import LabclipError

KEEP_RUNS = 5
RUNS = "runs"
LATEST = "latest"
MARKER = ".labclip-reports"
MARKER_TEXT = ("labclip report publishes reports here: runs/<run-id>/ per run; latest and the report names link to "
               "the newest run.\nlabclip replaces only its own links and deletes only run folders it wrote.\n")
RUN_ID = re.compile(r"\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{6}")  # microseconds since this release


def check_out_dir(out_dir: Path, names: Sequence[str] = (), into_existing: bool = False) -> None:
    """Fail before any work when ``out_dir`` cannot be created or written, or is not labclip's to write in.

    Args:
        out_dir: the output folder.
        names: the top-level names the run will publish (``01_matching.html``, ``run.json``, ...).
        into_existing: the user allows a non-empty folder that labclip did not create.

    Raises:
        LabclipError: a file stands in the way, the folder is not writable, it is a non-empty folder that is
            not labclip's (without ``into_existing``), or a name the run would publish is taken by something
            labclip did not write (a file, a folder, a ``latest`` that is not labclip's link).
    """
    existing = next(p for p in (out_dir, *out_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise LabclipError(f"output folder {out_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LabclipError(f"output folder {out_dir}: {existing} is not writable")
    if not out_dir.is_dir():
        return
    foreign = sorted(p.name for p in out_dir.iterdir()) if not _is_labclips(out_dir) else []
    if foreign and not into_existing:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise LabclipError(f"output folder {out_dir} holds files labclip did not write ({shown}); choose a new or "
                           "empty folder, or pass --into-existing to add the reports beside them (labclip then "
                           "replaces and deletes none of them)")
    _check_blockers(out_dir, names)


def _is_labclips(out_dir: Path) -> bool:
    """Whether labclip wrote this folder: its marker file, or (folders from before the marker) a ``latest``
    link into ``runs/``."""
    latest = out_dir / LATEST
    return (out_dir / MARKER).is_file() or (latest.is_symlink() and os.readlink(latest).startswith(f"{RUNS}/"))


def _check_blockers(out_dir: Path, names: Sequence[str]) -> None:
    """Each name a run publishes is free or labclip's own link (``latest/<name>``); ``latest`` is free or
    labclip's link into ``runs/``; ``runs`` is free or a folder.

    Raises:
        LabclipError: the first name that something labclip did not write stands on.
    """
    runs, latest = out_dir / RUNS, out_dir / LATEST
    if (runs.exists() or runs.is_symlink()) and not runs.is_dir():
        raise LabclipError(f"{runs} is not a folder; labclip keeps its runs there: move it away or choose "
                           "another --out")
    if latest.is_symlink() or latest.exists():
        if not (latest.is_symlink() and os.readlink(latest).startswith(f"{RUNS}/")):
            kind = "folder" if latest.is_dir() and not latest.is_symlink() else "file"
            raise LabclipError(f"{latest} is a {kind} labclip did not write, where it keeps the link to the newest "
                               "run: move it away or choose another --out")
    for name in names:
        path = out_dir / name
        if path.is_symlink():
            if not os.readlink(path).startswith(f"{LATEST}/"):
                raise LabclipError(f"{path} is a link labclip did not write; labclip would replace it with the "
                                   "report's: move it away or choose another --out")
        elif path.exists():
            raise LabclipError(f"{path} is not labclip's (a file of yours?); labclip would replace it with the "
                               "report's: move it away or choose another --out")


def published_names(notebooks: Sequence[str], pdf: bool) -> list[str]:
    """The top-level names a run of ``notebooks`` publishes (what may be written there, for the checks)."""
    names = ["run.json"]
    for name in notebooks:
        names += [f"{name}.ipynb", f"{name}.html", f"{name}.json"] + ([f"{name}.pdf"] if pdf else [])
        if name == "02_languages":
            names.append("comparison.csv")
    return names


def new_run_id() -> str:
    """A sortable, unique name for one run: UTC time to the microsecond plus a random suffix (two runs started
    in the same second still sort in the order they started, so each prunes only runs older than itself)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _link(path: Path, target: str) -> None:
    """Point the symlink ``path`` at ``target`` in one step (a new link renamed over the old name)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise LabclipError(f"{path} is in the way of the report link; move it away") from None


@contextlib.contextmanager
def _publishing(out_dir: Path) -> Iterator[None]:
    """Hold the output folder's publish lock (``flock`` on its marker file): one run publishes and prunes at a time."""
    with open(out_dir / MARKER, "a", encoding="utf-8") as marker:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs at once may publish together
            yield
            return
        fcntl.flock(marker, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(marker, fcntl.LOCK_UN)


def claim(out_dir: Path) -> None:
    """Create ``out_dir`` (when missing) with labclip's marker file, after :func:`check_out_dir` allowed it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:  # created once and never replaced: publishers lock this file (inode)
        with open(out_dir / MARKER, "x", encoding="utf-8") as marker:
            marker.write(MARKER_TEXT)
    except FileExistsError:
        pass
    (out_dir / RUNS).mkdir(exist_ok=True)


def publish(staging: Path, out_dir: Path, run_id: str) -> list[Path]:
    """Move a finished run to ``out_dir/runs/<run_id>`` and switch ``out_dir/latest`` to it.

    The top-level names (``out_dir/01_matching.html``, ...) are links through ``latest``, so every
    one of them shows the same run, before and after the switch. Publishing and pruning hold the
    folder's lock, so no other run prunes this one while it is being published.

    Returns:
        The top-level paths of the run's files.

    Raises:
        LabclipError: a name of the run is taken by something labclip did not write (nothing is published).
    """
    final = out_dir / RUNS / run_id
    with _publishing(out_dir):
        names = sorted(p.name for p in staging.iterdir())
        _check_blockers(out_dir, names)
        os.replace(staging, final)
        for name in names:
            _link(out_dir / name, f"{LATEST}/{name}")
        _link(out_dir / LATEST, f"{RUNS}/{run_id}")
        for path in out_dir.iterdir():
            if path.is_symlink() and os.readlink(path).startswith(f"{LATEST}/") and not path.exists():
                path.unlink(missing_ok=True)
        _prune(out_dir / RUNS, run_id)
    return [out_dir / name for name in names]


def _is_run(folder: Path) -> bool:
    """A run folder labclip wrote: a run id as its name and its ``run.json`` naming that id."""
    if not (RUN_ID.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()):
        return False
    try:
        return json.loads((folder / "run.json").read_text(encoding="utf-8")).get("run_id") == folder.name
    except (OSError, ValueError, AttributeError):
        return False


def _prune(runs: Path, run_id: str) -> None:
    """Remove labclip's runs older than ``run_id`` beyond the newest ``KEEP_RUNS`` (never a newer one, never
    the one ``latest`` names, never a folder labclip did not write), and staging folders left a day ago by a
    killed run."""
    latest = os.readlink(runs.parent / LATEST).split("/")[-1]
    finished = sorted((p for p in runs.iterdir() if _is_run(p)), key=lambda p: p.name, reverse=True)
    for old in finished[KEEP_RUNS:]:
        if old.name < run_id and old.name != latest:
            shutil.rmtree(old, ignore_errors=True)
    for partial in runs.glob(".*.partial"):
        if not RUN_ID.fullmatch(partial.name[1:-len(".partial")]):
            continue
        try:
            stale = time.time() - partial.stat().st_mtime > 86400
        except FileNotFoundError:  # a concurrent run published it since the glob
            continue
        if stale:
            shutil.rmtree(partial, ignore_errors=True)


def remove(*paths: str | os.PathLike | None) -> None:
    """Remove folders the run created, with Ctrl-C and SIGTERM held back until it is done, so a second signal
    cannot leave half of one behind."""
    mask = getattr(signal, "pthread_sigmask", None)  # not on Windows
    previous = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if mask else None
    try:
        for path in paths:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        if mask:
            mask(signal.SIG_SETMASK, previous)


