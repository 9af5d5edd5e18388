"""The rule interface: every registered rule's plans obey its limits (total, bounds, determinism), on the
simulator and on an engine that knows nothing of it; hand-solved steps of each peer rule; run_step's checks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.core.planner import Planner
from knapsack_rl.sim import (
    KnapsackRule,
    Limits,
    Round,
    Rule,
    RuleSetup,
    Selection,
    SimConfig,
    StepEnv,
    StepLog,
    StepSpec,
    World,
    make_rule,
    rule_names,
    run_step,
)
from knapsack_rl.sim.rules import DapoRule, PilotCommitRule, ReinforceAdaRule

SMALL = SimConfig(num_prompts=640, num_heldout=50, num_topics=8, prompts_per_step=32, steps=40)


@dataclass
class StepRecord:
    """What one step of a rule did: its limits, every round's counts and draws, the end state."""

    limits: Limits
    rounds: list[tuple[np.ndarray, int]] = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    spent: int = 0
    train: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class Recorder(Rule):
    """Wraps a rule and records every round it plans (the rule itself is unchanged)."""

    def __init__(self, rule: Rule) -> None:
        self.rule, self.name, self.steps = rule, rule.name, []

    def limits(self, spec: StepSpec) -> Limits:
        return self.rule.limits(spec)

    def begin(self, spec: StepSpec) -> None:
        self.steps.append(StepRecord(self.rule.limits(spec)))
        self.rule.begin(spec)

    def next_round(self, log: StepLog) -> Round | None:
        rnd = self.rule.next_round(log)
        if rnd is not None:
            self.steps[-1].rounds.append((np.asarray(rnd.counts).copy(), rnd.draw))
        return rnd

    def finish(self, log: StepLog) -> Selection:
        sel = self.rule.finish(log)
        rec = self.steps[-1]
        rec.counts, rec.spent, rec.train = log.counts.copy(), log.spent, sel.train.copy()
        return sel


def run_sim(name: str, config: SimConfig, seed: int, steps: int) -> list[StepRecord]:
    """``steps`` steps of rule ``name`` on the simulator (with updates), recorded."""
    world, rec = World(config, seed), Recorder(make_rule(name, RuleSetup(config.n, config.prompts_per_step, seed)))
    env = StepEnv(config, world, seed)
    for _ in range(steps):
        log, selection = run_step(rec, env.begin_step(), env)
        world.update(env.end_step(log, selection))
    return rec.steps


def check_invariants(steps: list[StepRecord], budget: int) -> None:
    """The invariants every rule promises, checked from the records (independently of run_step)."""
    for rec in steps:
        lim = rec.limits
        assert lim.total >= budget if not lim.fixed else lim.total == budget
        assert rec.spent == rec.counts.sum() == sum(int(c.sum()) for c, _ in rec.rounds)
        assert rec.spent == lim.total if lim.fixed else rec.spent <= lim.total
        for counts, draw in rec.rounds:
            assert counts.dtype.kind in "iu" and counts.min(initial=0) >= 0 and draw >= 0
        given = rec.counts[rec.counts > 0]
        if given.size:
            assert lim.low <= given.min() and given.max() <= lim.high
        else:  # only a rule that has nothing left to sample (Pilot-Commit evicted every prompt) spends 0
            assert not lim.fixed and rec.spent == 0
        assert rec.train.shape == (rec.spent,) and rec.train.dtype == np.bool_


WORLDS = {
    "paper": SMALL,
    "hard": replace(SMALL, init="hard"),
    "half": replace(SMALL, init="half"),
    "single-pass": replace(SMALL, num_prompts=20_000),
}


@pytest.mark.parametrize("world", sorted(WORLDS))
@pytest.mark.parametrize("name", rule_names())
def test_every_rule_keeps_its_total_and_bounds(name: str, world: str) -> None:
    config = WORLDS[world]
    check_invariants(run_sim(name, config, seed=0, steps=45), config.budget)  # 45 steps of 32: two epochs and more


@pytest.mark.parametrize("name", rule_names())
def test_every_rule_is_deterministic_given_the_seed(name: str) -> None:
    a, b = run_sim(name, SMALL, 3, 30), run_sim(name, SMALL, 3, 30)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert len(x.rounds) == len(y.rounds)
        for (cx, dx), (cy, dy) in zip(x.rounds, y.rounds, strict=True):
            np.testing.assert_array_equal(cx, cy)
            assert dx == dy
        np.testing.assert_array_equal(x.train, y.train)
    c = run_sim(name, SMALL, 4, 30)  # another seed: other rewards, so other plans (or the same counts for uniform)
    same = all(np.array_equal(x.counts, z.counts) for x, z in zip(a, c, strict=False))
    assert same == (name in ("uniform", "knapsack:uniform"))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(rule_names()),
    seed=st.integers(0, 2**16),
    init=st.sampled_from(["paper", "hard", "uniform"]),
    m=st.sampled_from([8, 16, 24]),
    n=st.sampled_from([4, 6, 8]),
)
def test_invariants_hold_on_random_worlds(name: str, seed: int, init: str, m: int, n: int) -> None:
    config = replace(SMALL, init=init, prompts_per_step=m, n=n, num_prompts=10 * m)
    check_invariants(run_sim(name, config, seed, steps=25), config.budget)


# ----------------------------------------------------------------------------- an engine without the simulator
class ToyEngine:
    """String prompt ids with fixed success rates, rewards from a seeded Generator: no simulator types."""

    def __init__(self, p: dict[str, float], seed: int) -> None:
        self.names, self.p = sorted(p), p
        self.rng = np.random.default_rng(seed)
        self.cursor = 0

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        pos = self.cursor + np.arange(k)
        self.cursor += k
        ids = np.array([self.names[i % len(self.names)] for i in pos], dtype=object)
        return ids, (pos // len(self.names)).astype(np.int64)

    def generate(self, log: StepLog, counts: np.ndarray) -> np.ndarray:
        p = np.repeat([self.p[pid] for pid in log.ids.tolist()], counts)
        return (self.rng.random(p.size) < p).astype(np.float64)


@pytest.mark.parametrize("name", rule_names())
def test_every_rule_runs_on_an_engine_with_string_ids(name: str) -> None:
    rates = {f"q{i:03d}": p for i, p in enumerate(np.linspace(0.0, 1.0, 64))}
    engine, rule = ToyEngine(rates, seed=1), Recorder(make_rule(name, RuleSetup(n=8, prompts_per_step=16, seed=1)))
    for step in range(12):  # 3 epochs of 64 prompts in batches of 16
        ids, epochs = engine.draw(16)
        run_step(
            rule, StepSpec(ids, epoch=int(epochs[0]), step=step, n=8, total_budget=128, prompt_epochs=epochs), engine
        )
    check_invariants(rule.steps, 128)


# ----------------------------------------------------------------------------- knapsack == Planner
@pytest.mark.parametrize(
    "config", [KnapsackConfig.preset("project"), KnapsackConfig.preset("project", probe_n=4, uniform_epochs=0)]
)
def test_knapsack_rule_plans_equal_the_planners_on_the_same_inputs(config: KnapsackConfig) -> None:
    # issue 10: a consumer's plans equal Planner.plan on the same ids, epoch and rewards
    rule, planner = Recorder(KnapsackRule(config)), Planner(config)
    env = StepEnv(SMALL, World(SMALL, 0), 0)
    for _ in range(50):
        spec = env.begin_step()
        log, selection = run_step(rule, spec, env)
        env.end_step(log, selection)
        rounds = rule.steps[-1].rounds
        probe = planner.plan_probe(spec.prompt_ids, epoch=spec.epoch)
        if probe.any():
            np.testing.assert_array_equal(rounds[0][0], probe)
            first = np.arange(log.spent) < int(probe.sum())  # the probe's rollouts: the first round's
            alloc = planner.plan(
                spec.prompt_ids,
                epoch=spec.epoch,
                probe=(spec.prompt_ids[log.rollout_candidate[first]], log.rewards[first]),
            )
        else:
            alloc = planner.plan(spec.prompt_ids, epoch=spec.epoch)
        np.testing.assert_array_equal(log.counts, alloc.budgets)
        planner.observe(spec.prompt_ids[log.rollout_candidate], log.rewards, epoch=spec.epoch, step=spec.step)
    assert max(int(r.counts.max()) for r in rule.steps) > SMALL.n  # allocation happened, not only uniform epochs


# ----------------------------------------------------------------------------- hand-solved peer steps
class ScriptedEngine:
    """Rewards from a script: candidate k's j-th rollout gets ``script[k][j]``; draws number ids from 100."""

    def __init__(self, script: dict[int, list[float]]) -> None:
        self.script, self.next_id = script, 100

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.arange(self.next_id, self.next_id + k)
        self.next_id += k
        return ids, np.zeros(k, dtype=np.int64)

    def generate(self, log: StepLog, counts: np.ndarray) -> np.ndarray:
        out: list[float] = []
        for k, c in enumerate(counts.tolist()):
            done = int(log.counts[k])
            out += self.script.get(int(log.ids[k]), [0.0] * 64)[done : done + c]
        return np.asarray(out)


def _spec(m: int, n: int = 4) -> StepSpec:
    return StepSpec(np.arange(m), epoch=0, step=0, n=n, total_budget=n * m)


def test_reinforce_ada_stops_sampling_a_prompt_once_balanced_and_downsamples_its_group() -> None:
    # keep 4: exit at >= 2 successes and >= 2 failures; rounds of 2; B = 4 x 3 = 12
    script = {0: [1, 0, 1, 0, 1, 1], 1: [1, 1, 1, 1, 0, 0], 2: [0, 0, 0, 0, 0, 0]}
    rule = ReinforceAdaRule(exit="balanced", round_n=2, keep_n=4, max_rounds=4)
    log, sel = run_step(rule, _spec(3), ScriptedEngine(script))
    # round 1: 2 each (6); round 2: 2 each (12 = B, budget spent); prompt 0 exits after round 2 (2 + 2)
    np.testing.assert_array_equal(log.counts, [4, 4, 4])
    assert log.generations == 2
    kept = {k: log.rewards[sel.train & (log.rollout_candidate == k)].tolist() for k in range(3)}
    assert sorted(kept[0]) == [0, 0, 1, 1]  # balanced
    assert kept[1] == [1, 1, 1, 1]  # no failure seen: the successes fill the group
    assert kept[2] == [0, 0, 0, 0]


def test_reinforce_ada_gives_what_is_left_to_the_prompts_still_active() -> None:
    script = {0: [1, 0, 1, 0], 1: [1, 1, 1, 1, 1, 1, 1, 0], 2: [0] * 8}
    rule = ReinforceAdaRule(exit="balanced", round_n=2, keep_n=4, max_rounds=4)
    log, _ = run_step(rule, _spec(3), ScriptedEngine(script))
    # r1: 2/2/2 (6), r2: 2/2/2 (12 = B): budget gone after two rounds although 1 and 2 are active
    np.testing.assert_array_equal(log.counts, [4, 4, 4])
    log, _ = run_step(ReinforceAdaRule(exit="positive", round_n=2, keep_n=4), _spec(3), ScriptedEngine(script))
    # positive exit: 0 and 1 exit after round 1; prompt 2 gets the rest of B in rounds of 2
    np.testing.assert_array_equal(log.counts, [2, 2, 8])
    assert log.spent == 12


def test_pilot_commit_commits_to_passers_by_variance_and_evicts_solved_prompts() -> None:
    # pilot 2, commit 6, B = 4 x 4 = 16: pilots 8 (0: 1/2 pass, 1: 2/2 solved -> evicted, 2: 0/2 hard, 3: 1/2 pass)
    script = {0: [1, 0] + [1] * 6, 1: [1, 1], 2: [0, 0], 3: [0, 1] + [0] * 6}
    rule = PilotCommitRule(pilot_n=2, commit_n=6)
    log, sel = run_step(rule, _spec(4), ScriptedEngine(script))
    np.testing.assert_array_equal(log.counts[:4], [2 + 6, 2, 2, 2 + 2])  # 16 = 8 pilots + 6 + the last 2 to prompt 3
    assert log.spent == 16
    np.testing.assert_array_equal(np.unique(log.rollout_candidate[sel.train]), [0, 3])  # passers only
    assert rule.evicted == {1}
    spec = StepSpec(np.array([1, 5, 6, 7]), epoch=1, step=1, n=4, total_budget=16)
    log, _ = run_step(rule, spec, ScriptedEngine({5: [1, 0] * 8, 6: [1, 0] * 8, 7: [1, 0] * 8}))
    assert log.counts[0] == 0 and log.spent == 16  # the evicted prompt is never sampled again


def test_dapo_refills_until_m_groups_have_signal_and_trims() -> None:
    script = {0: [1, 0, 0, 0], 1: [0] * 4, 100: [1, 1, 0, 1], 101: [0, 1, 0, 0]}
    log, sel = run_step(DapoRule(max_rounds=5), _spec(2), ScriptedEngine(script))
    assert log.spent == 16 and log.size == 4  # two batches of 2 x 4
    np.testing.assert_array_equal(np.unique(log.rollout_candidate[sel.train]), [0, 2])  # first 2 with signal


# ----------------------------------------------------------------------------- run_step's checks
class Bad(Rule):
    """A rule that plans what it is given, with the limits it is given."""

    def __init__(self, rounds: list[Any], limits: Limits, train: np.ndarray | None = None) -> None:
        self.rounds, self.lim, self.train, self.name = list(rounds), limits, train, "bad"

    def limits(self, spec: StepSpec) -> Limits:
        return self.lim

    def next_round(self, log: StepLog) -> Round | None:
        return Round(np.asarray(self.rounds.pop(0))) if self.rounds else None

    def finish(self, log: StepLog) -> Selection:
        return Selection(np.ones(log.rewards.size, dtype=bool) if self.train is None else self.train)


@pytest.mark.parametrize(
    ("rounds", "limits", "train", "message"),
    [
        (
            [[5, 5, 5, 5]],
            Limits(16, True, 1, 8),
            None,
            r"rule 'bad': the step would generate 20 rollouts; its limit is 16",
        ),
        ([[9, 1, 3, 3]], Limits(16, True, 1, 8), None, r"rule 'bad': a candidate would get 9 rollouts; its bound is 8"),
        ([[4, -1, 4, 4]], Limits(16, True, 1, 8), None, r"rule 'bad': round counts must be >= 0; got min -1"),
        ([[4, 4, 4]], Limits(16, True, 1, 8), None, r"round counts must be integers of shape \(4,\); got int64 \(3,\)"),
        ([[4.0, 4.0, 4.0, 4.0]], Limits(16, True, 1, 8), None, r"must be integers of shape \(4,\); got float64"),
        ([[4, 4, 4, 3]], Limits(16, True, 1, 8), None, r"promises exactly 16 rollouts per step; step 0 generated 15"),
        ([[4, 4, 4, 1]], Limits(16, False, 2, 8), None, r"rule 'bad': a candidate got 1 rollouts; its bound is 2"),
        ([[4, 4, 4, 4]], Limits(16, True, 1, 8), np.ones(3, dtype=bool), r"train must be bool of shape \(16,\)"),
    ],
)
def test_run_step_enforces_the_rules_limits(rounds: list[Any], limits: Limits, train: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_step(Bad(rounds, limits, train), _spec(4), ScriptedEngine({}))


def test_run_step_refuses_rewards_outside_zero_one_and_endless_rules() -> None:
    class Loud(ScriptedEngine):
        def generate(self, log: StepLog, counts: np.ndarray) -> np.ndarray:
            return np.full(int(counts.sum()), 2.0)

    with pytest.raises(ValueError, match=r"rewards must be in \[0, 1\]; rewards\[0\]=2.0"):
        run_step(Bad([[4, 4, 4, 4]], Limits(16, True, 1, 8)), _spec(4), Loud({}))

    class Forever(Bad):
        def next_round(self, log: StepLog) -> Round | None:
            return Round(np.zeros(log.size, dtype=np.int64))

    with pytest.raises(RuntimeError, match=r"rule 'bad' did not end step 0 within max_rounds=5"):
        run_step(Forever([], Limits(16, False, 1, 8)), _spec(4), ScriptedEngine({}), max_rounds=5)


def test_specs_and_limits_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"prompt_ids must be a non-empty 1-D array; got shape \(0,\)"):
        StepSpec(np.zeros(0), epoch=0, step=0, n=4, total_budget=0)
    with pytest.raises(ValueError, match=r"epoch must be >= 0; got epoch=-1"):
        StepSpec(np.arange(3), epoch=-1, step=0, n=4, total_budget=12)
    with pytest.raises(ValueError, match=r"prompt_epochs must have shape \(3,\); got \(2,\)"):
        StepSpec(np.arange(3), epoch=0, step=0, n=4, total_budget=12, prompt_epochs=np.zeros(2))
    with pytest.raises(ValueError, match=r"high must be >= 4; got high=2"):
        Limits(8, True, 4, 2)
    with pytest.raises(ValueError, match=r"exit must be one of"):
        ReinforceAdaRule(exit="sometimes")
    with pytest.raises(ValueError, match=r"rule 'dapo' needs total_budget == n \* M; got total_budget=10, n=4, M=3"):
        run_step(make_rule("dapo"), StepSpec(np.arange(3), epoch=0, step=0, n=4, total_budget=10), ScriptedEngine({}))


def test_pilot_commit_ends_the_step_when_a_whole_drawn_batch_is_evicted() -> None:
    # every prompt of the stream was solved in an earlier pilot: nothing is left to sample
    rule = PilotCommitRule(pilot_n=2, commit_n=6)
    engine = ScriptedEngine({})
    rule.evicted = set(range(0, 1000))
    log, _ = run_step(rule, _spec(4), engine)
    assert log.spent == 0 and log.size == 8  # the batch and one drawn batch of M = 4, all evicted
    rule.evicted.discard(102)  # one usable prompt in the drawn batch: piloted, then more are drawn
    engine.next_id = 100
    log, _ = run_step(rule, _spec(4), engine)
    assert log.counts[log.ids.tolist().index(102)] == 2 and log.size > 8
