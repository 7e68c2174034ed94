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

Modules: :mod:`.params` (every report parameter, declared once), :mod:`.inputs` (checks before any model
loads), :mod:`.execute` (papermill), :mod:`.render` (HTML, PDF), :mod:`.publish` (marker, lock, prune,
atomic publish), :mod:`.runner` (``build_reports`` and the command).
"""

from .execute import KERNEL, ensure_kernel
from .inputs import check_inputs, zeroshot_left_out
from .params import (
    CULTURES_NOTEBOOK,
    DATASET_NOTEBOOKS,
    NOTEBOOKS,
    OPTIONAL_NOTEBOOKS,
    PARAMETERS,
    REPORT_PARAMS,
    SCALE_NOTEBOOK,
    Param,
    ReportParams,
    check_params,
    read_params,
)
from .publish import KEEP_RUNS, MARKER, MARKER_TEXT, RUN_ID, check_out_dir, claim, new_run_id, publish
from .render import (
    CHROMIUM_FLAGS,
    CSP,
    CSP_META,
    PDF_TIMEOUT_S,
    PRINT_CSS,
    chromium,
    secure_html,
    to_html,
    to_pdf,
)
from .runner import add_arguments, build_reports, run

__all__ = [
    "CHROMIUM_FLAGS", "CSP", "CSP_META", "CULTURES_NOTEBOOK", "DATASET_NOTEBOOKS", "KEEP_RUNS", "KERNEL", "MARKER",
    "MARKER_TEXT", "NOTEBOOKS", "OPTIONAL_NOTEBOOKS", "PARAMETERS", "PDF_TIMEOUT_S", "PRINT_CSS", "REPORT_PARAMS",
    "RUN_ID", "SCALE_NOTEBOOK", "Param", "ReportParams", "add_arguments", "build_reports", "check_inputs",
    "check_out_dir", "check_params", "chromium", "claim", "ensure_kernel", "new_run_id", "publish", "read_params",
    "run", "secure_html", "to_html", "to_pdf", "zeroshot_left_out",
]
