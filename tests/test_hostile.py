"""Hostile input and environment faults (issue 22): bad input is one line `labclip: error: ...` with exit 2 and
nothing written; a fault of the environment degrades (the cache) or stops cleanly (the output disk); nothing a
run created is left behind, and no machine path reaches a shared file."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin

from labclip import LabclipError
from labclip.cache import EmbeddingCache
from labclip.cli import main
from labclip.config import IMAGES_DIR, PROJ_ROOT
from labclip.data import load_captions
from labclip.images import load_image
from labclip.lab import report as rep


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    lines = [line for line in err.strip().splitlines() if not line.startswith("labclip: note: ")]  # untrained model
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("labclip: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def pair(tmp_path):
    """A two-image caption set in its own folder."""
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("cat.png", "red_car.png"):
        shutil.copy(IMAGES_DIR / name, folder / name)
    (folder / "c.csv").write_text("image,en\ncat.png,a cat\nred_car.png,a red car\n", encoding="utf-8")
    return folder


@pytest.fixture
def no_model(monkeypatch):
    """The report runner must stop before it asks about a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was checked or loaded before the inputs were")

    monkeypatch.setattr(rep.runner, "check_model_or_demo", refuse)


# --- 2: counts of 0 or less -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,fragment", [
    (["--batch-size", "-5"], "--batch-size: must be 1 or more, got -5"),
    (["--batch-size", "0"], "--batch-size: must be 1 or more, got 0"),
    (["--top-k", "-1"], "--top-k: must be 1 or more, got -1"),
    (["--top-k", "0"], "--top-k: must be 1 or more, got 0"),
])
def test_report_refuses_counts_below_one(capsys, tmp_path, no_model, argv, fragment):
    code, _, err = run(capsys, "report", "--model", "demo", "--no-pdf", "--out", tmp_path / "o", *argv)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text,fragment", [
    ("batch_size: -5\n", "'batch_size': must be 1 or more, got -5"),
    ("top_k: 0\n", "'top_k': must be 1 or more, got 0"),
    ("top_k: abc\n", "'top_k': expected a whole number, got 'abc'"),
    ("top_k: true\n", "'top_k': expected a whole number"),
])
def test_report_params_file_counts_are_checked_as_the_options_are(capsys, tmp_path, no_model, text, fragment):
    params = tmp_path / "p.yaml"
    params.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "report", "--model", "demo", "--no-pdf", "--params", params, "--out", tmp_path / "o")
    assert_user_error(code, err, "p.yaml", fragment)
    assert not (tmp_path / "o").exists()


def test_report_api_checks_parameters_before_any_model(tmp_path, no_model):
    for params in ({"top_k": "abc"}, {"batch_size": 0}, {"captions": ["a", "b"]}, {"strict": "yes"}):
        with pytest.raises(LabclipError, match="parameter"):
            rep.build_reports({"model": "demo", **params}, tmp_path / "o", notebooks=["01_matching"], pdf=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("batch_size", [0, -5])
def test_encoding_refuses_batches_below_one(tiny_model, batch_size):
    images = [IMAGES_DIR / "cat.png", IMAGES_DIR / "red_car.png"]
    with pytest.raises(LabclipError, match=f"batch_size: must be 1 or more, got {batch_size}"):
        tiny_model.encode_images(images, batch_size=batch_size)
    with pytest.raises(LabclipError, match="batch_size"):
        tiny_model.encode_texts(["a cat"], batch_size=batch_size)


# --- 3: YAML alias bombs --------------------------------------------------------------------------------------

def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(LabclipError, match="aliases") as err:
        rep.read_params(bomb)
    assert time.perf_counter() - start < 2
    assert "\n" not in str(err.value) and "bomb.yaml" in str(err.value)


def test_yaml_merge_key_alias_and_oversized_file_are_refused(tmp_path, capsys, no_model):
    merge = tmp_path / "merge.yaml"
    merge.write_text("base: &b {top_k: 3}\nother:\n  <<: *b\n", encoding="utf-8")
    big = tmp_path / "big.yaml"
    big.write_text("title: " + "x" * (2 << 20) + "\n", encoding="utf-8")  # 2 MiB
    for path, fragment in ((merge, "aliases"), (big, "MiB")):
        code, _, err = run(capsys, "report", "--model", "demo", "--params", path, "--out", tmp_path / "o")
        assert_user_error(code, err, path.name, fragment)


# --- 4: no machine paths in names -------------------------------------------------------------------------

def _machine_parts(path: Path) -> list[str]:
    return [p for p in path.parts if p not in ("/",)]


def test_image_names_are_never_relative_to_the_filesystem_root(pair, tmp_path):
    far = tmp_path / "far" / "away"
    far.mkdir(parents=True)
    shutil.copy(IMAGES_DIR / "pizza.png", far / "pizza.png")
    (pair / "link.png").symlink_to(far / "pizza.png")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(IMAGES_DIR / "coffee.png", other / "coffee.png")
    outside = (IMAGES_DIR / "astronaut.png").resolve()  # not under tmp_path: the common folder is /
    (pair / "h.csv").write_text(f"image,en\ncat.png,a cat\nlink.png,a pizza\n../other/coffee.png,coffee\n"
                                f"{outside},an astronaut\n", encoding="utf-8")
    names = load_captions(pair / "h.csv")["name"]
    assert len(set(names)) == 4
    machine = set(_machine_parts(tmp_path)) | set(_machine_parts(outside.parent))
    for name in names:
        assert not Path(name).is_absolute() and not set(Path(name).parts) & machine, names
    assert names[1].endswith("link.png")  # a link is named as written, not by where it points


def test_image_names_inside_the_set_keep_their_folders(pair):
    (pair / "cats").mkdir()
    shutil.copy(IMAGES_DIR / "cat.png", pair / "cats" / "a.png")
    (pair / "n.csv").write_text("image,en\ncats/a.png,a cat\n../set/red_car.png,a car\n", encoding="utf-8")
    assert load_captions(pair / "n.csv")["name"] == ["cats/a.png", "red_car.png"]
    default = load_captions(PROJ_ROOT / "data" / "captions" / "default.csv")
    assert all("/" not in n for n in default["name"])  # ../images/x.png beside the caption folder: x.png


def test_search_and_classify_files_hold_no_machine_paths(capsys, pair, tiny_model_dir, tmp_path):
    code, _, err = run(capsys, "search", pair, "a cat", "--model", tiny_model_dir, "--out", tmp_path / "s.csv")
    assert code == 0, err
    assert sorted(pd.read_csv(tmp_path / "s.csv")["image"]) == ["cat.png", "red_car.png"]
    code, _, err = run(capsys, "classify", (pair / "cat.png").resolve(), (pair / "red_car.png").resolve(),
                       "--labels", "cat,car", "--model", tiny_model_dir, "--out", tmp_path / "c.json")
    assert code == 0, err
    assert {row["image"] for row in json.loads((tmp_path / "c.json").read_text())["rows"]} == {"cat.png", "red_car.png"}
    for name in ("s.csv", "s.summary.csv", "c.json"):
        assert str(tmp_path) not in (tmp_path / name).read_text(encoding="utf-8")


def test_report_of_absolute_and_linked_images_shows_no_machine_path(pair, tmp_path):
    outside = (IMAGES_DIR / "astronaut.png").resolve()
    far = tmp_path / "far"
    far.mkdir()
    shutil.copy(IMAGES_DIR / "pizza.png", far / "pizza.png")
    (pair / "link.png").symlink_to(far / "pizza.png")
    (pair / "r.csv").write_text(f"image,en\ncat.png,a cat\nlink.png,a pizza\n{outside},an astronaut\n",
                                encoding="utf-8")
    out = tmp_path / "out"
    rep.build_reports({"model": "demo", "captions": str(pair / "r.csv"), "languages": ["en"], "top_k": 1}, out,
                      notebooks=["01_matching"], pdf=False)
    for name in ("01_matching.html", "01_matching.ipynb"):
        text = (out / name).read_text(encoding="utf-8")
        for machine in (str(tmp_path), str(outside.parent), "pytest-of-", "/work/"):
            assert machine not in text, (name, machine)
        assert "link.png" in text


# --- 5: tracebacks become one line ----------------------------------------------------------------------------

def _bomb_pngs(folder: Path) -> list[Path]:
    huge = PngImagePlugin.MAX_TEXT_CHUNK + 10
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * huge, zip=True)
    Image.new("RGB", (8, 8), "red").save(folder / "ztxt.png", pnginfo=info)
    Image.new("RGB", (8, 8), "red").save(folder / "iccp.png", icc_profile=b"\0" * huge)
    return [folder / "ztxt.png", folder / "iccp.png"]


def test_png_text_and_icc_bombs_are_one_line(pair, capsys, tiny_model_dir):
    for bomb in _bomb_pngs(pair):
        with pytest.raises(LabclipError, match="unreadable image"):
            load_image(bomb)
        (pair / "b.csv").write_text(f"image,en\ncat.png,a cat\n{bomb.name},a bomb\n", encoding="utf-8")
        code, _, err = run(capsys, "match", pair / "b.csv", "--model", tiny_model_dir)
        assert_user_error(code, err, "row 3", bomb.name)


def _looping(pair: Path) -> None:
    (pair / "loop_a.png").symlink_to("loop_b.png")
    (pair / "loop_b.png").symlink_to("loop_a.png")
    (pair / "loop.csv").write_text("image,en\ncat.png,a cat\nloop_a.png,a loop\n", encoding="utf-8")


def test_every_hostile_input_is_one_line(pair, capsys, tiny_model_dir, tmp_path):
    _looping(pair)
    (pair / "cl_a.csv").symlink_to("cl_b.csv")
    (pair / "cl_b.csv").symlink_to("cl_a.csv")
    (pair / "nul.csv").write_text('image,en\ncat.png,a cat\n"red\0car.png",a car\n', encoding="utf-8")
    (pair / "deep.jsonl").write_text('{"image": ' + "[" * 200_000 + "]" * 200_000 + "}\n", encoding="utf-8")
    cases = [
        (["match", pair / "loop.csv"], ["row 3", "symlink loop"]),
        (["match", pair / "cl_a.csv"], ["cl_a.csv", "symlink loop"]),
        (["match", pair / "nul.csv"], ["row 3", "NUL byte"]),
        (["match", pair / "deep.jsonl"], ["row 1", "nested too deeply"]),
        (["match", pair / "c.csv", "--model", "a" * 5000], ["5000 characters"]),
        (["classify", pair / "loop_a.png", "--labels", "a,b"], ["loop_a.png"]),
    ]
    for argv, fragments in cases:
        if "--model" not in argv:
            argv = [*argv, "--model", tiny_model_dir]
        code, _, err = run(capsys, *argv)
        assert_user_error(code, err, *fragments)


@pytest.mark.parametrize("text,fragment", [
    ("5\n", "not a int"),
    ("- a\n- b\n", "not a list"),
    ("captions: [a, b]\n", "'captions': expected a text"),
    ("languages: {en: 1}\n", "'languages': expected a list of names"),
    ("!!python/object/apply:os.system ['echo hi']\n", "unreadable parameter file"),
    ("top_k: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" * 200 + "\n", "unreadable parameter file"),
])
def test_malformed_params_files_are_one_line(capsys, tmp_path, no_model, text, fragment):
    params = tmp_path / "p.yaml"
    params.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "report", "--model", "demo", "--params", params, "--out", tmp_path / "o")
    assert_user_error(code, err, "p.yaml", fragment)


def test_all_zero_adapter_is_one_line(capsys, tiny_model, tiny_model_dir, tmp_path):
    from labclip.adapter import TextAdapter

    dim = tiny_model.dim
    adapter = TextAdapter(np.zeros((dim, dim), np.float32), np.zeros(dim, np.float32),
                          {"source_model": str(tiny_model_dir), "target_model": str(tiny_model_dir), "label": "zero"})
    path = adapter.save(tmp_path / "zero.safetensors")
    code, _, err = run(capsys, "match", "--model", f"{tiny_model_dir}+adapter:{path}", "--no-cache")
    assert_user_error(code, err, "zero.safetensors", "all zero")


# --- 6: environment faults: a read-only or full disk ----------------------------------------------------------

@pytest.fixture
def mount(tmp_path):
    """Mount a tmpfs (``size`` bytes, optionally read-only) at a folder; root only, unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mounted = []

    def make(name: str, size: str, readonly: bool = False, fill: int = 0) -> Path:
        target = tmp_path / name
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(target)
        if fill:
            with open(target / "filler", "wb", buffering=0) as f:  # up to ``fill`` bytes, or until the disk is full (-1)
                try:
                    while fill < 0 or f.tell() < fill:
                        f.write(b"\0" * 1024)
                except OSError:
                    pass
        if readonly:
            subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        return target

    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def _match_rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["model_revision"], errors="ignore")


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_match_runs_without_an_unwritable_cache_and_says_so_once(capsys, pair, tiny_model_dir, tmp_path, mount,
                                                                 monkeypatch, fault):
    cache = mount("cache", "64k", readonly=fault == "read-only", fill=60 * 1024 if fault == "full" else 0)
    monkeypatch.setenv("LABCLIP_CACHE", str(cache))
    code, _, err = run(capsys, "match", pair / "c.csv", "--model", tiny_model_dir, "--out", tmp_path / "m.csv")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith("labclip: warning: "), err
    code, _, err = run(capsys, "match", pair / "c.csv", "--model", tiny_model_dir, "--no-cache",
                       "--out", tmp_path / "ref.csv")
    assert code == 0, err
    pd.testing.assert_frame_equal(_match_rows(tmp_path / "m.csv"), _match_rows(tmp_path / "ref.csv"))


def test_full_out_disk_is_one_line_and_writes_neither_file(capsys, pair, tiny_model_dir, mount):
    out = mount("out", "16k", fill=-1)
    code, _, err = run(capsys, "match", pair / "c.csv", "--model", tiny_model_dir, "--no-cache",
                       "--out", out / "m.csv")
    assert_user_error(code, err, "m.csv", "No space left on device", "nothing was written")
    assert sorted(p.name for p in out.iterdir()) == ["filler"]


def test_full_tags_disk_is_one_line(capsys, pair, tiny_model_dir, mount):
    out = mount("tags", "16k", fill=-1)
    code, _, err = run(capsys, "tag", pair, "--labels", "cat,car", "--model", tiny_model_dir, "--no-cache",
                       "--out", out / "t.csv")
    assert_user_error(code, err, "t.csv", "No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["filler"]


# --- 7: corrupt cache entries are misses ------------------------------------------------------------------------

def _entry(cache: EmbeddingCache, key: str) -> Path:
    path = cache._path("images", key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return np.lib.format.magic(1, 0) + buffer.getvalue()[8:] + b"\0" * 64


def test_corrupt_cache_entries_are_misses_and_never_block(tmp_path):
    cache = EmbeddingCache(tmp_path, {"images": "ns"}, dim=8)
    _entry(cache, "aa1").write_bytes(_npy_claiming((1 << 40,)))   # a 4 TiB vector
    _entry(cache, "aa2").mkdir()                                   # a folder
    os.mkfifo(_entry(cache, "aa3"))                                # np.load would wait for a writer forever
    _entry(cache, "aa4").write_bytes(_npy_claiming((8,)))          # right header, zeros: not a unit vector
    results = {}

    def read() -> None:
        for key in ("aa1", "aa2", "aa3", "aa4"):
            results[key] = cache.get("images", key)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a cache entry blocked"
    assert results == dict.fromkeys(("aa1", "aa2", "aa3", "aa4"))
    assert cache.stats["images"].corrupt == 4
    vector = (np.ones(8) / np.sqrt(8)).astype(np.float32)
    cache.put("images", "bb1", vector)
    np.testing.assert_array_equal(cache.get("images", "bb1"), vector)


def test_encoding_over_a_corrupt_cache_gives_the_uncached_embeddings(tiny_model_dir, tmp_path):
    from labclip import load_model

    images = [IMAGES_DIR / "cat.png", IMAGES_DIR / "red_car.png"]
    cached = load_model(tiny_model_dir, cache=tmp_path / "c")
    first = cached.encode_images(images)
    for i, entry in enumerate(sorted((tmp_path / "c").rglob("*.npy"))):
        entry.unlink()
        if i == 0:
            entry.write_bytes(_npy_claiming((1 << 40,)))
        else:
            os.mkfifo(entry)
    again = load_model(tiny_model_dir, cache=tmp_path / "c")
    np.testing.assert_allclose(again.encode_images(images), first, atol=1e-6)
    assert again.cache.stats["images"].corrupt == 2


# --- 8: report inputs are checked before any model ----------------------------------------------------------------

def test_report_checks_labels_and_compare_models_before_any_model(capsys, tmp_path, no_model):
    labels = tmp_path / "labels"
    for cls in ("cat", "car"):
        (labels / cls).mkdir(parents=True)
        shutil.copy(IMAGES_DIR / ("cat.png" if cls == "cat" else "red_car.png"), labels / cls / "a.png")
    (labels / "car" / "empty.png").write_bytes(b"")
    out = tmp_path / "o"
    code, _, err = run(capsys, "report", "--model", "demo", "--no-pdf", "--labels", labels, "--out", out)
    assert_user_error(code, err, "empty.png")
    code, _, err = run(capsys, "report", "--model", "demo", "--no-pdf", "--compare-models", tmp_path / "nope",
                       "--out", out)
    assert_user_error(code, err, "--compare-models", "nope")
    assert not out.exists()


# --- 9: an interrupted report leaves nothing in the temporary folder -----------------------------------------------

def _interrupt(tmp_path: Path, sig: int, wait_for: str, pdf: bool) -> tuple[int, list[str]]:
    private = tmp_path / "tmp"
    private.mkdir()
    env = {**os.environ, "TMPDIR": str(private), "PYTHONPATH": str(PROJ_ROOT / "src")}
    argv = [sys.executable, "-m", "labclip", "report", "--model", "demo", "--notebooks", "01_matching",
            "--out", str(tmp_path / "out"), *([] if pdf else ["--no-pdf"])]
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    found = False
    while not found and time.monotonic() < deadline and proc.poll() is None:
        try:
            found = any(wait_for in " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error:
            pass
        time.sleep(0.05)
    assert found, f"the run never started {wait_for}"
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C
    else:
        os.kill(proc.pid, sig)
    err = proc.stderr.read()
    code = proc.wait(timeout=120)
    time.sleep(1)  # anything still running would write now
    left = sorted(str(p.relative_to(private)) for p in private.rglob("*")
                  if not p.relative_to(private).parts[0].startswith("torchinductor_"))  # torch's compile cache
    assert err.strip().splitlines()[-1].startswith("labclip: interrupted"), err
    return code, left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_while_the_kernel_starts_leaves_no_connection_file(tmp_path, sig):
    code, left = _interrupt(tmp_path, sig, "ipykernel", pdf=False)
    assert code == 130 and left == []


def test_interrupt_while_chromium_prints_leaves_no_profile_or_socket(tmp_path):
    try:
        rep.chromium()
    except LabclipError:
        pytest.skip("Chromium is not installed")
    code, left = _interrupt(tmp_path, signal.SIGTERM, "chrom", pdf=True)
    assert code == 130 and left == []


# --- 11: comparison.csv carries the provenance of compare --out -----------------------------------------------------

def test_comparison_csv_has_the_provenance_of_compare_out(capsys, pair, tiny_model, tiny_model_dir, tmp_path):
    from labclip import __version__
    from labclip.lab import compare

    (pair / "two.csv").write_text("image,en,ru\ncat.png,a cat,кошка\nred_car.png,a red car,красная машина\n",
                                  encoding="utf-8")
    captions = load_captions(pair / "two.csv")
    table = compare.compare(captions, ["en", "ru"], [str(tiny_model_dir)], translator=None, top_k=1)
    compare.save(table, tmp_path)
    saved = pd.read_csv(tmp_path / "comparison.csv", keep_default_na=False)
    code, _, err = run(capsys, "compare", pair / "two.csv", "--langs", "en", "ru", "--models", tiny_model_dir,
                       "--translator", "none", "--top-k", "1", "--out", tmp_path / "cli.csv", "--no-cache")
    assert code == 0, err
    cli = pd.read_csv(tmp_path / "cli.csv", keep_default_na=False)
    columns = ["model", "model_revision", "model_untrained", "requested_model", "labclip_version"]
    assert set(columns) <= set(saved.columns) and set(columns) <= set(cli.columns)
    pd.testing.assert_frame_equal(saved[columns], cli[columns])
    assert set(saved["labclip_version"]) == {__version__}
    assert saved["model_revision"].str.startswith("local:").all()
    assert str(tmp_path) not in (tmp_path / "comparison.csv").read_text(encoding="utf-8")
