"""The per-step allocation procedure of Knapsack RL (SPEC section 4), exact and fast.

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
   maximising ``sum V(N_i, p_i)`` exactly (:func:`knapsack_rl.core.solve.solve_greedy`).
4. Overflow (every effective prompt at ``max_n``): the recipe spreads the rest evenly over the
   effective prompts, exceeding ``max_n`` (``overflow="recipe"``). The default (``overflow="pool"``)
   gives it to the zero pool, then to every non-effective prompt.

``strict_max_n`` (default on, off for ``objective="recipe"``) makes ``max_n`` a bound on *every*
prompt: the recipe bounds only the knapsack's prompts, so its fallback can give a p = 0 prompt far
more than ``max_n``. With it, every split stops at ``max_n``; what a full zero pool cannot take from
the fallback goes back to the knapsack, and a budget that cannot be placed at all (more than
``max_n`` per prompt) raises ``ValueError``.

The *zero pool* is the set of ``p_hat == 0`` prompts; with ``unestimated_in_zero_pool`` (the
recipe's quirk: it stores rate 0 for prompts without an estimate) it also holds the unestimated
prompts. ``objective="recipe"`` turns that quirk on by default and scores an effective prompt that
gets no extra rollout as 0 (not ``V(min_n, p)``), exactly as the recipe's programme does; with the
recipe's defaults it reproduces the recipe's budgets, objective and total.

With unit costs the total is exactly B. With per-prompt ``costs`` (e.g. expected tokens per rollout)
B is in cost units (default ``n * sum(costs)``), counts are placed while they fit, the total cost is
at most B and ``Allocation.unspent`` says what was left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.solve import get_solver
from knapsack_rl.core.validate import check_choice, check_int, check_prob_array, check_real
from knapsack_rl.core.value import get_value, rollouts_for_confidence

logger = logging.getLogger(__name__)

UNESTIMATED, EFFECTIVE, NEGATIVE, POSITIVE = 0, 1, 2, 3
BUCKET_NAMES = ("unestimated", "effective", "negative", "positive")

Objective = Literal["paper", "recipe"]
Overflow = Literal["pool", "recipe"]


PRESETS: dict[str, dict[str, object]] = {
    "recipe": {"objective": "recipe", "fallback": True, "negative_n": 2, "positive_n": 2},
    "project": {"objective": "paper", "fallback": False, "negative_n": 1, "positive_n": 1},
}
"""Named settings for :func:`allocate`: ``allocate(p_hat, **PRESETS["project"])``.

- ``"recipe"``: the authors' settings (the signature's defaults, plus the recipe's scoring and quirks).
- ``"project"``: chosen by the simulation study (docs/simulation.md): the plain objective ``V(N, p)``, no
  fallback (it never helped), and one rollout for a prompt estimated at p = 0 or p = 1 (a cheap
  re-estimation probe; a group of one carries no gradient) instead of two.
"""


ALLOCATE_OPTIONS = (
    "n",
    "total_budget",
    "min_n",
    "max_n",
    "negative_n",
    "positive_n",
    "fallback",
    "alpha",
    "objective",
    "value",
    "overflow",
    "unestimated_in_zero_pool",
    "strict_max_n",
    "solver",
)
"""Keyword arguments of :func:`allocate` besides ``p_hat`` and ``costs``."""


def allocate_options(settings: object, **overrides: object) -> dict[str, object]:
    """:func:`allocate` keyword arguments from a settings object's attributes of the same names.

    Every name of :data:`ALLOCATE_OPTIONS` that ``settings`` has is taken; ``overrides`` add or
    replace entries (for fields an engine's config names differently, e.g. ``n=num_generations``).
    """
    options = {name: getattr(settings, name) for name in ALLOCATE_OPTIONS if hasattr(settings, name)}
    options.update(overrides)
    return options


@dataclass(frozen=True)
class Allocation:
    """Result of :func:`allocate`.

    Attributes:
        budgets: int64 (M,), rollouts per prompt.
        buckets: int8 (M,), bucket code per prompt (``UNESTIMATED``, ``EFFECTIVE``, ``NEGATIVE``,
            ``POSITIVE``).
        objective: knapsack objective over the effective prompts (``sum V(N_i, p_i)`` for
            ``objective="paper"``; the recipe's scoring for ``"recipe"``).
        total_budget: the budget B (rollouts, or cost units with costs).
        knapsack_budget: units given to the knapsack (R, or C when the fallback fired).
        fallback_fired: whether the fallback sent a surplus to the zero pool.
        fallback_surplus: units the fallback moved out of the knapsack.
        overflow: units the knapsack could not place (all effective prompts at ``max_n``).
        unspent: budget left unplaced (non-zero only with costs).
        optimal: whether the knapsack solution is proven optimal.
        gap_bound: bound on the knapsack's distance to optimal (0 when optimal).
        solve_time_s: wall time of the whole call.
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
    settings: dict[str, object] = field(default_factory=dict)

    def bucket_counts(self) -> dict[str, int]:
        """Number of prompts per bucket, keyed by bucket name."""
        counts = np.bincount(self.buckets, minlength=4)
        return {name: int(c) for name, c in zip(BUCKET_NAMES, counts, strict=True)}

    def metrics(self, n: int | None = None) -> dict[str, float]:
        """Allocation metrics (``alloc/...``); ``n`` defaults to the uniform count used."""
        uniform = int(n if n is not None else self.settings.get("n", 8))  # type: ignore[call-overload]
        m = self.budgets.size
        counts = self.bucket_counts()
        out: dict[str, float] = {
            "alloc/budget_max": float(self.budgets.max()),
            "alloc/budget_min": float(self.budgets.min()),
            "alloc/budget_mean": float(self.budgets.mean()),
            "alloc/budget_total": float(self.budgets.sum()),
            "alloc/num_above_n": float((self.budgets > uniform).sum()),
            "alloc/fallback_fired": float(self.fallback_fired),
            "alloc/overflow": float(self.overflow),
            "alloc/objective": self.objective,
            "timing_s/allocate": self.solve_time_s,
        }
        for name, c in counts.items():
            out[f"alloc/{name}_ratio"] = c / m
        return out


def allocate(
    p_hat: ArrayLike,
    *,
    n: int = 8,
    total_budget: float | None = None,
    min_n: int = 2,
    max_n: int = 128,
    negative_n: int = 2,
    positive_n: int = 2,
    fallback: bool = True,
    alpha: float = 0.9,
    objective: Objective = "paper",
    value: str = "paper",
    costs: ArrayLike | None = None,
    overflow: Overflow = "pool",
    unestimated_in_zero_pool: bool | None = None,
    strict_max_n: bool | None = None,
    solver: str = "greedy",
) -> Allocation:
    """Per-prompt rollout counts for one step (see the module docstring for the full procedure).

    Args:
        p_hat: (M,) estimated success rates in [0, 1]; NaN means "no estimate yet".
        n: uniform rollouts per prompt; the default budget is ``n * M``; unestimated prompts get n.
        total_budget: rollouts for the step (cost units when ``costs`` is given).
        min_n, max_n: bounds of an effective prompt's count.
        negative_n, positive_n: counts of prompts estimated at p = 0 and p = 1.
        fallback: enable the recipe's alpha-confidence fallback.
        alpha: target probability of a non-zero gradient used by the fallback.
        objective: ``"paper"`` scores ``V(N, p)``; ``"recipe"`` scores a prompt that gets no extra
            rollout as 0, as the authors' code does.
        value: name of the registered value function (:mod:`knapsack_rl.core.value`).
        costs: optional (M,) positive cost of one rollout per prompt (e.g. expected tokens).
        overflow: where budget goes that the knapsack cannot place: ``"pool"`` (zero pool) or
            ``"recipe"`` (evenly over effective prompts, exceeding ``max_n``).
        unestimated_in_zero_pool: count unestimated prompts in the zero pool (the recipe's quirk);
            None means ``objective == "recipe"``.
        strict_max_n: ``max_n`` bounds every prompt, including the zero pool that takes the fallback's
            surplus (what a full pool cannot take goes back to the knapsack). None means
            ``objective != "recipe"``: the recipe bounds only the knapsack's prompts.
        solver: registered knapsack solver: ``"greedy"`` (exact for unit costs, milliseconds) or
            ``"dp"`` (the reference dynamic programme, O(M x B x max_n); integer costs only).

    Returns:
        An :class:`Allocation`.

    Raises:
        ValueError: naming the argument and the value, for any invalid input.
    """
    start = time.perf_counter()
    p = check_prob_array("p_hat", p_hat)
    m = p.size
    check_int("n", n, low=1)
    check_int("min_n", min_n, low=1)
    check_int("max_n", max_n, low=1)
    if max_n < min_n:
        raise ValueError(f"max_n must be >= min_n; got max_n={max_n}, min_n={min_n}")
    check_int("negative_n", negative_n, low=0)
    check_int("positive_n", positive_n, low=0)
    check_real("alpha", alpha, low=0.0, high=1.0, open_low=True, open_high=True)
    check_choice("objective", objective, ("paper", "recipe"))
    check_choice("overflow", overflow, ("pool", "recipe"))
    value_fn = get_value(value)
    solve = get_solver(solver)
    cost = _check_costs(costs, m)
    budget = _check_budget(total_budget, n, m, cost)
    zero_pool_quirk = objective == "recipe" if unestimated_in_zero_pool is None else bool(unestimated_in_zero_pool)
    strict = objective != "recipe" if strict_max_n is None else bool(strict_max_n)

    buckets = np.full(m, EFFECTIVE, dtype=np.int8)
    buckets[np.isnan(p)] = UNESTIMATED
    buckets[p == 0.0] = NEGATIVE
    buckets[p == 1.0] = POSITIVE
    budgets = np.choose(buckets, [n, min_n, negative_n, positive_n]).astype(np.int64)  # starting counts
    if strict and budgets.max() > max_n:
        i = int(np.argmax(budgets))
        name = {UNESTIMATED: "n", NEGATIVE: "negative_n", POSITIVE: "positive_n"}[int(buckets[i])]
        raise ValueError(
            f"with strict_max_n, {name} must be <= max_n={max_n} (it is the starting count of prompt {i}, "
            f"{BUCKET_NAMES[buckets[i]]}); got {name}={budgets[i]}"
        )
    fixed = float(budgets @ cost)
    if fixed > budget:
        raise ValueError(
            f"total_budget={_fmt(budget)} is below the sum of the lower bounds {_fmt(fixed)} "
            f"(unestimated x n, effective x min_n, p=0 x negative_n, p=1 x positive_n)"
        )
    pools = _Pools.of(buckets, zero_pool_quirk)
    cap = max_n if strict else None
    unit = cost_is_unit(cost)
    remaining = budget - fixed
    knap_budget, surplus = remaining, 0.0
    if pools.eff.size == 0:
        knap_budget = 0.0
        remaining = _place_without_knapsack(budgets, pools, remaining, budget, cost, cap)
    elif fallback and pools.others.size and remaining > 0:
        need = np.minimum(max_n, rollouts_for_confidence(p[pools.eff], alpha)).astype(np.int64)  # int(min(max_n, c_i))
        c_units = float(need @ cost[pools.eff])
        if c_units < remaining:
            back = _spread(budgets, pools.pool, remaining - c_units, cost, cap)  # what a full pool cannot take
            surplus, knap_budget = remaining - c_units - back, c_units + back
            remaining = knap_budget

    sol = solve(
        value_fn,
        p[pools.eff],
        np.full(pools.eff.size, min_n, dtype=np.int64),
        np.full(pools.eff.size, max_n, dtype=np.int64),
        int(knap_budget) if unit else min(knap_budget, remaining),  # type: ignore[arg-type]
        costs=None if unit else cost[pools.eff],
        zero_at_lower=objective == "recipe",
    )
    budgets[pools.eff] += sol.extra
    remaining -= sol.placed
    left_over = knap_budget - sol.placed if (pools.eff.size and unit) else 0.0
    if left_over > 0 and overflow == "recipe":
        remaining = _spread(budgets, pools.eff, remaining, cost, None)
    elif remaining > 0:
        remaining = _spread(budgets, pools.pool, remaining, cost, cap)
        remaining = _spread(budgets, pools.others, remaining, cost, cap)
    if unit and remaining > 0:
        raise ValueError(
            f"total_budget={_fmt(budget)} cannot be placed: every prompt that may take more is at "
            f"max_n={max_n} (at most {max_n * m} for {m} prompts)"
        )

    elapsed = time.perf_counter() - start
    result = Allocation(
        budgets=budgets,
        buckets=buckets,
        objective=sol.objective,
        total_budget=budget,
        knapsack_budget=knap_budget,
        fallback_fired=surplus > 0,
        fallback_surplus=surplus,
        overflow=left_over,
        unspent=remaining,
        optimal=sol.optimal,
        gap_bound=sol.gap_bound,
        solve_time_s=elapsed,
        settings={"n": n, "min_n": min_n, "max_n": max_n, "objective": objective, "value": value, "strict": strict},
    )
    logger.debug("allocate: M=%d B=%s buckets=%s in %.2e s", m, budget, result.bucket_counts(), elapsed)
    return result


def cost_is_unit(cost: NDArray[np.float64]) -> bool:
    """True when every rollout costs one unit (the default: budgets in rollouts)."""
    return bool(np.all(cost == 1.0))


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
    budgets: NDArray[np.int64],
    pools: _Pools,
    remaining: float,
    budget: float,
    cost: NDArray[np.float64],
    cap: int | None,
) -> float:
    """No effective prompt: R over the zero pool, or B evenly over every prompt when it is empty."""
    if pools.zero.size:
        remaining = _spread(budgets, pools.zero, remaining, cost, cap)
        return _spread(budgets, pools.everyone, remaining, cost, cap)
    budgets[:] = 0
    return _spread(budgets, pools.everyone, budget, cost, cap)


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
    limit = np.iinfo(np.int64).max if cap is None else cap
    c = cost[pool]
    if cost_is_unit(c):
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
    each = np.minimum(int(amount // float(c.sum())), limit - budgets[pool])
    budgets[pool] += each
    left = amount - float(each @ c)
    while True:
        ok = budgets[pool] < limit
        fits = np.flatnonzero(ok & (np.cumsum(np.where(ok, c, 0.0)) <= left))  # one more each, in pool order
        if fits.size == 0:
            fits = np.flatnonzero(ok & (c <= left))[:1]  # a later, cheaper prompt may still fit
            if fits.size == 0:
                return left
        budgets[pool[fits]] += 1
        left -= float(c[fits].sum())


def _check_costs(costs: ArrayLike | None, m: int) -> NDArray[np.float64]:
    if costs is None:
        return np.ones(m, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    if c.shape != (m,):
        raise ValueError(f"costs must have shape ({m},) like p_hat; got shape {c.shape}")
    bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
    if bad.size:
        raise ValueError(f"costs must be finite and > 0; costs[{bad[0]}]={float(c[bad[0]])!r}")
    return c


def _check_budget(total_budget: float | None, n: int, m: int, cost: NDArray[np.float64]) -> float:
    if total_budget is None:
        return float(n * cost.sum())
    if isinstance(total_budget, bool):
        raise ValueError(f"total_budget must be a number; got {total_budget!r}")
    if cost_is_unit(cost):
        check_int("total_budget", total_budget, low=0)
        return float(total_budget)
    check_real("total_budget", total_budget, low=0.0)
    return float(total_budget)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
