"""The one interface every rollout-allocation rule implements: a step as rounds (NumPy only).

Engine-agnostic: nothing here knows an engine. The simulator (:class:`knapsack_rl.sim.StepEnv`) and
the reference trainer (:class:`knapsack_rl.train.engine.TrainerEngine`) drive the same rules by
implementing the two methods of :class:`Engine`.

**A step is one or more rounds.** The engine starts a step with the M prompts of its batch
(:class:`StepSpec`). Each round the rule reads what the step produced so far (:class:`StepLog`: the
candidate prompts, how many rollouts each got, their rewards) and answers a :class:`Round`: how many
rollouts each candidate gets *now*, and how many new prompts the engine should add to the candidates
afterwards. The engine generates and scores them and records them in the log. The rule ends the step
by answering ``None`` and then says which rollouts are trained on (:meth:`Rule.finish` ->
:class:`Selection`). **Every generated rollout counts against the step's budget**, trained on or not.

    spec = StepSpec(prompt_ids, epoch=e, step=t, n=8, total_budget=8 * M)
    log, selection = run_step(rule, spec, engine)      # rounds until the rule ends the step
    train = selection.train                             # (R,) bool over log.rewards
    metrics = step_log_metrics(log, selection)          # the same keys for every rule

Each rule declares :class:`Limits` (the most rollouts per step, whether that total is exact, and the
per-prompt bounds); :func:`run_step` enforces them on every round, so a rule cannot overspend.
Rewards are in [0, 1] (1 = success; an engine maps its own with
:func:`knapsack_rl.core.tracker.to_success`). A rule's state between steps is plain data
(:meth:`Rule.state_dict`), so an engine's checkpoint can hold it.

**What each engine allows** is declared once, in :mod:`knapsack_rl.rules.engines` (``knapsack-rl rules``
prints the table): rounds within a step and draws beyond the batch need an engine that can generate, look at
the rewards and generate again before the update (the simulator and the reference trainer, through
:func:`run_step`); TRL and verl generate once per step and run any one-round rule through
:class:`~knapsack_rl.rules.engines.OneRound` (verl also refuses counts of 0 or 1). A rule says what it needs
with :meth:`Rule.needs`; an engine that cannot meet it refuses the rule when the config is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.allocate import BUCKET_NAMES
from knapsack_rl.core.groups import step_metrics
from knapsack_rl.core.validate import check_int


@dataclass(frozen=True)
class StepSpec:
    """What the engine tells every rule when a step starts.

    Attributes:
        prompt_ids: (M,) the step's batch of prompt ids (ints or strs), in the engine's order.
        epoch: 0-based pass over the training prompts (a batch that straddles two passes: the later).
        step: 0-based global step.
        n: uniform rollouts per prompt N (the baseline's group size).
        total_budget: rollouts the step may generate, B (``n * M`` for every built-in rule).
        prompt_epochs: (M,) the pass each prompt was drawn in (default: ``epoch`` for all).
        budget_left: rollouts the run may still generate (None: no limit). A rule allowed more than
            B per step (DAPO) stops at ``max(B, budget_left)`` (:meth:`spend_cap`), so that a run
            ends at its total rollouts, not up to ``max_rounds x B`` past it.
    """

    prompt_ids: NDArray[Any]
    epoch: int
    step: int
    n: int
    total_budget: int
    prompt_epochs: NDArray[np.int64] | None = None
    budget_left: int | None = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.prompt_ids)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"prompt_ids must be a non-empty 1-D array; got shape {ids.shape}")
        check_int("epoch", self.epoch, low=0)
        check_int("step", self.step, low=0)
        check_int("n", self.n, low=1)
        check_int("total_budget", self.total_budget, low=0)
        epochs = np.full(ids.size, self.epoch, np.int64) if self.prompt_epochs is None else self.prompt_epochs
        epochs = np.asarray(epochs, dtype=np.int64)
        if epochs.shape != ids.shape:
            raise ValueError(f"prompt_epochs must have shape {ids.shape}; got {epochs.shape}")
        if self.budget_left is not None:
            check_int("budget_left", self.budget_left, low=0)
        object.__setattr__(self, "prompt_ids", ids)
        object.__setattr__(self, "prompt_epochs", epochs)

    def spend_cap(self, total: int) -> int:
        """The most a rule whose own limit is ``total`` may generate in this step:
        ``min(total, max(total_budget, budget_left))`` (``total`` without ``budget_left``)."""
        if self.budget_left is None:
            return total
        return min(total, max(self.total_budget, self.budget_left))

    @property
    def size(self) -> int:
        """Prompts in the batch, M."""
        return int(self.prompt_ids.size)


@dataclass(frozen=True)
class Limits:
    """What a rule promises about every step; :func:`run_step` enforces it.

    Attributes:
        total: most rollouts the step may generate.
        fixed: the rule generates exactly ``total`` rollouts every step.
        low: fewest rollouts of a candidate that gets any (candidates may also get 0: skipped).
        high: most rollouts one candidate may get in the step.
    """

    total: int
    fixed: bool
    low: int
    high: int

    def __post_init__(self) -> None:
        check_int("total", self.total, low=0)
        check_int("low", self.low, low=1)
        check_int("high", self.high, low=self.low)


@dataclass(frozen=True)
class Needs:
    """What a rule needs of the engine that runs it; checked against the engine's
    :class:`~knapsack_rl.rules.engines.EngineCaps` when a config is read (every field False: a rule that
    answers one round of counts >= 2 for the step's batch and trains on every rollout runs everywhere)."""

    rounds: bool = False
    """Generates in more than one round within a step (it reads rewards before deciding on more)."""
    draws: bool = False
    """Adds prompts beyond the step's batch."""
    skips: bool = False
    """May give a prompt of the batch 0 rollouts."""
    singles: bool = False
    """May give a prompt exactly 1 rollout (a group without a baseline)."""
    drops: bool = False
    """Trains on a subset of the rollouts it generated (the rest were paid for and dropped)."""


@dataclass(frozen=True)
class Round:
    """A rule's answer for one round.

    Attributes:
        counts: (K,) rollouts to generate now for each candidate so far (K = ``log.size``); zeros for
            a round that only draws.
        draw: new candidate prompts the engine appends to the step after this round's generation.
    """

    counts: NDArray[np.int64]
    draw: int = 0


@dataclass(frozen=True)
class Selection:
    """How a rule ends a step: which rollouts are trained on, and its metrics.

    Attributes:
        train: (R,) bool, True for the rollouts of the trained batch (the rest were generated and paid
            for, then dropped).
        metrics: slash-named floats the rule reports for the step (e.g. the Planner's ``alloc/*``).
    """

    train: NDArray[np.bool_]
    metrics: dict[str, float] = field(default_factory=dict)


class StepLog:
    """Everything a step has produced so far; the engine appends, rules read.

    Attributes:
        spec: the step's :class:`StepSpec`.
        ids: (K,) candidate prompt ids (the batch, then every prompt drawn later, in order).
        epochs: (K,) the pass each candidate was drawn in.
        counts: (K,) int64 rollouts generated per candidate so far.
        successes: (K,) sum of the candidate's rewards; ``positives`` (K,): its rewards >= 1/2.
        rollout_candidate: (R,) candidate index of each rollout, in generation order.
        rewards: (R,) reward of each rollout.
        rounds: rounds completed; ``generations``: those that generated rollouts; ``spent``: rollouts
            generated (``counts.sum()``).
    """

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec
        self.ids: NDArray[Any] = spec.prompt_ids
        self.epochs: NDArray[np.int64] = np.asarray(spec.prompt_epochs, dtype=np.int64)
        self.counts = np.zeros(spec.size, dtype=np.int64)
        self.successes = np.zeros(spec.size)
        self.positives = np.zeros(spec.size, dtype=np.int64)
        self._rmin = np.full(spec.size, np.inf)
        self._rmax = np.full(spec.size, -np.inf)
        self.rollout_candidate = np.zeros(0, dtype=np.int64)
        self.rewards = np.zeros(0)
        self.rounds = 0
        self.generations = 0
        self.spent = 0

    @property
    def size(self) -> int:
        """Candidates so far, K."""
        return int(self.ids.size)

    def varied(self) -> NDArray[np.bool_]:
        """(K,) whether the candidate's rewards so far differ (its group carries a gradient)."""
        out: NDArray[np.bool_] = self._rmax > self._rmin
        return out

    def mean(self) -> NDArray[np.float64]:
        """(K,) mean reward of each candidate so far (NaN without rollouts)."""
        out: NDArray[np.float64] = np.divide(
            self.successes, self.counts, out=np.full(self.size, np.nan), where=self.counts > 0
        )
        return out

    def add_candidates(self, prompt_ids: ArrayLike, epochs: ArrayLike) -> None:
        """Append drawn prompts as new candidates (no rollouts yet)."""
        ids, ep = np.asarray(prompt_ids), np.asarray(epochs, dtype=np.int64)
        if ids.ndim != 1 or ep.shape != ids.shape:
            raise ValueError(f"drawn prompt_ids and epochs must be 1-D of equal shape; got {ids.shape}, {ep.shape}")
        k = ids.size
        self.ids = np.concatenate([self.ids, ids]) if ids.dtype == self.ids.dtype else _concat_ids(self.ids, ids)
        self.epochs = np.concatenate([self.epochs, ep])
        self.counts = np.concatenate([self.counts, np.zeros(k, dtype=np.int64)])
        self.successes = np.concatenate([self.successes, np.zeros(k)])
        self.positives = np.concatenate([self.positives, np.zeros(k, dtype=np.int64)])
        self._rmin = np.concatenate([self._rmin, np.full(k, np.inf)])
        self._rmax = np.concatenate([self._rmax, np.full(k, -np.inf)])

    def add_rollouts(self, counts: NDArray[np.int64], rewards: ArrayLike) -> None:
        """Record one round: ``counts[k]`` new rollouts of candidate k, rewards in candidate order.

        ``rewards`` (sum(counts),) lists candidate 0's new rollouts first, then candidate 1's, ...
        (the order of ``np.repeat(arange(K), counts)``); each must be in [0, 1].
        """
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        total = int(counts.sum())
        if r.size != total:
            raise ValueError(f"the engine returned {r.size} rewards for {total} rollouts")
        if r.size and not (np.all(r >= 0.0) and np.all(r <= 1.0)):
            j = int(np.flatnonzero((r < 0.0) | (r > 1.0) | np.isnan(r))[0])
            raise ValueError(f"rewards must be in [0, 1]; rewards[{j}]={float(r[j])!r}")
        cand = np.repeat(np.arange(self.size), counts)  # (r,) candidate of each new rollout
        self.counts += counts
        self.successes += np.bincount(cand, weights=r, minlength=self.size)
        self.positives += np.bincount(cand, weights=(r >= 0.5), minlength=self.size).astype(np.int64)
        np.minimum.at(self._rmin, cand, r)
        np.maximum.at(self._rmax, cand, r)
        self.rollout_candidate = np.concatenate([self.rollout_candidate, cand])
        self.rewards = np.concatenate([self.rewards, r])
        self.spent += total


def _concat_ids(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    """Concatenate id arrays of different dtypes (e.g. ints and strs) as an object array."""
    return np.concatenate([a.astype(object), b.astype(object)])


class Rule(ABC):
    """An allocation rule: per round, rollouts per candidate prompt from what the step has seen.

    A rule holds its own state across the steps of one run (a Planner, a skip list, ...). Subclasses
    implement :meth:`limits` and :meth:`next_round`; :meth:`begin` and :meth:`finish` have defaults.
    """

    name: str = "rule"

    @abstractmethod
    def limits(self, spec: StepSpec) -> Limits:
        """What this rule promises for a step of this shape (enforced by :func:`run_step`)."""

    def needs(self) -> Needs:
        """What this rule needs of an engine (default: nothing beyond one round on the batch)."""
        return Needs()

    def begin(self, spec: StepSpec) -> None:
        """Called once when a step starts, before the first round (default: nothing)."""
        del spec

    @abstractmethod
    def next_round(self, log: StepLog) -> Round | None:
        """The next round, or None to end the step."""

    def finish(self, log: StepLog) -> Selection:
        """End the step: the trained rollouts (default: all) and the rule's metrics (default: none)."""
        return Selection(np.ones(log.rewards.size, dtype=bool))

    def state_dict(self) -> dict[str, Any]:
        """The rule's state between steps as plain data (ints, floats, strs, bytes, lists, dicts), for a
        checkpoint. Default: none (the rule keeps nothing from one step to the next)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        """Restore :meth:`state_dict` output (called between steps).

        Raises:
            ValueError: naming ``source``, if ``state`` is not this rule's; nothing is changed.
        """
        if not isinstance(state, dict) or state:
            keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{source}: rule {self.name!r} keeps no state between steps; got {keys}")


class Engine(Protocol):
    """What :func:`run_step` needs from a rollout engine."""

    def generate(self, log: StepLog, counts: NDArray[np.int64]) -> NDArray[np.float64]:
        """Generate ``counts[k]`` more rollouts of candidate ``log.ids[k]`` (its ``log.counts[k]``
        earlier ones excluded) and return their rewards in [0, 1], candidate by candidate."""
        ...

    def draw(self, k: int) -> tuple[NDArray[Any], NDArray[np.int64]]:
        """The next k prompts of the engine's stream: ids (k,) and the pass each was drawn in (k,)."""
        ...


def run_step(rule: Rule, spec: StepSpec, engine: Engine, *, max_rounds: int = 10_000) -> tuple[StepLog, Selection]:
    """Run one step of ``rule`` on ``engine``: rounds until the rule ends it, then its selection.

    Every round is checked against the rule's :class:`Limits` before anything is generated: counts
    (K,) non-negative integers, the step's total at most ``limits.total`` (capped by
    :meth:`StepSpec.spend_cap` unless the rule's total is fixed), no candidate above
    ``limits.high``; at the end, every candidate with rollouts has at least ``limits.low`` and a
    ``fixed`` rule has spent exactly ``limits.total``. A violation raises ValueError naming the rule.
    """
    limits = rule.limits(spec)
    limits = replace(limits, total=spec.spend_cap(limits.total)) if not limits.fixed else limits
    log = StepLog(spec)
    rule.begin(spec)
    for _ in range(max_rounds):
        rnd = rule.next_round(log)
        if rnd is None:
            selection = rule.finish(log)
            _check_end(rule, log, limits, selection)
            return log, selection
        counts = check_round(rule, log, limits, rnd)
        if counts.any():
            log.add_rollouts(counts, engine.generate(log, counts))
            log.generations += 1
        if rnd.draw:
            ids, epochs = engine.draw(check_int("draw", rnd.draw, low=0))
            log.add_candidates(ids, epochs)
        log.rounds += 1
    raise RuntimeError(f"rule {rule.name!r} did not end step {spec.step} within max_rounds={max_rounds}")


def check_round(rule: Rule, log: StepLog, limits: Limits, rnd: Round) -> NDArray[np.int64]:
    """Validate one round against the log and the rule's limits; returns the counts as int64 (K,)."""
    counts = np.asarray(rnd.counts)
    if counts.shape != (log.size,) or counts.dtype.kind not in "iu":
        raise ValueError(
            f"rule {rule.name!r}: round counts must be integers of shape ({log.size},); "
            f"got {counts.dtype} {counts.shape}"
        )
    counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError(f"rule {rule.name!r}: round counts must be >= 0; got min {int(counts.min())}")
    total = log.spent + int(counts.sum())
    if total > limits.total:
        raise ValueError(f"rule {rule.name!r}: the step would generate {total} rollouts; its limit is {limits.total}")
    after = log.counts + counts
    if after.size and after.max() > limits.high:
        raise ValueError(
            f"rule {rule.name!r}: a candidate would get {int(after.max())} rollouts; its bound is {limits.high}"
        )
    return counts


def _check_end(rule: Rule, log: StepLog, limits: Limits, selection: Selection) -> None:
    """The step's end: fixed totals met, lower bounds held, a train mask of the right shape."""
    if limits.fixed and log.spent != limits.total:
        raise ValueError(
            f"rule {rule.name!r} promises exactly {limits.total} rollouts per step; "
            f"step {log.spec.step} generated {log.spent}"
        )
    given = log.counts[log.counts > 0]
    if given.size and given.min() < limits.low:
        raise ValueError(f"rule {rule.name!r}: a candidate got {int(given.min())} rollouts; its bound is {limits.low}")
    train = np.asarray(selection.train)
    if train.shape != log.rewards.shape or train.dtype != np.bool_:
        raise ValueError(
            f"rule {rule.name!r}: train must be bool of shape {log.rewards.shape}; got {train.dtype} {train.shape}"
        )


def step_log_metrics(log: StepLog, selection: Selection, *, success_threshold: float = 0.5) -> dict[str, float]:
    """One step's metrics for any rule, with one key set for every rule (the rule's own metrics win).

    - ``train/*``: :func:`knapsack_rl.core.groups.step_metrics` over the *trained* rollouts
      (``selection.train``), grouped by candidate (success: reward >= ``success_threshold``);
    - ``alloc/budget_{max,min,mean}`` over the candidates given rollouts, ``alloc/budget_total`` (the
      rollouts generated), ``alloc/num_above_n`` (candidates given more than ``spec.n``); the keys only
      a Planner fills get neutral values: ``alloc/fallback_fired``, ``alloc/overflow``,
      ``alloc/probe_rollouts``, ``alloc/solve_s`` 0; ``alloc/objective``, ``alloc/<bucket>_ratio`` and
      ``tracker/prompts`` NaN (no knapsack objective, estimate buckets or tracker);
    - ``train/rollouts_generated``: rollouts generated in the step, trained on or not (what was paid);
    - ``train/generation_rounds``: rounds that generated rollouts (a proxy for the step's latency);
    - ``train/candidates``: prompts the step considered (its batch and every prompt drawn later).

    ``selection.metrics`` then replaces any of these (a knapsack rule reports the Planner's ``alloc/*``
    and ``train/*`` from :meth:`knapsack_rl.Planner.observe`, over every rollout, all trained).
    """
    train = np.asarray(selection.train, dtype=bool)
    out = step_metrics(log.rewards[train], log.rollout_candidate[train], success_threshold=success_threshold)
    given = log.counts[log.counts > 0]
    out.update({
        "alloc/budget_max": float(given.max(initial=0)),
        "alloc/budget_min": float(given.min()) if given.size else 0.0,
        "alloc/budget_mean": float(given.mean()) if given.size else 0.0,
        "alloc/budget_total": float(log.spent),
        "alloc/num_above_n": float((given > log.spec.n).sum()),
        "alloc/fallback_fired": 0.0,
        "alloc/overflow": 0.0,
        "alloc/objective": float("nan"),
        "alloc/solve_s": 0.0,
        "alloc/probe_rollouts": 0.0,
        "tracker/prompts": float("nan"),
        **{f"alloc/{name}_ratio": float("nan") for name in BUCKET_NAMES},
    })  # fmt: skip
    out.update(selection.metrics)
    out["train/rollouts_generated"] = float(log.spent)
    out["train/generation_rounds"] = float(log.generations)
    out["train/candidates"] = float(log.size)
    return out
