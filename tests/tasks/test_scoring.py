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
    assert counts == {"reward/failures": 0, "reward/timeouts": 1}
    assert time.monotonic() - start < 20  # the 30 s sleep was cut


def test_timeout_under_raise_names_the_prompt_id():
    with pytest.raises(RewardError, match=r"reward 'test_sleepy' timed out on prompt id 102 \(response 1\)"):
        _score("test_sleepy", ["a", "sleep", "a"], policy="raise", timeout=1.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_raising_reward_is_contained(workers):
    out, counts = _score("test_raises", ["a", "b", "boom", "a"], workers=workers)
    assert out.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert counts == {"reward/failures": 1, "reward/timeouts": 0}
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


def test_dead_worker_is_replaced():
    out, counts = _score("test_dies", ["a", "die", "a", "a"])
    assert out.tolist() == [1.0, 0.0, 1.0, 1.0] and counts["reward/failures"] == 1


def test_exact_runs_in_process_without_workers():
    with Scorer("exact") as s:
        assert s(["1", " 2 ", "3"], ["1", "2", "4"], [1, 2, 3]).tolist() == [1.0, 1.0, 0.0]
        assert s._workers == []


def test_math_verify_pathological_answer_finishes_within_the_timeout():
    slow = "$\\{" + "1," * 100000 + "1\\}$"  # 200k characters: math_verify alone spends 5 s (its own limit)
    with Scorer("math_verify", ScoringConfig(timeout_s=3.0)) as s:
        assert s(["$\\frac{1}{2}$"], ["0.5"], [0]).tolist() == [1.0]  # start the worker, load the parsers
        start = time.monotonic()
        out = s(["$\\frac{1}{2}$", slow, "so 3"], ["0.5", "1", "4"], [7, 8, 9])
        elapsed = time.monotonic() - start
        assert out.tolist() == [1.0, 0.0, 0.0]
        assert s.counts() == {"reward/failures": 0, "reward/timeouts": 1}
    assert elapsed < 3.0 + 10.0  # one timeout plus a worker restart (the timeout count above proves the cut)


def test_config_validation():
    with pytest.raises(ValueError, match="on_failure must be one of"):
        ScoringConfig(on_failure="ignore")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        ScoringConfig(timeout_s=0)
    with pytest.raises(ValueError, match="is not a registered reward function"):
        Scorer("nope")
    with pytest.raises(ValueError, match="equal length"):
        Scorer("exact")(["a"], ["a", "b"], [1])
