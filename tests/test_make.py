"""The Makefile's own output: `make help` lists every documented target in aligned columns."""

import re
import shutil
import subprocess

import pytest

from labclip.config import PROJ_ROOT

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_target_in_aligned_columns():
    result = subprocess.run(["make", "--no-print-directory", "-C", str(PROJ_ROOT), "help"], capture_output=True,
                            text=True, check=True, timeout=60)
    lines = [ANSI.sub("", line) for line in result.stdout.splitlines()]
    documented = re.findall(r"^([a-zA-Z_-]+):.*?## ", (PROJ_ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M)
    assert [line.split()[0] for line in lines] == documented
    assert {"report-adapt", "report-scale"} <= set(documented)
    starts = set()
    for line, target in zip(lines, documented):
        match = re.fullmatch(rf"  {re.escape(target)}( +)(\S.*)", line)
        assert match and len(match[1]) >= 2, line
        starts.add(match.start(2))
    assert len(starts) == 1, f"descriptions start in columns {sorted(starts)}"
    assert starts == {2 + max(map(len, documented)) + 2}
