"""The solver: every method against the dynamic programme and a literal top-R, the methods against each
other, an optimality certificate on large instances, costs against a literal scan, hand-solved cases,
properties, errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knapsack_rl.core import solve as solve_module
from knapsack_rl.core import solve_large
from knapsack_rl.core.solve import COST_RTOL, METHODS, Solution, solve
from knapsack_rl.core.value import ValueFunction, get_posterior_value, get_value, value_names

Params = tuple[np.ndarray, ...]
Path = Callable[..., Solution]


def _method(method: str, **options: int) -> Path:
    """``solve`` with one method (and options for the threshold search)."""

    def run(*args: object, **kwargs: object) -> Solution:
        return solve(*args, method=method, options=options or None, **kwargs)  # type: ignore[arg-type]

    return run


def _forced(sample_size: int, band_max: int) -> Path:
    """The threshold search with every stage forced on small instances (no listing of the whole problem)."""
    return _method("threshold", dense_units=0, sample_size=sample_size, band_max=band_max)


greedy, dense, threshold, dp = (_method(m) for m in ("greedy", "dense", "threshold", "dp"))
PATHS: dict[str, Path] = {
    "greedy": greedy,
    "dense": dense,
    "threshold": threshold,
    "forced-1-0": _forced(1, 0),
    "forced-2-1": _forced(2, 1),
    "forced-3-4": _forced(3, 4),
}


def _value(name: str, posterior: bool) -> ValueFunction:
    return get_posterior_value(name) if posterior else get_value(name)


def _params(rng: np.random.Generator, m: int, posterior: bool, grid: bool) -> Params:
    if posterior:
        pick = [1.0, 2.0, 3.0, 6.0]
        a = rng.choice(pick, m) if grid else rng.uniform(0.3, 12.0, m)
        b = rng.choice(pick, m) if grid else rng.uniform(0.3, 12.0, m)
        return (a, b)
    return (rng.choice(np.arange(1, 16) / 16, m) if grid else rng.uniform(0.01, 0.99, m),)


def _instance(rng: np.random.Generator, posterior: bool, trial: int) -> tuple[Params, np.ndarray, np.ndarray, int]:
    m = int(rng.integers(1, 8))
    params = _params(rng, m, posterior, grid=trial % 2 == 0)
    lower = rng.integers(1, 4, m)
    width = 40 if trial % 5 == 0 else 7  # wide and narrow bounds
    upper = lower + rng.integers(0, width, m)
    budget = int(rng.integers(0, int((upper - lower).sum()) + 4))
    return params, lower, upper, budget


@pytest.mark.parametrize("posterior", [False, True])
@pytest.mark.parametrize("zero_at_lower", [False, True])
@pytest.mark.parametrize("name", ["paper", "nonzero", "variance", "hora", "vip"])
def test_every_path_matches_the_dp_and_the_others(name: str, zero_at_lower: bool, posterior: bool) -> None:
    fn = _value(name, posterior)
    rng = np.random.default_rng(12345)
    for trial in range(30):
        params, lower, upper, budget = _instance(rng, posterior, trial)
        ref = dp(fn, params, lower, upper, budget, zero_at_lower=zero_at_lower)
        got = {k: f(fn, params, lower, upper, budget, zero_at_lower=zero_at_lower) for k, f in PATHS.items()}
        for sol in got.values():
            assert abs(sol.objective - ref.objective) <= 1e-9
            assert sol.extra.sum() == sol.placed == min(budget, (upper - lower).sum())
            assert np.all(sol.extra >= 0) and np.all(sol.extra <= upper - lower)
            assert sol.optimal and sol.gap_bound == 0.0
        first = got["greedy"].extra.tolist()
        assert all(sol.extra.tolist() == first for sol in got.values())


def _gains_of(
    fn: ValueFunction, params: Params, lower: np.ndarray, upper: np.ndarray, i: int, zero: bool
) -> np.ndarray:
    """The gains of prompt i's units, written out: the closed form at n = lower_i + j; V(lower_i + 1) first
    when unit 0 is scored from 0."""
    n = lower[i] + np.arange(upper[i] - lower[i], dtype=float)
    one = tuple(x[[i]] for x in params)
    gains = np.asarray(fn.gain(n, *(fn.prepare(*one) if fn.prepare else one)), dtype=float)  # type: ignore[misc]
    if zero and n.size:
        gains[0] = fn(n[:1] + 1.0, *one)[0]
    return gains


def _literal_top_r(
    fn: ValueFunction, params: Params, lower: np.ndarray, upper: np.ndarray, budget: int, zero: bool
) -> list[int]:
    """The definition: every unit sorted by (-gain, prompt, j); the first ``budget`` are taken."""
    units = [(-g, i, j) for i in range(lower.size) for j, g in enumerate(_gains_of(fn, params, lower, upper, i, zero))]
    extra = [0] * lower.size
    for _, i, _ in sorted(units)[:budget]:
        extra[i] += 1
    return extra


@pytest.mark.parametrize("posterior", [False, True])
def test_every_method_is_the_literal_top_r_selection(posterior: bool) -> None:
    rng = np.random.default_rng(2024)
    for trial in range(24):
        fn = _value(str(rng.choice(value_names())), posterior)
        m = int(rng.integers(1, 40))
        params = _params(rng, m, posterior, grid=trial % 2 == 0)  # the grid: many ties
        lower = rng.integers(1, 4, m)
        upper = lower + rng.integers(0, 150 if trial % 4 == 0 else 30, m)
        budget = int(rng.integers(0, int((upper - lower).sum()) + 2))
        zero = trial % 3 == 0
        ref = _literal_top_r(fn, params, lower, upper, budget, zero)
        for f in PATHS.values():
            assert f(fn, params, lower, upper, budget, zero_at_lower=zero).extra.tolist() == ref


def test_dense_listing_deepens_for_prompts_whose_gains_decay_slowly() -> None:
    # hora gains p (1 - p)^N: 0.6 * 0.4^N falls fast, 0.03 * 0.97^N slowly; the first listing holds
    # 2 R / E + 4 = 22 units per prompt, the slow prompts take more than that, the fast ones fewer
    fn = get_value("hora")
    p = np.array([0.6] * 10 + [0.03] + [0.6] * 10 + [0.03, 0.6])
    m = p.size
    lower, upper = np.full(m, 1), np.full(m, 400)
    budget = 9 * m
    ref = _literal_top_r(fn, (p,), lower, upper, budget, False)
    assert ref[10] > 2 * budget // m + 4 and max(ref[:10]) < 2 * budget // m + 4
    for f in PATHS.values():
        assert f(fn, p, lower, upper, budget).extra.tolist() == ref
    costs = np.where(p < 0.5, 0.1, 1.0)  # cheap slow prompts; the fast ones tie, split by prompt index
    scan, gap = _scan(fn, (p,), lower, upper, 40.0, costs)
    assert scan[10] > 2 * 40 / costs.sum() + 4 and scan[11] > scan[12]
    for f in PATHS.values():
        sol = f(fn, p, lower, upper, 40.0, costs=costs)
        assert sol.extra.tolist() == scan and sol.gap_bound == (0.0 if gap is None else gap)


def test_single_array_and_one_tuple_give_the_same_answer() -> None:
    fn = get_value("paper")
    p = np.array([0.3, 0.6, 0.9])
    a = greedy(fn, p, np.full(3, 2), np.full(3, 9), 7)
    b = greedy(fn, (p,), np.full(3, 2), np.full(3, 9), 7)
    assert a.extra.tolist() == b.extra.tolist() and a.objective == b.objective


@pytest.mark.parametrize("posterior", [False, True])
def test_paths_agree_on_larger_instances_with_many_ties(posterior: bool) -> None:
    fn = _value("paper", posterior)
    rng = np.random.default_rng(7)
    for e, width in [(3000, 20), (6000, 126)]:
        params = _params(rng, e, posterior, grid=True)  # few distinct rows: the grouped dense table
        lower = np.full(e, 2)
        upper = lower + width
        for budget in (1, 5 * e + 3, width * e - 1):
            got = [f(fn, params, lower, upper, budget).extra for f in (greedy, dense, threshold)]
            got.append(_forced(64, 10)(fn, params, lower, upper, budget).extra)
            assert all(np.array_equal(g, got[0]) for g in got)
            assert got[0].sum() == budget


def _certify_unit(fn: ValueFunction, params: Params, lower: np.ndarray, upper: np.ndarray, sol: Solution) -> None:
    """Optimality certificate for unit costs: every unit taken scores at least every unit left out."""
    gain = solve_module._Gains(fn, tuple(np.asarray(x, dtype=float) for x in params), lower, False)
    rows = np.arange(lower.size)
    caps = upper - lower
    taken = sol.extra > 0
    room = sol.extra < caps
    worst_taken = gain(rows[taken], sol.extra[taken] - 1).min(initial=np.inf)
    best_left = gain(rows[room], sol.extra[room]).max(initial=-np.inf)
    assert best_left <= worst_taken


@pytest.mark.parametrize(
    ("name", "posterior", "e", "max_n"),
    [("paper", False, 50_000, 128), ("paper", False, 5_000, 10**6), ("hora", False, 20_000, 128),
     ("vip", False, 20_000, 10**5), ("paper", True, 20_000, 128), ("hora", True, 5_000, 10**4)],
)  # fmt: skip
def test_every_method_is_optimal_on_large_continuous_instances(name: str, posterior: bool, e: int, max_n: int) -> None:
    fn = _value(name, posterior)
    rng = np.random.default_rng(e + max_n)
    params = _params(rng, e, posterior, grid=False)
    lower, upper = np.full(e, 2), np.full(e, max_n)
    for budget in (6 * e, 17 * e + 5):
        sol = greedy(fn, params, lower, upper, budget)
        assert sol.extra.sum() == budget and np.all(sol.extra <= upper - lower)
        _certify_unit(fn, params, lower, upper, sol)
        small = _forced(257, 1000)(fn, params, lower, upper, budget)  # other sample, band shrinking rounds
        assert np.array_equal(small.extra, sol.extra)
        assert np.array_equal(dense(fn, params, lower, upper, budget).extra, sol.extra)


def test_count_gt_is_exact_and_certified() -> None:
    fn = get_value("paper")
    rng = np.random.default_rng(0)
    for trial in range(300):
        m = int(rng.integers(1, 8))
        p = rng.uniform(0.01, 0.99, m)
        lower, cap = rng.integers(1, 4, m), rng.integers(0, 40, m)
        units = solve_large._Units(fn, (p,), lower, None, None)
        scores = [units.scores(np.full(c, i), np.arange(c)) for i, c in enumerate(cap)]
        t = float(rng.uniform(0.0, 0.02))
        true = np.array([int((s > t).sum()) for s in scores])
        lo = np.array([rng.integers(0, c + 1) for c in true])
        hi = np.array([rng.integers(c, k + 1) for c, k in zip(true, cap, strict=True)])
        guess = None if trial % 2 else np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi, strict=True)])
        head, tail = np.full(m, -np.inf), np.full(m, np.inf)
        got = solve_large._count_gt(units, None, t, lo, hi, guess, (head, tail))
        assert got.tolist() == true.tolist()
        for i in range(m):  # edges hold s(c) and s(c - 1) where the count is not at a bound
            if lo[i] < got[i] < hi[i]:
                assert head[i] == scores[i][got[i]] and tail[i] == scores[i][got[i] - 1]


def test_threshold_search_records_edge_scores_exactly() -> None:
    # with the recipe's scoring unit 0 of a prompt is V(lower + 1), ten times its next gain here: a blend
    # s(0) + 1 * (s(1) - s(0)) of the two is an ulp off s(1), and a bracket at that tie split it wrongly
    fn = get_posterior_value("paper")
    units = solve_large._Units(fn, (np.array([6.0]), np.array([1.0])), np.array([3]), None, np.array([True]))
    scores = units.scores(np.zeros(4, dtype=np.int64), np.arange(4))
    head, tail = np.full(1, -np.inf), np.full(1, np.inf)
    got = solve_large._count_gt(
        units, None, float(scores[2]), np.array([0]), np.array([10]), np.array([1]), (head, tail)
    )
    assert got.tolist() == [2] and tail[0] == scores[1] and head[0] == scores[2]


def test_ties_at_the_threshold_search_bracket_go_to_the_lower_index() -> None:
    # equal gains at different j (lower 1, 2 and 3, the recipe's scoring): found by a search, cut in two
    fn = get_posterior_value("paper")
    a = np.array([6.0, 6.0, 6.0, 6.0, 6.0, 2.0, 2.0, 2.0, 6.0, 3.0, 6.0])
    b = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    lower = np.array([2, 1, 3, 1, 3, 2, 3, 1, 1, 1, 1])
    upper = lower + 20
    ref = _literal_top_r(fn, (a, b), lower, upper, 32, True)
    assert ref == [2, 3, 1, 3, 1, 5, 3, 5, 3, 4, 2]
    for f in [*PATHS.values(), _method("threshold", sample_size=1, band_max=0, dense_units=0)]:
        assert f(fn, (a, b), lower, upper, 32, zero_at_lower=True).extra.tolist() == ref
    costs = np.where(a == 6.0, 2.5, 1.0)
    scan, _ = _scan(fn, (a, b), lower, upper, 50.0, costs, zero=True)
    for f in [*PATHS.values(), _method("threshold", sample_size=1, band_max=0, dense_units=0)]:
        assert f(fn, (a, b), lower, upper, 50.0, costs=costs, zero_at_lower=True).extra.tolist() == scan


def test_hand_solved_ties_go_to_the_lower_index() -> None:
    fn = get_value("paper")
    p = np.array([0.5, 0.5])
    for f in PATHS.values():
        sol = f(fn, p, np.array([2, 2]), np.array([4, 4]), 1)
        assert sol.extra.tolist() == [1, 0]
        # V(n, 1/2) = (1 - 2 / 2^n) / 8: V(3) + V(2) = 3/32 + 1/16
        assert sol.objective == pytest.approx(3 / 32 + 1 / 16, abs=1e-15)
    tied = np.full(5, 0.25)
    assert greedy(fn, tied, np.full(5, 2), np.full(5, 6), 7).extra.tolist() == [2, 2, 1, 1, 1]


def test_hand_solved_prefers_the_most_informative_prompt() -> None:
    fn = get_value("paper")
    p = np.array([0.9, 1 / 3])
    sol = greedy(fn, p, np.array([2, 2]), np.array([10, 10]), 3)
    # G(1/3) = 4/27 >> G(0.9) = 0.009, and the gains at p = 1/3 stay above those at 0.9 for 3 units
    assert sol.extra.tolist() == [0, 3]


def test_hand_solved_hora_posterior_follows_uncertainty() -> None:
    fn = get_posterior_value("hora")
    # gains E[p (1 - p)^N]: Beta(2, 2): 12 / ((N + 2)(N + 3)(N + 4)) = 1/5, 1/10, 2/35, 1/28, 1/42, 1/60
    # Beta(1, 1) (uniform): 1 / ((N + 1)(N + 2)) = 1/6, 1/12, 1/20, 1/30, 1/42, 1/56: it decays slower
    ab = (np.array([2.0, 1.0]), np.array([2.0, 1.0]))
    lower, upper = np.array([1, 1]), np.array([40, 40])
    assert greedy(fn, ab, lower, upper, 7).extra.tolist() == [4, 3]
    assert greedy(fn, ab, lower, upper, 11).extra.tolist() == [5, 6]


def test_budget_beyond_capacity_fills_every_prompt_and_zero_budget_places_nothing() -> None:
    fn = get_value("paper")
    for f in PATHS.values():
        sol = f(fn, np.array([0.3, 0.6]), np.array([2, 3]), np.array([5, 4]), 100)
        assert sol.extra.tolist() == [3, 1] and sol.placed == 4
        empty = f(fn, np.array([0.3, 0.6]), np.array([2, 3]), np.array([5, 4]), 0)
        assert (
            empty.extra.tolist() == [0, 0]
            and empty.placed == 0
            and empty.objective == pytest.approx(float(fn(2.0, 0.3) + fn(3.0, 0.6)))
        )
    none = greedy(fn, np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=int), 5)
    assert none.extra.size == 0 and none.objective == 0.0


# --------------------------------------------------------------------------------------------
# costs


def _scan(
    fn: ValueFunction,
    params: Params,
    lower: np.ndarray,
    upper: np.ndarray,
    budget: float,
    costs: np.ndarray,
    zero: bool = False,
) -> tuple[list[int], float | None]:
    """Literal reference: every unit in order (-gain / cost, prompt, j); a unit is taken if it fits,
    otherwise its prompt is dropped. Returns the counts and the gain of the first unit that did not fit."""
    tol = COST_RTOL * budget
    units = []
    for i in range(lower.size):
        gains = _gains_of(fn, params, lower, upper, i, zero)
        units += [(-g / costs[i], i, j, g) for j, g in enumerate(gains) if (j + 1) * costs[i] <= budget + tol]
    extra, spent, dropped, gap = [0] * lower.size, 0.0, set(), None
    for _, i, _, g in sorted(units, key=lambda u: (u[0], u[1], u[2])):
        if i in dropped:
            continue
        if spent + costs[i] <= budget + tol:
            extra[i] += 1
            spent += costs[i]
        else:
            dropped.add(i)
            gap = g if gap is None else gap
    return extra, gap


@pytest.mark.parametrize("posterior", [False, True])
def test_costs_follow_the_literal_scan_on_every_path(posterior: bool) -> None:
    rng = np.random.default_rng(99)
    for trial in range(60):
        fn = _value(str(rng.choice(value_names())), posterior)
        m = int(rng.integers(1, 8))
        params = _params(rng, m, posterior, grid=trial % 2 == 0)
        lower = rng.integers(1, 4, m)
        upper = lower + rng.integers(0, 12, m)
        costs = rng.choice([0.8, 1 / 3, 0.1, 1.7, 2.5, 0.45], m) if trial % 3 else rng.uniform(0.2, 3.0, m)
        budget = float(rng.uniform(0.0, 1.1 * float((costs * (upper - lower)).sum()) + 0.5))
        ref, gap = _scan(fn, params, lower, upper, budget, costs)
        for f in PATHS.values():
            sol = f(fn, params, lower, upper, budget, costs=costs)
            if np.all(costs == costs[0]):
                continue  # solved as unit costs (see the next tests)
            assert sol.extra.tolist() == ref
            assert sol.placed == pytest.approx(float(np.sum(costs * sol.extra)), rel=1e-12)
            assert sol.placed <= budget * (1 + COST_RTOL)
            assert sol.gap_bound == (0.0 if gap is None else max(gap, 0.0))


def test_costs_stay_within_the_reported_gap_of_the_dp() -> None:
    rng = np.random.default_rng(3)
    fn = get_value("paper")
    exact = 0
    for trial in range(120):
        params, lower, upper, budget = _instance(rng, False, trial)
        costs = rng.integers(1, 6, lower.size).astype(float)
        ref = dp(fn, params, lower, upper, budget, costs=costs)
        for f in PATHS.values():
            sol = f(fn, params, lower, upper, budget, costs=costs)
            assert float(np.sum(costs * sol.extra)) <= budget + 1e-9
            assert sol.objective <= ref.objective + 1e-12
            assert ref.objective - sol.objective <= sol.gap_bound + 1e-12
        exact += abs(ref.objective - sol.objective) < 1e-12
    assert exact >= 80  # in practice the filled greedy is almost always optimal


@pytest.mark.parametrize("cost", [7.0, 0.8, 1 / 3, 0.1])
def test_equal_costs_match_unit_costs(cost: float) -> None:
    # non-integer costs: 23 * 0.1 and a running sum of 0.1 differ in the last bit; no unit may be lost
    fn = get_value("paper")
    p = np.array([0.2, 0.5, 0.7, 0.95])
    lower, upper = np.full(4, 2), np.full(4, 20)
    unit = greedy(fn, p, lower, upper, 23)
    scaled = greedy(fn, p, lower, upper, 23 * cost, costs=np.full(4, cost))
    assert unit.extra.tolist() == scaled.extra.tolist() and scaled.extra.sum() == 23
    assert scaled.optimal and scaled.gap_bound == 0.0


def test_non_integer_costs_lose_no_unit_to_rounding() -> None:
    fn = get_value("paper")
    rng = np.random.default_rng(8)
    for cost in (0.8, 1 / 3, 0.1, 0.7, 1.1):
        for m in (2, 7, 40):
            p = rng.uniform(0.05, 0.95, m)
            c = np.full(m, cost)
            c[0] = cost * 3  # not all equal: the ratio path; the others are the cheap prompts
            k = int(rng.integers(1, 8 * m))
            budget = float(np.sum(np.full(k, cost)))  # exactly k units of the cheap prompts, summed in order
            sol = greedy(fn, p, np.full(m, 2), np.full(m, 200), budget, costs=c)
            spent = float(np.sum(c * sol.extra))
            assert budget - spent < cost * (1 - 1e-6)  # no whole cheap unit left unplaced


# --------------------------------------------------------------------------------------------
# properties


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 60),
    width=st.integers(0, 50),
    frac=st.floats(0.0, 1.2),
    posterior=st.booleans(),
)
def test_properties_total_bounds_and_monotone_objective(
    seed: int, m: int, width: int, frac: float, posterior: bool
) -> None:
    rng = np.random.default_rng(seed)
    fn = _value(str(rng.choice(value_names())), posterior)
    params = _params(rng, m, posterior, grid=seed % 2 == 0)
    lower = rng.integers(1, 5, m)
    upper = lower + rng.integers(0, width + 1, m)
    cap = int((upper - lower).sum())
    budget = int(frac * cap)
    sol = greedy(fn, params, lower, upper, budget)
    more = greedy(fn, params, lower, upper, budget + 1)
    assert sol.extra.sum() == min(budget, cap)  # total exact
    assert np.all(sol.extra >= 0) and np.all(sol.extra <= upper - lower)  # bounds
    assert more.objective >= sol.objective - 1e-12  # gains are non-negative: more budget never hurts
    forced = _forced(int(rng.integers(1, 9)), int(rng.integers(0, 20)))(fn, params, lower, upper, budget)
    assert np.array_equal(forced.extra, sol.extra)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(2, 80), posterior=st.booleans())
def test_permuting_prompts_with_distinct_rates_permutes_the_answer(seed: int, m: int, posterior: bool) -> None:
    rng = np.random.default_rng(seed)
    fn = _value("paper", posterior)
    params = _params(rng, m, posterior, grid=False)  # continuous draws: distinct almost surely
    lower = rng.integers(1, 4, m)
    upper = lower + rng.integers(0, 30, m)
    budget = int(rng.integers(0, int((upper - lower).sum()) + 1))
    perm = rng.permutation(m)
    a = greedy(fn, params, lower, upper, budget)
    b = greedy(fn, tuple(x[perm] for x in params), lower[perm], upper[perm], budget)
    assert np.array_equal(a.extra[perm], b.extra)


# --------------------------------------------------------------------------------------------
# errors


def test_one_entry_with_four_methods_and_its_errors() -> None:
    fn, p, lo, up = get_value("paper"), np.array([0.3, 0.6]), np.array([2, 2]), np.array([5, 5])
    assert METHODS == ("greedy", "dense", "threshold", "dp")
    assert [solve(fn, p, lo, up, 3, method=m).extra.tolist() for m in METHODS] == [[2, 1]] * 4
    cases = [
        ({"method": "solve_greedy"},
         "method must be one of ['greedy', 'dense', 'threshold', 'dp']; got method='solve_greedy'"),
        ({"method": "dense", "options": {"sample_size": 4}},
         "options tune method='threshold' only; got method='dense', options={'sample_size': 4}"),
        ({"method": "threshold", "options": [("sample_size", 4)]}, "options must be a mapping or None; got list"),
        ({"method": "threshold", "options": {"samples": 4}},
         "options has unknown key(s) ['samples']; valid: ['band_max', 'dense_units', 'sample_size']"),
        ({"method": "threshold", "options": {"sample_size": 0}},
         "options['sample_size'] must be an integer >= 1; got 0"),
        ({"method": "threshold", "options": {"band_max": -1}},
         "options['band_max'] must be None or an integer >= 0; got -1"),
        ({"method": "threshold", "options": {"dense_units": True}},
         "options['dense_units'] must be an integer >= 0; got True"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            solve(fn, p, lo, up, 3, **kwargs)  # type: ignore[arg-type]
        assert str(info.value) == message
    tuned = solve(fn, p, lo, up, 3, method="threshold", options={"band_max": None, "dense_units": 0})
    assert tuned.extra.tolist() == [2, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value": 3}, "value must be callable as value(n, *params); got 3"),
        ({"p": np.ones((2, 2)) / 2}, "p must be a 1-D array of real numbers; got dtype float64, shape (2, 2)"),
        ({"p": np.array([True, False])}, "p must be a 1-D array of real numbers; got dtype bool, shape (2,)"),
        ({"p": np.array([0.5, np.nan])}, "p must be finite; p[1]=nan"),
        ({"p": (np.ones(2), np.ones(3))}, "p[1] must have the shape of p[0], (2,); got (3,)"),
        ({"p": ()}, "p must be an (E,) array or a non-empty tuple of (E,) arrays; got an empty tuple"),
        ({"lower": np.array([2.0, 2.0])}, "lower must be an integer array; got dtype float64"),
        ({"lower": np.array([2, 2, 2])}, "lower must have shape (2,) like p; got shape (3,)"),
        ({"lower": np.array([-1, 2])}, "lower must be >= 0; lower[0]=-1"),
        ({"upper": np.array([5, 1])}, "upper must be >= lower; upper[1]=1 < lower[1]=2"),
        ({"budget": -1}, "budget must be finite and >= 0; got budget=-1"),
        ({"budget": float("inf")}, "budget must be finite and >= 0; got budget=inf"),
        ({"budget": 3.5}, "budget must be a whole number of rollouts with unit costs; got budget=3.5"),
        ({"budget": True}, "budget must be a real number; got True"),
        ({"budget": "3"}, "budget must be a real number; got '3'"),
        ({"costs": np.ones(3)}, "costs must have shape (2,) like p; got shape (3,)"),
        ({"costs": np.array([1.0, 0.0])}, "costs must be finite and > 0; costs[1]=0.0"),
        ({"costs": np.array(["a", "b"])}, "costs must be an array of real numbers; got dtype <U1"),
    ],
)
def test_bad_input_is_refused_with_an_exact_message(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "value": get_value("paper"),
        "p": np.array([0.3, 0.6]),
        "lower": np.array([2, 2]),
        "upper": np.array([5, 5]),
        "budget": 3,
    }
    args.update(kwargs)
    costs = args.pop("costs", None)
    for f in (greedy, dense, threshold, dp):
        with pytest.raises(ValueError) as info:
            f(*args.values(), costs=costs)  # type: ignore[operator]
        assert str(info.value) == message


def test_solver_specific_errors() -> None:
    fn = get_value("paper")
    p, lo, up = np.array([0.5]), np.array([2]), np.array([4])
    with pytest.raises(ValueError, match=r"costs must be integers for the dynamic programme; got array\(\[1.5\]\)"):
        dp(fn, p, lo, up, 3, costs=np.array([1.5]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"budget must be a whole number for the dynamic programme; got budget=2\.5"):
        dp(fn, p, lo, up, 2.5, costs=np.array([1]))  # type: ignore[arg-type]


def test_huge_budgets_fill_every_prompt_without_overflow() -> None:
    fn = get_value("paper")
    p, lo, up = np.array([0.3, 0.6]), np.array([2, 2]), np.array([9, 9])
    assert greedy(fn, p, lo, up, 10**30).extra.tolist() == [7, 7]
    sol = greedy(fn, p, lo, up, 1e30, costs=np.array([1.5, 2.0]))
    assert sol.extra.tolist() == [7, 7] and sol.placed == 24.5 and sol.optimal
