"""The README's Python snippets run as written (and print what their comments say), the documented defaults of
allocate() are true, the Planner's state takes the documented JSON-safe route, and the README's full-study
commands are the ones behind its table (docs/evidence.md)."""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from knapsack_rl import KnapsackConfig, Planner, allocate
from knapsack_rl.core.config import AllocationConfig
from knapsack_rl.rules.state import pack_rule_state, unpack_rule_state

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
NOT_RUN = ("TRL and verl",)
"""Sections whose snippets need a model and a data set (the TRL and verl adapters have their own tests)."""


def _python_blocks() -> list[tuple[str, str]]:
    """(heading above it, code) of every ```python block of the README."""
    out, heading = [], ""
    for part in re.split(r"(```python\n.*?```|^#+ [^\n]*$)", README, flags=re.M | re.S):
        if part.startswith("#"):
            heading = part.lstrip("#").strip()
        elif part.startswith("```python"):
            out.append((heading, part.removeprefix("```python\n").removesuffix("```")))
    return out


BLOCKS = [(h, code) for h, code in _python_blocks() if h not in NOT_RUN]


def test_the_readme_has_the_snippets_this_file_runs():
    headings = [h for h, _ in _python_blocks()]
    assert "Your own training loop" in headings and "One step's allocation" in headings
    assert len(BLOCKS) == len(headings) - 1  # every python snippet runs but the TRL one


@pytest.mark.parametrize(("heading", "code"), BLOCKS, ids=[h for h, _ in BLOCKS])
def test_every_python_snippet_of_the_readme_runs(heading, code):
    namespace: dict[str, object] = {}
    exec(compile(code, f"README.md: {heading}", "exec"), namespace)  # the project's own README, not an input
    shown = re.findall(r"^(.*?)\s+# (array\(\[[^\]]*\]\))", code, flags=re.M)
    for expression, value in shown:  # `expr  # array([...])`: the comment is what the expression gives
        got = eval(expression, namespace)
        got = getattr(got, "budgets", got)
        assert np.array_equal(got, eval(value, {"array": np.array})), (expression, got)


def _documented_preset_settings() -> dict[str, dict[str, object]]:
    """``preset("x").allocation`` sets a=1, b=True, ... lines of allocate()'s docstring, parsed."""
    out = {}
    for name, settings in re.findall(r'preset\("([\w-]+)"\)\.allocation`` sets ([^(]*?)\s*\(', allocate.__doc__ or ""):
        pairs = re.findall(r"(\w+)=([\w\"]+)", settings)
        out[name] = {key: json.loads(raw.replace("True", "true").replace("False", "false")) for key, raw in pairs}
    return out


def test_allocate_documents_which_settings_its_defaults_are():
    documented = _documented_preset_settings()
    assert sorted(documented) == ["project", "recipe"]
    for name, settings in documented.items():  # the defaults plus what the docstring says = the preset's
        assert dataclasses.replace(AllocationConfig(), **settings) == KnapsackConfig.preset(name).allocation
    assert "neither preset" in (allocate.__doc__ or "") and "neither preset" in README


def test_the_planner_state_holds_bytes_and_the_documented_route_is_json_safe():
    planner = Planner(KnapsackConfig.preset("project"))
    ids = np.arange(16)
    plan = planner.plan(ids, epoch=0)
    planner.observe(np.repeat(ids, plan.budgets), np.tile([0.0, 1.0], plan.budgets.sum() // 2), epoch=0)
    state = planner.state_dict()
    assert isinstance(state["tracker"], bytes) and "bytes" in (Planner.state_dict.__doc__ or "")
    with pytest.raises(TypeError):
        json.dumps(state)
    meta, parts = pack_rule_state("knapsack", state)
    name, back = unpack_rule_state(json.loads(json.dumps(meta)), parts, source="test")
    other = Planner(KnapsackConfig.preset("project"))
    other.load_state_dict(back)
    assert name == "knapsack" and other.tracker.to_bytes() == planner.tracker.to_bytes()


def _without_out_dir(argv: list[str]) -> list[str]:
    i = argv.index("--out-dir")
    return argv[:i] + argv[i + 2 :]


def test_the_readme_full_study_commands_are_the_ones_behind_its_table():
    evidence = (ROOT / "docs" / "evidence.md").read_text()
    final_runs = evidence.split("## Final runs", 1)[1].split("\n## ", 1)[0]  # the source of the README's table
    behind = [shlex.split(line) for line in re.findall(r"`knapsack-rl (compare [^`]*)`", final_runs)]
    assert len(behind) == 2  # the demo task's and chain_sum's
    lines = [line for line in README.splitlines() if "# the full study" in line or "# its chain_sum column" in line]
    shown = [shlex.split(line.split(" #")[0]) for line in lines]
    assert len(shown) == 2 and all(argv[0] == ".venv/bin/knapsack-rl" for argv in shown)
    assert sorted(_without_out_dir(argv[1:]) for argv in shown) == sorted(behind)
    out_dirs = {argv[argv.index("--out-dir") + 1] for argv in shown}
    assert len(out_dirs) == 2 and not out_dirs & {"runs/compare", "runs/demo"}  # no two commands share a folder


def test_no_two_demo_or_compare_commands_of_the_readme_share_a_folder():
    from knapsack_rl.cli import build_parser
    from knapsack_rl.train.cli import compare_out_dir

    parser = build_parser()
    folders = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            argv = shlex.split(line.split(" #")[0])
            if argv[:1] == [".venv/bin/knapsack-rl"] and argv[1] in ("demo", "compare"):
                folders.append(compare_out_dir(parser.parse_args(argv[1:])))
    assert len(folders) >= 5
    assert len(set(folders)) == len(folders), folders


def test_every_local_file_a_readme_config_reads_is_made_by_a_readme_command_before_it():
    """A command that reads a config (`--config F.yaml`) finds the files F names: some README command shown
    before it writes them (the TRL launcher's model and data once came from nowhere in a fresh clone)."""
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S) for ln in block.splitlines()]
    checked = 0
    for at, line in enumerate(lines):
        config = re.search(r"--config (\S+\.yaml)", line)
        if not config:
            continue
        text = (ROOT / config.group(1)).read_text()
        for path in re.findall(r"^\w+_path: (runs/\S+)", text, flags=re.M):
            folder = path.split("/")[1]
            assert any(f"runs/{folder}" in before for before in lines[:at]), (config.group(1), path)
            checked += 1
    assert checked >= 2  # examples/trl/config.yaml's model_path and dataset_path
