"""Running rules in the simulated world: one run per (rule, seed), step by step, at equal rollouts.

A step reads top to bottom: ``begin (draw the batch) -> run_step (rounds: the rule plans, the engine
generates) -> end (the trained batch) -> world.update (advantages, update) -> record``. A run stops
once it has generated ``config.total_rollouts`` rollouts, so every rule gets the same compute (or
earlier, after ``MAX_STEPS_FACTOR * steps`` steps or a step that generated nothing; both are logged): the
equal-rollouts budget and the prompt stream are the trainer's (:mod:`knapsack_rl.rules.stream`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.rules import RuleSetup, make_rule
from knapsack_rl.rules.interface import Rule, StepLog, run_step
from knapsack_rl.rules.stream import RolloutBudget
from knapsack_rl.sim.config import SimConfig
from knapsack_rl.sim.env import StepEnv
from knapsack_rl.sim.world import Rollouts, World

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class RunTrace:
    """Per-step record of one run. Arrays over steps have shape (T,); success curves (T + 1,) start
    with the value before training. T differs between rules that spend differently per step."""

    rule: str
    seed: int
    spend: NDArray[np.int64]
    """Rollouts generated per step (every one the rule asked for)."""
    trained: NDArray[np.int64]
    """Rollouts in the trained batch per step."""
    effective: NDArray[np.int64]
    """Rollouts of the trained batch in groups with reward variance > 0."""
    signal_prompts: NDArray[np.int64]
    """Prompts (groups) of the trained batch with reward variance > 0: the prompts that move the policy."""
    budget_max: NDArray[np.int64]
    """Largest number of rollouts one prompt got in the step."""
    rounds: NDArray[np.int64]
    """Generation rounds of the step (a proxy for its latency; rounds that only draw prompts are free)."""
    train_success: NDArray[np.float64]
    """Mean true success rate over the training prompts, before training and after each step."""
    heldout_success: NDArray[np.float64]
    """Mean true success rate over the held-out prompts, likewise."""
    snapshots: list[tuple[int, NDArray[np.float64], NDArray[np.int64]]] = field(default_factory=list)
    """(step, true p (k,), rollouts (k,)) of every prompt of a step, every ``snapshot_every`` steps."""
    prompts_drawn: int = 0
    """Prompts taken from the stream over the run (passes over the data = prompts_drawn / P)."""
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


class _Recorder:
    """Columns of a :class:`RunTrace`, appended step by step."""

    COLUMNS = ("spend", "trained", "effective", "signal_prompts", "budget_max", "rounds")

    def __init__(self, world: World) -> None:
        self.world = world
        self.cols: dict[str, list[int]] = {k: [] for k in self.COLUMNS}
        train, held = world.mean_success()
        self.train, self.held = [train], [held]
        self.snapshots: list[tuple[int, NDArray[np.float64], NDArray[np.int64]]] = []

    def snapshot(self, log: StepLog) -> None:
        """Every ``snapshot_every`` steps, before the update: (true p, rollouts) of every prompt given any."""
        given = log.counts > 0
        if log.spec.step % self.world.config.snapshot_every == 0 and given.any():
            p = self.world.success(log.ids[given].astype(np.int64))
            self.snapshots.append((log.spec.step, p, log.counts[given]))

    def add(self, log: StepLog, batch: Rollouts) -> None:
        """After the update: the step's counters and the new success rates."""
        varied = batch.group_variance()  # (G,)
        effective = int(varied[batch.group].sum())
        values = (log.spent, batch.size, effective, int(varied.sum()), int(log.counts.max(initial=0)), log.generations)
        for key, value in zip(self.COLUMNS, values, strict=True):
            self.cols[key].append(value)
        train, held = self.world.mean_success()
        self.train.append(train)
        self.held.append(held)

    def trace(self, rule: str, seed: int) -> RunTrace:
        col = {k: np.asarray(v, dtype=np.int64) for k, v in self.cols.items()}
        return RunTrace(
            rule, seed, spend=col["spend"], trained=col["trained"], effective=col["effective"],
            signal_prompts=col["signal_prompts"], budget_max=col["budget_max"], rounds=col["rounds"],
            train_success=np.asarray(self.train), heldout_success=np.asarray(self.held), snapshots=self.snapshots,
        )  # fmt: skip


def simulate(config: SimConfig, rule: Rule | str, seed: int, progress: Progress | None = None) -> RunTrace:
    """Run one rule from the world of ``seed`` until it has generated ``config.total_rollouts`` rollouts."""
    start = time.perf_counter()
    rule_obj = make_rule(rule, RuleSetup(config.n, config.prompts_per_step, seed)) if isinstance(rule, str) else rule
    world = World(config, seed)
    env = StepEnv(config, world, seed)
    rec = _Recorder(world)
    budget, reported = RolloutBudget(config.total_rollouts, config.steps), 0
    while not budget.finished:
        spec = env.begin_step()  # the batch of M prompts
        log, selection = run_step(rule_obj, spec, env)  # rounds: the rule plans, the engine generates
        rec.snapshot(log)
        batch = env.end_step(log, selection)  # the trained rollouts
        world.update(batch)  # advantages -> update
        rec.add(log, batch)
        budget.add(log.spent)
        if log.spent == 0:  # nothing generated: the rule has no data left (e.g. every prompt evicted)
            logger.info("rule %s generated nothing in step %d; the run ends", rule_obj.name, spec.step)
            budget.exhausted = True
        done = min(budget.spent, budget.total) // config.budget  # progress in steps of B rollouts
        if progress is not None and done - reported >= 50:
            progress(done - reported)
            reported = done
    if budget.spent < budget.total:
        logger.warning("rule %s stopped after %d steps with %d of %d rollouts", rule_obj.name, env.step, budget.spent,
                       budget.total)  # fmt: skip
    if progress is not None and config.steps > reported:
        progress(config.steps - reported)
    trace = rec.trace(rule_obj.name, seed)
    trace.prompts_drawn = env.drawn
    trace.wall_s = time.perf_counter() - start
    logger.debug("simulate %s seed %d: %d steps in %.2f s", trace.rule, seed, env.step, trace.wall_s)
    return trace


def run_rules(
    config: SimConfig, rules: Sequence[str], seeds: Sequence[int], *, progress: bool = False
) -> dict[str, list[RunTrace]]:
    """Every rule on every seed (the same worlds and random streams for every rule)."""
    for name in rules:
        make_rule(name)  # fail fast on unknown names
    from knapsack_rl.progress import Progress as ProgressBar

    bar = ProgressBar(len(rules) * len(seeds) * config.steps, "simulate", enabled=progress)
    out: dict[str, list[RunTrace]] = {}
    try:
        for name in rules:
            out[name] = [simulate(config, name, seed, functools.partial(bar.update, name)) for seed in seeds]
    finally:
        bar.close()
    return out
