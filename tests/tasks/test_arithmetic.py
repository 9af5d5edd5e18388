import sys

import numpy as np
import pytest

from knapsack_rl.tasks import LEVELS, ArithmeticConfig, build_splits, exact_match, get_reward, problem_id
from knapsack_rl.tasks.arithmetic import _carries, sample_problems


def test_splits_are_reproducible_disjoint_and_correct():
    cfg = ArithmeticConfig(seed=3, train_per_level=(5,) * 8, eval_per_level=4)
    train, held = build_splits(cfg)
    train2, held2 = build_splits(cfg)
    assert train.prompts == train2.prompts and held.prompts == held2.prompts
    assert np.array_equal(train.ids, train2.ids)
    assert len(train) == 40 and len(held) == 32
    assert not set(train.ids.tolist()) & set(held.ids.tolist())
    assert train.level_names() == list(LEVELS) == held.level_names()
    for prompt, answer, pid in zip(
        train.prompts + held.prompts, train.answers + held.answers, np.r_[train.ids, held.ids], strict=True
    ):
        assert prompt.endswith("=")
        assert int(answer) == eval(prompt[:-1])  # the reference answer is the true result
        assert pid == problem_id(prompt) >= 0


def test_other_seed_gives_other_problems():
    a, _ = build_splits(ArithmeticConfig(seed=1))
    b, _ = build_splits(ArithmeticConfig(seed=2))
    assert a.prompts != b.prompts


def test_levels_follow_their_definition():
    rng = np.random.default_rng(0)
    for prompt, _ in sample_problems("L2", 20, rng):
        a, b = map(int, prompt[:-1].split("+"))
        assert a >= 10 and b < 10 and _carries(a, b) == 0
    for prompt, _ in sample_problems("L5", 20, rng):
        a, b = map(int, prompt[:-1].split("+"))
        assert a >= 10 and b >= 10 and _carries(a, b) >= 1
    for prompt, answer in sample_problems("L6", 20, rng):
        a, b = map(int, prompt[:-1].split("-"))
        assert a % 10 < b % 10 and int(answer) >= 0


def test_invalid_config_and_exhausted_level():
    with pytest.raises(ValueError, match="train_per_level needs one count per level"):
        ArithmeticConfig(train_per_level=(1, 2))
    with pytest.raises(ValueError, match="levels must be a subset"):
        ArithmeticConfig(levels=("L9",), train_per_level=(1,))
    with pytest.raises(ValueError, match="fewer than count=101 distinct"):
        sample_problems("L1", 101, np.random.default_rng(0))


def test_exact_match_and_registry():
    assert exact_match(["12", " 7 ", "8"], ["12", "7", "9"]).tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="reward must be one of"):
        get_reward("nope")


def test_math_verify_reward():
    reward = get_reward("math_verify")
    assert reward(["The answer is $\\frac{1}{2}$", "so 3"], ["0.5", "4"]).tolist() == [1.0, 0.0]


def test_math_verify_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(ValueError, match="needs the math-verify package"):
        get_reward("math_verify")(["1"], ["1"])
