"""The command table: a command is a module with ``add_parser(subparsers)`` and ``run(args)``, registered by one
entry of ``labclip.cli.COMMANDS``; ``main`` parses, dispatches and turns its errors into one line."""

from __future__ import annotations

import argparse
import types

import pytest

from labclip import cli
from labclip.cli.options import Subparsers, add_command
from labclip.errors import LabclipError


def _command(run) -> types.ModuleType:
    module = types.ModuleType("hello")

    def add_parser(subparsers: Subparsers) -> None:
        p = add_command(subparsers, "hello", "say hello", "Say hello to NAME.")
        p.add_argument("name")
        p.add_argument("--times", type=int, default=1, help="how often")

    module.add_parser, module.run = add_parser, run
    return module


def test_a_registered_command_parses_runs_and_shows_its_defaults(monkeypatch, capsys):
    seen: list[argparse.Namespace] = []
    monkeypatch.setitem(cli.COMMANDS, "hello", _command(lambda args: seen.append(args)))
    assert cli.main(["hello", "world", "--times", "2"]) == 0
    assert [(a.command, a.name, a.times) for a in seen] == [("hello", "world", 2)]
    action = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(action.choices) == list(cli.COMMANDS)
    assert "(default: 1)" in action.choices["hello"].format_help()
    assert cli.main(["hello"]) == 2
    assert capsys.readouterr().err.startswith("labclip: error: hello: the following arguments are required: name")


@pytest.mark.parametrize(("outcome", "status", "line"), [
    (3, 3, ""),
    (LabclipError("hello.txt: no such file"), 2, "labclip: error: hello.txt: no such file\n"),
    (KeyboardInterrupt(), 130, "labclip: interrupted\n"),
])
def test_main_returns_the_status_of_run_and_one_line_errors(monkeypatch, capsys, outcome, status, line):
    def run(args: argparse.Namespace) -> int:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setitem(cli.COMMANDS, "hello", _command(run))
    assert cli.main(["hello", "world"]) == status
    assert capsys.readouterr().err == line


def test_every_command_module_has_the_two_functions():
    for name, command in cli.COMMANDS.items():
        assert callable(command.add_parser) and callable(command.run), name
    assert cli.report_parser().prog == "labclip report"
