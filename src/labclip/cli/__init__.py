"""The ``labclip`` command: match, classify, tag, search, eval, compare, adapt, report.

Every subcommand that writes ``--out`` records who made the numbers. JSON files carry a
``provenance`` block (labclip version, time, model id, revision and whether it is untrained,
library versions, machine, input hashes). CSV files carry the model in three columns on every row
(``model``, ``model_revision``, ``model_untrained``); a summary (``match``, ``eval``, ``search``) goes beside
the table as ``<name>.summary.csv`` (``name,value`` rows, provenance included).

Each command is a module with ``add_parser(subparsers)`` and ``run(args)`` (:class:`Command`), registered by
one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from .. import __version__, embed
from ..errors import LabclipError
from ..lab.provenance import hub_revision as _hub_revision  # noqa: F401 - the old name, for its callers
from ..lab.provenance import model_record  # noqa: F401 - the old name, for its callers
from .commands import (
    adapt,
    calibrate,
    classify,
    compare,
    evaluate,
    finetune,
    index,
    match,
    report,
    search,
    tag,
)
from .console import KNOWN_NOISE, console
from .console import quiet_loading as _quiet_loading  # noqa: F401 - the old name, for its callers
from .options import HelpFormatter, Parser, Subparsers
from .options import device as _device  # noqa: F401 - the old name, for its callers
from .output import fmt, label  # noqa: F401 - the old names, for their callers

__all__ = ["COMMANDS", "Command", "KNOWN_NOISE", "main", "parser", "report_parser"]


class Command(Protocol):
    """A ``labclip`` subcommand (a module): ``add_parser`` adds its parser to the ``labclip`` subparsers
    (:func:`labclip.cli.options.add_command` gives labclip's help format); ``run`` does the work with the parsed
    options and returns ``None`` (exit 0) or an exit status. A :class:`~labclip.errors.LabclipError` it raises
    is printed as one ``labclip: error: ...`` line, exit 2."""

    def add_parser(self, subparsers: Subparsers, /) -> None: ...

    def run(self, args: argparse.Namespace, /) -> int | None: ...


# The subcommands, in the order ``labclip --help`` lists them.
COMMANDS: dict[str, Command] = {
    "match": match,
    "classify": classify,
    "tag": tag,
    "search": search,
    "eval": evaluate,
    "compare": compare,
    "adapt": adapt,
    "finetune": finetune,
    "embed": embed,
    "index": index,
    "calibrate": calibrate,
    "report": report,
}


def parser() -> argparse.ArgumentParser:
    """The ``labclip`` argument parser: one subparser per entry of :data:`COMMANDS`."""
    top: argparse.ArgumentParser = Parser(prog="labclip", description="CLIP image-text matching, zero-shot classification and lab "
                                          "reports. Errors are one line 'labclip: error: ...' with exit "
                                          "status 2.", formatter_class=HelpFormatter, allow_abbrev=False)
    top.add_argument("--version", action="version", version=f"labclip {__version__}")
    subparsers = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return top


_parser = parser  # the old name, for its callers
_HelpFormatter = HelpFormatter  # the old name, for its callers
_console = console  # the old name, for its callers


def report_parser() -> argparse.ArgumentParser:
    """The parser of ``labclip report``: the ``report`` subcommand of the one ``labclip`` parser."""
    (sub,) = (a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["report"]


def _language_hint(err: LabclipError, args: argparse.Namespace) -> str:
    """For a file without the asked language: the option that picks one it has (``; try --lang es``)."""
    found = getattr(err, "found", None)
    flag = "--lang" if hasattr(args, "lang") else "--langs" if hasattr(args, "langs") else None
    if not found or flag is None:
        return ""
    return f"; try {flag} {' '.join(found)}" if flag == "--langs" else "; try " + " or ".join(f"--lang {f}" for f in found)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labclip`` command line; returns the exit status (0, 2 for a user error, 130 on Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        with console():
            return COMMANDS[args.command].run(args) or 0
    except LabclipError as err:
        print(f"labclip: error: {err}{_language_hint(err, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labclip: interrupted", file=sys.stderr)
        return 130
