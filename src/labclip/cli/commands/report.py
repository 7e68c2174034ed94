"""``labclip report``: run the notebooks and render HTML + PDF (:mod:`labclip.lab.report`)."""

from __future__ import annotations

import argparse
import sys

from ..options import Subparsers, add_command

REPORT_EXTRA_MODULES = ("papermill", "nbconvert", "nbformat", "mistune", "ipykernel", "jupyter_client", "IPython",
                        "matplotlib", "seaborn", "yaml", "openpyxl")


def add_parser(subparsers: Subparsers) -> None:
    from ...lab.report import add_arguments

    add_arguments(add_command(subparsers, "report", "run the notebooks and render HTML + PDF",
                              "Run the notebooks and render HTML + PDF reports."))


def run(args: argparse.Namespace) -> int:
    """:func:`labclip.lab.report.run` with the parsed options; without the report extra, one line and exit 2."""
    try:
        from ...lab.report import run as run_report

        return run_report(args)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in REPORT_EXTRA_MODULES:
            raise
        print(f"labclip: error: labclip report needs the report extra ({err.name} is not installed): "
              "pip install 'labclip[report]'", file=sys.stderr)
        return 2
