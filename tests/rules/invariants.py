"""The invariants every rule promises, checked from a record of its rounds (shared by the simulator's and
the trainer's rule tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from knapsack_rl.rules import Limits, Round, Rule, Selection, StepLog, StepSpec


@dataclass
class StepRecord:
    """What one step of a rule did: its limits, every round's counts and draws, the end state."""

    limits: Limits
    rounds: list[tuple[np.ndarray, int]] = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    spent: int = 0
    train: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0))
    candidate: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    epoch: int = 0


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
        rec.ids, rec.rewards, rec.candidate = log.ids.copy(), log.rewards.copy(), log.rollout_candidate.copy()
        rec.epoch = log.spec.epoch
        return sel

    def state_dict(self) -> dict[str, Any]:
        return self.rule.state_dict()

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        self.rule.load_state_dict(state, source=source)


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
