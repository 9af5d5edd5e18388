"""`--help` of every command and subcommand (walked from the parser, so a new command is covered), the
`--set` example those help texts show, and usage errors as two short lines."""

import argparse
import os
import re
import subprocess
import sys

import pytest

from knapsack_rl.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The argv prefix of ``parser`` and of every (nested) subparser under it."""
    out = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, (*path, name))
    return out


COMMANDS = _commands(build_parser())


def test_the_walk_finds_every_command():
    names = {c[0] for c in COMMANDS if c}
    assert {"train", "compare", "demo", "preflight", "simulate", "allocate", "rules", "report"} <= names
    assert () in COMMANDS  # the main parser itself


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "knapsack-rl" for c in COMMANDS])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: knapsack-rl {' '.join(command)}".rstrip())
    assert "%%" not in out  # a '%' escaped for argparse's help but shown literally (a description is not %-formatted)


def test_main_help_as_the_installed_command_runs():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, "-m", "knapsack_rl.cli", "--help"], capture_output=True, text=True,
                         env=env, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "95% CIs" in run.stdout and "Traceback" not in run.stderr


@pytest.mark.parametrize("command", ["train", "compare", "demo", "preflight"])
def test_the_set_example_of_the_help_parses_and_sets_what_it_names(command, capsys):
    from knapsack_rl.train.cli import build_config

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    found = re.search(r"--set KEY=VALUE\s+nested setting, e\.g\.\s+(\S+)", capsys.readouterr().out)
    assert found is not None
    example = found.group(1)
    cfg = build_config(parser.parse_args([command, "--set", example]))
    key, value = example.split("=")
    node = cfg.to_dict()
    for part in key.split("."):
        node = node[part]
    assert node == int(value)


@pytest.mark.parametrize(
    ("argv", "first"),
    [
        (["compare", "--jobs", "x"], "knapsack-rl compare: error: argument --jobs: invalid int value: 'x'"),
        (["train", "--no-such-flag"], "knapsack-rl: error: unrecognized arguments: --no-such-flag"),
        (["allocate"], "knapsack-rl allocate: error: the following arguments are required: stats"),
        ([], "knapsack-rl: error: the following arguments are required: command"),
    ],
)
def test_usage_errors_are_the_error_and_a_short_usage(argv, first, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == first
    assert len(lines) == 2 and lines[1].startswith("usage: knapsack-rl") and "--help' lists the options" in lines[1]
