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
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.where(s > 0, s * np.log(grid), 0.0) + np.where(f > 0, f * np.log1p(-grid), 0.0)
    out: FloatArray = np.exp(log - log.max(axis=1, keepdims=True))
    return out


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
    ) -> PopulationPrior:
        """The weights that maximise the likelihood of the prompts' (possibly fractional) counts.

        EM from uniform weights until no weight moves by more than ``tol`` (at most ``iterations``).
        Prompts with equal counts are fitted once, weighted by how many share them; ``resolution``
        rounds the counts to its multiples first, which bounds the distinct pairs (discounted counts
        of many prompts are otherwise almost all distinct). No prompts: the uniform weights.
        """
        s, f = _check_counts(successes, failures)
        check_int("iterations", iterations, low=1)
        check_real("tol", tol, low=0.0)
        if resolution is not None:
            check_real("resolution", resolution, low=0.0, open_low=True)
            s, f = np.round(s / resolution) * resolution, np.round(f / resolution) * resolution
        grid = rate_grid(size)
        weights = np.full(size, 1.0 / size)
        if s.size == 0:
            return cls(grid, weights)
        pairs, mult = np.unique(np.stack([s, f], axis=1), axis=0, return_counts=True)
        lik = grid_likelihood(pairs[:, 0], pairs[:, 1], grid)
        share = mult / mult.sum()
        for _ in range(iterations):
            post = lik * weights
            post /= post.sum(axis=1, keepdims=True)
            new = share @ post
            done = float(np.abs(new - weights).max()) < tol
            weights = new
            if done:
                break
        return cls(grid, weights)

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
    any solver unchanged; the gain uses ``point``'s closed form when it has one.
    """
    grid, w = posterior.grid, posterior.weights
    prepared = point.prepare(grid) if point.prepare is not None else (grid,)
    point_gain = point.gain

    def value(n: ArrayLike, row: ArrayLike) -> FloatArray:
        n_arr, idx = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(row).astype(np.intp))
        vals = point.fn(n_arr[..., None], grid)
        return np.asarray((w[idx] * vals).sum(axis=-1), dtype=np.float64)

    def gain(n: ArrayLike, row: ArrayLike) -> FloatArray:
        if point_gain is None:
            return value(np.asarray(n) + 1.0, row) - value(n, row)
        n_arr, idx = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(row).astype(np.intp))
        d = point_gain(n_arr[..., None], *prepared)
        return np.asarray((w[idx] * d).sum(axis=-1), dtype=np.float64)

    return ValueFunction(name=f"{point.name}@grid", kind="posterior", fn=value, gain=gain)
