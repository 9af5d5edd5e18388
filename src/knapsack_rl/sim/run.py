"""Running rules in the simulated world: one run per (rule, seed), step by step.

A step reads top to bottom: ``begin -> rule.step (draw, allocate, sample, track) -> end (snapshot)
-> world.update (advantages, update) -> log``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.sim.config import SimConfig
from knapsack_rl.sim.env import StepEnv
from knapsack_rl.sim.rules import Rule, make_rule
from knapsack_rl.sim.world import World

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class RunTrace:
    """Per-step record of one run. Arrays over steps have shape (T,); success curves (T + 1,) start
    with the value before training."""

    rule: str
    seed: int
    spend: NDArray[np.int64]
    """Rollouts generated per step (every one the rule asked for)."""
    trained: NDArray[np.int64]
    """Rollouts in the trained batch per step."""
    effective: NDArray[np.int64]
    """Rollouts of the trained batch in groups with reward variance > 0."""
    budget_max: NDArray[np.int64]
    """Largest number of rollouts one prompt got in the step."""
    train_success: NDArray[np.float64]
    """Mean true success rate over the training prompts, before training and after each step."""
    heldout_success: NDArray[np.float64]
    """Mean true success rate over the held-out prompts, likewise."""
    snapshots: list[tuple[int, NDArray[np.float64], NDArray[np.int64]]] = field(default_factory=list)
    """(step, true p (k,), rollouts (k,)) of every prompt of a step, every ``snapshot_every`` steps."""
    wall_s: float = 0.0
    """Wall time of the run."""

    @property
    def effective_ratio(self) -> NDArray[np.float64]:
        """Effective gradient ratio per step: rollouts with signal / rollouts generated."""
        out: NDArray[np.float64] = self.effective / np.maximum(self.spend, 1)
        return out

    @property
    def cumulative_spend(self) -> NDArray[np.int64]:
        """Rollouts generated up to each point of the success curves, (T + 1,) starting at 0."""
        return np.concatenate([[0], np.cumsum(self.spend)]).astype(np.int64)


def simulate(config: SimConfig, rule: Rule | str, seed: int, progress: Progress | None = None) -> RunTrace:
    """Run ``config.steps`` steps of one rule from the world of ``seed``; returns its :class:`RunTrace`."""
    start = time.perf_counter()
    rule_obj = make_rule(rule, config) if isinstance(rule, str) else rule
    world = World(config, seed)
    env = StepEnv(config, world, seed)
    T = config.steps
    cols = {k: np.zeros(T, dtype=np.int64) for k in ("spend", "trained", "effective", "budget_max")}
    train_s, held_s = np.zeros(T + 1), np.zeros(T + 1)
    train_s[0], held_s[0] = world.mean_success()
    snapshots = []
    for t in range(T):
        env.begin_step()
        batch = rule_obj.step(env)  # draw -> allocate -> sample -> track
        env.end_step()
        if env.snapshot is not None:
            snapshots.append((t, *env.snapshot))
        world.update(batch)  # advantages -> update
        cols["spend"][t] = env.spent
        cols["trained"][t] = batch.size
        cols["effective"][t] = int(batch.varied_groups().sum()) if batch.size else 0
        cols["budget_max"][t] = max(env.budget_seen.values(), default=0)
        train_s[t + 1], held_s[t + 1] = world.mean_success()
        if progress is not None and (t + 1) % 50 == 0:
            progress(50)
    if progress is not None and T % 50:
        progress(T % 50)
    trace = RunTrace(
        rule_obj.name,
        seed,
        spend=cols["spend"],
        trained=cols["trained"],
        effective=cols["effective"],
        budget_max=cols["budget_max"],
        train_success=train_s,
        heldout_success=held_s,
        snapshots=snapshots,
    )
    trace.wall_s = time.perf_counter() - start
    logger.debug("simulate %s seed %d: %d steps in %.2f s", trace.rule, seed, T, trace.wall_s)
    return trace


def run_rules(
    config: SimConfig, rules: Sequence[str], seeds: Sequence[int], *, progress: bool = False
) -> dict[str, list[RunTrace]]:
    """Every rule on every seed (the same worlds and random streams for every rule)."""
    for name in rules:
        make_rule(name, config)  # fail fast on unknown names
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rules) * len(seeds) * config.steps, unit="step", desc="simulate")
    out: dict[str, list[RunTrace]] = {}
    try:
        for name in rules:
            if bar is not None:
                bar.set_postfix_str(name)
            out[name] = [simulate(config, name, seed, bar.update if bar is not None else None) for seed in seeds]
    finally:
        if bar is not None:
            bar.close()
    return out
