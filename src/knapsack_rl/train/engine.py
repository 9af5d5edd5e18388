"""The reference trainer as an engine of :mod:`knapsack_rl.rules`: a prompt stream and batched generation.

Every arm of the trainer (uniform, knapsack, two-phase, Reinforce-Ada-like, Pilot-Commit-like, DAPO,
GRESO-like, ...) runs through :func:`knapsack_rl.rules.run_step` on a :class:`TrainerEngine`:

    spec = engine.begin_step(M, step=t, n=n, timer=timer)     # the step's batch from the stream
    log, selection = run_step(rule, spec, engine)             # rounds: the rule plans, the engine
                                                              # generates and scores
    rollouts = engine.end_step(log)                           # every generated rollout, one batch
    trained = select_rollouts(rollouts, selection.train)      # what the update sees

:class:`~knapsack_rl.rules.stream.PromptStream` (shared with the simulator) is the data order: a cursor
over a seeded permutation per epoch, so that rules
that draw more prompts than the batch (DAPO's refill, GRESO-like replacements, Pilot-Commit-like
draws) read the same stream, and the cursor is checkpointed as plain data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from knapsack_rl.core.tracker import Tracker
from knapsack_rl.rollout.generate import Rollouts, concat_rollouts
from knapsack_rl.rules import KnapsackRule, Rule, RuleSetup, StepLog, StepSpec, check_runs_on, make_rule
from knapsack_rl.rules.stream import PromptStream
from knapsack_rl.tasks.base import PromptSet
from knapsack_rl.train.config import TrainConfig


@dataclass
class StepBatch:
    """Prompts of the training set: their positions in it and their ids / texts."""

    index: np.ndarray
    prompts: PromptSet


class PhaseTimer:
    """Accumulates wall seconds per named phase into ``timing_s/<phase>``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to phase ``name``."""
        key = f"timing_s/{name}"
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def total(self, *names: str) -> float:
        """Seconds spent so far in the named phases."""
        return sum(self.seconds.get(f"timing_s/{name}", 0.0) for name in names)


Generate = Callable[[StepBatch, NDArray[np.int64]], Rollouts]
Score = Callable[[StepBatch, Rollouts], NDArray[np.float64]]


class TrainerEngine:
    """:class:`knapsack_rl.rules.Engine` of the reference trainer.

    ``generate(batch, counts)`` is the trainer's batched KV-cache sampler and ``score(batch, rollouts)``
    the task's contained scorer. A round generates, in one call, exactly ``counts[k]`` rollouts of
    every candidate k over the step's distinct candidate prompts (the batch, then every prompt drawn
    later, in order; a prompt drawn twice in one step, in two passes, is two candidates sampled as one
    prompt), then orders them candidate by candidate (``np.repeat(arange(K), counts)``, what
    :class:`~knapsack_rl.rules.StepLog` expects) with ``prompt_index`` = the candidate index. Rewards are
    the task's, in [0, 1]. The rounds' rollouts are kept and joined by :meth:`end_step`.
    """

    def __init__(self, train_set: PromptSet, stream: PromptStream, generate: Generate, score: Score) -> None:
        if len(train_set) != stream.size:
            raise ValueError(f"the stream covers {stream.size} prompts but the training set has {len(train_set)}")
        self.train_set, self.stream = train_set, stream
        self._generate, self._score = generate, score
        self._index = np.zeros(0, dtype=np.int64)  # (K,) training-set position of each candidate
        self._slot = np.zeros(0, dtype=np.int64)  # (K,) candidate -> its distinct prompt in self._batch
        self._batch = StepBatch(self._index, train_set.subset([]))  # the distinct candidate prompts (U,)
        self._parts: list[Rollouts] = []
        self._timer = PhaseTimer()

    def begin_step(self, m: int, *, step: int, n: int, timer: PhaseTimer, budget_left: int | None = None) -> StepSpec:
        """Take the step's batch of m prompts from the stream; the step's budget is ``n * m``
        (``budget_left``: the run's rollouts left, see :class:`~knapsack_rl.rules.StepSpec`)."""
        index, epoch = self.stream.batch(m)
        self._set_candidates(index)
        self._parts, self._timer = [], timer
        ids = self._batch.prompts.ids
        return StepSpec(ids, epoch=epoch, step=step, n=n, total_budget=n * m, budget_left=budget_left)

    def _set_candidates(self, index: NDArray[np.int64]) -> None:
        self._index = np.asarray(index, dtype=np.int64)
        _, first, slot = np.unique(self._index, return_index=True, return_inverse=True)
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)  # distinct prompts in first-seen order
        self._slot = rank[slot]
        distinct = self._index[np.sort(first)]
        self._batch = StepBatch(distinct, self.train_set.subset(distinct))

    # ------------------------------------------------------------ Engine protocol
    def draw(self, k: int) -> tuple[NDArray[Any], NDArray[np.int64]]:
        """The next k prompts of the stream (ids (k,), epochs (k,)); they join the step's candidates."""
        index, epochs = self.stream.draw(k)
        self._set_candidates(np.concatenate([self._index, index]))
        return self.train_set.ids[index], epochs

    def generate(self, log: StepLog, counts: NDArray[np.int64]) -> NDArray[np.float64]:
        """``counts[k]`` rollouts of candidate k, scored; rewards (sum(counts),) candidate by candidate."""
        if log.size != self._index.size:
            raise RuntimeError(f"the step log has {log.size} candidates; the engine holds {self._index.size}")
        per_prompt = np.bincount(self._slot, weights=counts, minlength=len(self._batch.prompts)).astype(np.int64)
        with self._timer.phase("generate"):
            rollouts = self._generate(self._batch, per_prompt)
        with self._timer.phase("score"):
            rewards = np.asarray(self._score(self._batch, rollouts), dtype=np.float64)
        if self._slot.size != per_prompt.size:  # a prompt is two candidates: rows to candidate order
            rows = candidate_rows(self._slot, counts)
            rollouts = take_rollouts(rollouts, rows, prompt_index=np.repeat(np.arange(counts.size), counts))
            rewards = rewards[rows]
        self._parts.append(rollouts)
        return rewards

    # ----------------------------------------------------------------- the step
    def end_step(self, log: StepLog, pad_id: int) -> Rollouts | None:
        """Every rollout the step generated as one batch (``prompt_index`` = candidate index, the order
        of ``log.rewards``); None when the step generated nothing."""
        if not self._parts:
            return None
        rollouts = concat_rollouts(self._parts, pad_id)
        if not np.array_equal(rollouts.prompt_index.numpy(), log.rollout_candidate):
            step = log.spec.step
            raise RuntimeError(f"the engine generated {len(rollouts)} rollouts; step {step} logged {log.spent}")
        return rollouts


def candidate_rows(slot: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Rows of a generation over distinct prompts, reordered candidate by candidate.

    The generation lists prompt u's ``sum(counts[slot == u])`` rollouts together, u = 0, 1, ...; the
    candidates of one prompt take them in candidate order. Returns (R,) the source row of each rollout
    in the order ``np.repeat(arange(K), counts)``. Shapes: ``slot``, ``counts`` (K,).
    """
    order = np.argsort(slot, kind="stable")  # candidates grouped by prompt, as the generation lists them
    start = np.empty(slot.size, dtype=np.int64)
    start[order] = np.cumsum(counts[order]) - counts[order]  # (K,) first source row of each candidate
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)  # (R,) j of rollout
    out: NDArray[np.int64] = np.repeat(start, counts) + within
    return out


def take_rollouts(
    rollouts: Rollouts, rows: NDArray[np.int64], *, prompt_index: NDArray[np.int64] | None = None
) -> Rollouts:
    """The rollouts at ``rows`` (R',) in that order; ``prompt_index`` (R',) replaces theirs when given."""
    index = torch.as_tensor(rows, dtype=torch.long)
    return Rollouts(
        prompt_index=rollouts.prompt_index[index] if prompt_index is None else torch.as_tensor(prompt_index),
        input_ids=rollouts.input_ids[index],
        attention_mask=rollouts.attention_mask[index],
        response_mask=rollouts.response_mask[index],
        prompt_len=rollouts.prompt_len,
        texts=[rollouts.texts[i] for i in index.tolist()],
    )


def select_rollouts(rollouts: Rollouts, keep: NDArray[np.bool_]) -> Rollouts:
    """The rollouts where ``keep`` (R,) is True (all of them, unchanged, when every entry is)."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (len(rollouts),):
        raise ValueError(f"keep must have shape ({len(rollouts)},); got {keep.shape}")
    return rollouts if keep.all() else take_rollouts(rollouts, np.flatnonzero(keep))


def build_rule(config: TrainConfig, *, tracker: Tracker | None = None) -> Rule:
    """The run's rule: ``config.rule`` from the registry (:func:`knapsack_rl.rules.make_rule`), told the
    run's n, M, seed and knapsack settings.

    ``tracker`` (a cold start from saved estimates) seeds the Planner of a rule that has one (``knapsack``,
    ``uniform``, ``knapsack:<preset>``); any other rule builds its own state, and a tracker raises ValueError.
    """
    setup = RuleSetup(config.n, config.prompts_per_step, config.seed, knapsack=config.knapsack)
    rule = make_rule(config.rule, setup)
    check_runs_on(rule, "trainer")
    if tracker is None:
        return rule
    if not isinstance(rule, KnapsackRule):
        raise ValueError(f"tracker_init seeds the Planner of a knapsack rule; rule {config.rule!r} has none")
    seeded = KnapsackRule(rule.config, tracker=tracker)
    seeded.name = rule.name
    return seeded
