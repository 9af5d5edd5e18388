"""Empirical-Bayes posteriors: the population's distribution of success rates, estimated without a form.

A Beta(a0, b0) prior with the same (a0, b0) for every prompt cannot hold what reasoning data sets look
like: many prompts always solved, many never, and many hard but not hopeless between them. Estimated
from 8 rewards, a prompt's posterior is then wrong in a systematic way, and a plan that maximises an
expected value under it loses what it meant to gain (docs/evidence.md, round 2: under Beta(1, 1) the
preflight predicts the count-maximising plan 0.5% *below* uniform's prompts with signal on the demo task,
and 9.6% above it under the population prior).

:class:`PopulationPrior` instead fits the prompts' rates as weights on a fixed grid of rates: the
nonparametric maximum likelihood (NPMLE) of their success / failure counts, by EM. Counts may be
fractional (the tracker's discounted counts ``s``, ``f``): the likelihood of rate ``p`` is
``p^s (1 - p)^f``. Each prompt's posterior is then its likelihood times the weights, normalised
(:class:`GridPosterior`), and the value of N rollouts is ``E[V(N, p)] = sum_g w_ig V(N, p_g)``
(:func:`grid_value`), a mixture of concave functions of N and so concave: the solvers stay exact.

With a posterior from a correctly specified prior, the plan that maximises the posterior expected
number of prompts with signal (value ``"nonzero"``) has, in expectation over the data, at least as
many as uniform's plan, which it could have chosen. That is the property the ``signal`` preset buys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.validate import check_int, check_real
from knapsack_rl.core.value import ValueFunction

FloatArray = NDArray[np.float64]


def rate_grid(size: int) -> FloatArray:
    """``size`` rates in [0, 1], dense near 0 and 1 and holding both: ``(1 - cos(pi t)) / 2``."""
    check_int("size", size, low=3)
    return np.asarray((1.0 - np.cos(np.pi * np.linspace(0.0, 1.0, size))) / 2.0, dtype=np.float64)


def grid_likelihood(successes: FloatArray, failures: FloatArray, grid: FloatArray) -> FloatArray:
    """(P, G) ``p^s (1 - p)^f`` at each grid rate, each row divided by its maximum (``0^0 = 1``)."""
    s, f = successes[:, None], failures[:, None]
    at0, at1 = grid <= 0.0, grid >= 1.0  # where a log is -inf: those columns are set apart
    with np.errstate(divide="ignore"):
        log_p, log_q = np.where(at0, 0.0, np.log(grid)), np.where(at1, 0.0, np.log1p(-grid))
    log = s * log_p + f * log_q
    if at0.any():
        log[:, at0] = np.where(s > 0, -np.inf, 0.0)
    if at1.any():
        log[:, at1] = np.where(f > 0, -np.inf, 0.0)
    out: FloatArray = np.exp(log - log.max(axis=1, keepdims=True))
    return out


def _distinct_pairs(s: FloatArray, f: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The distinct (s, f) pairs, ordered by s then f, and how many prompts hold each."""
    order = np.lexsort((f, s))
    s, f = s[order], f[order]
    first = np.flatnonzero(np.concatenate([[True], (s[1:] != s[:-1]) | (f[1:] != f[:-1])]))
    return s[first], f[first], np.diff(np.append(first, s.size)).astype(np.float64)


def _binned_pairs(s: FloatArray, f: FloatArray, resolution: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`_distinct_pairs` of the counts rounded to multiples of ``resolution`` (sorting one integer
    key per prompt where the multiples allow it: several times faster than two float keys)."""
    a, b = np.round(s / resolution), np.round(f / resolution)
    width = float(b.max()) + 1.0
    if (float(a.max()) + 1.0) * width >= 2.0**53:  # the keys would not be exact
        return _distinct_pairs(a * resolution, b * resolution)
    key = np.sort((a * width + b).astype(np.int64))
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    step = int(width)
    s_mult, f_mult = (key[first] // step).astype(np.float64), (key[first] % step).astype(np.float64)
    return s_mult * resolution, f_mult * resolution, np.diff(np.append(first, key.size)).astype(np.float64)


def _check_counts(successes: ArrayLike, failures: ArrayLike) -> tuple[FloatArray, FloatArray]:
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    if s.ndim != 1 or f.shape != s.shape:
        raise ValueError(f"successes and failures must be 1-D of one shape; got {s.shape} and {f.shape}")
    for name, arr in (("successes", s), ("failures", f)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            raise ValueError(f"{name} must be finite and >= 0; {name}[{bad[0]}]={float(arr[bad[0]])!r}")
    return s, f


class LikelihoodCache:
    """The grid likelihoods of the last fit's distinct count pairs, for a next fit whose pairs mostly recur.

    A row of :func:`grid_likelihood` depends on its own pair only, so a fit computes the same numbers
    with or without the cache; it computes only the rows of pairs the last fit did not have. A fit
    replaces the cache's content with its own pairs.
    """

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype=np.complex128)  # s + i f, sorted: NumPy orders complex numbers by (real, imag)
        self._lik = np.zeros((0, 0))

    def likelihood(self, s: FloatArray, f: FloatArray, grid: FloatArray) -> FloatArray:
        """:func:`grid_likelihood` of pairs sorted by s then f (as the fit's distinct pairs are)."""
        keys = s + 1j * f
        if self._lik.shape[1:] == (grid.size,) and np.array_equal(keys, self._keys):
            return self._lik  # the same pairs (the usual case: a step rarely brings a pair the sample lacks)
        if self._keys.size and self._lik.shape[1] == grid.size:
            at = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
            lik = np.take(self._lik, at, axis=0)
            miss = np.flatnonzero(self._keys[at] != keys)
        else:
            lik, miss = np.empty((s.size, grid.size)), np.arange(s.size)
        if miss.size:
            lik[miss] = grid_likelihood(s[miss], f[miss], grid)
        self._keys, self._lik = keys, lik
        return lik


def _check_start(start: ArrayLike, size: int) -> FloatArray:
    w = np.array(start, dtype=np.float64)  # a copy: the caller's array is never the fit's
    if w.shape != (size,):
        raise ValueError(f"start must be ({size},) weights; got shape {w.shape}")
    if not np.all(np.isfinite(w) & (w >= 0)) or abs(float(w.sum()) - 1.0) > 1e-6:
        bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
        what = f"start[{bad[0]}]={float(w[bad[0]])!r}" if bad.size else f"they sum to {float(w.sum())!r}"
        raise ValueError(f"start must be weights >= 0 summing to 1; {what}")
    return w


def _em(lik: FloatArray, share: FloatArray, weights: FloatArray, iterations: int, tol: float) -> FloatArray:
    """EM for the grid weights of the (U, G) likelihoods ``lik`` of U count pairs held by ``share`` (U,)
    of the prompts: each step ``w_g <- w_g sum_u share_u lik_ug / sum_h lik_uh w_h`` (two matrix-vector
    products), until no weight moves by more than ``tol`` or after ``iterations`` steps."""
    for _ in range(iterations):
        new = weights * ((share / (lik @ weights)) @ lik)
        done = float(np.abs(new - weights).max()) < tol
        weights = new
        if done:
            break
    return weights


@dataclass(frozen=True)
class GridPosterior:
    """Each prompt's success rate as weights over a grid of rates.

    Attributes:
        grid: (G,) rates in [0, 1], increasing.
        weights: (M, G) non-negative, every row summing to 1.
    """

    grid: FloatArray
    weights: FloatArray

    def __post_init__(self) -> None:
        grid, w = np.asarray(self.grid, dtype=np.float64), np.asarray(self.weights, dtype=np.float64)
        if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0) or grid[0] < 0 or grid[-1] > 1:
            raise ValueError(f"grid must be (G,) increasing rates in [0, 1] with G >= 2; got {grid!r}")
        if w.ndim != 2 or w.shape[1] != grid.size:
            raise ValueError(f"weights must be (M, {grid.size}); got shape {w.shape}")
        bad = np.flatnonzero(~np.all(np.isfinite(w) & (w >= 0), axis=1) | (np.abs(w.sum(axis=1) - 1.0) > 1e-6))
        if bad.size:
            raise ValueError(f"weights rows must be >= 0 and sum to 1; row {bad[0]} is {w[bad[0]]!r}")
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "weights", w)

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    def mean(self) -> FloatArray:
        """(M,) posterior mean rates."""
        return np.asarray(self.weights @ self.grid, dtype=np.float64)


@dataclass(frozen=True)
class PopulationPrior:
    """The population's distribution of success rates: ``weights`` (G,) on ``grid`` (G,)."""

    grid: FloatArray
    weights: FloatArray

    @classmethod
    def fit(
        cls,
        successes: ArrayLike,
        failures: ArrayLike,
        *,
        size: int = 201,
        iterations: int = 1000,
        tol: float = 1e-8,
        resolution: float | None = None,
        start: ArrayLike | None = None,
        cache: LikelihoodCache | None = None,
    ) -> PopulationPrior:
        """The weights that maximise the likelihood of the prompts' (possibly fractional) counts.

        EM from ``start`` until no weight moves by more than ``tol`` (at most ``iterations``). ``start``:
        (size,) weights >= 0 summing to 1, e.g. an earlier fit's (a warm start: EM goes on from there;
        a rate whose weight is 0 keeps it, and counts with likelihood 0 under ``start`` are refused);
        default uniform. Prompts with equal counts are fitted once, weighted by how many share
        them; ``resolution`` rounds the counts to its multiples first, which bounds the distinct pairs
        (discounted counts of many prompts are otherwise almost all distinct). No prompts: the start.
        ``cache``: a :class:`LikelihoodCache` kept between fits (the result does not depend on it).
        """
        s, f = _check_counts(successes, failures)
        size = check_int("size", size, low=3)
        check_int("iterations", iterations, low=1)
        check_real("tol", tol, low=0.0)
        weights = np.full(size, 1.0 / size) if start is None else _check_start(start, size)
        if resolution is not None:
            check_real("resolution", resolution, low=0.0, open_low=True)
        grid = rate_grid(size)
        if s.size == 0:
            return cls(grid, weights)
        s, f, mult = _distinct_pairs(s, f) if resolution is None else _binned_pairs(s, f, resolution)
        lik = grid_likelihood(s, f, grid) if cache is None else cache.likelihood(s, f, grid)
        zero = np.flatnonzero(~(lik @ weights > 0)) if start is not None else np.zeros(0, dtype=np.intp)
        if len(zero):
            pair = f"({float(s[zero[0]])!r}, {float(f[zero[0]])!r})"
            raise ValueError(f"start gives the counts {pair} likelihood 0; give their rates weight")
        return cls(grid, _em(lik, mult / mult.sum(), weights, iterations, tol))

    def posterior(self, successes: ArrayLike, failures: ArrayLike) -> GridPosterior:
        """Each prompt's posterior under this prior, given its counts (0 and 0: the prior itself)."""
        s, f = _check_counts(successes, failures)
        post = grid_likelihood(s, f, self.grid) * self.weights
        total = post.sum(axis=1, keepdims=True)
        post = np.where(total > 0, post / np.where(total > 0, total, 1.0), 1.0 / self.grid.size)
        return GridPosterior(self.grid, post)


def grid_value(point: ValueFunction, posterior: GridPosterior) -> ValueFunction:
    """``E[V(N, p)]`` under ``posterior`` for the point value ``point``, as a solver value.

    Its one parameter is the row of ``posterior`` (a float array of row indices), so it runs through
    any solver unchanged; the gain uses ``point``'s closed form when it has one. Each call evaluates
    ``point`` once per distinct N at the grid's rates and mixes the table with the rows' weights
    (:func:`_mix`), so its work grows with the distinct counts, not with the units asked for.
    """
    grid, w = posterior.grid, posterior.weights
    prepared = point.prepare(grid) if point.prepare is not None else (grid,)
    point_gain = point.gain

    def value(n: ArrayLike, row: ArrayLike) -> FloatArray:
        return _mix(w, lambda u: point.fn(u[:, None], grid), n, row)

    def gain(n: ArrayLike, row: ArrayLike) -> FloatArray:
        if point_gain is None:
            return value(np.asarray(n) + 1.0, row) - value(n, row)
        return _mix(w, lambda u: point_gain(u[:, None], *prepared), n, row)

    return ValueFunction(name=f"{point.name}@grid", kind="posterior", fn=value, gain=gain)


MIX_SPAN = 4096
""":func:`_mix` tabulates integral counts spanning at most this many values (the solvers' counts)."""


def _mix(w: FloatArray, table: Callable[[FloatArray], FloatArray], n: ArrayLike, row: ArrayLike) -> FloatArray:
    """``sum_g w[row, g] table(n)[g]`` for each (n, row) pair (broadcast); ``table(u)`` is (U, G) at counts u.

    Integral counts in a short span (what the solvers ask for): one row of the table per count in the
    span, then the rows asked for times the table (a matrix product) and a lookup, when that product is
    at most 8 times the pairs; otherwise (and for other counts) the table at every pair.
    """
    n_arr, idx = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(row).astype(np.intp))
    flat_n, flat_i = n_arr.ravel(), idx.ravel()
    if flat_n.size:
        lo, hi = float(flat_n.min()), float(flat_n.max())
        span = int(hi - lo) + 1 if np.isfinite(lo) and np.isfinite(hi) and hi - lo < MIX_SPAN else 0
        k = flat_n.astype(np.int64) if span else flat_n
        if span and np.array_equal(k, flat_n):
            used = np.zeros(w.shape[0], dtype=bool)
            used[flat_i] = True
            rows = np.flatnonzero(used)
            if rows.size * span <= 8 * flat_n.size:
                where = np.zeros(w.shape[0], dtype=np.intp)
                where[rows] = np.arange(rows.size)
                mixed = w[rows] @ table(np.arange(span, dtype=np.float64) + lo).T  # (rows, span)
                return np.asarray(mixed[where[flat_i], k - int(lo)], dtype=np.float64).reshape(n_arr.shape)
    out = (w[flat_i] * table(flat_n)).sum(axis=-1)
    return np.asarray(out, dtype=np.float64).reshape(n_arr.shape)
