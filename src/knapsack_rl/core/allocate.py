"""The per-step allocation procedure of Knapsack RL (docs/method.md), exact and fast.

``allocate(p_hat)`` turns per-prompt success-rate estimates into per-prompt rollout counts that sum
to the step's budget. Each prompt falls in one bucket:

====================  =================================  ==============================
bucket                condition                          starting count
====================  =================================  ==============================
``UNESTIMATED``       ``p_hat`` is NaN                   ``n``
``EFFECTIVE``         ``0 < p_hat < 1``                  ``min_n``; joins the knapsack
``NEGATIVE``          ``p_hat == 0``                     ``negative_n``
``POSITIVE``          ``p_hat == 1``                     ``positive_n``
====================  =================================  ==============================

The remaining budget ``R = B - sum(starting counts)`` is then placed:

1. No effective prompt: R is split evenly over the zero pool (remainder one each to the first);
   with an empty zero pool, the whole budget B is split evenly over all prompts (``n`` each when
   ``B = n M``).
2. Fallback (``fallback=True``): ``C = sum_eff int(min(max_n, log(1 - alpha) / log(max(p, 1 - p))))``.
   If ``C < R`` the surplus ``R - C`` is split evenly over the zero pool (or over all non-effective
   prompts when the zero pool is empty) and only C goes into the knapsack. With no non-effective
   prompt at all the fallback cannot fire.
3. The knapsack places its share over the effective prompts, between ``min_n`` and ``max_n``,
   maximising ``sum V(N_i, p_i)`` exactly (:func:`knapsack_rl.core.solve.solve`).
4. Overflow (every effective prompt at ``max_n``): the recipe spreads the rest evenly over the
   effective prompts, exceeding ``max_n`` (``overflow="effective"``). The default (``overflow="pool"``)
   gives it to the zero pool, then to every non-effective prompt.

``strict_max_n`` (default on; the ``"recipe"`` preset turns it off) makes ``max_n`` a bound on *every*
prompt: the recipe bounds only the knapsack's prompts, so its fallback can give a p = 0 prompt far
more than ``max_n``. With it, every split stops at ``max_n``; what a full zero pool cannot take from
the fallback goes back to the knapsack, and a budget that cannot be placed at all (more than
``max_n`` per prompt) raises ``ValueError``.

The *zero pool* is the set of ``p_hat == 0`` prompts; with ``unestimated_in_zero_pool`` (the
recipe's quirk: it stores rate 0 for prompts without an estimate) it also holds the unestimated
prompts. ``objective="recipe"`` scores an effective prompt that gets no extra rollout as 0 (not
``V(min_n, p)``), exactly as the recipe's programme does. Every setting is explicit: the ``"recipe"``
preset (:meth:`knapsack_rl.KnapsackConfig.preset`) sets the recipe's scoring *and* its quirks and
reproduces the recipe's budgets, objective and total; ``objective="recipe"`` alone changes only the
scoring.

Two per-step options go beyond the recipe:

- ``posterior=(a, b)``: each estimated prompt's value is ``E[V(N, p)]`` under ``p ~ Beta(a_i, b_i)``
  (:func:`knapsack_rl.core.value.get_posterior_value`). A posterior has no point mass at 0 or 1, so
  every estimated prompt is *effective* (the p = 0 / p = 1 buckets are not used) and the knapsack
  decides between ``min_n`` and ``max_n``; ``p_hat`` still marks unestimated prompts (NaN) and feeds
  the fallback's cost. ``posterior`` may instead be a :class:`~knapsack_rl.core.population.GridPosterior`
  (each prompt's rate as weights on a grid, e.g. under an empirical-Bayes prior): the value is then
  ``sum_g w_ig V(N, p_g)`` for any registered point value.
- ``floor``: per-prompt counts already committed this step (e.g. a probe's rollouts in two-phase
  planning): every count is at least its floor and the value is that of the total count.

With unit costs the total is exactly B. With per-prompt ``costs`` (e.g. expected tokens per rollout)
B is in cost units (default ``n * sum(costs)``), counts are placed while they fit, the total cost is
at most B and ``Allocation.unspent`` says what was left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.config import AllocationConfig
from knapsack_rl.core.population import GridPosterior, grid_value
from knapsack_rl.core.solve import Solution, solve
from knapsack_rl.core.validate import INT64_MAX, check_int, check_prob_array, check_real, check_real_array
from knapsack_rl.core.value import ValueFn, get_posterior_value, get_value, rollouts_for_confidence

logger = logging.getLogger(__name__)

UNESTIMATED, EFFECTIVE, NEGATIVE, POSITIVE = 0, 1, 2, 3
BUCKET_NAMES = ("unestimated", "effective", "negative", "positive")
_REL_TOL = 1e-9  # relative tolerance of cost arithmetic: 10 x 0.8 units fit a budget of 8.0


@dataclass(frozen=True)
class Allocation:
    """Result of :func:`allocate`.

    Attributes:
        budgets: int64 (M,), rollouts per prompt.
        buckets: int8 (M,), bucket code per prompt (``UNESTIMATED``, ``EFFECTIVE``, ``NEGATIVE``,
            ``POSITIVE``).
        objective: knapsack objective over the effective prompts (``sum V(N_i, p_i)`` for
            ``objective="paper"``; the recipe's scoring for ``"recipe"``; expected values with a posterior).
        total_budget: the budget B (rollouts, or cost units with costs).
        knapsack_budget: units given to the knapsack (R, or C when the fallback fired).
        fallback_fired: whether the fallback sent a surplus to the zero pool.
        fallback_surplus: units the fallback moved out of the knapsack.
        overflow: units the knapsack could not place (all effective prompts at ``max_n``).
        unspent: budget left unplaced (non-zero only with costs).
        optimal: whether the knapsack solution is proven optimal.
        gap_bound: bound on the knapsack's distance to optimal (0 when optimal).
        solve_time_s: wall time of the whole call.
        config: the validated settings the call ran with.

    Example:
        >>> from knapsack_rl import allocate
        >>> alloc = allocate([0.0, 0.5, 0.9, 1.0, float("nan")], n=8)
        >>> alloc.budgets.tolist(), int(alloc.budgets.sum()), alloc.optimal
        ([2, 10, 18, 2, 8], 40, True)
        >>> alloc.bucket_counts()
        {'unestimated': 1, 'effective': 2, 'negative': 1, 'positive': 1}
        >>> alloc.metrics()["alloc/num_above_n"]  # prompts given more than n = 8
        2.0
    """

    budgets: NDArray[np.int64]
    buckets: NDArray[np.int8]
    objective: float
    total_budget: float
    knapsack_budget: float
    fallback_fired: bool
    fallback_surplus: float
    overflow: float
    unspent: float
    optimal: bool
    gap_bound: float
    solve_time_s: float
    config: AllocationConfig

    def bucket_counts(self) -> dict[str, int]:
        """Number of prompts per bucket, keyed by bucket name."""
        counts = np.bincount(self.buckets, minlength=4)
        return {name: int(c) for name, c in zip(BUCKET_NAMES, counts, strict=True)}

    def metrics(self) -> dict[str, float]:
        """Allocation metrics of the step, ``alloc/...`` (documented in docs/metrics.md).

        ``alloc/budget_{max,min,mean,total}``, ``alloc/num_above_n`` (prompts given more than n),
        ``alloc/fallback_fired``, ``alloc/overflow``, ``alloc/objective``, ``alloc/solve_s`` (seconds in
        :func:`allocate`) and ``alloc/<bucket>_ratio`` for the four buckets.
        """
        m = self.budgets.size
        out: dict[str, float] = {
            "alloc/budget_max": float(self.budgets.max()),
            "alloc/budget_min": float(self.budgets.min()),
            "alloc/budget_mean": float(self.budgets.mean()),
            "alloc/budget_total": float(self.budgets.sum()),
            "alloc/num_above_n": float((self.budgets > self.config.n).sum()),
            "alloc/fallback_fired": float(self.fallback_fired),
            "alloc/overflow": float(self.overflow),
            "alloc/objective": self.objective,
            "alloc/solve_s": self.solve_time_s,
        }
        for name, c in self.bucket_counts().items():
            out[f"alloc/{name}_ratio"] = c / m
        return out


@dataclass(frozen=True)
class _Step:
    """The validated per-step arguments of one :func:`allocate` call."""

    p: NDArray[np.float64]  # (M,) estimates, NaN = none
    cost: NDArray[np.float64]  # (M,) cost of one rollout (ones without costs)
    budget: float  # B
    posterior: tuple[NDArray[np.float64], NDArray[np.float64]] | GridPosterior | None  # Beta (a, b) or a grid
    floor: NDArray[np.int64]  # (M,) committed counts (zeros without a floor)
    unit: bool  # every rollout costs one unit

    @property
    def size(self) -> int:
        return int(self.p.size)


def allocate(
    p_hat: ArrayLike,
    config: AllocationConfig | None = None,
    /,
    *,
    total_budget: float | None = None,
    costs: ArrayLike | None = None,
    posterior: tuple[ArrayLike, ArrayLike] | GridPosterior | None = None,
    floor: ArrayLike | None = None,
    **settings: Any,
) -> Allocation:
    """Per-prompt rollout counts for one step (the module docstring gives the procedure).

    Without ``config`` or keywords the settings are ``AllocationConfig()``'s: the paper's procedure as
    published, which is neither preset's allocation. Against these defaults:

    - ``KnapsackConfig.preset("project").allocation`` sets fallback=False, negative_n=1, positive_n=1
      (and the ``project`` preset scores with the posterior: pass ``posterior=``);
    - ``KnapsackConfig.preset("recipe").allocation`` sets objective="recipe", overflow="effective",
      strict_max_n=False, unestimated_in_zero_pool=True (the recipe's quirks).

    Args:
        p_hat: (M,) estimated success rates in [0, 1]; NaN means "no estimate yet".
        config: the settings as an :class:`~knapsack_rl.core.config.AllocationConfig`, e.g.
            ``KnapsackConfig.preset("project").allocation``; or give them as keywords instead
            (``n=8, max_n=64, ...``: the fields of AllocationConfig, defaults there).
        total_budget: rollouts for the step (cost units with ``costs``); default ``n * M`` (``n * sum(costs)``).
        costs: optional (M,) positive cost of one rollout per prompt (e.g. expected tokens).
        posterior: optional ``(a, b)``, each (M,) positive: score ``E[V(N, p)]`` under ``Beta(a_i, b_i)``;
            or a :class:`~knapsack_rl.core.population.GridPosterior` of M rows: score it under those weights.
        floor: optional (M,) non-negative counts already committed this step (budgets never go below).

    Returns:
        An :class:`Allocation`.

    Raises:
        ValueError: naming the argument and the value, for any invalid input.

    Example:
        Five prompts, n = 8 (B = 40 rollouts): never solved, solved half the time, nearly always, always,
        and one without an estimate. The solved and unsolved ones keep ``negative_n`` / ``positive_n``
        (2), the unestimated one n, and the knapsack shares the rest between the two in between:

        >>> from knapsack_rl import KnapsackConfig, allocate
        >>> allocate([0.0, 0.5, 0.9, 1.0, float("nan")], n=8).budgets.tolist()
        [2, 10, 18, 2, 8]
        >>> project = KnapsackConfig.preset("project").allocation  # negative_n = positive_n = 1, no fallback
        >>> allocate([0.0, 0.5, 0.9, 1.0, float("nan")], project).budgets.tolist()
        [1, 11, 19, 1, 8]
        >>> allocate([0.5, 1.5], n=8)
        Traceback (most recent call last):
        ...
        ValueError: p_hat must be in [0, 1] or NaN (no estimate); p_hat[1]=1.5
    """
    start = time.perf_counter()
    cfg = _settings(config, settings)
    step = _check_step(p_hat, cfg, total_budget, costs, posterior, floor)
    result = _allocate(step, cfg, start)
    logger.debug("allocate: M=%d B=%s buckets=%s", step.size, step.budget, result.bucket_counts())
    return result


def _allocate(step: _Step, cfg: AllocationConfig, start: float) -> Allocation:
    """The procedure of the module docstring on a checked step: starting counts, the fallback, the knapsack,
    the overflow; ``start`` is the call's start (``perf_counter``) for ``solve_s``."""
    buckets = _buckets(step)
    budgets = _starting_counts(step, buckets, cfg)
    pools = _Pools.of(buckets, cfg.unestimated_in_zero_pool)
    cap = cfg.max_n if cfg.strict_max_n else None
    remaining = step.budget - _spend(budgets, step.cost)
    knap_budget, surplus = remaining, 0.0
    if pools.eff.size == 0:
        knap_budget = 0.0
        remaining = _place_without_knapsack(budgets, pools, remaining, step, cap)
    elif cfg.fallback and pools.others.size and remaining > 0:
        knap_budget, surplus = _fallback(budgets, pools, remaining, step, cfg, cap)
        remaining = knap_budget
    sol = _solve(step, pools.eff, budgets[pools.eff].copy(), knap_budget, remaining, cfg)
    budgets[pools.eff] += sol.extra
    remaining -= sol.placed
    left_over = knap_budget - sol.placed if (pools.eff.size and step.unit) else 0.0
    remaining = max(_place_overflow(budgets, pools, remaining, left_over, step, cfg, cap), 0.0)  # cost rounding
    result = Allocation(
        budgets, buckets, sol.objective, step.budget, knap_budget, surplus > 0, surplus, left_over, remaining,
        sol.optimal, sol.gap_bound, time.perf_counter() - start, cfg,
    )  # fmt: skip
    return result


# ----------------------------------------------------------------------------- phases
def _settings(config: AllocationConfig | None, settings: dict[str, Any]) -> AllocationConfig:
    """The one validated settings object: ``config`` or the keywords (never both)."""
    if config is not None:
        if settings:
            raise ValueError(f"give the settings either as config or as keywords, not both; got {sorted(settings)}")
        if not isinstance(config, AllocationConfig):
            raise ValueError(f"config must be an AllocationConfig; got {type(config).__name__}")
        return config
    valid = AllocationConfig.__dataclass_fields__
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"allocate() got unknown setting(s) {unknown}; valid: {sorted(valid)}")
    return AllocationConfig(**settings)


def _check_step(
    p_hat: ArrayLike,
    cfg: AllocationConfig,
    total_budget: float | None,
    costs: ArrayLike | None,
    posterior: tuple[ArrayLike, ArrayLike] | GridPosterior | None,
    floor: ArrayLike | None,
) -> _Step:
    """Validate the per-step data once (each error names the argument and the value)."""
    p = check_prob_array("p_hat", p_hat)
    m = p.size
    cost = np.ones(m) if costs is None else check_real_array("costs", costs, m)
    bad = np.flatnonzero(cost <= 0)
    if bad.size:
        raise ValueError(f"costs must be > 0; costs[{bad[0]}]={float(cost[bad[0]])!r}")
    unit = bool(np.all(cost == 1.0))
    budget = _check_budget(total_budget, cfg.n, cost, unit)
    post = None if posterior is None else _check_posterior(posterior, m)
    low = np.zeros(m, dtype=np.int64) if floor is None else _check_floor(floor, m, cfg)
    return _Step(p=p, cost=cost, budget=budget, posterior=post, floor=low, unit=unit)


def _buckets(step: _Step) -> NDArray[np.int8]:
    """Bucket per prompt: NaN -> unestimated; 0 < p < 1 (every estimate with a posterior) -> effective."""
    buckets = np.full(step.size, EFFECTIVE, dtype=np.int8)
    if step.posterior is None:
        buckets[step.p == 0.0] = NEGATIVE
        buckets[step.p == 1.0] = POSITIVE
    buckets[np.isnan(step.p)] = UNESTIMATED
    return buckets


def _starting_counts(step: _Step, buckets: NDArray[np.int8], cfg: AllocationConfig) -> NDArray[np.int64]:
    """n / min_n / negative_n / positive_n by bucket, raised to the floor; checked against the budget."""
    budgets = np.choose(buckets, [cfg.n, cfg.min_n, cfg.negative_n, cfg.positive_n]).astype(np.int64)
    np.maximum(budgets, step.floor, out=budgets)
    fixed = _spend(budgets, step.cost)
    if fixed > step.budget * (1 + _REL_TOL):
        raise ValueError(
            f"total_budget={_fmt(step.budget)} is below the sum of the lower bounds {_fmt(fixed)} "
            f"(unestimated x n, effective x min_n, p=0 x negative_n, p=1 x positive_n, raised to the floor)"
        )
    return budgets


def _fallback(
    budgets: NDArray[np.int64], pools: _Pools, remaining: float, step: _Step, cfg: AllocationConfig, cap: int | None
) -> tuple[float, float]:
    """The recipe's fallback: the knapsack keeps ``C = sum int(min(max_n, cost_i))``; the surplus goes to the pool.

    Returns (units for the knapsack, surplus moved to the pool). What a full pool cannot take returns
    to the knapsack.
    """
    p_eff = step.p[pools.eff]
    need = np.minimum(cfg.max_n, rollouts_for_confidence(p_eff, cfg.alpha)).astype(np.int64)  # int(min(max_n, c))
    c_units = _spend(need, step.cost[pools.eff])
    if c_units >= remaining:
        return remaining, 0.0
    back = _spread(budgets, pools.pool, remaining - c_units, step.cost, cap)  # what a full pool cannot take
    return c_units + back, remaining - c_units - back


def _solve(
    step: _Step,
    eff: NDArray[np.intp],
    lower: NDArray[np.int64],
    knap_budget: float,
    remaining: float,
    cfg: AllocationConfig,
) -> Solution:
    """The knapsack over the effective prompts, from their starting counts up to max_n."""
    value: ValueFn
    params: Any
    if isinstance(step.posterior, GridPosterior):  # the parameter is the row of the posterior
        value, params = grid_value(get_value(cfg.value), step.posterior), eff.astype(np.float64)
    elif step.posterior is not None:
        value = get_posterior_value(cfg.value)
        params = (step.posterior[0][eff], step.posterior[1][eff])
    else:
        value, params = get_value(cfg.value), step.p[eff]
    upper = np.maximum(np.full(eff.size, cfg.max_n, dtype=np.int64), lower)
    return solve(
        value,
        params,
        lower,
        upper,
        int(knap_budget) if step.unit else min(knap_budget, remaining),
        costs=None if step.unit else step.cost[eff],
        zero_at_lower=cfg.objective == "recipe",
        method=cfg.solver,
    )


def _place_overflow(
    budgets: NDArray[np.int64],
    pools: _Pools,
    remaining: float,
    left_over: float,
    step: _Step,
    cfg: AllocationConfig,
    cap: int | None,
) -> float:
    """Budget the knapsack could not place: over the effective prompts (recipe) or the pools; checked."""
    if left_over > 0 and cfg.overflow == "effective":
        remaining = _spread(budgets, pools.eff, remaining, step.cost, None)
    elif remaining > 0:
        remaining = _spread(budgets, pools.pool, remaining, step.cost, cap)
        remaining = _spread(budgets, pools.others, remaining, step.cost, cap)
    if step.unit and remaining > 0:
        m = step.size
        raise ValueError(
            f"total_budget={_fmt(step.budget)} cannot be placed: every prompt that may take more is at "
            f"max_n={cfg.max_n} (at most {cfg.max_n * m} for {m} prompts)"
        )
    return remaining


def uniform_allocation(
    p_hat: ArrayLike, config: AllocationConfig, *, total_budget: int | None = None, posterior: Any = None
) -> Allocation:
    """The uniform baseline as an :class:`Allocation`: ``B`` split evenly (n each when ``B = n M``).

    Buckets and the objective (``sum V(N_i, p_i)`` of the effective prompts at their uniform counts)
    are computed as :func:`allocate` would, so both arms of a comparison log the same metrics.
    """
    start = time.perf_counter()
    step = _check_step(p_hat, config, total_budget, None, posterior, None)
    buckets = _buckets(step)
    budgets = np.zeros(step.size, dtype=np.int64)
    everyone = np.arange(step.size)
    left = _spread(budgets, everyone, step.budget, step.cost, config.max_n if config.strict_max_n else None)
    if left > 0:
        raise ValueError(f"total_budget={_fmt(step.budget)} exceeds max_n={config.max_n} for each of {step.size}")
    eff = np.flatnonzero(buckets == EFFECTIVE)
    sol = _solve(step, eff, budgets[eff].copy(), 0.0, 0.0, config)  # zero extra: the objective of these counts
    return Allocation(
        budgets=budgets,
        buckets=buckets,
        objective=sol.objective,
        total_budget=step.budget,
        knapsack_budget=0.0,
        fallback_fired=False,
        fallback_surplus=0.0,
        overflow=0.0,
        unspent=0.0,
        optimal=True,
        gap_bound=0.0,
        solve_time_s=time.perf_counter() - start,
        config=config,
    )


@dataclass(frozen=True)
class _Pools:
    """Index sets of one step: effective prompts, the zero pool, all others, and where surplus goes."""

    eff: NDArray[np.intp]
    zero: NDArray[np.intp]
    others: NDArray[np.intp]
    everyone: NDArray[np.intp]

    @property
    def pool(self) -> NDArray[np.intp]:
        """Where surplus goes: the zero pool, or every non-effective prompt when it is empty."""
        return self.zero if self.zero.size else self.others

    @classmethod
    def of(cls, buckets: NDArray[np.int8], unestimated_in_zero_pool: bool) -> _Pools:
        zero = (buckets == NEGATIVE) | (unestimated_in_zero_pool & (buckets == UNESTIMATED))
        return cls(
            eff=np.flatnonzero(buckets == EFFECTIVE),
            zero=np.flatnonzero(zero),
            others=np.flatnonzero(buckets != EFFECTIVE),
            everyone=np.arange(buckets.size),
        )


def _place_without_knapsack(
    budgets: NDArray[np.int64], pools: _Pools, remaining: float, step: _Step, cap: int | None
) -> float:
    """No effective prompt: R over the zero pool, or B evenly over every prompt when it is empty.

    With a floor, the even split is of what is left above the committed counts.
    """
    if pools.zero.size:
        remaining = _spread(budgets, pools.zero, remaining, step.cost, cap)
        return _spread(budgets, pools.everyone, remaining, step.cost, cap)
    budgets[:] = step.floor
    return _spread(budgets, pools.everyone, step.budget - _spend(budgets, step.cost), step.cost, cap)


def _spend(counts: NDArray[np.int64], cost: NDArray[np.float64]) -> float:
    """``sum_i counts_i * cost_i`` as a plain reduction (a 1-D BLAS product wakes thread pools)."""
    return float(np.sum(counts * cost))


def _spread(
    budgets: NDArray[np.int64], pool: NDArray[np.intp], amount: float, cost: NDArray[np.float64], cap: int | None
) -> float:
    """Add ``amount`` evenly over ``pool``, no count above ``cap``; returns what is left.

    With unit costs: ``amount // |pool|`` each and one more to the first ``amount % |pool|``
    (repeated over the prompts still below ``cap`` until nothing is left or all are full). With
    costs: ``floor(amount / sum c)`` rollouts each, then passes in pool order add one rollout to
    each prompt that still fits.
    """
    if amount <= 0 or pool.size == 0:
        return amount
    limit = INT64_MAX if cap is None else cap
    c = cost[pool]
    if bool(np.all(c == 1.0)):
        units = round(amount)
        while units > 0:
            open_ = pool[budgets[pool] < limit]
            if open_.size == 0:
                break
            give = np.minimum(limit - budgets[open_], max(units // open_.size, 1))  # even share, capped
            give = np.minimum(give, np.maximum(units - (np.cumsum(give) - give), 0))  # first ones while it lasts
            budgets[open_] += give
            units -= int(give.sum())
        return float(units)
    tol = _REL_TOL * max(amount, float(c.max()))  # 10 x 0.8 fits 8.0 despite rounding
    each = np.minimum(int((amount + tol) // float(c.sum())), limit - budgets[pool])
    budgets[pool] += each
    left = amount - float(np.sum(each * c))
    while True:
        ok = budgets[pool] < limit
        fits = np.flatnonzero(ok & (np.cumsum(np.where(ok, c, 0.0)) <= left + tol))  # one more each, in order
        if fits.size == 0:
            fits = np.flatnonzero(ok & (c <= left + tol))[:1]  # a later, cheaper prompt may still fit
            if fits.size == 0:
                return max(left, 0.0)
        budgets[pool[fits]] += 1
        left -= float(c[fits].sum())


def _check_budget(total_budget: float | None, n: int, cost: NDArray[np.float64], unit: bool) -> float:
    if total_budget is None:
        return float(n * cost.sum())
    if unit:
        return float(check_int("total_budget", total_budget, low=0, high=2**53))  # exact as a float
    return check_real("total_budget", total_budget, low=0.0)


def _check_posterior(
    posterior: tuple[ArrayLike, ArrayLike] | GridPosterior, m: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | GridPosterior:
    if isinstance(posterior, GridPosterior):
        if len(posterior) != m:
            raise ValueError(f"posterior must have a row per prompt ({m}); got {len(posterior)} rows")
        return posterior
    if not isinstance(posterior, tuple | list) or len(posterior) != 2:
        raise ValueError(f"posterior must be a pair (a, b) of arrays; got {type(posterior).__name__}")
    a, b = (check_real_array(f"posterior[{k}]", v, m) for k, v in enumerate(posterior))
    for k, arr in enumerate((a, b)):
        bad = np.flatnonzero(arr <= 0)
        if bad.size:
            raise ValueError(f"posterior[{k}] must be > 0; posterior[{k}][{bad[0]}]={float(arr[bad[0]])!r}")
    return a, b


def _check_floor(floor: ArrayLike, m: int, cfg: AllocationConfig) -> NDArray[np.int64]:
    raw = np.asarray(floor)
    if raw.dtype.kind not in "iu" or raw.shape != (m,):
        raise ValueError(f"floor must be ({m},) integers; got dtype {raw.dtype}, shape {raw.shape}")
    out = raw.astype(np.int64)
    bad = np.flatnonzero((out < 0) | ((out > cfg.max_n) & cfg.strict_max_n))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"floor must be in [0, max_n={cfg.max_n}]; floor[{i}]={int(out[i])}")
    return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
