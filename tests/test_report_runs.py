"""How a report run starts, ends and publishes: inputs checked first, one run's files at a time,
nothing left behind by Ctrl-C, a Chromium timeout or a dead kernel, no machine paths in reports."""

import hashlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from PIL import Image

from labclip import LabclipError
from labclip.cli import main as labclip_main
from labclip.cli import report_parser
from labclip.config import IMAGES_DIR, PROJ_ROOT
from labclip.lab import report as rep
from labclip.lab.provenance import sha256_files

publish_ = importlib.import_module("labclip.lab.report.publish")  # the module (rep.publish is its function)


def _nothing_published(out: Path) -> None:
    assert not (out / "latest").exists()
    assert not [p for p in (out / "runs").iterdir() if not p.name.startswith("failed-")] if (out / "runs").exists() \
        else True


@pytest.fixture
def quick_notebooks(tmp_path, monkeypatch):
    """A notebooks folder whose ``01_matching`` runs in a second, and a ``02_languages`` that kills its kernel."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    params = new_code_cell("model = 'demo'\noutput_dir = None", metadata={"tags": ["parameters"]})
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    for name, code in (("01_matching", "print('hello')"), ("02_languages", "import os\nos._exit(1)")):
        nbformat.write(new_notebook(cells=[params, new_code_cell(code)], metadata=meta), folder / f"{name}.ipynb")
    monkeypatch.setattr(rep.execute, "NOTEBOOKS_DIR", folder)
    monkeypatch.setattr(rep.runner, "check_model_or_demo", lambda name, strict: None)
    return folder


def test_dead_kernel_publishes_nothing(tmp_path, quick_notebooks):
    out = tmp_path / "out"
    with pytest.raises(LabclipError, match=r"notebook 02_languages stopped \(DeadKernelError") as err:
        rep.build_reports({}, out, notebooks=["01_matching", "02_languages"], pdf=False)
    assert "\n" not in str(err.value)
    _nothing_published(out)
    assert not list((out / "runs").glob(".*"))


def test_chromium_timeout_stops_it_and_publishes_nothing(tmp_path, quick_notebooks, monkeypatch):
    fake = tmp_path / "chromium"
    pid_file = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nsleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setattr(rep.render, "chromium", lambda: str(fake))
    monkeypatch.setattr(rep.render, "PDF_TIMEOUT_S", 3)
    out = tmp_path / "out"
    rep.build_reports({}, out, notebooks=["01_matching"], pdf=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(LabclipError, match=r"Chromium did not print 01_matching.html to PDF within 3 s"):
        rep.build_reports({}, out, notebooks=["01_matching"], pdf=True)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list((out / "runs").glob(".*")) and len(list((out / "runs").iterdir())) == 1


def test_ctrl_c_exits_130_in_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "labclip", "report", "--model", "demo", "--no-pdf", "--notebooks",
                             "01_matching", "--out", str(out)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(PROJ_ROOT / "src")}, start_new_session=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "running 01_matching" in line:
            break
    psutil = pytest.importorskip("psutil")
    deadline = time.monotonic() + 60
    while not (started := psutil.Process(proc.pid).children(recursive=True)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started, "the runner started no kernel"
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground group
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130
    lines = [line for line in rest.splitlines() if line.strip()]
    assert lines[-1] == f"labclip: interrupted; nothing published, earlier reports in {out} are unchanged"
    assert all(line.startswith("labclip: ") for line in lines), lines  # progress lines at most, no traceback
    _nothing_published(out)
    assert not list((out / "runs").glob(".*"))
    time.sleep(1)
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, "the kernel outlived the interrupted run"


def _stage(out: Path, run_id: str, names=("01_matching.html", "01_matching.json")) -> Path:
    """A finished run's staging folder as build_reports leaves it: the run's files and its run.json."""
    staging = out / "runs" / f".{run_id}.partial"
    staging.mkdir(parents=True)
    for name in names:
        (staging / name).write_text(run_id)
    (staging / "run.json").write_text(json.dumps({"run_id": run_id}))
    return staging


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # a publisher that crashes fails
def test_concurrent_publishing_never_mixes_runs(tmp_path):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    names = ("01_matching.html", "01_matching.json")
    stop = threading.Event()
    mixed: list[set] = []  # files of several runs, or a run missing a file, seen through latest/

    def run(worker: int) -> None:
        for i in range(25):
            run_id = f"2026010{worker}T000{i:03d}Z-00000{worker}"
            rep.publish(_stage(out, run_id, names), out, run_id)

    def read() -> None:
        while not stop.is_set():
            try:
                run = (out / "latest").resolve(strict=True)  # what a reader of the report names sees now
                seen = {(run / name).read_text() for name in names}
            except FileNotFoundError:
                continue  # before the first publish, or an old run pruned while being read
            if seen != {run.name}:
                mixed.append(seen)
            assert all(os.readlink(out / name) == f"latest/{name}" for name in names)

    reader = threading.Thread(target=read)
    reader.start()
    workers = [threading.Thread(target=run, args=(w,)) for w in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    reader.join()
    assert not mixed
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) <= rep.KEEP_RUNS + 1 and not [r for r in runs if r.startswith(".")]
    latest = os.readlink(out / "latest")
    assert {(out / name).read_text() for name in names} == {latest.split("/")[-1]}


def test_a_run_is_never_pruned_while_it_is_published(tmp_path, monkeypatch):
    """Deterministic: an older run is stopped between moving its folder in and linking it, and a newer run
    publishes then. The newer run must neither delete the older run's folder nor leave it half-published."""
    out = tmp_path / "out"
    for i in range(rep.KEEP_RUNS):
        run_id = f"20260102T00000{i}Z-aaaaaa"
        rep.publish(_stage(out, run_id), out, run_id)
    old_id, new_id = "20260101T000000Z-bbbbbb", "20260103T000000Z-cccccc"  # older than every run above, and newer
    old, new = _stage(out, old_id), _stage(out, new_id)
    moved, resume = threading.Event(), threading.Event()
    link = publish_._link

    def paused_link(path, target):  # the older run, after its folder was moved into runs/, before any link
        if threading.current_thread().name == "older" and not moved.is_set():
            moved.set()
            assert resume.wait(30)
        return link(path, target)

    monkeypatch.setattr(publish_, "_link", paused_link)
    errors = []

    def publish(staging, run_id):
        try:
            rep.publish(staging, out, run_id)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    older = threading.Thread(target=publish, args=(old, old_id), name="older")
    older.start()
    assert moved.wait(30)
    newer = threading.Thread(target=publish, args=(new, new_id), name="newer")
    newer.start()
    newer.join(timeout=5)  # the old code published and pruned here, while the older run was half-published
    resume.set()
    older.join(30)
    newer.join(30)
    assert not errors, errors
    latest = (out / "latest").resolve(strict=True)  # the old code: latest named the older run, pruned meanwhile
    assert json.loads((latest / "run.json").read_text())["run_id"] == latest.name
    assert (out / "01_matching.html").read_text() == latest.name  # the names show the run latest names
    assert (out / "runs" / new_id / "run.json").is_file()


def test_pruning_keeps_newer_runs_and_folders_labclip_did_not_write(tmp_path):
    out = tmp_path / "out"
    newer = [f"20260105T00000{i}Z-aaaaaa" for i in range(rep.KEEP_RUNS + 2)]
    for run_id in newer:
        rep.publish(_stage(out, run_id), out, run_id)
    assert sorted(p.name for p in (out / "runs").iterdir()) == newer[-rep.KEEP_RUNS:]
    theirs = out / "runs" / "20250101T000000Z-abcdef"  # a run id's name, but no run.json of labclip's
    theirs.mkdir()
    (theirs / "events.out.tfevents").write_text("user data")
    tensorboard = out / "runs" / "Dec05_10-00-00_host"
    tensorboard.mkdir()
    late = "20260104T000000Z-dddddd"  # started before the runs above, finished after them
    rep.publish(_stage(out, late), out, late)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        [*newer[-rep.KEEP_RUNS:], late, theirs.name, tensorboard.name])
    assert (theirs / "events.out.tfevents").read_text() == "user data"


def test_inputs_and_out_are_checked_before_any_model_loads(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(rep.runner, "check_model_or_demo", no_model)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    missing = tmp_path / "c.csv"
    missing.write_text("image,en\nghost.png,a ghost\n")
    cases = [
        (["--out", str(blocker / "reports")], "is a file, not a folder"),
        (["--captions", str(missing), "--out", str(tmp_path / "o")], "row 2: image 'ghost.png' not found"),
        (["--image-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], "image '../images/astronaut.png' not found"),
        (["--labels", str(tmp_path / "nolabels.csv"), "--out", str(tmp_path / "o")], "no such folder or CSV file"),
    ]
    for argv, message in cases:
        assert labclip_main(["report", "--model", "demo", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("labclip: error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def own_folder(tmp_path):
    """An instructor's folder: images beside captions.csv and labels.csv, names shared with bundled images."""
    folder = tmp_path / "lab"
    folder.mkdir()
    colours = {"coffee.png": (0, 90, 200), "horse.png": (250, 250, 0), "cat.png": (10, 200, 10)}
    for name, colour in colours.items():
        Image.new("RGB", (32, 32), colour).save(folder / name)
    (folder / "captions.csv").write_text("image,en,notes\ncoffee.png,a blue square,x\nhorse.png,a yellow square,y\n"
                                         "cat.png,a green square,z\n", encoding="utf-8")
    (folder / "labels.csv").write_text("image,en\ncoffee.png,blue\nhorse.png,yellow\ncat.png,green\n", encoding="utf-8")
    return folder


def test_own_folder_through_cli_match(own_folder, tmp_path, capsys):
    from labclip.cli import main

    assert main(["match", str(own_folder / "captions.csv"), "--model", "demo", "--out", str(tmp_path / "m.json")]) == 0
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert {r["image"] for r in rows} == {"coffee.png", "horse.png", "cat.png"}
    # The cached image embeddings are keyed by file content: the user's images, not the bundled ones.
    from labclip import load_model

    model = load_model("demo")
    model.encode_images([own_folder / n for n in ("coffee.png", "horse.png", "cat.png")])
    assert model.cache.summary().startswith("3 images from the cache")
    assert _sha(own_folder / "coffee.png") != _sha(IMAGES_DIR / "coffee.png")


def test_own_folder_report_uses_its_images_and_shows_no_machine_paths(own_folder, tmp_path):
    out = tmp_path / "out"
    assert labclip_main(["report", "--model", "demo", "--captions", str(own_folder / "captions.csv"), "--labels",
                         str(own_folder / "labels.csv"), "--langs", "en", "--notebooks", "01_matching", "04_zeroshot",
                         "--no-pdf", "--out", str(out)]) == 0
    prov = json.loads((out / "01_matching.json").read_text())["provenance"]
    users = [own_folder / n for n in ("coffee.png", "horse.png", "cat.png")]
    assert prov["images_sha256"] == sha256_files(users) != sha256_files([IMAGES_DIR / p.name for p in users])
    assert prov["captions_file"] == "captions.csv" and prov["model"]["name"] == "demo"
    assert prov["model"]["source"].startswith("demo-model-v")  # the cache folder by its name
    zeroshot = json.loads((out / "04_zeroshot.json").read_text())["provenance"]
    assert zeroshot["images_sha256"] == sha256_files(users)
    machine = [str(tmp_path), str(Path.home()), "/work/", str(PROJ_ROOT), os.environ["LABCLIP_CACHE"], "/tmp/"]
    assert len(list(out.glob("runs/*/*.ipynb"))) == 2  # the executed notebooks, kept beside each run's pages
    for file in [*out.glob("*.html"), *out.glob("*.json"), *out.glob("runs/*/*.ipynb")]:
        text = file.read_text(encoding="utf-8")
        found = [m for m in machine if m in text]
        assert not found, (file.name, found, re.findall(r".{40}(?:/tmp/|/work/).{40}", text)[:3])


def test_every_runner_parameter_has_a_make_variable_and_a_readme_row():
    makefile = (PROJ_ROOT / "Makefile").read_text(encoding="utf-8")
    forwarded = dict(re.findall(r"\$\(if \$\((\w+)\),(--[\w-]+)", makefile))
    flags = {a.option_strings[0] for a in report_parser()._actions if a.option_strings}
    assert set(forwarded.values()) <= flags
    dests = {a.option_strings[0]: a.dest for a in report_parser()._actions if a.option_strings}
    names = {"langs": "languages", "template_sets": "template_sets"}
    covered = {names.get(dests[f].replace("-", "_"), dests[f]) for f in forwarded.values()}
    assert set(rep.PARAMETERS) <= covered, set(rep.PARAMETERS) - covered
    table = (PROJ_ROOT / "README.md").read_text(encoding="utf-8").split("## Parameters", 1)[1]
    for variable in forwarded:
        assert re.search(rf"^\| `{variable}` \|", table, flags=re.MULTILINE), variable


def _tree(folder: Path) -> dict:
    """Every file and folder under ``folder`` with its content (links by their target)."""
    return {str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def users_folder(tmp_path):
    """An ML project's folder: TensorBoard's runs/, an experiment's run.json-like log and a notes file."""
    folder = tmp_path / "project"
    for i in range(rep.KEEP_RUNS + 2):
        events = folder / "runs" / f"Dec0{i}_10-00-00_host"
        events.mkdir(parents=True)
        (events / "events.out.tfevents.1").write_bytes(b"tensorboard %d" % i)
    (folder / "notes.txt").write_text("my notes")
    return folder


def test_a_foreign_folder_is_refused_before_anything_runs(users_folder, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was checked before the output folder")

    monkeypatch.setattr(rep.runner, "check_model_or_demo", no_model)
    before = _tree(users_folder)
    assert labclip_main(["report", "--model", "demo", "--no-pdf", "--out", str(users_folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"labclip: error: output folder {users_folder} holds files labclip "
                                               "did not write (notes.txt, runs)") and "--into-existing" in err[0]
    assert _tree(users_folder) == before


@pytest.mark.parametrize(("theirs", "notebooks", "message"), [
    ("run.json", ["01_matching"], "run.json is not labclip's"),
    ("comparison.csv", ["01_matching", "02_languages"], "comparison.csv is not labclip's"),
    ("01_matching.html", ["01_matching"], "01_matching.html is not labclip's"),
    ("latest/", ["01_matching"], "latest is a folder labclip did not write"),
])
def test_names_labclip_would_replace_are_refused_up_front(users_folder, monkeypatch, capsys, theirs, notebooks,
                                                          message):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was checked before the output folder")

    monkeypatch.setattr(rep.runner, "check_model_or_demo", no_model)
    if theirs.endswith("/"):
        (users_folder / theirs).mkdir()
        (users_folder / theirs / "keep.txt").write_text("mine")
    else:
        (users_folder / theirs).write_text("mine")
    before = _tree(users_folder)
    assert labclip_main(["report", "--model", "demo", "--no-pdf", "--into-existing", "--notebooks", *notebooks,
                         "--out", str(users_folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labclip: error: ") and message in err[0], err
    assert _tree(users_folder) == before


def test_latest_as_a_real_folder_is_found_before_any_notebook_in_labclips_folder(tmp_path, quick_notebooks):
    out = tmp_path / "out"
    rep.build_reports({}, out, notebooks=["01_matching"], pdf=False)
    run = os.readlink(out / "latest")
    (out / "latest").unlink()
    (out / "latest").mkdir()
    before = _tree(out)
    with pytest.raises(LabclipError, match="latest is a folder labclip did not write"):
        rep.build_reports({}, out, notebooks=["01_matching"], pdf=False)
    assert _tree(out) == before and run.startswith("runs/")


def test_into_existing_keeps_every_user_file_and_folder(users_folder, quick_notebooks, monkeypatch):
    monkeypatch.setattr(publish_, "KEEP_RUNS", 1)
    before = _tree(users_folder)
    with pytest.raises(LabclipError, match="holds files labclip did not write"):
        rep.build_reports({}, users_folder, notebooks=["01_matching"], pdf=False)
    for _ in range(3):
        rep.build_reports({}, users_folder, notebooks=["01_matching"], pdf=False, into_existing=True)
    after = _tree(users_folder)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the user's changed or went
    ours = sorted(p.name for p in (users_folder / "runs").iterdir() if rep.RUN_ID.fullmatch(p.name))
    assert len(ours) == 1 and os.readlink(users_folder / "latest") == f"runs/{ours[0]}"
    assert (users_folder / rep.MARKER).is_file()
    rep.build_reports({}, users_folder, notebooks=["01_matching"], pdf=False)  # marked now: no flag needed


def test_labclips_own_folders_need_no_flag(tmp_path, quick_notebooks):
    fresh = tmp_path / "new" / "reports"
    rep.build_reports({}, fresh, notebooks=["01_matching"], pdf=False)
    assert (fresh / rep.MARKER).read_text() == rep.MARKER_TEXT
    empty = tmp_path / "empty"
    empty.mkdir()
    rep.build_reports({}, empty, notebooks=["01_matching"], pdf=False)
    (fresh / rep.MARKER).unlink()  # a folder from before the marker: latest links into runs/
    rep.build_reports({}, fresh, notebooks=["01_matching"], pdf=False)
    assert (PROJ_ROOT / "reports" / rep.MARKER).is_file()  # the checkout's reports/ (README, params) is labclip's


def test_a_run_never_prunes_a_newer_run(tmp_path):
    out = tmp_path / "out"
    newer = [f"20260106T00000{i}Z-eeeeee" for i in range(rep.KEEP_RUNS + 2)]
    for run_id in newer:  # finished by other runs that have not pruned yet
        folder = out / "runs" / run_id
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"run_id": run_id}))
    late = "20260101T000000Z-ffffff"
    rep.publish(_stage(out, late), out, late)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted([*newer, late])
    newest = "20260107T000000Z-ffffff"
    rep.publish(_stage(out, newest), out, newest)  # the newest run prunes the older ones beyond KEEP_RUNS
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted([*newer[-(rep.KEEP_RUNS - 1):], newest])


def _make_dry_run(target: str, tmp_path: Path, *variables: str) -> list[str]:
    """The commands ``make -n`` would run (make expands the recipe exactly as a real run does)."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-n", "-s", "-C", str(PROJ_ROOT), target, f"VENV={tmp_path / 'venv'}", *variables],
                            capture_output=True, text=True, check=True)
    return result.stdout.replace("\\\n", " ").splitlines()


@pytest.mark.parametrize("value,strict", [("1", True), ("yes", True), ("true", True), ("TRUE", True), ("on", True),
                                          ("0", False), ("no", False), ("false", False), ("False", False),
                                          ("off", False), ("", False), (" 0 ", False)])
@pytest.mark.parametrize("target", ["report", "report-scale"])
def test_make_strict_values(target, value, strict, tmp_path):
    lines = _make_dry_run(target, tmp_path, f"STRICT={value}", "DATASET=xtd10")
    runner = [line for line in lines if " -m labclip report " in line]
    assert len(runner) == 1, lines
    assert ("--strict" in runner[0]) is strict, runner[0]
    check = next(line for line in lines if "STRICT must be" in line)
    assert subprocess.run(["bash", "-c", check]).returncode == 0


def test_make_strict_unknown_value_is_one_error_line(tmp_path):
    lines = _make_dry_run("report", tmp_path, "STRICT=maybe")
    check = next(line for line in lines if "STRICT must be" in line)
    result = subprocess.run(["bash", "-c", check], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("labclip: error: STRICT must be")


def test_make_report_forwards_a_german_only_caption_set(tmp_path):
    """`make report CAPTIONS=… LANGS=de` is `labclip report --captions … --langs de` (run end to end in test_report)."""
    lines = _make_dry_run("report", tmp_path, "CAPTIONS=kurs/de.csv", "LANGS=de")
    runner = [line for line in lines if " -m labclip report " in line]
    assert len(runner) == 1 and '--captions "kurs/de.csv" --langs de' in runner[0] and "--strict" not in runner[0]
