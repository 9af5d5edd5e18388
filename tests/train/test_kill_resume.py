"""A training process killed with SIGKILL (at a random step, inside the checkpoint write, inside the log
rewrite of a resume) and resumed logs exactly the metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.tiny_run import tiny_settings

KILLABLE = Path(__file__).with_name("_killable.py")
CONFIG = tiny_settings(
    knapsack={"preset": "project", "n": 4, "min_count": 4}, epochs=4, eval_every=3, checkpoint_every=2
)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _train(config: Path, out: Path, **kill: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, str(KILLABLE), "train", "--config", str(config), "--out-dir", str(out)]
    return subprocess.run(cmd, env=_env(**kill), capture_output=True, timeout=300, check=False)


def _metrics(out: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("timing_s/", "perf/", "alloc/solve_s"))} for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    config = root / "config.json"
    config.write_text(json.dumps({**CONFIG, "warmstart_dir": str(root / "ws")}))
    done = _train(config, root / "full")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return config, _metrics(root / "full")


def test_killed_at_a_random_step_then_resumed(setup, tmp_path):
    config, full = setup
    out = tmp_path / "run"
    cmd = [sys.executable, str(KILLABLE), "train", "--config", str(config), "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once step 3 is logged: past the step-2 checkpoint
        log = out / "metrics.jsonl"
        if log.exists() and sum(1 for line in log.read_text().splitlines() if '"step": 3' in line):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _train(config, out).returncode == 0
    assert _metrics(out) == full


def test_killed_inside_the_checkpoint_write(setup, tmp_path):
    config, full = setup
    out = tmp_path / "run"
    killed = _train(config, out, KILL_FILE="checkpoint.pt", KILL_NTH="2")  # the step-4 checkpoint
    assert killed.returncode == -signal.SIGKILL
    assert list(out.glob(".checkpoint.pt.*.tmp"))  # the torn temporary file is still there
    assert _train(config, out).returncode == 0  # resumes from step 2; the stale temp file is cleaned
    assert not list(out.glob(".checkpoint.pt.*.tmp"))
    assert _metrics(out) == full


def test_killed_inside_the_log_rewrite_of_a_resume(setup, tmp_path):
    config, full = setup
    out = tmp_path / "run"
    first = _train(config, out, KILL_FILE="checkpoint.pt", KILL_NTH="2")  # logs hold steps 3-4 beyond it
    assert first.returncode == -signal.SIGKILL
    second = _train(config, out, KILL_FILE="metrics.jsonl", KILL_NTH="1")  # dies while truncating the log
    assert second.returncode == -signal.SIGKILL
    assert _train(config, out).returncode == 0
    assert _metrics(out) == full
