"""The rule interface: every registered rule's plans obey its limits (total, bounds, determinism), on the
simulator and on an engine that knows nothing of it; hand-solved steps of each peer rule; run_step's checks.
(The same invariants in the reference trainer: tests/train/test_rules_trainer.py.)"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.core.planner import Planner
from knapsack_rl.core.tracker import to_success
from knapsack_rl.rules import (
    DapoRule,
    KnapsackRule,
    Limits,
    PilotCommitRule,
    ReinforceAdaRule,
    Round,
    Rule,
    RuleSetup,
    Selection,
    StepLog,
    StepSpec,
    make_rule,
    rule_names,
    run_step,
    step_log_metrics,
)
from knapsack_rl.sim import SimConfig, StepEnv, World
from tests.rules.invariants import Recorder, StepRecord, check_invariants

SMALL = SimConfig(num_prompts=640, num_heldout=50, num_topics=8, prompts_per_step=32, steps=40)


def run_sim(name: str, config: SimConfig, seed: int, steps: int) -> list[StepRecord]:
    """``steps`` steps of rule ``name`` on the simulator (with updates), recorded."""
    world, rec = World(config, seed), Recorder(make_rule(name, RuleSetup(config.n, config.prompts_per_step, seed)))
    env = StepEnv(config, world, seed)
    for _ in range(steps):
        log, selection = run_step(rec, env.begin_step(), env)
        world.update(env.end_step(log, selection))
    return rec.steps


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
    assert same == (name == "uniform")


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


# ----------------------------------------------------------------------------- state between steps
@pytest.mark.parametrize("name", rule_names())
def test_every_rules_state_is_plain_data_and_restores_its_plans(name: str) -> None:
    # run 20 steps, copy the state into a fresh rule, then both plan the next 15 steps identically
    setup = RuleSetup(SMALL.n, SMALL.prompts_per_step, 5)
    rule = make_rule(name, setup)
    env = StepEnv(SMALL, World(SMALL, 5), 5)
    for _ in range(20):
        log, selection = run_step(rule, env.begin_step(), env)
        env.end_step(log, selection)
    state = rule.state_dict()
    assert _plain(state), f"{name}: state is not plain data: {state!r:.200}"
    twin = make_rule(name, setup)
    twin.load_state_dict(state, source="ckpt")
    assert _plain(twin.state_dict()) and repr(twin.state_dict()) == repr(state)
    for _ in range(15):
        spec = env.begin_step()
        log, selection = run_step(rule, spec, env)
        twin_log, twin_sel = run_step(twin, spec, ScriptedReplay(log))
        np.testing.assert_array_equal(twin_log.counts, log.counts)
        np.testing.assert_array_equal(twin_sel.train, selection.train)
        env.end_step(log, selection)


def _plain(obj: Any) -> bool:
    """Ints, floats, strs, bytes, bools, None, and lists / dicts of them only (what weights_only loads)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return obj is None or type(obj) in (int, float, str, bytes, bool)


class ScriptedReplay:
    """An engine that replays another step's log: the same draws and the same rewards, round by round."""

    def __init__(self, log: StepLog) -> None:
        self.log, self.drawn, self.given = log, log.spec.size, np.zeros(log.size, dtype=np.int64)

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, epochs = self.log.ids[self.drawn : self.drawn + k], self.log.epochs[self.drawn : self.drawn + k]
        self.drawn += k
        return ids, epochs

    def generate(self, log: StepLog, counts: np.ndarray) -> np.ndarray:
        out = []
        for k, c in enumerate(counts.tolist()):
            mine = self.log.rewards[self.log.rollout_candidate == k]
            out.append(mine[self.given[k] : self.given[k] + c])
            self.given[k] += c
        return np.concatenate(out) if out else np.zeros(0)


def test_rule_states_refuse_what_is_not_theirs() -> None:
    with pytest.raises(ValueError, match=r"ckpt: rule 'dapo' keeps no state between steps; got \['evicted'\]"):
        make_rule("dapo").load_state_dict({"evicted": []}, source="ckpt")
    pilot = make_rule("pilot-commit")
    with pytest.raises(ValueError, match=r"ckpt: not a state of rule 'pilot-commit': expected the key \['evicted'\]"):
        pilot.load_state_dict({"zero_last": []}, source="ckpt")
    with pytest.raises(
        ValueError, match=r"ckpt: evicted\[1\]=1.5 is not a valid prompt id: prompt ids must be int or str, not float"
    ):
        pilot.load_state_dict({"evicted": [1, 1.5]}, source="ckpt")
    assert pilot.state_dict() == {"evicted": []}  # a refused state changes nothing
    pilot.load_state_dict({"evicted": ["b", 3, "a"]}, source="ckpt")
    assert pilot.state_dict() == {"evicted": [3, "a", "b"]}
    with pytest.raises(ValueError, match=r"ckpt: a planner state holds exactly \['config', 'tracker', 'version'\]"):
        make_rule("knapsack:project").load_state_dict({}, source="ckpt")


def _uncertainty_with_a_forged_tracker() -> dict[str, Any]:
    """The uncertainty rule's state after one step, with a ring holding a reward its count never recorded."""
    rule = make_rule("uncertainty")
    rule.tracker.update(["a", "a"], [1.0, 0.0], epoch=0, step=1)
    rule.tracker._state["ring"][0, 5] = 1.0  # the checksum is recomputed by to_bytes: a forger's file
    return rule.state_dict()


@pytest.mark.parametrize(
    ("name", "state", "message"),
    [
        ("dapo", {1: [], "a": []}, r"ckpt: rule 'dapo' keeps no state between steps; got \['1', 'a'\]"),
        ("dapo", [], r"ckpt: rule 'dapo' keeps no state between steps; got list"),
        ("pilot-commit", {"evicted": [], 1: []}, r"ckpt: not a state of rule 'pilot-commit': expected the key"),
        ("pilot-commit", {"evicted": [3, "a", 3]}, r"ckpt: evicted must be unique; evicted\[2\]=3 appears"),
        ("greso", {"zero_last": [1, 1]}, r"ckpt: zero_last must be unique"),
        ("uncertainty", {"tracker": b"", 5: 1}, r"ckpt: not a state of rule 'uncertainty': expected the key"),
        ("uncertainty", _uncertainty_with_a_forged_tracker(), r"ckpt: malformed tracker file: .* ring is 0 past"),
    ],
)
def test_a_refused_rule_state_is_one_line_and_changes_nothing(name: str, state: Any, message: str) -> None:
    rule = make_rule(name)
    before = rule.state_dict()
    with pytest.raises(ValueError, match=message) as info:
        rule.load_state_dict(state, source="ckpt")
    assert "\n" not in str(info.value) and type(info.value) is ValueError
    assert rule.state_dict() == before


# ----------------------------------------------------------------------------- metrics and the run's budget
def test_step_log_metrics_hand_solved() -> None:
    # 3 candidates: 0 gets [1, 0, 1, 0] (trained), 1 gets [1, 1] (trained), 2 gets [0, 0] (dropped)
    script = {0: [1, 0, 1, 0], 1: [1, 1], 2: [0, 0]}
    log, _ = run_step(Bad([[4, 2, 2]], Limits(8, False, 1, 8)), _spec(3, n=2), ScriptedEngine(script))
    selection = Selection(log.rollout_candidate < 2)
    m = step_log_metrics(log, selection)
    assert m["train/rollouts"] == 6 and m["train/prompts"] == 2 and m["train/effective_prompts"] == 1
    assert m["train/effective_grad_ratio"] == pytest.approx(4 / 6) and m["train/reward_mean"] == pytest.approx(4 / 6)
    assert m["train/rollouts_generated"] == 8 and m["train/candidates"] == 3 and m["train/generation_rounds"] == 1
    assert (m["alloc/budget_max"], m["alloc/budget_min"], m["alloc/budget_mean"]) == (4, 2, 8 / 3)
    assert m["alloc/budget_total"] == 8 and m["alloc/num_above_n"] == 1  # n = 2: only candidate 0 is above
    assert np.isnan(m["alloc/objective"]) and np.isnan(m["tracker/prompts"]) and m["alloc/probe_rollouts"] == 0
    # a knapsack rule's own metrics (the Planner's) replace the defaults; the key set stays the same
    k_log, k_sel = run_step(KnapsackRule(KnapsackConfig.preset("project", n=2)), _spec(3, n=2), ScriptedEngine(script))
    km = step_log_metrics(k_log, k_sel)
    assert set(km) == set(m) and km["tracker/prompts"] == 3 and not np.isnan(km["alloc/objective"])


def test_dapo_stops_refilling_at_the_runs_rollouts_left() -> None:
    def spent(budget_left: int | None) -> int:
        spec = StepSpec(np.arange(2), epoch=0, step=0, n=4, total_budget=8, budget_left=budget_left)
        log, _ = run_step(DapoRule(max_rounds=5), spec, ScriptedEngine({}))  # all-zero rewards: never full
        return log.spent

    assert spent(None) == 40 and spent(100) == 40  # max_rounds x B
    assert spent(24) == 24 and spent(3) == 8  # at most the rollouts left, but always the first round's B
    spec = StepSpec(np.arange(2), epoch=0, step=0, n=4, total_budget=8, budget_left=16)
    assert spec.spend_cap(40) == 16 and spec.spend_cap(8) == 8
    with pytest.raises(ValueError, match=r"budget_left must be >= 0; got budget_left=-1"):
        StepSpec(np.arange(2), epoch=0, step=0, n=4, total_budget=8, budget_left=-1)


def test_rules_never_import_torch_or_the_simulator() -> None:
    code = "import sys, knapsack_rl.rules; assert not {'torch', 'knapsack_rl.sim'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- an engine's rewards, mapped once
class SignedEngine:
    """An engine whose task scores -1 / 1 (or any scale): it maps them to successes, as every engine does."""

    def __init__(self, script: dict[int, list[float]], config: KnapsackConfig) -> None:
        self.script, self.tracker = script, config.tracker

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("a knapsack rule draws nothing")

    def generate(self, log: StepLog, counts: np.ndarray) -> np.ndarray:
        raw: list[float] = []
        for k, c in enumerate(counts.tolist()):
            done = int(log.counts[k])
            raw += self.script[int(log.ids[k])][done : done + c]
        return to_success(raw, self.tracker.reward_format, self.tracker.success_threshold)


@pytest.mark.parametrize(
    "settings", [{"reward_format": "signed"}, {"reward_format": "continuous", "success_threshold": 0.0}]
)
@pytest.mark.parametrize("probe_n", [0, 2])
def test_a_knapsack_rule_maps_an_engines_rewards_once(settings: dict[str, Any], probe_n: int) -> None:
    """Rewards -1 / 1 (or a threshold) reach the rule as successes; the Planner must not map them again
    (a 0 is no signed reward; 0 >= 0 would count every failure as a success)."""
    config = KnapsackConfig.preset("project", n=4, min_count=1, estimator="ema", ema_weight=1.0, **settings)
    config = config.replace(probe_n=probe_n, uniform_epochs=0)
    rule = KnapsackRule(config)
    script = {0: [-1.0, 1.0, 1.0, -1.0] * 4, 1: [1.0, 1.0, 1.0, -1.0] * 4, 2: [-1.0] * 16}
    spec = StepSpec(np.arange(3), epoch=0, step=0, n=4, total_budget=12)
    log, selection = run_step(rule, spec, SignedEngine(script, config))
    assert log.rounds == (2 if probe_n else 1) and set(np.unique(log.rewards)) == {0.0, 1.0}
    rates = [np.mean(np.asarray(script[i][: int(log.counts[i])]) > 0) for i in range(3)]
    np.testing.assert_allclose(rule.planner.tracker.estimate([0, 1, 2]), rates)
    assert selection.metrics["train/all_wrong_ratio"] == 1 / 3  # prompt 2 only: a failure is no success
    assert selection.metrics["train/reward_mean"] == float(log.rewards.mean())
