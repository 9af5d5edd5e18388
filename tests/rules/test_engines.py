"""Engine caps and the one-round driver: each engine refuses exactly the rules it cannot run, with the reason;
a one-round rule driven by OneRound plans, observes and ends in the state run_step gives it."""

from __future__ import annotations

import numpy as np
import pytest

from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.rules import (
    ENGINES,
    KnapsackRule,
    OneRound,
    Round,
    Rule,
    RuleSetup,
    StepLog,
    StepSpec,
    check_runs_on,
    engines_for,
    make_rule,
    rule_names,
    run_step,
    step_log_metrics,
)
from knapsack_rl.rules.interface import Limits

SETUP = RuleSetup(n=4, prompts_per_step=6, seed=3)
MULTI_ROUND = {"knapsack:two-phase", "reinforce-ada", "reinforce-ada-pos", "pilot-commit", "dapo"}
DRAWS = {"pilot-commit", "dapo", "greso"}
# the project preset (the default knapsack settings, and the presets built on it) gives p = 0 / p = 1 prompts a
# single rollout
SINGLES = {"knapsack", "knapsack:project", "knapsack:signal", "knapsack:two-phase", "pilot-commit"}


@pytest.mark.parametrize("name", rule_names())
def test_each_engine_refuses_exactly_what_it_cannot_run(name: str) -> None:
    rule = make_rule(name, SETUP)
    one_round = name not in MULTI_ROUND and name not in DRAWS
    assert ("trl" in engines_for(rule)) == one_round
    assert ("verl" in engines_for(rule)) == (one_round and name not in SINGLES)
    assert {"trainer", "simulator"} <= set(engines_for(rule))
    for engine in ("trainer", "simulator"):
        check_runs_on(rule, engine)


def test_a_refusal_names_the_rule_the_reason_and_the_engines_that_can() -> None:
    with pytest.raises(ValueError) as info:
        check_runs_on(make_rule("dapo", SETUP), "trl")
    assert str(info.value) == (
        "rule 'dapo' cannot run in trl: it generates in rounds within a step, and TRL 1.16's GRPOTrainer makes one "
        "generation call per batch; it draws prompts beyond the step's batch, and TRL's sampler fixes the prompts of "
        "a batch; it trains on a subset of the rollouts it generates, and TRL trains on every rollout it generates; "
        "engines that can run it: simulator, trainer"
    )
    single = r"^rule 'knapsack:project' cannot run in verl: it can give a prompt a single rollout, and verl's GRPO"
    with pytest.raises(ValueError, match=single + r" .*; engines that can run it: simulator, trainer, trl$"):
        check_runs_on(make_rule("knapsack:project", SETUP), "verl")
    rule = KnapsackRule(KnapsackConfig.preset("project", negative_n=2, positive_n=2))
    check_runs_on(rule, "verl")  # the settings, not the name, decide
    with pytest.raises(
        ValueError,
        match=r"^engine='vllm' is not a registered engine; valid: \['simulator', 'trainer', 'trl', 'verl'\]$",
    ):
        check_runs_on(rule, "vllm")


def test_one_round_refuses_a_rule_its_engine_cannot_run() -> None:
    with pytest.raises(ValueError, match="cannot run in verl: it generates in rounds"):
        OneRound(make_rule("knapsack:two-phase", SETUP), "verl")


class _Bernoulli:
    """A fake engine: reward of rollout j of prompt id i is a fixed coin of (i, j, round)."""

    def __init__(self) -> None:
        self.calls = 0

    def rewards(self, ids: np.ndarray, counts: np.ndarray, offset: np.ndarray) -> np.ndarray:
        out = [
            float((int(pid) * 7 + j * 3 + self.calls) % 5 < 2)
            for pid, c, o in zip(ids.tolist(), counts.tolist(), offset.tolist(), strict=True)
            for j in range(o, o + c)
        ]
        return np.asarray(out)

    def generate(self, log: StepLog, counts: np.ndarray) -> np.ndarray:
        return self.rewards(log.ids, counts, log.counts)

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("a one-round rule never draws")


ONE_ROUND = [name for name in rule_names() if name not in MULTI_ROUND and name not in DRAWS]


@pytest.mark.parametrize("name", ONE_ROUND)
def test_one_round_plans_observes_and_ends_as_run_step_does(name: str) -> None:
    """Over 4 steps (epochs 0-3, so knapsack allocates from epoch 1), the counts, the metrics and the rule's
    state through OneRound (rewards handed back prompt by prompt, prompts shuffled) equal run_step's."""
    a, b = make_rule(name, SETUP), make_rule(name, SETUP)
    driver = OneRound(b, "trl")
    engine = _Bernoulli()
    rng = np.random.default_rng(0)
    for step in range(4):
        ids = np.arange(6) * 11 + step % 2  # two alternating batches: every prompt is seen again
        spec = StepSpec(ids, epoch=step, step=step, n=4, total_budget=24)
        log, selection = run_step(a, spec, engine)
        expected = step_log_metrics(log, selection)
        counts = driver.plan(spec)
        np.testing.assert_array_equal(counts, log.counts)
        index = np.repeat(np.arange(6), counts)
        rewards = engine.rewards(ids, counts, np.zeros(6, dtype=np.int64))
        blocks = rng.permutation(6)  # prompts in any order, each prompt's rollouts in generation order
        shuffle = np.concatenate([np.flatnonzero(index == k) for k in blocks])
        got = driver.observe(spec, index[shuffle], rewards[shuffle])
        assert got.keys() == expected.keys()
        for key in expected:
            if key != "alloc/solve_s":
                np.testing.assert_equal(got[key], expected[key], err_msg=key)
    assert driver.state_dict() == a.state_dict()


class _Greedy(Rule):
    """A rule that breaks the promises it makes (to check OneRound's checks)."""

    def __init__(self, counts: list[int], fixed: bool = True, draw: int = 0) -> None:
        self.counts, self.fixed, self.draw, self.name = counts, fixed, draw, "greedy"

    def limits(self, spec: StepSpec) -> Limits:
        return Limits(spec.total_budget, self.fixed, 2, 8)

    def next_round(self, log: StepLog) -> Round | None:
        return Round(np.asarray(self.counts, dtype=np.int64), draw=self.draw) if not log.rounds else None


@pytest.mark.parametrize(
    ("rule", "engine", "message"),
    [
        (_Greedy([4, 4, 4]), "trl", r"the step would generate 12 rollouts; its limit is 8"),
        (_Greedy([2, 2, 2], fixed=True), "trl", r"promises exactly 8 rollouts per step; it planned 6"),
        (_Greedy([1, 0, 0], fixed=False), "trl", r"a prompt got 1 rollouts; its bound is 2"),
        (_Greedy([4, 4, 0]), "verl", r"gave a prompt 0 rollouts in verl: verl's agent loop runs at least one"),
        (_Greedy([4, 4, 0], draw=2), "trl", r"answered a draw of 2 prompts in trl"),
    ],
)
def test_one_round_refuses_a_plan_that_breaks_the_rules_limits_or_the_engine(
    rule: Rule, engine: str, message: str
) -> None:
    spec = StepSpec(np.arange(3), epoch=0, step=0, n=8 // 3 + 1, total_budget=8)
    with pytest.raises(ValueError, match=message):
        OneRound(rule, engine).plan(spec)


def test_every_engine_is_registered_once() -> None:
    assert ENGINES.names() == ["simulator", "trainer", "trl", "verl"]


def test_the_rules_command_prints_every_rule_with_its_needs_and_engines(capsys: pytest.CaptureFixture[str]) -> None:
    from knapsack_rl.cli import main

    assert main(["rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line for line in lines[1 : 1 + len(rule_names())]}
    assert sorted(table) == rule_names()
    assert table["dapo"].split(None, 1)[1].split() == ["rounds,", "draws,", "drops", "simulator,", "trainer"]
    assert table["coba"].endswith("simulator, trainer, trl, verl")
    assert table["knapsack"].endswith("simulator, trainer, trl")  # the project preset's single rollouts
