"""The built-in allocation rules behind one interface (:mod:`knapsack_rl.rules.interface`) and one registry.

Every rule is engine-agnostic (NumPy and :mod:`knapsack_rl.core` only): the simulator drives them, and
so does the reference trainer (``knapsack-rl compare --arms uniform,knapsack,reinforce-ada,dapo``).
Knapsack rules talk to the method only through :class:`knapsack_rl.Planner`. Register a factory
``fn(setup) -> Rule``::

    @register_rule("mine")
    def _make(setup: RuleSetup) -> Rule:
        return MyRule(...)

A rule that keeps state between steps (a tracker, a skip list) returns it as plain data from
:meth:`~knapsack_rl.rules.interface.Rule.state_dict`, so that a checkpoint can hold it. Which engines
allow rounds within a step (TRL does not; verl's hooks do not) is in :mod:`knapsack_rl.rules.interface`.

Built-in rules (B = N x M rollouts per step unless said otherwise); one name per rule in every engine
and command:

=====================  =======================================================================
``uniform``            GRPO: N rollouts for each of the M prompts (tracked through the Planner with
                       ``allocate=False``, so it logs what knapsack logs).
``knapsack``           Knapsack RL with the run's own knapsack settings (a preset and overrides).
``knapsack:<preset>``  Knapsack RL with a core preset whatever the run's settings (``recipe``: the
                       authors' settings; ``project``: this project's; ``signal``).
``knapsack:two-phase`` ``project`` with two-phase planning from the first step: 4 probe rollouts
                       per unestimated prompt, then the rest of B from what the probe saw.
``reinforce-ada``      Reinforce-Ada-like sequential sampling in rounds, balanced exit.
``reinforce-ada-pos``  the same with the positive-focused exit.
``pilot-commit``       Pilot-Commit-like: pilot rollouts, then commit the rest to prompts whose
                       pilot shows reward variance; solved prompts are evicted.
``dapo``               DAPO dynamic sampling: rounds of M x N until M groups with signal; every
                       generated rollout counts (up to ``max_rounds`` x B per step).
``greso``              GRESO-like pre-rollout skipping of prompts whose last group had no signal.
``uncertainty``        E3-like: counts proportional to the estimated reward std.
``coba``               CoBA-RL-like capability-oriented allocation (:mod:`knapsack_rl.rules.coba`).
=====================  =======================================================================

What each rule needs of an engine (rounds within a step, draws beyond the batch, counts of 0 or 1,
dropped rollouts) is its :meth:`~knapsack_rl.rules.interface.Rule.needs`; which engine can run it is
:mod:`knapsack_rl.rules.engines` (``knapsack-rl rules`` prints the table).

Any :class:`~knapsack_rl.core.config.KnapsackConfig` runs as a rule with :class:`KnapsackRule`
(``KnapsackRule(KnapsackConfig.preset("project", posterior=True))``) or is registered under a name
with :func:`register_knapsack`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.config import KnapsackConfig, preset_names
from knapsack_rl.core.planner import Planner
from knapsack_rl.core.registry import Registry
from knapsack_rl.core.tracker import Tracker, TrackerConfig
from knapsack_rl.core.validate import check_choice, check_int, check_prompt_ids, check_real, check_unique_ids
from knapsack_rl.rules.interface import Limits, Needs, Round, Rule, Selection, StepLog, StepSpec
from knapsack_rl.rules.keyed import SKIP_STREAM, id_keys, keyed_uniform


@dataclass(frozen=True)
class RuleSetup:
    """What a rule factory is told about the run: the step shape, the run's seed and knapsack settings."""

    n: int = 8
    """Uniform rollouts per prompt N (the step's budget is N x M for every built-in rule)."""
    prompts_per_step: int = 256
    """Prompts per step M."""
    seed: int = 0
    """The run's seed (rules that flip coins key them on it)."""
    knapsack: KnapsackConfig | None = None
    """The run's knapsack settings, for the rules that plan through the Planner (``knapsack``, ``uniform``)
    and for how every engine maps its rewards to successes (``reward_format``, ``success_threshold``).
    None: the ``project`` preset with this ``n``. Its ``n`` must be this ``n``."""

    def __post_init__(self) -> None:
        check_int("n", self.n, low=1)
        check_int("prompts_per_step", self.prompts_per_step, low=1)
        check_int("seed", self.seed, low=0)
        if self.knapsack is None:
            object.__setattr__(self, "knapsack", KnapsackConfig.preset("project", n=self.n))
        elif not isinstance(self.knapsack, KnapsackConfig):
            raise ValueError(f"knapsack must be a KnapsackConfig; got {type(self.knapsack).__name__}")
        elif self.knapsack.allocation.n != self.n:
            raise ValueError(
                f"knapsack's n must be the run's n; got n={self.n}, knapsack n={self.knapsack.allocation.n}"
            )

    @property
    def settings(self) -> KnapsackConfig:
        """The run's knapsack settings (never None after construction)."""
        assert self.knapsack is not None
        return self.knapsack


RuleFactory = Callable[[RuleSetup], Rule]
RULES: Registry[RuleFactory] = Registry("rule", "rule")


def register_rule(name: str) -> Callable[[RuleFactory], RuleFactory]:
    """Register ``factory(setup) -> Rule`` under ``name``; a taken name raises."""
    return RULES.register(name)


def rule_names() -> list[str]:
    """Names of the registered rules, sorted."""
    return RULES.names()


def make_rule(name: str, setup: RuleSetup | None = None) -> Rule:
    """A fresh instance of the rule registered as ``name``; an unknown name lists the valid ones.

    Example:
        >>> from knapsack_rl.rules import RuleSetup, make_rule
        >>> rule = make_rule("knapsack:project", RuleSetup(n=4))
        >>> rule.name, type(rule).__name__, rule.config.allocation.n
        ('knapsack:project', 'KnapsackRule', 4)
        >>> make_rule("knapsack:nope")
        Traceback (most recent call last):
        ...
        ValueError: rule='knapsack:nope' is not a registered rule; valid: ['coba', 'dapo', ...]
    """
    rule = RULES.get(name)(setup if setup is not None else RuleSetup())
    rule.name = name
    return rule


def _even(total: int, mask: NDArray[np.bool_], per: int | None = None) -> NDArray[np.int64]:
    """Counts (K,): ``per`` for each True of ``mask`` if that fits ``total``; else ``total`` split evenly
    over them (the first ones in order get the remainder)."""
    k = int(mask.sum())
    counts = np.zeros(mask.size, dtype=np.int64)
    if k == 0 or total <= 0:
        return counts
    if per is not None and per * k <= total:
        counts[mask] = per
        return counts
    q, r = divmod(total, k)
    counts[mask] = q + (np.arange(k) < r)
    return counts


def _require_nm(rule: Rule, spec: StepSpec) -> int:
    """Rules that give groups of N need ``total_budget == n * M``; returns it."""
    if spec.total_budget != spec.n * spec.size:
        raise ValueError(
            f"rule {rule.name!r} needs total_budget == n * M; got total_budget={spec.total_budget}, "
            f"n={spec.n}, M={spec.size}"
        )
    return spec.total_budget


def _ids_state(ids: set[Any]) -> list[int | str]:
    """A set of prompt ids as a sorted list (ints first), plain data for a checkpoint."""
    return sorted(ids, key=lambda pid: (isinstance(pid, str), pid))


def _ids_from_state(rule: Rule, state: dict[str, Any], key: str, source: str) -> set[Any]:
    """The id set ``state[key]`` of :func:`_ids_state`; a state with other keys or bad ids raises."""
    if not isinstance(state, dict) or list(state) != [key]:
        got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{source}: not a state of rule {rule.name!r}: expected the key [{key!r}]; got {got}")
    ids = check_prompt_ids(f"{source}: {key}", state[key])
    out = ids.tolist() if isinstance(ids, np.ndarray) else ids
    try:
        check_unique_ids(key, out)  # a saved set lists each id once
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return set(out)


# --------------------------------------------------------------------------- uniform
def uniform_limits(spec: StepSpec) -> Limits:
    """The limits of the step's budget split evenly over its M prompts (N each when B = N x M)."""
    q = spec.total_budget // spec.size
    return Limits(spec.total_budget, True, max(q, 1), q + (spec.total_budget % spec.size > 0))


@register_rule("uniform")
def _uniform(setup: RuleSetup) -> Rule:
    """GRPO's N per prompt, through the Planner with ``allocate=False``: the run's tracker still runs, so
    the baseline logs the same metrics and keeps the same state as knapsack."""
    return KnapsackRule(setup.settings.replace(allocate=False))


@register_rule("knapsack")
def _knapsack(setup: RuleSetup) -> Rule:
    """Knapsack RL with the run's own knapsack settings (``knapsack:`` section, ``--preset``, flags)."""
    return KnapsackRule(setup.settings)


# --------------------------------------------------------------------------- knapsack
class KnapsackRule(Rule):
    """Knapsack RL through :class:`knapsack_rl.Planner` (docs/method.md): ``plan -> generate -> observe``.

    One round ``planner.plan(ids, epoch=...)``. With ``config.probe_n > 0`` two rounds (two-phase
    planning): the probe ``planner.plan_probe(ids, epoch=...)``, then ``planner.plan(..., probe=...)``
    whose budgets include the probe's counts (the second round generates the difference). Every
    rollout of the step is then given to ``planner.observe`` once (as update ``spec.step + 1``: the
    tracker counts its updates from 1); its metrics are the selection's. The rewards a rule sees are
    successes in [0, 1] (the engine mapped its own with the run's ``reward_format`` and
    ``success_threshold``), so the Planner takes them as they are (``mapped=True``), never mapping twice.
    The rule's state is the Planner's (:meth:`knapsack_rl.Planner.state_dict`). This is the only code
    path between an engine and the Planner for every engine.

    Args:
        config: the method's settings (``allocate=False`` is the tracked uniform baseline).
        tracker: an existing tracker for the Planner (a cold start from another run's estimates).
    """

    def __init__(self, config: KnapsackConfig, *, tracker: Tracker | None = None) -> None:
        self.planner = Planner(config, tracker=tracker)
        self.name = "knapsack" if config.allocate else "uniform"
        self._probe = np.zeros(0, dtype=np.int64)
        self._planned = False

    @property
    def config(self) -> KnapsackConfig:
        """The method's settings."""
        return self.planner.config

    def needs(self) -> Needs:
        """Two rounds with a probe; counts of 0 or 1 where the settings give them."""
        cfg, a = self.config, self.config.allocation
        counts = {a.n, a.min_n, a.negative_n, a.positive_n, cfg.probe_n or a.n} if cfg.allocate else {a.n}
        rounds = cfg.probe_n > 0 and cfg.allocate
        return Needs(rounds=rounds, skips=0 in counts, singles=1 in counts)

    def limits(self, spec: StepSpec) -> Limits:
        a = self.config.allocation
        if not self.config.allocate:
            return uniform_limits(spec)
        # starting counts only grow; a bucket that starts at 0 can take any share of a spread surplus
        floors = [a.min_n, a.n, max(a.negative_n, 1), max(a.positive_n, 1)]
        floors += [self.config.probe_n] if self.config.probe_n else []
        return Limits(spec.total_budget, True, min(floors), a.max_n if a.strict_max_n else max(spec.total_budget, 1))

    def begin(self, spec: StepSpec) -> None:
        probing = self.config.probe_n > 0  # plan_probe decides whom to probe; without a probe it is all zeros
        self._probe = self.planner.plan_probe(spec.prompt_ids, epoch=spec.epoch) if probing else self._probe[:0]
        self._planned = False

    def next_round(self, log: StepLog) -> Round | None:
        if self._planned:
            return None
        if log.rounds == 0 and self._probe.any():
            return Round(self._probe)
        probe = (log.ids[log.rollout_candidate], log.rewards) if log.spent else None
        spec = log.spec
        alloc = self.planner.plan(
            log.ids, epoch=spec.epoch, total_budget=spec.total_budget, probe=probe, mapped=True
        )  # the log's rewards are successes: the engine mapped them
        self._planned = True
        return Round(alloc.budgets - log.counts)

    def finish(self, log: StepLog) -> Selection:
        spec = log.spec
        ids = log.ids[log.rollout_candidate]
        metrics = self.planner.observe(ids, log.rewards, epoch=spec.epoch, step=spec.step + 1, mapped=True)
        return Selection(np.ones(log.rewards.size, dtype=bool), metrics)

    def state_dict(self) -> dict[str, Any]:
        """The Planner's state (its config and the tracker's hashed bytes)."""
        return self.planner.state_dict()

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        """Restore the Planner's state (refused, naming ``source``, if its tracker settings differ)."""
        self.planner.load_state_dict(state, source=source)


def knapsack_factory(config: KnapsackConfig) -> RuleFactory:
    """A rule factory running ``config`` through the Planner, with ``n`` set to the run's N."""

    def factory(setup: RuleSetup) -> Rule:
        return KnapsackRule(config.replace(n=setup.n))

    return factory


def register_knapsack(name: str, config: KnapsackConfig) -> None:
    """Register ``config`` as the rule ``name`` (e.g. a study's variant); a taken name raises."""
    RULES.add(name, knapsack_factory(config))


for _preset in preset_names():
    if _preset != "uniform":  # the uniform baseline is the rule ``uniform``: one name per rule
        register_knapsack(f"knapsack:{_preset}", KnapsackConfig.preset(_preset))


# --------------------------------------------------------------------------- Reinforce-Ada-like
class ReinforceAdaRule(Rule):
    """Reinforce-Ada-like sequential sampling (Xiong et al., arXiv 2510.04996, the verl code of RLHFlow).

    What it follows: sampling in rounds; each round every *active* prompt gets ``round_n`` more
    rollouts; a prompt leaves the active set once its rollouts meet the exit condition (``balanced``:
    at least ``keep_n // 2`` successes and ``keep_n - keep_n // 2`` failures; ``positive``: one
    success); at most ``max_rounds`` rounds; each prompt's group is then down-sampled to at most
    ``keep_n`` rollouts, successes first up to ``keep_n // 2``, failures next, the rest filled from
    whichever is left (in generation order), so prompts that found signal train on balanced groups.

    Where it departs, because the budget here is fixed (B = N x M per step): the paper's defaults
    (round 8, keep 4, 4 rounds) spend at least 2x GRPO's rollouts per step; here the first round
    gives ``round_n`` (default N/2) to all M prompts and later rounds share what is left of B among
    the active prompts (evenly when ``round_n`` each does not fit), so a step spends at most B, less
    when every prompt exits early. ``keep_n`` defaults to N/2 so that, as in the paper (keep 4 from a
    pool of at least 8), a prompt's pool averages twice its trained group.
    The paper's advantage baseline from the whole pool of a prompt is not modelled: the engine's own
    advantage (the simulator: GRPO on the trained group) is used, so rules differ only in allocation.
    """

    def __init__(self, *, exit: str = "balanced", round_n: int = 4, keep_n: int = 4, max_rounds: int = 4) -> None:
        self.exit = check_choice("exit", exit, ("balanced", "positive"))
        self.round_n = check_int("round_n", round_n, low=1)
        self.keep_n = check_int("keep_n", keep_n, low=2)
        self.max_rounds = check_int("max_rounds", max_rounds, low=1)

    def needs(self) -> Needs:
        return Needs(rounds=True, drops=True, singles=self.round_n == 1)

    def limits(self, spec: StepSpec) -> Limits:
        low = min(self.round_n, max(spec.total_budget // spec.size, 1))
        return Limits(spec.total_budget, False, low, max(self.round_n * self.max_rounds, low))

    def exited(self, log: StepLog) -> NDArray[np.bool_]:
        """(K,) whether each candidate met the exit condition."""
        pos, neg = log.positives, log.counts - log.positives
        if self.exit == "positive":
            out: NDArray[np.bool_] = pos >= 1
            return out
        return (pos >= self.keep_n // 2) & (neg >= self.keep_n - self.keep_n // 2)

    def next_round(self, log: StepLog) -> Round | None:
        remaining = log.spec.total_budget - log.spent
        active = ~self.exited(log) if log.rounds else np.ones(log.size, dtype=bool)
        if log.rounds >= self.max_rounds or remaining <= 0 or not active.any():
            return None
        return Round(_even(remaining, active, self.round_n))

    def finish(self, log: StepLog) -> Selection:
        """Down-sample every group to at most ``keep_n``: quotas of successes and failures, then rank."""
        pos, neg = log.positives, log.counts - log.positives
        take = np.minimum(self.keep_n, log.counts)  # (K,)
        k_pos = np.minimum(pos, self.keep_n // 2)
        k_neg = np.minimum(neg, take - k_pos)
        short = take - k_pos - k_neg  # filled from whichever kind has rollouts left, successes first
        more_pos = np.minimum(pos - k_pos, short)
        k_pos, k_neg = k_pos + more_pos, k_neg + np.minimum(neg - k_neg, short - more_pos)
        is_pos = log.rewards >= 0.5  # (R,)
        cand = log.rollout_candidate
        key = cand * 2 + is_pos  # (R,) one bucket per (candidate, kind); stable order keeps generation order
        order = np.argsort(key, kind="stable")
        starts = np.searchsorted(key[order], key[order])  # first position of each rollout's bucket
        rank = np.empty(key.size, dtype=np.int64)
        rank[order] = np.arange(key.size) - starts  # (R,) position within its bucket
        quota = np.where(is_pos, k_pos[cand], k_neg[cand])
        return Selection(rank < quota)


@register_rule("reinforce-ada")
def _reinforce_ada(setup: RuleSetup) -> Rule:
    half = max(setup.n // 2, 2)
    return ReinforceAdaRule(exit="balanced", round_n=half, keep_n=half)


@register_rule("reinforce-ada-pos")
def _reinforce_ada_pos(setup: RuleSetup) -> Rule:
    half = max(setup.n // 2, 2)
    return ReinforceAdaRule(exit="positive", round_n=half, keep_n=half)


# --------------------------------------------------------------------------- Pilot-Commit-like
class PilotCommitRule(Rule):
    """Pilot-Commit-like allocation (Kim et al., arXiv 2605.26606, the verl code of databricks/pilot-commit).

    What it follows: each prompt first gets ``pilot_n`` pilot rollouts; a prompt whose pilot success
    rate lies in ``[p_low, p_high]`` (the paper's ``diversity_threshold_lower`` 0.125 and
    ``1 - diversity_threshold_upper`` = 0.75) passes; passing prompts get ``commit_n`` more rollouts,
    highest pilot variance ``mean (1 - mean)`` first (the paper's ``max_variance`` buffer sampling);
    the trained batch is the passing prompts' pilot and commit rollouts (pilots of the others are
    paid for and dropped); a prompt whose pilot mean is at least ``evict_at`` (the paper's
    ``exclude_threshold_upper`` = 1) is evicted from all later steps; too-hard prompts are deferred
    (they come back in a later epoch). The paper's ratio commit : pilot = 3 : 1 is kept.

    Where it departs, because the budget here is fixed (B per step): the first round pilots the M
    prompts of the batch (``pilot_n`` = N/2 each, half of B); commits follow in the same step (the
    paper commits buffered prompts in the next step, up to 4 steps stale); while budget remains and no
    passer waits, more prompts are drawn (at most M per round) and piloted, as many as this step's pass
    rate says will absorb what remains (a commit and a pilot can share a round). The last round may
    give a prompt fewer than ``pilot_n`` / ``commit_n`` rollouts so that the step spends exactly B; it
    spends less only when a whole drawn batch of M prompts was evicted (the data is used up). Passers
    that no budget is left to commit are trained on their pilot (they have reward variance); the paper
    would commit them in a later step.
    """

    PASS, EASY, HARD = 1, 2, 3

    def __init__(
        self, *, pilot_n: int = 4, commit_n: int = 12, p_low: float = 0.125, p_high: float = 0.75, evict_at: float = 1.0
    ) -> None:
        self.pilot_n = check_int("pilot_n", pilot_n, low=1)
        self.commit_n = check_int("commit_n", commit_n, low=1)
        self.p_low = check_real("p_low", p_low, low=0.0, high=1.0)
        self.p_high = check_real("p_high", p_high, low=self.p_low, high=1.0)
        self.evict_at = check_real("evict_at", evict_at, low=0.0, high=1.0)
        self.evicted: set[Any] = set()
        self._class = np.zeros(0, dtype=np.int8)  # (K,) 0 = not piloted, else PASS / EASY / HARD
        self._queue: list[int] = []
        self._passed = self._piloted = self._drawn = 0

    def needs(self) -> Needs:
        """Rounds of pilots and commits, draws, evictions (0), a last round cut to fit (1), pilots dropped."""
        return Needs(rounds=True, draws=True, skips=True, singles=True, drops=True)

    def limits(self, spec: StepSpec) -> Limits:
        return Limits(spec.total_budget, False, 1, self.pilot_n + self.commit_n)

    def begin(self, spec: StepSpec) -> None:
        self._class = np.zeros(0, dtype=np.int8)
        self._queue = []
        self._passed = self._piloted = 0
        self._drawn = 0

    def next_round(self, log: StepLog) -> Round | None:
        remaining = log.spec.total_budget - log.spent
        dry, self._drawn = self._dry(log), 0
        if remaining <= 0 or dry:
            return None
        self._classify(log)
        counts = np.zeros(log.size, dtype=np.int64)
        if self._queue:  # commit the waiting passers, highest pilot variance first
            chosen, self._queue = self._split(self._queue, math.ceil(remaining / self.commit_n))
            self._fill(counts, chosen, self.commit_n, remaining)
        evicted = self._is_evicted(log)
        todo = np.flatnonzero((self._class == 0) & (log.counts == 0) & ~evicted)
        left = remaining - int(counts.sum())
        piloted = todo[: math.ceil(left / self.pilot_n)] if left > 0 else todo[:0]
        self._fill(counts, piloted.tolist(), self.pilot_n, left)  # pilot what the budget allows
        left = remaining - int(counts.sum())
        if left <= 0 or piloted.size < todo.size:
            return Round(counts)
        rate = (self._passed + 1) / (self._piloted + 2)  # pass rate of this step's pilots (Laplace)
        demand = piloted.size * rate * self.commit_n  # expected commits of this round's pilots
        usable = (log.size - int(evicted.sum()) + 1) / (log.size + 2)  # drawn prompts not evicted (Laplace)
        per_draw = usable * (self.pilot_n + rate * self.commit_n)  # expected rollouts one drawn prompt absorbs
        want = min(math.ceil((left - demand) / per_draw) if left > demand else 0, log.spec.size)  # a batch at most
        self._drawn = max(want, int(not counts.any()))
        return Round(counts, draw=self._drawn)

    def _dry(self, log: StepLog) -> bool:
        """Whether the last draw was a whole batch of M prompts, every one evicted (the data is used up)."""
        if self._drawn < log.spec.size:
            return False
        return bool(self._is_evicted(log)[log.size - self._drawn :].all())

    @staticmethod
    def _split(queue: list[int], k: int) -> tuple[list[int], list[int]]:
        return queue[:k], queue[k:]

    @staticmethod
    def _fill(counts: NDArray[np.int64], idx: list[int], per: int, budget: int) -> None:
        """``per`` rollouts for each of ``idx`` in order, the last one cut so the sum stays within ``budget``."""
        if not idx:
            return
        counts[idx] = per
        counts[idx[-1]] -= max(per * len(idx) - budget, 0)

    def _is_evicted(self, log: StepLog) -> NDArray[np.bool_]:
        if not self.evicted:
            return np.zeros(log.size, dtype=bool)
        return np.fromiter((pid in self.evicted for pid in log.ids.tolist()), dtype=bool, count=log.size)

    def _classify(self, log: StepLog) -> None:
        """Sort newly piloted candidates into pass / too easy / too hard; queue passers; evict the solved."""
        cls = np.zeros(log.size, dtype=np.int8)
        cls[: self._class.size] = self._class
        new = np.flatnonzero((cls == 0) & (log.counts > 0))
        if new.size:
            mean = log.successes[new] / log.counts[new]
            cls[new] = np.where(mean < self.p_low, self.HARD, np.where(mean > self.p_high, self.EASY, self.PASS))
            passed = new[cls[new] == self.PASS]
            var = mean[cls[new] == self.PASS] * (1 - mean[cls[new] == self.PASS])
            self._queue.extend(passed[np.argsort(-var, kind="stable")].tolist())
            self._passed += passed.size
            self._piloted += new.size
            self.evicted.update(log.ids[new[mean >= self.evict_at]].tolist())
        self._class = cls

    def finish(self, log: StepLog) -> Selection:
        self._classify(log)
        return Selection(self._class[log.rollout_candidate] == self.PASS)

    def state_dict(self) -> dict[str, Any]:
        """The evicted prompts (the rest of the state lives within one step)."""
        return {"evicted": _ids_state(self.evicted)}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        self.evicted = _ids_from_state(self, state, "evicted", source)


@register_rule("pilot-commit")
def _pilot_commit(setup: RuleSetup) -> Rule:
    pilot = max(setup.n // 2, 1)
    return PilotCommitRule(pilot_n=pilot, commit_n=3 * pilot)


# --------------------------------------------------------------------------- DAPO
class DapoRule(Rule):
    """DAPO dynamic sampling (Yu et al., arXiv 2503.14476; verl's ``algorithm.filter_groups``).

    Rounds of M fresh prompts x N rollouts; groups with zero reward variance are dropped; rounds
    continue until M groups with signal are kept or ``max_rounds`` batches were generated; the
    trained batch is the first M kept groups. Every generated rollout counts: a step spends between
    B and ``max_rounds`` x B (DAPO has no fixed step budget; compare it at equal rollouts), and no
    refill passes :meth:`StepSpec.spend_cap` (the run's rollouts left, when the engine gives them).
    """

    def __init__(self, max_rounds: int = 10) -> None:
        self.max_rounds = check_int("max_rounds", max_rounds, low=1)

    def needs(self) -> Needs:
        return Needs(rounds=True, draws=True, drops=True)

    def limits(self, spec: StepSpec) -> Limits:
        return Limits(self.max_rounds * _require_nm(self, spec), False, spec.n, spec.n)

    def next_round(self, log: StepLog) -> Round | None:
        spec = log.spec
        fresh = log.counts == 0
        if fresh.any():
            return Round(np.where(fresh, spec.n, 0).astype(np.int64))
        full = int(log.varied().sum()) >= spec.size or log.size // spec.size >= self.max_rounds
        if full or log.spent + spec.total_budget > spec.spend_cap(self.max_rounds * spec.total_budget):
            return None
        return Round(np.zeros(log.size, dtype=np.int64), draw=spec.size)

    def finish(self, log: StepLog) -> Selection:
        varied = log.varied()
        kept = varied & (np.cumsum(varied) <= log.spec.size)  # the first M groups with signal
        return Selection(kept[log.rollout_candidate])


@register_rule("dapo")
def _dapo(setup: RuleSetup) -> Rule:
    return DapoRule()


# --------------------------------------------------------------------------- GRESO-like
class GresoRule(Rule):
    """GRESO-like pre-rollout filtering (Li et al., arXiv 2506.02177), simplified.

    A prompt whose last group had zero reward variance is skipped with probability ``skip_prob``
    (a coin keyed on seed, prompt and epoch) and replaced by the next prompt of the stream; the M
    kept prompts get N rollouts each. The paper adapts the skip probability to a target rate per
    easy / hard prompt; here it is fixed.
    """

    def __init__(self, seed: int, skip_prob: float = 0.8) -> None:
        self.seed = check_int("seed", seed, low=0)
        self.skip_prob = check_real("skip_prob", skip_prob, low=0.0, high=1.0, open_high=True)
        self.zero_last: set[Any] = set()
        self._skip = np.zeros(0, dtype=bool)

    def needs(self) -> Needs:
        """Skipped prompts get 0 and are replaced by prompts drawn beyond the batch."""
        return Needs(draws=True, skips=True)

    def limits(self, spec: StepSpec) -> Limits:
        return Limits(_require_nm(self, spec), True, spec.n, spec.n)

    def begin(self, spec: StepSpec) -> None:
        self._skip = np.zeros(0, dtype=bool)

    def next_round(self, log: StepLog) -> Round | None:
        if log.spent:
            return None
        new = slice(self._skip.size, log.size)
        zero = np.fromiter((pid in self.zero_last for pid in log.ids[new].tolist()), dtype=bool)
        coin = keyed_uniform(self.seed, SKIP_STREAM, id_keys(log.ids[new]), log.epochs[new], 0)
        self._skip = np.concatenate([self._skip, zero & (coin < self.skip_prob)])
        kept = int((~self._skip).sum())
        spec = log.spec
        if kept < spec.size:
            return Round(np.zeros(log.size, dtype=np.int64), draw=spec.size - kept)
        return Round(np.where(self._skip, 0, spec.n).astype(np.int64))

    def finish(self, log: StepLog) -> Selection:
        done = np.flatnonzero(log.counts > 0)
        varied = log.varied()[done]
        ids = log.ids[done].tolist()
        self.zero_last.difference_update(pid for pid, v in zip(ids, varied.tolist(), strict=True) if v)
        self.zero_last.update(pid for pid, v in zip(ids, varied.tolist(), strict=True) if not v)
        return Selection(np.ones(log.rewards.size, dtype=bool))

    def state_dict(self) -> dict[str, Any]:
        """The prompts whose last group had no reward variance."""
        return {"zero_last": _ids_state(self.zero_last)}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        self.zero_last = _ids_from_state(self, state, "zero_last", source)


@register_rule("greso")
def _greso(setup: RuleSetup) -> Rule:
    return GresoRule(setup.seed)


# --------------------------------------------------------------------------- E3-like
class UncertaintyRule(Rule):
    """Counts proportional to the estimated reward std (E3-like): ``N_i = min_n + round(R w_i / sum w)``
    with ``w_i = sqrt(p_i (1 - p_i))`` (Beta posterior mean p), R the budget above the floors (largest
    remainder rounding, so the total is B exactly); unestimated prompts get N. No upper bound."""

    def __init__(self, min_n: int = 2) -> None:
        self.min_n = check_int("min_n", min_n, low=1)
        self.tracker = Tracker(TrackerConfig(estimator="beta", min_count=1))

    def needs(self) -> Needs:
        return Needs(singles=self.min_n == 1)

    def limits(self, spec: StepSpec) -> Limits:
        low = min(self.min_n, spec.n)
        return Limits(_require_nm(self, spec), True, low, max(spec.total_budget, low))

    def next_round(self, log: StepLog) -> Round | None:
        if log.rounds:
            return None
        spec = log.spec
        p = self.tracker.estimate(log.ids)
        new = np.isnan(p)
        counts = np.where(new, spec.n, self.min_n).astype(np.int64)
        rest = spec.total_budget - int(counts.sum())
        w = np.where(new, 0.0, np.sqrt(np.nan_to_num(p) * (1 - np.nan_to_num(p))))
        if rest <= 0 or w.sum() <= 0:
            return Round(counts + _even(rest, ~new))
        share = rest * w / w.sum()
        extra = np.floor(share).astype(np.int64)
        extra[np.argsort(-(share - extra), kind="stable")[: rest - int(extra.sum())]] += 1  # largest remainder
        return Round(counts + extra)

    def finish(self, log: StepLog) -> Selection:
        spec = log.spec
        self.tracker.update(log.ids[log.rollout_candidate], log.rewards, epoch=spec.epoch, step=spec.step + 1)
        return Selection(np.ones(log.rewards.size, dtype=bool), {"tracker/prompts": float(len(self.tracker))})

    def state_dict(self) -> dict[str, Any]:
        """The tracker's hashed bytes (:meth:`knapsack_rl.Tracker.to_bytes`)."""
        return {"tracker": self.tracker.to_bytes()}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        if not isinstance(state, dict) or list(state) != ["tracker"]:
            got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{source}: not a state of rule {self.name!r}: expected the key ['tracker']; got {got}")
        tracker = Tracker.from_bytes(state["tracker"], source=source)
        if tracker.config != self.tracker.config:
            raise ValueError(f"{source}: the tracker of rule {self.name!r} was saved with other settings")
        self.tracker = tracker


@register_rule("uncertainty")
def _uncertainty(setup: RuleSetup) -> Rule:
    return UncertaintyRule()
