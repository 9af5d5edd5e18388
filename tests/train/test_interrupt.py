"""Ctrl-C (a real SIGINT to a real `knapsack-rl` process): `compare` cancels its queued runs, stops those
in flight at a checkpoint and exits 130 with one line; the same command again reuses the finished runs
(not retrained: their files untouched) and resumes the others. `train` stops at a checkpoint and resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.train.tiny_run import tiny_settings

CONFIG = tiny_settings(epochs=150, eval_every=100, checkpoint_every=0)
STEPS = 300  # 16 training prompts / 8 per step x 150 epochs: a run in flight takes seconds, even on a loaded machine
# (with 60 steps a run could end between this test's check and its SIGINT: seen under load 6)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}


def _config(root: Path) -> Path:
    path = root / "cfg.json"
    path.write_text(json.dumps({**CONFIG, "warmstart_dir": str(root / "ws")}))
    return path


def _steps(run: Path) -> list[int]:
    log = run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.exists() else []


def _default_sigint() -> None:
    """In the child before exec: SIGINT's default disposition. A test run started as a background job of a shell
    without job control (`cmd &` in a script, as CI may run) inherits SIGINT ignored, and a Python started with
    SIGINT ignored keeps ignoring it: Ctrl-C could not reach the command under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(argv: list[str]) -> subprocess.Popen:
    # its own session, so that a failed test can kill it with its workers; the SIGINT goes to it alone
    return subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("timed out")
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen) -> tuple[int, str, float]:
    """SIGINT to ``proc`` alone (its workers get nothing: the main process must stop them); its exit status,
    stderr and the seconds it took to exit (a process still running after 90 s is killed: the test fails)."""
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes (its own session)
        proc.communicate()
        raise AssertionError("still running 90 s after Ctrl-C") from None
    return proc.returncode, err, time.time() - sent


def test_ctrl_c_stops_compare_promptly_and_the_same_command_reuses_the_finished_runs(tmp_path):
    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "knapsack_rl.cli", "compare", "--config", str(_config(tmp_path)),
            "--out-dir", str(out), "--seeds", "0..2", "--jobs", "2"]  # fmt: skip
    proc = _start(argv)
    finished = [out / "seed0" / "uniform", out / "seed0" / "knapsack"]
    in_flight = [out / "seed1" / "uniform", out / "seed1" / "knapsack"]
    _wait_for(lambda: all((r / "summary.json").exists() for r in finished) and _steps(in_flight[0])[-1:] >= [2], proc)
    code, err, took = _interrupt(proc)

    assert code == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("knapsack-rl compare: interrupted: 2 of 6 runs finished, "), last
    assert last.endswith("run the same command again to reuse the finished runs and resume the others"), last
    assert took < 60
    assert not (out / "seed2").exists()  # the queued runs were cancelled before they started
    stopped = in_flight[0]
    assert (stopped / "checkpoint.pt").exists() and not (stopped / "summary.json").exists()
    assert 2 <= _steps(stopped)[-1] < STEPS  # stopped at a clean point, a step with its checkpoint
    kept = {r: ((r / "metrics.jsonl").stat().st_mtime_ns, (r / "metrics.jsonl").read_bytes()) for r in finished}

    again = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trained 4 run(s), reused 2 finished run(s) of an earlier command" in again.stdout
    for run, (mtime, data) in kept.items():  # reused, not retrained
        assert (run / "metrics.jsonl").stat().st_mtime_ns == mtime and (run / "metrics.jsonl").read_bytes() == data
    for run in [*in_flight, out / "seed2" / "uniform", out / "seed2" / "knapsack"]:
        steps = _steps(run)
        assert steps == sorted(set(steps)) and steps[-1] == STEPS, (run, steps)  # resumed or trained to the end
    assert json.loads((out / "summary.json").read_text())["summaries"]["uniform"][2]["rollouts"] == STEPS * 64


def test_ctrl_c_stops_train_at_a_checkpoint_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "knapsack_rl.cli", "train", "--config", str(_config(tmp_path)),
            "--out-dir", str(out)]  # fmt: skip
    proc = _start(argv)
    _wait_for(lambda: _steps(out)[-1:] >= [2], proc)
    code, err, took = _interrupt(proc)

    assert code == 130, err[-3000:]
    assert "Traceback" not in err and took < 60
    step = _steps(out)[-1]
    assert 2 <= step < STEPS
    last = err.strip().splitlines()[-1]
    assert last == (
        f"knapsack-rl train: interrupted: stopped after step {step} of {STEPS}, checkpoint {out / 'checkpoint.pt'}; "
        "run the same command again to resume"
    )
    again = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"trained steps {step + 1}..{STEPS} of {STEPS}" in again.stdout
    steps = _steps(out)
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
