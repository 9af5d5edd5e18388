import itertools
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knapsack_rl.tasks import LEVELS, ArithmeticConfig, LevelSpec, build_split, build_splits, get_reward, problem_id
from knapsack_rl.tasks.arithmetic import BUILTIN_LEVELS, count_carries, sample_problems, split_of

SMALL = {"train_per_level": (5,) * 8, "eval_per_level": 4, "warmstart_per_level": (6,) * 8}


def _ids(ps):
    return set(ps.ids.tolist())


def test_splits_are_reproducible_disjoint_and_correct():
    cfg = ArithmeticConfig(seed=3, **SMALL)
    train, held = build_splits(cfg)
    train2, held2 = build_splits(cfg)
    warm = build_split(cfg, "warmstart")
    assert train.prompts == train2.prompts and held.prompts == held2.prompts
    assert np.array_equal(train.ids, train2.ids)
    assert (len(train), len(held), len(warm)) == (40, 32, 48)
    assert not _ids(train) & _ids(held) and not _ids(train) & _ids(warm) and not _ids(held) & _ids(warm)
    assert train.level_names() == list(LEVELS) == held.level_names() == warm.level_names()
    for prompt, answer, pid in zip(
        train.prompts + held.prompts + warm.prompts,
        train.answers + held.answers + warm.answers,
        np.r_[train.ids, held.ids, warm.ids],
        strict=True,
    ):
        assert prompt.endswith("=")
        assert int(answer) == eval(prompt[:-1])  # the reference answer is the true result
        assert pid == problem_id(prompt) >= 0
    for split, ps in (("train", train), ("eval", held), ("warmstart", warm)):
        assert all(split_of(p, cfg.split_weights) == split for p in ps.prompts)


def test_changing_one_split_size_leaves_the_others_identical():
    base = ArithmeticConfig(seed=5, **SMALL)
    more_eval = ArithmeticConfig(seed=5, **{**SMALL, "eval_per_level": 9})
    more_train = ArithmeticConfig(seed=5, **{**SMALL, "train_per_level": (7,) * 8})
    more_warm = ArithmeticConfig(seed=5, **{**SMALL, "warmstart_per_level": (20,) * 8})
    for split in ("train", "warmstart"):
        assert build_split(base, split).prompts == build_split(more_eval, split).prompts
    for split in ("eval", "warmstart"):
        assert build_split(base, split).prompts == build_split(more_train, split).prompts
    for split in ("train", "eval"):
        assert build_split(base, split).prompts == build_split(more_warm, split).prompts
    # growing a size appends: the smaller split is a per-level prefix of the larger one
    small, big = build_split(base, "eval"), build_split(more_eval, "eval")
    for level in LEVELS:
        a = [p for p, lv in zip(small.prompts, small.levels, strict=True) if lv == level]
        b = [p for p, lv in zip(big.prompts, big.levels, strict=True) if lv == level]
        assert b[: len(a)] == a


def test_adding_a_level_leaves_the_other_levels_identical():
    two = ArithmeticConfig(levels=("L2", "L5"), train_per_level=(6, 6), warmstart_per_level=(3, 3))
    three = ArithmeticConfig(levels=("L2", "L4", "L5"), train_per_level=(6, 6, 6), warmstart_per_level=(3, 3, 3))
    a, b = build_split(two, "train"), build_split(three, "train")
    assert [p for p, lv in zip(b.prompts, b.levels, strict=True) if lv != "L4"] == a.prompts


def test_other_seed_gives_other_problems_but_the_same_partition():
    a, _ = build_splits(ArithmeticConfig(seed=1))
    b, _ = build_splits(ArithmeticConfig(seed=2))
    assert a.prompts != b.prompts
    assert all(split_of(p, (0.5, 0.2, 0.3)) == "train" for p in a.prompts + b.prompts)


def test_builtin_levels_follow_their_definition():
    rng = np.random.default_rng(0)
    for prompt, _ in sample_problems("L2", 20, rng):
        a, b = map(int, prompt[:-1].split("+"))
        assert a >= 10 and b < 10 and count_carries("+", a, b) == 0
    for prompt, _ in sample_problems("L5", 20, rng):
        a, b = map(int, prompt[:-1].split("+"))
        assert a >= 10 and b >= 10 and count_carries("+", a, b) >= 1
    for prompt, answer in sample_problems("L6", 20, rng):
        a, b = map(int, prompt[:-1].split("-"))
        assert a % 10 < b % 10 and int(answer) >= 0
    for prompt, _ in sample_problems("L8", 20, rng):
        a, b = map(int, prompt[:-1].split("*"))
        assert 10 <= a <= 99 and 2 <= b <= 9


def test_carries_hand_solved():
    assert count_carries("+", 478, 365) == 2  # 8+5=13, 7+6+1=14, 4+3+1=8
    assert count_carries("+", 999, 1) == 3
    assert count_carries("-", 52, 27) == 1 and count_carries("-", 1000, 1) == 3 and count_carries("-", 59, 27) == 0
    assert count_carries("*", 47, 6) == 2  # 7*6=42 carry 4; 4*6+4=28 carry 2
    assert count_carries("*", 11, 3) == 0 and count_carries("*", 25, 12) == 1  # 25*2: 5*2=10 carry 1; 25*1: none


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 9999), b=st.integers(0, 9999))
def test_carries_match_a_digit_by_digit_reference(a, b):
    def ref_add(x, y):
        c, n = 0, 0
        for i in range(6):
            c = int((x // 10**i % 10) + (y // 10**i % 10) + c >= 10)
            n += c
        return n

    assert count_carries("+", a, b) == ref_add(a, b)
    hi, lo = max(a, b), min(a, b)
    assert count_carries("-", hi, lo) == sum(
        1 for i in range(6) if (hi % 10 ** (i + 1)) < (lo % 10 ** (i + 1))
    )  # a borrow out of column i <=> the low i+1 digits of hi are smaller than those of lo


def test_custom_level_from_a_mapping_and_its_problems():
    spec = {"name": "M2", "op": "*", "a": [10, 99], "b": [10, 19], "carries": [0, 0]}
    cfg = ArithmeticConfig(
        levels=("L1", "M2"), train_per_level=(3, 5), warmstart_per_level=(2, 2), eval_per_level=2, custom_levels=(spec,)
    )
    assert cfg.spec("M2") == LevelSpec("M2", "*", (10, 99), (10, 19), (0, 0))
    train = build_split(cfg, "train")
    for prompt, answer, level in zip(train.prompts, train.answers, train.levels, strict=True):
        if level == "M2":
            a, b = map(int, prompt[:-1].split("*"))
            assert 10 <= b <= 19 and count_carries("*", a, b) == 0 and int(answer) == a * b


def test_exhausted_level_names_level_split_and_distinct_count():
    total = sum(
        1 for a, b in itertools.product(range(10), range(10)) if split_of(f"{a}+{b}=", (0.5, 0.2, 0.3)) == "eval"
    )
    cfg = ArithmeticConfig(levels=("L1",), train_per_level=(1,), warmstart_per_level=(1,), eval_per_level=37)
    with pytest.raises(ValueError, match=rf"level L1 has {total} distinct problems in the eval split .*37 were asked"):
        build_split(cfg, "eval")
    with pytest.raises(ValueError, match="level L1 has 100 distinct problems; 101 were asked for"):
        sample_problems("L1", 101, np.random.default_rng(0))


def test_invalid_config():
    with pytest.raises(ValueError, match="train_per_level needs one count per level"):
        ArithmeticConfig(train_per_level=(1, 2))
    with pytest.raises(ValueError, match="levels must be built-in"):
        ArithmeticConfig(levels=("L9",), train_per_level=(1,), warmstart_per_level=(1,))
    with pytest.raises(ValueError, match="custom_levels names must be unique and not built-in"):
        ArithmeticConfig(custom_levels=(LevelSpec("L1", "+", (0, 9), (0, 9)),))
    with pytest.raises(ValueError, match=r"op must be one of \['\+', '-', '\*'\]"):
        LevelSpec("X", "/", (0, 9), (0, 9))
    with pytest.raises(ValueError, match=r"level X: a\[1\] must be >= 5"):
        LevelSpec("X", "+", (5, 4), (0, 9))
    assert set(BUILTIN_LEVELS) == set(LEVELS)


def test_exact_match_and_registry():
    exact = get_reward("exact")
    assert exact(["12", " 7 ", "8"], ["12", "7", "9"]).tolist() == [1.0, 1.0, 0.0]
    assert exact.in_process
    with pytest.raises(ValueError, match="reward='nope' is not a registered reward function; valid:"):
        get_reward("nope")


def test_math_verify_reward():
    reward = get_reward("math_verify")
    assert not reward.in_process
    assert reward(["The answer is $\\frac{1}{2}$", "so 3"], ["0.5", "4"]).tolist() == [1.0, 0.0]


def test_math_verify_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(ValueError, match="needs the math-verify package"):
        get_reward("math_verify")(["1"], ["1"])
