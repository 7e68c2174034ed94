"""`make bench` prints figures only (no progress bars, no profiler table unless asked) and writes
docs/benchmarks.md from what it measured: each script its own section, the printed text verbatim."""

import re
import subprocess
import sys

import pytest

from labclip.config import PROJ_ROOT

BENCH = PROJ_ROOT / "benchmarks"
NOISE = re.compile(r"\r|\d+it/s|\|[█▏▎▍▌▋▊▉ ]+\||Self CPU|encoding (images|captions)|Warning|warn", re.I)


def section(doc: str, name: str) -> str:
    match = re.search(rf"<!-- {name}: begin -->\n(.*?)<!-- {name}: end -->", doc, flags=re.S)
    assert match, f"no {name} section"
    return match[1]


def printed(text: str) -> str:
    return re.search(r"```text\n(.*?)\n```", text, flags=re.S)[1]


def run_script(name: str, *args: str):
    return subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], capture_output=True, text=True,
                          check=True, timeout=300, cwd=PROJ_ROOT)


def test_bench_scripts_print_only_figures_and_write_their_sections(tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    scale = run_script("bench_scale", "--images", "200", "--captions", "200", "--quick", "--doc", str(doc))
    adapt = run_script("bench_adapt", "--pairs", "300", "--repeats", "1", "--doc", str(doc))
    for result, title in ((scale, "Metrics and plots at scale"), (adapt, "Text-adapter fitting")):
        assert not NOISE.search(result.stdout), result.stdout
        assert result.stderr.strip() == f"wrote the '{title}' section of {doc}"
    page = doc.read_text(encoding="utf-8")
    assert page.startswith("# Benchmarks\n") and "never edited by hand" in page
    first = section(page, "bench_scale")
    assert printed(first) == scale.stdout.rstrip() and "## Metrics and plots at scale" in first
    assert "`python benchmarks/bench_scale.py --images 200 --captions 200 --quick`" in first
    assert re.search(r"run \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+ \(\d+ logical CPUs, .*\); load average [\d.]+ at the start",
                     first)
    assert printed(section(page, "bench_adapt")) == adapt.stdout.rstrip()

    again = run_script("bench_adapt", "--pairs", "250", "--repeats", "1", "--doc", str(doc))  # replaces its own only
    page2 = doc.read_text(encoding="utf-8")
    assert page2.count("<!-- bench_adapt: begin -->") == 1 and printed(section(page2, "bench_adapt")) == again.stdout.rstrip()
    assert section(page2, "bench_scale") == first and "250 (50 groups of 5)" in page2 and "300 (60 groups" not in page2


@pytest.fixture
def bench_encode(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_encode

    return bench_encode


def test_bench_encode_profiles_only_when_asked(bench_encode, monkeypatch, capsys, tmp_path):
    assert bench_encode.vit_b32().progress is False  # no progress bars, also on a terminal
    monkeypatch.setattr(bench_encode, "targets", lambda *a, **k: [("a target: 1%", False), ("another: 99%", True)])
    bench_encode.main(["--quick", "--tiny"])
    plain = capsys.readouterr().out
    assert "not met: a target (--profile shows where the time goes)" in plain
    assert not NOISE.search(plain) and "profile of one" not in plain
    bench_encode.main(["--quick", "--tiny", "--profile", "--doc", str(tmp_path / "b.md")])
    profiled = capsys.readouterr().out
    assert "Where the time goes" in profiled and "Self CPU" in profiled and "profile of one fp32 forward pass" in profiled
    assert printed(section((tmp_path / "b.md").read_text(encoding="utf-8"), "bench_encode")) == profiled.rstrip()
