"""Value functions: log-gamma accuracy, posterior forms against quadrature and hand-solved cases,
closed-form gains and hints against differences, concavity of every registered value, the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knapsack_rl.core.value import (
    ValueFunction,
    beta_poly_expectation,
    get_posterior_value,
    get_value,
    log_beta,
    log_gamma,
    posterior_value_names,
    register_posterior_value,
    register_value,
    value_names,
)

ALL = ["hora", "nonzero", "paper", "variance", "vip"]


def _q(fn: ValueFunction, *params: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arguments of ``fn.gain`` / ``fn.crossing`` for ``params``."""
    return tuple(fn.prepare(*params)) if fn.prepare is not None else params


def test_every_value_has_a_point_and_a_posterior_form() -> None:
    assert value_names() == ALL
    assert posterior_value_names() == ALL
    for name in ALL:
        assert get_value(name).kind == "point" and get_posterior_value(name).kind == "posterior"
        assert get_value(name).gain is not None and get_posterior_value(name).gain is not None


def test_log_gamma_matches_math_lgamma_over_a_wide_range() -> None:
    x = np.concatenate([np.logspace(-6, 9, 4001), np.linspace(0.3, 3.0, 1001), [0.5, 1.0, 2.0]])
    ref = np.array([math.lgamma(v) for v in x])
    err = np.abs(log_gamma(x) - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() <= 1e-13
    assert np.isnan(log_gamma(np.array([0.0, -1.5, np.inf, np.nan]))).all()


def test_log_beta_is_hand_solved() -> None:
    # B(2, 3) = 1! 2! / 4! = 1 / 12; B(1/2, 1/2) = pi
    assert log_beta(2.0, 3.0) == pytest.approx(math.log(1 / 12), abs=1e-14)
    assert log_beta(0.5, 0.5) == pytest.approx(math.log(math.pi), abs=1e-14)


def test_beta_poly_expectation_is_hand_solved() -> None:
    # E[p (1 - p)] under Beta(1, 1) = 1/6;  E[p^n] under Beta(2, 1) = 2 / (n + 2)
    assert beta_poly_expectation(((1.0, 1.0, 0.0, 1.0, 0.0),), 0.0, 1.0, 1.0) == pytest.approx(1 / 6, abs=1e-14)
    n = np.arange(6.0)
    got = beta_poly_expectation(((1.0, 0.0, 1.0, 0.0, 0.0),), n, 2.0, 1.0)
    assert np.allclose(got, 2 / (n + 2), atol=1e-14)


def test_hand_solved_values() -> None:
    half = np.float64(0.5)
    assert get_value("paper")(2.0, half) == pytest.approx(0.0625)  # P_nz = 1/2, G = 1/8
    assert get_value("hora")(3.0, half) == pytest.approx(0.875)  # 1 - 1/8
    assert get_value("vip")(np.array([0.0, 1.0, 2.0, 3.0, 5.0]), half).tolist() == pytest.approx(
        [0.0, 0.25, 0.5, 0.625, 0.6875]
    )  # p q = 1/4 times h = 0, 1, 2, 5/2, 11/4
    one = np.float64(1.0)
    # uniform posterior: paper at N = 2 is 2 E[p^2 (1 - p)^3] = 2 B(3, 4) = 1/30
    assert get_posterior_value("paper")(2.0, one, one) == pytest.approx(1 / 30, abs=1e-14)
    # hit utility under a uniform prior: 1 - E[(1 - p)^N] = 1 - 1 / (N + 1)
    n = np.arange(1.0, 8.0)
    assert np.allclose(get_posterior_value("hora")(n, one, one), 1 - 1 / (n + 1), atol=1e-14)
    assert get_posterior_value("vip")(3.0, one, one) == pytest.approx(2.5 / 6)  # E[p q] = 1/6


def test_hora_posterior_is_the_predictive_probability_of_a_hit() -> None:
    # independent formula: P(no success in N | Beta(a, b)) = prod_k (b + k) / (a + b + k)
    fn = get_posterior_value("hora")
    for a, b in [(1.0, 1.0), (3.0, 9.0), (1.5, 40.0), (12.0, 2.0)]:
        for n in (1, 2, 5, 17):
            miss = np.prod([(b + k) / (a + b + k) for k in range(n)])
            assert fn(float(n), a, b) == pytest.approx(1 - miss, abs=1e-13)


def test_vip_is_the_negated_rloo_variance_up_to_a_constant() -> None:
    p = np.linspace(0.01, 0.99, 21)[None, :]
    n = np.arange(2.0, 60.0)[:, None]
    v = get_value("vip")(n, p)
    assert np.allclose(v, 3 * p * (1 - p) - p * (1 - p) / (n - 1), atol=1e-15)


@pytest.mark.parametrize("name", ALL)
def test_posterior_forms_match_quadrature(name: str) -> None:
    point, post = get_value(name), get_posterior_value(name)
    grid = (np.arange(200_000) + 0.5) / 200_000
    rng = np.random.default_rng(11)
    for a, b in rng.uniform(1.5, 25.0, (6, 2)):
        dens = np.exp((a - 1) * np.log(grid) + (b - 1) * np.log1p(-grid) - log_beta(a, b)) / grid.size
        for n in (1.0, 2.0, 3.0, 7.0, 30.0):
            ref = float(np.sum(point(n, grid) * dens))
            assert post(n, a, b) == pytest.approx(ref, abs=3e-7)


@pytest.mark.parametrize("name", ALL)
def test_posterior_forms_tend_to_the_point_form_when_concentrated(name: str) -> None:
    point, post = get_value(name), get_posterior_value(name)
    n = np.arange(1.0, 40.0)
    for p in (0.05, 0.3, 0.5, 0.8):
        k = 1e7
        assert np.allclose(post(n, k * p, k * (1 - p)), point(n, p), atol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("posterior", [False, True])
def test_closed_form_gains_equal_value_differences(name: str, posterior: bool) -> None:
    fn = get_posterior_value(name) if posterior else get_value(name)
    rng = np.random.default_rng(5)
    params = (rng.uniform(0.3, 30, 50), rng.uniform(0.3, 30, 50)) if posterior else (rng.uniform(0.001, 0.999, 50),)
    n = np.arange(0.0, 200.0)[:, None]
    col = tuple(x[None, :] for x in params)
    diff = fn(n + 1.0, *col) - fn(n, *col)
    assert fn.gain is not None
    gain = fn.gain(n, *_q(fn, *col))
    scale = np.abs(fn(n, *col)).max()
    assert np.allclose(gain, diff, rtol=1e-9, atol=1e-13 * max(scale, 1.0))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("posterior", [False, True])
def test_registered_values_are_concave_in_n(name: str, posterior: bool) -> None:
    fn = get_posterior_value(name) if posterior else get_value(name)
    rng = np.random.default_rng(17)
    if posterior:
        params: tuple[np.ndarray, ...] = (np.exp(rng.uniform(-3, 6, 300)), np.exp(rng.uniform(-3, 6, 300)))
    else:
        params = (np.concatenate([rng.uniform(0, 1, 300), [0.0, 1.0, 1e-9, 1 - 1e-9]]),)
    col = tuple(x[None, :] for x in params)
    n = np.arange(1.0, 300.0)[:, None]
    v = fn(n, *col)
    # value differences (values are at most 3; 1 - p^n - q^n rounds at ~1e-16 absolute)
    assert np.all(np.diff(np.diff(v, axis=0), axis=0) <= 1e-15)
    assert fn.gain is not None
    gains = fn.gain(n, *_q(fn, *col))
    assert np.all(np.diff(gains, axis=0) <= 0.0)  # the solver's gains: exactly non-increasing


@pytest.mark.parametrize("name", ["paper", "nonzero", "variance", "vip"])
def test_point_values_vanish_at_p_0_and_1(name: str) -> None:
    v = get_value(name)(np.arange(0.0, 50.0), np.array([[0.0], [1.0]]))
    assert np.all(v == 0.0)


def test_hora_values_the_sure_hit_at_p_1_and_nothing_at_p_0() -> None:
    v = get_value("hora")(np.arange(0.0, 10.0), np.array([[0.0], [1.0]]))
    assert np.all(v[0] == 0.0) and v[1].tolist() == [0.0] + [1.0] * 9


@pytest.mark.parametrize("name", ALL)
def test_crossing_hints_land_within_one_unit_for_point_values(name: str) -> None:
    fn = get_value(name)
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 4000)
    n = np.arange(1.0, 400.0)[:, None]
    q = _q(fn, p)
    assert fn.gain is not None and fn.crossing is not None
    gains = fn.gain(n, *(x[None, :] for x in q))
    for lam in (1e-3, 1e-2, 3e-2):
        count = (gains > lam).sum(axis=0)  # units n = 1.. with gain above lam
        guess = np.clip(np.ceil(fn.crossing(np.full(p.size, lam), *q)) - 1.0, 0, n.size)
        assert np.mean(np.abs(guess - count) <= 1) >= 0.97


@settings(max_examples=60, deadline=None)
@given(p=st.floats(0.001, 0.999), a=st.floats(0.05, 500.0), b=st.floats(0.05, 500.0))
def test_values_are_finite_and_bounded(p: float, a: float, b: float) -> None:
    n = np.arange(0.0, 100.0)
    for name in ALL:
        for v in (get_value(name)(n, p), get_posterior_value(name)(n, a, b)):
            assert np.all(np.isfinite(v)) and np.all(v >= -1e-12) and np.all(v <= 3.0)


def test_registry_errors_are_exact() -> None:
    with pytest.raises(ValueError, match="value function 'paper' is already registered"):
        register_value("paper")(lambda n, p: n * p)
    with pytest.raises(ValueError, match="posterior value 'paper' is already registered"):
        register_posterior_value("paper")(lambda n, a, b: n * a)
    with pytest.raises(
        ValueError,
        match=r"posterior value 'nope' needs a point value of the same name registered first; "
        r"registered: \['hora', 'nonzero', 'paper', 'variance', 'vip'\]",
    ):
        register_posterior_value("nope")(lambda n, a, b: n * a)
    with pytest.raises(
        ValueError,
        match=r"value='nope' is not a registered value function; "
        r"valid: \['hora', 'nonzero', 'paper', 'variance', 'vip'\]",
    ):
        get_value("nope")
    with pytest.raises(
        ValueError,
        match=r"value='nope' has no posterior form \(fn\(n, a, b\)\); values with one: \['hora', 'nonzero', 'paper'",
    ):
        get_posterior_value("nope")
