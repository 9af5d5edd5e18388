"""allocate(): the recipe's procedure reproduced, the project's rules, properties, and every error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knapsack_rl import AllocationConfig, KnapsackConfig, allocate
from knapsack_rl.core.allocate import EFFECTIVE, NEGATIVE, POSITIVE, UNESTIMATED, uniform_allocation
from tests.core.recipe_reference import recipe_allocate

RECIPE = KnapsackConfig.preset("recipe").allocation

GRID = np.arange(17) / 16


def _u_shaped(rng: np.random.Generator, m: int, nan_frac: float = 0.0) -> np.ndarray:
    q = rng.beta(0.35, 0.35, m)
    p = rng.binomial(16, q) / 16
    p[rng.random(m) < nan_frac] = np.nan
    return p


@pytest.mark.parametrize("seed", range(12))
def test_recipe_objective_reproduces_the_recipe(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(4, 24))
    p = _u_shaped(rng, m, nan_frac=0.15 if seed % 3 == 0 else 0.0)
    kwargs = {"n": 8, "min_n": 2, "max_n": int(rng.choice([6, 16, 128])), "fallback": seed % 4 != 1}
    ref_budgets, ref_obj = recipe_allocate(p, **kwargs)
    got = allocate(p, dataclasses.replace(RECIPE, **kwargs))
    eff = got.buckets == EFFECTIVE
    assert got.budgets.sum() == sum(ref_budgets) == 8 * m
    assert got.budgets[~eff].tolist() == np.asarray(ref_budgets)[~eff].tolist()
    assert got.objective == pytest.approx(ref_obj, abs=1e-12)


def test_recipe_mode_with_the_dp_solver_gives_identical_budgets_to_the_greedy() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, 40)  # distinct rates: a unique optimum
    g = allocate(p, objective="recipe", solver="greedy", fallback=False)
    d = allocate(p, objective="recipe", solver="dp", fallback=False)
    assert g.budgets.tolist() == d.budgets.tolist()
    assert g.objective == pytest.approx(d.objective, abs=1e-12)


def test_hand_solved_buckets_and_fallback() -> None:
    # p = 0.5: fallback cost int(min(128, log(0.1) / log(0.5))) = 3 per prompt -> C = 6 < R.
    p = np.array([np.nan, 0.5, 0.0, 1.0, 0.5, 0.0])
    res = allocate(p)
    assert res.buckets.tolist() == [UNESTIMATED, EFFECTIVE, NEGATIVE, POSITIVE, EFFECTIVE, NEGATIVE]
    # start: 8 + 2 + 2 + 2 + 2 + 2 = 18, R = 48 - 18 = 30, C = 6: surplus 24 to the two p = 0 prompts.
    assert res.fallback_fired and res.fallback_surplus == 24 and res.knapsack_budget == 6
    assert res.budgets.tolist() == [8, 5, 14, 2, 5, 14]
    assert res.bucket_counts() == {"unestimated": 1, "effective": 2, "negative": 2, "positive": 1}


def test_recipe_quirk_puts_unestimated_prompts_in_the_zero_pool() -> None:
    p = np.array([np.nan, 0.5, 0.0, 1.0, 0.5, 0.0])
    res = allocate(p, RECIPE)
    assert res.budgets.tolist() == [16, 5, 10, 2, 5, 10]  # surplus 24 split over three "p = 0" prompts
    # objective="recipe" alone changes the scoring only; the quirk is its own explicit setting
    assert allocate(p, objective="recipe").budgets.tolist() == [8, 5, 14, 2, 5, 14]
    assert allocate(p, unestimated_in_zero_pool=True).budgets.tolist() == [16, 5, 10, 2, 5, 10]


def test_no_effective_prompt_splits_the_rest_over_the_zero_pool() -> None:
    res = allocate(np.array([0.0, 1.0, 1.0, 0.0, 0.0]))
    # R = 40 - 10 = 30 over three p = 0 prompts
    assert res.budgets.tolist() == [12, 2, 2, 12, 12]


def test_no_effective_and_no_zero_prompt_gives_everyone_n() -> None:
    res = allocate(np.array([1.0, 1.0, np.nan]), n=6)
    assert res.budgets.tolist() == [6, 6, 6]


def test_overflow_goes_to_the_zero_pool_not_above_max_n() -> None:
    p = np.array([0.5, 0.0, 1.0, 1.0])
    res = allocate(p, max_n=16, fallback=False)
    # R = 32 - 8 = 24; the knapsack can place 14 (0.5 -> max_n 16); 10 go to the p = 0 prompt.
    assert res.budgets.tolist() == [16, 12, 2, 2] and res.overflow == 10
    recipe = allocate(p, max_n=16, fallback=False, overflow="effective", strict_max_n=False)
    assert recipe.budgets.tolist() == [26, 2, 2, 2]  # the recipe exceeds max_n
    with pytest.raises(ValueError, match=r"overflow=.effective. spreads .* which strict_max_n=True forbids"):
        allocate(p, max_n=16, overflow="effective")  # the interaction is explicit: no silent override


def test_strict_max_n_caps_the_zero_pool_and_returns_the_rest_to_the_knapsack() -> None:
    p = np.r_[np.zeros(2), np.full(6, 0.5)]
    # R = 64 - 16 = 48, C = 6 x 3 = 18: the surplus 30 would give each p = 0 prompt 17 > max_n = 10.
    strict = allocate(p, max_n=10)
    assert strict.budgets[:2].tolist() == [10, 10] and strict.budgets.max() <= 10
    assert strict.knapsack_budget == 18 + 14 and strict.fallback_surplus == 16
    assert strict.budgets.sum() == 64
    loose = allocate(p, max_n=10, strict_max_n=False)
    assert loose.budgets[:2].tolist() == [17, 17]


def test_budget_beyond_max_n_for_every_prompt_is_an_error() -> None:
    with pytest.raises(
        ValueError, match=r"total_budget=40 cannot be placed: .* at max_n=4 \(at most 8 for 2 prompts\)"
    ):
        allocate(np.array([0.5, 0.4]), total_budget=40, n=4, max_n=4)
    with pytest.raises(ValueError, match=r"total_budget=40 cannot be placed"):
        allocate(np.array([0.0, 1.0]), total_budget=40, n=4, max_n=4)
    with pytest.raises(ValueError, match=r"with strict_max_n=True, n must be <= max_n; got n=8, max_n=4"):
        allocate(np.array([0.5, 0.2]), max_n=4)  # checked with the settings, whatever the estimates
    assert allocate(np.array([0.5, 0.2]), max_n=8).budgets.sum() == 16


def test_plain_paper_objective_counts_the_lower_bound_value() -> None:
    p = np.array([0.25, 0.75])
    paper = allocate(p, fallback=False)
    v = (1 - p**paper.budgets - (1 - p) ** paper.budgets) * p * (1 - p) ** 2
    assert paper.objective == pytest.approx(v.sum(), abs=1e-15)


def test_costs_budget_in_tokens() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.95, 30)
    costs = rng.uniform(50, 400, 30)
    res = allocate(p, costs=costs, fallback=False)
    spent = float(res.budgets @ costs)
    assert spent <= 8 * costs.sum() + 1e-6
    assert spent + res.unspent == pytest.approx(8 * costs.sum())
    assert res.unspent < costs.max()
    assert res.budgets.min() >= 2 and res.budgets.max() <= 128
    cheap = allocate(p, costs=np.where(np.arange(30) == 0, 1.0, 100.0), fallback=False)
    equal = allocate(p, costs=np.full(30, 100.0), fallback=False)
    assert cheap.budgets[0] > equal.budgets[0] + 20  # a cheap prompt gets many more rollouts


# ---------------------------------------------------------------- properties
probs = st.lists(
    st.one_of(st.sampled_from(list(GRID)), st.floats(0.0, 1.0), st.just(float("nan"))), min_size=1, max_size=40
)


@st.composite
def _settings_and_budget(draw: st.DrawFn) -> tuple[AllocationConfig, int]:
    """Random valid settings (bounds, pools, overflow, scoring) and a budget above the starting counts."""
    min_n = draw(st.integers(1, 4))
    max_n = draw(st.integers(min_n, 40))
    strict = draw(st.booleans())
    cap = max_n if strict else 12
    cfg = AllocationConfig(
        n=draw(st.integers(1, cap)),
        min_n=min_n,
        max_n=max_n,
        negative_n=draw(st.integers(0, cap)),
        positive_n=draw(st.integers(0, cap)),
        fallback=draw(st.booleans()),
        objective=draw(st.sampled_from(["paper", "recipe"])),
        overflow=draw(st.sampled_from(["pool"] if strict else ["pool", "effective"])),
        unestimated_in_zero_pool=draw(st.booleans()),
        strict_max_n=strict,
    )
    return cfg, draw(st.integers(0, 300))


def _starting_counts(p: np.ndarray, cfg: AllocationConfig) -> np.ndarray:
    eff = (p > 0) & (p < 1)
    return np.where(np.isnan(p), cfg.n, np.where(eff, cfg.min_n, np.where(p == 0, cfg.negative_n, cfg.positive_n)))


@settings(max_examples=300, deadline=None)
@given(p=probs, setting=_settings_and_budget())
def test_total_is_exact_and_bounds_hold(p: list[float], setting: tuple[AllocationConfig, int]) -> None:
    cfg, extra = setting
    arr = np.array(p)
    start = _starting_counts(arr, cfg)
    budget = int(start.sum()) + extra
    eff = (arr > 0) & (arr < 1)
    bounded = cfg.strict_max_n or (cfg.overflow == "pool" and eff.all())  # no prompt may exceed max_n
    if bounded and budget > cfg.max_n * arr.size:  # cannot be placed: must be refused, not bent
        with pytest.raises(ValueError, match=rf"total_budget={budget} cannot be placed"):
            allocate(arr, cfg, total_budget=budget)
        return
    res = allocate(arr, cfg, total_budget=budget)
    assert res.budgets.sum() == budget
    zero_pool = (arr == 0) | (np.isnan(arr) & cfg.unestimated_in_zero_pool)
    if not eff.any() and not zero_pool.any():  # the recipe's rule: the budget split evenly over every prompt
        assert res.budgets.max() - res.budgets.min() <= 1
    else:
        assert np.all(res.budgets >= start)  # nobody goes below its bucket's starting count
    if cfg.strict_max_n:
        assert res.budgets.max() <= cfg.max_n  # a bound on every prompt
    elif cfg.overflow == "pool" and eff.any():
        assert res.budgets[eff].max() <= cfg.max_n  # the knapsack's prompts stay within max_n


@settings(max_examples=150, deadline=None)
@given(
    m=st.integers(1, 12),
    c=st.sampled_from([0.8, 1 / 3, 0.1, 0.7, 2.5, 1e-3]),
    n=st.integers(2, 20),
    p=st.floats(0.0, 1.0) | st.just(float("nan")),
)
def test_equal_non_integer_costs_lose_no_rollout(m: int, c: float, n: int, p: float) -> None:
    """Issue: allocate([nan], n=10, costs=[0.8]) gave [9]: 10 x 0.8 must fit a budget of 8.0."""
    res = allocate(np.full(m, p), n=n, costs=np.full(m, c), fallback=False, max_n=max(n, 20))
    unit = allocate(np.full(m, p), n=n, fallback=False, max_n=max(n, 20))
    assert res.budgets.sum() == unit.budgets.sum() == n * m
    assert res.unspent == pytest.approx(0.0, abs=1e-9 * n * m)


def test_floor_keeps_committed_counts_and_the_total() -> None:
    p = np.array([0.5, 0.0, 0.25, np.nan])
    floor = np.array([0, 4, 4, 0])
    res = allocate(p, n=8, floor=floor, fallback=False)
    assert res.budgets.sum() == 32 and np.all(res.budgets >= floor)
    assert res.budgets[1] == 4  # p = 0 with 4 committed: negative_n=2 is below the floor, nothing added
    with pytest.raises(ValueError, match=r"floor must be in \[0, max_n=128\]; floor\[0\]=-1"):
        allocate(p, floor=np.array([-1, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"floor must be \(4,\) integers"):
        allocate(p, floor=np.array([1.0, 0, 0, 0]))


def test_uniform_allocation_logs_like_allocate() -> None:
    p = np.array([0.0, 0.5, 1.0, np.nan])
    uni = uniform_allocation(p, AllocationConfig(n=8))
    knap = allocate(p, n=8)
    assert uni.budgets.tolist() == [8, 8, 8, 8] and uni.buckets.tolist() == knap.buckets.tolist()
    assert set(uni.metrics()) == set(knap.metrics())
    v = (1 - 0.5**8 - 0.5**8) * 0.5 * 0.25
    assert uni.objective == pytest.approx(v)
    assert uniform_allocation(p, AllocationConfig(n=8), total_budget=30).budgets.tolist() == [8, 8, 7, 7]


@settings(max_examples=80, deadline=None)
@given(p=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=25, unique=True), budget=st.integers(0, 300))
def test_objective_never_decreases_as_the_budget_grows(p: list[float], budget: int) -> None:
    arr = np.array(p)
    base = 2 * arr.size
    budget = min(budget, 126 * arr.size - 1)  # stay within what max_n = 128 lets the knapsack place
    a = allocate(arr, total_budget=base + budget, fallback=False)
    b = allocate(arr, total_budget=base + budget + 1, fallback=False)
    assert b.objective >= a.objective - 1e-15


@settings(max_examples=80, deadline=None)
@given(p=st.lists(st.floats(0.01, 0.99), min_size=2, max_size=30, unique=True), seed=st.integers(0, 2**31))
def test_permuting_prompts_permutes_budgets(p: list[float], seed: int) -> None:
    arr = np.array(p)
    perm = np.random.default_rng(seed).permutation(arr.size)
    a = allocate(arr)
    b = allocate(arr[perm])
    assert b.budgets.tolist() == a.budgets[perm].tolist()


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_hat": [0.5, 1.2]}, r"p_hat must be in \[0, 1\] or NaN \(no estimate\); p_hat\[1\]=1.2"),
        ({"p_hat": [0.5, -0.1]}, r"p_hat\[1\]=-0.1"),
        ({"p_hat": [np.inf, 0.5]}, r"p_hat\[0\]=inf"),
        ({"p_hat": []}, r"p_hat is empty"),
        ({"p_hat": [[0.5]]}, r"p_hat must be 1-D; got shape \(1, 1\)"),
        ({"p_hat": ["a"]}, r"p_hat must be an array of real numbers; got dtype <U1"),
        ({"p_hat": [True, False]}, r"p_hat must be an array of real numbers; got dtype bool"),
        ({"p_hat": [0.5 + 0j]}, r"p_hat must be an array of real numbers; got dtype complex128"),
        ({"p_hat": ["0.5"]}, r"p_hat must be an array of real numbers"),
        ({"p_hat": [0.5], "total_budget": -1}, r"total_budget must be >= 0; got total_budget=-1"),
        ({"p_hat": [0.5], "total_budget": 7.5}, r"total_budget must be an integer; got total_budget=7.5"),
        ({"p_hat": [0.5], "total_budget": 10**30}, r"total_budget must be <= 9007199254740992; got"),
        ({"p_hat": [0.5], "fallback": "no"}, r"fallback must be true or false \(a bool\); got fallback='no'"),
        ({"p_hat": [0.5], "strict_max_n": 1}, r"strict_max_n must be true or false"),
        ({"p_hat": [0.5], "max_newn": 3}, r"allocate\(\) got unknown setting\(s\) \['max_newn'\]; valid:"),
        ({"p_hat": [0.5, np.nan], "total_budget": 9}, r"total_budget=9 is below the sum of the lower bounds 10"),
        ({"p_hat": [0.5], "max_n": 1, "min_n": 2}, r"max_n must be >= min_n; got max_n=1, min_n=2"),
        ({"p_hat": [0.5], "min_n": 0}, r"min_n must be >= 1; got min_n=0"),
        ({"p_hat": [0.5], "n": 0}, r"n must be >= 1; got n=0"),
        ({"p_hat": [0.5], "negative_n": -2}, r"negative_n must be >= 0; got negative_n=-2"),
        ({"p_hat": [0.5], "alpha": 1.0}, r"alpha must be < 1.0; got alpha=1.0"),
        (
            {"p_hat": [0.5], "objective": "best"},
            r"objective must be one of \['paper', 'recipe'\]; got objective='best'",
        ),
        ({"p_hat": [0.5], "costs": [0.0]}, r"costs must be > 0; costs\[0\]=0.0"),
        ({"p_hat": [0.5], "costs": [np.nan]}, r"costs must be finite; costs\[0\]=nan"),
        ({"p_hat": [0.5], "costs": [1.0, 2.0]}, r"costs must have shape \(1,\); got shape \(2,\)"),
        ({"p_hat": [0.5], "costs": [True]}, r"costs must be an array of real numbers; got dtype bool"),
        ({"p_hat": [0.5], "posterior": ([1.0], [0.0])}, r"posterior\[1\] must be > 0; posterior\[1\]\[0\]=0.0"),
        ({"p_hat": [0.5], "value": "nope"}, r"value='nope' is not a registered value function"),
    ],
)
def test_bad_input_names_the_argument_and_value(kwargs: dict, message: str) -> None:
    p_hat = kwargs.pop("p_hat")
    with pytest.raises(ValueError, match=message):
        allocate(p_hat, **kwargs)


def test_readme_example() -> None:
    result = allocate(np.array([0.0, 0.0625, 0.5, 0.9375, 1.0, np.nan]), n=8)
    assert result.budgets.tolist() == [2, 26, 8, 2, 2, 8]
    assert not result.fallback_fired


def test_presets() -> None:
    p = np.array([0.0, 1.0, 0.25, 0.5, np.nan])
    recipe = allocate(p, KnapsackConfig.preset("recipe").allocation)
    assert recipe.budgets.sum() == 40 and recipe.config.objective == "recipe"
    project = allocate(p, KnapsackConfig.preset("project").allocation)
    assert project.budgets[:2].tolist() == [1, 1] and not project.fallback_fired and project.budgets.sum() == 40


def test_config_and_keywords_are_exclusive() -> None:
    with pytest.raises(ValueError, match=r"either as config or as keywords, not both; got \['n'\]"):
        allocate([0.5], AllocationConfig(), n=4)
    with pytest.raises(ValueError, match=r"config must be an AllocationConfig; got dict"):
        allocate([0.5], {"n": 4})  # type: ignore[arg-type]


def test_posterior_scores_every_estimate_as_effective_and_keeps_the_total() -> None:
    """0 successes in 8 reads as hard, not hopeless: the prompt gets rollouts instead of negative_n."""
    p = np.array([0.0, 0.5, 1.0, np.nan])
    point = allocate(p, n=8, fallback=False, negative_n=1, positive_n=1)
    a, b = np.array([1.0, 5.0, 9.0, 1.0]), np.array([9.0, 5.0, 1.0, 1.0])  # Beta(1, 9): 0 of 8 seen
    post = allocate(p, n=8, fallback=False, negative_n=1, positive_n=1, posterior=(a, b))
    assert point.budgets[0] == 1 and post.budgets[0] > 2
    assert post.buckets.tolist() == [EFFECTIVE, EFFECTIVE, EFFECTIVE, UNESTIMATED]
    assert post.budgets.sum() == 32 and post.budgets[3] == 8
    from knapsack_rl.core.value import get_posterior_value

    v = get_posterior_value("paper")
    assert post.objective == pytest.approx(float(v(post.budgets[:3], a[:3], b[:3]).sum()))
