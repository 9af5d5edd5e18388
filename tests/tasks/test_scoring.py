import time

import pytest

import tests.tasks.rewards_for_tests  # noqa: F401  (registers the test rewards)
from knapsack_rl.tasks.scoring import RewardError, Scorer, ScoringConfig

IDS = [101, 102, 103, 104]


def _score(name, responses, policy="zero", timeout=2.0, workers=1):
    answers = ["a"] * len(responses)
    with Scorer(name, ScoringConfig(timeout_s=timeout, on_failure=policy, workers=workers, chunk_size=2)) as s:
        out = s(responses, answers, IDS[: len(responses)])
        return out, s.counts()


def test_timeout_scores_zero_and_is_counted_and_later_responses_still_score():
    start = time.monotonic()
    out, counts = _score("test_sleepy", ["a", "sleep", "a", "b"], timeout=1.0)
    assert out.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert counts == {"reward/failures": 0, "reward/timeouts": 1, "reward/killed": 0}
    assert time.monotonic() - start < 20  # the 30 s sleep was cut


def test_timeout_under_raise_names_the_prompt_id():
    with pytest.raises(RewardError, match=r"reward 'test_sleepy' timed out on prompt id 102 \(response 1\)"):
        _score("test_sleepy", ["a", "sleep", "a"], policy="raise", timeout=1.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_raising_reward_is_contained(workers):
    out, counts = _score("test_raises", ["a", "b", "boom", "a"], workers=workers)
    assert out.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert counts == {"reward/failures": 1, "reward/timeouts": 0, "reward/killed": 0}
    with pytest.raises(RewardError, match=r"failed on prompt id 103 \(response 2\): ZeroDivisionError: boom"):
        _score("test_raises", ["a", "b", "boom"], policy="raise")


def test_nan_reward_is_a_failure():
    out, counts = _score("test_nan", ["nan", "a"])
    assert out.tolist() == [0.0, 1.0] and counts["reward/failures"] == 1
    with pytest.raises(RewardError, match=r"prompt id 101 \(response 0\): returned nan, not a finite number"):
        _score("test_nan", ["nan", "a"], policy="raise")


def test_in_process_reward_nan_and_raise_are_contained():
    out, counts = _score("test_nan_in_process", ["nan", "a", "b"])
    assert out.tolist() == [0.0, 1.0, 0.0] and counts["reward/failures"] == 1
    out, counts = _score("test_nan_in_process", ["a", "boom", "a"])
    assert out.tolist() == [1.0, 0.0, 1.0] and counts["reward/failures"] == 1
    with pytest.raises(RewardError, match=r"prompt id 102 \(response 1\): KeyError: 'boom'"):
        _score("test_nan_in_process", ["a", "boom"], policy="raise")


def test_dead_worker_is_replaced_and_counted_as_killed():
    out, counts = _score("test_dies", ["a", "die", "a", "a"])
    assert out.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert counts == {"reward/failures": 0, "reward/timeouts": 0, "reward/killed": 1}
    with pytest.raises(RewardError, match=r"was killed on prompt id 102 \(response 1\): .*died \(exit code 3\)"):
        _score("test_dies", ["a", "die"], policy="raise")


def test_exact_runs_in_process_without_workers():
    with Scorer("exact") as s:
        assert s(["1", " 2 ", "3"], ["1", "2", "4"], [1, 2, 3]).tolist() == [1.0, 1.0, 0.0]
        assert s._workers == []


def test_math_verify_pathological_answer_finishes_within_the_timeout():
    slow = "$\\{" + "1," * 100000 + "1\\}$"  # 200k characters: math_verify alone spends 5 s (its own limit)
    with Scorer("math_verify", ScoringConfig(timeout_s=60.0)) as s:
        assert s(["$\\frac{1}{2}$"], ["0.5"], [0]).tolist() == [1.0]  # start the worker, load the parsers
        s.config = ScoringConfig(timeout_s=3.0)  # below math_verify's own 5 s: the scorer's timeout cuts
        start = time.monotonic()
        out = s(["$\\frac{1}{2}$", "so 3", slow], ["0.5", "4", "1"], [7, 9, 8])
        elapsed = time.monotonic() - start
        assert out.tolist() == [1.0, 0.0, 0.0]
        assert s.counts() == {"reward/failures": 0, "reward/timeouts": 1, "reward/killed": 0}
    assert elapsed < 3.0 + 10.0  # one timeout plus a worker restart (the timeout count above proves the cut)


SLOW_MATH = "$\\{" + "1," * 100000 + "1\\}$"  # 200k characters: math_verify's parse runs past its own limit


def test_math_verify_internal_timeout_counts_as_a_timeout_and_garbage_is_no_failure():
    with Scorer("test_math_verify_fast", ScoringConfig(timeout_s=60.0)) as s:
        assert s(["$\\frac{1}{2}$"], ["0.5"], [0]).tolist() == [1.0]  # start the worker, load the parsers
        start = time.monotonic()
        out = s(
            ["$\\frac{1}{2}$", SLOW_MATH, "so 3", "hello }{ \\boxed{", ""], ["0.5", "1", "4", "2", "2"], [1, 2, 3, 4, 5]
        )
        elapsed = time.monotonic() - start
        assert out.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
        assert s.counts() == {"reward/failures": 0, "reward/timeouts": 1, "reward/killed": 0}
    assert elapsed < 30  # math_verify's own 1 s limit cut it, not the scorer's 60 s


def test_config_validation():
    with pytest.raises(ValueError, match="on_failure must be one of"):
        ScoringConfig(on_failure="ignore")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        ScoringConfig(timeout_s=0)
    with pytest.raises(ValueError, match="is not a registered reward function"):
        Scorer("nope")
    with pytest.raises(ValueError, match="equal length"):
        Scorer("exact")(["a"], ["a", "b"], [1])


def _gone(pid):
    """True once ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_timeout_kills_the_processes_the_reward_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    with Scorer("test_spawns", ScoringConfig(timeout_s=1.0)) as s:
        out = s(["spawn", "x"], [str(pid_file), "y"], [1, 2])
        assert out.tolist() == [0.0, 0.0] and s.counts()["reward/timeouts"] == 1
        child = int(pid_file.read_text())
        assert _wait_gone(child), f"`sleep 600` (pid {child}) survived its worker's timeout"


def test_memory_cap_kills_the_worker_counts_it_and_the_next_call_works():
    cfg = ScoringConfig(timeout_s=20.0, memory_mb=256, chunk_size=4)
    with Scorer("test_hog", cfg) as s:
        out = s(["a", "hog", "a", "b"], ["a"] * 4, IDS)
        assert out.tolist() == [1.0, 0.0, 1.0, 0.0]
        assert s.counts() == {"reward/failures": 0, "reward/timeouts": 0, "reward/killed": 1}
        assert s(["a", "b"], ["a", "a"], [1, 2]).tolist() == [1.0, 0.0]
    with Scorer("test_hog", ScoringConfig(timeout_s=20.0, memory_mb=None)) as s:
        assert s(["hog"], ["a"], [1]).tolist() == [1.0]  # the same allocation without the cap succeeds
    capped = Scorer("test_hog", ScoringConfig(memory_mb=256, on_failure="raise"))
    with capped, pytest.raises(RewardError, match=r"was killed on prompt id 7 \(response 0\): ran out of memory"):
        capped(["hog"], ["a"], [7])


def test_cpu_cap_kills_the_worker_and_counts_it():
    start = time.monotonic()
    with Scorer("test_spins", ScoringConfig(timeout_s=20.0, cpu_s=1)) as s:
        assert s(["a", "spin", "a"], ["a"] * 3, [1, 2, 3]).tolist() == [1.0, 0.0, 1.0]
        assert s.counts() == {"reward/failures": 0, "reward/timeouts": 0, "reward/killed": 1}
    assert time.monotonic() - start < 15  # the kernel cut the 30 s spin, not the 20 s timeout
    capped = Scorer("test_spins", ScoringConfig(timeout_s=20.0, cpu_s=1, on_failure="raise"))
    with (
        capped,
        pytest.raises(RewardError, match=r"was killed on prompt id 5 .*: the worker process was killed by SIGXCPU"),
    ):
        capped(["spin"], ["a"], [5])


@pytest.mark.parametrize("name", ["test_string", "test_string_in_process"])
def test_a_string_reward_is_a_failure_not_a_number(name):
    out, counts = _score(name, ["a", "str", "b"])
    assert out.tolist() == [1.0, 0.0, 0.0]
    assert counts == {"reward/failures": 1, "reward/timeouts": 0, "reward/killed": 0}
    with pytest.raises(
        RewardError, match=r"failed on prompt id 102 \(response 1\): returned '1.0' \(str\), not a number$"
    ):
        _score(name, ["a", "str"], policy="raise")


_PARENT = """
import sys, time
sys.path.insert(0, {root!r})
import tests.tasks.rewards_for_tests
from knapsack_rl.tasks.scoring import Scorer, ScoringConfig

if __name__ == "__main__":
    s = Scorer("test_sleepy", ScoringConfig(timeout_s=60.0))
    s(["a"], ["a"], [1])
    print(s._workers[0].process.pid, flush=True)
    s(["sleep"], ["a"], [2])  # the worker sleeps 30 s in the reward when its parent is killed
"""


def test_workers_die_with_the_process_that_started_them(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "parent.py"
    script.write_text(_PARENT.format(root=root))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        worker = int(parent.stdout.readline())
        time.sleep(1.0)  # let the worker enter the 30 s sleep
        assert not _gone(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone(worker, seconds=10.0), f"worker {worker} outlived its parent"
    finally:
        parent.kill()
        parent.wait()
