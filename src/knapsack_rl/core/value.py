"""Value functions: what N rollouts of a prompt are worth, at a point estimate p or under a posterior.

A *point value* is ``V(n, p)``: broadcastable arrays ``n`` (rollout counts, integers >= 0) and ``p``
(success rates in [0, 1]) give an array of the broadcast shape. A *posterior value* is
``V(n, a, b) = E_{p ~ Beta(a, b)}[V(n, p)]`` (a, b > 0): the value of N rollouts when p is only
known through a Beta posterior (docs/evidence.md: point estimates from 8 rewards starve hard
prompts). The solvers in :mod:`knapsack_rl.core.solve` call a value as ``value(n, *params)`` with
``params = (p,)`` or ``(a, b)``, and need it concave in n on the bounds they are given (marginal
gains ``V(n + 1) - V(n)`` non-increasing); every value registered here is concave for n >= 1
(tested numerically on random grids, point and posterior).

Registered names (``value_names()``; all have a posterior form, ``posterior_value_names()``):

- ``"paper"``: ``V(N, p) = P_nz(N, p) G(p)`` with ``P_nz = 1 - p^N - (1 - p)^N`` (probability of a
  non-zero GRPO gradient) and ``G(p) = p (1 - p)^2`` (Knapsack RL, arXiv 2509.25849).
- ``"nonzero"``: ``P_nz(N, p)`` alone.
- ``"variance"``: ``P_nz(N, p) p (1 - p)`` (symmetric in p).
- ``"hora"``: hit utility ``1 - (1 - p)^N``, HORA (arXiv 2605.07114); see :func:`hora_value`.
- ``"vip"``: minus the RLOO gradient variance ``p (1 - p) / (N - 1)``, VIP (arXiv 2602.01601),
  with a concave extension below N = 2; see :func:`vip_value`.

Registration. ``@register_value(name, gain=..., crossing=..., prepare=...)`` registers a point
value; ``@register_posterior_value(name, ...)`` then registers the posterior form of the same name
(the point form must exist first). Both store a :class:`ValueFunction`, which is what
:func:`get_value` and :func:`get_posterior_value` return: callable as the plain function, plus
optional closed forms the solver uses for speed and accuracy (never for correctness):

- ``gain(n, *q)``: the marginal gain ``V(n + 1) - V(n)`` without cancellation;
- ``crossing(lam, *q)``: an estimate of the real n at which the gain falls to ``lam`` (a scalar or
  one value per prompt; units ``n < crossing`` have gain > lam); the solver verifies every count it
  derives from it, so a poor hint costs time, never correctness;
- ``prepare(*params) -> q``: per-prompt constants, computed once per batch of prompts the solver
  works on, then passed to ``gain`` and ``crossing`` (default ``q = params``).

Every posterior form is exact, in closed form. The P_nz family and "hora" are sums of terms
``c p^alpha (1 - p)^beta`` with alpha, beta affine in N, and
``E[p^alpha (1 - p)^beta] = B(a + alpha, b + beta) / B(a, b)`` (Beta function B), evaluated with
the NumPy log-gamma :func:`log_gamma` (Lanczos; accuracy 1e-13 relative, tested); "vip" is
``E[p (1 - p)] h(N)``. Log-gamma rounding grows like ``eps N log N``: measured on 200 random
(a, b) with a, b in [0.14, 148], the computed gains were non-increasing in every window of 2000
counts starting at N = 10^3 ... 10^7, but 16-23% of consecutive pairs increased at N = 10^8; keep
max_n below 10^7 with posterior values (the solver is exact only for non-increasing gains).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.registry import Registry

FloatArray = NDArray[np.float64]
ValueFn = Callable[..., FloatArray]
"""``fn(n, *params) -> V``; ``params`` is ``(p,)`` for a point value and ``(a, b)`` for a posterior one."""
PrepareFn = Callable[..., tuple[FloatArray, ...]]
F = TypeVar("F", bound=Callable[..., FloatArray])


@dataclass(frozen=True)
class ValueFunction:
    """A registered value ``V(n, *params)`` with optional closed forms used by the solver.

    Attributes:
        name: registry name.
        kind: ``"point"`` (params ``(p,)``) or ``"posterior"`` (params ``(a, b)``).
        fn: the value itself.
        gain: ``gain(n, *q) = V(n + 1, *params) - V(n, *params)`` in closed form, or None.
        crossing: ``crossing(lam, *q)``: estimate of the real n where the gain crosses ``lam``
            (scalar or per prompt; a speed hint, the solver verifies it), or None.
        prepare: ``prepare(*params) -> q``, per-prompt constants for ``gain`` and ``crossing``
            (the solver calls it once per batch of prompts it works on); None means ``q = params``.
    """

    name: str
    kind: Literal["point", "posterior"]
    fn: ValueFn
    gain: ValueFn | None = None
    crossing: ValueFn | None = None
    prepare: PrepareFn | None = None

    def __call__(self, n: ArrayLike, *params: ArrayLike) -> FloatArray:
        return self.fn(n, *params)


_VALUES: Registry[ValueFunction] = Registry("value", "value function")
_POSTERIORS: Registry[ValueFunction] = Registry("value", "posterior value")


def register_value(
    name: str,
    *,
    gain: ValueFn | None = None,
    crossing: ValueFn | None = None,
    prepare: PrepareFn | None = None,
) -> Callable[[F], F]:
    """Register the point value ``fn(n, p) -> V`` under ``name`` (a decorator; returns ``fn``).

    ``fn`` must be vectorised (broadcast ``n`` against ``p``) and concave in n on the counts it will
    be solved over (n >= 1 for the built-in values): the solvers are exact only for concave values.
    ``gain``, ``crossing`` and ``prepare`` are optional closed forms (see :class:`ValueFunction`).
    Registering a name twice raises ``ValueError``.
    """

    def decorator(fn: F) -> F:
        _VALUES.add(name, ValueFunction(name, "point", fn, gain, crossing, prepare))
        return fn

    return decorator


def register_posterior_value(
    name: str,
    *,
    gain: ValueFn | None = None,
    crossing: ValueFn | None = None,
    prepare: PrepareFn | None = None,
) -> Callable[[F], F]:
    """Register ``fn(n, a, b) = E_{p ~ Beta(a, b)}[V(n, p)]`` as the posterior form of point value ``name``.

    The point value must already be registered under ``name`` (one name, two forms); a second
    posterior form for the same name raises ``ValueError``. Concavity in n is inherited: an
    expectation of concave functions is concave.
    """

    def decorator(fn: F) -> F:
        if name not in _VALUES:
            raise ValueError(
                f"posterior value {name!r} needs a point value of the same name registered first; "
                f"registered: {value_names()}"
            )
        _POSTERIORS.add(name, ValueFunction(name, "posterior", fn, gain, crossing, prepare))
        return fn

    return decorator


def get_value(name: str) -> ValueFunction:
    """The point value ``fn(n, p)`` registered as ``name``; an unknown name lists the valid ones."""
    return _VALUES.get(name)


def get_posterior_value(name: str) -> ValueFunction:
    """The posterior value ``fn(n, a, b)`` of ``name``; a name without one lists those that have one."""
    if name not in _POSTERIORS:
        raise ValueError(
            f"value={name!r} has no posterior form (fn(n, a, b)); values with one: {posterior_value_names()}"
        )
    return _POSTERIORS.get(name)


def value_names() -> list[str]:
    """Names of the registered (point) value functions, sorted."""
    return _VALUES.names()


def posterior_value_names() -> list[str]:
    """Names of the values that have a posterior form, sorted."""
    return _POSTERIORS.names()


# --------------------------------------------------------------------------------------------
# log-gamma and Beta-function ratios (NumPy only)

_LANCZOS_G = 7.0
_LANCZOS_C = (
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def log_gamma(x: ArrayLike) -> FloatArray:
    """``log Gamma(x)`` for x > 0, vectorised (NumPy has no lgamma ufunc; core may not use scipy).

    Lanczos' approximation with g = 7 and nine coefficients (Lanczos 1964; the coefficient set of
    P. Godfrey): for z = x - 1 >= -0.5,
    ``log Gamma(z + 1) = log(2 pi) / 2 + (z + 1/2) log t - t + log A(z)``, ``t = z + g + 1/2``,
    ``A(z) = c_0 + sum_{k=1..8} c_k / (z + k)``. For x < 1/2 the recurrence
    ``log Gamma(x) = log Gamma(x + 1) - log x`` is used first. Accuracy against ``math.lgamma``
    (tested on 1e-6 <= x <= 1e9): absolute error <= 1e-13 * max(1, |log Gamma(x)|).
    Non-positive or non-finite x give NaN.
    """
    x_arr = np.asarray(x, dtype=np.float64)
    small = x_arr < 0.5
    xs = np.where(small, x_arr + 1.0, x_arr)  # shift (0, 1/2) up by one, corrected below
    z = xs - 1.0
    acc = np.full_like(z, _LANCZOS_C[0])
    for k in range(1, len(_LANCZOS_C)):
        acc += _LANCZOS_C[k] / (z + k)  # A(z), the Lanczos series
    t = z + _LANCZOS_G + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _HALF_LOG_2PI + (z + 0.5) * np.log(t) - t + np.log(acc)
        out = np.where(small, out - np.log(x_arr), out)  # log Gamma(x) = log Gamma(x + 1) - log x
        out = np.where(x_arr > 0.0, out, np.nan)
    return np.asarray(out, dtype=np.float64)


def log_beta(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """``log B(a, b) = log Gamma(a) + log Gamma(b) - log Gamma(a + b)`` (a, b > 0)."""
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    return log_gamma(a_arr) + log_gamma(b_arr) - log_gamma(a_arr + b_arr)


Term = tuple[float, float, float, float, float]
"""``(c, alpha_0, alpha_1, beta_0, beta_1)``: the term ``c p^(alpha_0 + alpha_1 n) (1 - p)^(beta_0 + beta_1 n)``."""


def beta_poly_expectation(terms: tuple[Term, ...], n: ArrayLike, a: ArrayLike, b: ArrayLike) -> FloatArray:
    """``E_{p ~ Beta(a, b)}[sum_k c_k p^alpha_k (1 - p)^beta_k] = sum_k c_k B(a + alpha_k, b + beta_k) / B(a, b)``.

    ``alpha_k = alpha_0 + alpha_1 n`` and ``beta_k = beta_0 + beta_1 n`` (>= 0 for n >= 0); the
    arrays broadcast. Each ratio is ``exp(log B(a + alpha, b + beta) - log B(a, b))``; log-gammas
    shared by several terms are computed once.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    cache: dict[tuple[str, float, float], FloatArray] = {}

    def lg(side: str, c0: float, c1: float) -> FloatArray:  # log Gamma(base + c0 + c1 n), memoised
        if (side, c0, c1) not in cache:
            base = a_arr if side == "a" else b_arr if side == "b" else a_arr + b_arr
            cache[side, c0, c1] = log_gamma(base + c0 + c1 * n_arr) if c1 else log_gamma(base + c0)
        return cache[side, c0, c1]

    log_b0 = lg("a", 0.0, 0.0) + lg("b", 0.0, 0.0) - lg("ab", 0.0, 0.0)
    out = np.zeros(np.broadcast_shapes(n_arr.shape, a_arr.shape, b_arr.shape))
    for c, al0, al1, be0, be1 in terms:
        log_ratio = lg("a", al0, al1) + lg("b", be0, be1) - lg("ab", al0 + be0, al1 + be1) - log_b0
        out = out + c * np.exp(log_ratio)  # c * B(a + alpha, b + beta) / B(a, b)
    return out


@dataclass(frozen=True)
class _BetaPoly:
    """Gain of a posterior value as Beta-function ratios, with the n-free log-gammas precomputed.

    ``gain(n, a, b) = sum_k c_k B(a + alpha_k, b + beta_k) / B(a, b)`` where each term has exactly one
    of alpha, beta growing with n. :meth:`prepare` stores ``(a, b, log c_k + log Gamma(fixed side)
    - log B(a, b))`` per term, so a gain costs three log-gammas instead of nine.
    """

    terms: tuple[Term, ...]

    def prepare(self, a: FloatArray, b: FloatArray) -> tuple[FloatArray, ...]:
        a_arr = np.asarray(a, dtype=np.float64)
        b_arr = np.asarray(b, dtype=np.float64)
        log_b0 = log_beta(a_arr, b_arr)
        consts = []
        for c, al0, al1, be0, _ in self.terms:
            fixed = b_arr + be0 if al1 else a_arr + al0  # the side that does not move with n
            consts.append(math.log(c) + log_gamma(fixed) - log_b0)
        return (a_arr, b_arr, *consts)

    def gain(self, n: FloatArray, a: FloatArray, b: FloatArray, *consts: FloatArray) -> FloatArray:
        n_arr = np.asarray(n, dtype=np.float64)
        out: FloatArray | None = None
        denom: dict[tuple[float, float], FloatArray] = {}  # log Gamma(a + b + alpha + beta), shared by terms
        for (_, al0, al1, be0, be1), const in zip(self.terms, consts, strict=True):
            key = (al0 + be0, al1 + be1)
            if key not in denom:
                denom[key] = log_gamma(a + b + key[0] + key[1] * n_arr)
            moving = a + al0 + al1 * n_arr if al1 else b + be0 + be1 * n_arr
            term = np.exp(const + log_gamma(moving) - denom[key])
            out = term if out is None else out + term
        assert out is not None
        return out


# --------------------------------------------------------------------------------------------
# the P_nz family: paper, nonzero, variance


def nonzero_gradient_prob(n: ArrayLike, p: ArrayLike) -> FloatArray:
    """``P_nz(N, p) = 1 - p^N - (1 - p)^N``: probability that N Bernoulli(p) rewards are not all equal.

    For N = 0 the formula gives -1; it is clipped to 0 (no rollouts, no gradient).
    """
    n_arr = np.asarray(n, dtype=np.float64)
    p_arr = np.asarray(p, dtype=np.float64)
    out = 1.0 - p_arr**n_arr - (1.0 - p_arr) ** n_arr  # P(not all success) - P(all failure)
    return np.maximum(out, 0.0)


def information_gain(p: ArrayLike) -> FloatArray:
    """``G(p) = p (1 - p)^2``: approximate increase of the success rate after one update (max at p = 1/3)."""
    p_arr = np.asarray(p, dtype=np.float64)
    return p_arr * (1.0 - p_arr) ** 2


def _pnz_prepare(weight: Callable[[FloatArray], FloatArray]) -> PrepareFn:
    """``prepare(p) = (log p, log(1 - p), w(p) (1 - p), w(p) p)``: what a gain needs, computed once."""

    def prepare(p: FloatArray) -> tuple[FloatArray, ...]:
        p_arr = np.asarray(p, dtype=np.float64)
        q = 1.0 - p_arr
        w = np.asarray(weight(p_arr), dtype=np.float64)
        with np.errstate(divide="ignore"):  # p = 0 or 1: log 0 = -inf, kept finite so that 0 * it = 0
            log_p = np.maximum(np.log(p_arr), -1e300)
            log_q = np.maximum(np.log(q), -1e300)
        return log_p, log_q, w * q, w * p_arr

    return prepare


def _pnz_gain(n: FloatArray, log_p: FloatArray, log_q: FloatArray, wq: FloatArray, wp: FloatArray) -> FloatArray:
    """Gain of ``w(p) P_nz(N, p)``: ``w (p^N q + q^N p) = wq e^(N log p) + wp e^(N log q)`` for N >= 1; 0 at N = 0.

    ``exp`` of a product instead of ``p**N`` (several times faster in NumPy; non-increasing in N too).
    """
    d = wq * np.exp(n * log_p) + wp * np.exp(n * log_q)
    return np.asarray(d * (n >= 1.0), dtype=np.float64)


def _pnz_crossing(lam: FloatArray, log_p: FloatArray, log_q: FloatArray, wq: FloatArray, wp: FloatArray) -> FloatArray:
    """Estimate of x with ``w (p^x q + q^x p) = lam``.

    With u = max(p, q), v = min(p, q), rho = v / u the gain is ``w v u^x (1 + rho^(x - 1))``, between
    ``w v u^x`` and ``2 w v u^x`` for x >= 1: x0 solves the lower form, one fixed-point step adds the
    factor (within about one unit of the crossing; the solver verifies). ``w v = min(wp, wq)``.
    """
    with np.errstate(all="ignore"):
        log_u = np.maximum(log_p, log_q)
        log_v = np.minimum(log_p, log_q)
        x0 = (np.log(lam) - np.log(np.minimum(wp, wq))) / log_u  # w v u^x0 = lam
        rho_pow = np.exp(np.maximum(x0 - 1.0, 0.0) * (log_v - log_u))  # rho^(x0 - 1), only used for x0 > 1
        return np.asarray(x0 - np.log(1.0 + rho_pow) / log_u * (x0 > 1.0), dtype=np.float64)


def _variance_weight(p: FloatArray) -> FloatArray:
    return np.asarray(p * (1.0 - p), dtype=np.float64)


def _unit_weight(p: FloatArray) -> FloatArray:
    return np.ones_like(p)


@register_value("paper", gain=_pnz_gain, crossing=_pnz_crossing, prepare=_pnz_prepare(information_gain))
def paper_value(n: FloatArray, p: FloatArray) -> FloatArray:
    """``V(N, p) = P_nz(N, p) * G(p)`` (Knapsack RL, eq. for the expected learning value)."""
    return nonzero_gradient_prob(n, p) * information_gain(p)


@register_value("nonzero", gain=_pnz_gain, crossing=_pnz_crossing, prepare=_pnz_prepare(_unit_weight))
def nonzero_value(n: FloatArray, p: FloatArray) -> FloatArray:
    """``V(N, p) = P_nz(N, p)``: maximise the expected number of prompts with a non-zero gradient."""
    return nonzero_gradient_prob(n, p)


@register_value("variance", gain=_pnz_gain, crossing=_pnz_crossing, prepare=_pnz_prepare(_variance_weight))
def variance_value(n: FloatArray, p: FloatArray) -> FloatArray:
    """``V(N, p) = P_nz(N, p) * p (1 - p)``: non-zero gradient weighted by the reward variance."""
    p_arr = np.asarray(p, dtype=np.float64)
    return nonzero_gradient_prob(n, p_arr) * p_arr * (1.0 - p_arr)


def _posterior_pnz(weight_terms: tuple[Term, ...], n: ArrayLike, a: ArrayLike, b: ArrayLike) -> FloatArray:
    """``E[w(p) P_nz(N, p)]`` for ``w = sum of terms``: ``E[w] - E[w p^N] - E[w (1 - p)^N]``, 0 for N <= 1.

    N = 1 is exactly 0 (``P_nz(1, p) = 0``) and N = 0 is clipped to 0 like the point form; returning
    0 there also avoids the cancellation of the three ratios.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    terms: list[Term] = []
    for c, al0, _, be0, _ in weight_terms:
        terms += [(c, al0, 0.0, be0, 0.0), (-c, al0, 1.0, be0, 0.0), (-c, al0, 0.0, be0, 1.0)]
    vals = beta_poly_expectation(tuple(terms), n_arr, a, b)
    return np.where(n_arr >= 2.0, vals, 0.0)


def _pnz_gain_poly(weight_terms: tuple[Term, ...]) -> _BetaPoly:
    """Gain ``E[w(p) (p^N q + q^N p)]`` as Beta ratios (valid for N >= 1)."""
    terms: list[Term] = []
    for c, al0, _, be0, _ in weight_terms:
        terms += [(c, al0, 1.0, be0 + 1.0, 0.0), (c, al0 + 1.0, 0.0, be0, 1.0)]
    return _BetaPoly(tuple(terms))


def _posterior_mean(a: FloatArray, b: FloatArray) -> FloatArray:
    return np.asarray(a / (a + b), dtype=np.float64)


def _register_pnz_posterior(
    name: str, weight_terms: tuple[Term, ...], weight: Callable[[FloatArray], FloatArray]
) -> None:
    """Posterior form of ``w(p) P_nz(N, p)`` with ``w = sum_k c_k p^alpha_k (1 - p)^beta_k``."""
    poly = _pnz_gain_poly(weight_terms)

    def value(n: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
        return _posterior_pnz(weight_terms, n, a, b)

    def gain(n: FloatArray, a: FloatArray, b: FloatArray, *consts: FloatArray) -> FloatArray:
        return np.where(np.asarray(n) >= 1.0, poly.gain(n, a, b, *consts), 0.0)

    point_prepare = _pnz_prepare(weight)

    def crossing(lam: FloatArray, a: FloatArray, b: FloatArray, *_: FloatArray) -> FloatArray:
        return _pnz_crossing(lam, *point_prepare(_posterior_mean(a, b)))  # a hint only: the point form at the mean

    value.__doc__ = f"Posterior form of {name!r}: E_(p ~ Beta(a, b))[V(N, p)] in closed form."
    register_posterior_value(name, gain=gain, crossing=crossing, prepare=poly.prepare)(value)


_register_pnz_posterior("paper", ((1.0, 1.0, 0.0, 2.0, 0.0),), information_gain)  # G = p (1 - p)^2
_register_pnz_posterior("nonzero", ((1.0, 0.0, 0.0, 0.0, 0.0),), _unit_weight)  # w = 1
_register_pnz_posterior("variance", ((1.0, 1.0, 0.0, 1.0, 0.0),), _variance_weight)  # w = p (1 - p)


# --------------------------------------------------------------------------------------------
# HORA: hit utility


def _hora_prepare(p: FloatArray) -> tuple[FloatArray, ...]:
    p_arr = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return p_arr, np.maximum(np.log(1.0 - p_arr), -1e300)


def _hora_gain(n: FloatArray, p: FloatArray, log_q: FloatArray) -> FloatArray:
    return np.asarray(p * np.exp(n * log_q), dtype=np.float64)  # p (1 - p)^N


def _hora_crossing(lam: FloatArray, p: FloatArray, log_q: FloatArray) -> FloatArray:
    with np.errstate(all="ignore"):
        return np.asarray(np.log(lam / p) / log_q, dtype=np.float64)  # p (1 - p)^x = lam


@register_value("hora", gain=_hora_gain, crossing=_hora_crossing, prepare=_hora_prepare)
def hora_value(n: FloatArray, p: FloatArray) -> FloatArray:
    """HORA's hit utility: ``V(N, p) = 1 - (1 - p)^N``, the probability that at least one of N rollouts is correct.

    Source: Wang, Li, Sun, Ding, Dobriban, "Where to Spend Rollouts: Hit-Utility Optimal Rollout
    Allocation for Group-Based RLVR" (HORA, arXiv 2605.07114). HORA defines hit utility as the
    *posterior* probability that at least one rollout of an allocation is correct, under a uniform
    prior on p, and maximises its sum over the batch. With p ~ Beta(a, b) (a = 1 + successes,
    b = 1 + failures for HORA's uniform prior) that is ``1 - B(a, b + N) / B(a, b)``: the posterior
    form registered under the same name; this point form is its limit for a posterior concentrated
    at p. Gains ``p (1 - p)^N`` (posterior: ``B(a + 1, b + N) / B(a, b)``) decrease in N: concave.

    Where we depart: (1) we value all N rollouts of the step (HORA scores an *additional* allocation
    after what was already sampled; in a single-round step the two coincide); (2) unlike the other
    registered values, V does not vanish at p = 1 (a solved prompt is a sure hit), so HORA favours
    easy prompts' first rollout: only effective prompts (0 < p < 1) reach the knapsack in
    :func:`knapsack_rl.allocate`; (3) we read the method from the paper's abstract; the prior, the
    per-round update and the tie rules of the authors' code are not reproduced.
    """
    p_arr = np.asarray(p, dtype=np.float64)
    return np.asarray(1.0 - (1.0 - p_arr) ** np.asarray(n, dtype=np.float64), dtype=np.float64)


_HORA_GAIN = _BetaPoly(((1.0, 1.0, 0.0, 0.0, 1.0),))  # E[p (1 - p)^N] = B(a + 1, b + N) / B(a, b)


def _hora_posterior_gain(n: FloatArray, a: FloatArray, b: FloatArray, *consts: FloatArray) -> FloatArray:
    return _HORA_GAIN.gain(n, a, b, *consts)


def _hora_posterior_crossing(lam: FloatArray, a: FloatArray, b: FloatArray, *_: FloatArray) -> FloatArray:
    return _hora_crossing(lam, *_hora_prepare(_posterior_mean(a, b)))


@register_posterior_value(
    "hora", gain=_hora_posterior_gain, crossing=_hora_posterior_crossing, prepare=_HORA_GAIN.prepare
)
def hora_posterior_value(n: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """HORA's posterior hit utility ``1 - E[(1 - p)^N] = 1 - B(a, b + N) / B(a, b)``, p ~ Beta(a, b)."""
    return 1.0 - beta_poly_expectation(((1.0, 0.0, 0.0, 0.0, 1.0),), n, a, b)


# --------------------------------------------------------------------------------------------
# VIP: variance-minimising allocation


def _vip_shape(n: FloatArray) -> FloatArray:
    """``h(N) = N`` for N <= 2 and ``3 - 1 / (N - 1)`` for N >= 2 (continuous at 2; gains 1, 1, 1/2, 1/6, ...)."""
    n_arr = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = 3.0 - 1.0 / (n_arr - 1.0)
    return np.asarray(np.where(n_arr <= 2.0, n_arr, tail), dtype=np.float64)


def _vip_shape_gain(n: FloatArray) -> FloatArray:
    """``h(N + 1) - h(N)``: 1 for N <= 1, ``1 / (N (N - 1))`` for N >= 2."""
    n_arr = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = 1.0 / (n_arr * (n_arr - 1.0))
    return np.asarray(np.where(n_arr <= 1.0, 1.0, tail), dtype=np.float64)


def _vip_shape_crossing(lam: FloatArray, scale: FloatArray) -> FloatArray:
    """x with ``scale / (x (x - 1)) = lam``: ``(1 + sqrt(1 + 4 scale / lam)) / 2``; 0 when lam >= scale."""
    with np.errstate(all="ignore"):
        x = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * scale / lam))
    return np.asarray(np.where(lam >= scale, 0.0, x), dtype=np.float64)


def _vip_gain(n: FloatArray, p: FloatArray) -> FloatArray:
    return np.asarray(p * (1.0 - p) * _vip_shape_gain(n), dtype=np.float64)


def _vip_crossing(lam: FloatArray, p: FloatArray) -> FloatArray:
    return _vip_shape_crossing(lam, p * (1.0 - p))


@register_value("vip", gain=_vip_gain, crossing=_vip_crossing)
def vip_value(n: FloatArray, p: FloatArray) -> FloatArray:
    """VIP-style value: ``V(N, p) = p (1 - p) h(N)``, ``h(N) = 3 - 1 / (N - 1)`` for N >= 2, ``h(N) = N`` below.

    Source: Nguyen, Nguyen, Ma, Zhao, She, Nguyen, "Adaptive Rollout Allocation for Online
    Reinforcement Learning with Verifiable Rewards" (VIP, arXiv 2602.01601, ICLR 2026). VIP predicts
    each prompt's p (with a Gaussian process) and chooses budgets that minimise the summed gradient
    variance under a fixed total; per prompt that variance is ``4 sigma^2 p (1 - p) / (N - 1)`` for
    RLOO and ``4 sigma^2 p (1 - p) (N - 1) / N^2`` for Dr.GRPO. For N >= 2 maximising our V is exactly
    minimising ``sum_i p_i (1 - p_i) / (N_i - 1)`` (the constant 3 p (1 - p) does not change the
    argmax); it is concave there (gains ``p (1 - p) / (N (N - 1))`` decrease).

    Where we depart: (1) the RLOO variance is infinite at N = 1 and ``V(2) = 0`` is already the
    floor of any non-negative extension, so a faithful concave, finite, non-negative form on N >= 0
    is impossible: below N = 2 we extend linearly with slope ``p (1 - p)`` (V(0) = 0, V(1) = p (1 - p)),
    which keeps V concave and >= 0 (use min_n >= 2 to stay in VIP's own domain); (2) the Dr.GRPO
    variance is not registered: ``-(N - 1) / N^2`` is not concave for N < 3 and is smallest at N = 1
    (one rollout has zero advantage, hence zero variance); (3) the authors' public code also adds a
    term ``gamma log(p) N`` that favours hard prompts and keeps at least 4 rollouts per prompt after
    rounding: neither is part of this value. The posterior form is ``E[p (1 - p)] h(N)`` with
    ``E[p (1 - p)] = a b / ((a + b) (a + b + 1))``.
    """
    p_arr = np.asarray(p, dtype=np.float64)
    return np.asarray(p_arr * (1.0 - p_arr) * _vip_shape(n), dtype=np.float64)


def _beta_var_mean(a: FloatArray, b: FloatArray) -> FloatArray:
    """``E[p (1 - p)] = a b / ((a + b) (a + b + 1))`` for p ~ Beta(a, b)."""
    s = a + b
    return np.asarray(a * b / (s * (s + 1.0)), dtype=np.float64)


def _vip_posterior_gain(n: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    return np.asarray(_beta_var_mean(a, b) * _vip_shape_gain(n), dtype=np.float64)


def _vip_posterior_crossing(lam: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    return _vip_shape_crossing(lam, _beta_var_mean(a, b))


@register_posterior_value("vip", gain=_vip_posterior_gain, crossing=_vip_posterior_crossing)
def vip_posterior_value(n: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """VIP-style posterior value ``E[p (1 - p)] h(N)`` (see :func:`vip_value`)."""
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    return np.asarray(_beta_var_mean(a_arr, b_arr) * _vip_shape(n), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# helpers used by the allocator's fallback


def rollouts_for_confidence(p: ArrayLike, alpha: float) -> FloatArray:
    """Rollouts for probability ``alpha`` of a non-zero gradient: ``log(1 - alpha) / log(max(p, 1 - p))``.

    Used by the recipe's fallback (alpha = 0.9). Infinite at p = 0 and p = 1.
    """
    p_arr = np.asarray(p, dtype=np.float64)
    log_max = np.log1p(-np.minimum(p_arr, 1.0 - p_arr))  # log(max(p, 1 - p)), exact for tiny p
    with np.errstate(divide="ignore", over="ignore"):  # tiny p: the count is effectively infinite
        out: FloatArray = np.where(log_max < 0.0, np.log1p(-alpha) / np.minimum(log_max, -0.0), np.inf)
    return out
