"""The CoBA-RL-like rule ``coba``: its value and shape hand-solved, the vectorised greedy equal to a literal
heap, hand-solved allocations (fallback, ties, the exact-B departure), B and the bounds on random inputs,
its state (round trip, refusals), and runs through run_step, the simulator and ``knapsack-rl compare``."""

from __future__ import annotations

import heapq
import json
import logging
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knapsack_rl.rules import CobaConfig, CobaRule, RuleSetup, StepLog, StepSpec, make_rule, run_step
from knapsack_rl.rules.coba import (
    beta_density,
    capability_shape,
    capability_value,
    coba_allocate,
    greedy_top,
    marginal_gains,
    saturation_tau,
)
from knapsack_rl.sim import SimConfig, simulate
from tests.rules.invariants import Recorder, check_invariants

DEFAULT = CobaConfig()


# ----------------------------------------------------------------------------- the value, hand-solved
def test_shape_follows_the_global_failure_rate() -> None:
    assert capability_shape(None, 11.0) == (9.0, 2.0)  # before any step
    assert capability_shape(0.8, 11.0) == pytest.approx((1 + 9 * 0.8, 11 - 1 - 9 * 0.8))  # F > 1/2: phi(F) = F
    assert capability_shape(1.0, 11.0) == (10.0, 1.0)  # clipped at S - 1
    low = 1 / (1 + math.exp(-10 * (0.3 - 0.5)))  # F <= 1/2: the sigmoid pushes the mode towards hard prompts
    assert capability_shape(0.3, 11.0) == pytest.approx((1 + 9 * low, 10 - 9 * low))
    for f in (0.1, 0.5, 0.7, 0.95):  # the density's mode (alpha - 1) / (S - 2) is phi(F)
        a, b = capability_shape(f, 11.0)
        grid = np.linspace(0.001, 0.999, 9999)
        phi = f if f > 0.5 else 1 / (1 + math.exp(-10 * (f - 0.5)))
        assert grid[np.argmax(beta_density(grid, a, b))] == pytest.approx(phi, abs=1e-3)


def test_value_is_density_times_saturation_and_gains_are_its_differences() -> None:
    b55 = math.gamma(5.5) ** 2 / math.gamma(11.0)
    assert beta_density(np.array([0.5]), 5.5, 5.5)[0] == pytest.approx(0.5**9 / b55)
    n = np.arange(0, 12)
    v = capability_value(n, np.full(12, 0.5), (5.5, 5.5), 3.0, 0.01)
    np.testing.assert_allclose(v, (1 - np.exp(-n * 0.25 / 3.0)) * 0.5**9 / b55)
    assert v[0] == 0.0 and np.all(np.diff(v) > 0) and np.all(np.diff(v, 2) < 0)  # increasing, concave
    p = np.array([0.0, 0.3, 0.5, 0.97, 1.0])  # 0 and 1 are smoothed to 0.01 and 0.99: finite, positive value
    g = marginal_gains(p, (3.0, 8.0), 4.0, 0.01, 2, 10)  # n = 2 .. 11
    diffs = np.stack([np.diff(capability_value(np.arange(2, 13), np.full(11, x), (3.0, 8.0), 4.0, 0.01)) for x in p])
    np.testing.assert_allclose(g, diffs, rtol=1e-12)
    assert np.all(g > 0) and np.all(np.diff(g, axis=1) < 0)  # strictly decreasing rows: the greedy is exact


def test_saturation_scale_grows_with_the_spread_of_success_rates() -> None:
    assert saturation_tau(np.array([0.4, 0.4, 0.4]), DEFAULT) == 3.0
    assert saturation_tau(np.array([0.0, 1.0]), DEFAULT) == 12.0  # variance 0.2401 > var_max: tau_max
    assert saturation_tau(np.array([0.3, 0.5]), DEFAULT) == pytest.approx(3 + 9 * 0.01 / 0.1667)


# ----------------------------------------------------------------------------- the greedy == a literal heap
def heap_greedy(gain: Any, rows: int, levels: int, extra: int) -> list[int]:
    """The authors' heap, literally: each row's next gain keyed (-gain, row); pop, take, push the row's next."""
    taken = [0] * rows
    heap = [(-gain(i, 0), i) for i in range(rows) if levels > 0]
    heapq.heapify(heap)
    while extra > 0 and heap:
        _, i = heapq.heappop(heap)
        taken[i] += 1
        extra -= 1
        if taken[i] < levels:
            heapq.heappush(heap, (-gain(i, taken[i]), i))
    return taken


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    rows=st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=6), min_size=1, max_size=6),
    extra=st.integers(0, 40),
)
def test_greedy_top_equals_a_literal_heap_with_ties(rows: list[list[int]], extra: int) -> None:
    levels = min(len(r) for r in rows)
    g = np.array([sorted(r, reverse=True)[:levels] for r in rows], dtype=np.float64).reshape(len(rows), levels)
    expected = heap_greedy(lambda i, j: g[i, j], len(rows), levels, extra)  # small integers: many exact ties
    assert greedy_top(g, extra).tolist() == expected


def test_the_rules_greedy_equals_a_heap_over_value_differences() -> None:
    # the heap as the authors run it: gains V(n + 1) - V(n) from the value itself, on random explorable prompts
    rng = np.random.default_rng(7)
    for _ in range(200):
        k, low, up = int(rng.integers(1, 9)), int(rng.integers(1, 4)), int(rng.integers(4, 20))
        p = np.round(rng.uniform(0.05, 0.99, k), int(rng.integers(1, 4)))  # rounding makes equal p: ties
        shape, tau = capability_shape(float(rng.uniform()), 11.0), float(rng.uniform(3, 12))
        extra = int(rng.integers(0, 60))

        def gain(i: int, j: int, p: Any = p, shape: Any = shape, tau: float = tau, low: int = low) -> float:
            v = capability_value(np.array([low + j, low + j + 1]), np.full(2, p[i]), shape, tau, 0.01)
            return float(v[1] - v[0])

        expected = heap_greedy(gain, k, up - low, extra)
        assert greedy_top(marginal_gains(p, shape, tau, 0.01, low, up - low), extra).tolist() == expected


# ----------------------------------------------------------------------------- allocations, hand-solved
def test_unseen_or_underfunded_batches_are_split_evenly() -> None:
    nan = np.full(4, np.nan)
    assert coba_allocate(nan, 10, (9.0, 2.0), DEFAULT).tolist() == [3, 3, 2, 2]  # no prompt seen yet
    seen = np.array([0.5, 0.1, 0.9, np.nan])
    assert coba_allocate(seen, 6, (9.0, 2.0), DEFAULT).tolist() == [2, 2, 1, 1]  # B < M * n_low
    assert coba_allocate(seen, 8, (9.0, 2.0), DEFAULT).tolist() == [2, 2, 2, 2]  # B = M * n_low: the floors


def test_greedy_share_ties_and_fallback_hand_solved() -> None:
    # M = 4, B = 32: floors 2 each, R = 24; two explorable prompts = M / 2, so r = 0.6 + 0.2 * 1 = 0.8 and the
    # greedy places floor(24 * 0.8) = 19; equal p: equal gains, each tie to the earlier prompt: 10 and 9.
    # The 5 left go to the very hard prompt (p = 0, first in the fallback); the very easy one keeps its floor.
    p = np.array([0.5, 0.5, 1.0, 0.0])
    assert coba_allocate(p, 32, (5.5, 5.5), DEFAULT).tolist() == [12, 11, 2, 7]
    # unseen prompts count as p = 0.5 (explorable) once any prompt of the batch was seen
    assert coba_allocate(np.array([np.nan, np.nan, 1.0, 0.0]), 32, (5.5, 5.5), DEFAULT).tolist() == [12, 11, 2, 7]


def test_a_failing_model_exploits_easy_prompts_and_a_capable_one_explores_hard_ones() -> None:
    p = np.array([0.2, 0.8])  # the same p (1 - p): the same saturation; only the density differs
    failing = coba_allocate(p, 64, capability_shape(0.9, 11.0), DEFAULT)
    capable = coba_allocate(p, 64, capability_shape(0.1, 11.0), DEFAULT)
    # both explorable (E = 2 > M / 2): the greedy gets floor(60 * 0.8) = 48, all to the prompt the density
    # favours (its gains stay ~1000x the other's over 48 units); the 12 left go by weight 1 - p in batch
    # order: floor(12 * 0.8) = 9 to p = 0.2, floor(3 * 0.2) = 0 to p = 0.8, then the 3 evenly: +11, +1
    assert failing.tolist() == [2 + 11, 2 + 48 + 1]
    assert capable.tolist() == [2 + 48 + 11, 2 + 1]


def test_rollouts_the_authors_code_would_leave_unspent_are_placed(caplog: Any) -> None:
    # both prompts very hard, n_low 1, n_up 5, B = 9: the weighted fallback gives 3 then 1 (floors of the
    # shrinking remainder), the even split 1 and 1 with the first capped at 5: [5, 3], 8 rollouts, and no
    # later group. The authors' code ends here; the rule spreads the last one over prompts below n_up.
    cfg = CobaConfig(n_low=1, n_up=5)
    with caplog.at_level(logging.DEBUG, logger="knapsack_rl.rules.coba"):
        assert coba_allocate(np.array([0.0, 0.02]), 9, (5.0, 6.0), cfg).tolist() == [5, 4]
    assert "coba: 1 rollouts left after the fallback" in caplog.text


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    p=st.lists(st.sampled_from([np.nan, 0.0, 0.02, 0.05, 0.3, 0.5, 0.99, 0.995, 1.0]), min_size=1, max_size=12),
    n_low=st.integers(1, 4),
    spread=st.integers(0, 10),
    fill=st.floats(0.0, 1.0),
    failure=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_every_allocation_spends_exactly_b_within_the_bounds(
    p: list[float], n_low: int, spread: int, fill: float, failure: float | None
) -> None:
    cfg = CobaConfig(n_low=n_low, n_up=n_low + spread)
    m = len(p)
    total = round(fill * m * cfg.n_up)
    counts = coba_allocate(np.array(p), total, capability_shape(failure, cfg.beta_sum), cfg)
    assert counts.dtype == np.int64 and counts.sum() == total and counts.max() <= cfg.n_up and counts.min() >= 0
    if total >= m * n_low and not np.isnan(p).all():
        assert counts.min() >= n_low
    limits = CobaRule(cfg).limits(StepSpec(np.arange(m), epoch=0, step=0, n=1, total_budget=total))
    nonzero = counts[counts > 0]
    assert limits.fixed and limits.total == total and (nonzero.size == 0 or limits.low <= nonzero.min())


# ----------------------------------------------------------------------------- the rule through run_step
class Fixed:
    """Prompt i's rollouts: the first round(rate_i * count) succeed, the rest fail (no randomness)."""

    def __init__(self, rates: dict[Any, float]) -> None:
        self.rates = rates

    def generate(self, log: StepLog, counts: np.ndarray) -> np.ndarray:
        pairs = zip(log.ids.tolist(), counts.tolist(), strict=True)
        out = [np.arange(c) < round(self.rates[pid] * c) for pid, c in pairs]
        return np.concatenate(out).astype(np.float64)

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("a one-round rule on the batch never draws")


def _spec(ids: list[Any], step: int, total: int = 32) -> StepSpec:
    return StepSpec(np.array(ids, dtype=object if isinstance(ids[0], str) else np.int64), 0, step, 8, total)


def test_the_rule_learns_from_each_step_and_plans_the_next_hand_solved() -> None:
    rule, engine = Recorder(make_rule("coba", RuleSetup(n=8, prompts_per_step=4))), Fixed({0: 0, 1: 0.25, 2: 0.5, 3: 1})
    log, sel = run_step(rule, _spec([0, 1, 2, 3], 0), engine)
    assert log.counts.tolist() == [8, 8, 8, 8] and log.generations == 1 and sel.train.all()  # nothing seen: even
    assert sel.metrics == {"tracker/prompts": 4.0}
    state = rule.state_dict()
    assert state == {"ids": [0, 1, 2, 3], "step_success": [0.4375], "successes": [[0], [2], [4], [8]],
                     "totals": [[8], [8], [8], [8]]}  # fmt: skip
    inner = rule.rule
    assert isinstance(inner, CobaRule) and inner.failure_rate == 0.5625 and inner.shape == (1 + 9 * 0.5625, 4.9375)
    log, _ = run_step(rule, _spec([0, 1, 2, 3], 1), engine)
    # R = 24, p = 0.25 and 0.5 explorable (M / 2): the greedy places floor(24 * 0.8) = 19, all on p = 0.5
    # (the density, mode 0.5625, is ~7x higher there and its gains stay above p = 0.25's over 19 units);
    # the very hard prompt takes the 5 left (first in the fallback); the solved prompt keeps its floor of 2
    assert log.counts.tolist() == [7, 2, 21, 2]
    expected = coba_allocate(np.array([0.0, 0.25, 0.5, 1.0]), 32, (1 + 9 * 0.5625, 4.9375), DEFAULT)
    np.testing.assert_array_equal(log.counts, expected)
    np.testing.assert_array_equal(log.counts, rule.steps[-1].rounds[0][0])
    check_invariants(rule.steps, 32)
    log, _ = run_step(rule, _spec([1, 4], 2, total=16), Fixed({1: 1.0, 4: 0.0}))  # window 1: rates are replaced
    assert inner.estimate(np.array([0, 1, 4, 9])).tolist()[:3] == [0.0, 1.0, 0.0] and np.isnan(inner.estimate([9])[0])
    assert inner.state_dict()["step_success"] == [0.5]  # the global window holds the last step only
    assert inner.state_dict()["totals"] == [[7], log.counts[:1].tolist(), [21], [2], log.counts[1:].tolist()]


def test_a_longer_window_pools_steps_per_prompt_and_globally() -> None:
    rule, logs = CobaRule(CobaConfig(window=2)), []
    for step, rate in enumerate((0.25, 0.75, 0.5)):
        logs.append(run_step(rule, _spec(["a", "b"], step, total=16), Fixed({"a": rate, "b": 1.0}))[0])
    hits = [int(log.rewards[log.rollout_candidate == 0].sum()) for log in logs]  # prompt "a" per step
    given = [int(log.counts[0]) for log in logs]
    assert given[0] == 8 and hits[0] == 2  # nothing seen in step 0: 8 each
    a = rule.estimate(np.array(["a", "b"], dtype=object)).tolist()
    assert a == [(hits[1] + hits[2]) / (given[1] + given[2]), 1.0]  # the last 2 steps, pooled
    assert rule.state_dict()["step_success"] == [(hits[1] / given[1] + 1) / 2, (hits[2] / given[2] + 1) / 2]
    assert rule.failure_rate == pytest.approx(1 - np.mean(rule.state_dict()["step_success"]))


def test_a_batch_the_upper_bound_cannot_hold_is_refused() -> None:
    message = r"rule 'coba' cannot place total_budget=40 over 4 prompts with n_up=8; it needs n_up >= 10"
    with pytest.raises(ValueError, match=message):
        CobaRule(CobaConfig(n_up=8)).limits(_spec([0, 1, 2, 3], 0, 40))
    with pytest.raises(ValueError, match=r"n_up must be >= 3; got n_up=2"):
        CobaConfig(n_low=3, n_up=2)
    with pytest.raises(ValueError, match=r"smoothing must be < 0.5; got smoothing=0.5"):
        CobaConfig(smoothing=0.5)


# ----------------------------------------------------------------------------- state
def test_state_round_trips_and_bad_state_is_refused_changing_nothing() -> None:
    rule = CobaRule(CobaConfig(window=2))
    for step in range(3):
        run_step(rule, _spec([5, 7, 9], step, total=24), Fixed({5: 0.25, 7: 0.5, 9: 1.0}))
    state = rule.state_dict()
    twin = CobaRule(CobaConfig(window=2))
    twin.load_state_dict(json.loads(json.dumps(state)), source="ckpt")  # plain data: survives JSON
    assert twin.state_dict() == state and twin.shape == rule.shape
    spec = _spec([5, 7, 9, 11], 3, total=40)
    assert run_step(twin, spec, Fixed({5: 0, 7: 0, 9: 0, 11: 0}))[0].counts.tolist() == (
        run_step(rule, spec, Fixed({5: 0, 7: 0, 9: 0, 11: 0}))[0].counts.tolist()
    )
    before = twin.state_dict()
    good = {"ids": [1, "x"], "step_success": [0.5], "successes": [[1], [0]], "totals": [[2], [3]]}
    bad = [
        ({"ids": []}, r"ckpt: not a state of rule 'coba': expected the keys \['ids', 'step_success', 'successes'"),
        ({**good, "ids": [1, 1.5]}, r"ckpt: ids\[1\]=1.5 is not a valid prompt id"),
        ({**good, "ids": [1, 1]}, r"ckpt: ids must be unique; ckpt: ids\[1\]=1 appears more than once"),
        ({**good, "totals": [[2], [0]]}, r"ckpt: totals\[1\]\[0\] must be >= 1; got ckpt: totals\[1\]\[0\]=0"),
        ({**good, "successes": [[1], [True]]}, r"ckpt: successes\[1\]\[0\] must be an integer; got .*=True"),
        ({**good, "successes": [[3], [0]]}, r"ckpt: successes\[0\]=\[3\] must match totals\[0\]=\[2\]"),
        ({**good, "totals": [[2], [1, 1, 1]]}, r"ckpt: totals\[1\] must be a list of 1 to window=2 counts"),
        ({**good, "successes": [[1]]}, r"ckpt: successes must be a list of 2 lists \(one per id\)"),
        ({**good, "step_success": [0.5, 1.5]}, r"ckpt: step_success\[1\] must be <= 1.0; got .*=1.5"),
        ({**good, "step_success": [0.1, 0.2, 0.3]}, r"ckpt: step_success must be a list of at most window=2 rates"),
    ]
    for state_, message in bad:
        with pytest.raises(ValueError, match=message):
            twin.load_state_dict(state_, source="ckpt")
        assert twin.state_dict() == before  # a refused state changes nothing
    twin.load_state_dict(good, source="ckpt")
    assert twin.estimate(np.array([1, "x", 2], dtype=object)).tolist()[:2] == [0.5, 0.0] and twin.failure_rate == 0.5


# ----------------------------------------------------------------------------- the simulator and the trainer
def test_coba_reallocates_on_the_simulator_at_exactly_b_per_step() -> None:
    cfg = SimConfig(num_prompts=256, num_heldout=50, num_topics=8, prompts_per_step=32, steps=24)
    trace = simulate(cfg, "coba", 0)
    assert np.all(trace.spend == cfg.budget) and np.all(trace.trained == cfg.budget)
    assert trace.budget_max[:8].max() == cfg.n  # epoch 0 (256 prompts = 8 steps): nothing seen, N each
    assert trace.budget_max[8:].min() > cfg.n  # from epoch 1 on the capability value moves budget


def test_compare_quick_runs_uniform_against_coba(tmp_path: Any, capsys: Any) -> None:
    from knapsack_rl.cli import main
    from tests.train.test_cli import _config

    out = tmp_path / "c"
    argv = ["compare", "--quick", "--config", str(_config(tmp_path)), "--out-dir", str(out), "--seeds", "0"]
    assert main([*argv, "--arms", "uniform,coba", "--jobs", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("SMOKE RUN (--quick)") and "paired: arm - uniform" in text
    summary = json.loads((out / "summary.json").read_text())["summaries"]
    assert summary["coba"][0]["rollouts"] == summary["uniform"][0]["rollouts"]  # exactly B per step: equal compute
