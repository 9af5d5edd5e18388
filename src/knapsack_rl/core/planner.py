"""The narrow waist: :class:`Planner` turns a step's prompt ids into rollout counts and learns from rewards.

Every engine (the reference trainer, the TRL adapter, the verl hooks, the simulator) talks to the
method through this one object and a :class:`~knapsack_rl.core.config.KnapsackConfig`::

    planner = Planner(KnapsackConfig.preset("project"))
    plan = planner.plan(prompt_ids, epoch=epoch)            # Allocation: plan.budgets[i] rollouts of prompt i
    ...                                                     # the engine generates and scores them
    metrics = planner.observe(rollout_prompt_ids, rewards, epoch=epoch)
    state = planner.state_dict()                            # what a checkpoint stores

**Epoch.** ``epoch`` is the 0-based index of the current pass over the training prompts, given by the
engine (the trainer: ``step // steps_per_epoch``; TRL: ``floor(state.epoch)``); an engine that does
not know it counts passes with :class:`EpochCounter`. The recipe estimator prefers the current epoch's
rewards, and the cold start uses the epoch: in epochs ``< config.uniform_epochs`` every prompt gets n.

**Two-phase planning** (``config.probe_n > 0``): the engine first asks :meth:`Planner.plan_probe` for
``probe_n`` rollouts of every prompt without an estimate, generates and scores them, then calls
:meth:`Planner.plan` with ``probe=(rollout_prompt_ids, rewards)``: the rest of the step's fixed budget
is allocated from the probe's outcome (the probe's rollouts are a floor, so the step's total stays
``n * M``). Finally :meth:`observe` gets every rollout of the step, probe included.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.allocate import Allocation, allocate, uniform_allocation
from knapsack_rl.core.config import KnapsackConfig, config_diff
from knapsack_rl.core.groups import group_counts, step_metrics
from knapsack_rl.core.population import GridPosterior, LikelihoodCache, PopulationPrior
from knapsack_rl.core.tracker import Tracker, to_success
from knapsack_rl.core.validate import check_int, check_prompt_ids, check_step_ids, check_unique_ids

logger = logging.getLogger(__name__)

Ids = Sequence[Hashable] | NDArray[Any]
POPULATION_FIT: dict[str, Any] = {"size": 101, "iterations": 300, "tol": 1e-6, "resolution": 0.5}
"""How ``prior="population"`` fits the prior: 101 rates, counts binned to halves, from at most
``POPULATION_SAMPLE`` tracked prompts; the first fit runs at most 300 EM iterations from uniform weights
(the expected signal it predicts has settled to 1e-3 by then), every later plan goes on from the last
fit (``POPULATION_WARM``). The last fit is part of :meth:`Planner.state_dict`, so a resume plans exactly
as the run would have."""
POPULATION_SAMPLE = 4096
POPULATION_WARM: dict[str, Any] = {"iterations": 10, "mix": 1e-3}
"""A warm start: EM from ``(1 - mix)`` times the last fit plus ``mix`` times uniform weights, at most
``iterations`` iterations. The tracker changes by one step's prompts between plans, so the last fit is
close and a few iterations follow it (the fits' likelihood keeps rising: EM never undoes its progress,
where a fit from uniform weights at every plan starts over); ``mix`` keeps every rate's weight above
``mix / 101``, so a rate the population moves to regains weight within tens of iterations."""
Evidence = tuple[NDArray[np.float64], NDArray[np.float64]]
"""Each prompt's discounted successes and failures, (M,) each."""
CheckedIds = NDArray[np.int64] | list[int | str]
"""Ids :func:`~knapsack_rl.core.validate.check_prompt_ids` returned: checked once where they enter."""
_STATE_VERSION = 1
_STATE_KEYS = ["config", "tracker", "version"]  # and "prior" once a population prior was fitted


@dataclass(frozen=True)
class PlanRecord:
    """The latest plan: its prompts, the estimates it used, its allocation and the probe's size.

    Attributes:
        ids: the step's prompt ids.
        p_hat: (M,) the estimates the allocation saw (NaN: none, including cold-start epochs).
        allocation: the :class:`Allocation`.
        probe_rollouts: rollouts of the two-phase probe included in ``allocation.budgets`` (0 without).
    """

    ids: list[int | str]
    p_hat: NDArray[np.float64]
    allocation: Allocation
    probe_rollouts: int


class Planner:
    """Per-prompt rollout counts from a :class:`Tracker` and :func:`knapsack_rl.allocate` (module docstring).

    Args:
        config: the method's settings (default: ``KnapsackConfig()``).
        tracker: an existing tracker (e.g. warm-started from another run); its config must equal
            ``config.tracker``. Default: a new one.

    Example:
        Four prompts, 8 rollouts each on average. In epoch 0 (the cold start) every prompt gets n; the
        planner then learns from the rewards, and in epoch 1 the always-solved prompt gets fewer:

        >>> from knapsack_rl import KnapsackConfig, Planner
        >>> planner = Planner(KnapsackConfig.preset("project", min_count=1))
        >>> ids = ["a", "b", "c", "d"]
        >>> planner.plan(ids, epoch=0).budgets.tolist()
        [8, 8, 8, 8]
        >>> rollouts = [pid for pid in ids for _ in range(8)]
        >>> rewards = [1] * 8 + [1, 0] * 4 + [0] * 8 + [1, 1, 1, 0, 0, 0, 0, 0]
        >>> metrics = planner.observe(rollouts, rewards, epoch=0)
        >>> metrics["train/effective_prompts"], metrics["tracker/prompts"]  # prompts with signal, tracked
        (2.0, 4.0)
        >>> planner.plan(ids, epoch=1).budgets.tolist()
        [3, 8, 12, 9]
        >>> restored = Planner(planner.config)
        >>> restored.load_state_dict(planner.state_dict())  # a checkpoint: plans go on as they would have
        >>> restored.plan(ids, epoch=1).budgets.tolist()
        [3, 8, 12, 9]
    """

    def __init__(self, config: KnapsackConfig | None = None, *, tracker: Tracker | None = None) -> None:
        self.config = config if config is not None else KnapsackConfig()
        if not isinstance(self.config, KnapsackConfig):
            raise ValueError(f"config must be a KnapsackConfig; got {type(self.config).__name__}")
        if tracker is not None and tracker.config != self.config.tracker:
            raise ValueError(
                f"tracker was built with {tracker.config}, but config.tracker is {self.config.tracker}; "
                "a tracker estimates with its own settings, so they must be equal"
            )
        self.tracker = tracker if tracker is not None else Tracker(self.config.tracker)
        self._last: PlanRecord | None = None
        self._prior: NDArray[np.float64] | None = None  # the last population prior's weights (a warm start)
        self._likelihoods = LikelihoodCache()  # speed only: a fit's result does not depend on it

    # ------------------------------------------------------------------ planning
    def plan(
        self,
        prompt_ids: Ids,
        *,
        epoch: int,
        total_budget: int | None = None,
        costs: ArrayLike | None = None,
        probe: tuple[Ids, ArrayLike] | None = None,
        mapped: bool = False,
    ) -> Allocation:
        """Rollouts per prompt for one step (or, after a probe, the step's total including the probe).

        Args:
            prompt_ids: (M,) unique prompt ids (int or str) of the step.
            epoch: 0-based pass over the training prompts (see the module docstring).
            total_budget: rollouts of the step (default ``n * M``); cost units with ``costs``.
            costs: optional (M,) cost of one rollout of each prompt (e.g. expected tokens).
            probe: ``(rollout_prompt_ids, rewards)`` of the probe rollouts :meth:`plan_probe` asked for;
                the returned budgets then *include* the probe's counts (generate ``budgets - probe counts``).
            mapped: the probe's rewards are successes in [0, 1] already (see :meth:`observe`).

        Returns:
            The :class:`Allocation`; ``budgets.sum() == total_budget`` with unit costs.
        """
        checked, ids = _check_step("prompt_ids", prompt_ids)
        epoch = check_int("epoch", epoch, low=0)
        p_hat, evidence = self._estimates(checked, epoch)
        floor = None
        if probe is not None:
            floor, p_hat, evidence = self._with_probe(ids, probe, p_hat, evidence, mapped)
        posterior, prior = (None, self._prior) if evidence is None else self._posterior(*evidence)
        if isinstance(posterior, GridPosterior):
            p_hat = np.where(np.isnan(p_hat), np.nan, posterior.mean())  # the posterior mean where estimated
        elif posterior is not None:
            a, b = posterior
            p_hat = np.where(np.isnan(p_hat), np.nan, a / (a + b))
        alloc_cfg = self.config.allocation
        if not self.config.allocate:
            result = uniform_allocation(p_hat, alloc_cfg, total_budget=total_budget, posterior=posterior)
        else:
            result = allocate(
                p_hat, alloc_cfg, total_budget=total_budget, costs=costs, posterior=posterior, floor=floor
            )
        self._last = PlanRecord(ids, p_hat, result, 0 if floor is None else int(floor.sum()))
        self._prior = prior  # only once the plan stands: a refused call changes nothing
        return result

    def plan_probe(self, prompt_ids: Ids, *, epoch: int) -> NDArray[np.int64]:
        """Two-phase planning, phase 1: ``probe_n`` rollouts for each prompt without an estimate, 0 for the rest.

        Outside two-phase planning (``probe_n == 0``), in cold-start epochs and without allocation (``allocate=False``)
        every count is 0: call :meth:`plan` directly.
        """
        checked, _ = _check_step("prompt_ids", prompt_ids)
        epoch = check_int("epoch", epoch, low=0)
        cfg = self.config
        if cfg.probe_n == 0 or not cfg.allocate or epoch < cfg.uniform_epochs:
            return np.zeros(len(checked), dtype=np.int64)
        p_hat = self.tracker._estimate(self.tracker._rows(checked), cfg.tracker.estimator, epoch)
        return np.where(np.isnan(p_hat), cfg.probe_n, 0).astype(np.int64)

    def _estimates(self, ids: CheckedIds, epoch: int) -> tuple[NDArray[np.float64], Evidence | None]:
        """``p_hat`` (NaN: no estimate, or a cold-start epoch) and, with a posterior, each prompt's
        evidence: the tracker's discounted successes and failures (0 and 0 for unseen prompts)."""
        if epoch < self.config.uniform_epochs:
            return np.full(len(ids), np.nan), None
        rows = self.tracker._rows(ids)  # the ids are looked up once, for both
        p_hat = self.tracker._estimate(rows, self.config.tracker.estimator, epoch)
        if not self.config.posterior:
            return p_hat, None
        return p_hat, self.tracker._evidence(rows)

    def _posterior(self, s: NDArray[np.float64], f: NDArray[np.float64]) -> tuple[Any, NDArray[np.float64] | None]:
        """The step's posterior from its evidence and the population prior's weights after it: Beta
        ``(a0 + s, b0 + f)`` (the weights unchanged), or a grid posterior under the population prior
        fitted to the tracked prompts' evidence (``prior="population"``), warm-started from the last fit."""
        if self.config.prior == "beta":
            a0, b0 = self.config.tracker.beta_prior
            return (a0 + s, b0 + f), self._prior
        all_s, all_f = (self.tracker.array(k) for k in ("beta_s", "beta_f"))
        seen = np.flatnonzero((all_s + all_f) > 0)
        if seen.size > POPULATION_SAMPLE:  # the population's shape, from evenly spaced rows
            seen = seen[np.linspace(0, seen.size - 1, POPULATION_SAMPLE).astype(np.intp)]
        fit: dict[str, Any] = {**POPULATION_FIT, "cache": self._likelihoods}
        if self._prior is not None:
            mix = POPULATION_WARM["mix"]
            fit.update(iterations=POPULATION_WARM["iterations"], start=(1 - mix) * self._prior + mix / self._prior.size)
        prior = PopulationPrior.fit(all_s[seen], all_f[seen], **fit)
        return prior.posterior(s, f), prior.weights

    def _with_probe(
        self,
        ids: list[int | str],
        probe: tuple[Ids, ArrayLike],
        p_hat: NDArray[np.float64],
        evidence: Evidence | None,
        mapped: bool = False,
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], Evidence | None]:
        """Fold a probe's rewards into the estimates of the probed prompts; returns (floor, p_hat, evidence)."""
        if not isinstance(probe, tuple | list) or len(probe) != 2:
            raise ValueError(f"probe must be a pair (rollout_prompt_ids, rewards); got {probe!r:.80}")
        probe_ids = check_prompt_ids("probe rollout_prompt_ids", probe[0])  # 77.0 is not prompt 77
        cfg = self.config.tracker
        succ = to_success(probe[1], *(("continuous", None) if mapped else (cfg.reward_format, cfg.success_threshold)))
        counts, successes = group_counts(ids, probe_ids, succ)
        probed = counts > 0
        if np.any(probed & ~np.isnan(p_hat)):
            i = int(np.flatnonzero(probed & ~np.isnan(p_hat))[0])
            raise ValueError(f"probe holds rollouts of prompt {ids[i]!r}, which has an estimate and was not probed")
        p_hat = p_hat.copy()
        p_hat[probed] = successes[probed] / counts[probed]
        if evidence is not None or self.config.posterior:
            s = np.zeros(len(ids)) if evidence is None else evidence[0].copy()
            f = np.zeros(len(ids)) if evidence is None else evidence[1].copy()
            s[probed], f[probed] = successes[probed], counts[probed] - successes[probed]
            evidence = (s, f)
        return counts, p_hat, evidence

    # ----------------------------------------------------------------- observing
    def observe(
        self, rollout_prompt_ids: Ids, rewards: ArrayLike, *, epoch: int, step: int | None = None, mapped: bool = False
    ) -> dict[str, float]:
        """Record the rewards of every rollout of the step and return the step's metrics.

        Args:
            rollout_prompt_ids: (R,) prompt id of each rollout.
            rewards: (R,) reward of each rollout (see :func:`knapsack_rl.core.tracker.to_success`).
            epoch: the epoch the rollouts were planned in; never below the previous observation's.
            step: the global step (default: the tracker's previous step + 1); never below the previous one.
            mapped: the rewards are successes in [0, 1] already (an engine mapped them with
                :func:`~knapsack_rl.core.tracker.to_success`, as every engine of :mod:`knapsack_rl.rules`
                does): they are recorded as they are, not mapped again with the tracker's ``reward_format``
                and ``success_threshold``, and a success in the metrics is a value >= 1/2.

        Returns:
            ``alloc/*`` of the latest plan (:meth:`Allocation.metrics`), ``train/*``
            (:func:`knapsack_rl.core.groups.step_metrics`, grouped by prompt id) and ``tracker/prompts``.

        Raises:
            ValueError: bad ids or rewards, or an epoch or step going backwards; the planner is unchanged.
        """
        epoch = check_int("epoch", epoch, low=0)
        if epoch < self.tracker.epoch:
            raise ValueError(f"epoch must not go backwards: got epoch={epoch} after epoch {self.tracker.epoch}")
        if step is not None and check_int("step", step, low=0) < self.tracker.step:
            raise ValueError(f"step must not go backwards: got step={step} after step {self.tracker.step}")
        ids = check_prompt_ids("rollout_prompt_ids", rollout_prompt_ids)
        self.tracker._update(ids, rewards, epoch=epoch, step=step, mapped=mapped, name="rollout_prompt_ids")
        threshold = None if mapped else self.config.tracker.success_threshold
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        groups = ids if isinstance(ids, np.ndarray) else self.tracker._rows(ids)  # rows: 1 and "1" stay apart
        metrics = step_metrics(r, groups, success_threshold=0.5 if threshold is None else threshold)
        if self._last is not None:
            metrics.update(self._last.allocation.metrics())
            metrics["alloc/probe_rollouts"] = float(self._last.probe_rollouts)
        metrics["tracker/prompts"] = float(len(self.tracker))
        return metrics

    @property
    def last(self) -> PlanRecord | None:
        """The latest :meth:`plan` (None before the first, and after :meth:`load_state_dict`)."""
        return self._last

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The Planner's state for a checkpoint: ``version`` (int), ``config`` (the KnapsackConfig as a plain
        dict), ``tracker`` (:meth:`Tracker.to_bytes`: the tracker's hashed image, **bytes**) and, once a
        population prior has been fitted (``prior="population"``), ``prior``: the last fit's weights, the
        warm start of the next plan (``POPULATION_FIT["size"]`` little-endian float64, **bytes**).

        Because of those bytes the dict is not JSON-serialisable as such. ``torch.save`` stores it (and
        ``torch.load(weights_only=True)`` reads it back); without pickle,
        ``meta, parts = knapsack_rl.rules.state.pack_rule_state("knapsack", state)`` gives JSON-safe ``meta``
        (each bytes value replaced by a reference) and the ``parts`` that hold the bytes, which every engine
        writes with :func:`knapsack_rl.io.encode_state_file`; ``unpack_rule_state(meta, parts,
        source=...)[1]`` is the state again, for :meth:`load_state_dict`.
        """
        state = {"version": _STATE_VERSION, "config": self.config.to_dict(), "tracker": self.tracker.to_bytes()}
        if self._prior is not None:
            state["prior"] = self._prior.astype("<f8").tobytes()
        return state

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        """Restore :meth:`state_dict` output (:meth:`check_state_dict`, then adopt its tracker and the last
        population prior's fit; a state without ``prior``, e.g. of an earlier knapsack-rl, makes the next
        plan fit from uniform weights, as that version did at every plan).

        Raises:
            ValueError: naming ``source`` and what is wrong; nothing is changed.
        """
        tracker, prior = self._check_state(state, source)
        self.adopt_tracker(tracker)
        self._prior = prior

    def adopt_tracker(self, tracker: Tracker) -> None:
        """Continue from ``tracker`` (one :meth:`check_state_dict` returned); forgets the latest plan and the
        population prior's last fit (the next plan fits one to this tracker from uniform weights)."""
        if not isinstance(tracker, Tracker) or tracker.config != self.config.tracker:
            raise ValueError(f"tracker must be a Tracker with config.tracker's settings; got {tracker!r:.80}")
        self.tracker = tracker
        self._last = None
        self._prior = None

    def check_state_dict(self, state: object, *, source: str = "<state>") -> Tracker:
        """The tracker :meth:`load_state_dict` would adopt from ``state``, changing nothing.

        ``state`` must hold exactly ``version``, ``config`` (a valid :class:`KnapsackConfig` as a dict) and
        ``tracker`` (:meth:`Tracker.to_bytes`), and may hold ``prior`` (see :meth:`state_dict`). The
        tracker's settings must equal ``config.tracker`` (a tracker estimates with its own settings;
        restoring one saved under another estimator or ``min_count`` would silently change the method).
        Allocation settings may differ: whether a run may resume with other settings is the engine's call.

        Raises:
            ValueError: one line naming ``source``, the field and the value, or every tracker setting that differs.
        """
        return self._check_state(state, source)[0]

    def _check_state(self, state: object, source: str) -> tuple[Tracker, NDArray[np.float64] | None]:
        """:meth:`check_state_dict`'s tracker and the state's prior weights (None without ``prior``)."""
        if not isinstance(state, dict) or sorted(k for k in map(str, state) if k != "prior") != _STATE_KEYS:
            got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{source}: a planner state holds exactly {_STATE_KEYS} (and 'prior' once a population prior "
                f"was fitted); got {got}"
            )
        version = state["version"]
        if isinstance(version, bool) or version != _STATE_VERSION:
            raise ValueError(f"{source}: not a planner state of version {_STATE_VERSION}; got version={version!r:.40}")
        try:
            KnapsackConfig.from_dict(state["config"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: the planner state's config is invalid: {exc}") from None
        tracker = Tracker.from_bytes(state["tracker"], source=source)
        if tracker.config != self.config.tracker:
            diff = ", ".join(config_diff(_plain(tracker.config), _plain(self.config.tracker)))
            raise ValueError(f"{source}: the tracker was saved with other settings ({diff}); refusing to resume")
        return tracker, (_check_prior(state["prior"], source) if "prior" in state else None)


class EpochCounter:
    """Counts passes over the training prompts for engines that do not report the epoch.

    A new epoch starts at the first prompt id seen again in the current epoch (a sampler shows each
    prompt once per pass). ``epoch`` is 0-based.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self._seen: set[int | str] = set()

    def advance(self, prompt_ids: Ids) -> int:
        """The epoch of a step with these prompts (call once per step, before planning)."""
        ids = check_step_ids("prompt_ids", prompt_ids)
        if any(pid in self._seen for pid in ids):
            self.epoch += 1
            self._seen = set()
            logger.info("epoch %d begins", self.epoch)
        self._seen.update(ids)
        return self.epoch

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"epoch": self.epoch, "seen": sorted(self._seen, key=lambda x: (isinstance(x, str), x))}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        """Restore :meth:`state_dict` output; anything else raises ``ValueError`` naming ``source`` and
        changes nothing."""
        if not isinstance(state, dict) or sorted(map(str, state)) != ["epoch", "seen"]:
            got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{source}: an epoch counter state holds exactly ['epoch', 'seen']; got {got}")
        try:
            epoch = check_int("epoch", state["epoch"], low=0)
            seen = set(check_step_ids("seen", state["seen"]))
        except ValueError as exc:
            raise ValueError(f"{source}: epoch counter {exc}") from None
        self.epoch, self._seen = epoch, seen


def _check_step(name: str, prompt_ids: object) -> tuple[CheckedIds, list[int | str]]:
    """A step's prompt ids, checked once (:func:`check_prompt_ids`, then unique): as the tracker takes
    them (an int64 array when all are int) and as a list."""
    checked = check_prompt_ids(name, prompt_ids)
    if isinstance(checked, np.ndarray):
        ordered = np.sort(checked)
        if ordered.size and np.any(ordered[1:] == ordered[:-1]):
            check_unique_ids(name, checked)  # raises, naming the first repeat
        return checked, checked.tolist()
    if len(set(checked)) != len(checked):
        check_unique_ids(name, checked)
    return checked, checked


def _check_prior(raw: object, source: str) -> NDArray[np.float64]:
    """A state's ``prior``: ``POPULATION_FIT["size"]`` little-endian float64 weights, positive, summing to 1."""
    size = int(POPULATION_FIT["size"])
    if not isinstance(raw, bytes) or len(raw) != 8 * size:
        what = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
        raise ValueError(f"{source}: the planner state's prior must be {8 * size} bytes ({size} float64); got {what}")
    w = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
    if bad.size or abs(float(w.sum()) - 1.0) > 1e-6:
        what = f"prior[{bad[0]}]={float(w[bad[0]])!r}" if bad.size else f"the weights sum to {float(w.sum())!r}"
        raise ValueError(f"{source}: the planner state's prior must be weights >= 0 summing to 1; {what}")
    return w


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-normalised dict (tuples become lists), for comparisons and messages."""
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(obj)))
    return out


__all__ = ["EpochCounter", "PlanRecord", "Planner"]
