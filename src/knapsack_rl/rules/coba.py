"""CoBA-RL-like capability-oriented budget allocation as a one-round rule, ``coba`` (NumPy only).

CoBA-RL (Yao et al., arXiv 2602.03048; the authors' verl recipe ``recipe/coba_rl/budget_allocators.py``
of GitHub Within-yao/CoBA-RL, its ``BetaAllocator``) gives each prompt of the step's batch a rollout
count from a *capability-oriented value*: a Beta density over the prompt's success rate whose shape
follows the model's global failure rate, times a saturating function of the count. The counts come from
a greedy over marginal gains (a heap in the authors' code) under the step's fixed total. Everything is
decided before generation from what earlier steps saw: one round on the step's batch, no draws, so it
fits engines with one generation call per step (TRL, verl's hooks) as well as the simulator and the
reference trainer.
:class:`CobaRule` documents the equations and every departure; the pure functions below are its parts,
each testable on its own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.validate import check_int, check_real, check_step_ids
from knapsack_rl.rules.builtin import RuleSetup, register_rule
from knapsack_rl.rules.interface import Limits, Needs, Round, Rule, Selection, StepLog, StepSpec

logger = logging.getLogger(__name__)

HARD_BELOW = 0.05
"""Prompts with an estimate below this are *very hard*: no share of the greedy, first in the fallback."""
EASY_ABOVE = 0.99
"""Prompts with an estimate above this are *very easy*: no share of the greedy, last in the fallback."""
MIN_EXPLORE_RATIO = 0.6
"""Share of the budget above the floors that the greedy gets when at most half the batch is explorable
(it rises linearly to ``explore_ratio`` at half the batch)."""
WEIGHT_CLIP = 1e-6
"""The fallback's weights are ``1 - clip(p, WEIGHT_CLIP, 1 - WEIGHT_CLIP)``."""
_STATE_KEYS = ["ids", "step_success", "successes", "totals"]


@dataclass(frozen=True)
class CobaConfig:
    """Settings of :class:`CobaRule`; the defaults are the authors' (their run script, else their class)."""

    n_low: int = 2
    """Fewest rollouts of a prompt (``n_low``) once the budget covers ``n_low`` for every prompt."""
    n_up: int = 128
    """Most rollouts of a prompt in a step (``n_up``; the run script's 128)."""
    window: int = 1
    """Steps kept per prompt for its success rate, and steps of the global failure rate (the run
    script's ``sliding_window_size`` 1; the class default is 3)."""
    beta_sum: float = 11.0
    """alpha + beta of the capability density (the run script's ``beta_params_sum`` 11)."""
    tau_min: float = 3.0
    """Saturation scale at zero spread of the success rates."""
    tau_max: float = 12.0
    """Saturation scale at a spread of ``var_max`` or more."""
    var_max: float = 0.1667
    """Variance of the success rates that maps to ``tau_max``."""
    smoothing: float = 0.01
    """Success rates are clipped to [smoothing, 1 - smoothing] in the value and in tau."""
    explore_ratio: float = 0.8
    """Share of the budget above the floors that the greedy gets when over half the batch is explorable."""

    def __post_init__(self) -> None:
        check_int("n_low", self.n_low, low=1)
        check_int("n_up", self.n_up, low=self.n_low)
        check_int("window", self.window, low=1)
        check_real("beta_sum", self.beta_sum, low=2.0)
        check_real("tau_min", self.tau_min, low=0.0, open_low=True)
        check_real("tau_max", self.tau_max, low=self.tau_min)
        check_real("var_max", self.var_max, low=0.0, open_low=True)
        check_real("smoothing", self.smoothing, low=0.0, high=0.5, open_low=True, open_high=True)
        check_real("explore_ratio", self.explore_ratio, low=0.0, high=1.0)


# --------------------------------------------------------------------------- the value and its parts
def capability_shape(failure_rate: float | None, beta_sum: float) -> tuple[float, float]:
    """Shape (alpha, beta) of the capability density from the global failure rate F (None: no step yet).

    ``phi(F) = F`` if ``F > 1/2`` else ``1 / (1 + exp(-10 (F - 1/2)))``; ``alpha = clip(1 + (S - 2) phi(F),
    1, S - 1)``, ``beta = S - alpha`` (S = ``beta_sum``). The density's mode ``(alpha - 1) / (S - 2)`` is
    ``phi(F)``: a failing model values easy prompts (exploit), a capable one hard prompts (explore).
    Before any step: ``(S - 2, 2)``.
    """
    if failure_rate is None:
        return beta_sum - 2.0, 2.0
    phi = failure_rate if failure_rate > 0.5 else 1.0 / (1.0 + math.exp(-10.0 * (failure_rate - 0.5)))
    alpha = min(max(1.0 + (beta_sum - 2.0) * phi, 1.0), beta_sum - 1.0)
    return alpha, beta_sum - alpha


def saturation_tau(p: NDArray[np.float64], config: CobaConfig) -> float:
    """``tau = tau_min + (tau_max - tau_min) clip(Var(p~) / var_max, 0, 1)`` over the explorable prompts,
    ``p~ = clip(p, smoothing, 1 - smoothing)``, Var the population variance (their spread sets how fast
    value saturates)."""
    q = np.clip(p, config.smoothing, 1.0 - config.smoothing)
    v = float(np.clip(np.mean((q - np.mean(q)) ** 2) / config.var_max, 0.0, 1.0))
    return config.tau_min + (config.tau_max - config.tau_min) * v


def beta_density(p: NDArray[np.float64], alpha: float, beta: float) -> NDArray[np.float64]:
    """``p^(alpha-1) (1-p)^(beta-1) / B(alpha, beta)`` (log-gamma form), for p in (0, 1)."""
    log_b = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    out: NDArray[np.float64] = np.exp((alpha - 1.0) * np.log(p) + (beta - 1.0) * np.log1p(-p) - log_b)
    return out


def capability_value(
    n: NDArray[np.int64], p: NDArray[np.float64], shape: tuple[float, float], tau: float, smoothing: float
) -> NDArray[np.float64]:
    """``V(n, p) = (1 - exp(-n p~ (1 - p~) / tau)) Beta(p~; alpha, beta)``, ``p~ = clip(p, smoothing, 1 - smoothing)``:
    the density is the prompt's training value, the first factor (the saturation) the share of it that
    n rollouts collect."""
    q = np.clip(p, smoothing, 1.0 - smoothing)
    out: NDArray[np.float64] = -np.expm1(-n * q * (1.0 - q) / tau) * beta_density(q, *shape)
    return out


def marginal_gains(
    p: NDArray[np.float64], shape: tuple[float, float], tau: float, smoothing: float, start: int, levels: int
) -> NDArray[np.float64]:
    """(K, levels) gains ``V(n + 1, p_i) - V(n, p_i)`` for ``n = start, ..., start + levels - 1``, in closed
    form ``w_i exp(-n c_i) (1 - exp(-c_i))`` with ``w_i = Beta(p~_i)``, ``c_i = p~_i (1 - p~_i) / tau > 0``:
    strictly decreasing along each row (V is concave in n), so the greedy below is exact."""
    q = np.clip(p, smoothing, 1.0 - smoothing)
    c = (q * (1.0 - q) / tau)[:, None]  # (K, 1)
    n = np.arange(start, start + levels, dtype=np.float64)[None, :]  # (1, levels)
    out: NDArray[np.float64] = beta_density(q, *shape)[:, None] * np.exp(-n * c) * -np.expm1(-c)
    return out


def greedy_top(gains: NDArray[np.float64], extra: int) -> NDArray[np.int64]:
    """Units per row when ``extra`` units go one at a time to the largest next gain: the authors' heap.

    ``gains`` (K, L): row i's gain from its (j+1)-th unit, non-increasing along each row. The heap holds
    each row's next gain keyed ``(-gain, row)`` and pops ``extra`` times (or until every row has taken L).
    Proof that this equals the ``extra`` first entries of all K x L in the order (gain descending, row
    ascending, column ascending): an untaken entry is never above its row's next one (rows do not
    increase), so the largest untaken entry in that order is always in the heap, and the heap pops it
    (ties: the lower row, as the heap's tuple order). A stable sort of the row-major gains does it.
    """
    rows, levels = gains.shape
    take = min(extra, rows * levels)
    if take <= 0:
        return np.zeros(rows, dtype=np.int64)
    order = np.argsort(-gains.ravel(), kind="stable")[:take]  # ties keep row-major order: row, then column
    return np.bincount(order // levels, minlength=rows).astype(np.int64)


# --------------------------------------------------------------------------- the allocation
def coba_allocate(
    p: NDArray[np.float64], total: int, shape: tuple[float, float], config: CobaConfig
) -> NDArray[np.int64]:
    """Counts (M,) summing to ``total``: the authors' ``BetaAllocator.allocate`` (see :class:`CobaRule`).

    ``p`` (M,): each prompt's success rate over its last ``window`` steps, NaN if never seen. Requires
    ``n_up * M >= total`` (:meth:`CobaRule.limits` checks it).
    """
    m, cfg = p.size, config
    seen = ~np.isnan(p)
    if not seen.any() or total < m * cfg.n_low:
        return _even(total, np.arange(m), np.zeros(m, dtype=np.int64), cfg.n_up)[0]
    p = np.where(seen, p, 0.5)
    counts = np.full(m, cfg.n_low, dtype=np.int64)
    rest = total - m * cfg.n_low
    hard, easy = p < HARD_BELOW, p > EASY_ABOVE
    explore = ~hard & ~easy
    e = int(explore.sum())
    low = MIN_EXPLORE_RATIO
    ratio = (cfg.explore_ratio if e > m / 2 else low + (cfg.explore_ratio - low) * (e / m * 2)) if e else low
    budget = int(rest * ratio)
    if e and budget > 0:
        idx = np.flatnonzero(explore)
        tau = saturation_tau(p[idx], cfg)
        gains = marginal_gains(p[idx], shape, tau, cfg.smoothing, cfg.n_low, min(cfg.n_up - cfg.n_low, budget))
        added = greedy_top(gains, budget)
        counts[idx] += added
        rest -= int(added.sum())
    for group in (hard, explore, easy):  # the fallback: very hard first, then explorable, then very easy
        if rest > 0 and group.any():
            rest = _weighted(counts, np.flatnonzero(group), p, rest, cfg.n_up)
    while rest > 0:  # departure: the authors' code leaves these unspent (see CobaRule)
        logger.debug("coba: %d rollouts left after the fallback; spread over prompts below n_up", rest)
        counts, rest = _even(rest, np.flatnonzero(counts < cfg.n_up), counts, cfg.n_up)
    return counts


def _even(total: int, idx: NDArray[np.intp], counts: NDArray[np.int64], n_up: int) -> tuple[NDArray[np.int64], int]:
    """``total`` split evenly over ``idx`` (the first ``total % len`` get one more), each capped at
    ``n_up``; returns the new counts and what the caps left over."""
    out = counts.copy()
    if idx.size == 0 or total <= 0:
        return out, total
    q, r = divmod(total, idx.size)
    take = np.minimum(q + (np.arange(idx.size) < r), n_up - out[idx])
    out[idx] += take
    return out, total - int(take.sum())


def _weighted(counts: NDArray[np.int64], idx: NDArray[np.intp], p: NDArray[np.float64], rest: int, n_up: int) -> int:
    """The authors' ``weighted`` fallback over ``idx`` (in place): prompt by prompt in batch order,
    ``min(floor(rest * w_i / sum w), n_up - n_i)`` with ``w = 1 - clip(p, 1e-6, 1 - 1e-6)`` and ``rest``
    what is still left at that prompt; then what remains split evenly (capped). Returns what is left."""
    avail = idx[counts[idx] < n_up]
    if avail.size == 0:
        return rest
    weights = [1.0 - float(x) for x in np.clip(p[avail], WEIGHT_CLIP, 1.0 - WEIGHT_CLIP)]
    total_w = sum(weights)  # left-to-right, as the authors' sum()
    for k, w in zip(avail.tolist(), weights, strict=True):
        take = min(int(rest * w / total_w), n_up - int(counts[k]))
        counts[k] += take
        rest -= take
    out, rest = _even(rest, avail[counts[avail] < n_up], counts, n_up)
    counts[:] = out
    return rest


# --------------------------------------------------------------------------- the rule
class CobaRule(Rule):
    """CoBA-RL-like allocation (Yao et al., arXiv 2602.03048; the authors' ``BetaAllocator``), one round.

    Only the paper's abstract and summaries could be read here, not its body, so its equation numbers are
    not cited; the equations below are those of the authors' code (function names in brackets), written
    from scratch. Per prompt, a success is a reward of exactly 1 (as the authors' ``reward == 1.0``).

    **Estimates** (``update_stats``, ``commit_step_stats``): ``p_i`` = successes / rollouts of prompt i
    over the last ``window`` steps in which it had rollouts (NaN: never seen). The global failure rate
    ``F_t = 1 - mean over the last window steps of s_t``, ``s_t`` the mean over the step's prompts of each
    prompt's success rate in that step.

    **Value** (``_compute_value``, ``_beta_pdf``, ``_update_tau_global``, ``_update_beta_params...``)::

        V_i(n) = (1 - exp(-n p~_i (1 - p~_i) / tau)) * Beta(p~_i; alpha_t, beta_t)     p~ = clip(p, 0.01, 0.99)
        alpha_t = clip(1 + (S - 2) phi(F_t), 1, S - 1),  beta_t = S - alpha_t,  phi(F) = F if F > 1/2
                  else sigmoid(10 (F - 1/2))                                   (S = beta_sum = 11)
        tau = tau_min + (tau_max - tau_min) clip(Var(p~ of the explorable prompts) / var_max, 0, 1)

    **Allocation** of the step's B over its M prompts (``allocate``): if no prompt was seen, or
    ``B < M n_low``, B split evenly (the first B mod M get one more). Else unseen prompts count as
    p = 0.5; every prompt gets ``n_low``; of the rest R, the explorable prompts (0.05 <= p <= 0.99, E of
    them) share ``floor(R * r)`` (``r = explore_ratio`` if E > M/2, else ``0.6 + (explore_ratio - 0.6) 2E/M``;
    0 if E = 0) by the greedy over marginal gains ``V_i(n + 1) - V_i(n)`` with n from n_low to n_up: each
    unit to the largest gain (a heap, ties to the earlier prompt). What is left goes through the
    fallback: very hard prompts (p < 0.05) first, then explorable, then very easy (p > 0.99), each group
    weighted by ``1 - p`` (prompt by prompt, floor of the remaining share, capped at n_up) and its
    remainder split evenly (capped).

    **Where it departs, and why:**

    - *Vectorised greedy.* The gains ``w_i e^{-n c_i} (1 - e^{-c_i})`` (closed form of the difference;
      ``c_i > 0``) strictly decrease in n, so the heap's picks are the largest gains in the order (gain,
      earlier prompt, lower n); :func:`greedy_top` takes them with one stable sort (proof in its
      docstring; equality with a literal heap is tested). Nothing else is approximated.
    - *Exactly B every step.* When n_up binds inside the fallback's last group, the authors' code ends
      the step with fewer than B rollouts; here what is left is split evenly over the prompts still below
      n_up (repeatedly) so that a step spends B, as every fixed-budget rule here. It fires only when
      n_up binds. A batch that cannot take B (``n_up * M < B``) is refused by :meth:`limits`.
    - *State.* Keyed by prompt id (the authors key by dataset index); a checkpoint restores all of it
      (their ``resume=False`` mode, which keeps only the per-prompt rates, is not offered). The
      fallback's method is the authors' default (``weighted``, ``weight_alpha = 1``).
    - *Defaults.* The authors' run script (n_low 2, n_up 128, window 1, S = 11) and class (tau 3..12,
      var_max 0.1667, smoothing 0.01, explore_ratio 0.8); they fit a fixed B = N x M unchanged.
    """

    name = "coba"

    def __init__(self, config: CobaConfig | None = None) -> None:
        self.config = config if config is not None else CobaConfig()
        self._windows: dict[Any, list[tuple[int, int]]] = {}  # prompt id -> [(successes, rollouts)] per step
        self._step_success: list[float] = []  # the last ``window`` steps' mean per-prompt success rate

    @property
    def failure_rate(self) -> float | None:
        """The global failure rate F_t over the last ``window`` steps (None before the first step)."""
        if not self._step_success:
            return None
        return float(np.mean([1.0 - s for s in self._step_success]))

    @property
    def shape(self) -> tuple[float, float]:
        """(alpha_t, beta_t) of the capability density now (:func:`capability_shape`)."""
        return capability_shape(self.failure_rate, self.config.beta_sum)

    def estimate(self, ids: NDArray[Any]) -> NDArray[np.float64]:
        """(K,) each prompt's success rate over its window (NaN: never seen)."""
        out = np.full(len(ids), np.nan)
        for k, pid in enumerate(np.asarray(ids).tolist()):
            win = self._windows.get(pid)
            if win:
                out[k] = sum(s for s, _ in win) / sum(t for _, t in win)
        return out

    def needs(self) -> Needs:
        """One round on the batch; a single rollout only with ``n_low = 1``."""
        return Needs(singles=self.config.n_low == 1)

    def limits(self, spec: StepSpec) -> Limits:
        cfg, b, m = self.config, spec.total_budget, spec.size
        if cfg.n_up * m < b:
            raise ValueError(
                f"rule {self.name!r} cannot place total_budget={b} over {m} prompts with n_up={cfg.n_up}; "
                f"it needs n_up >= {math.ceil(b / m)}"
            )
        return Limits(b, True, max(1, min(cfg.n_low, b // m)), cfg.n_up)

    def next_round(self, log: StepLog) -> Round | None:
        if log.rounds:
            return None
        return Round(coba_allocate(self.estimate(log.ids), log.spec.total_budget, self.shape, self.config))

    def finish(self, log: StepLog) -> Selection:
        """Record the step (per prompt, and the step's mean success rate); every rollout is trained on."""
        hits = np.bincount(log.rollout_candidate, weights=(log.rewards == 1.0).astype(np.float64), minlength=log.size)
        step: dict[Any, list[int]] = {}
        for pid, s, t in zip(log.ids.tolist(), hits.astype(np.int64).tolist(), log.counts.tolist(), strict=True):
            if t > 0:
                acc = step.setdefault(pid, [0, 0])
                acc[0], acc[1] = acc[0] + s, acc[1] + t
        w = self.config.window
        for pid, (s, t) in step.items():
            self._windows[pid] = [*self._windows.get(pid, []), (s, t)][-w:]
        if step:
            self._step_success = [*self._step_success, float(np.mean([s / t for s, t in step.values()]))][-w:]
        return Selection(np.ones(log.rewards.size, dtype=bool), {"tracker/prompts": float(len(self._windows))})

    def state_dict(self) -> dict[str, Any]:
        """Per prompt its window of (successes, rollouts) per step, and the global window, as plain lists."""
        ids = sorted(self._windows, key=lambda pid: (isinstance(pid, str), pid))
        return {
            "ids": ids,
            "step_success": list(self._step_success),
            "successes": [[s for s, _ in self._windows[pid]] for pid in ids],
            "totals": [[t for _, t in self._windows[pid]] for pid in ids],
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        """Restore :meth:`state_dict` output; anything else is refused naming ``source``, changing nothing."""
        if not isinstance(state, dict) or sorted(state) != _STATE_KEYS:
            got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{source}: not a state of rule {self.name!r}: expected the keys {_STATE_KEYS}; got {got}")
        ids = check_step_ids(f"{source}: ids", state["ids"])
        w = self.config.window
        succ = _int_rows(f"{source}: successes", state["successes"], len(ids), w, low=0)
        tot = _int_rows(f"{source}: totals", state["totals"], len(ids), w, low=1)
        for i, (srow, trow) in enumerate(zip(succ, tot, strict=True)):
            if len(srow) != len(trow) or any(s > t for s, t in zip(srow, trow, strict=False)):
                raise ValueError(f"{source}: successes[{i}]={srow} must match totals[{i}]={trow} in length, each <= it")
        glob = state["step_success"]
        if not isinstance(glob, list) or len(glob) > w:
            raise ValueError(f"{source}: step_success must be a list of at most window={w} rates; got {glob!r:.80}")
        rates = [check_real(f"{source}: step_success[{i}]", v, low=0.0, high=1.0) for i, v in enumerate(glob)]
        self._windows = {pid: list(zip(s, t, strict=True)) for pid, s, t in zip(ids, succ, tot, strict=True)}
        self._step_success = rates


def _int_rows(name: str, rows: object, size: int, window: int, *, low: int) -> list[list[int]]:
    """``rows``: a list of ``size`` lists of 1..``window`` integers >= ``low`` (bools refused)."""
    if not isinstance(rows, list) or len(rows) != size:
        raise ValueError(f"{name} must be a list of {size} lists (one per id); got {rows!r:.80}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not 1 <= len(row) <= window:
            raise ValueError(f"{name}[{i}] must be a list of 1 to window={window} counts; got {row!r:.80}")
        out.append([check_int(f"{name}[{i}][{j}]", v, low=low) for j, v in enumerate(row)])
    return out


@register_rule("coba")
def _coba(setup: RuleSetup) -> Rule:
    return CobaRule()
