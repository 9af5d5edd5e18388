"""Large-scale machinery for :func:`knapsack_rl.core.solve.solve`: the same answer, faster at scale, in O(E) memory.

:mod:`knapsack_rl.core.solve` states the method and solves it by listing each prompt's best units
(``method="dense"``, about 16 gains per prompt at the recipe's settings). The threshold search here
evaluates a few gains per prompt and is faster from 2,000 to 4,000 prompts per step (500 with
per-prompt costs; ``benchmarks/bench_allocate.py``, point values at 8,192 prompts: 2.8 ms against 7.8 ms
CPU time, at 10^5 prompts 21 ms against 149 ms); at 10^5 to 10^7 prompts, or
with ``max_n`` of 10^5 and more, it keeps a step in milliseconds to seconds (``allocate`` of 10^7
prompts: 1.5 s CPU time). ``method="greedy"`` uses it from 2^14 listed units (2^12 with costs), and
the grouped table below from 64 prompts whenever prompts share few distinct rows. Both return exactly
the top-R selection that ``solve`` defines (the tests compare them unit for unit).

- **threshold** (:func:`unit_counts`, :func:`cost_counts`; ``method="threshold"``): time O(E) plus
  a log factor in max_n. The number of units of prompt i with gain > t is found by a vectorised
  search over j (a prompt's gains are sorted): both units around the value's ``crossing`` hint (a
  closed-form inverse of the gain, e.g. ``w v u^x (1 + rho^(x - 1)) = t`` for the paper's family)
  are evaluated, which certifies most counts at once; the rest gallop away from the hint and bisect
  (plain callables: bisection). A strided sample of ``4 sqrt(E)`` prompts estimates the critical
  gain t; one counting pass at t records, per prompt, the best unit left out ("head") and the worst
  unit taken ("tail"); a partial selection over heads (too few taken) or tails (too many) gives the
  other end of a bracket that is exact by construction, and only the prompts whose head or tail
  crosses it are counted again. The band between the two ends is then listed and selected exactly
  (``np.partition``); a band that is still large is first shrunk by sampling its units (rarely
  needed). Prompts are processed in chunks of 2^14, so temporaries stay in cache; peak memory is a
  few (E,) arrays. With per-prompt costs the same engine, weighted by the costs, finds the prefix of
  the gain-per-cost order; the fill over the prompts that still fit then runs one unit at a time
  while at most 64 can fit, else as prefix rounds on those prompts.
- **grouped table** (:func:`grouped_counts`, unit costs): prompts with equal (params, lower, cap)
  share one row of gains (found without sorting when a sample shows few distinct values, as for
  estimates on a 1/16 grid); one weighted selection over the (rows x min(max cap, R)) table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.value import ValueFn, ValueFunction

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
Params = tuple[FloatArray, ...]

_CHUNK = 1 << 14  # prompts per counting chunk (temporaries stay in cache)
_DENSE_UNITS = 1 << 12  # list every unit when the problem has at most this many
_SAMPLE = 8192  # at most this many prompts in the bracketing sample (4 sqrt(E) by default)
_SAMPLE_UNITS = 1 << 20  # cap on the units listed for the sample
_BAND_SAMPLE = 1024  # units sampled per band-shrinking round
_Z = 4.0  # bracket margin, in standard deviations
_MAX_ROUNDS = 64
_FILL_STEPS = 64  # fill unit by unit when at most this many more units can fit
_GROUP_SAMPLE = 1024  # values inspected to decide whether prompts share few distinct rows
_GROUP_MAX = 64  # distinct values per key for the grouped table


@dataclass(frozen=True)
class Settings:
    """Tuning of the threshold search (``solve(..., method="threshold", options={...})``).

    ``sample_size``: at most this many prompts in the bracketing sample (``4 sqrt(E)`` by default);
    ``band_max``: the largest band listed without shrinking (None: ``max(2^16, E // 2)``);
    ``dense_units``: problems with at most this many units are listed whole. Small values force every
    stage on small instances (the tests do).
    """

    sample_size: int = _SAMPLE
    band_max: int | None = None
    dense_units: int = _DENSE_UNITS

    @classmethod
    def of(cls, options: Mapping[str, object] | None) -> Settings:
        """Settings from ``options`` (None: the defaults); an unknown key or a bad value raises ``ValueError``."""
        given = dict(options or {})
        valid = sorted(cls.__dataclass_fields__)
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ValueError(f"options has unknown key(s) {unknown}; valid: {valid}")
        for name, low in (("sample_size", 1), ("dense_units", 0), ("band_max", 0)):
            if name not in given or (name == "band_max" and given[name] is None):
                continue
            v = given[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                none = "None or " if name == "band_max" else ""
                raise ValueError(f"options[{name!r}] must be {none}an integer >= {low}; got {v!r}")
        return cls(**given)  # type: ignore[arg-type]


def unit_counts(
    value: ValueFn, params: Params, lower: IntArray, cmax: IntArray, budget: int, zero_at_lower: bool, st: Settings
) -> IntArray:
    """Unit costs: the top-``budget`` units ``j < cmax_i`` (ties: lower prompt index) by the threshold search."""
    units = _Units(value, params, lower, None, np.full(cmax.size, True) if zero_at_lower else None)
    return _prefix(units, cmax, float(budget), 0.0, st).extra


def cost_counts(
    value: ValueFn,
    params: Params,
    lower: IntArray,
    caps: IntArray,
    weights: FloatArray,
    budget: float,
    tol: float,
    zero_at_lower: bool,
    st: Settings,
) -> tuple[IntArray, float | None]:
    """Per-prompt costs: the gain-per-cost scan of :func:`knapsack_rl.core.solve.solve` (a unit is taken
    while ``spent <= budget + tol``); returns the counts and the gain of the first unit that did not fit."""
    units = _Units(value, params, lower, weights, np.full(caps.size, True) if zero_at_lower else None)
    return _cost_solve(units, caps, weights, budget, tol, st)


# --------------------------------------------------------------------------------------------
# the units of a problem: gains, scores (gain per cost), crossing hints


class _Units:
    """Unit j of prompt i: gain ``d_i(j) = f_i(j + 1) - f_i(j)``, score ``d_i(j) / w_i``.

    ``rows`` arguments are int64 index arrays into the (E,) arrays; ``j`` has the same length.
    """

    def __init__(
        self,
        value: ValueFn,
        params: Params,
        lower: IntArray,
        weights: FloatArray | None,
        zero_first: NDArray[np.bool_] | None,
    ) -> None:
        self.value = value
        self.params = params
        self.lower = lower
        self.weights = weights
        self.zero_first = zero_first  # prompts whose unit 0 is scored V(lower + 1) - 0 (the recipe's quirk)
        vf = value if isinstance(value, ValueFunction) else None
        self.gain_fn = vf.gain if vf is not None else None
        self.crossing_fn = vf.crossing if vf is not None else None
        self.prepare_fn = vf.prepare if vf is not None and vf.gain is not None else None

    def sub(self, rows: IntArray, shift: IntArray) -> _Units:
        """The units of prompts ``rows`` after their first ``shift`` units (lower bound moved up)."""
        zero = None if self.zero_first is None else self.zero_first[rows] & (shift == 0)
        w = None if self.weights is None else self.weights[rows]
        return _Units(self.value, tuple(x[rows] for x in self.params), self.lower[rows] + shift, w, zero)

    def view(self, rows: IntArray | slice) -> _View:
        """The inputs of prompts ``rows`` (indices, or a slice: no copy) gathered and prepared once."""
        args = tuple(x[rows] for x in self.params)
        if self.prepare_fn is not None:
            args = tuple(np.asarray(x, dtype=np.float64) for x in self.prepare_fn(*args))
        w = None if self.weights is None else self.weights[rows]
        ids = np.arange(rows.start, rows.stop, dtype=np.int64) if isinstance(rows, slice) else rows
        return _View(self, ids, self.lower[rows].astype(np.float64), args, w)

    def gains(self, rows: IntArray, j: IntArray) -> FloatArray:
        return self.view(rows).gains(j)

    def scores(self, rows: IntArray, j: IntArray) -> FloatArray:
        return self.view(rows).scores(j)


@dataclass
class _View:
    """Gathered inputs of some prompts: ``n0`` = lower as float, ``args`` = prepared params (or params).

    ``args`` is what the value's ``gain`` and ``crossing`` take (``prepare(*params)``), or the params
    themselves for a value without a closed-form gain.
    """

    units: _Units
    rows: IntArray
    n0: FloatArray
    args: Params
    weights: FloatArray | None

    def take(self, idx: IntArray) -> _View:
        w = None if self.weights is None else self.weights[idx]
        return _View(self.units, self.rows[idx], self.n0[idx], tuple(x[idx] for x in self.args), w)

    @staticmethod
    def join(views: list[_View]) -> _View:
        """One view of the prompts of several (the galloping of stragglers from many chunks)."""
        if len(views) == 1:
            return views[0]
        first = views[0]
        w = None if first.weights is None else np.concatenate([v.weights for v in views])  # type: ignore[misc]
        args = tuple(np.concatenate([v.args[k] for v in views]) for k in range(len(first.args)))
        return _View(
            first.units, np.concatenate([v.rows for v in views]), np.concatenate([v.n0 for v in views]), args, w
        )

    def gains(self, j: IntArray) -> FloatArray:
        u = self.units
        n = self.n0 + j
        if u.gain_fn is not None:
            d = np.asarray(u.gain_fn(n, *self.args), dtype=np.float64)
        else:
            d = np.asarray(u.value(n + 1.0, *self.args) - u.value(n, *self.args), dtype=np.float64)
        if u.zero_first is not None:
            first = np.flatnonzero((j == 0) & u.zero_first[self.rows])
            if first.size:
                d = d.copy()
                d[first] = u.value(n[first] + 1.0, *(x[self.rows[first]] for x in u.params))  # f(1) - f(0), f(0) = 0
        return d

    def scores(self, j: IntArray) -> FloatArray:
        d = self.gains(j)
        return d if self.weights is None else d / self.weights

    def guess(self, t: float, lo: IntArray, hi: IntArray) -> IntArray | None:
        """Counts predicted by the value's crossing hint, clipped to [lo, hi]; None without a hint."""
        u = self.units
        if u.crossing_fn is None:
            return None
        lam = t if self.weights is None else t * self.weights  # crossing hints broadcast a scalar
        with np.errstate(all="ignore"):
            x = np.asarray(u.crossing_fn(lam, *self.args), dtype=np.float64)
            g = np.ceil(x) - self.n0
        return np.fmin(np.fmax(g, lo), hi).astype(np.int64)  # NaN (no estimate) becomes lo


def _wsum(w: FloatArray | None, c: IntArray) -> float:
    """``sum_i w_i c_i`` (plain reduction, no BLAS); ``sum c`` for unit weights."""
    return float(c.sum()) if w is None else float(np.sum(w * c))


# --------------------------------------------------------------------------------------------
# counting units above a threshold


def _count_gt(
    units: _Units,
    rows: IntArray | None,
    t: float,
    lo: IntArray,
    hi: IntArray,
    guess: IntArray | None,
    edges: tuple[FloatArray, FloatArray] | None = None,
) -> IntArray:
    """``c_i = #{j : s_i(j) > t}`` for prompts ``rows`` (None: all), given ``lo_i <= c_i <= hi_i``.

    Scores of a prompt are non-increasing in j, so c_i is certified by ``s_i(c_i - 1) > t >= s_i(c_i)``
    (or a bound). First both units around ``guess`` (or the value's crossing hint) are evaluated, which
    settles most prompts; the rest gallop away from it and bisect (bisection alone without a guess).
    With ``edges = (head, tail)`` (pre-filled with -inf / +inf) the certifying scores are stored:
    ``head_i = s_i(c_i)``, the best unit left out, and ``tail_i = s_i(c_i - 1)``, the worst unit
    taken (where they were evaluated). Prompts go through the first step in chunks of 2^14 (in cache);
    the unsettled ones of several chunks gallop together (fewer Python-level iterations).
    """
    out = lo.copy()
    if t == math.inf:
        return out
    pending: list[_Pending] = []
    waiting = 0
    for start in range(0, lo.size, _CHUNK):
        stop = min(start + _CHUNK, lo.size)
        part = _first_step(units, rows, slice(start, stop), t, lo, hi, guess, out, edges)
        if part is not None:
            pending.append(part)
            waiting += part.lo.size
        if waiting >= _CHUNK or (stop == lo.size and pending):
            _gallop(_Pending.join(pending), t, out, edges)
            pending, waiting = [], 0
    return out


@dataclass
class _Pending:
    """Prompts still counting: positions in the output, their view, bounds and galloping state."""

    pos: IntArray
    view: _View
    lo: IntArray
    hi: IntArray
    probe: IntArray
    state: NDArray[np.int8]
    step: IntArray

    @staticmethod
    def join(parts: list[_Pending]) -> _Pending:
        if len(parts) == 1:
            return parts[0]
        cat = np.concatenate
        return _Pending(
            cat([p.pos for p in parts]),
            _View.join([p.view for p in parts]),
            cat([p.lo for p in parts]),
            cat([p.hi for p in parts]),
            cat([p.probe for p in parts]),
            cat([p.state for p in parts]),
            cat([p.step for p in parts]),
        )


def _first_step(
    units: _Units,
    rows: IntArray | None,
    sl: slice,
    t: float,
    lo_all: IntArray,
    hi_all: IntArray,
    guess: IntArray | None,
    out: IntArray,
    edges: tuple[FloatArray, FloatArray] | None,
) -> _Pending | None:
    """Certify the guess (or hint) of one chunk; write the settled counts, return the others."""
    lo, hi = lo_all[sl], hi_all[sl]
    act = np.flatnonzero(lo < hi)
    if act.size == 0:
        return None
    whole = act.size == lo.size  # every prompt of the chunk: slices instead of gathers
    if whole:
        view = units.view(sl if rows is None else rows[sl])
    else:
        view = units.view(sl.start + act if rows is None else rows[sl][act])
    pos = np.arange(sl.start, sl.stop, dtype=np.int64) if whole else sl.start + act
    lo_a, hi_a = (lo, hi) if whole else (lo[act], hi[act])
    g = None if guess is None else np.minimum(np.maximum(guess[pos], lo_a), hi_a)
    g = view.guess(t, lo_a, hi_a) if g is None else g
    if g is None:  # no guess: every prompt bisects
        probe = (lo_a + hi_a - 1) // 2
        zeros = np.zeros(act.size, dtype=np.int8)
        return _Pending(pos, view, lo_a, hi_a, probe, zeros, np.ones(act.size, dtype=np.int64))
    before = view.scores(np.maximum(g - 1, 0))  # s(g - 1) > t certifies c >= g
    at = view.scores(np.minimum(g, hi_a - 1))  # s(g) <= t certifies c <= g
    low_bad = (g > lo_a) & (before <= t)  # c <= g - 1
    high_bad = (g < hi_a) & (at > t)  # c >= g + 1 (never both: s(g - 1) >= s(g))
    where = sl if whole else pos
    if edges is not None:  # best unit left out / worst taken; invalid ones (c at a bound) fixed by the caller
        edges[0][where] = np.where(low_bad, before, at)  # exact copies: an arithmetic blend x + m (y - x) is
        edges[1][where] = np.where(high_bad, at, before)  # off by an ulp, and brackets then split ties wrongly
    # integer blends by arithmetic (exact): np.where with a random mask is ~4x slower here
    lo_a = g + high_bad + low_bad * (lo_a - g)
    hi_a = g - low_bad + high_bad * (hi_a - g)
    out[where] = lo_a
    open_ = np.flatnonzero(lo_a < hi_a)
    if open_.size == 0:
        return None
    state = (high_bad[open_].view(np.int8) - low_bad[open_].view(np.int8)).astype(np.int8)  # gallop away from g
    lo_o, hi_o = lo_a[open_], hi_a[open_]
    probe = lo_o + low_bad[open_] * (hi_o - 1 - lo_o)
    return _Pending(pos[open_], view.take(open_), lo_o, hi_o, probe, state, np.full(open_.size, 2, dtype=np.int64))


def _gallop(pend: _Pending, t: float, out: IntArray, edges: tuple[FloatArray, FloatArray] | None) -> None:
    """Galloping (state +1 up / -1 down, doubling the step) then bisection (state 0) until lo == hi.

    Writes the counts to ``out[pos]``; ``edges`` get the last score at or below t seen (the best left
    out) and the last above t (the worst taken), starting from what the first step recorded.
    """
    act, view, lo_a, hi_a, probe, state, steps = (
        pend.pos, pend.view, pend.lo, pend.hi, pend.probe, pend.state, pend.step
    )  # fmt: skip
    head = tail = np.empty(0)
    if edges is not None:
        head = np.where(state == -1, edges[0][act], -np.inf)  # a score left out is known going down
        tail = np.where(state == 1, edges[1][act], np.inf)  # a score taken is known going up
    while act.size:
        probe = np.minimum(np.maximum(probe, lo_a), hi_a - 1)
        sc = view.scores(probe)
        up = sc > t  # unit `probe` is above t: c >= probe + 1
        if edges is not None:
            tail = np.where(up, sc, tail)
            head = np.where(up, head, sc)
        lo_a = lo_a + up * (probe + 1 - lo_a)
        hi_a = probe + up * (hi_a - probe)
        move = 2 * up.view(np.int8) - 1  # +1 up, -1 down
        keep_dir = state == move
        state = keep_dir * move  # galloping stops at the first turn, then bisection
        gallop = hi_a - steps + up * (lo_a - hi_a + 2 * steps - 1)  # up: lo + step - 1, down: hi - step
        probe = gallop + (state == 0) * ((lo_a + hi_a - 1) // 2 - gallop)
        steps = steps << keep_dir
        done = lo_a >= hi_a
        if done.any():  # compact with index arrays (boolean masks cost ~10x more per array)
            fin = np.flatnonzero(done)
            out[act[fin]] = lo_a[fin]
            if edges is not None:
                edges[0][act[fin]] = head[fin]
                edges[1][act[fin]] = tail[fin]
            keep = np.flatnonzero(~done)
            act, lo_a, hi_a, probe, steps = act[keep], lo_a[keep], hi_a[keep], probe[keep], steps[keep]
            state = state[keep]
            view = view.take(keep)
            if edges is not None:
                head, tail = head[keep], tail[keep]


# --------------------------------------------------------------------------------------------
# selecting among listed units


@dataclass
class _Pick:
    """Units taken per prompt and the first unit that did not fit (its gain; None if none)."""

    extra: IntArray
    critical_gain: float | None


def _positions(rows: IntArray, start: IntArray, stop: IntArray) -> tuple[IntArray, IntArray]:
    """Every unit ``j in [start_i, stop_i)`` of ``rows``, row-major, j ascending: (row, j) arrays."""
    width = stop - start
    rid = np.repeat(rows, width)
    offset = np.repeat(start - (np.cumsum(width) - width), width)
    return rid, offset + np.arange(rid.size, dtype=np.int64)


def _select(
    units: _Units, rows: IntArray, start: IntArray, stop: IntArray, base: float, budget: float, tol: float
) -> tuple[IntArray, float | None]:
    """List units ``start_i <= j < stop_i`` of ``rows`` and take them in order (-score, row, j) while
    ``base + spent <= budget + tol``. Returns the units taken per row of ``rows`` and the gain of the
    first unit that did not fit (None if all fit).

    ``rows`` must be ascending (ties then fall in (row, j) order, the listing order) and the listing
    must contain every unit that the order puts before the first unit that does not fit.
    """
    width = stop - start
    local = np.repeat(np.arange(rows.size, dtype=np.int64), width)  # listed unit -> position in rows
    j = np.repeat(start - (np.cumsum(width) - width), width) + np.arange(local.size, dtype=np.int64)
    gains = units.gains(rows[local], j)
    w = units.weights
    if w is None:  # unit weights: the K best by one partition, ties in listing order
        k = int(budget + tol - base)
        if k >= gains.size:
            return width.copy(), None
        if k <= 0:
            return np.zeros(rows.size, dtype=np.int64), None
        kth = float(np.partition(gains, gains.size - k)[gains.size - k])
        above = gains > kth
        ties = gains == kth
        take = above | (ties & (np.cumsum(ties) <= k - int(above.sum())))  # ties in (row, j) order
        return np.bincount(local[take], minlength=rows.size).astype(np.int64), None
    order = np.argsort(-(gains / w[rows[local]]), kind="stable")
    spent = base + np.cumsum(w[rows[local[order]]])
    n_take = int(np.searchsorted(spent, budget + tol, side="right"))
    taken = np.bincount(local[order[:n_take]], minlength=rows.size).astype(np.int64)
    return taken, (float(gains[order[n_take]]) if n_take < order.size else None)


# --------------------------------------------------------------------------------------------
# the threshold engine: a prefix of the units ordered by (-score, row, j) under a weight budget


@dataclass
class _Bracket:
    """Counts at two thresholds: ``c_hi = count(> t_hi)`` fits the budget, ``c_lo = count(> t_lo)`` does not."""

    t_hi: float
    c_hi: IntArray
    w_hi: float
    t_lo: float
    c_lo: IntArray
    w_lo: float


def _prefix(units: _Units, cmax: IntArray, budget: float, tol: float, st: Settings) -> _Pick:
    """The longest prefix of units (j < cmax_i) in order (-score, row, j) whose weight fits ``budget``.

    One counting pass at the sample's estimate t of the critical score; the other end of the bracket
    comes from the heads (best units left out) or tails (worst units taken) of that pass, and only the
    prompts whose head or tail crosses it are counted again.
    """
    e = cmax.size
    w = units.weights
    if e == 0 or _wsum(w, cmax) <= budget + tol:
        return _Pick(cmax.copy(), None)
    if int(cmax.sum()) <= st.dense_units:
        taken, crit = _select(units, np.arange(e, dtype=np.int64), np.zeros(e, dtype=np.int64), cmax, 0.0, budget, tol)
        return _Pick(taken, crit)
    t = _sample_estimate(units, cmax, budget, tol, st.sample_size)
    edges = (np.full(e, -np.inf), np.full(e, np.inf))
    c = _count_gt(units, None, t, np.zeros(e, dtype=np.int64), cmax, None, edges)
    placed = _wsum(w, c)
    head, tail = edges
    if placed <= budget + tol:
        head[c >= cmax] = -np.inf  # a prompt at its cap has no unit left out
        br = _bracket_below(units, cmax, budget + tol, t, c, placed, head)
    else:
        tail[c <= 0] = np.inf  # a prompt with no unit taken has none to drop
        br = _bracket_above(units, cmax, budget + tol, t, c, placed, tail)
    del edges, head, tail
    band_max = st.band_max if st.band_max is not None else max(1 << 16, e // 2)
    _shrink(units, br, budget, tol, band_max)
    return _finish(units, br, budget, tol)


def _edge_value(vals: FloatArray, w: FloatArray | None, level: float, largest: bool, side: str) -> float | None:
    """Walk ``vals`` from the most extreme (largest or smallest; infinite entries never) accumulating
    weight (1 each without ``w``); return the value at which the total first exceeds ``level``
    (``side="right"``) or reaches it (``"left"``), or None if it never does.

    Partial selection: one ``np.partition`` finds the k-th most extreme value; only the values beyond
    it are sorted (k doubles until their weight suffices).
    """
    n_fin = int(np.count_nonzero(np.isfinite(vals)))
    if n_fin == 0:
        return None
    if w is None:  # unit weights: the k-th most extreme value itself
        k = int(level) + 1 if side == "right" else math.ceil(level)
        if k > n_fin or k <= 0:
            return None
        return float(np.partition(vals, vals.size - k)[vals.size - k] if largest else np.partition(vals, k - 1)[k - 1])
    k = int(1.25 * level / float(np.mean(w))) + 16
    while True:
        k = min(k, n_fin)
        if k == 0:
            return None
        kth = np.partition(vals, vals.size - k)[vals.size - k] if largest else np.partition(vals, k - 1)[k - 1]
        idx = np.flatnonzero(vals >= kth) if largest else np.flatnonzero(vals <= kth)
        idx = idx[np.argsort(-vals[idx] if largest else vals[idx], kind="stable")]
        pos = int(np.searchsorted(np.cumsum(w[idx]), level, side=side))  # type: ignore[call-overload]
        if pos < idx.size:
            return float(vals[idx[pos]])
        if k == n_fin:
            return None
        k *= 2


def _bracket_below(
    units: _Units, cmax: IntArray, cap: float, t: float, c: IntArray, placed: float, head: FloatArray
) -> _Bracket:
    """Units above t fit (``placed <= cap``): the lower end sits just below the heads needed to overflow."""
    w = units.weights
    h = _edge_value(head, w, cap - placed, largest=True, side="right")
    if h is None:  # one unit per prompt is not enough: start from every unit
        return _Bracket(t, c, placed, -math.inf, cmax.copy(), _wsum(w, cmax))
    t_lo = float(np.nextafter(h, -math.inf))
    rows = np.flatnonzero(head > t_lo)  # prompts with at least one more unit above t_lo
    c_lo = c.copy()
    c_lo[rows] = _count_gt(units, rows, t_lo, c[rows] + 1, cmax[rows], c[rows] + 1)
    more = _wsum(None if w is None else w[rows], c_lo[rows] - c[rows])
    return _Bracket(t, c, placed, t_lo, c_lo, placed + more)


def _bracket_above(
    units: _Units, cmax: IntArray, cap: float, t: float, c: IntArray, placed: float, tail: FloatArray
) -> _Bracket:
    """Units above t overflow (``placed > cap``): the upper end is the tail at which enough are dropped."""
    w = units.weights
    t_hi = _edge_value(tail, w, placed - cap, largest=False, side="left")
    if t_hi is None:  # dropping one unit per prompt is not enough: start from none
        return _Bracket(math.inf, np.zeros_like(c), 0.0, t, c, placed)
    rows = np.flatnonzero(tail <= t_hi)  # prompts whose last taken unit drops out
    c_hi = c.copy()
    c_hi[rows] = _count_gt(units, rows, t_hi, np.zeros(rows.size, dtype=np.int64), c[rows] - 1, c[rows] - 1)
    less = _wsum(None if w is None else w[rows], c[rows] - c_hi[rows])
    return _Bracket(t_hi, c_hi, placed - less, t, c, placed)


def _quantile(scores: FloatArray, weights: FloatArray | None, level: float) -> float:
    """Score of the unit at which the cumulative weight (best first) exceeds ``level``.

    ``+inf`` when ``level < 0`` (no unit); ``-inf`` when the listed units do not reach it.
    """
    if level < 0:
        return math.inf
    v = _edge_value(scores, weights, level, largest=True, side="right")
    return -math.inf if v is None else v


def _sample_estimate(units: _Units, cmax: IntArray, budget: float, tol: float, size: int) -> float:
    """Estimate of the critical score from a strided sample of prompts (the caller verifies it).

    ``min(size, 4 sqrt(E))`` prompts (at least 256); their units are listed down to a depth that
    doubles for prompts whose next unlisted unit still scores at or above the estimate; the budget is
    scaled by the sample's share of prompts.
    """
    e = cmax.size
    w = units.weights
    mean_units = (budget + tol) / (e if w is None else float(np.sum(w)))
    s = int(min(e, size, max(256.0, 4.0 * math.sqrt(e)), max(1.0, _SAMPLE_UNITS / (mean_units + 4.0))))
    rows = (np.arange(s, dtype=np.int64) * e) // s
    cm = cmax[rows]
    depth = np.minimum(cm, int(mean_units) + 4)
    target = (budget + tol) * s / e
    rid, j = _positions(rows, np.zeros(s, dtype=np.int64), depth)
    scores = units.scores(rid, j)
    weights = None if w is None else w[rid]
    t = -math.inf
    for _ in range(_MAX_ROUNDS):
        t = _quantile(scores, weights, target)
        cut = np.flatnonzero(depth < cm)
        short = cut[units.scores(rows[cut], depth[cut]) >= t] if cut.size else cut  # listed too shallow for t
        if short.size == 0:
            return t
        deeper = np.minimum(cm[short], 2 * depth[short] + 4)
        rid, j = _positions(rows[short], depth[short], deeper)  # list only the new units
        scores = np.concatenate([scores, units.scores(rid, j)])
        weights = None if w is None or weights is None else np.concatenate([weights, w[rid]])
        depth[short] = deeper
    return t


def _apply(units: _Units, br: _Bracket, act: IntArray, t: float, budget: float, tol: float) -> None:
    """Count at ``t`` (strictly inside the bracket) on the band's prompts and move one end to it."""
    if not br.t_lo < t < br.t_hi:
        return
    w = units.weights
    c = _count_gt(units, act, t, br.c_hi[act], br.c_lo[act], None)
    diff = c - br.c_hi[act]
    placed = br.w_hi + _wsum(None if w is None else w[act], diff)
    if placed <= budget + tol:
        br.t_hi, br.w_hi = t, placed
        br.c_hi[act] = c
    else:
        br.t_lo, br.w_lo = t, placed
        br.c_lo[act] = c


def _shrink(units: _Units, br: _Bracket, budget: float, tol: float, band_max: int) -> None:
    """Sample units of the band (c_hi <= j < c_lo) to move both ends until the band is small or all ties."""
    for _ in range(_MAX_ROUNDS):
        if br.t_lo == np.nextafter(br.t_hi, -math.inf):
            return  # the band holds only units scoring exactly t_hi
        act = np.flatnonzero(br.c_lo > br.c_hi)
        width = br.c_lo[act] - br.c_hi[act]
        n_band = int(width.sum())
        if n_band <= band_max:
            return
        pos = ((np.arange(_BAND_SAMPLE) + 0.5) * (n_band / _BAND_SAMPLE)).astype(np.int64)
        cum = np.cumsum(width)
        k = np.searchsorted(cum, pos, side="right")
        sc = units.scores(act[k], br.c_hi[act[k]] + pos - (cum[k] - width[k]))
        wt = np.ones(sc.size) if units.weights is None else units.weights[act[k]]
        order = np.argsort(-sc, kind="stable")
        sc, wt = sc[order], wt[order]
        est = np.cumsum(wt) * ((br.w_lo - br.w_hi) / float(wt.sum()))  # band weight above each sample
        k0 = min(int(np.searchsorted(est, budget + tol - br.w_hi, side="right")), sc.size - 1)
        m = int(_Z * math.sqrt(k0 + 1.0)) + 1
        before = (br.t_hi, br.t_lo)
        if k0 - m >= 0:
            _apply(units, br, act, float(sc[k0 - m]), budget, tol)
        if k0 + m < sc.size:
            _apply(units, br, act, float(np.nextafter(sc[k0 + m], -math.inf)), budget, tol)
        if (br.t_hi, br.t_lo) == before:  # margins gave nothing (few distinct scores): isolate the estimate
            _apply(units, br, act, float(sc[k0]), budget, tol)
            _apply(units, br, act, float(np.nextafter(sc[k0], -math.inf)), budget, tol)


def _finish(units: _Units, br: _Bracket, budget: float, tol: float) -> _Pick:
    """Select inside the band: exact tie split when it holds one score, else list its units."""
    act = np.flatnonzero(br.c_lo > br.c_hi)
    if br.t_lo == np.nextafter(br.t_hi, -math.inf) and act.size:
        return _split_ties(units, br, act, budget, tol)
    taken, crit = _select(units, act, br.c_hi[act], br.c_lo[act], br.w_hi, budget, tol)
    extra = br.c_hi  # the bracket is done with: reuse its array
    extra[act] += taken
    return _Pick(extra, crit)


def _split_ties(units: _Units, br: _Bracket, act: IntArray, budget: float, tol: float) -> _Pick:
    """All band units score ``t_hi``: take whole tie blocks in prompt order while they fit."""
    w = np.ones(act.size) if units.weights is None else units.weights[act]
    width = br.c_lo[act] - br.c_hi[act]
    cum = br.w_hi + np.cumsum(w * width)
    first = int(np.searchsorted(cum, budget + tol, side="right"))  # first block that does not fit whole
    extra = br.c_hi.copy()
    extra[act[:first]] = br.c_lo[act[:first]]
    if first == act.size:
        return _Pick(extra, None)
    i = act[first]
    room = budget + tol - (float(cum[first - 1]) if first else br.w_hi)
    k = int(min(max(math.floor(room / w[first]), 0), width[first] - 1))
    while k > 0 and k * w[first] > room:
        k -= 1
    extra[i] += k
    crit = units.gains(np.array([i]), np.array([extra[i]]))
    return _Pick(extra, float(crit[0]))


# --------------------------------------------------------------------------------------------
# per-prompt costs: prefix, then fill rounds


def _cost_solve(
    units: _Units, caps: IntArray, w: FloatArray, budget: float, tol: float, st: Settings
) -> tuple[IntArray, float | None]:
    """Ratio-greedy prefix, then fill: add the best next units that still fit (module docstring)."""
    cmax = _fitting(caps, budget + tol, w)  # more units than this never fit
    main = _prefix(units, cmax, budget, tol, st)
    extra = main.extra
    if main.critical_gain is None:
        return extra, None
    left = budget - _wsum(w, extra)
    while True:  # each round adds at least one unit: the best candidate fits on its own
        cand = np.flatnonzero((extra < cmax) & (w <= left + tol))
        if cand.size == 0:
            break
        if (left + tol) / float(w[cand].min()) <= _FILL_STEPS:
            _fill_by_steps(units, w, cmax, extra, cand, left, tol)
            break
        sub = units.sub(cand, extra[cand])
        room = _fitting(cmax[cand] - extra[cand], left + tol, w[cand])
        add = _prefix(sub, room, left, tol, st).extra
        extra[cand] += add
        left -= _wsum(w[cand], add)
    return extra, main.critical_gain


def _fitting(caps: IntArray, room: float, w: FloatArray) -> IntArray:
    """``min(caps, floor(room / w))`` without overflowing int64 for huge budgets."""
    return np.minimum(caps.astype(np.float64), np.floor(room / w)).astype(np.int64)


def _fill_by_steps(
    units: _Units, w: FloatArray, cmax: IntArray, extra: IntArray, cand: IntArray, left: float, tol: float
) -> None:
    """At most ``_FILL_STEPS`` units still fit: repeatedly take the best next unit among the prompts
    whose next unit fits (ties: lower index), dropping those that no longer fit. Updates ``extra``."""
    w_c = w[cand]
    nxt = units.scores(cand, extra[cand])  # score of each candidate's next unit
    while cand.size:
        i = int(np.argmax(nxt))  # best score, first (lowest) index on ties
        if nxt[i] == -np.inf:
            return
        row = int(cand[i])
        extra[row] += 1
        left -= float(w_c[i])
        more = extra[row] < cmax[row]
        nxt[i] = units.scores(np.array([row]), np.array([extra[row]]))[0] if more else -np.inf
        fit = w_c <= left + tol  # left only decreases: a prompt that no longer fits never will
        if not fit.all():
            keep = np.flatnonzero(fit)
            cand, w_c, nxt = cand[keep], w_c[keep], nxt[keep]


# --------------------------------------------------------------------------------------------
# the dense path: prompts grouped into distinct rows


def _group_rows(keys: list[NDArray[np.float64] | IntArray]) -> tuple[list[NDArray[np.generic]], IntArray] | None:
    """Distinct rows of the (E,) key arrays and each prompt's row, or None when they are many.

    Without sorting: each key's distinct values are read from a strided sample of
    ``_GROUP_SAMPLE`` prompts, every prompt is located among them by ``searchsorted`` and checked
    equal; row codes are then compacted with ``bincount``. Returns None when a key has more than
    ``_GROUP_MAX`` distinct values or one value is missing from the sample.
    """
    e = keys[0].size
    code = np.zeros(e, dtype=np.int64)
    uniques: list[NDArray[np.generic]] = []
    size = 1
    for x in keys:
        if x[0] == x.min() == x.max():
            uniques.append(x[:1])
            continue
        uniq = np.unique(x[(np.arange(min(e, _GROUP_SAMPLE)) * e) // min(e, _GROUP_SAMPLE)])
        if uniq.size > _GROUP_MAX:
            return None
        ids = np.minimum(np.searchsorted(uniq, x), uniq.size - 1)
        if not np.array_equal(uniq[ids], x):
            return None
        code = code * uniq.size + ids
        size *= uniq.size
        uniques.append(uniq)
    present = np.flatnonzero(np.bincount(code, minlength=size))
    lut = np.zeros(size, dtype=np.int64)
    lut[present] = np.arange(present.size)
    rows: list[NDArray[np.generic]] = []
    rest = present.copy()
    for uniq in reversed(uniques):
        rows.append(uniq[rest % uniq.size])
        rest //= uniq.size
    return rows[::-1], lut[code]


def grouped_counts(
    value: ValueFn, params: Params, lower: IntArray, cmax: IntArray, budget: int, zero_at_lower: bool
) -> IntArray | None:
    """Unit costs: top-``budget`` selection over the table of distinct rows (None if not grouped)."""
    if cmax.size == 0:
        return None
    zero = np.full(cmax.size, zero_at_lower)
    grouped = _group_rows([*params, lower, cmax, zero.astype(np.int64)])
    if grouped is None:
        return None
    rows, inverse = grouped
    n_rows = rows[0].size
    width = int(rows[-2].max())
    if n_rows * width > max(cmax.size, 1 << 16):
        return None
    row_params = tuple(np.asarray(r, dtype=np.float64) for r in rows[:-3])
    row_units = _Units(value, row_params, np.asarray(rows[-3], dtype=np.int64), None, rows[-1].astype(bool))
    rid = np.repeat(np.arange(n_rows, dtype=np.int64), width)
    j = np.tile(np.arange(width, dtype=np.int64), n_rows)
    table = row_units.gains(rid, j).reshape(n_rows, width)
    table[j.reshape(n_rows, width) >= np.asarray(rows[-2])[:, None]] = -np.inf  # beyond each row's cap
    weight = np.repeat(np.bincount(inverse, minlength=n_rows), width)
    order = np.argsort(-table.ravel(), kind="stable")
    kth = float(table.ravel()[order[int(np.searchsorted(np.cumsum(weight[order]), budget, side="left"))]])
    above = (table > kth).sum(axis=1)[inverse]  # (E,) units strictly above t: a prefix per prompt
    ties = (table == kth).sum(axis=1)[inverse]  # (E,) units exactly at t
    before = np.cumsum(ties) - ties  # tie units available to earlier prompts
    extra: IntArray = above + np.clip(budget - int(above.sum()) - before, 0, ties)
    return extra
