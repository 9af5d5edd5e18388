"""``knapsack-rl train`` (the real CLI, a subprocess) on verl-layout data files that carry code payloads.

A payload tries to create a marker file when evaluated (eval, exec or sympy.parse_expr). Whatever the
file carries (an old-layout row whose embedded entry holds payload answers and a payload integrand, a
reference naming a refused data set, a payload ground truth), no code runs: the run stops with a
one-line error before training (a config naming a refused data set is refused the same way: see
tests/tasks/test_gym_scoring.py), and a clean file of references trains and logs the reward counters
(failures, timeouts, kills) of every step.
"""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from knapsack_rl.tasks import GymConfig, GymDataset, TaskConfig, load_task, write_task

TINY = {
    "warmstart": {"steps": 2, "batch_size": 4, "profile_samples": 2, "level_weights": {}},
    "tiny_model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2},
    "knapsack": {"preset": "project", "n": 2, "min_count": 2},
    "prompts_per_step": 4,
    "epochs": 1,
    "max_new_tokens": 6,
    "eval_every": 0,
    "tensorboard": False,
    "progress": False,
    "threads": 1,
}
MIX = GymConfig(
    datasets=(
        GymDataset("number_sorting", {"min_numbers": 2, "max_numbers": 2, "max_decimals": 0}),  # a comparator
        GymDataset("bitwise_arithmetic", {"difficulty": 1}),  # a comparator
        GymDataset("gcd", prompt="compact"),  # its own audited scorer
    ),
    seed=2,
    train_size=8,
    eval_size=0,
    warmstart_size=6,
)


def _touch() -> str:
    """A payload creating MARKER in the run's working folder (short enough for the tiny model's prompts)."""
    return "__import__('os').system('touch MARKER')"


def _train(root: Path, task: dict) -> subprocess.CompletedProcess[str]:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.json"
    config.write_text(
        json.dumps({**TINY, "task": task, "warmstart_dir": str(root / "ws"), "out_dir": str(root / "run")})
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "knapsack_rl.cli", "train", "--config", str(config)]
    return subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=300, check=False)


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("knapsack-rl: error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return errors[0]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clean train / warm-start pair of reference files, with short prompts the tiny model can hold."""
    root = tmp_path_factory.mktemp("refs")
    task = load_task(TaskConfig(source="reasoning_gym", reasoning_gym=MIX))
    try:
        paths = write_task(task, root, suffix=".jsonl")
    finally:
        task.close()
    for path in paths.values():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for k, row in enumerate(rows):
            row["prompt"] = [{"role": "user", "content": f"q{k}="}]
        _jsonl(path, rows)
    return paths


def test_old_layout_rows_with_payload_answers_and_integrands_stop_the_run_in_one_line(tmp_path):
    embedded = [  # each evaluated by its data set's own scorer once a response parses (e.g. "11")
        ("simple_integration", {"answer": "x", "metadata": {"variable": "x", "integrand": _touch()}}),
        ("polynomial_multiplication", {"answer": _touch(), "metadata": {}}),
        ("number_sorting", {"answer": _touch(), "metadata": {"direction": "ascending"}}),
    ]
    rows, warm = [], []
    for i in range(8):
        name, entry = embedded[i % len(embedded)]
        extras = {"reasoning_gym": {"dataset": name, "config": {}, "entry": {"question": "q", **entry}}}
        info = {"index": i, "extras": json.dumps(extras)}
        rows.append({"prompt": "1" * (i + 1) + "=", "reward_model": {"ground_truth": "1"}, "extra_info": info})
        warm.append(
            {"prompt": "1" * (i + 1) + "=", "reward_model": {"ground_truth": "1"}, "extra_info": {"index": 100 + i}}
        )
    task = {"source": "file", "data": str(_jsonl(tmp_path / "old.jsonl", rows)),
            "warmstart_data": str(_jsonl(tmp_path / "warm.jsonl", warm)), "reward": "reasoning_gym"}  # fmt: skip
    done = _train(tmp_path, task)
    assert not (tmp_path / "MARKER").exists()
    line = _error_line(done)
    assert "old.jsonl row 1: extra_info.extras embeds the reasoning-gym entry" in line
    assert "regenerate the file with knapsack_rl.tasks.write_task" in line


def test_a_reference_to_a_refused_data_set_with_a_payload_truth_stops_the_run_in_one_line(tmp_path, files):
    rows = [json.loads(line) for line in files["train"].read_text().splitlines()]
    rows[2]["extra_info"]["extras"] = json.dumps(
        {"reasoning_gym": {"dataset": "simple_integration", "config": {}, "split": "train", "index": 0}}
    )
    rows[2]["reward_model"]["ground_truth"] = _touch()
    data = _jsonl(tmp_path / "bad.jsonl", rows)
    task = {"source": "file", "data": str(data), "warmstart_data": str(files["warmstart"]),
            "reward": "reasoning_gym", "reasoning_gym": asdict(MIX)}  # fmt: skip
    line = _error_line(_train(tmp_path, task))
    index = rows[2]["extra_info"]["index"]
    assert f"bad.jsonl row 3 (id {index}): its reference names data set 'simple_integration'" in line, line
    assert "not in the run config's reasoning_gym mix" in line
    assert not (tmp_path / "MARKER").exists()


def test_a_clean_reference_file_trains_and_logs_the_reward_counters(tmp_path, files):
    task = {"source": "file", "data": str(files["train"]), "warmstart_data": str(files["warmstart"]),
            "reward": "reasoning_gym", "reasoning_gym": asdict(MIX)}  # fmt: skip
    done = _train(tmp_path, task)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps
    for step in steps:
        assert step["reward/failures"] == step["reward/timeouts"] == step["reward/killed"] == 0.0
