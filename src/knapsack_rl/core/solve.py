"""Solvers for the separable concave knapsack behind Knapsack RL.

Problem (unit cost)::

    maximise   sum_i f_i(k_i)
    subject to sum_i k_i = R,  0 <= k_i <= cap_i,  k_i integer,

where ``f_i(k)`` is the value of giving prompt i ``k`` rollouts above its lower bound, and every
``f_i`` is concave (marginal gains ``d_i(j) = f_i(j + 1) - f_i(j)`` non-increasing in j). Then the
R largest marginal gains over all prompts form an optimal solution (an exchange argument: any
solution that skips a larger gain for a smaller one can swap them without loss), so the optimum is
a *top-R selection*: find the threshold t = R-th largest gain and give every prompt its gains above
t, plus ties in prompt order.

:func:`solve_greedy` implements that with one partial sort: O(U K + E) time, where U is the
number of distinct rows (prompts with equal (p, lower, upper) share one row of gains, which makes
estimates on a 1/16 grid cost almost nothing), K = min(max cap, R), E the number of prompts.

With per-prompt costs c_i (for example expected tokens per rollout) the constraint becomes
``sum_i c_i k_i <= R``; that is a true integer knapsack (NP-hard in general). :func:`solve_greedy`
then takes units in order of gain per cost and, once the next unit no longer fits, keeps adding
the best units that do. This is optimal for the fractional relaxation up to the first unit that
did not fit, so ``objective >= OPT - max gain of one unit`` (the result reports that bound).

:func:`solve_dp` is the exact dynamic programme (O(E x R x K)), used as the reference in tests and
in the benchmark; it is what the authors' recipe runs at every step.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.value import ValueFn

# Rows of distinct (p, lower, upper) triples are deduplicated when they cut the work by this factor.
_DEDUP_FACTOR = 4


@dataclass(frozen=True)
class Solution:
    """Extra rollouts per prompt from a solver.

    Attributes:
        extra: int64 array (E,), rollouts above each prompt's lower bound.
        objective: sum of the prompts' values at ``lower + extra`` (under the solver's scoring).
        placed: budget actually placed (``extra.sum()`` with unit costs, ``costs @ extra`` otherwise).
        optimal: True when the solution is proven optimal (unit costs, or the DP).
        gap_bound: upper bound on ``OPT - objective`` (0 when optimal).
    """

    extra: NDArray[np.int64]
    objective: float
    placed: float
    optimal: bool
    gap_bound: float


def value_table(
    value: ValueFn,
    p: NDArray[np.float64],
    lower: NDArray[np.int64],
    width: int,
    zero_at_lower: bool,
) -> NDArray[np.float64]:
    """Values ``f_i(k) = V(lower_i + k, p_i)`` for k = 0..width, shape (E, width + 1).

    With ``zero_at_lower`` the first column is 0: the recipe scores a prompt that gets no extra
    rollout as value 0 rather than ``V(lower, p)``. Concavity is kept, since
    ``V(lower + 1) - 0 >= V(lower + 1) - V(lower)``.
    """
    n = lower[:, None] + np.arange(width + 1, dtype=np.int64)[None, :]  # (E, width + 1)
    table = value(n.astype(np.float64), p[:, None])  # (E, width + 1)
    if zero_at_lower:
        table[:, 0] = 0.0
    return table


def solve_greedy(
    value: ValueFn,
    p: NDArray[np.float64],
    lower: NDArray[np.int64],
    upper: NDArray[np.int64],
    budget: float,
    *,
    costs: NDArray[np.float64] | None = None,
    zero_at_lower: bool = False,
) -> Solution:
    """Place ``budget`` extra rollouts over prompts (exact for unit costs; see the module docstring).

    Args:
        value: a concave value function ``V(n, p)``.
        p: (E,) success rates.
        lower, upper: (E,) int64 bounds on each prompt's count; ``extra <= upper - lower``.
        budget: units to place (rollouts, or cost units when ``costs`` is given).
        costs: optional (E,) positive cost of one rollout of each prompt.
        zero_at_lower: score ``k = 0`` as 0 (the recipe's quirk; see :func:`value_table`).

    If the budget exceeds the capacity, every prompt gets ``upper`` and ``placed`` says how much
    was used; the caller decides where the rest goes.
    """
    caps = (upper - lower).astype(np.int64)  # (E,)
    if p.size == 0 or budget <= 0 or caps.max(initial=0) == 0:
        extra = np.zeros(p.size, dtype=np.int64)
        return Solution(extra, _objective(value, p, lower, extra, zero_at_lower), 0.0, True, 0.0)
    if costs is None:
        extra = _top_units(value, p, lower, caps, int(budget), zero_at_lower)
        obj = _objective(value, p, lower, extra, zero_at_lower)
        return Solution(extra, obj, float(extra.sum()), True, 0.0)
    return _ratio_greedy(value, p, lower, caps, float(budget), costs, zero_at_lower)


def _objective(
    value: ValueFn, p: NDArray[np.float64], lower: NDArray[np.int64], extra: NDArray[np.int64], zero_at_lower: bool
) -> float:
    """Sum of ``f_i(extra_i)`` under the chosen scoring."""
    if p.size == 0:
        return 0.0
    vals = value((lower + extra).astype(np.float64), p)  # (E,)
    if zero_at_lower:
        vals = np.where(extra > 0, vals, 0.0)
    return float(vals.sum())


def _gain_rows(
    value: ValueFn,
    p: NDArray[np.float64],
    lower: NDArray[np.int64],
    caps: NDArray[np.int64],
    width: int,
    zero_at_lower: bool,
) -> NDArray[np.float64]:
    """Marginal gains ``d_i(j) = f_i(j + 1) - f_i(j)``, shape (E, width); -inf beyond each cap."""
    gains = np.diff(value_table(value, p, lower, width, zero_at_lower), axis=1)  # (E, width)
    gains[np.arange(width)[None, :] >= caps[:, None]] = -np.inf
    return gains


def _top_units(
    value: ValueFn,
    p: NDArray[np.float64],
    lower: NDArray[np.int64],
    caps: NDArray[np.int64],
    budget: int,
    zero_at_lower: bool,
) -> NDArray[np.int64]:
    """Exact top-``budget`` selection of marginal gains; ties go to the lower prompt index."""
    if budget >= int(caps.sum()):
        return caps.copy()
    width = int(min(caps.max(), budget))
    rows, inverse = _unique_rows(p, lower, caps, width)
    weights = np.bincount(inverse, minlength=rows[0].size)  # (U,) prompts per distinct row
    gains = _gain_rows(value, rows[0], rows[1], rows[2], width, zero_at_lower)  # (U, width)
    threshold = _weighted_kth_largest(gains, weights, budget)
    above = (gains > threshold).sum(axis=1)[inverse]  # (E,) units strictly above t: a prefix per row
    ties = (gains == threshold).sum(axis=1)[inverse]  # (E,) units exactly at t
    short = budget - int(above.sum())
    before = np.cumsum(ties) - ties  # tie units available to earlier prompts
    extra: NDArray[np.int64] = above + np.clip(short - before, 0, ties)
    return extra


def _unique_rows(
    p: NDArray[np.float64], lower: NDArray[np.int64], caps: NDArray[np.int64], width: int
) -> tuple[tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]], NDArray[np.int64]]:
    """Distinct (p, lower, min(cap, width)) rows and the row of each prompt."""
    capped = np.minimum(caps, width)
    keys = np.stack([p, lower.astype(np.float64), capped.astype(np.float64)], axis=1)  # (E, 3)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    if uniq.shape[0] * _DEDUP_FACTOR > p.size:  # few duplicates: not worth the indirection
        return (p, lower, capped), np.arange(p.size)
    rows = (uniq[:, 0], uniq[:, 1].astype(np.int64), uniq[:, 2].astype(np.int64))
    return rows, inverse.reshape(-1)


def _weighted_kth_largest(gains: NDArray[np.float64], weights: NDArray[np.int64], k: int) -> float:
    """The k-th largest element of the multiset where row u of ``gains`` appears ``weights[u]`` times."""
    flat = gains.ravel()
    if np.all(weights == 1):
        return float(np.partition(flat, flat.size - k)[flat.size - k])
    w = np.repeat(weights, gains.shape[1])  # (U * width,)
    order = np.argsort(-flat, kind="stable")
    cum = np.cumsum(w[order])
    return float(flat[order[np.searchsorted(cum, k)]])


def _ratio_greedy(
    value: ValueFn,
    p: NDArray[np.float64],
    lower: NDArray[np.int64],
    caps: NDArray[np.int64],
    budget: float,
    costs: NDArray[np.float64],
    zero_at_lower: bool,
) -> Solution:
    """Greedy by gain per cost, then fill the leftover with the best units that still fit."""
    max_units = np.minimum(caps, np.floor(budget / costs).astype(np.int64))  # no prompt can take more
    width = int(max_units.max(initial=0))
    extra = np.zeros(p.size, dtype=np.int64)
    if width == 0:
        return Solution(extra, _objective(value, p, lower, extra, zero_at_lower), 0.0, True, 0.0)
    gains = _gain_rows(value, p, lower, max_units, width, zero_at_lower)  # (E, width)
    ratio = gains / costs[:, None]  # (E, width) gain per cost unit; -inf beyond caps
    order = np.argsort(-ratio.ravel(), kind="stable")
    unit_cost = np.repeat(costs, width)[order]
    finite = np.isfinite(ratio.ravel()[order])
    spent = np.cumsum(np.where(finite, unit_cost, 0.0))
    n_take = int(np.searchsorted(spent, budget, side="right"))  # prefix of units that fits
    n_take = min(n_take, int(finite.sum()))
    taken_rows = order[:n_take] // width
    extra += np.bincount(taken_rows, minlength=p.size)
    left = budget - (float(spent[n_take - 1]) if n_take else 0.0)
    gap = 0.0
    if n_take < int(finite.sum()):
        gap = float(gains.ravel()[order[n_take]])  # the first unit that did not fit bounds the gap
        left = _fill_leftover(gains, costs, extra, left)
    obj = _objective(value, p, lower, extra, zero_at_lower)
    return Solution(extra, obj, budget - left, gap == 0.0, max(gap, 0.0))


def _fill_leftover(
    gains: NDArray[np.float64], costs: NDArray[np.float64], extra: NDArray[np.int64], left: float
) -> float:
    """Add, best ratio first, each prompt's next unit while it fits; updates ``extra`` in place."""
    width = gains.shape[1]
    heap = [
        (-gains[i, extra[i]] / costs[i], i)
        for i in np.flatnonzero((costs <= left) & (extra < width))
        if np.isfinite(gains[i, extra[i]])
    ]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        if costs[i] > left:
            continue
        extra[i] += 1
        left -= float(costs[i])
        if extra[i] < width and np.isfinite(gains[i, extra[i]]) and costs[i] <= left:
            heapq.heappush(heap, (-gains[i, extra[i]] / costs[i], i))
    return left


def solve_dp(
    value: ValueFn,
    p: NDArray[np.float64],
    lower: NDArray[np.int64],
    upper: NDArray[np.int64],
    budget: int,
    *,
    costs: NDArray[np.int64] | None = None,
    zero_at_lower: bool = False,
) -> Solution:
    """Exact dynamic programme, the reference for tests: O(E x budget x max cap).

    Maximises ``sum_i f_i(k_i)`` subject to ``sum_i c_i k_i <= budget`` (c_i = 1 without costs;
    integer costs otherwise). With unit costs and positive gains the budget is filled up to the
    capacity, as by :func:`solve_greedy`.
    """
    if costs is not None and not np.all(np.asarray(costs) == np.round(np.asarray(costs))):
        raise ValueError(f"costs must be integers for the dynamic programme; got {np.asarray(costs)[:5]!r}...")
    unit = np.ones(p.size, dtype=np.int64) if costs is None else np.asarray(costs).astype(np.int64)
    caps = (upper - lower).astype(np.int64)
    width = int(caps.max(initial=0))
    table = value_table(value, p, lower, width, zero_at_lower)  # (E, width + 1)
    neg = -np.inf
    best = np.full(budget + 1, neg)
    best[0] = 0.0
    choice = np.zeros((p.size, budget + 1), dtype=np.int64)
    for i in range(p.size):
        new = np.full(budget + 1, neg)
        for k in range(int(caps[i]) + 1):
            shift = k * int(unit[i])
            if shift > budget:
                break
            cand = np.full(budget + 1, neg)
            cand[shift:] = best[: budget + 1 - shift] + table[i, k]  # spend shift on k units of prompt i
            better = cand > new
            new[better] = cand[better]
            choice[i, better] = k
        best = new
    spent = int(np.argmax(best)) if costs is not None else _max_fill(best)
    extra = np.zeros(p.size, dtype=np.int64)
    for i in range(p.size - 1, -1, -1):  # backtrack
        extra[i] = choice[i, spent]
        spent -= int(extra[i] * unit[i])
    obj = float(best[_max_fill(best) if costs is None else int(np.argmax(best))])
    return Solution(extra, obj, float(unit @ extra), True, 0.0)


def _max_fill(best: NDArray[np.float64]) -> int:
    """With unit costs, the largest reachable spend (the greedy fills as far as capacity allows)."""
    return int(np.flatnonzero(np.isfinite(best)).max())


class Solver(Protocol):
    """Signature shared by the registered solvers (see :func:`solve_greedy`)."""

    def __call__(
        self,
        value: ValueFn,
        p: NDArray[np.float64],
        lower: NDArray[np.int64],
        upper: NDArray[np.int64],
        budget: int,
        *,
        costs: NDArray[np.float64] | None = None,
        zero_at_lower: bool = False,
    ) -> Solution: ...


_SOLVERS: Registry[Solver] = Registry("solver", "solver")


def register_solver(name: str) -> Callable[[Solver], Solver]:
    """Register a solver under ``name``; registering a name twice raises ``ValueError``."""
    return _SOLVERS.register(name)


def get_solver(name: str) -> Solver:
    """The solver registered as ``name``; an unknown name lists the valid ones."""
    return _SOLVERS.get(name)


register_solver("greedy")(solve_greedy)  # type: ignore[arg-type]
register_solver("dp")(solve_dp)  # type: ignore[arg-type]
