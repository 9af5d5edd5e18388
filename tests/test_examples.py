"""Every example config loads as a TrainConfig (the file's keys are the config's), and the README's commands exist."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from knapsack_rl.cli import build_parser
from knapsack_rl.train import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.knapsack is not None


def _readme_commands() -> list[list[str]]:
    """Commands in the README's bash blocks (one per line, comments dropped, continuations joined)."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line))
    return out


def test_every_readme_command_parses() -> None:
    """`knapsack-rl ...` lines parse with the real parser (every flag exists); scripts and modules answer
    --help; `make` targets exist. Nothing heavy runs here: the demo and the tests run in CI."""
    commands = _readme_commands()
    assert len(commands) > 10
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    parser = build_parser()
    for argv in commands:
        if argv[0] == "make":
            assert argv[1] in targets, argv
        elif argv[0] == ".venv/bin/knapsack-rl":
            parser.parse_args(argv[1:])
        elif argv[0] == ".venv/bin/python" and argv[1] == "-m":
            run = subprocess.run([sys.executable, "-m", argv[2], "--help"], capture_output=True, cwd=ROOT, timeout=120)
            assert run.returncode == 0, (argv, run.stderr[-500:])
        elif argv[0] == ".venv/bin/python":
            assert (ROOT / argv[1]).is_file(), argv
            run = subprocess.run([sys.executable, argv[1], "--help"], capture_output=True, cwd=ROOT, timeout=120)
            assert run.returncode == 0, (argv, run.stderr[-500:])
        elif argv[0] == "bash":
            assert (ROOT / argv[1]).is_file(), argv
        else:
            raise AssertionError(f"README command not run through .venv, make or bash: {argv}")
