"""Executing a notebook with papermill in a private ``labclip`` kernel, and making the executed copy publishable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ...atomic import write_text
from ...config import NOTEBOOKS_DIR, PROJ_ROOT, shown_path
from ...errors import LabclipError
from ...precision import DEFAULTS
from .params import REPORT_PARAMS
from .publish import RUNS
from .render import without_stderr

KERNEL = "labclip"


def ensure_kernel() -> str:
    """Register this Python as the ``labclip`` Jupyter kernel (once) and return its name."""
    import papermill  # type: ignore[import-untyped]  # noqa: F401 - the report extra: missing, the run fails here, before anything is written
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


def stop_kernels(folder: str | None, wait_s: float = 5.0) -> None:
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



def run_notebook(name: str, params: dict[str, Any], staging: Path, *, kernel: str, ipc: str, out_dir: Path,
                 run_id: str) -> dict[str, Any]:
    """Run notebook ``name`` with the parameters it reads into ``staging/<name>.ipynb``, then make that copy
    publishable (:func:`publishable`).

    Args:
        name: a notebook of ``notebooks/``.
        params: the run's checked, resolved parameters (``output_dir`` is set to ``staging``).
        staging: the run's staging folder.
        kernel: the Jupyter kernel's name (:func:`ensure_kernel`).
        ipc: the private folder of the kernel's sockets and connection file.
        out_dir: the output folder; a notebook that raised is kept in its ``runs/`` for inspection.
        run_id: the run's id (the published folder ``runs/<run_id>`` is how the notebook names ``output_dir``).

    Returns:
        The precision as requested and as used (:func:`precision_used`).

    Raises:
        LabclipError: the notebook raised (it is kept as ``runs/failed-<run_id>-<name>.ipynb``) or its kernel
            stopped.
        KeyboardInterrupt: Ctrl-C reached the kernel.
    """
    import papermill  # type: ignore[import-untyped]

    source, executed = notebook_path(name), staging / f"{name}.ipynb"
    nb_params = {**REPORT_PARAMS.for_notebook(name, params), "output_dir": str(staging)}
    print(f"labclip: running {name} ...", file=sys.stderr)
    unchanged = f"earlier reports in {out_dir} are unchanged"
    try:
        papermill.execute_notebook(str(source), str(executed), parameters=nb_params, kernel_name=kernel,
                                   cwd=str(PROJ_ROOT), progress_bar=False, log_output=False,
                                   config=_ipc_config(ipc), kernel_manager_class=_quiet_kernel_manager())
    except papermill.PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        failed = out_dir / RUNS / f"failed-{run_id}-{name}.ipynb"
        os.replace(executed, failed)
        raise LabclipError(f"notebook {name} failed ({err.ename}: {' '.join(str(err.evalue).split())}); "
                           f"the executed notebook is kept at {failed}; {unchanged}") from None
    except (KeyboardInterrupt, LabclipError):
        raise
    except Exception as err:  # noqa: BLE001 - a dead kernel or a broken notebook ends the run in one line
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise LabclipError(f"notebook {name} stopped ({type(err).__name__}: {detail}); {unchanged}") from None
    publishable(executed, source, nb_params, shown_path(out_dir / RUNS / run_id))
    return precision_used(name, nb_params, staging / f"{name}.json")


def precision_used(name: str, nb_params: dict[str, Any], saved: Path) -> dict[str, Any]:
    """The precision ``name`` asked for and used, for ``run.json``. The notebook's own JSON (which the run
    publishes) is the record of what its kernel chose; a notebook that writes none keeps what was asked."""
    used = {"requested": nb_params.get("precision", DEFAULTS.get(name)), "default": "precision" not in nb_params}
    if saved.is_file():
        model = json.loads(saved.read_text(encoding="utf-8"))["provenance"]["model"]
        print(f"labclip: {name}: {model['cache']}", file=sys.stderr)
        used.update(requested=model.get("precision_requested", used["requested"]), used=model.get("precision"),
                    reason=model.get("precision_reason"), default=model.get("precision_default", used["default"]))
    return used


def publishable(executed: Path, source: Path, params: dict[str, Any], shown_dir: str) -> None:
    """Rewrite an executed notebook, atomically, as the HTML shows it: the injected parameters and
    papermill's record of them name files without their machine paths (``output_dir`` as ``shown_dir``),
    and stderr output (warnings naming library files) is dropped. The kernel ran with the real paths."""
    import nbformat
    from papermill.translators import translate_parameters  # type: ignore[import-untyped]

    nb = nbformat.read(executed, as_version=4)
    shown = {**REPORT_PARAMS.shown(params), "output_dir": shown_dir}
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = translate_parameters(KERNEL, "python", shown, "Parameters")
        if cell.cell_type == "code":
            cell.outputs = without_stderr(cell)
    nb.metadata.papermill.update(parameters=shown, input_path=shown_path(source), output_path=executed.name)
    write_text(executed, nbformat.writes(nb))



def notebook_path(name: str) -> Path:
    """The notebook ``name`` the runner executes (``notebooks/<name>.ipynb``)."""
    return NOTEBOOKS_DIR / f"{name}.ipynb"
