"""Empirical-Bayes posteriors on a grid: the fit, the mixture value, allocation and planning with them."""

from __future__ import annotations

import numpy as np
import pytest

from knapsack_rl import KnapsackConfig, Planner, allocate
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
