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


# ------------------------------------------------------------------------------- preflight from an engine's state
def _tracked_rule(tmp_path, p: np.ndarray, k: int = 4):
    """A KnapsackRule whose tracker saw k rewards of each of len(p) prompts (epoch 0), saved as TRL saves it."""
    from knapsack_rl.integrations.trl.checkpoint import save_rule_file
    from knapsack_rl.rules import KnapsackRule

    knapsack = KnapsackConfig.preset("project", n=k, min_count=k)
    rule = KnapsackRule(knapsack)
    rewards = _samples(p, k, seed=3)
    ids = [100 + i for i in range(p.size)]
    rule.planner.tracker.update([i for i in ids for _ in range(k)], rewards.reshape(-1), epoch=0, step=1)
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    return save_rule_file(rule, knapsack, folder), ids, rewards


def test_read_engine_state_gives_the_tracker_of_a_trl_rule_file(tmp_path) -> None:
    from knapsack_rl.preflight import read_engine_state, tracked_rewards

    path, ids, rewards = _tracked_rule(tmp_path, np.linspace(0.0, 1.0, 40))
    state = read_engine_state(path.parent)  # the checkpoint folder: its knapsack_rule.bin
    assert (state.engine, state.rule, state.prompts_per_step, state.path) == ("trl", "knapsack", None, str(path))
    got_ids, got, beyond = tracked_rewards(state.tracker)
    assert got_ids == ids and beyond == 0
    np.testing.assert_array_equal(np.stack(got), rewards)


def test_predict_from_state_scores_uniform_as_the_posterior_mean_of_p_nz(tmp_path) -> None:
    """Uniform gives every prompt n = 4; the steps of one pass cover every prompt once, so the mean over steps
    is the sum over prompts of E[P_nz(4, p)] under each posterior, divided by the steps; knapsack, planning
    from the same rewards, predicts more prompts with signal on a set of many never-/always-solved prompts."""
    from knapsack_rl.core.population import PopulationPrior
    from knapsack_rl.preflight import predict_from_state, read_engine_state, state_arms

    rng = np.random.default_rng(5)
    p = np.concatenate([np.zeros(24), np.ones(16), rng.uniform(0.1, 0.9, 24)])
    path, _, rewards = _tracked_rule(tmp_path, p)
    state = read_engine_state(path)
    preds = predict_from_state(state, state_arms(state, ["uniform", "knapsack"]), prompts_per_step=16, seed=1)
    s, f = rewards.sum(axis=1), 4 - rewards.sum(axis=1)
    post = PopulationPrior.fit(s, f).posterior(s, f)
    pnz = post.weights @ (1 - post.grid**4 - (1 - post.grid) ** 4)
    uniform, knapsack = preds
    assert (uniform.arm, uniform.knowledge, uniform.budget_max) == ("uniform", "from state", 4.0)
    assert uniform.effective_prompts == pytest.approx(pnz.sum() / 4)  # 64 prompts, 4 steps of 16
    assert knapsack.effective_prompts > uniform.effective_prompts and knapsack.budget_max > 4


def test_preflight_state_cli_prints_the_table_and_refuses_what_does_not_apply(tmp_path, capsys) -> None:
    from knapsack_rl.cli import main

    path, _, _ = _tracked_rule(tmp_path, np.linspace(0.0, 1.0, 32))
    assert (
        main(["preflight", "--state", str(path.parent), "--prompts-per-step", "8", "--json", str(tmp_path / "p.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(f"{path} (trl, rule knapsack): 32 tracked prompts, 4-4 rewards each; ")
    assert "uniform          from state  " in out and "knapsack: " in out
    assert '"prompts_per_step": 8' in (tmp_path / "p.json").read_text()
    for argv, message in [
        ([], f"--state {path.parent}: the trl state does not record the prompts per step; give --prompts-per-step"),
        (
            ["--prompts-per-step", "8", "--samples", "16"],
            "--state predicts from the state's own settings and rewards: --samples does not apply",
        ),
        (
            ["--prompts-per-step", "8", "--lr", "0.1"],
            "--state predicts from the state's own settings and rewards: --lr does not apply",
        ),
        (
            ["--prompts-per-step", "8", "--arms", "uniform,coba"],
            "--arms: 'coba' is not an arm preflight --state "
            "predicts; valid: ['uniform', 'knapsack', 'knapsack:project'",
        ),
        (
            ["--prompts-per-step", "8", "--arms", "uniform,knapsack:two-phase"],
            "--arms: 'knapsack:two-phase' probes within a step (probe_n=4)",
        ),
    ]:
        assert main(["preflight", "--state", str(path.parent), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"knapsack-rl: error: {message}") and err.count("\n") == 1, err


def test_preflight_state_refuses_a_rule_without_a_tracker_and_a_foreign_file(tmp_path) -> None:
    from knapsack_rl.integrations.trl.checkpoint import save_rule_file
    from knapsack_rl.preflight import read_engine_state
    from knapsack_rl.rules import RuleSetup, make_rule

    knapsack = KnapsackConfig.preset("project", n=4)
    save_rule_file(make_rule("coba", RuleSetup(4, 3, knapsack=knapsack)), knapsack, tmp_path)
    with pytest.raises(ValueError, match=r"knapsack_rule.bin: holds the state of rule 'coba', which keeps no tracker"):
        read_engine_state(tmp_path / "knapsack_rule.bin")
    (tmp_path / "other.bin").write_bytes(b"not a state file at all, just bytes " * 4)
    with pytest.raises(ValueError, match=r"other.bin: not a knapsack-rl state file; preflight --state reads TRL's"):
        read_engine_state(tmp_path / "other.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"a folder without knapsack_rule.bin \(a TRL checkpoint\) or knapsack/state"):
        read_engine_state(empty)


def test_read_engine_state_reads_the_state_verl_saves_in_a_global_step_folder(tmp_path) -> None:
    """The knapsack verl adapter's own save (global_step_<k>/knapsack/state.bin), read back as the same tracker."""
    from knapsack_rl.integrations.verl import KnapsackVerlConfig, VerlRun
    from knapsack_rl.preflight import predict_from_state, read_engine_state, state_arms, tracked_rewards

    run = VerlRun(
        KnapsackVerlConfig.from_section({"min_count": 4, "negative_n": 2, "positive_n": 2}, n=4, train_batch_size=8)
    )
    ids, uids = list(range(8)), [f"s1-{i}" for i in range(8)]
    counts = run.plan(ids, uids)
    rollouts = [u for u, c in zip(uids, counts, strict=True) for _ in range(int(c))]
    rewards = (np.arange(len(rollouts)) % 3 == 0).astype(float)
    run.observe(rollouts, rewards, step=1)
    run.save(tmp_path / "global_step_1")
    state = read_engine_state(tmp_path / "global_step_1")
    assert (state.engine, state.rule, state.prompts_per_step) == ("verl", "knapsack", None)  # no batch in flight
    assert run.planner is not None and state.tracker.to_bytes() == run.planner.tracker.to_bytes()
    got_ids, got, _ = tracked_rewards(state.tracker)
    assert got_ids == ids and np.concatenate(got).tolist() == rewards.tolist()
    preds = predict_from_state(state, state_arms(state, ["uniform"]), prompts_per_step=4)
    assert preds[0].budget_max == 4.0
