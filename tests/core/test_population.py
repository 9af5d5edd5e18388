"""Empirical-Bayes posteriors on a grid: the fit, the mixture value, allocation and planning with them."""

from __future__ import annotations

import numpy as np
import pytest

from knapsack_rl import KnapsackConfig, Planner, Tracker, allocate
from knapsack_rl.core.population import GridPosterior, PopulationPrior, grid_value, rate_grid
from knapsack_rl.core.value import get_value, nonzero_gradient_prob


def _population(rng: np.random.Generator, size: int) -> np.ndarray:
    """Rates shaped like a reasoning set: never solved, always solved, hard but learnable, and a middle."""
    share = [0.25, 0.2, 0.35, 0.2]
    parts = [np.zeros(1), np.ones(1), rng.uniform(0.02, 0.15, size), rng.uniform(0.3, 0.9, size)]
    which = rng.choice(4, size=size, p=share)
    return np.array([parts[k][min(i, parts[k].size - 1)] for i, k in enumerate(which)])


def test_the_fit_maximises_the_likelihood_and_counts_may_be_fractional() -> None:
    rng = np.random.default_rng(0)
    p = _population(rng, 2000)
    s = (rng.random((p.size, 8)) < p[:, None]).sum(axis=1).astype(float)
    prior = PopulationPrior.fit(s, 8 - s)
    assert prior.grid[0] == 0.0 and prior.grid[-1] == 1.0 and prior.weights.sum() == pytest.approx(1.0)

    def loglik(w: np.ndarray, s: np.ndarray, f: np.ndarray) -> float:
        lik = prior.grid ** s[:, None] * (1 - prior.grid) ** f[:, None]
        return float(np.log(lik @ w).sum())

    best = loglik(prior.weights, s, 8 - s)
    for other in (np.full(prior.grid.size, 1 / prior.grid.size), 0.9 * prior.weights + 0.1 / prior.grid.size):
        assert loglik(other, s, 8 - s) < best
    for n, tol in ((4, 0.015), (8, 0.015), (16, 0.03)):  # what 8 samples identify: budgets near 8
        fitted = float(prior.weights @ nonzero_gradient_prob(float(n), prior.grid))
        assert fitted == pytest.approx(float(nonzero_gradient_prob(float(n), p).mean()), abs=tol), n
    # the tracker's discounted counts are fractional: 0.8 * 8 + 8 rewards
    half = PopulationPrior.fit(0.8 * s + s, 0.8 * (8 - s) + (8 - s))
    assert half.weights.sum() == pytest.approx(1.0) and np.all(half.weights >= 0)


def test_posterior_of_no_evidence_is_the_prior_and_bad_counts_are_refused() -> None:
    prior = PopulationPrior.fit([0.0, 8.0, 3.0], [8.0, 0.0, 5.0], size=51)
    post = prior.posterior([0.0, 2.0], [0.0, 6.0])
    np.testing.assert_allclose(post.weights[0], prior.weights)
    assert post.mean()[1] == pytest.approx(post.weights[1] @ prior.grid)
    with pytest.raises(ValueError, match=r"failures must be finite and >= 0; failures\[1\]=-1.0"):
        prior.posterior([0.0, 1.0], [0.0, -1.0])
    with pytest.raises(ValueError, match=r"weights rows must be >= 0 and sum to 1; row 0"):
        GridPosterior(prior.grid, np.zeros((1, prior.grid.size)))
    empty = PopulationPrior.fit([], [])
    assert np.allclose(empty.weights, 1 / empty.grid.size)


@pytest.mark.parametrize("name", ["paper", "nonzero", "variance", "hora", "vip"])
def test_grid_value_is_the_posterior_mean_of_the_point_value_and_concave(name: str) -> None:
    rng = np.random.default_rng(1)
    grid = rate_grid(41)
    w = rng.dirichlet(np.full(grid.size, 0.3), size=6)
    point = get_value(name)
    value = grid_value(point, GridPosterior(grid, w))
    rows = np.arange(6, dtype=float)
    n = np.arange(2, 200)
    vals = np.stack([value(np.full(6, k, dtype=float), rows) for k in n], axis=1)  # (6, len(n))
    expected = np.stack([w @ point(float(k), grid) for k in n], axis=1)
    np.testing.assert_allclose(vals, expected, rtol=1e-12, atol=1e-14)
    gains = np.stack([value.gain(np.full(6, k, dtype=float), rows) for k in n[:-1]], axis=1)  # type: ignore[misc]
    np.testing.assert_allclose(gains, np.diff(vals, axis=1), rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(gains, axis=1) <= 1e-15)  # non-increasing: the solvers stay exact


def test_allocate_with_a_grid_posterior_is_exact_and_checked() -> None:
    rng = np.random.default_rng(2)
    grid = rate_grid(61)
    w = rng.dirichlet(np.full(grid.size, 0.2), size=40)
    post = GridPosterior(grid, w)
    for value in ("nonzero", "paper"):
        greedy = allocate(post.mean(), n=8, fallback=False, value=value, posterior=post)
        dp = allocate(post.mean(), n=8, fallback=False, value=value, posterior=post, solver="dp")
        assert greedy.budgets.sum() == 320 and greedy.objective == pytest.approx(dp.objective, rel=1e-12)
        direct = sum(float(w[i] @ get_value(value)(float(b), grid)) for i, b in enumerate(greedy.budgets))
        assert greedy.objective == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match=r"posterior must have a row per prompt \(3\); got 40 rows"):
        allocate([0.5, 0.5, 0.5], n=8, posterior=post)


def _true_signal(budgets: np.ndarray, p: np.ndarray) -> float:
    return float(nonzero_gradient_prob(budgets.astype(float), p).sum())


def test_signal_plans_at_least_uniforms_prompts_with_signal_where_a_beta_prior_loses_them() -> None:
    """The Bayes property: after one uniform epoch of 8 rewards per prompt, the `signal` preset's plans
    hold at least as many prompts with signal (under the true rates) as uniform's; the same count
    objective under the fixed Beta(1, 1) prior of `project` loses prompts on this population."""
    rng = np.random.default_rng(3)
    p = _population(rng, 1024)
    ids = list(range(p.size))
    totals = {}
    for arm in ("signal", "beta", "uniform"):
        cfg = {
            "signal": KnapsackConfig.preset("signal"),
            "beta": KnapsackConfig.preset("project", value="nonzero"),
            "uniform": KnapsackConfig.preset("project", allocate=False),
        }[arm]
        planner = Planner(cfg)
        seen = np.random.default_rng(4).random((p.size, 8)) < p[:, None]  # the same epoch-0 rewards for every arm
        planner.observe(np.repeat(ids, 8), seen.reshape(-1).astype(float), epoch=0)
        total = 0.0
        for start in range(0, p.size, 64):
            step = ids[start : start + 64]
            total += _true_signal(planner.plan(step, epoch=1).budgets, p[step])
        totals[arm] = total / (p.size / 64)
    assert totals["signal"] > totals["uniform"] + 0.5  # per step of 64 prompts
    assert totals["beta"] < totals["uniform"]


def test_population_prior_plans_resume_exactly_and_take_a_probe() -> None:
    cfg = KnapsackConfig.preset("signal")
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, 48)
    ids = [f"q{i}" for i in range(48)]
    planner = Planner(cfg)
    planner.observe(np.repeat(ids, 8).tolist(), (rng.random(384) < np.repeat(p, 8)).astype(float), epoch=0)
    restored = Planner(cfg)
    restored.load_state_dict(planner.state_dict(), source="ckpt")
    assert restored.plan(ids, epoch=1).budgets.tolist() == planner.plan(ids, epoch=1).budgets.tolist()
    two = Planner(KnapsackConfig.preset("two-phase", value="nonzero", prior="population"))
    new = ["n0", "n1"]
    probe = two.plan_probe(new, epoch=0)
    assert probe.tolist() == [4, 4]
    alloc = two.plan(new, epoch=0, probe=(["n0"] * 4 + ["n1"] * 4, [0.0] * 4 + [1.0, 0.0, 1.0, 0.0]))
    assert alloc.budgets.sum() == 16 and np.all(alloc.budgets >= 4)
    assert two.last is not None and two.last.p_hat[1] > two.last.p_hat[0]


# ------------------------------------------------------------------ warm starts, the cache, the fast mixture
def test_a_warm_start_goes_on_from_the_start_weights_as_one_longer_fit() -> None:
    rng = np.random.default_rng(11)
    s = np.round(rng.gamma(2.0, 3.0, 500) * 2) / 2
    f = np.round(rng.gamma(2.0, 3.0, 500) * 2) / 2
    first = PopulationPrior.fit(s, f, size=51, iterations=40, tol=0.0)
    more = PopulationPrior.fit(s, f, size=51, iterations=15, tol=0.0, start=first.weights)
    longer = PopulationPrior.fit(s, f, size=51, iterations=55, tol=0.0)
    assert np.array_equal(more.weights, longer.weights)  # EM from where the last fit stopped: bit for bit
    assert PopulationPrior.fit([], [], size=51, start=first.weights).weights.tolist() == first.weights.tolist()


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (np.full(50, 1 / 50), r"start must be \(51,\) weights; got shape \(50,\)"),
        (np.r_[-0.1, np.full(50, 1.1 / 50)], r"start must be weights >= 0 summing to 1; start\[0\]=-0.1"),
        (np.r_[np.nan, np.full(50, 1 / 50)], r"start must be weights >= 0 summing to 1; start\[0\]=nan"),
        (np.full(51, 1 / 25), r"start must be weights >= 0 summing to 1; they sum to 2.04"),
        (np.r_[np.zeros(50), 1.0], r"start gives the counts \(1.0, 3.0\) likelihood 0; give their rates weight"),
    ],
)
def test_a_bad_start_is_refused(start: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PopulationPrior.fit([1.0, 2.0], [3.0, 0.0], size=51, start=start)


def test_the_likelihood_cache_changes_no_fit() -> None:
    """Successive fits through one cache (pairs that recur, pairs that are new, another grid size) equal
    fits without it, bit for bit."""
    from knapsack_rl.core.population import LikelihoodCache

    rng = np.random.default_rng(12)
    s, f = rng.gamma(2.0, 3.0, 800), rng.gamma(2.0, 3.0, 800)
    cache = LikelihoodCache()
    for size in (101, 101, 101, 51, 101):
        s[rng.integers(0, s.size, 40)] += rng.uniform(0, 3, 40)  # some prompts move: new pairs, old ones
        kwargs = {"size": size, "iterations": 20, "tol": 0.0, "resolution": 0.5}
        cached = PopulationPrior.fit(s, f, cache=cache, **kwargs)
        assert np.array_equal(cached.weights, PopulationPrior.fit(s, f, **kwargs).weights)
    binned = PopulationPrior.fit(np.round(s / 0.5) * 0.5, np.round(f / 0.5) * 0.5, size=101, iterations=20, tol=0.0)
    assert np.array_equal(
        binned.weights, PopulationPrior.fit(s, f, size=101, iterations=20, tol=0.0, resolution=0.5).weights
    )


@pytest.mark.parametrize("name", ["nonzero", "paper", "variance"])
def test_grid_value_at_mixed_counts_equals_the_mixture_at_each_pair(name: str) -> None:
    """Counts as the solvers ask (integral, a short span: one table and a matrix product) and others
    (fractional, far apart: the mixture at each pair) give each pair's ``sum_g w_g V(n, p_g)``."""
    rng = np.random.default_rng(13)
    grid = rate_grid(61)
    w = rng.dirichlet(np.full(grid.size, 0.3), size=30)
    point = get_value(name)
    value = grid_value(point, GridPosterior(grid, w))
    rows = rng.integers(0, 30, 400)
    for n in (
        rng.integers(1, 60, 400).astype(float),
        rng.uniform(1, 60, 400),
        np.r_[1.0, 1e6, rng.integers(1, 9, 398)],
    ):
        expected = np.array([w[r] @ point(k, grid) for k, r in zip(n, rows, strict=True)])
        np.testing.assert_allclose(value(n, rows.astype(float)), expected, rtol=1e-12, atol=1e-15)
        gains = np.array([w[r] @ (point(k + 1, grid) - point(k, grid)) for k, r in zip(n, rows, strict=True)])
        np.testing.assert_allclose(value.gain(n, rows.astype(float)), gains, rtol=1e-9, atol=1e-13)  # type: ignore[misc]
    assert value(np.full((2, 3), 4.0), np.zeros((2, 3))).shape == (2, 3)


# ------------------------------------------------------------------ the signal preset's warm start
def _signal_run(seed: int) -> tuple[Planner, list[str], np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    p = rng.beta(0.4, 0.4, 300)
    ids = [f"q{i}" for i in range(300)]
    planner = Planner(KnapsackConfig.preset("signal"))
    planner.observe(np.repeat(ids, 8).tolist(), (rng.random(2400) < np.repeat(p, 8)).astype(float), epoch=0)
    return planner, ids, p, rng


def _step(planner: Planner, ids: list[str], p: np.ndarray, draws: np.ndarray, start: int) -> np.ndarray:
    """Plan 64 of the prompts, observe rewards drawn from ``draws``; returns the plan's posterior means."""
    step = ids[start : start + 64]
    alloc = planner.plan(step, epoch=1)
    rows = np.repeat(np.arange(start, start + 64), alloc.budgets)
    planner.observe([ids[i] for i in rows], (draws[: rows.size] < p[rows]).astype(float), epoch=1)
    assert planner.last is not None
    return np.concatenate([alloc.budgets, planner.last.p_hat])


def test_signal_goes_on_from_the_last_fit_and_a_resume_plans_bit_identically(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first plan fits from uniform weights; each later plan runs POPULATION_WARM's few EM iterations
    from the last fit, which the state holds (bytes, through a rule state file), so a resumed run plans
    as the uninterrupted one, bit for bit; without the saved fit the plans would differ."""
    from knapsack_rl.core import planner as planner_module
    from knapsack_rl.io import decode_state_file, encode_state_file
    from knapsack_rl.rules.state import pack_rule_state, unpack_rule_state

    fits: list[dict[str, object]] = []
    real = PopulationPrior.fit.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(PopulationPrior, "fit", classmethod(lambda cls, *a, **k: fits.append(k) or real(cls, *a, **k)))
    planner, ids, p, rng = _signal_run(21)
    draws = rng.random((6, 64 * 128))
    _step(planner, ids, p, draws[0], 0)
    _step(planner, ids, p, draws[1], 64)
    assert fits[0].get("start") is None and fits[0]["iterations"] == planner_module.POPULATION_FIT["iterations"]
    assert fits[1]["iterations"] == planner_module.POPULATION_WARM["iterations"] == 10
    assert fits[1]["start"] is not None
    state = planner.state_dict()
    assert isinstance(state["prior"], bytes) and len(state["prior"]) == 8 * 101
    meta, parts = pack_rule_state("knapsack", state)
    data = encode_state_file("rule-state", 1, meta, parts)
    read = decode_state_file(data, source="f", kind="rule-state", version=1, parts=[], more_parts="rule/")
    _, restored_state = unpack_rule_state(read.meta, read.parts, source="f")
    restored, forgot = Planner(planner.config), Planner(planner.config)
    restored.load_state_dict(restored_state, source="ckpt")
    forgot.load_state_dict({k: v for k, v in state.items() if k != "prior"}, source="ckpt")  # an older state
    for k, start in enumerate((128, 192, 0, 64)):
        ahead = _step(planner, ids, p, draws[2 + k], start)
        assert np.array_equal(_step(restored, ids, p, draws[2 + k], start), ahead, equal_nan=True)
        if k == 0:
            assert not np.array_equal(_step(forgot, ids, p, draws[2], start), ahead, equal_nan=True)
    assert restored.state_dict() == planner.state_dict()


def test_an_older_planner_state_without_a_fit_plans_as_a_fresh_fit() -> None:
    """A state without ``prior`` (every state before the warm start) loads; its next plan fits from
    uniform weights, as a planner that never planned does with the same tracker."""
    planner, ids, p, rng = _signal_run(22)
    _step(planner, ids, p, rng.random(64 * 128), 0)
    old = {k: v for k, v in planner.state_dict().items() if k != "prior"}
    loaded, fresh = Planner(planner.config), Planner(planner.config, tracker=Tracker.from_bytes(old["tracker"]))
    loaded.load_state_dict(old, source="ckpt")
    draws = rng.random(64 * 128)
    assert np.array_equal(_step(loaded, ids, p, draws, 64), _step(fresh, ids, p, draws, 64), equal_nan=True)
    assert "prior" in loaded.state_dict()


def test_a_refused_signal_plan_keeps_the_last_fit() -> None:
    planner, ids, p, rng = _signal_run(23)
    _step(planner, ids, p, rng.random(64 * 128), 0)
    before = planner.state_dict()
    with pytest.raises(ValueError, match=r"total_budget"):
        planner.plan(ids[64:128], epoch=1, total_budget=-5)
    assert planner.state_dict() == before
