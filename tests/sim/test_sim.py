"""Tests of the offline simulator: common random numbers, spend accounting, the update rule, rules, CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from knapsack_rl.cli import main
from knapsack_rl.sim import (
    BudgetRule,
    Draw,
    Rollouts,
    SimConfig,
    StepEnv,
    World,
    keyed_uniform,
    make_rule,
    mean_ci,
    register_rule,
    rule_names,
    simulate,
    summarize,
)
from knapsack_rl.sim.rules import KnapsackRule, KnapsackSettings
from knapsack_rl.sim.summary import first_crossing

SMALL = SimConfig(num_prompts=600, num_heldout=100, num_topics=8, prompts_per_step=32, steps=60, snapshot_every=10)
FROZEN_HALF = replace(SMALL, init="half", lr_shared=0.0, lr_topic=0.0, lr_prompt=0.0)
BUILTIN = ("uniform", "knapsack-recipe", "knapsack", "knapsack-two-phase", "dapo", "uncertainty", "greso")


def _env(config: SimConfig = SMALL, seed: int = 0) -> StepEnv:
    return StepEnv(config, World(config, seed), seed)


def test_keyed_uniform_depends_only_on_its_key() -> None:
    a = keyed_uniform(3, 1, np.array([5, 6, 5]), np.array([0, 0, 0]), np.array([0, 0, 0]))
    assert a[0] == a[2] and a[0] != a[1]
    assert keyed_uniform(3, 1, 5, 0, 0) == a[0]
    assert keyed_uniform(4, 1, 5, 0, 0) != a[0]  # seed
    assert keyed_uniform(3, 2, 5, 0, 0) != a[0]  # stream
    u = keyed_uniform(0, 1, np.arange(20_000), 0, np.arange(20_000) % 7)
    assert np.all((u >= 0) & (u < 1))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003


def test_more_rollouts_keep_the_first_rewards_and_offsets_continue_the_stream() -> None:
    env = _env()
    draw = env.draw(10)
    few = env.sample(draw, np.full(10, 4))
    more = env.sample(draw, np.full(10, 12))
    tail = env.sample(draw, np.full(10, 8), offset=4)
    for k in range(10):
        r_few = few.reward[few.group == draw.groups[k]]
        r_more = more.reward[more.group == draw.groups[k]]
        r_tail = tail.reward[tail.group == draw.groups[k]]
        np.testing.assert_array_equal(r_few, r_more[:4])
        np.testing.assert_array_equal(r_tail, r_more[4:])
    assert env.spent == 10 * (4 + 12 + 8)


def test_epoch_order_is_shared_and_covers_every_prompt_once() -> None:
    a, b = _env(seed=7), _env(seed=7)
    first = np.concatenate([a.draw(32).prompts for _ in range(SMALL.num_prompts // 32 + 1)])
    np.testing.assert_array_equal(first, np.concatenate([b.draw(SMALL.num_prompts // 32 * 32 + 32).prompts]))
    assert sorted(first[: SMALL.num_prompts].tolist()) == list(range(SMALL.num_prompts))


def test_uniform_and_knapsack_see_the_same_rewards_in_epoch_one() -> None:
    # epoch 1: no estimates, so the knapsack gives N to every prompt, exactly like uniform
    rewards = {}
    for name in ("uniform", "knapsack-recipe"):
        env, rule = _env(), make_rule(name, SMALL)
        env.begin_step()
        rewards[name] = rule.step(env).reward
    np.testing.assert_array_equal(rewards["uniform"], rewards["knapsack-recipe"])


def test_zero_variance_groups_do_not_move_the_skill() -> None:
    world = World(SMALL, 0)
    before = world.logits().copy()
    prompts = np.repeat(np.array([1, 2, 3]), 4)
    groups = np.repeat(np.arange(3), 4)
    rewards = np.array([0.0] * 4 + [1.0] * 4 + [0.0] * 4)
    world.update(Rollouts(prompts, groups, rewards, world.success(prompts)))
    np.testing.assert_array_equal(world.logits(), before)
    rewards[8] = 1.0  # one success in the third group: its score is positive, every logit moves up
    g = world.update(Rollouts(prompts, groups, rewards, world.success(prompts)))
    assert g[0] == 0 and g[1] == 0 and g[2] > 0
    assert np.all(world.logits() > before)
    held = slice(SMALL.num_prompts, None)
    assert np.all(world.logits()[held] >= before[held])


def test_same_seed_same_run_and_other_seed_other_run() -> None:
    a, b = simulate(SMALL, "knapsack-recipe", 1), simulate(SMALL, "knapsack-recipe", 1)
    np.testing.assert_array_equal(a.train_success, b.train_success)
    np.testing.assert_array_equal(a.effective, b.effective)
    c = simulate(SMALL, "knapsack-recipe", 2)
    assert not np.array_equal(a.train_success, c.train_success)


@pytest.mark.parametrize("name", BUILTIN)
def test_spend_is_counted_exactly(name: str) -> None:
    trace = simulate(SMALL, name, 0)
    budget = SMALL.budget
    if name == "dapo":
        assert np.all(trace.spend % budget == 0) and np.all(trace.spend >= budget)
        assert np.all(trace.trained <= budget)
        assert np.all(trace.effective == trace.trained)  # only groups with signal are kept
        assert trace.spend.sum() > budget * SMALL.steps  # it spends more than the others
    else:
        np.testing.assert_array_equal(trace.spend, np.full(SMALL.steps, budget))
        np.testing.assert_array_equal(trace.trained, trace.spend)
    assert trace.cumulative_spend[-1] == trace.spend.sum()


def test_a_custom_rule_is_charged_for_every_sample_call() -> None:
    class Twice(BudgetRule):
        def step(self, env: StepEnv) -> Rollouts:
            draw = env.draw(env.prompts_per_step)
            env.sample(draw, np.full(len(draw), 3))  # generated, then thrown away: still spend
            return env.sample(draw, np.full(len(draw), 2))

        def budgets(self, draw: Draw, env: StepEnv) -> np.ndarray:
            raise AssertionError("not used")

    trace = simulate(replace(SMALL, steps=5), Twice(), 0)
    np.testing.assert_array_equal(trace.spend, np.full(5, 5 * SMALL.prompts_per_step))
    np.testing.assert_array_equal(trace.trained, np.full(5, 2 * SMALL.prompts_per_step))


@pytest.mark.parametrize("name", [r for r in BUILTIN if r != "dapo"])  # dapo has no fixed budget
def test_at_p_one_half_every_rule_gets_the_same_effective_gradient_ratio(name: str) -> None:
    # every prompt at p = 0.5 forever: an informed rule has nothing to exploit; uniform's ratio is
    # 1 - 2 * 0.5^8 = 0.992; rules that move rollouts around on noisy estimates lose at most a little
    trace = simulate(replace(FROZEN_HALF, steps=40), name, 0)
    uniform = simulate(replace(FROZEN_HALF, steps=40), "uniform", 0)
    assert abs(uniform.effective.sum() / uniform.spend.sum() - (1 - 2 * 0.5**8)) < 0.01
    ratio = trace.effective.sum() / trace.spend.sum()
    assert abs(ratio - uniform.effective.sum() / uniform.spend.sum()) < 0.03, ratio
    np.testing.assert_allclose(trace.train_success, 0.5)  # nothing learns with zero step sizes


def test_dapo_at_p_one_half_pays_a_whole_round_to_refill_a_few_groups() -> None:
    trace = simulate(replace(FROZEN_HALF, steps=40), "dapo", 0)
    refill = trace.spend > FROZEN_HALF.budget
    assert refill.any() and np.all(trace.trained == FROZEN_HALF.budget)  # always a full batch of M groups
    assert trace.effective.sum() / trace.spend.sum() < 0.95


def test_knapsack_budgets_sum_to_the_budget_and_go_past_n_after_epoch_one() -> None:
    trace = simulate(SMALL, "knapsack-recipe", 0)
    later = [s for s in trace.snapshots if s[0] >= 2 * SMALL.num_prompts // SMALL.prompts_per_step]
    assert later
    for _, _p, counts in later:
        assert counts.sum() == SMALL.budget
        assert counts.max() > SMALL.n and counts.min() >= 2
    assert trace.budget_max.max() > SMALL.n


def test_two_phase_cold_start_spends_the_budget_and_allocates_in_epoch_one() -> None:
    rule = KnapsackRule(KnapsackSettings(estimator="beta", cold_start="two_phase", objective="paper"))
    env = _env()
    env.begin_step()
    batch = rule.step(env)
    assert env.spent == SMALL.budget == batch.size
    counts = np.array(list(env.budget_seen.values()))
    assert counts.min() >= 4 + 2 and counts.max() > SMALL.n  # probe of 4 plus at least min_n


def test_knapsack_beats_uniform_on_the_paper_world() -> None:
    cfg = replace(SMALL, num_prompts=2000, prompts_per_step=64, steps=150)
    traces = {name: [simulate(cfg, name, s) for s in (0, 1)] for name in ("uniform", "knapsack-recipe")}
    rows, _ = summarize(traces)
    eff = {r.rule: r.stats["eff_ratio"].mean for r in rows}
    final = {r.rule: r.stats["train_final"].mean for r in rows}
    assert eff["knapsack-recipe"] > 1.15 * eff["uniform"]
    assert final["knapsack-recipe"] > final["uniform"]


def test_registry_rejects_duplicates_and_lists_names() -> None:
    for name in BUILTIN:
        assert name in rule_names()
    with pytest.raises(ValueError, match="already registered"):
        register_rule("uniform")(lambda config: make_rule("uniform", config))
    with pytest.raises(ValueError, match=r"rule must be one of .*'uniform'"):
        make_rule("nope", SMALL)
    with pytest.raises(ValueError, match="prompts_per_step must be <= 600"):
        replace(SMALL, prompts_per_step=601)


def test_summary_helpers() -> None:
    x = np.array([0.0, 10.0, 20.0])
    assert first_crossing(x, np.array([0.1, 0.3, 0.5]), 0.4) == pytest.approx(15.0)
    assert math.isnan(first_crossing(x, np.array([0.1, 0.3, 0.5]), 0.6))
    s = mean_ci([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci([np.nan, 1.0]).n == 1


def test_cli_prints_a_table_and_writes_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--rules", "uniform,knapsack-recipe", "--prompts", "400", "--heldout", "50"]
    argv += ["--prompts-per-step", "32", "--steps", "40", "--seeds", "2", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| knapsack-recipe |" in out and "| uniform |" in out
    for name in ("curves.png", "budget_vs_p.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 1000
    assert main(["simulate", "--rules", "nope", "--steps", "2", "--no-progress", "--out", str(tmp_path)]) == 2


def test_sim_never_imports_torch_or_matplotlib() -> None:
    code = "import sys, knapsack_rl.sim.cli, knapsack_rl.sim; assert not {'torch', 'matplotlib'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_greso_skips_prompts_whose_last_group_had_no_signal() -> None:
    cfg = replace(SMALL, init="hard", steps=80)  # many all-wrong groups
    env, rule = _env(cfg), make_rule("greso", cfg)
    for _ in range(cfg.steps):
        env.begin_step()
        rule.step(env)
        env.end_step()
    assert env.drawn > cfg.steps * cfg.prompts_per_step * 1.1  # skipped prompts were replaced from the stream


def test_project_knapsack_gives_one_rollout_to_prompts_estimated_at_zero_or_one() -> None:
    trace = simulate(replace(SMALL, steps=120), "knapsack", 0)
    later = [s for s in trace.snapshots if s[0] >= 2 * SMALL.num_prompts // SMALL.prompts_per_step]
    counts = np.concatenate([s[2] for s in later])
    assert counts.min() == 1 and (counts == 1).sum() > 0.1 * counts.size
