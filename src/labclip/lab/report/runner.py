"""``labclip report``: check the inputs, run each notebook, render it, then publish the run at once."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ...config import DEFAULT_MODEL, REPORTS_DIR
from ...errors import LabclipError
from ..experiment import check_model_or_demo
from ..provenance import Timings, now, package_versions
from .execute import ensure_kernel, run_notebook, stop_kernels
from .inputs import check_inputs, leave_out_zeroshot, prepare_datasets
from .params import (
    DATASET_NOTEBOOKS,
    MATCHING,
    NOTEBOOKS,
    OPTIONAL_NOTEBOOKS,
    REPORT_PARAMS,
    SCALE_NOTEBOOK,
    check_params,
    read_params,
)
from .publish import RUNS, claim, new_run_id, publish, remove
from .render import to_html, to_pdf


def build_reports(
    params: dict[str, Any],
    out_dir: str | os.PathLike[str] = REPORTS_DIR,
    notebooks: Sequence[str] = NOTEBOOKS,
    pdf: bool = True,
    *,
    into_existing: bool = False,
) -> list[Path]:
    """Validate inputs, run each notebook, render it, then publish everything at once (see :mod:`.publish`).

    Args:
        params: notebook parameters (see :data:`.params.REPORT_PARAMS`); missing ones keep the notebook's default.
        out_dir: where finished reports go.
        notebooks: names of notebooks in ``notebooks/`` to run.
        pdf: also print each HTML page to PDF.
        into_existing: allow a non-empty folder that labclip did not create (see :func:`.publish.check_out_dir`).

    Returns:
        The published files, by their top-level names in ``out_dir``.

    Raises:
        LabclipError: bad input, an output folder that is not labclip's or has a name taken (checked before
            any notebook runs), an unloadable model in strict mode, a failed notebook (the
            executed notebook is kept in ``out_dir/runs/`` for inspection), a kernel that died,
            or Chromium failing or timing out. Nothing is published then.
        KeyboardInterrupt: Ctrl-C; nothing is published and the staging folder is removed.
    """
    out_dir, timings = Path(out_dir), Timings()
    params = {k: v for k, v in check_params(params).items() if v is not None}
    left_out: dict[str, str] = {}
    with timings.stage("check inputs"):
        notebooks = leave_out_zeroshot(params, notebooks, left_out)
        check_inputs(params, out_dir, notebooks, pdf, into_existing)
    if set(notebooks) & set(MATCHING):
        params["check_images"] = False  # check_inputs decoded every image once; the notebooks skip it
    if set(notebooks) & set(DATASET_NOTEBOOKS):
        with timings.stage("prepare dataset"):
            prepare_datasets(params, notebooks)
    with timings.stage("check model"):
        # Decided from files and the hub's answer, without loading weights: each notebook loads the model
        # once, through the same policy, so its JSON records the requested model and the reason.
        fallback = check_model_or_demo(params.get("model", DEFAULT_MODEL), bool(params.get("strict")))
    return _run(params, out_dir, notebooks, pdf, timings, {"fallback_reason": fallback, "left_out": left_out})


def _run(params: dict[str, Any], out_dir: Path, notebooks: Sequence[str], pdf: bool, timings: Timings,
         checked: dict[str, Any]) -> list[Path]:
    """Run and render every notebook in a staging folder, write ``run.json`` (with ``checked``: the fallback and
    what was left out), publish; the staging folder and the kernel's folder go however it ends."""
    kernel = ensure_kernel()
    run_id = new_run_id()
    claim(out_dir)
    staging = out_dir / RUNS / f".{run_id}.partial"
    staging.mkdir()
    ipc = None
    try:
        ipc = tempfile.mkdtemp(prefix="labclip-kernel-")
        precision = {}
        for name in notebooks:
            with timings.stage(f"run {name}"):
                precision[name] = run_notebook(name, params, staging, kernel=kernel, ipc=ipc, out_dir=out_dir,
                                               run_id=run_id)
            _render(staging, name, pdf, timings)
        record = {"run_id": run_id, "finished": now(), "parameters": REPORT_PARAMS.shown(params),
                  "precision": precision, **checked, "versions": package_versions(),
                  "timings_s": {k: round(v, 2) for k, v in timings.items()}}
        (staging / "run.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str),
                                          encoding="utf-8")
        return publish(staging, out_dir, run_id)
    finally:
        stop_kernels(ipc)
        remove(staging, ipc)


def _render(staging: Path, name: str, pdf: bool, timings: Timings) -> None:
    """The executed notebook ``name`` as HTML, and as PDF when ``pdf``."""
    with timings.stage(f"html {name}"):
        html = to_html(staging / f"{name}.ipynb", staging / f"{name}.html")
    if pdf:
        with timings.stage(f"pdf {name}"):
            to_pdf(html, staging / f"{name}.pdf")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labclip report`` (the one parser of the report runner): the report parameters
    (:meth:`.params.ReportParams.add_arguments`) and the runner's own. Unset options keep the parameter file's
    value, then the notebook's default."""
    p.add_argument("--params", type=Path, metavar="FILE.yaml",
                   help="YAML file of notebook parameters; the command line overrides it (default: none)")
    REPORT_PARAMS.add_arguments(p)
    p.add_argument("--out", type=Path, help="output folder (default: reports/ of the checkout, else ./reports): "
                                          "runs/<run-id>/ per run, latest/ and the report names link to the newest; "
                                          "a non-empty folder labclip did not create is refused")
    p.add_argument("--into-existing", action="store_true",
                   help="allow an --out folder that already holds files labclip did not write: the reports go beside "
                        "them and none of them is replaced or deleted (default: refuse such a folder)")
    names = NOTEBOOKS + OPTIONAL_NOTEBOOKS
    p.add_argument("--notebooks", nargs="+", choices=names, metavar="NAME",
                   help=f"notebooks to run: {', '.join(names)} (default: {', '.join(NOTEBOOKS)}; "
                   f"with --dataset: {SCALE_NOTEBOOK})")
    p.add_argument("--no-pdf", action="store_true", help="HTML only (default: HTML and PDF)")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """``labclip report``: build the reports from parsed options; a user error is one line and exit 2,
    Ctrl-C or SIGTERM one line and exit 130."""
    start = time.perf_counter()
    out = args.out or REPORTS_DIR
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        params = REPORT_PARAMS.resolved({**read_params(args.params), **REPORT_PARAMS.from_args(args)})
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
