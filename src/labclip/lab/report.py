"""``make report``: run the notebooks with papermill, render HTML with nbconvert and PDF with Chromium.

A run works in a hidden staging folder ``<out>/runs/.<run-id>.partial`` and, only when every
notebook succeeded, renames it to ``<out>/runs/<run-id>`` and switches the ``<out>/latest`` link
to it in one step. ``<out>/01_matching.html`` and the other top-level names are links into
``latest``, so they always show the files of one run. A failure or Ctrl-C removes the staging
folder and leaves earlier reports as they were; two runs at once each publish their own folder,
one after the other (a lock on the folder's marker file), and a run prunes only older runs.

labclip deletes and replaces only what it wrote: the output folder carries a marker file
(``.labclip-reports``); a non-empty folder without it is refused unless the user passes
``--into-existing``, and even then no file of the user's is replaced and only run folders that
labclip wrote are pruned. Whatever would block publishing is found before any notebook runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import write_text
from ..config import (
    DEFAULT_CAPTIONS,
    DEFAULT_LABELS,
    DEFAULT_MODEL,
    NOTEBOOKS_DIR,
    PROJ_ROOT,
    REPORTS_DIR,
    exists,
    shown_path,
)
from ..data import load_captions
from ..errors import LabclipError, at_least
from ..model import shown_model
from ..precision import DEFAULTS, PRECISIONS, choose
from .experiment import check_model_or_demo
from .provenance import Timings, now, package_versions

NOTEBOOKS = ("01_matching", "02_languages", "03_lab_report", "04_zeroshot")
SCALE_NOTEBOOK = "05_scale"  # run by `make report-scale DATASET=...`, not by default
CULTURES_NOTEBOOK = "07_cultures"  # run by `make report-cultures DATASET=...`, not by default
DATASET_NOTEBOOKS = (SCALE_NOTEBOOK, CULTURES_NOTEBOOK)  # the notebooks that read --dataset
OPTIONAL_NOTEBOOKS = (SCALE_NOTEBOOK, "06_adapt", CULTURES_NOTEBOOK, "08_finetune")  # run on request (make report-scale, ...)
KERNEL = "labclip"
PARAMETERS = ("model", "captions", "image_dir", "languages", "top_k", "batch_size", "title", "strict",
              "compare_models", "translator", "labels", "template_sets", "dataset", "reference", "precision")
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PDF_TIMEOUT_S = 180
KEEP_RUNS = 5
RUNS = "runs"
LATEST = "latest"
MARKER = ".labclip-reports"
MARKER_TEXT = ("labclip report publishes reports here: runs/<run-id>/ per run; latest and the report names link to "
               "the newest run.\nlabclip replaces only its own links and deletes only run folders it wrote.\n")
RUN_ID = re.compile(r"\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{6}")  # microseconds since this release
# Pages load nothing and run nothing: images are data: URIs, styles inline.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
       "base-uri 'none'; form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
# Chromium flags for printing: no network (every request goes to a proxy that does not exist,
# loopback included, and no host name resolves), no background services, a throw-away profile.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--disable-extensions", "--disable-default-apps", "--no-default-browser-check", "--mute-audio",
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
)
# Class that keeps a heading with the content that follows it (for display code that wraps both).
KEEP_TOGETHER = "labclip-keep"
# Class of a section's heading and lead paragraph (lab/present.py): kept whole and with the table or figure after it.
LEAD = "labclip-lead"
PRINT_CSS = f"""
<style>
@page {{
  size: A4; margin: 12mm 11mm 15mm 11mm;
  @bottom-center {{ content: counter(page) " / " counter(pages); font: 8pt "DejaVu Sans", sans-serif; color: #555; }}
}}
@media print {{
  body {{ font-size: 10pt; }}
  .jp-OutputArea-output img {{ max-width: 100% !important; max-height: 235mm; width: auto; height: auto !important;
    break-inside: avoid; object-fit: contain; }}
  table, .jp-OutputArea-child:has(table) {{ break-inside: auto; }}
  table {{ font-size: 7.5pt; }}
  .labclip-screen {{ display: none !important; }}
  tr, img, .{KEEP_TOGETHER} {{ break-inside: avoid; }}
  .jp-OutputArea-output, .jp-RenderedHTMLCommon {{ overflow: visible !important; }}
  .jp-OutputArea-child {{ display: block !important; overflow: visible !important; }}
  h1, h2, h3, h4 {{ break-after: avoid; }}
  /* A heading with its lead paragraph stays whole and with what follows (the first table rows, a figure), also
     across cells. Chromium honours break-after: avoid by breaking inside the block instead, between the heading
     and its sentence or inside the sentence, unless the block is also break-inside: avoid. */
  .{LEAD} {{ break-inside: avoid; break-after: avoid; }}
  .jp-OutputArea-child:has(> .jp-RenderedMarkdown :is(h1, h2, h3, h4)):not(:has(table, img, ul, ol, p + p)) {{
    break-inside: avoid; break-after: avoid; }}
  .jp-Cell:has(.jp-OutputArea-child:last-child > .jp-RenderedMarkdown :is(h1, h2, h3, h4)):not(
    :has(.jp-OutputArea-child:last-child :is(table, img, ul, ol, p + p))) {{ break-after: avoid; }}
}}
body {{ font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; }}
.jp-OutputArea-output table {{ border-collapse: collapse; margin: 6px 0 12px 0; max-width: 100%; table-layout: auto;
  width: auto; }}
.jp-OutputArea-output th, .jp-OutputArea-output td {{ border: 1px solid #ccc; padding: 2px 4px;
  text-align: left !important; overflow-wrap: anywhere; word-break: normal; max-width: 48em; }}
.jp-OutputArea-output details > summary {{ cursor: pointer; color: #1565c0; margin: 4px 0; }}
.jp-OutputArea-output img {{ max-width: 100%; height: auto; }}
</style>
"""


class Interrupted(Exception):
    """The run was stopped (Ctrl-C or SIGTERM); nothing was published."""


def ensure_kernel() -> str:
    """Register this Python as the ``labclip`` Jupyter kernel (once) and return its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return KERNEL
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL, display_name="labclip", prefix=sys.prefix)
    return KERNEL


def chromium() -> str:
    """The Chromium (or Chrome) executable.

    Raises:
        LabclipError: none is installed.
    """
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise LabclipError("PDF output needs Chromium: run `make sysdeps` (apt-get install chromium) or pass --no-pdf")


def secure_html(body: str) -> str:
    """Remove every ``<script>`` element and put the Content-Security-Policy first in ``<head>``."""
    body = re.sub(r"<script\b[^>]*>.*?</script\s*>", "", body, flags=re.IGNORECASE | re.DOTALL)
    body = re.sub(r"<script\b[^>]*/?>", "", body, flags=re.IGNORECASE)
    head = re.search(r"<head\b[^>]*>", body, flags=re.IGNORECASE)
    if head is None:
        return f"<head>{CSP_META}</head>{body}"
    return body[: head.end()] + CSP_META + body[head.end():]


def to_html(executed: Path, target: Path) -> Path:
    """Render an executed notebook as a self-contained HTML page: code hidden, no script, CSP first."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.output_type == "stream" and o.name == "stderr")]
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags={"remove-cell", "parameters", "injected-parameters"}), enabled=True
    )
    body, _ = exporter.from_notebook_node(nb)
    body = secure_html(body).replace("</head>", PRINT_CSS + "</head>", 1)
    target.write_text(body, encoding="utf-8")
    return target


def to_pdf(html: Path, target: Path, timeout: float | None = None) -> Path:
    """Print an HTML page to an A4 PDF with headless Chromium, offline, with page numbers.

    Raises:
        LabclipError: Chromium failed or did not finish within ``timeout`` seconds (it is stopped).
    """
    timeout = PDF_TIMEOUT_S if timeout is None else timeout
    profile = None
    try:
        profile = tempfile.mkdtemp(prefix="labclip-chromium-")
        cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={target}",
               html.resolve().as_uri()]
        # Its own session, so that the whole process tree can be stopped on a timeout or Ctrl-C; its own
        # temporary folder inside the profile, so that its singleton socket and lock go with the profile.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, "TMPDIR": profile})
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabclipError(f"Chromium did not print {html.name} to PDF within {timeout:g} s") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        _remove(profile)
    if proc.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise LabclipError(f"Chromium could not print {html.name} to PDF: {last}")
    return target


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


def check_inputs(params: dict, out_dir: Path, notebooks: Sequence[str], pdf: bool, into_existing: bool = False) -> None:
    """Everything that can be checked before a model is loaded: precision, captions, images, labels, output folder
    (see :func:`check_out_dir`).

    Raises:
        LabclipError: the first input that is wrong.
    """
    check_params(params)
    check_out_dir(out_dir, published_names(notebooks, pdf), into_existing)
    for name in notebooks:
        choose(params.get("precision"), default_for=name if name in DEFAULTS else "01_matching")
    unknown = [n for n in notebooks if not (NOTEBOOKS_DIR / f"{n}.ipynb").is_file()]
    if unknown:
        raise LabclipError(f"notebook {NOTEBOOKS_DIR / unknown[0]}.ipynb not found; run from a labclip checkout "
                           "(or set LABCLIP_ROOT)")
    if set(notebooks) - {"04_zeroshot", *DATASET_NOTEBOOKS}:  # the dataset reports check their benchmark below
        load_captions(params.get("captions") or DEFAULT_CAPTIONS, params.get("image_dir"), params.get("languages"))
    if "04_zeroshot" in notebooks:
        from ..images import load_image
        from ..zeroshot import choose_language, labelled_images

        labels = params.get("labels") or DEFAULT_LABELS
        sets = params.get("template_sets") or _notebook_default("04_zeroshot", "template_sets")
        _check_template_sets(sets, "en")
        try:
            language, _ = choose_language(labels, (params.get("languages") or ["en"])[0], sets)
        except LabclipError as err:
            raise LabclipError(f"04_zeroshot: {err}") from None
        for image in labelled_images(labels, language).paths:
            load_image(image)
    if "02_languages" in notebooks:
        _check_compare_models(params.get("compare_models") or [])
    if pdf:
        chromium()


def _check_compare_models(models: Sequence[str]) -> None:
    """Each of ``compare_models`` is a model that can be had, or one that is only unavailable now (not cached,
    hub unreachable: the languages report skips it and says so); a missing folder or a name the hub does not
    know is an error now, not after notebooks ran."""
    from ..hub import ModelUnavailable
    from ..model import check_model

    for name in models:
        try:
            check_model(name)
        except ModelUnavailable:
            continue
        except LabclipError as err:
            raise LabclipError(f"--compare-models: {err}") from None


def _notebook_default(notebook: str, name: str):
    """The default of one parameter as the notebook's parameters cell declares it."""
    import ast

    import papermill

    declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{notebook}.ipynb"))
    return ast.literal_eval(declared[name]["default"])


def zeroshot_left_out(params: dict, notebooks: Sequence[str]) -> str | None:
    """Why 04_zeroshot can't run beside the other notebooks (``None`` when it can, or when it was asked for
    alone, where the error stands): neither the first caption language nor English has labels and templates
    (:func:`labclip.zeroshot.choose_language`)."""
    from ..zeroshot import choose_language

    if "04_zeroshot" not in notebooks or len(notebooks) == 1:
        return None
    labels = params.get("labels") or DEFAULT_LABELS
    if not Path(labels).exists():
        return None
    sets = params.get("template_sets") or _notebook_default("04_zeroshot", "template_sets")
    _check_template_sets(sets, "en")
    try:
        choose_language(labels, (params.get("languages") or ["en"])[0], sets)
    except LabclipError as err:
        return str(err)
    return None


def _check_template_sets(sets: Sequence[str], language: str) -> None:
    """Each template set of the zero-shot report exists in its language (the first of ``languages``)."""
    from ..zeroshot import load_templates, template_sets

    for name in sets:
        try:
            load_templates(name, language)
        except LabclipError as err:
            hint = ("" if name not in template_sets() else
                    f" (the zero-shot report uses the first of --langs / LANGS, '{language}'); put a language "
                    "with templates first, or leave that report out with --notebooks 01_matching 02_languages "
                    "03_lab_report")
            raise LabclipError(f"04_zeroshot: {err}{hint}") from None


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


def _quiet_kernel_manager() -> type:
    """A kernel manager whose kernel writes its own log nowhere: a failure or Ctrl-C is reported
    by the runner in one line (cell output still reaches the notebook)."""
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("stderr", subprocess.DEVNULL)
            return await super().start_kernel(**kw)

    return QuietKernelManager


def _ipc_config(folder: str):
    """Kernel connection over Unix sockets in a private folder rather than unencrypted TCP; the connection file
    (it holds the HMAC key) goes in the same folder, which the run removes however it ends."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "k"),
                                     "connection_file": os.path.join(folder, "kernel.json")}})


def _stop_kernels(folder: str | None, wait_s: float = 5.0) -> None:
    """Stop any kernel of this run that is still running (an interrupt can come while one starts, before papermill
    knows it): its command line names the connection file in ``folder``. Otherwise it would write that file,
    HMAC key and all, back into the temporary folder after the run removed it. Linux only (``/proc``)."""
    proc = Path("/proc")
    if folder is None or not proc.is_dir():
        return
    needle, stopped = os.fsencode(folder), []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
                stopped.append(entry)
        except (OSError, ValueError):
            continue
    deadline = time.monotonic() + wait_s
    while stopped and time.monotonic() < deadline:  # gone, or a zombie (an empty command line) that writes nothing
        try:
            stopped = [e for e in stopped if (e / "cmdline").read_bytes()]
        except OSError:
            stopped = [e for e in stopped if e.exists()]
        time.sleep(0.05)


def _remove(*paths: str | os.PathLike | None) -> None:
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


def build_reports(
    params: dict,
    out_dir: str | os.PathLike = REPORTS_DIR,
    notebooks: Sequence[str] = NOTEBOOKS,
    pdf: bool = True,
    *,
    into_existing: bool = False,
) -> list[Path]:
    """Validate inputs, run each notebook, render it, then publish everything at once (see the module doc).

    Args:
        params: notebook parameters (see ``PARAMETERS``); missing ones keep the notebook's default.
        out_dir: where finished reports go.
        notebooks: names of notebooks in ``notebooks/`` to run.
        pdf: also print each HTML page to PDF.
        into_existing: allow a non-empty folder that labclip did not create (see :func:`check_out_dir`).

    Returns:
        The published files, by their top-level names in ``out_dir``.

    Raises:
        LabclipError: bad input, an output folder that is not labclip's or has a name taken (checked before
            any notebook runs), an unloadable model in strict mode, a failed notebook (the
            executed notebook is kept in ``out_dir/runs/`` for inspection), a kernel that died,
            or Chromium failing or timing out. Nothing is published then.
        KeyboardInterrupt: Ctrl-C; nothing is published and the staging folder is removed.
    """
    out_dir = Path(out_dir)
    timings = Timings()
    params = {k: v for k, v in check_params(params).items() if v is not None}
    left_out = {}
    with timings.stage("check inputs"):
        why = zeroshot_left_out(params, notebooks)
        if why:
            left_out["04_zeroshot"] = why
            notebooks = [name for name in notebooks if name != "04_zeroshot"]
            print(f"labclip: 04_zeroshot left out: {why}", file=sys.stderr)
        check_inputs(params, out_dir, notebooks, pdf, into_existing)
    if any(name in NOTEBOOKS for name in notebooks):
        params["check_images"] = False  # check_inputs decoded every image once; the notebooks skip it
    if SCALE_NOTEBOOK in notebooks:
        from .scale import resolve_dataset

        if not params.get("dataset"):
            raise LabclipError("the scale report needs a dataset: xtd10, xm3600, a prepared folder or a caption file")
        with timings.stage("prepare dataset"):
            resolve_dataset(params["dataset"], params.get("languages"))
    if CULTURES_NOTEBOOK in notebooks:
        from .cultures import regions_of
        from .scale import resolve_dataset

        if not params.get("dataset"):
            raise LabclipError("the cultures report needs a dataset: xm3600, a prepared folder or a caption file "
                               "with a 'region' column")
        with timings.stage("prepare dataset"):
            regions_of(resolve_dataset(params["dataset"], params.get("languages")), shown_path(params["dataset"])
                       if Path(params["dataset"]).exists() else params["dataset"])
    import papermill

    with timings.stage("check model"):
        # Decided from files and the hub's answer, without loading weights: each notebook loads the model
        # once, through the same policy, so its JSON records the requested model and the reason.
        fallback = check_model_or_demo(params.get("model", DEFAULT_MODEL), bool(params.get("strict")))
    kernel = ensure_kernel()
    run_id = new_run_id()
    claim(out_dir)
    staging = out_dir / RUNS / f".{run_id}.partial"
    staging.mkdir()
    ipc = None
    precision = {}
    try:
        ipc = tempfile.mkdtemp(prefix="labclip-kernel-")
        for name in notebooks:
            precision[name] = _run_notebook(papermill, name, params, staging, kernel, ipc, timings, out_dir, run_id)
            with timings.stage(f"html {name}"):
                html = to_html(staging / f"{name}.ipynb", staging / f"{name}.html")
            if pdf:
                with timings.stage(f"pdf {name}"):
                    to_pdf(html, staging / f"{name}.pdf")
        run = {"run_id": run_id, "finished": now(), "parameters": _shown_params(params),
               "precision": precision, "fallback_reason": fallback, "left_out": left_out,
               "versions": package_versions(),
               "timings_s": {k: round(v, 2) for k, v in timings.items()}}
        (staging / "run.json").write_text(json.dumps(run, indent=2, ensure_ascii=False, default=str),
                                          encoding="utf-8")
        return publish(staging, out_dir, run_id)
    finally:
        _stop_kernels(ipc)
        _remove(staging, ipc)


def _run_notebook(papermill, name: str, params: dict, staging: Path, kernel: str, ipc: str, timings: Timings,
                  out_dir: Path, run_id: str) -> dict:
    """Run one notebook into ``staging``; returns its precision as requested and as used (from its JSON)."""
    source = NOTEBOOKS_DIR / f"{name}.ipynb"
    executed = staging / f"{name}.ipynb"
    declared = papermill.inspect_notebook(str(source))
    nb_params = {k: v for k, v in params.items() if k in declared}
    if nb_params.get("precision") is None:
        nb_params.pop("precision", None)  # the notebook resolves its own default (precision = None) from the table
    nb_params["output_dir"] = str(staging)
    print(f"labclip: running {name} ...", file=sys.stderr)
    with timings.stage(f"run {name}"):
        try:
            papermill.execute_notebook(str(source), str(executed), parameters=nb_params, kernel_name=kernel,
                                       cwd=str(PROJ_ROOT), progress_bar=False, log_output=False,
                                       config=_ipc_config(ipc), kernel_manager_class=_quiet_kernel_manager())
        except papermill.PapermillExecutionError as err:
            if err.ename == "KeyboardInterrupt":
                raise KeyboardInterrupt from None
            kept = out_dir / RUNS / f"failed-{run_id}-{name}.ipynb"
            os.replace(executed, kept)
            raise LabclipError(
                f"notebook {name} failed ({err.ename}: {' '.join(str(err.evalue).split())}); "
                f"the executed notebook is kept at {kept}; earlier reports in {out_dir} are unchanged"
            ) from None
        except (KeyboardInterrupt, LabclipError):
            raise
        except Exception as err:  # noqa: BLE001 - a dead kernel or a broken notebook ends the run in one line
            detail = " ".join(str(err).split())[:200] or type(err).__name__
            raise LabclipError(f"notebook {name} stopped ({type(err).__name__}: {detail}); "
                               f"earlier reports in {out_dir} are unchanged") from None
    _publishable(executed, source, nb_params, shown_path(out_dir / RUNS / run_id))
    stats = staging / f"{name}.json"
    used = {"requested": nb_params.get("precision", DEFAULTS.get(name)), "default": "precision" not in nb_params}
    if stats.is_file():
        model = json.loads(stats.read_text(encoding="utf-8"))["provenance"]["model"]
        print(f"labclip: {name}: {model['cache']}", file=sys.stderr)
        used.update(requested=model.get("precision_requested", used["requested"]), used=model.get("precision"),
                    reason=model.get("precision_reason"), default=model.get("precision_default", used["default"]))
    return used


def _shown_params(params: dict) -> dict:
    """Parameters as reports record them (``run.json``, the published notebooks): file, folder and model
    paths without the machine part."""
    shown = dict(params)
    for key in ("captions", "image_dir", "labels", "reference"):
        if shown.get(key):
            shown[key] = shown_path(shown[key])
    if shown.get("dataset") and exists(shown["dataset"]):
        shown["dataset"] = shown_path(shown["dataset"])
    for key in ("model", "translator"):
        if shown.get(key):
            shown[key] = shown_model(shown[key])
    if shown.get("compare_models"):
        shown["compare_models"] = [shown_model(m) for m in shown["compare_models"]]
    return shown


def _publishable(executed: Path, source: Path, params: dict, shown_dir: str) -> None:
    """Rewrite an executed notebook, atomically, as the HTML shows it: the injected parameters and
    papermill's record of them name files without their machine paths (``output_dir`` as ``shown_dir``),
    and stderr output (warnings naming library files) is dropped. The kernel ran with the real paths."""
    import nbformat
    from papermill.translators import translate_parameters

    nb = nbformat.read(executed, as_version=4)
    shown = {**_shown_params(params), "output_dir": shown_dir}
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = translate_parameters(KERNEL, "python", shown, "Parameters")
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.output_type == "stream" and o.name == "stderr")]
    nb.metadata.papermill.update(parameters=shown, input_path=shown_path(source), output_path=executed.name)
    write_text(executed, nbformat.writes(nb))


def _count_option(text: str) -> int:
    """An argparse type: a count of 1 or more, checked as the parameter file's counts are."""
    try:
        return at_least(text, 1, "")
    except LabclipError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(": ")) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labclip report`` (the one parser of the report runner). Unset options keep the
    parameter file's value, then the notebook's default."""
    nb = "default: the notebook's"
    p.add_argument("--params", type=Path, metavar="FILE.yaml",
                   help="YAML file of notebook parameters; the command line overrides it (default: none)")
    p.add_argument("--model", help=f"model id, alias, directory or 'demo' (default: {DEFAULT_MODEL})")
    p.add_argument("--captions", help="caption file (default: data/captions/default.csv)")
    p.add_argument("--image-dir", help="folder the caption file's relative image paths are resolved against "
                                       "(default: the caption file's folder)")
    p.add_argument("--labels", help="labelled images of the zero-shot report: a CSV (image plus a label or one column "
                                    "per language) or a folder of class folders (default: data/labels.csv)")
    p.add_argument("--langs", nargs="+", help=f"caption languages, e.g. en ru ({nb}: en ru)")
    p.add_argument("--top-k", type=_count_option, help=f"captions listed per image, the k of top-k accuracy ({nb}: 3)")
    p.add_argument("--batch-size", type=_count_option, help="items per forward pass (default: the model's)")
    p.add_argument("--title", help="title of every report, each report's own (English) name under it "
                                   "(default: each report's own name)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="encoding precision: fp32, bf16, fp16, or auto (bf16 where the hardware runs it faster: CUDA, "
                        "AMX CPUs; else fp32) (default: fp32, exact numbers read one by one; auto for the bulk "
                        f"{SCALE_NOTEBOOK} and {CULTURES_NOTEBOOK})")
    p.add_argument("--strict", action="store_true", default=None,
                   help="fail if the model can't be loaded (default: fall back to the demo model)")
    p.add_argument("--compare-models", nargs="+", metavar="MODEL",
                   help=f"models compared with --model in the languages report ({nb})")
    p.add_argument("--translator", help="translation model, e.g. Helsinki-NLP/opus-mt-{lang}-en; 'none' skips "
                   f"translate-then-CLIP ({nb})")
    p.add_argument("--templates", nargs="+", dest="template_sets", metavar="SET",
                   help=f"template sets compared in the zero-shot report ({nb})")
    p.add_argument("--dataset", help="benchmark for the scale and cultures reports: xtd10, xm3600, a prepared folder "
                   "or a caption file; runs notebook 05_scale only, unless --notebooks says otherwise, e.g. "
                   f"{CULTURES_NOTEBOOK} (which needs a region per image) (default: none)")
    p.add_argument("--reference", help="small caption set placed beside the benchmark in the scale report "
                   "(default: data/captions/short.csv)")
    p.add_argument("--out", type=Path, help="output folder (default: reports/ of the checkout, else ./reports): "
                                          "runs/<run-id>/ per run, latest/ and the report names link to the newest; "
                                          "a non-empty folder labclip did not create is refused")
    p.add_argument("--into-existing", action="store_true",
                   help="allow an --out folder that already holds files labclip did not write: the reports go beside "
                        "them and none of them is replaced or deleted (default: refuse such a folder)")
    p.add_argument("--notebooks", nargs="+", choices=NOTEBOOKS + OPTIONAL_NOTEBOOKS, metavar="NAME",
                   help=f"notebooks to run: {', '.join(NOTEBOOKS + OPTIONAL_NOTEBOOKS)} (default: {', '.join(NOTEBOOKS)}; "
                   f"with --dataset: {SCALE_NOTEBOOK})")
    p.add_argument("--no-pdf", action="store_true", help="HTML only (default: HTML and PDF)")


PARAMS_MAX_BYTES = 1 << 20
TEXT_PARAMETERS = ("model", "captions", "image_dir", "title", "translator", "labels", "dataset", "reference", "precision")
LIST_PARAMETERS = ("languages", "compare_models", "template_sets")
COUNT_PARAMETERS = ("top_k", "batch_size")


def _yaml_loader() -> type:
    """PyYAML's safe loader without aliases: ``*name`` (the billion-laughs bomb) is refused when it is read."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a parameter file",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)

    return NoAliases


def read_params(path: Path | None) -> dict:
    """The parameters of a YAML file (a mapping of known names), checked as :func:`check_params` does.

    Raises:
        LabclipError: an unreadable, too large or malformed file (aliases included), or a bad parameter.
    """
    if path is None:
        return {}
    import yaml

    try:
        with open(path, "rb") as f:
            raw = f.read(PARAMS_MAX_BYTES + 1)
        if len(raw) > PARAMS_MAX_BYTES:
            raise LabclipError(f"{path}: a parameter file of more than {PARAMS_MAX_BYTES >> 20} MiB is not a parameter file")
        loaded = yaml.load(raw.decode("utf-8-sig"), Loader=_yaml_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        mark = getattr(err, "problem_mark", None)
        if getattr(err, "problem", None) and mark is not None:
            detail = f"{err.problem}, line {mark.line + 1} column {mark.column + 1}"
        raise LabclipError(f"{path}: unreadable parameter file ({detail})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise LabclipError(f"{path}: a parameter file holds 'name: value' lines, not a {type(loaded).__name__}")
    unknown = sorted(str(k) for k in set(loaded) - set(PARAMETERS))
    if unknown:
        raise LabclipError(f"{path}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}")
    return check_params(loaded, str(path))


def check_params(params: dict, source: str = "parameter") -> dict:
    """The report parameters with their types checked: counts (``top_k``, ``batch_size``) of 1 or more, as every
    subcommand checks them (:func:`labclip.errors.at_least`), texts, lists of texts (one text becomes a list of
    one) and ``strict`` a yes/no. The notebooks only ever get parameters that passed here.

    Raises:
        LabclipError: naming ``source`` (the parameter file), the parameter and the value.
    """
    checked = {}
    for key, value in params.items():
        where = f"{source}: {key!r}" if source != "parameter" else f"parameter {key!r}"
        if value is None or key not in PARAMETERS:
            checked[key] = value
        elif key in COUNT_PARAMETERS:
            checked[key] = at_least(value, 1, where)
        elif key == "strict":
            if not isinstance(value, bool):
                raise LabclipError(f"{where}: expected true or false, got {str(value)[:40]!r}")
            checked[key] = value
        elif key in LIST_PARAMETERS:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                raise LabclipError(f"{where}: expected a list of names, got {str(value)[:60]!r}")
            checked[key] = values
        else:
            if key == "title" and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or (key != "translator" and not value.strip()):
                raise LabclipError(f"{where}: expected a text, got {str(value)[:60]!r}")
            checked[key] = value
    return checked


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """``labclip report``: build the reports from parsed options; a user error is one line and exit 2,
    Ctrl-C or SIGTERM one line and exit 130."""
    start = time.perf_counter()
    out = args.out or REPORTS_DIR
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        params = read_params(args.params)
        cli = {"model": args.model, "captions": args.captions, "image_dir": args.image_dir, "labels": args.labels,
               "languages": args.langs, "top_k": args.top_k, "batch_size": args.batch_size, "title": args.title,
               "strict": args.strict, "compare_models": args.compare_models, "template_sets": args.template_sets,
               "translator": "" if args.translator == "none" else args.translator, "dataset": args.dataset,
               "reference": args.reference, "precision": args.precision}
        params.update({k: v for k, v in cli.items() if v is not None})
        for key in ("captions", "image_dir", "labels", "reference"):
            if params.get(key):
                params[key] = str(Path(params[key]).resolve())
        for key in ("model", "dataset"):
            if params.get(key) and exists(params[key]):
                params[key] = str(Path(params[key]).resolve())
        notebooks = args.notebooks or ([SCALE_NOTEBOOK] if params.get("dataset") else list(NOTEBOOKS))
        published = build_reports(params, out, notebooks, pdf=not args.no_pdf, into_existing=args.into_existing)
    except LabclipError as err:
        print(f"labclip: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full or read-only disk while the run was staged: nothing was published
        print(f"labclip: error: cannot write the reports ({err.strerror or type(err).__name__}); nothing published, "
              f"earlier reports in {out} are unchanged", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labclip: interrupted; nothing published, earlier reports in {out} are unchanged",
              file=sys.stderr, flush=True)
        # The kernel got the same Ctrl-C; nbclient's background tasks would report its death again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    for path in published:
        if path.suffix in (".html", ".pdf"):
            print(path)
    print(f"labclip: {len(published)} files of run {published[0].resolve().parent.name} written to {out} in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0
