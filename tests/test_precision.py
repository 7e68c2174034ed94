import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labclip import LabclipError, load_model, precision, similarity
from labclip.cli import main
from labclip.config import DEFAULT_CAPTIONS
from labclip.model import describe
from labclip.precision import AUTO_ENV, AUTO_RULE, DEFAULT_RULE, DEFAULTS, choose

TEXTS = ["a cup of coffee", "a photo of a calico cat", "чашка кофе", "snowy mountains at dawn", "a red car"]
AMX = {"avx512_bf16": True, "amx_bf16": True, "amx_tile": True}
AVX512_BF16 = {"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
AMD_AVX512_BF16 = {**AVX512_BF16, "amd": True}
CPUINFO = Path(__file__).parent / "fixtures" / "cpuinfo"


def _images(n=6, size=40):
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize(("caps", "expected", "found"), [
    (AMX, "bf16", "this CPU has AMX-BF16"),
    (AVX512_BF16, "fp32", "this CPU has AVX-512-BF16 but no AMX-BF16 and is not AMD"),
    (AMD_AVX512_BF16, "bf16", "this AMD CPU has AVX-512-BF16"),
    ({"avx2": True, "amd": True}, "fp32", "this CPU has no AMX-BF16"),
    ({"avx2": True}, "fp32", "this CPU has no AMX-BF16"),
    ({}, "fp32", "this CPU has no AMX-BF16"),
])
def test_auto_follows_cpu_capabilities(caps, expected, found):
    chosen = choose("auto", "cpu", caps)
    assert chosen.name == expected and chosen.requested == "auto"
    assert chosen.reason == f"{AUTO_RULE}: {found}"  # the rule, then what was found here; no speed-up quoted
    assert chosen.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]


@pytest.mark.parametrize("task", sorted(DEFAULTS))
def test_a_default_says_it_is_the_default_and_states_the_rule(task):
    """Nothing asked for: the table's value, flagged as the default, with the rule (and, for auto, what auto found
    here); never the word "requested"."""
    chosen = choose(None, "cpu", AMX, default_for=task)
    asked = choose(DEFAULTS[task], "cpu", AMX)
    assert (chosen.name, chosen.requested, chosen.default) == (asked.name, DEFAULTS[task], True)
    found = "" if DEFAULTS[task] == "fp32" else f"; {AUTO_RULE}: this CPU has AMX-BF16"
    assert chosen.reason == f"default for {task}: {DEFAULT_RULE}{found}"
    assert "requested" not in chosen.reason
    assert not asked.default and (asked.reason == "requested") == (DEFAULTS[task] == "fp32")


def test_no_precision_and_no_task_is_a_programming_error():
    with pytest.raises(ValueError, match="no default for None"):
        choose(None)
    with pytest.raises(ValueError, match="no default for 'nonsense'"):
        choose(None, default_for="nonsense")


def test_reasons_quote_no_figure_the_run_did_not_measure(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    reasons = [choose("auto", "cpu", caps).reason for caps in (AMX, AVX512_BF16, {})]
    reasons += [choose("auto", "cuda").reason, choose("auto", "cpu").reason, choose("fp32").reason]
    reasons += [choose(None, "cpu", caps, default_for=task).reason for caps in (AMX, {}) for task in DEFAULTS]
    assert not [r for r in reasons if re.search(r"\d(\.\d+)?\s*×|measured", r)], reasons
    source = Path(precision.__file__).read_text(encoding="utf-8")
    assert "6.6×" not in source and "measured 6" not in source


def test_auto_is_pinned_by_the_environment_not_the_machine(monkeypatch):
    monkeypatch.setattr("labclip.precision.cpu_capabilities", lambda: AMX)
    monkeypatch.delenv(AUTO_ENV, raising=False)
    assert choose("auto").name == "bf16"  # what an AMX machine picks unpinned
    monkeypatch.setenv(AUTO_ENV, "fp32")
    pinned = choose("auto")
    assert (pinned.name, pinned.requested) == ("fp32", "auto") and AUTO_ENV in pinned.reason
    assert choose("bf16").name == "bf16"  # an explicit precision is never pinned
    assert choose("auto", "cpu", AMX).name == "bf16"  # injected capabilities test the rule itself
    monkeypatch.setenv(AUTO_ENV, "int4")
    with pytest.raises(LabclipError, match=f"{AUTO_ENV}='int4' is not a precision"):
        choose("auto")


def test_the_default_precision_table_is_the_one_rule():
    from labclip.cli import _parser
    from labclip.lab.report import NOTEBOOKS, OPTIONAL_NOTEBOOKS

    assert {t for t, p in DEFAULTS.items() if p == "auto"} == {"05_scale", "07_cultures", "tag", "search", "embed"}
    assert set(NOTEBOOKS + OPTIONAL_NOTEBOOKS) <= set(DEFAULTS)
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for command, parser in sub.choices.items():
        if command == "report":
            continue
        parsers = [parser] if command != "adapt" else list(next(a for a in parser._actions if a.dest == "adapt_kind")
                                                          .choices.values())
        for p in parsers:
            if command == "index":  # reads stored vectors, loads no model
                assert not [a for a in p._actions if a.dest == "precision"]
                continue
            (option,) = [a for a in p._actions if a.dest == "precision"]
            # None: nothing asked for; the command's default comes from the table, recorded as the default
            assert option.default is None and f"(default: {DEFAULTS[command]}," in option.help, command
            assert p.get_default("precision_default_for") == command, command
    import papermill

    from labclip.config import NOTEBOOKS_DIR

    for name in NOTEBOOKS + OPTIONAL_NOTEBOOKS:
        declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"))
        assert declared["precision"]["default"] == "None", name  # resolved through the table for this notebook
        assert f"this notebook's default, {DEFAULTS[name]} (" in declared["precision"]["help"], name
        source = (NOTEBOOKS_DIR / f"{name}.ipynb").read_text(encoding="utf-8")
        assert f'default_for=\\"{name}\\"' in source, name


def test_explicit_precision_wins_and_unknown_is_a_user_error():
    assert choose("bf16", "cpu", {}).name == "bf16"
    assert choose("fp32", "cpu", AMX).name == "fp32"
    with pytest.raises(LabclipError, match="unknown precision 'int8'"):
        choose("int8")


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda(monkeypatch, bf16, expected):
    monkeypatch.delenv(AUTO_ENV)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert choose("auto", "cuda").name == expected


def test_auto_loads_bf16_where_detected_and_records_why(monkeypatch, tiny_model_dir):
    monkeypatch.delenv(AUTO_ENV)
    monkeypatch.setattr("labclip.precision.cpu_capabilities", lambda: AMX)
    model = load_model(tiny_model_dir, cache=False)
    assert model.model.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert model.logit_scale == pytest.approx(100.0, rel=1e-5)
    facts = describe(model)
    assert facts["precision"] == "bf16" and facts["precision_requested"] == "auto"
    assert "AMX-BF16" in facts["precision_reason"]
    monkeypatch.setattr("labclip.precision.cpu_capabilities", lambda: AVX512_BF16)
    assert describe(load_model(tiny_model_dir, cache=False))["precision"] == "fp32"


def test_bf16_embeddings_are_float32_unit_rows_close_to_fp32(tiny_model_dir):
    fp32 = load_model(tiny_model_dir, cache=False, precision="fp32")
    bf16 = load_model(tiny_model_dir, cache=False, precision="bf16")
    images = _images()
    ref_img, ref_txt = fp32.encode_images(images), fp32.encode_texts(TEXTS)
    img, txt = bf16.encode_images(images), bf16.encode_texts(TEXTS)
    for ours, ref in ((img, ref_img), (txt, ref_txt)):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
        cosines = (ours * ref).sum(axis=1)
        assert cosines.min() >= 0.999
        assert np.abs(ours - ref).max() > 0  # the bf16 path really ran
    reference, ours = similarity(ref_img, ref_txt), similarity(img, txt)
    assert (ours.argmax(axis=1) == reference.argmax(axis=1)).all()
    assert (ours.argmax(axis=0) == reference.argmax(axis=0)).all()


def test_cache_key_differs_between_precisions(tiny_model_dir, tmp_path):
    fp32 = load_model(tiny_model_dir, cache=tmp_path, precision="fp32")
    bf16 = load_model(tiny_model_dir, cache=tmp_path, precision="bf16")
    for images_only in (True, False):
        assert fp32.identity.cache_key(images_only) != bf16.identity.cache_key(images_only)
    images = _images(3)
    fp32.encode_images(images)
    bf16.encode_images(images)
    assert bf16.cache.stats["images"].misses == 3 and bf16.cache.stats["images"].hits == 0


def test_cli_precision_option(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "m.json"
    assert main(["match", str(DEFAULT_CAPTIONS), "--model", str(tiny_model_dir), "--precision", "bf16",
                 "--no-cache", "--out", str(out)]) == 0
    model = json.loads(out.read_text())["provenance"]["model"]
    assert (model["precision"], model["precision_reason"]) == ("bf16", "requested")
    capsys.readouterr()
    assert main(["match", str(DEFAULT_CAPTIONS), "--precision", "int8"]) == 2
    assert "labclip: error:" in capsys.readouterr().err


def test_fallback_loader_passes_the_precision(tiny_model_dir):
    from labclip.lab.experiment import load_model_or_demo

    model, fallback = load_model_or_demo(str(tiny_model_dir), precision="bf16")
    assert fallback is None and describe(model)["precision"] == "bf16"


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_encode.py"
    spec = importlib.util.spec_from_file_location("bench_encode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("caps", "forward", "verdict"), [
    (AVX512_BF16, 0.6, "agrees"),
    (AVX512_BF16, 1.3, "DISAGREES"),
    (AMX, 3.0, "agrees"),
    (AMX, 0.9, "DISAGREES"),
])
def test_bench_says_whether_auto_agrees_with_the_measurement(caps, forward, verdict):
    line = _bench().agreement(choose("auto", "cpu", caps), {"matmul": 0.5, "image forward": forward})
    assert line.endswith(verdict) or f": {verdict} (" in line
    assert f"image forward {forward:.2f}× fp32" in line and choose("auto", "cpu", caps).reason in line


def test_bench_targets_follow_autos_category():
    import pandas as pd

    bench = _bench()
    rows = [("fp32", "images", 20.0, 50.0), ("fp32", "image forward", 30.0, 81.0), ("fp32", "captions", 60.0, None),
            ("bf16", "images", 90.0, 60.0), ("bf16", "image forward", 100.0, 65.0), ("bf16", "captions", 150.0, None)]
    frame = pd.DataFrame([{"precision": p, "kind": k, "per_s": r, "pct_ceiling": c, "pct_bf16_ceiling": c,
                           "x_fp32": r / {"images": 20.0, "image forward": 30.0, "captions": 60.0}[k],
                           "max_abs_diff": 0.0 if p == "fp32" else 0.002, "same_top1": True}
                          for p, k, r, c in rows])
    without = dict(bench.targets(frame, "fp32", fast_bf16=False))
    assert [met for text, met in without.items() if "ceiling" in text] == [True, False]  # 81% and 50% against 80%
    assert all("fp32 ceiling" in text for text in without if "ceiling" in text)
    with_bf16 = dict(bench.targets(frame, "bf16", fast_bf16=True))
    assert [met for text, met in with_bf16.items() if "×" in text] == [True, False]  # images 4.5×, captions 2.5×
    assert [met for text, met in with_bf16.items() if "bf16 ceiling" in text] == [True]  # 60% against 50%
    assert not any("fp32 ceiling" in text for text in with_bf16)


def _numbers(path: Path) -> str:
    """An output file's numbers (everything but its provenance), as the bytes JSON writes them."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    return json.dumps({k: v for k, v in payload.items() if k != "provenance"})


def test_match_default_is_fp32_byte_for_byte_even_on_an_amx_machine(monkeypatch, tiny_model_dir, tmp_path):
    """On an AMX-BF16 CPU (injected here, on any CPU) ``auto`` is bf16: match's default must not be."""
    monkeypatch.delenv(AUTO_ENV)
    monkeypatch.setattr("labclip.precision.cpu_capabilities", lambda: AMX)
    files = {}
    for name, extra in (("default", []), ("fp32", ["--precision", "fp32"]), ("auto", ["--precision", "auto"])):
        files[name] = tmp_path / f"{name}.json"
        assert main(["match", str(DEFAULT_CAPTIONS), "--model", str(tiny_model_dir), "--no-cache",
                     "--out", str(files[name]), *extra]) == 0
    models = {k: json.loads(f.read_text())["provenance"]["model"] for k, f in files.items()}
    assert _numbers(files["default"]) == _numbers(files["fp32"])
    assert (models["default"]["precision"], models["default"]["precision_requested"]) == ("fp32", "fp32")
    # the default is recorded as the default, with the rule; an explicit fp32 as requested
    assert models["default"]["precision_reason"] == f"default for match: {DEFAULT_RULE}"
    assert models["default"]["precision_default"] is True
    assert (models["fp32"]["precision_reason"], models["fp32"]["precision_default"]) == ("requested", False)
    assert models["auto"]["precision_reason"] == f"{AUTO_RULE}: this CPU has AMX-BF16"
    assert (models["auto"]["precision"], models["auto"]["precision_requested"]) == ("bf16", "auto")  # injection took
    assert _numbers(files["auto"]) != _numbers(files["fp32"])  # what a default of auto would have published there


@pytest.mark.parametrize("amx", [False, True])
def test_tag_records_auto_and_what_it_resolved_to(monkeypatch, tiny_model_dir, tmp_path, amx):
    import pandas as pd

    if amx:
        monkeypatch.delenv(AUTO_ENV)
        monkeypatch.setattr("labclip.precision.cpu_capabilities", lambda: AMX)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_images(3)):
        image.save(folder / f"{i}.png")
    out = tmp_path / "tags.csv"
    assert main(["tag", str(folder), "--labels", "cat,dog", "--model", str(tiny_model_dir), "--no-cache",
                 "--out", str(out)]) == 0
    rows = pd.read_csv(out, dtype=str)
    assert set(rows.precision_requested) == {"auto"} and set(rows.precision_default) == {"True"}
    assert set(rows.precision) == {"bf16" if amx else "fp32"}
    match = tmp_path / "m.csv"
    assert main(["match", str(DEFAULT_CAPTIONS), "--model", str(tiny_model_dir), "--no-cache", "--out", str(match)]) == 0
    summary = dict(pd.read_csv(match.with_name("m.summary.csv"), dtype=str).values)
    assert (summary["precision"], summary["precision_requested"]) == ("fp32", "fp32")
    assert (summary["precision_default"], summary["precision_reason"]) == ("True", f"default for match: {DEFAULT_RULE}")
    assert main(["match", str(DEFAULT_CAPTIONS), "--model", str(tiny_model_dir), "--no-cache", "--out", str(match),
                 "--precision", "fp32"]) == 0
    summary = dict(pd.read_csv(match.with_name("m.summary.csv"), dtype=str).values)
    assert (summary["precision_default"], summary["precision_reason"]) == ("False", "requested")
    assert set(pd.read_csv(match, dtype=str).precision) == {"fp32"}


def _bf16_hardware() -> str | None:
    """The device where ``auto`` really is bf16 on this machine (a CUDA device with bf16, a CPU the rule gives bf16),
    or none."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "cuda"
    return "cpu" if choose("auto", "cpu", precision.cpu_capabilities()).name == "bf16" else None


@pytest.mark.skipif(_bf16_hardware() is None, reason="auto is fp32 on this machine's CPU and it has no CUDA device; "
                    "the choice is tested with injected capabilities on every machine")
def test_auto_on_this_machine_is_bf16_and_close_to_fp32(monkeypatch, tiny_model_dir):
    monkeypatch.delenv(AUTO_ENV)
    device = _bf16_hardware()
    auto = load_model(tiny_model_dir, device=device, cache=False, precision="auto")
    fp32 = load_model(tiny_model_dir, device=device, cache=False, precision="fp32")
    assert auto.precision.name == "bf16" and auto.precision.reason.startswith(AUTO_RULE)
    images = _images()
    ours, ref = auto.encode_images(images), fp32.encode_images(images)
    assert ours.dtype == np.float32 and 0 < np.abs(ours - ref).max() < 0.05
    assert (similarity(ours, auto.encode_texts(TEXTS)).argmax(1) == similarity(ref, fp32.encode_texts(TEXTS)).argmax(1)).all()


@pytest.mark.skipif(_bf16_hardware() is not None, reason="auto is bf16 on this machine "
                    "(test_auto_on_this_machine_is_bf16_and_close_to_fp32 covers it)")
def test_auto_on_this_machine_is_fp32_and_exact(monkeypatch, tiny_model_dir):
    monkeypatch.delenv(AUTO_ENV)
    auto = load_model(tiny_model_dir, cache=False, precision="auto")
    assert auto.precision.name == "fp32" and "AMX-BF16" in auto.precision.reason
    images = _images()
    np.testing.assert_array_equal(auto.encode_images(images),
                                  load_model(tiny_model_dir, cache=False, precision="fp32").encode_images(images))


def test_fp32_numbers_as_printed_do_not_depend_on_batch_size_or_threads(tiny_model_dir, tmp_path, capsys):
    """Batch 1 vs 32, one thread vs all: the report's prose, the console table and the recorded numbers (what the
    JSON holds) as they are printed are the same. The raw floats are not always bit-identical (float32 rounding: a matrix-vector product
    for one row vs a matrix product for 32, and each thread's share of a reduction), so the test also bounds
    that difference, far below the three decimals and the counts that are printed."""
    from labclip.data import load_captions
    from labclip.lab import narrative
    from labclip.lab.experiment import Experiment
    from labclip.labels import format_metric

    captions = load_captions(DEFAULT_CAPTIONS)
    threads = torch.get_num_threads()
    shown, raw = {}, {}
    try:
        for n_threads in dict.fromkeys((1, os.cpu_count() or 1)):
            torch.set_num_threads(n_threads)
            for batch in (1, 32):
                model = load_model(tiny_model_dir, cache=False, precision="fp32")
                exp = Experiment(model=model, captions=captions, top_k=3, batch_size=batch)
                prose = [narrative.abstract(exp, ["en", "ru"]), narrative.discussion(exp, ["en", "ru"])]
                prose += [narrative.results(exp.matching(lang)) for lang in ("en", "ru")]
                m = exp.matching("en")
                raw[n_threads, batch] = m.sim
                recorded = [format_metric(k, v, m.metrics.n) for k, v in {**m.metrics.to_dict(), **m.estimates()}.items()]
                recorded += [format_metric(k, v, m.metrics.n) for row in m.topk.to_dict("records") for k, v in row.items()]
                capsys.readouterr()
                assert main(["match", str(DEFAULT_CAPTIONS), "--model", str(tiny_model_dir), "--no-cache",
                             "--batch-size", str(batch)]) == 0
                console = capsys.readouterr().out
                shown[n_threads, batch] = (prose, console, recorded)
    finally:
        torch.set_num_threads(threads)
    first = next(iter(shown.values()))
    assert all(s == first for s in shown.values()), [k for k, s in shown.items() if s != first]
    reference = next(iter(raw.values()))
    assert max(np.abs(sim - reference).max() for sim in raw.values()) < 1e-6


@pytest.mark.parametrize(("fixture", "amd", "bf16"), [
    ("amd_epyc_avx512_bf16.txt", True, True),
    ("intel_xeon_avx512_bf16_no_amx.txt", False, False),
])
@pytest.mark.parametrize("torch_detects", [True, False])
def test_cpu_capabilities_read_the_vendor_from_cpuinfo(monkeypatch, fixture, amd, bf16, torch_detects):
    """/proc/cpuinfo as Linux writes it names the vendor; the flags come from torch where it detects them, else
    from the file. An AMD CPU with AVX-512-BF16 gets bf16, an Intel one without AMX fp32."""
    monkeypatch.setattr(precision, "CPUINFO", CPUINFO / fixture)
    text = (CPUINFO / fixture).read_text()
    flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
    detected = {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": False, "cpu_name": "elsewhere"}
    monkeypatch.setattr(torch.cpu, "get_capabilities", (lambda: detected) if torch_detects else None, raising=False)
    caps = precision.cpu_capabilities()
    assert caps["amd"] is amd and caps["avx512_bf16"] is True and "cpu_name" not in caps
    assert not torch_detects or set(caps) == {"avx512_bf16", "amx_bf16", "amd"}
    assert choose("auto", "cpu", caps).name == ("bf16" if bf16 else "fp32")


def test_without_cpuinfo_the_vendor_comes_from_torch(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    for name, amd in (("AMD EPYC", True), ("Intel(R) Xeon(R)", False)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda name=name: {"avx512_bf16": True, "cpu_name": name},
                            raising=False)
        assert precision.cpu_capabilities()["amd"] is amd
