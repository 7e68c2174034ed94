"""The report path: precision from ``make``/``labclip report`` to every notebook's model load and into its
provenance; the runner's model check decides the fallback as loading would, without reading weights."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import CLIPModel

from hub_replicas import write_replica
from labclip import LabclipError, encoders, load_model
from labclip.cli import main as labclip_main
from labclip.config import DEFAULT_CAPTIONS, PROJ_ROOT
from labclip.data import load_captions
from labclip.demo import demo_model_path
from labclip.hub import ModelUnavailable
from labclip.lab import report as rep
from labclip.lab.experiment import check_model_or_demo, load_model_or_demo

CACHED = ("openai/clip-vit-base-patch32", "sentence-transformers/clip-ViT-B-32-multilingual-v1")
STARTUP = """import os
from transformers import PreTrainedModel

_load = PreTrainedModel.from_pretrained.__func__


def _counted(cls, *args, **kwargs):
    with open(os.environ["LABCLIP_TEST_LOAD_LOG"], "a") as log:
        log.write(f"{os.getpid()} {cls.__name__}\\n")
    return _load(cls, *args, **kwargs)


PreTrainedModel.from_pretrained = classmethod(_counted)
"""


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labclip: error: "), lines
    return lines[0]


def _machine_paths(files, *extra) -> list:
    machine = [str(Path.home()), "/work/", str(PROJ_ROOT), os.environ["LABCLIP_CACHE"], "/tmp/", *map(str, extra)]
    return [(f.name, m) for f in files for m in machine if m in f.read_text(encoding="utf-8")]


def test_every_report_target_forwards_precision():
    makefile = (PROJ_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^PRECISION \?=\s*$", makefile, flags=re.MULTILINE)
    args = re.search(r"^REPORT_ARGS = (.*?)\n\n", makefile, flags=re.MULTILINE | re.DOTALL)[1]
    for target in ("report", "report-scale", "report-adapt"):
        recipe = re.search(rf"^{target}:.*?\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)[1]
        recipe = recipe.replace("$(REPORT_ARGS)", args)
        assert '$(if $(PRECISION),--precision "$(PRECISION)")' in recipe, target


def test_bad_precision_is_one_line_exit_2_before_any_model(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was checked or loaded before the precision")

    monkeypatch.setattr(rep.runner, "check_model_or_demo", no_model)
    out = tmp_path / "out"
    assert labclip_main(["report", "--model", "demo", "--precision", "int8", "--out", str(out)]) == 2
    assert "invalid choice: 'int8'" in _one_error_line(capsys)
    params = tmp_path / "p.yaml"
    params.write_text("model: demo\nprecision: bf8\n", encoding="utf-8")
    assert labclip_main(["report", "--params", str(params), "--no-pdf", "--out", str(out)]) == 2
    assert "unknown precision 'bf8'" in _one_error_line(capsys)
    assert not out.exists()


def test_bf16_report_records_bf16_and_its_numbers_are_bf16(tmp_path):
    out = tmp_path / "out"
    assert labclip_main(["report", "--model", "demo", "--precision", "bf16", "--langs", "en", "--notebooks",
                         "01_matching", "--no-pdf", "--out", str(out)]) == 0
    payload = json.loads((out / "01_matching.json").read_text(encoding="utf-8"))
    model = payload["provenance"]["model"]
    assert (model["precision"], model["precision_requested"], model["precision_reason"]) == ("bf16", "bf16", "requested")
    html = (out / "01_matching.html").read_text(encoding="utf-8")
    assert re.search(r"model: precision</td>\s*<td[^>]*>bf16<", html) and "model: precision reason" in html
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["parameters"]["precision"] == "bf16"

    # Independently of labclip's encoder: the demo weights through transformers in fp32 and in bf16.
    captions = load_captions(DEFAULT_CAPTIONS, languages=["en"])
    fp32 = load_model("demo", precision="fp32", cache=False)
    pixels, tokens = fp32.pixel_values(captions["path"]), fp32.text.prepare(captions["en"])
    reference = CLIPModel.from_pretrained(demo_model_path()).eval()

    def unit(x: torch.Tensor) -> np.ndarray:
        return torch.nn.functional.normalize(getattr(x, "pooler_output", x).float(), dim=-1).numpy()

    with torch.inference_mode():
        image32, text32 = unit(reference.get_image_features(pixel_values=pixels)), unit(reference.get_text_features(**tokens))
        reference = reference.to(torch.bfloat16)
        image16 = unit(reference.get_image_features(pixel_values=pixels.bfloat16()))
        text16 = unit(reference.get_text_features(**tokens))
    bf16 = load_model("demo", precision="bf16", cache=False)
    encoded = bf16.encode_images(captions["path"])
    gap = np.abs(encoded - image32).max()
    assert 0 < gap < 0.02, gap  # bf16 embeddings: close to fp32, not equal
    assert np.allclose(fp32.encode_images(captions["path"]), image32, atol=1e-5)
    reported = payload["metrics"]["en"]["correct_mean"]
    from_fp32, from_bf16 = np.mean(np.sum(image32 * text32, 1)), np.mean(np.sum(image16 * text16, 1))
    assert 0 < abs(reported - from_fp32) < 0.01
    assert abs(reported - from_bf16) < abs(reported - from_fp32) / 10, (reported, from_bf16, from_fp32)


@pytest.fixture
def offline_replicas(tmp_path_factory, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path_factory.mktemp("hf-hub-replicas")
    for repo in CACHED:
        write_replica(cache, repo)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _decision(decide, name: str, strict: bool) -> tuple[str, str | None]:
    try:
        return "ok", decide(name, strict)
    except ModelUnavailable as err:
        return "unavailable", str(err)
    except LabclipError as err:
        return "error", str(err)


@pytest.fixture
def no_weights(monkeypatch):
    """While active, reading weights or building a model fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were read or a model was built")

    def install():
        monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
        monkeypatch.setattr("labclip.hub.load_weights", refuse)
        monkeypatch.setattr("safetensors.torch.load_file", refuse)
        monkeypatch.setattr(torch, "load", refuse)
        monkeypatch.setattr("labclip.model.demo_model_path", refuse)
        for family in list(encoders.LOADERS):
            monkeypatch.setitem(encoders.LOADERS, family, refuse)

    return install


@pytest.mark.parametrize(("name", "strict", "expected"), [
    ("openai/clip-vit-base-patch32", True, "ok"),  # a cached hub-layout replica
    ("ViT-B/32", False, "ok"),
    ("sentence-transformers/clip-ViT-B-32-multilingual-v1", True, "ok"),  # text tower paired with cached CLIP
    ("openai/clip-vit-base-patch16", False, "ok"),  # not cached, hub unreachable: the demo model, with the reason
    ("openai/clip-vit-base-patch16", True, "unavailable"),
    ("sentence-transformers/clip-ViT-B-32-multilingual-v1+openai/clip-vit-base-patch16", False, "ok"),
    ("./models/no-such-clip", False, "error"),
    ("not a model!", False, "error"),
    ("demo", True, "ok"),
    ("demo+adapter:./no-such-adapter", False, "error"),
    ("openai/clip-vit-base-patch16+adapter:./no-such-adapter", False, "unavailable"),  # no fallback with an adapter
])
def test_check_decides_as_loading_does_without_reading_weights(offline_replicas, no_weights, name, strict, expected):
    loaded = _decision(lambda n, s: load_model_or_demo(n, s)[1], name, strict)
    no_weights()
    checked = _decision(check_model_or_demo, name, strict)
    assert checked == loaded and checked[0] == expected
    if "patch16" in name and not strict:
        assert "hub cannot be reached" in checked[1]


def test_check_of_local_folders(tmp_path, tiny_model_dir, no_weights):
    empty = tmp_path / "empty"
    empty.mkdir()
    loaded = [_decision(lambda n, s: load_model_or_demo(n, s)[1], str(p), False)[0] for p in (tiny_model_dir, empty)]
    no_weights()
    checked = [_decision(check_model_or_demo, str(p), False)[0] for p in (tiny_model_dir, empty)]
    assert checked == loaded == ["ok", "error"]


def test_report_loads_weights_once_per_notebook_and_never_to_check(tmp_path, tiny_model_dir, monkeypatch):
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-count-loads.py").write_text(STARTUP, encoding="utf-8")
    log = tmp_path / "loads.log"
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # the notebooks' kernels count their loads
    monkeypatch.setenv("LABCLIP_TEST_LOAD_LOG", str(log))
    here = []
    load = transformers.PreTrainedModel.from_pretrained.__func__
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: here.append(cls.__name__) or load(cls, *a, **k)))
    out = tmp_path / "out"
    notebooks = ["01_matching", "04_zeroshot"]
    assert labclip_main(["report", "--model", str(tiny_model_dir), "--langs", "en", "--notebooks", *notebooks,
                         "--no-pdf", "--out", str(out)]) == 0
    assert here == [], "the runner's model check loaded weights"
    kernels = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        pid, model_class = line.split()
        kernels.setdefault(pid, []).append(model_class)
    assert sorted(kernels.values()) == [["CLIPModel"]] * len(notebooks)
    run = (out / "latest").resolve()
    assert not _machine_paths(sorted(run.glob("*.ipynb")), tiny_model_dir)
    executed = json.loads((run / "01_matching.ipynb").read_text(encoding="utf-8"))
    assert executed["metadata"]["papermill"]["parameters"]["model"] == tiny_model_dir.name
    assert executed["metadata"]["papermill"]["parameters"]["output_dir"] == run.name


def test_check_decides_as_loading_does_for_ids_the_hub_does_not_know(fake_hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub)
    for name, near in (("openai/clip-vit-base-patch23", "openai/clip-vit-base-patch32"), ("ViT-B/23", "ViT-B/32")):
        checked = _decision(check_model_or_demo, name, False)
        assert checked == _decision(lambda n, s: load_model_or_demo(n, s)[1], name, False)
        assert checked[0] == "error" and f"did you mean '{near}'" in checked[1]


def test_every_lab_entry_point_loads_in_the_precision_asked(monkeypatch):
    """What the notebooks call with their ``precision`` parameter passes it to the model load."""
    from labclip.lab import adapt, compare, experiment, runs, scale

    asked = []

    def spy(name, **kwargs):
        asked.append((name, kwargs["precision"]))
        return load_model(name, **kwargs)

    monkeypatch.setattr(runs, "load_model", spy)  # the one loader of every run
    captions = load_captions(DEFAULT_CAPTIONS, languages=["en", "ru"])
    run = runs.start(experiment.MATCHING, "demo", languages=["en"], precision="bf16")
    zeroshot = runs.start(experiment.ZEROSHOT, "demo", precision="bf16")
    assert run.model.precision.name == zeroshot.model.precision.name == "bf16"
    compare.compare(captions, ["en"], [run.model, "demo"], None, precision="bf16")
    scaled = runs.start(scale.SCALE, ["demo"], dataset=DEFAULT_CAPTIONS, languages=["en"], precision="bf16")
    shown = scale.provenance(scaled, scale.save(scaled, None))  # the scale report's provenance block
    assert "demo → demo (bf16: requested)" in shown.data
    assert runs.start(adapt.TEXT_ADAPTER, "demo", precision="bf16", folds=2).model.precision.name == "bf16"
    assert asked == [("demo", "bf16")] * 5


AMX_STARTUP = """import os

import labclip.precision as precision

precision.cpu_capabilities = lambda: {"amx_bf16": True, "amx_tile": True, "avx512_bf16": True}
with open(os.environ["LABCLIP_TEST_AUTO_LOG"], "a") as log:
    log.write(precision.choose("auto").name + "\\n")
"""


def test_a_report_given_fp32_records_it_as_requested(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    assert labclip_main(["report", "--model", str(tiny_model_dir), "--notebooks", "03_lab_report", "--no-pdf",
                         "--precision", "fp32", "--out", str(out)]) == 0
    model = json.loads((out / "03_lab_report.json").read_text(encoding="utf-8"))["provenance"]["model"]
    assert (model["precision"], model["precision_requested"], model["precision_reason"], model["precision_default"]) \
        == ("fp32", "fp32", "requested", False)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["precision"] == {"03_lab_report": {"requested": "fp32", "used": "fp32", "reason": "requested",
                                                  "default": False}}


def test_reports_are_fp32_by_default_in_kernels_on_an_amx_machine(tmp_path, tiny_model_dir, monkeypatch):
    """The failure seen on AMX-BF16 Xeons, on any CPU: each notebook kernel gets AMX-BF16 capabilities and no pin,
    so ``auto`` would be bf16 there; the default report is still fp32, and its prose equals fp32 metrics."""
    from labclip import match_metrics, similarity
    from labclip.lab.narrative import share
    from labclip.precision import AUTO_ENV, DEFAULT_RULE

    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-amx.py").write_text(AMX_STARTUP, encoding="utf-8")
    log = tmp_path / "auto.log"
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("LABCLIP_TEST_AUTO_LOG", str(log))
    monkeypatch.delenv(AUTO_ENV)
    out = tmp_path / "out"
    assert labclip_main(["report", "--model", str(tiny_model_dir), "--notebooks", "03_lab_report", "--no-pdf",
                         "--out", str(out)]) == 0
    assert log.read_text().split() == ["bf16"]  # the kernel was an AMX machine: auto would have been bf16
    model = json.loads((out / "03_lab_report.json").read_text(encoding="utf-8"))["provenance"]["model"]
    # nothing was asked for: the notebook's default from the table, recorded as the default with the rule
    reason = f"default for 03_lab_report: {DEFAULT_RULE}"
    assert (model["precision"], model["precision_requested"], model["precision_reason"], model["precision_default"]) \
        == ("fp32", "fp32", reason, True)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["precision"] == {"03_lab_report": {"requested": "fp32", "used": "fp32", "reason": reason, "default": True}}
    html = (out / "03_lab_report.html").read_text(encoding="utf-8")
    assert re.search(r"model: precision reason</td>\s*<td[^>]*>default for 03_lab_report: numbers read one by one", html)
    monkeypatch.setenv(AUTO_ENV, "fp32")
    reference = load_model(tiny_model_dir, precision="fp32", cache=False)
    captions = load_captions(DEFAULT_CAPTIONS)
    images = reference.encode_images(captions["path"])
    for lang in ("en", "ru"):
        m = match_metrics(similarity(images, reference.encode_texts(captions[lang])), 3, reference.logit_scale)
        assert f"top-1 {share(m.i2t.hits1, m.n)}" in html and f"top-1 {share(m.t2i.hits1, m.n)}" in html
        assert f"cosine {m.correct_min:.3f} to {m.correct_max:.3f}" in html
        assert f"wrong pairs: {m.wrong_min:.3f} to {m.wrong_max:.3f}" in html
