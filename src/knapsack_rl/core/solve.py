"""The knapsack of Knapsack RL: how many extra rollouts each prompt gets, solved exactly.

**The problem.** Prompt i starts from ``lower_i`` rollouts and may take ``k_i`` more, up to
``cap_i = upper_i - lower_i``. With ``f_i(k) = V(lower_i + k, *params_i)`` the value of its count
(:mod:`knapsack_rl.core.value`; ``params_i`` is a success rate p, or Beta parameters (a, b))::

    maximise   sum_i f_i(k_i)
    subject to sum_i k_i = R,  0 <= k_i <= cap_i,  k_i integer.

**Why a greedy is exact.** Call ``d_i(j) = f_i(j + 1) - f_i(j)`` the gain of *unit* j of prompt i.
Giving prompt i ``k_i`` units is worth ``f_i(0) + d_i(0) + ... + d_i(k_i - 1)``: an allocation is a
choice of R units, a prefix of each prompt's, valued at the sum of their gains. V is concave in n, so
a prompt's gains are non-increasing in j. Then the R largest gains over all prompts are an allocation
(each prompt's share of them is a prefix of its units), and no choice of R units sums to more: the
optimum is a *top-R selection* (equivalently: hand out the budget one unit at a time to the largest
marginal gain, water-filling). With ``t`` the R-th largest gain, every prompt takes its units with
gain > t, and the units with gain == t go to the lowest prompt indices first (a prompt's tied units
are consecutive). That rule defines *the* answer; every method returns it (tested unit for unit), and
the recipe's dynamic programme reaches the same objective.

**Dense top-R** (``method="dense"``). List units, evaluate their gains in closed form, select the R
largest (``np.partition``). Only each prompt's best units are listed: ``2 R / E + 4`` at first (twice
an average share), then twice as many for each prompt whose next unlisted unit scores at or above the
selection's threshold. Since a prompt's gains are non-increasing, once every unlisted unit scores
below the threshold the listing holds every unit the full selection would take: the answer is exact.

**Per-prompt costs** c_i (for example expected tokens per rollout) make the constraint
``sum_i c_i k_i <= B`` a true integer knapsack (NP-hard in general). The solver scans units in order
of gain per cost (ties: lower prompt index, then lower j) and takes each unit that still fits,
dropping a prompt whose next unit does not; the first such unit bounds the gap to the optimum,
``OPT - objective <= its gain`` (the fractional relaxation's bound, reported as ``gap_bound``).
Computed as a prefix of that order (the dense listing, ordered by gain per cost), then prefix rounds
over the prompts that still fit. "Fits" means ``spent <= B + tol`` with ``tol = COST_RTOL * B``, so
sums of non-integer costs (0.8, 1/3, 0.1) never lose a unit to rounding; ``placed`` may exceed B by at
most ``tol``. Equal costs are solved exactly as unit costs with ``R = floor((B + tol) / c)``.

**The recipe's dynamic programme** (``method="dp"``): exact, O(E x R x max cap); the reference in the
tests and what the authors' recipe runs at every step.

**Methods** of :func:`solve`: ``"greedy"`` (the default) picks the fastest path to that answer.
From 64 prompts it first tries a table of each *distinct* (params, lower, cap) row, weighted by how
many prompts share it (estimates on a 1/16 grid); otherwise it lists units densely while the first
listing holds at most 2^14 units (2^12 with costs: the order then needs a sort), about 1,000 prompts
at the recipe's settings, and beyond that runs the threshold search of
:mod:`knapsack_rl.core.solve_large` (``method="threshold"``): O(E) memory, a few gains per prompt,
faster from 2,000 to 4,000 prompts (``benchmarks/bench_allocate.py``), 10^7 prompts in seconds.

Values are called as ``value(n, *params)`` with ``params = (p,)`` or a tuple of (E,) arrays such as
``(a, b)``. A :class:`~knapsack_rl.core.value.ValueFunction` may carry a closed-form ``gain`` (with
per-prompt constants from ``prepare``); plain callables work through differences ``V(n + 1) - V(n)``.
Exactness needs the computed gains of each prompt to be non-increasing in j (also in floating point).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core import solve_large
from knapsack_rl.core.value import ValueFn, ValueFunction

logger = logging.getLogger(__name__)

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
Params = tuple[FloatArray, ...]

METHODS = ("greedy", "dense", "threshold", "dp")
"""Valid ``method`` arguments of :func:`solve` (and values of ``AllocationConfig.solver``)."""
COST_RTOL = 1e-9
"""Relative tolerance of "a unit fits" with per-prompt costs: spent <= budget * (1 + COST_RTOL)."""

_DENSE_UNITS = 1 << 14  # "greedy" lists units itself while its first listing has at most this many
_DENSE_COST_UNITS = 1 << 12  # the same with per-prompt costs (the gain-per-cost order needs a sort)
_CHUNK = 1 << 14  # prompts per chunk when scoring the objective (the value's temporaries stay small)
_GROUP_MIN_PROMPTS = 64  # "greedy" tries the grouped table first from this many prompts


@dataclass(frozen=True)
class Solution:
    """Extra rollouts per prompt from :func:`solve`.

    Attributes:
        extra: int64 array (E,), rollouts above each prompt's lower bound.
        objective: sum of the prompts' values at ``lower + extra`` (under the solver's scoring).
        placed: budget actually placed (``extra.sum()`` with unit costs, ``sum(costs * extra)`` otherwise).
        optimal: True when the solution is proven optimal (unit or equal costs, everything fit, or the DP).
        gap_bound: upper bound on ``OPT - objective`` (0 when optimal).
    """

    extra: IntArray
    objective: float
    placed: float
    optimal: bool
    gap_bound: float


def solve(
    value: ValueFn,
    p: FloatArray | tuple[FloatArray, ...],
    lower: IntArray,
    upper: IntArray,
    budget: float,
    *,
    costs: FloatArray | None = None,
    zero_at_lower: bool = False,
    method: str = "greedy",
    options: Mapping[str, object] | None = None,
) -> Solution:
    """Place ``budget`` extra rollouts over prompts, maximising ``sum_i V(lower_i + extra_i, *params_i)``.

    Exact for unit (and equal) costs; with per-prompt ``costs``, the gain-per-cost scan with its gap
    bound (module docstring). If the budget exceeds the capacity, every prompt gets ``upper`` and
    ``placed`` says how much was used; the caller decides where the rest goes.

    Args:
        value: a concave value ``V(n, *params)`` (a registered :class:`ValueFunction` or a callable).
        p: (E,) success rates (``params = (p,)``) or a tuple of (E,) arrays (e.g. ``(a, b)``).
        lower: (E,) integer lowest count of each prompt.
        upper: (E,) integer highest count of each prompt (``extra <= upper - lower``).
        budget: units to place (whole rollouts, or cost units when ``costs`` is given).
        costs: optional (E,) positive cost of one rollout of each prompt.
        zero_at_lower: score ``k = 0`` as 0 rather than ``V(lower)`` (the recipe's quirk; concavity
            needs ``V(lower) >= 0``).
        method: one of :data:`METHODS`: ``"greedy"`` (picks the fastest exact path), ``"dense"`` (always
            the dense listing: memory for about ``2 R / E + 4`` units per prompt, tens of bytes each),
            ``"threshold"`` (always the O(E)-memory threshold search of
            :mod:`~knapsack_rl.core.solve_large`) or ``"dp"`` (the recipe's dynamic programme; integer
            costs only). ``greedy``, ``dense`` and ``threshold`` return identical counts.
        options: tuning of ``method="threshold"`` only (:class:`~knapsack_rl.core.solve_large.Settings`:
            ``sample_size``, ``band_max``, ``dense_units``).

    Raises:
        ValueError: naming the argument and the value, for invalid input.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got method={method!r}")
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"options must be a mapping or None; got {type(options).__name__}")
    if options is not None and method != "threshold":
        raise ValueError(f"options tune method='threshold' only; got method={method!r}, options={dict(options)!r}")
    settings = solve_large.Settings.of(options)
    prob = _check_problem(value, p, lower, upper, budget, costs, zero_at_lower)
    if method == "dp":
        return _dp(prob)
    w = prob.weights
    if w is not None and w.size and bool(np.all(w == w[0])):  # equal costs: exactly the unit-cost problem
        units = math.floor((prob.budget + COST_RTOL * prob.budget) / float(w[0]))
        extra = _unit_counts(prob, units, method, settings)
        return Solution(extra, _objective(prob, extra), float(np.sum(w * extra)), True, 0.0)
    if w is not None:
        extra, gap = _cost_counts(prob, w, method, settings)
        bound = 0.0 if gap is None else gap
        return Solution(extra, _objective(prob, extra), float(np.sum(w * extra)), bound == 0.0, max(bound, 0.0))
    extra = _unit_counts(prob, int(prob.budget), method, settings)
    return Solution(extra, _objective(prob, extra), float(extra.sum()), True, 0.0)


# --------------------------------------------------------------------------------------------
# the gains


class _Gains:
    """``d_i(j) = f_i(j + 1) - f_i(j)``, the gain of unit j of prompt i, at ``n = lower_i + j``.

    The value's closed-form ``gain`` when it has one (its per-prompt constants ``prepare``d once), else
    ``V(n + 1) - V(n)``. With ``zero_at_lower`` (the recipe's scoring, ``f_i(0) = 0``) unit 0 is worth
    ``V(lower_i + 1)``.
    """

    def __init__(self, value: ValueFn, params: Params, lower: IntArray, zero_at_lower: bool) -> None:
        vf = value if isinstance(value, ValueFunction) else None
        self.closed = None if vf is None else vf.gain
        self.value, self.params, self.lower, self.zero_at_lower = value, params, lower, zero_at_lower
        self.args = params  # what `closed` takes, per prompt
        if vf is not None and vf.gain is not None and vf.prepare is not None:
            self.args = tuple(np.asarray(x, dtype=np.float64) for x in vf.prepare(*params))

    def __call__(self, rows: IntArray, j: IntArray) -> FloatArray:
        """Gains of units ``j`` of prompts ``rows`` (equal-length index arrays)."""
        n = (self.lower[rows] + j).astype(np.float64)
        args = tuple(x[rows] for x in self.args)
        if self.closed is not None:
            d = np.asarray(self.closed(n, *args), dtype=np.float64)
        else:
            d = np.asarray(self.value(n + 1.0, *args) - self.value(n, *args), dtype=np.float64)
        first = np.flatnonzero(j == 0) if self.zero_at_lower else np.zeros(0, dtype=np.int64)
        if first.size:
            d = d.copy()
            d[first] = self.value(n[first] + 1.0, *(x[rows[first]] for x in self.params))  # f(1) - f(0), f(0) = 0
        return d


# --------------------------------------------------------------------------------------------
# the dense top-R selection (and the prefix of the gain-per-cost order)


def _prefix(
    gain: _Gains, rows: IntArray, start: IntArray, stop: IntArray, w: FloatArray | None, room: float
) -> tuple[IntArray, float | None]:
    """Units ``start_i <= j < stop_i`` of prompts ``rows`` (ascending) in the order (-gain / w, prompt, j):
    the longest prefix whose weight is at most ``room`` (``w``: each prompt's cost per unit, None: 1).

    Returns the units taken per entry of ``rows`` and the gain of the first unit that does not fit
    (None with unit weights, or when all fit). The listing is deepened (module docstring) until no
    unlisted unit scores at or above the first unit left out; with unit weights the R-th largest gain
    is the bar, so the selection is one ``np.partition``.
    """
    ww = None if w is None else w[rows]
    depth = _first_depth(start, stop, room, ww)
    pos, j = _listing(start, depth)
    gains = gain(rows[pos], j)
    while True:
        taken, cut, bar = _take(pos, gains, rows.size, ww, room)
        more = np.flatnonzero(depth < stop)
        nxt = gain(rows[more], depth[more])
        short = more[(nxt if ww is None else nxt / ww[more]) >= bar]  # listed too shallow for this bar
        if short.size == 0:
            return taken, cut
        deeper = np.minimum(stop[short], 2 * depth[short] - start[short] + 4)  # twice as many, plus 4
        more_pos, more_j = _listing(depth[short], deeper)
        pos, j = np.concatenate([pos, short[more_pos]]), np.concatenate([j, more_j])
        gains = np.concatenate([gains, gain(rows[short[more_pos]], more_j)])
        if ww is not None:  # back to (prompt, j) order: the order's ties follow the listing
            order = np.argsort(pos, kind="stable")
            pos, j, gains = pos[order], j[order], gains[order]
        depth[short] = deeper


def _first_depth(start: IntArray, stop: IntArray, room: float, w: FloatArray | None) -> IntArray:
    """Where the first listing stops: ``2 room / sum(w) + 4`` units past ``start`` (twice an average share)."""
    width = stop - start
    if width.size == 0:
        return stop.copy()
    share = room / (width.size if w is None else float(np.sum(w)))
    depth: IntArray = start + np.minimum(width, int(min(2.0 * share, float(width.max()))) + 4)
    return depth


def _listed(cmax: IntArray, room: float, total_w: float) -> int:
    """At most how many units the first listing of the whole problem holds (one pass: cheap at any size)."""
    if cmax.size == 0:
        return 0
    return min(int(cmax.sum()), cmax.size * int(min(2.0 * room / total_w + 4.0, float(cmax.max()))))


def _listing(start: IntArray, stop: IntArray) -> tuple[IntArray, IntArray]:
    """Every unit ``start_k <= j < stop_k``, k ascending then j: (k, j) arrays."""
    width = stop - start
    pos = np.repeat(np.arange(width.size, dtype=np.int64), width)
    offset = np.repeat(start - (np.cumsum(width) - width), width)
    return pos, offset + np.arange(pos.size, dtype=np.int64)


def _take(
    pos: IntArray, gains: FloatArray, n_rows: int, w: FloatArray | None, room: float
) -> tuple[IntArray, float | None, float]:
    """Select among listed units: (units taken per row, gain of the first left out, the bar for unlisted ones).

    Unit weights: the ``room`` largest gains, ties to the lowest rows (each row's tied units
    are consecutive, so a row takes a prefix of them). Otherwise the prefix of the order
    (-gain / w, row, j) that fits ``room``; the listing must be in (row, j) order.
    """
    if w is None:
        k = int(room)
        if k >= gains.size:
            return np.bincount(pos, minlength=n_rows), None, -math.inf
        t = float(np.partition(gains, gains.size - k)[gains.size - k]) if k > 0 else math.inf  # R-th largest
        above = np.bincount(pos[gains > t], minlength=n_rows)
        ties = np.bincount(pos[gains == t], minlength=n_rows)
        before = np.cumsum(ties) - ties  # tied units of lower rows
        return above + np.clip(k - int(above.sum()) - before, 0, ties), None, t
    unit_w = w[pos]
    scores = gains / unit_w
    order = np.argsort(-scores, kind="stable")
    n_take = int(np.searchsorted(np.cumsum(unit_w[order]), room, side="right"))
    taken = np.bincount(pos[order[:n_take]], minlength=n_rows)
    if n_take == order.size:
        return taken, None, -math.inf
    first = order[n_take]
    return taken, float(gains[first]), float(scores[first])


def _unit_counts(prob: _Problem, budget: int, method: str, settings: solve_large.Settings) -> IntArray:
    """Unit costs: the top-``budget`` selection (module docstring), by ``method``."""
    e = prob.caps.size
    if budget <= 0:
        return np.zeros(e, dtype=np.int64)
    if int(prob.caps.sum()) <= budget:  # Python ints: any budget, however large
        return prob.caps.copy()
    cmax = np.minimum(prob.caps, budget)  # a prompt never takes more than the budget
    args = (prob.value, prob.params, prob.lower, cmax, budget, prob.zero_at_lower)
    if method == "greedy" and e >= _GROUP_MIN_PROMPTS:
        extra = solve_large.grouped_counts(*args)
        if extra is not None:
            logger.debug("solve: E=%d budget=%d: grouped table", e, budget)
            return extra
    if method == "threshold" or (method == "greedy" and _listed(cmax, budget, e) > _DENSE_UNITS):
        logger.debug("solve: E=%d budget=%d: threshold search", e, budget)
        return solve_large.unit_counts(*args, settings)
    gain = _Gains(prob.value, prob.params, prob.lower, prob.zero_at_lower)
    return _prefix(gain, np.arange(e, dtype=np.int64), np.zeros(e, dtype=np.int64), cmax, None, budget)[0]


def _cost_counts(
    prob: _Problem, w: FloatArray, method: str, settings: solve_large.Settings
) -> tuple[IntArray, float | None]:
    """Per-prompt costs: the gain-per-cost scan (module docstring); counts and the first gain that did not fit."""
    e = prob.caps.size
    tol = COST_RTOL * prob.budget
    if method == "threshold" or (
        method == "greedy" and _listed(prob.caps, prob.budget + tol, float(np.sum(w))) > _DENSE_COST_UNITS
    ):
        logger.debug("solve: E=%d budget=%s with costs: threshold search", e, prob.budget)
        large_args = (prob.value, prob.params, prob.lower, prob.caps, w, prob.budget, tol, prob.zero_at_lower)
        return solve_large.cost_counts(*large_args, settings)
    gain = _Gains(prob.value, prob.params, prob.lower, prob.zero_at_lower)
    cmax = _fitting(prob.caps, prob.budget + tol, w)  # more units than this never fit
    extra, gap = _prefix(gain, np.arange(e, dtype=np.int64), np.zeros(e, dtype=np.int64), cmax, w, prob.budget + tol)
    if gap is None:
        return extra, None
    left = prob.budget - float(np.sum(w * extra))
    while True:  # each round takes at least one unit: the best candidate fits on its own
        cand = np.flatnonzero((extra < cmax) & (w <= left + tol))
        if cand.size == 0:
            return extra, gap
        stop = extra[cand] + _fitting(cmax[cand] - extra[cand], left + tol, w[cand])
        add = _prefix(gain, cand, extra[cand], stop, w, left + tol)[0]
        extra[cand] += add
        left -= float(np.sum(w[cand] * add))


def _fitting(caps: IntArray, room: float, w: FloatArray) -> IntArray:
    """``min(caps, floor(room / w))`` without overflowing int64 for huge budgets."""
    return np.minimum(caps.astype(np.float64), np.floor(room / w)).astype(np.int64)


def _objective(prob: _Problem, extra: IntArray) -> float:
    """Sum of ``f_i(extra_i)`` under the chosen scoring."""
    total = 0.0
    for start in range(0, extra.size, _CHUNK):
        sl = slice(start, start + _CHUNK)
        n = (prob.lower[sl] + extra[sl]).astype(np.float64)
        vals = np.asarray(prob.value(n, *(x[sl] for x in prob.params)), dtype=np.float64)
        if prob.zero_at_lower:
            vals = vals * (extra[sl] > 0)
        total += float(np.sum(vals))
    return total


# --------------------------------------------------------------------------------------------
# the recipe's dynamic programme


def _dp(prob: _Problem) -> Solution:
    """Exact dynamic programme, O(E x budget x max cap): maximise ``sum_i f_i(k_i)`` subject to
    ``sum_i c_i k_i <= budget`` (c_i = 1 without costs; integer costs otherwise). With unit costs and
    positive gains the budget is filled up to the capacity, as by the greedy."""
    if prob.weights is not None and not np.all(prob.weights == np.round(prob.weights)):
        raise ValueError(f"costs must be integers for the dynamic programme; got {prob.weights[:5]!r}...")
    if not float(prob.budget).is_integer():
        raise ValueError(f"budget must be a whole number for the dynamic programme; got budget={prob.budget!r}")
    unit = np.ones(prob.caps.size, dtype=np.int64) if prob.weights is None else prob.weights.astype(np.int64)
    best, choice = _dp_table(prob, unit, int(prob.budget))
    reach = np.flatnonzero(np.isfinite(best))
    spent = int(reach.max()) if prob.weights is None else int(np.argmax(best))
    obj = float(best[spent])
    extra = np.zeros(prob.caps.size, dtype=np.int64)
    for i in range(prob.caps.size - 1, -1, -1):  # backtrack
        extra[i] = choice[i, spent]
        spent -= int(extra[i] * unit[i])
    return Solution(extra, obj, float(np.sum(unit * extra)), True, 0.0)


def _dp_table(prob: _Problem, unit: IntArray, budget: int) -> tuple[FloatArray, IntArray]:
    """Forward pass: best value per spend and the count of each prompt at the optimum."""
    e = prob.caps.size
    width = int(prob.caps.max(initial=0))
    n = (prob.lower[:, None] + np.arange(width + 1, dtype=np.int64)[None, :]).astype(np.float64)
    table = np.asarray(prob.value(n, *(x[:, None] for x in prob.params)), dtype=np.float64)  # (E, width + 1)
    if prob.zero_at_lower:
        table[:, 0] = 0.0
    best = np.full(budget + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((e, budget + 1), dtype=np.int64)
    for i in range(e):
        new = np.full(budget + 1, -np.inf)
        for k in range(int(prob.caps[i]) + 1):
            shift = k * int(unit[i])
            if shift > budget:
                break
            cand = np.full(budget + 1, -np.inf)
            cand[shift:] = best[: budget + 1 - shift] + table[i, k]  # spend shift on k units of prompt i
            better = cand > new
            new[better] = cand[better]
            choice[i, better] = k
        best = new
    return best, choice


# --------------------------------------------------------------------------------------------
# validation


@dataclass(frozen=True)
class _Problem:
    """Validated inputs: (E,) params, lower and caps; ``weights`` None for unit costs."""

    value: ValueFn
    params: Params
    lower: IntArray
    caps: IntArray
    budget: float
    weights: FloatArray | None
    zero_at_lower: bool


def _check_problem(
    value: ValueFn, p: object, lower: object, upper: object, budget: object, costs: object, zero_at_lower: bool
) -> _Problem:
    """Validate every argument once; the error names the argument and the offending value."""
    if not callable(value):
        raise ValueError(f"value must be callable as value(n, *params); got {value!r:.80}")
    params = _check_params(p)
    e = params[0].size
    lo = _check_int_array("lower", lower, e)
    up = _check_int_array("upper", upper, e)
    bad = np.flatnonzero(lo < 0)
    if bad.size:
        raise ValueError(f"lower must be >= 0; lower[{bad[0]}]={lo[bad[0]]}")
    bad = np.flatnonzero(up < lo)
    if bad.size:
        i = bad[0]
        raise ValueError(f"upper must be >= lower; upper[{i}]={up[i]} < lower[{i}]={lo[i]}")
    weights = None if costs is None else _check_costs(costs, e)
    if isinstance(budget, bool) or not isinstance(budget, int | float | np.integer | np.floating):
        raise ValueError(f"budget must be a real number; got {budget!r}")
    b = float(budget)
    if not math.isfinite(b) or b < 0:
        raise ValueError(f"budget must be finite and >= 0; got budget={budget!r}")
    if weights is None and not b.is_integer():
        raise ValueError(f"budget must be a whole number of rollouts with unit costs; got budget={budget!r}")
    return _Problem(value, params, lo, up - lo, b, weights, bool(zero_at_lower))


def _check_params(p: object) -> Params:
    raw = p if isinstance(p, tuple) else (p,)
    if not raw:
        raise ValueError("p must be an (E,) array or a non-empty tuple of (E,) arrays; got an empty tuple")
    out: list[FloatArray] = []
    for k, x in enumerate(raw):
        name = f"p[{k}]" if isinstance(p, tuple) else "p"
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu" or arr.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array of real numbers; got dtype {arr.dtype}, shape {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name} must be finite; {name}[{bad[0]}]={float(arr[bad[0]])!r}")
        if arr.shape != np.shape(out[0] if out else arr):
            raise ValueError(f"{name} must have the shape of p[0], {out[0].shape}; got {arr.shape}")
        out.append(arr)
    return tuple(out)


def _check_int_array(name: str, x: object, e: int) -> IntArray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array; got dtype {arr.dtype}")
    if arr.shape != (e,):
        raise ValueError(f"{name} must have shape ({e},) like p; got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_costs(costs: object, e: int) -> FloatArray:
    c = np.asarray(costs)
    if c.dtype.kind not in "fiu":
        raise ValueError(f"costs must be an array of real numbers; got dtype {c.dtype}")
    if c.shape != (e,):
        raise ValueError(f"costs must have shape ({e},) like p; got shape {c.shape}")
    c = np.ascontiguousarray(c, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
    if bad.size:
        raise ValueError(f"costs must be finite and > 0; costs[{bad[0]}]={float(c[bad[0]])!r}")
    return c
