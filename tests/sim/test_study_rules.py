"""The study's ``demo`` world: its stated shares, unreachable prompts that stay unreachable, registration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from knapsack_rl.sim import RuleSetup, SimConfig, StepEnv, World, init_names, make_rule, run_step
from knapsack_rl.sim.config import get_init
from knapsack_rl.sim.study_rules import DEMO_SHARES, UNREACHABLE_LOGIT, demo_init
from knapsack_rl.sim.world import sigmoid

SMALL = SimConfig(num_prompts=640, num_heldout=100, num_topics=8, prompts_per_step=32, steps=60, init="demo")


def test_demo_is_registered_with_its_topic_offset() -> None:
    assert "demo" in init_names()
    fn, topic_std = get_init("demo")
    assert fn is demo_init and topic_std == 0.25


def test_demo_blocks_have_the_stated_shares_and_ranges() -> None:
    theta = demo_init(np.random.default_rng(0), 40_000)
    p = sigmoid(theta)
    blocks = {
        "easy": (p >= 0.85) & (p <= 0.99),
        "middle": (p > 0.15) & (p < 0.85),
        "hard": (p >= 0.02) & (p <= 0.15),
        "unreachable": theta == UNREACHABLE_LOGIT,
    }
    every = np.sum([m for m in blocks.values()], axis=0)
    assert np.all(every == 1)  # every prompt in exactly one block (the boundaries 0.15, 0.85 have measure 0)
    for (name, mask), share in zip(blocks.items(), DEMO_SHARES, strict=True):
        assert abs(mask.mean() - share) < 0.01, (name, mask.mean(), share)


def test_demo_draws_depend_only_on_the_generator() -> None:
    a = demo_init(np.random.default_rng(7), 500)
    b = demo_init(np.random.default_rng(7), 500)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, demo_init(np.random.default_rng(8), 500))


def test_unreachable_prompts_never_succeed_while_the_rest_learns() -> None:
    world = World(SMALL, 0)
    env, rule = StepEnv(SMALL, world, 0), make_rule("knapsack:two-phase", RuleSetup(SMALL.n, SMALL.prompts_per_step, 0))
    unreachable = world.base < UNREACHABLE_LOGIT + 5  # (P+H,) the block, topic offset included
    start, successes = world.mean_success()[0], 0
    for _ in range(SMALL.steps):
        log, selection = run_step(rule, env.begin_step(), env)
        batch = env.end_step(log, selection)
        successes += int(batch.reward[unreachable[batch.prompt]].sum())
        world.update(batch)
    assert unreachable[: SMALL.num_prompts].mean() > 0.1
    assert successes == 0
    assert world.success()[unreachable].max() < 1e-9
    assert world.mean_success()[0] > start + 0.01  # the other blocks learn


@pytest.mark.parametrize("regime_prompts", [640, 6400])
def test_demo_world_starts_with_most_signal_in_the_middle_and_hard_blocks(regime_prompts: int) -> None:
    world = World(replace(SMALL, num_prompts=regime_prompts), 1)
    p = world.success()[:regime_prompts]
    signal_at_8 = 1 - p**8 - (1 - p) ** 8  # chance a group of 8 has reward variance
    assert signal_at_8[p >= 0.95].mean() < 0.4
    assert signal_at_8[p < 1e-6].max() < 1e-6
    assert 0.3 < signal_at_8.mean() < 0.6
