"""Preflight: predictions of prompts with signal per step from samples of the starting model."""

import numpy as np
import pytest

from knapsack_rl import KnapsackConfig
from knapsack_rl.preflight import (
    expected_effective_prompts,
    population_grid,
    predict,
    unbiased_nonzero,
)

ARMS = {"uniform": KnapsackConfig.preset("project", allocate=False), "knapsack": KnapsackConfig.preset("project")}


def _samples(p: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((p.size, k)) < p[:, None]).astype(float)


def test_population_grid_predicts_the_signal_of_budgets_beyond_the_samples() -> None:
    """A set of never-solved, always-solved and hard-but-learnable prompts (what a Beta cannot hold):
    from 16 samples each, the posteriors predict the mean P_nz of budgets up to 4x the samples within
    0.015 (a Beta prior fitted by moments is 0.04-0.05 low here). Further out nothing tells a rate of 0
    from one of 0.005 in 16 samples: at 8x the prediction is 0.05 high."""
    rng = np.random.default_rng(1)
    p = np.concatenate([np.zeros(1500), np.ones(1000), rng.uniform(0.02, 0.15, 1500)])
    s = _samples(p, 16, seed=2).sum(axis=1)
    grid, weights, post = population_grid(s, 16)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    for n in (16, 32, 64):
        truth = np.mean(1 - p**n - (1 - p) ** n)
        e, _ = expected_effective_prompts(np.full(p.size, n), grid, post)
        assert e / p.size == pytest.approx(truth, abs=0.015), n


def test_expected_effective_prompts_is_the_posterior_mean_of_p_nz() -> None:
    grid = np.array([0.0, 0.1, 0.5, 1.0])
    post = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    budgets = np.array([8, 2, 30])
    e, g = expected_effective_prompts(budgets, grid, post)
    pnz = np.array(
        [0.5 * (1 - 0.1**8 - 0.9**8), 1 - 2 * 0.5**2, 0.25 * (1 - 0.1**30 - 0.9**30) + 0.25 * (1 - 2 * 0.5**30)]
    )
    assert e == pytest.approx(pnz.sum()) and g == pytest.approx((budgets * pnz).sum())


def test_uniform_predictions_and_what_knapsack_can_gain_on_a_u_shaped_set() -> None:
    rng = np.random.default_rng(3)
    p = np.concatenate([np.zeros(40), np.ones(40), rng.uniform(0.02, 0.15, 48)])  # saturated and hard prompts
    ids = [f"q{i}" for i in range(p.size)]
    preds = {(x.arm, x.knowledge): x for x in predict(ids, _samples(p, 32), ARMS, prompts_per_step=32)}
    assert preds["uniform", "true p"].budget_max == 8 == preds["uniform", "realistic"].budget_max
    # with knowledge of p, budget moves from the 80 saturated prompts to the hard ones: more prompts with signal
    assert preds["knapsack", "true p"].effective_prompts > preds["uniform", "true p"].effective_prompts + 1
    assert preds["knapsack", "true p"].budget_max > 8


def test_a_set_of_equal_prompts_leaves_nothing_to_gain() -> None:
    p = np.full(64, 0.5)
    ids = list(range(64))
    preds = {(x.arm, x.knowledge): x for x in predict(ids, _samples(p, 24), ARMS, prompts_per_step=32)}
    assert preds["knapsack", "realistic"].effective_prompts == pytest.approx(
        preds["uniform", "realistic"].effective_prompts, abs=0.5
    )


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"rewards must be \(prompts, samples\) = \(3, K\); got shape \(2, 16\)"):
        predict([1, 2, 3], np.zeros((2, 16)), ARMS, prompts_per_step=2)
    with pytest.raises(ValueError, match=r"more than n=8 samples per prompt; got K=8"):
        predict([1, 2], np.zeros((2, 8)), ARMS, prompts_per_step=2)
    with pytest.raises(ValueError, match=r"prompts_per_step=5 exceeds the 2 prompts"):
        predict([1, 2], np.zeros((2, 16)), ARMS, prompts_per_step=5)


def test_unbiased_nonzero_has_the_true_p_nz_as_its_expectation() -> None:
    """Summed over the binomial law of s, the estimate is exactly 1 - p^N - (1 - p)^N, for every N <= k."""
    from math import comb

    k = 12
    s = np.arange(k + 1, dtype=float)
    for p in (0.0, 0.03, 0.3, 0.5, 0.97, 1.0):
        law = np.array([comb(k, int(x)) * p**x * (1 - p) ** (k - x) for x in s])
        for n in range(1, k + 1):
            est = unbiased_nonzero(np.full(s.size, n), s, k)
            assert float(law @ est) == pytest.approx(1 - p**n - (1 - p) ** n, abs=1e-12)
    assert np.isnan(unbiased_nonzero(np.array([k + 1]), np.array([3.0]), k)).all()  # none exists for N > k
    assert unbiased_nonzero(np.array([0, 1]), np.array([3.0, 3.0]), k).tolist() == [0.0, 0.0]
    grid, post = np.array([0.0, 0.5]), np.array([[0.5, 0.5], [0.5, 0.5]])
    e, _ = expected_effective_prompts(np.array([4, 20]), grid, post, counts=(np.array([6.0, 6.0]), k))
    beyond = 0.5 * (1 - 2 * 0.5**20)  # N = 20 > k: the posterior's expectation
    assert e == pytest.approx(unbiased_nonzero(np.array([4]), np.array([6.0]), k)[0] + beyond)
