"""The exact greedy solver against the reference dynamic programme, hand-solved cases, costs."""

from __future__ import annotations

import numpy as np
import pytest

from knapsack_rl.core.solve import get_solver, register_solver, solve_dp, solve_greedy
from knapsack_rl.core.value import get_value, register_value, value_names


def _instance(rng: np.random.Generator, grid: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    m = int(rng.integers(1, 8))
    p = rng.choice(np.arange(1, 16) / 16, m) if grid else rng.uniform(0.01, 0.99, m)
    lower = rng.integers(1, 4, m)
    upper = lower + rng.integers(0, 7, m)
    budget = int(rng.integers(0, int((upper - lower).sum()) + 4))
    return p, lower, upper, budget


@pytest.mark.parametrize("value", ["paper", "nonzero", "variance"])
@pytest.mark.parametrize("zero_at_lower", [False, True])
def test_greedy_matches_dp_on_random_instances(value: str, zero_at_lower: bool) -> None:
    rng = np.random.default_rng(12345)
    fn = get_value(value)
    for trial in range(120):
        p, lower, upper, budget = _instance(rng, grid=trial % 2 == 0)
        g = solve_greedy(fn, p, lower, upper, budget, zero_at_lower=zero_at_lower)
        d = solve_dp(fn, p, lower, upper, budget, zero_at_lower=zero_at_lower)
        assert abs(g.objective - d.objective) <= 1e-9
        assert g.extra.sum() == min(budget, (upper - lower).sum())
        assert np.all(g.extra >= 0) and np.all(g.extra <= upper - lower)
        assert g.optimal and g.gap_bound == 0.0


def test_deduplicated_rows_give_the_same_answer_as_distinct_rows() -> None:
    rng = np.random.default_rng(7)
    fn = get_value("paper")
    p = rng.choice(np.arange(1, 16) / 16, 400)  # many duplicates: the row-deduplicating path
    lower = np.full(400, 2)
    upper = np.full(400, 40)
    for budget in (1, 17, 399, 1200, 5000, 15200):
        g = solve_greedy(fn, p, lower, upper, budget)
        jitter = p + np.arange(400) * 1e-13  # all distinct: the plain partition path
        h = solve_greedy(fn, jitter, lower, upper, budget)
        assert g.extra.sum() == h.extra.sum() == min(budget, 15200)
        assert abs(g.objective - h.objective) < 1e-9
        assert abs(g.objective - _objective(fn, p, lower, h.extra)) < 1e-9


def _objective(fn, p, lower, extra) -> float:  # type: ignore[no-untyped-def]
    return float(fn((lower + extra).astype(float), p).sum())


def test_hand_solved_ties_go_to_the_lower_index() -> None:
    fn = get_value("paper")
    p = np.array([0.5, 0.5])
    sol = solve_greedy(fn, p, np.array([2, 2]), np.array([4, 4]), 1)
    assert sol.extra.tolist() == [1, 0]
    # V(n, 1/2) = (1 - 2 / 2^n) / 8: V(3) + V(2) = 3/32 + 1/16
    assert sol.objective == pytest.approx(3 / 32 + 1 / 16, abs=1e-15)


def test_hand_solved_prefers_the_most_informative_prompt() -> None:
    fn = get_value("paper")
    p = np.array([0.9, 1 / 3])
    sol = solve_greedy(fn, p, np.array([2, 2]), np.array([10, 10]), 3)
    # G(1/3) = 4/27 >> G(0.9) = 0.009, and the gains at p = 1/3 stay above those at 0.9 for 3 units
    assert sol.extra.tolist() == [0, 3]


def test_budget_beyond_capacity_fills_every_prompt_to_its_upper_bound() -> None:
    fn = get_value("paper")
    sol = solve_greedy(fn, np.array([0.3, 0.6]), np.array([2, 3]), np.array([5, 4]), 100)
    assert sol.extra.tolist() == [3, 1]
    assert sol.placed == 4


def test_costs_stay_within_budget_and_within_the_reported_gap_of_the_dp() -> None:
    rng = np.random.default_rng(99)
    fn = get_value("paper")
    exact = 0
    for _ in range(150):
        p, lower, upper, budget = _instance(rng, grid=False)
        costs = rng.integers(1, 6, p.size).astype(float)
        g = solve_greedy(fn, p, lower, upper, budget, costs=costs)
        d = solve_dp(fn, p, lower, upper, budget, costs=costs)
        assert costs @ g.extra <= budget + 1e-9
        assert g.objective <= d.objective + 1e-12
        assert d.objective - g.objective <= g.gap_bound + 1e-12
        exact += abs(d.objective - g.objective) < 1e-12
    assert exact >= 100  # in practice the filled greedy is almost always optimal


def test_equal_costs_match_unit_costs() -> None:
    fn = get_value("paper")
    p = np.array([0.2, 0.5, 0.7, 0.95])
    lower, upper = np.full(4, 2), np.full(4, 20)
    unit = solve_greedy(fn, p, lower, upper, 23)
    scaled = solve_greedy(fn, p, lower, upper, 23 * 7.0, costs=np.full(4, 7.0))
    assert unit.extra.tolist() == scaled.extra.tolist()


def test_dp_rejects_fractional_costs() -> None:
    fn = get_value("paper")
    with pytest.raises(ValueError, match="costs must be integers"):
        solve_dp(fn, np.array([0.5]), np.array([2]), np.array([4]), 3, costs=np.array([1.5]))  # type: ignore[arg-type]


def test_registries_reject_duplicates_and_list_valid_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_value("paper")(lambda n, p: n * p)
    with pytest.raises(ValueError, match=r"value='nope' is not a registered value function; valid: \['nonzero'"):
        get_value("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_solver("greedy")(solve_greedy)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"solver='x' is not a registered solver; valid: \['dp', 'greedy'\]"):
        get_solver("x")
    assert {"paper", "nonzero", "variance"} <= set(value_names())


@pytest.mark.parametrize("value", ["paper", "nonzero", "variance"])
def test_registered_values_are_concave_and_vanish_at_the_ends(value: str) -> None:
    fn = get_value(value)
    n = np.arange(1, 130, dtype=float)[:, None]
    p = np.linspace(0.0, 1.0, 101)[None, :]
    v = fn(n, p)
    assert np.all(v[:, 0] == 0) and np.all(v[:, -1] == 0)
    gains = np.diff(v, axis=0)
    assert np.all(np.diff(gains, axis=0) <= 1e-15)
