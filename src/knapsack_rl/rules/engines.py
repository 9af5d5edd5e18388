"""What each engine can run, declared once, and the one-round driver of engines that generate once per step.

Every engine reaches the method through :mod:`knapsack_rl.rules.interface`. Engines differ in what a step
can be: the reference trainer and the simulator run any rule, rounds included; TRL and verl generate once
per batch. Each engine declares that once, as an :class:`EngineCaps` in :data:`ENGINES`; a rule declares
what it needs (:meth:`~knapsack_rl.rules.interface.Rule.needs`), and :func:`check_runs_on` refuses the pair
when the config is read, naming the reason and the engines that can run the rule::

    rule = make_rule("dapo", setup)
    check_runs_on(rule, "trl")
    # ValueError: rule 'dapo' cannot run in trl: it generates in rounds within a step, and TRL 1.16's
    # GRPOTrainer makes one generation call per batch; engines that can run it: simulator, trainer

Engines that generate once per step drive a rule with :class:`OneRound`: :meth:`OneRound.plan` asks the
rule for the step's counts (its first and only round), the engine generates and scores, and
:meth:`OneRound.observe` hands the rewards back and returns the step's metrics (the rule's own metrics
over :func:`~knapsack_rl.rules.interface.step_log_metrics`). Nothing else of a rule is reachable from an
engine adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.rules.interface import Limits, Needs, Rule, StepLog, StepSpec, check_round, step_log_metrics

NEEDS_TEXT = {
    "rounds": "generates in rounds within a step",
    "draws": "draws prompts beyond the step's batch",
    "skips": "can give a prompt of the batch 0 rollouts",
    "singles": "can give a prompt a single rollout",
    "drops": "trains on a subset of the rollouts it generates",
}
"""What each :class:`~knapsack_rl.rules.interface.Needs` field means, as a rule's error message says it."""


@dataclass(frozen=True)
class EngineCaps:
    """What an engine can do; each field is None where it can, else the reason it cannot (one line)."""

    name: str
    """The engine's name in configs and messages."""
    rounds: str | None = None
    """Generate, read the rewards and generate again within one step."""
    draws: str | None = None
    """Add prompts beyond the step's batch."""
    skips: str | None = None
    """Give a prompt of the batch 0 rollouts."""
    singles: str | None = None
    """Give a prompt exactly 1 rollout."""
    drops: str | None = None
    """Train on a subset of the generated rollouts."""

    def refusals(self, needs: Needs) -> list[str]:
        """``"<what the rule does>, and <why this engine cannot>"`` for every need this engine lacks."""
        out = []
        for f in fields(Needs):
            reason = getattr(self, f.name)
            if getattr(needs, f.name) and reason is not None:
                out.append(f"{NEEDS_TEXT[f.name]}, and {reason}")
        return out


ENGINES: Registry[EngineCaps] = Registry("engine", "engine")
"""Every engine's capabilities by name."""

ENGINES.add("trainer", EngineCaps("trainer"))
ENGINES.add("simulator", EngineCaps("simulator"))
ENGINES.add(
    "trl",
    EngineCaps(
        "trl",
        rounds="TRL 1.16's GRPOTrainer makes one generation call per batch",
        draws="TRL's sampler fixes the prompts of a batch",
        drops="TRL trains on every rollout it generates",
    ),
)
ENGINES.add(
    "verl",
    EngineCaps(
        "verl",
        rounds="verl's agent loop takes one count per prompt and step (a second dispatch of a uid overwrites the "
        "first one's sessions)",
        draws="verl's dataloader fixes the prompts of a batch",
        skips="verl's agent loop runs at least one session per prompt",
        singles="verl's GRPO gives a lone rollout the advantage r / (1 + 1e-6) where knapsack-rl gives 0",
        drops="verl trains on every rollout it generates",
    ),
)


def engines_for(rule: Rule) -> list[str]:
    """Names of the engines that can run ``rule``, sorted."""
    needs = rule.needs()
    return [name for name in ENGINES.names() if not ENGINES.get(name).refusals(needs)]


def check_runs_on(rule: Rule, engine: str) -> None:
    """Raise a one-line ValueError if ``engine`` cannot run ``rule`` (the reason, and who can)."""
    refusals = ENGINES.get(engine).refusals(rule.needs())
    if refusals:
        can = ", ".join(engines_for(rule)) or "none"
        raise ValueError(
            f"rule {rule.name!r} cannot run in {engine}: it {'; it '.join(refusals)}; engines that can run it: {can}"
        )


class OneRound:
    """A rule driven by an engine that generates once per step (TRL, verl): plan, generate, observe.

    Args:
        rule: the rule; refused (:func:`check_runs_on`) unless ``engine`` can run it.
        engine: the engine's name in :data:`ENGINES`.

    :meth:`plan` is the rule's first round on the step's batch (checked against the rule's limits: the
    counts, their total, the bounds); :meth:`observe` gives the rule the rewards of the rollouts the engine
    generated and scored (a rollout the engine could not score may be missing), ends the step with
    :meth:`~knapsack_rl.rules.interface.Rule.finish` and returns the step's metrics. Plans and
    observations pair up by order; an engine that plans a new batch before observing the last one (verl's
    asynchronous trainers) observes each batch with the spec it was planned with.
    """

    def __init__(self, rule: Rule, engine: str) -> None:
        check_runs_on(rule, engine)
        self.rule, self.engine = rule, engine

    def plan(self, spec: StepSpec) -> NDArray[np.int64]:
        """(M,) int64 rollouts for each prompt of ``spec``; they sum to ``spec.total_budget`` for a rule
        with a fixed total. Raises ValueError naming the rule if its round breaks its limits or asks for
        what this engine cannot do."""
        limits = self.rule.limits(spec)
        self.rule.begin(spec)
        log = StepLog(spec)
        rnd = self.rule.next_round(log)
        if rnd is None or rnd.draw:
            what = "no round" if rnd is None else f"a draw of {rnd.draw} prompts"
            raise ValueError(
                f"rule {self.rule.name!r} answered {what} in {self.engine}, which needs one round of counts"
            )
        counts = check_round(self.rule, log, limits, rnd)  # run_step's checks: shape, >= 0, total, bound
        _check_one_round(self.rule, self.engine, counts, limits)
        return counts

    def observe(self, spec: StepSpec, prompt_index: ArrayLike, rewards: ArrayLike) -> dict[str, float]:
        """End the step planned as ``spec``: the rewards in [0, 1] of its rollouts; returns its metrics.

        Args:
            spec: the step's spec, as passed to :meth:`plan`.
            prompt_index: (R,) position in ``spec.prompt_ids`` of each scored rollout, in any order.
            rewards: (R,) reward of each rollout, in [0, 1] (map an engine's own with
                :func:`knapsack_rl.core.tracker.to_success`).
        """
        idx = np.asarray(prompt_index, dtype=np.int64).reshape(-1)
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if idx.shape != r.shape:
            raise ValueError(f"prompt_index and rewards must have one entry per rollout; got {idx.shape}, {r.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= spec.size):
            raise ValueError(
                f"prompt_index must hold positions in [0, {spec.size}); got {int(idx.min())}..{int(idx.max())}"
            )
        order = np.argsort(idx, kind="stable")  # the log lists rollouts candidate by candidate
        log = StepLog(spec)
        log.add_rollouts(np.bincount(idx, minlength=spec.size).astype(np.int64), r[order])
        log.rounds = log.generations = 1
        selection = self.rule.finish(log)
        if not np.asarray(selection.train, dtype=bool).all():
            raise ValueError(f"rule {self.rule.name!r} dropped rollouts, which {self.engine} cannot do")
        return step_log_metrics(log, selection)

    def state_dict(self) -> dict[str, Any]:
        """The rule's state (plain data)."""
        return self.rule.state_dict()

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        """Restore the rule's state (refused, naming ``source``, if it is not this rule's)."""
        self.rule.load_state_dict(state, source=source)


def _check_one_round(rule: Rule, engine: str, counts: NDArray[np.int64], limits: Limits) -> None:
    """What :func:`~knapsack_rl.rules.interface.run_step` checks at a step's end, for the one round: a fixed
    total met, the lower bound held; and the engine's caps (counts of 0 or 1)."""
    total, given = int(counts.sum()), counts[counts > 0]
    if limits.fixed and total != limits.total:
        raise ValueError(f"rule {rule.name!r} promises exactly {limits.total} rollouts per step; it planned {total}")
    if given.size and given.min() < limits.low:
        raise ValueError(f"rule {rule.name!r}: a prompt got {int(given.min())} rollouts; its bound is {limits.low}")
    caps = ENGINES.get(engine)
    for need, bad in (("skips", counts == 0), ("singles", counts == 1)):
        reason = getattr(caps, need)
        if reason is not None and bad.any():
            raise ValueError(f"rule {rule.name!r} gave a prompt {int(counts[bad][0])} rollouts in {engine}: {reason}")


__all__ = ["ENGINES", "NEEDS_TEXT", "EngineCaps", "OneRound", "check_runs_on", "engines_for"]
