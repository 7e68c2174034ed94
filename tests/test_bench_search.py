"""bench_search and bench_runtime: figures measured and written to their own sections; the verdicts follow from
the printed figures; bf16 rows only where the (injected) CPU has bf16."""

import re

import pytest

from labclip.config import PROJ_ROOT

BENCH = PROJ_ROOT / "benchmarks"


def section(doc: str, name: str) -> str:
    match = re.search(rf"<!-- {name}: begin -->\n.*?```text\n(.*?)\n```\n<!-- {name}: end -->", doc, flags=re.S)
    assert match, f"no {name} section"
    return match[1]


@pytest.fixture
def benches(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_runtime
    import bench_search

    return bench_search, bench_runtime


def test_bench_search_measures_each_candidate_and_judges_by_its_figures(benches, tmp_path, capsys):
    bench_search, _ = benches
    doc = tmp_path / "benchmarks.md"
    bench_search.main(["--sizes", "1500", "--queries", "10", "--doc", str(doc)])
    out = capsys.readouterr().out
    text = section(doc.read_text(encoding="utf-8"), "bench_search")
    assert text == out.rstrip()
    rows = [line.split() for line in text.splitlines() if re.match(r"\s+1500 ", line)]
    assert {row[1] for row in rows} == {"numpy", "usearch", "faiss-cpu"}
    methods = [" ".join(row[3 if row[1] != "numpy" else 2:-7]) for row in rows]
    assert methods[:2] == ["exact (one matrix product)", "labclip index: PQ fast-scan 4-bit + exact"]
    assert {"sign bits (BinaryFlat) + exact", "sign bits (exact b1) + exact", "int8 scan (exact i8) + exact"} <= set(methods)
    for row in rows:
        median, p95, recall = float(row[-4]), float(row[-3]), float(row[-2])
        assert 0 <= recall <= 1 and median <= p95
        assert row[-1] == ("pass" if median < 50 and recall >= 0.95 else "FAIL")
    assert float(rows[0][-2]) == 1.0
    labclip = rows[1]
    verdict = next(x for x in text.splitlines() if x.startswith("1500 rows, labclip's index:"))
    assert f"median {labclip[-4]} ms (p95 {labclip[-3]})" in verdict and f"recall@10 {labclip[-2]}" in verdict
    assert verdict.endswith(labclip[-1])


@pytest.mark.parametrize("bf16", [False, True])
def test_bench_runtime_rule_follows_the_figures(benches, monkeypatch, tmp_path, capsys, bf16):
    _, bench_runtime = benches
    caps = {"avx512_bf16": bf16, "amx_bf16": False, "amd": bf16}  # AMD with AVX-512-BF16: auto is bf16
    monkeypatch.setattr(bench_runtime, "cpu_capabilities", lambda: caps)
    if bf16:  # the bf16 paths themselves are exercised where the CPU has them; here only which rows appear
        monkeypatch.setattr(bench_runtime, "openvino_runtime", lambda towers, examples, precision:
                            bench_runtime.torch_runtime(towers, bench_runtime.torch.float32))
    doc = tmp_path / "benchmarks.md"
    bench_runtime.main(["--quick", "--tiny", "--rounds", "1", "--doc", str(doc)])
    text = section(doc.read_text(encoding="utf-8"), "bench_runtime")
    assert text == capsys.readouterr().out.rstrip()
    names = {"torch fp32", "onnxruntime fp32", "openvino f32"} | ({"torch bf16", "openvino bf16"} if bf16 else set())
    rows = {}
    for line in text.splitlines():
        match = re.match(r"(\S+ \S+)\s+(image|text)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line)
        if match:
            rows[(match[1], match[2])] = (float(match[5]), float(match[6]))
    assert {name for name, _ in rows} == names
    assert ("skipped" in text) is not bf16
    assert rows[(f"torch {'bf16' if bf16 else 'fp32'}", "image")][0] == 1.0  # the baseline against itself
    assert rows[("onnxruntime fp32", "image")][1] <= 0.005 and rows[("openvino f32", "image")][1] <= 0.005
    for name in names - {"torch fp32", "torch bf16"}:
        speed, diff = rows[(name, "image")]
        verdict = next(x for x in text.splitlines() if x.startswith(f"{name}: "))
        assert verdict.endswith("(rule: ≥ 1.3× torch in auto's precision at ≤ 0.005)")
        assert f"× torch {'bf16' if bf16 else 'fp32'}, captions" in verdict
        assert ("→ adopt" in verdict) == (speed >= 1.3 and diff <= 0.005)
