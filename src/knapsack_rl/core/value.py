"""Value functions V(N, p): what N rollouts of a prompt with success rate p are worth.

Every value function takes broadcastable arrays ``n`` (rollout counts, integers >= 0) and ``p``
(success rates in [0, 1]) and returns an array of the broadcast shape. The exact solver in
:mod:`knapsack_rl.core.solve` needs V to be concave in N for every p (non-increasing marginal
gains); every function registered here is, and :func:`register_value` documents the contract.

Registered names:

- ``"paper"``: the paper's value ``V(N, p) = (1 - p^N - (1 - p)^N) * p (1 - p)^2``
  (probability of a non-zero gradient times the information gain of one update).
- ``"nonzero"``: the probability of a non-zero gradient alone, ``P_nz(N, p) = 1 - p^N - (1 - p)^N``.
- ``"variance"``: ``P_nz(N, p) * p (1 - p)``: non-zero gradient weighted by the Bernoulli reward
  variance (symmetric in p, unlike ``"paper"``, which favours hard prompts).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.registry import Registry

ValueFn = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]

_VALUES: Registry[ValueFn] = Registry("value", "value function")


def register_value(name: str) -> Callable[[ValueFn], ValueFn]:
    """Register ``fn(n, p) -> V`` under ``name``.

    The function must be vectorised (broadcast ``n`` against ``p``), return 0 at p = 0 and p = 1,
    and be concave in n (marginal gains ``V(n + 1, p) - V(n, p)`` non-increasing in n): the greedy
    solver is exact only for concave values. Registering a name twice raises ``ValueError``.
    """
    return _VALUES.register(name)


def get_value(name: str) -> ValueFn:
    """Return the value function registered as ``name``; an unknown name lists the valid ones."""
    return _VALUES.get(name)


def value_names() -> list[str]:
    """Names of the registered value functions, sorted."""
    return _VALUES.names()


def nonzero_gradient_prob(n: ArrayLike, p: ArrayLike) -> NDArray[np.float64]:
    """``P_nz(N, p) = 1 - p^N - (1 - p)^N``: probability that N Bernoulli(p) rewards are not all equal.

    For N = 0 the formula gives -1; it is clipped to 0 (no rollouts, no gradient).
    """
    n_arr = np.asarray(n, dtype=np.float64)
    p_arr = np.asarray(p, dtype=np.float64)
    out = 1.0 - p_arr**n_arr - (1.0 - p_arr) ** n_arr  # P(not all success) - P(all failure)
    return np.maximum(out, 0.0)


def information_gain(p: ArrayLike) -> NDArray[np.float64]:
    """``G(p) = p (1 - p)^2``: approximate increase of the success rate after one update (max at p = 1/3)."""
    p_arr = np.asarray(p, dtype=np.float64)
    return p_arr * (1.0 - p_arr) ** 2


@register_value("paper")
def paper_value(n: NDArray[np.float64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    """``V(N, p) = P_nz(N, p) * G(p)`` (Knapsack RL, eq. for the expected learning value)."""
    return nonzero_gradient_prob(n, p) * information_gain(p)


@register_value("nonzero")
def nonzero_value(n: NDArray[np.float64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    """``V(N, p) = P_nz(N, p)``: maximise the expected number of prompts with a non-zero gradient."""
    return nonzero_gradient_prob(n, p)


@register_value("variance")
def variance_value(n: NDArray[np.float64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    """``V(N, p) = P_nz(N, p) * p (1 - p)``: non-zero gradient weighted by the reward variance."""
    p_arr = np.asarray(p, dtype=np.float64)
    return nonzero_gradient_prob(n, p_arr) * p_arr * (1.0 - p_arr)


def expected_rollouts_to_signal(p: ArrayLike) -> NDArray[np.float64]:
    """Expected rollouts until a non-zero gradient, ``1 / (p (1 - p)) - 1`` (inf at p = 0 or 1)."""
    p_arr = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 1.0 / (p_arr * (1.0 - p_arr)) - 1.0


def rollouts_for_confidence(p: ArrayLike, alpha: float) -> NDArray[np.float64]:
    """Rollouts for probability ``alpha`` of a non-zero gradient: ``log(1 - alpha) / log(max(p, 1 - p))``.

    Used by the recipe's fallback (alpha = 0.9). Infinite at p = 0 and p = 1.
    """
    p_arr = np.asarray(p, dtype=np.float64)
    log_max = np.log1p(-np.minimum(p_arr, 1.0 - p_arr))  # log(max(p, 1 - p)), exact for tiny p
    with np.errstate(divide="ignore", over="ignore"):  # tiny p: the count is effectively infinite
        out: NDArray[np.float64] = np.where(log_max < 0.0, np.log1p(-alpha) / np.minimum(log_max, -0.0), np.inf)
    return out
