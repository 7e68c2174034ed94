"""docs/benchmarks.md, written by the benchmark scripts (``--doc FILE``) from what they measured.

Each script owns one section between ``<!-- NAME: begin -->`` and ``<!-- NAME: end -->``: a rerun
replaces its own section and leaves the others. A section holds the command, the date, the CPU, the
machine's load and the script's printed output, exactly as it was printed.
"""

from __future__ import annotations

import io
import os
import platform
import re
import shlex
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from labclip.atomic import write_text  # noqa: E402

HEADER = """# Benchmarks

Written by `make bench` (`python benchmarks/bench_*.py --doc docs/benchmarks.md`) from the figures each
run measured; never edited by hand. Each section names its command, date, CPU and the machine's load.
Absolute rates depend on the machine and on what else ran on it; compare ratios within one section.
What the scripts measure and why is described in their docstrings and in ARCHITECTURE.md.
"""


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def section(name: str, title: str, command: str, output: str, when: datetime, load: float) -> str:
    """One script's section of the page."""
    return (f"<!-- {name}: begin -->\n## {title}\n\n`{command}`, run {when:%Y-%m-%d %H:%M} UTC on {cpu_name()} "
            f"({os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}); load average {load:.1f} at the start.\n\n"
            f"```text\n{output.rstrip()}\n```\n<!-- {name}: end -->\n")


def write_section(doc: Path, name: str, text: str) -> None:
    """Put ``text`` in place of ``name``'s section of ``doc`` (appended when it has none), atomically."""
    page = doc.read_text(encoding="utf-8") if doc.is_file() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)}: begin -->.*?<!-- {re.escape(name)}: end -->\n?", flags=re.S)
    if pattern.search(page):
        page = pattern.sub(lambda _: text, page)
    else:
        page = page.rstrip("\n") + "\n\n" + text
    doc.parent.mkdir(parents=True, exist_ok=True)
    write_text(doc, page)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextmanager
def recording(doc: Path | None, name: str, title: str, argv: Sequence[str]) -> Iterator[None]:
    """Print as usual; when the block finishes and ``doc`` is given, write what it printed as ``name``'s
    section (``name`` is the script's: the command is shown as ``python benchmarks/NAME.py ARGS``
    without ``--doc``)."""
    if doc is None:
        yield
        return
    when, load = datetime.now(timezone.utc), os.getloadavg()[0]
    printed = io.StringIO()
    with redirect_stdout(_Tee(sys.stdout, printed)):
        yield
    shown = [a for i, a in enumerate(argv) if a != "--doc" and (i == 0 or argv[i - 1] != "--doc")
             and not a.startswith("--doc=")]
    command = "python " + shlex.join([f"benchmarks/{name}.py", *shown])
    write_section(doc, name, section(name, title, command, printed.getvalue(), when, load))
    print(f"wrote the {title!r} section of {doc}", file=sys.stderr)


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n random unit rows of dim float32 values."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(step: Callable[[], object]) -> tuple[float, int]:
    """(seconds of an untraced run, peak bytes a traced run allocates)."""
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    tracemalloc.reset_peak()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak
