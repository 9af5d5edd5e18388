"""Tracker: estimators, reward formats, ids, all-or-nothing updates, the checksummed file.

Four ways, as for the rest of the core: a per-rollout loop reference for ``update`` (hypothesis),
hand-solved estimates, exhaustive corruption of a small file, exact error messages.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knapsack_rl.core import tracker as tracker_module
from knapsack_rl.core.tracker import (
    STATE_FIELDS,
    Tracker,
    TrackerConfig,
    estimator_names,
    register_estimator,
    to_success,
)
from knapsack_rl.io import STATE_MAGIC, decode_state_file, encode_state_file

FIELDS = tuple(STATE_FIELDS)


def _rollouts(pid: object, rewards: list[float]) -> tuple[list[object], list[float]]:
    return [pid] * len(rewards), rewards


def _assert_same_state(a: Tracker, b: Tracker) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["ids"] == sb["ids"] and [type(i) for i in sa["ids"]] == [type(i) for i in sb["ids"]]
    assert (sa["config"], sa["epoch"], sa["step"]) == (sb["config"], sb["epoch"], sb["step"])
    for k in FIELDS:
        np.testing.assert_array_equal(sa["arrays"][k], sb["arrays"][k], err_msg=k)


# --------------------------------------------------------------------------- estimators, hand-solved
def test_recipe_estimate_needs_min_count_then_uses_the_recent_window() -> None:
    t = Tracker(TrackerConfig(estimator="recipe", window=16, min_count=8))
    t.update(*_rollouts("a", [1, 0, 1, 0]), epoch=0)
    assert np.isnan(t.estimate(["a"])[0])  # 4 < 8 rewards
    t.update(*_rollouts("a", [1, 1, 1, 1]), epoch=1)
    assert t.estimate(["a"])[0] == pytest.approx(6 / 8)  # this epoch has 4 < 16: mean of the 8 recorded
    t.update(*_rollouts("a", [0] * 10), epoch=2)
    assert t.estimate(["a"])[0] == pytest.approx(5 / 16)  # the 16 most recent drop the first [1, 0]: 5 ones
    assert np.isnan(t.estimate(["unseen"])[0])


def test_recipe_estimate_uses_this_epoch_once_it_has_a_window_of_rewards() -> None:
    t = Tracker(TrackerConfig(estimator="recipe", window=16, min_count=8))
    t.update(*_rollouts(7, [1] * 16), epoch=0)
    t.update(*_rollouts(7, [0] * 12 + [1] * 8), epoch=1)  # 20 rewards this epoch
    assert t.estimate([7])[0] == pytest.approx(8 / 20)
    t.epoch = 2  # a new epoch: nothing recorded yet, back to the 16 most recent
    assert t.estimate([7])[0] == pytest.approx(8 / 16)


def test_ring_keeps_the_latest_rewards_when_one_step_brings_more_than_the_window() -> None:
    t = Tracker(TrackerConfig(window=4, min_count=1))
    t.update([1] * 6, [0, 0, 1, 1, 1, 1], epoch=0)
    assert t.estimate([1])[0] == pytest.approx(4 / 6)  # this epoch has >= window rewards: their mean
    t.epoch = 1
    assert t.estimate([1])[0] == 1.0  # a new epoch: the ring holds the 4 most recent
    t.update([1, 1], [0, 0], epoch=1)
    assert t.estimate([1])[0] == pytest.approx(0.5)


def test_interleaved_ids_are_grouped_by_id() -> None:
    t = Tracker(TrackerConfig(min_count=1))
    t.update(["x", "y", "x", "y", "x"], [1, 0, 1, 0, 0])
    assert t.estimate(["x", "y"]).tolist() == pytest.approx([2 / 3, 0.0])
    assert t.counts(["x", "y", "z"]).tolist() == [3, 2, 0]
    u = Tracker(TrackerConfig(min_count=1))
    u.update(np.array([5, 9, 5, 9, 5]), [1, 0, 1, 0, 0])  # int ids, not contiguous: the sorted path
    assert u.estimate(np.array([5, 9])).tolist() == pytest.approx([2 / 3, 0.0])
    assert u.ids == [5, 9]


def test_ema_estimator() -> None:
    t = Tracker(TrackerConfig(estimator="ema", ema_weight=0.25, min_count=1))
    t.update([0] * 4, [1, 1, 1, 1])
    t.update([0] * 4, [0, 0, 0, 0])
    assert t.estimate([0])[0] == pytest.approx(0.75)


def test_beta_estimator_with_forgetting_never_reaches_zero() -> None:
    t = Tracker(TrackerConfig(estimator="beta", beta_prior=(1.0, 1.0), forgetting=0.5, min_count=8))
    t.update([3] * 8, [0] * 8)
    assert t.estimate([3])[0] == pytest.approx(1 / 10)  # (1 + 0) / (2 + 8)
    t.update([3] * 8, [1] * 8)
    # s = 0.5 * 0 + 8, f = 0.5 * 8 + 0 = 4: (1 + 8) / (2 + 12)
    assert t.estimate([3])[0] == pytest.approx(9 / 14)
    assert t.estimate([3], estimator="recipe")[0] == pytest.approx(0.5)  # every estimator from one state


def test_beta_with_min_count_zero_gives_the_prior_mean_for_unseen_prompts() -> None:
    t = Tracker(TrackerConfig(estimator="beta", beta_prior=(1.0, 3.0), min_count=0))
    assert t.estimate(["new"])[0] == pytest.approx(0.25)


def test_posterior_is_the_prior_plus_discounted_counts() -> None:
    t = Tracker(TrackerConfig(estimator="beta", beta_prior=(2.0, 3.0), forgetting=0.5, min_count=8))
    t.update(["p", "p", "p", "q"], [1, 1, 0, 1])
    t.update(["p"], [0])
    a, b = t.posterior(["p", "q", "unseen"])
    # p: s = 0.5 * 2 + 0 = 1, f = 0.5 * 1 + 1 = 1.5; q (discounted only when updated): s = 1, f = 0
    assert a.tolist() == [3.0, 3.0, 2.0]
    assert b.tolist() == [4.5, 3.0, 3.0]
    assert np.isnan(t.estimate(["p"])[0])  # 4 rewards < min_count: no point estimate, but a posterior
    assert t.estimate(["p"], estimator="beta").shape == (1,)
    u = Tracker(TrackerConfig(estimator="beta", min_count=0))
    u.update(["p"] * 3, [1, 0, 1])
    a, b = u.posterior(["p"])
    assert u.estimate(["p"])[0] == pytest.approx(a[0] / (a[0] + b[0]))  # the posterior mean is the estimate
    empty_a, empty_b = Tracker().posterior(np.array([1, 2]))
    assert empty_a.tolist() == [1.0, 1.0] and empty_b.tolist() == [1.0, 1.0]


def test_reward_formats() -> None:
    assert to_success([-1, 1, 1]).tolist() == [0, 1, 1]
    assert to_success([0, 1]).tolist() == [0, 1]
    assert to_success([True, False]).tolist() == [1, 0]
    assert to_success([0.25, 1.0]).tolist() == [0.25, 1.0]
    assert to_success([0.2, 0.7], success_threshold=0.5).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"continuous rewards must be in \[0, 1\].*rewards\[1\]=-1.0"):
        to_success([0.5, -1.0])
    with pytest.raises(ValueError, match=r"binary rewards must be 0 or 1; rewards\[0\]=0.5"):
        to_success([0.5], reward_format="binary")
    with pytest.raises(ValueError, match=r"rewards must be finite; rewards\[0\]=nan"):
        to_success([float("nan")])
    with pytest.raises(ValueError, match=r"rewards must be real numbers; rewards\[1\]=None"):
        to_success([1, None])
    with pytest.raises(ValueError, match=r"rewards must be real numbers; rewards\[0\]=\(1\+0j\)"):
        to_success([1 + 0j])
    with pytest.raises(ValueError, match=r"rewards must be 1-D; got shape \(1, 2\)"):
        to_success([[1, 0]])
    t = Tracker(TrackerConfig(min_count=1))
    t.update(["p"] * 4, [-1, 1, -1, -1])
    assert t.estimate(["p"])[0] == pytest.approx(0.25)


def test_ema_stays_in_zero_one_under_rounding() -> None:
    t = Tracker(TrackerConfig(estimator="ema", ema_weight=0.1, min_count=1))
    for _ in range(50):
        t.update([1] * 3, [1, 1, 1])
    assert t.estimate([1])[0] == 1.0


# ------------------------------------------------------------------------ update vs a loop reference
def _reference(config: TrackerConfig, calls: list[tuple[list[Any], list[float], int | None, int | None]]) -> dict:
    """The tracker state after ``calls``, rollout by rollout in plain Python (the recipe's estimator)."""
    w, rows, order = config.window, {}, []
    epoch, step = 0, 0
    for ids, rewards, ep, stp in calls:
        s = to_success(rewards, config.reward_format, config.success_threshold).tolist()
        epoch = epoch if ep is None else ep
        step = step + 1 if stp is None else stp
        by: dict[Any, list[float]] = {}
        for pid, x in zip(ids, s, strict=True):
            by.setdefault(pid.item() if isinstance(pid, np.generic) else pid, []).append(x)
        for pid, xs in by.items():
            if pid not in rows:
                order.append(pid)
                rows[pid] = {"ring": [0.0] * w, "ring_pos": 0, "count": 0, "epoch_id": -1, "epoch_sum": 0.0,
                             "epoch_count": 0, "ema": 0.0, "beta_s": 0.0, "beta_f": 0.0, "last_step": 0}  # fmt: skip
            r = rows[pid]
            for x in xs:
                r["ring"][r["ring_pos"]] = x
                r["ring_pos"] = (r["ring_pos"] + 1) % w
            if r["epoch_id"] != epoch:
                r["epoch_sum"], r["epoch_count"] = 0.0, 0
            r["epoch_sum"] += sum(xs)
            r["epoch_count"] += len(xs)
            r["epoch_id"] = epoch
            mean = sum(xs) / len(xs)
            r["ema"] = mean if r["count"] == 0 else (1 - config.ema_weight) * r["ema"] + config.ema_weight * mean
            r["beta_s"] = config.forgetting * r["beta_s"] + sum(xs)
            r["beta_f"] = config.forgetting * r["beta_f"] + len(xs) - sum(xs)
            r["count"] += len(xs)
            r["last_step"] = step
    arrays = {k: np.array([rows[pid][k] for pid in order]) for k in FIELDS}
    return {"ids": order, "epoch": epoch, "step": step, "arrays": arrays}


POOL = [0, 1, 2, 7, -3, 2**40, "a", "b", "0", "1", "ü"]
_call = st.tuples(
    st.lists(st.sampled_from(POOL), max_size=24),
    st.sampled_from(["list", "array", "numpy scalars"]),
    st.one_of(st.none(), st.integers(0, 3)),
    st.one_of(st.none(), st.integers(0, 50)),
    st.integers(0, 2**32),
)


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(_call, min_size=1, max_size=5),
    window=st.integers(1, 5),
    ema_weight=st.sampled_from([0.1, 0.5, 1.0]),
    forgetting=st.sampled_from([0.3, 0.8, 1.0]),
    grouped=st.booleans(),
)
def test_update_matches_a_per_rollout_reference(
    calls: list[Any], window: int, ema_weight: float, forgetting: float, grouped: bool
) -> None:
    cfg = TrackerConfig(window=window, ema_weight=ema_weight, forgetting=forgetting, reward_format="continuous")
    t, plain = Tracker(cfg), []
    for ids, form, epoch, step, seed in calls:
        rng = np.random.default_rng(seed)
        if grouped:  # rollouts listed prompt by prompt, as engines do: the no-sort path
            ids = sorted(ids, key=lambda x: (isinstance(x, str), x))
        rewards = rng.choice([0.0, 0.25, 1.0], size=len(ids)).tolist()
        all_int = all(isinstance(i, int) for i in ids)
        given_ids: Any = ids
        if form == "array" and all_int:
            given_ids = np.array(ids, dtype=np.int64)
        elif form == "numpy scalars":
            given_ids = [np.int64(i) if isinstance(i, int) else np.str_(i) for i in ids]
        t.update(given_ids, rewards, epoch=epoch, step=step)
        plain.append((ids, rewards, epoch, step))
    ref, got = _reference(cfg, plain), t.state_dict()
    assert got["ids"] == ref["ids"] and (got["epoch"], got["step"]) == (ref["epoch"], ref["step"])
    assert all(type(i) in (int, str) for i in got["ids"])
    for k in FIELDS:
        if ref["ids"]:
            np.testing.assert_allclose(got["arrays"][k], ref["arrays"][k], rtol=1e-12, atol=1e-12, err_msg=k)
        assert got["arrays"][k].shape[0] == len(ref["ids"])


_step = st.tuples(
    st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True),  # the step's prompts
    st.integers(1, 9),  # rollouts per prompt: the same for all, as engines send a uniform step
    st.sampled_from([0, 0, 0, -5, 2**40, 10**6]),  # an id offset: dense ids, then ids that end the direct table
    st.integers(0, 2**32),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, min_size=1, max_size=6), window=st.integers(1, 6), interleave=st.booleans())
def test_uniform_steps_and_dense_ids_match_the_reference(steps: list[Any], window: int, interleave: bool) -> None:
    """The fast paths: every prompt bringing n rewards (one write pattern per ring when the rings are
    in step), dense int ids looked up in a direct table, and ids far outside it that retire the table."""
    cfg = TrackerConfig(window=window, reward_format="continuous", min_count=0)
    t, plain = Tracker(cfg), []
    for prompts, n, offset, seed in steps:
        ids = np.repeat(np.array(prompts, dtype=np.int64) + offset, n)
        if interleave:
            j = np.arange(ids.size)
            ids = ids[np.lexsort((j // n, j % n))]
        rewards = np.random.default_rng(seed).choice([0.0, 0.5, 1.0], size=ids.size).tolist()
        t.update(ids, rewards, epoch=len(plain) // 2)
        plain.append((ids.tolist(), rewards, len(plain) // 2, None))
        known = np.array([*sorted({int(i) for i in ids}), 10**8, -(10**8)], dtype=np.int64)  # + two unseen
        ref = _reference(cfg, plain)
        got = t.state_dict()
        assert got["ids"] == ref["ids"]
        for k in FIELDS:
            np.testing.assert_allclose(got["arrays"][k], ref["arrays"][k], rtol=1e-12, atol=1e-12, err_msg=k)
        rows = t.rows(known)
        assert rows[-2:].tolist() == [-1, -1]
        assert [ref["ids"][r] for r in rows[:-2].tolist()] == known[:-2].tolist()


def test_grouped_and_shuffled_rollouts_give_the_same_state() -> None:
    rng = np.random.default_rng(3)
    ids = np.repeat(rng.permutation(1000)[:64], 8)
    rewards = rng.integers(0, 2, ids.size)
    grouped, shuffled = Tracker(TrackerConfig(window=4)), Tracker(TrackerConfig(window=4))
    grouped.update(ids, rewards)
    j = np.arange(ids.size)
    round_robin = np.lexsort((j // 8, j % 8))  # rollout 0 of every prompt, then rollout 1, ...: order kept per prompt
    shuffled.update(ids[round_robin], rewards[round_robin])
    assert sorted(grouped.ids) == sorted(shuffled.ids)
    for est in ("recipe", "ema", "beta"):
        np.testing.assert_array_equal(grouped.estimate(ids, estimator=est), shuffled.estimate(ids, estimator=est))
    np.testing.assert_array_equal(grouped.counts(ids), shuffled.counts(ids))


_layouts = st.sampled_from(["repeat", "tile", "tile of repeats", "shuffled", "runs"])


@settings(max_examples=300, deadline=None)
@given(
    distinct=st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=9, unique=True),
    small=st.booleans(),
    width=st.integers(1, 4),
    layout=_layouts,
    seed=st.integers(0, 2**32),
)
def test_grouping_lists_each_prompts_rollouts_in_their_order(
    distinct: list[int], small: bool, width: int, layout: str, seed: int
) -> None:
    """Every grouping path (runs, a round-by-round period, the one sort; keys near the int64 limits use
    NumPy's stable argsort): each group holds exactly its key's positions, in increasing order."""
    rng = np.random.default_rng(seed)
    u = np.array([d % 50 for d in distinct] if small else distinct, dtype=np.int64)
    keys = {
        "repeat": np.repeat(u, width),
        "tile": np.tile(u, width),
        "tile of repeats": np.tile(np.repeat(u, 2), width),
        "shuffled": rng.permutation(np.repeat(u, width)),
        "runs": np.repeat(rng.choice(u, size=3 * u.size), rng.integers(1, 4, 3 * u.size)),
    }[layout]
    perm, starts, uniq, first = tracker_module._group_keys(keys)
    order = np.arange(keys.size) if perm is None else perm
    ends = np.r_[starts[1:], keys.size]
    got = {int(k): order[a:b].tolist() for k, a, b in zip(uniq.tolist(), starts.tolist(), ends.tolist(), strict=True)}
    want: dict[int, list[int]] = {}
    for i, k in enumerate(keys.tolist()):
        want.setdefault(k, []).append(i)
    assert got == want and len(uniq) == len(want)
    assert first.tolist() == [want[int(k)][0] for k in uniq.tolist()]


# --------------------------------------------------------------------------- public read API
def test_builtin_estimators_read_only_the_public_api() -> None:
    class PublicView:
        """Exposes only what register_estimator documents; any private read fails."""

        def __init__(self, t: Tracker) -> None:
            self.config, self.epoch = t.config, t.epoch
            self.array, self.counts_by_row = t.array, t.counts_by_row

    rng = np.random.default_rng(0)
    t = Tracker(TrackerConfig(min_count=0, window=4))
    for epoch in range(3):
        t.update(rng.integers(0, 20, 60), rng.integers(0, 2, 60), epoch=epoch)
    rows = t.rows(t.ids)
    for name in ("recipe", "ema", "beta"):
        fn = tracker_module._ESTIMATORS.get(name)
        np.testing.assert_array_equal(fn(PublicView(t), rows), t.estimate(t.ids, estimator=name))  # type: ignore[arg-type]


if "test-last-reward" not in estimator_names():

    @register_estimator("test-last-reward")
    def _last_reward(tracker: Tracker, rows: np.ndarray) -> np.ndarray:
        ring, pos = tracker.array("ring"), tracker.array("ring_pos")
        return ring[rows, (pos[rows] - 1) % tracker.config.window]


def test_a_registered_estimator_reads_state_through_array() -> None:
    t = Tracker(TrackerConfig(window=3, min_count=2))
    t.update(["a", "a", "b", "a"], [1, 0, 1, 1])
    assert t.estimate(["a", "b", "c"], estimator="test-last-reward")[[0]].tolist() == [1.0]
    got = t.estimate(["a", "b", "c"], estimator="test-last-reward")
    assert np.isnan(got[1]) and np.isnan(got[2])  # b has 1 < min_count rewards; c is unseen


def test_array_is_read_only_and_names_are_checked() -> None:
    t = Tracker()
    t.update(["a"] * 2, [1, 0])
    arr = t.array("count")
    assert arr.tolist() == [2]
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 5
    with pytest.raises(ValueError, match=r"name must be one of \['ring', .*\]; got name='_state'"):
        t.array("_state")


def test_estimator_returning_the_wrong_shape_is_refused() -> None:
    if "test-bad-shape" not in estimator_names():
        register_estimator("test-bad-shape")(lambda tracker, rows: np.zeros(rows.size + 1))
    t = Tracker(TrackerConfig(min_count=0))
    t.update(["a"], [1])
    with pytest.raises(ValueError, match=r"estimator 'test-bad-shape' returned shape \(2,\) for 1 rows"):
        t.estimate(["a"], estimator="test-bad-shape")


# ----------------------------------------------------------------------------- ids
BAD_IDS = [1.0, True, np.float64(2.0), np.bool_(False), None, b"a", (1,), 1 + 0j]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize("entry", ["update", "estimate", "counts", "posterior", "rows", "from_state_dict"])
def test_float_and_bool_ids_are_refused_everywhere_ids_enter(entry: str, bad: object) -> None:
    t = Tracker(TrackerConfig(min_count=1))
    t.update([1, 0], [1, 0])
    before = t.to_bytes()
    ids = ["x", bad]
    message = rf"\[1\]={re.escape(repr(bad))} is not a valid prompt id: prompt ids must be int or str, not"
    with pytest.raises(ValueError, match=message):
        if entry == "update":
            t.update(ids, [1, 1])
        elif entry == "from_state_dict":
            state = t.state_dict()
            state["ids"] = [0, bad]
            Tracker.from_state_dict(state)
        else:
            getattr(t, entry)(ids)
    assert t.to_bytes() == before
    assert bad not in t  # membership never matches a non-id


def test_float_and_bool_arrays_are_refused() -> None:
    t = Tracker()
    with pytest.raises(ValueError, match=r"prompt_ids\[0\]=1.0 is not a valid prompt id: .* not float"):
        t.update(np.array([1.0, 2.0]), [1, 0])
    with pytest.raises(ValueError, match=r"prompt_ids\[0\]=True is not a valid prompt id: .* not bool"):
        t.estimate(np.array([True]))
    with pytest.raises(ValueError, match=r"prompt_ids must be 1-D; got an array of shape \(1, 1\)"):
        t.counts(np.array([[1]]))
    with pytest.raises(ValueError, match=r"prompt_ids must be a sequence of prompt ids \(int or str\); got 'ab'"):
        t.update("ab", [1, 1])
    with pytest.raises(ValueError, match=r"prompt_ids\[1\]=18446744073709551615 .* must fit in 64 bits"):
        t.update(np.array([1, 2**64 - 1], dtype=np.uint64), [1, 0])
    with pytest.raises(ValueError, match=r"prompt_ids\[0\]=1180591620717411303424 .* must fit in 64 bits"):
        t.update([2**70, "a"], [1, 0])
    assert len(t) == 0


def test_int_and_str_ids_never_collide_and_numpy_scalars_are_plain_ids() -> None:
    t = Tracker(TrackerConfig(min_count=1))
    t.update([1, "1", np.int64(1), np.str_("1"), "١"], [1, 0, 1, 0, 0])
    assert t.ids == [1, "1", "١"] and [type(i) for i in t.ids] == [int, str, str]
    assert t.counts([1, "1", "١", np.int32(1)]).tolist() == [2, 2, 1, 2]
    assert 1 in t and "1" in t and np.int64(1) in t and 1.0 not in t and True not in t
    assert t.estimate(np.array(["1", "١"])).tolist() == [0.0, 0.0]


# --------------------------------------------------------------------- all-or-nothing updates
REJECTED = [
    (["a", "b", 1.5], [1, 0, 1], {}, r"prompt_ids\[2\]=1.5 is not a valid prompt id"),
    (["a"], [1], {"epoch": 5, "step": -1}, r"step must be >= 0; got step=-1"),
    (["a", "new"], [1, float("nan")], {}, r"rewards must be finite; rewards\[1\]=nan"),
    (["a", "new"], [1], {}, r"prompt_ids and rewards must have the same length; got 2 and 1"),
    (["new", True], [1, 1], {}, r"prompt_ids\[1\]=True is not a valid prompt id"),
    ([np.float64(3.0)], [1], {}, r"prompt_ids\[0\]=np.float64\(3.0\) is not a valid prompt id: .* not float64"),
    (np.array([1.0]), [1], {}, r"prompt_ids\[0\]=1.0 is not a valid prompt id"),
    (["a"], [1], {"epoch": -1}, r"epoch must be >= 0; got epoch=-1"),
    (["a"], [1], {"epoch": 1.5}, r"epoch must be an integer; got epoch=1.5"),
    (["a"], [1], {"step": True}, r"step must be an integer; got step=True"),
    (["a"], [1], {"epoch": 2**70}, r"epoch must be <= 9223372036854775807"),
    (["a"], [[1]], {}, r"rewards must be 1-D; got shape \(1, 1\)"),
    (["a"], ["x"], {}, r"rewards must be real numbers; rewards\[0\]='x'"),
    (["a", "b"], [1, 2], {}, r"continuous rewards must be in \[0, 1\]"),
    (np.array([[1]]), [1], {}, r"prompt_ids must be 1-D"),
    ([2**70], [1], {}, r"must fit in 64 bits"),
    ({"a": 1}, [1], {}, r"prompt_ids must be a sequence of prompt ids"),
]


@pytest.mark.parametrize(("ids", "rewards", "kw", "message"), REJECTED)
def test_a_rejected_update_leaves_the_tracker_byte_identical(ids: Any, rewards: Any, kw: dict, message: str) -> None:
    t = Tracker(TrackerConfig(min_count=1))
    t.update(["a", "b", "a", 3], [1, 0, 1, 1], epoch=2, step=7)
    before, ids_before = t.to_bytes(), t.ids
    with pytest.raises(ValueError, match=message):
        t.update(ids, rewards, **kw)
    assert t.to_bytes() == before and t.ids == ids_before and (t.epoch, t.step) == (2, 7)
    assert t.estimate(["a", "b", 3]).tolist() == [1.0, 0.0, 1.0]  # still usable
    t.update(["a"], [0])  # and still updatable
    assert Tracker.from_bytes(t.to_bytes()).counts(["a"]).tolist() == [3]


def test_epoch_and_step_are_validated_when_set() -> None:
    t = Tracker()
    with pytest.raises(ValueError, match=r"epoch must be an integer; got epoch='1'"):
        t.epoch = "1"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"step must be >= 0; got step=-2"):
        t.step = -2
    assert (t.epoch, t.step) == (0, 0)


# ------------------------------------------------------------------------------- file format
def _small_tracker() -> Tracker:
    t = Tracker(TrackerConfig(window=2, min_count=1))
    t.update(["a", "b", "a"], [1, 0, 1], epoch=1, step=3)
    return t


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = Tracker(TrackerConfig(estimator="beta", forgetting=0.9, min_count=2, beta_prior=(0.5, 2.0)))
    for step in range(5):
        ids = rng.integers(0, 30, 64)
        t.update(ids, rng.integers(0, 2, 64), epoch=step // 2)
    t.update(["s", "t", "s"], [1, 0, 0])  # str ids beside int ids
    path = tmp_path / "tracker.bin"
    t.save(path)
    u = Tracker.load(path)
    _assert_same_state(t, u)
    assert u.config == t.config
    probe: list[object] = [*range(30), "s", "t", "u"]
    for est in ("recipe", "ema", "beta"):
        np.testing.assert_array_equal(u.estimate(probe, estimator=est), t.estimate(probe, estimator=est))
    assert u.to_bytes() == t.to_bytes() == path.read_bytes()  # deterministic bytes
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
    _assert_same_state(Tracker.from_state_dict(t.state_dict()), t)
    _assert_same_state(Tracker.from_bytes(bytearray(t.to_bytes())), t)
    _assert_same_state(Tracker.from_bytes(Tracker().to_bytes()), Tracker())


def test_every_truncation_and_every_bit_flip_is_detected(tmp_path: Path) -> None:
    """Exhaustive on a small file: every prefix and every single-bit flip (header, payload and digest)."""
    data = _small_tracker().to_bytes()
    assert len(data) < 1200  # small enough to be exhaustive
    for cut in range(len(data)):
        with pytest.raises(ValueError, match=r"^<test>: .*(truncated|corrupt)"):
            Tracker.from_bytes(data[:cut], source="<test>")
    for byte in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[byte] ^= 1 << bit
            with pytest.raises(ValueError, match=r"^<test>: ") as info:
                Tracker.from_bytes(bytes(flipped), source="<test>")
            assert type(info.value) is ValueError
    path = tmp_path / "t.bin"
    path.write_bytes(data[:-1])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: tracker file is truncated or corrupt"):
        Tracker.load(path)


def test_edited_header_fields_are_detected() -> None:
    data = _small_tracker().to_bytes()
    for old, new in [(b'"a"', b'"z"'), (b'"epoch":1', b'"epoch":7'), (b'"window":2', b'"window":3'),
                     (b'"estimator":"recipe"', b'"estimator":"beta"  ')]:  # fmt: skip
        assert old in data
        with pytest.raises(ValueError, match=r"tracker file is truncated or corrupt \(SHA-256 mismatch\)"):
            Tracker.from_bytes(data.replace(old, new, 1))


def test_a_tracker_file_is_the_package_state_file_envelope() -> None:
    """The one envelope of knapsack_rl.io: kind "tracker", version 3, JSON meta, one part per state array."""
    t = _small_tracker()
    file = decode_state_file(t.to_bytes(), source="<t>", kind="tracker", version=3, parts=FIELDS)
    config = json.loads(json.dumps(asdict(t.config)))  # beta_prior is a list in JSON
    assert file.meta == {"config": config, "epoch": 1, "step": 3, "ids": ["a", "b"]}
    assert list(file.parts) == list(FIELDS)
    for name in FIELDS:
        dtype = np.dtype("<i8") if t.array(name).dtype.kind == "i" else np.dtype("<f8")
        assert file.parts[name] == t.array(name).astype(dtype).tobytes()
    rebuilt = encode_state_file("tracker", 3, file.meta, file.parts)
    assert rebuilt == t.to_bytes()
    _assert_same_state(Tracker.from_bytes(rebuilt), t)


def _old_format_file(version: bytes = b"v2") -> bytes:
    """A tracker file as knapsack-rl wrote it before tracker files used the envelope (format v2)."""
    t = _small_tracker()
    dtypes = {k: "<f8" if k in ("ring", "epoch_sum", "ema", "beta_s", "beta_f") else "<i8" for k in FIELDS}
    layout = [[k, dtypes[k], [2, 2] if k == "ring" else [2]] for k in FIELDS]
    header = {"format": 2, "config": asdict(t.config), "epoch": 1, "step": 3, "ids": ["a", "b"], "arrays": layout}
    head = json.dumps(header).encode()
    body = b"KNAPSACK-RL-TRACKER\x00" + version + b"\n" + len(head).to_bytes(8, "little") + head
    body += b"".join(t.array(k).astype(dtypes[k]).tobytes() for k in FIELDS)
    return body + hashlib.sha256(body).digest()


def test_tracker_files_of_the_old_formats_are_refused_in_one_line(tmp_path: Path) -> None:
    for version in (b"v2", b"v1"):
        path = tmp_path / f"old-{version.decode()}.bin"
        path.write_bytes(_old_format_file(version))
        message = (
            rf"^{re.escape(str(path))}: a tracker file of an earlier knapsack-rl \(its own format '{version.decode()}'"
        )
        with pytest.raises(ValueError, match=message + r".*load it with the version that wrote it") as info:
            Tracker.load(path)
        assert "\n" not in str(info.value)


def test_foreign_and_old_files_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    buf = tmp_path / "arrays.npz"
    np.savez(buf, ring=np.zeros(2))
    good = decode_state_file(_small_tracker().to_bytes(), source="", kind="tracker", version=3, parts=FIELDS)
    cases = {
        b"": "tracker file is truncated",
        b"KNAPSACK": "tracker file is truncated",
        b"hello": r"not a knapsack-rl tracker file \(bad magic\)",
        pickle.dumps(Payload()): "bad magic",
        buf.read_bytes(): "bad magic",
        json.dumps({"ids": [1]}).encode(): "bad magic",
        STATE_MAGIC + bytes(100): "tracker file is truncated or corrupt",
        encode_state_file("planner", 1, good.meta, good.parts): r"holds a 'planner' state, not a 'tracker' state",
        encode_state_file("tracker", 4, good.meta, good.parts): r"tracker format version 4 is not supported",
        encode_state_file("tracker", 3, good.meta, {}): r"tracker state must have the parts \[",
    }
    for data, message in cases.items():
        with pytest.raises(ValueError, match=rf"^<x>: .*{message}"):
            Tracker.from_bytes(data, source="<x>")
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"<x>: tracker data must be bytes; got str"):
        Tracker.from_bytes("text", source="<x>")  # type: ignore[arg-type]


def _forge(meta_edit: Any = None, parts: dict[str, bytes] | None = None) -> bytes:
    """A file with a valid checksum around edited meta or parts: what only a forger produces."""
    file = decode_state_file(_small_tracker().to_bytes(), source="", kind="tracker", version=3, parts=FIELDS)
    meta = json.loads(json.dumps(file.meta))
    if meta_edit is not None:
        meta_edit(meta)
    return encode_state_file("tracker", 3, meta, {**file.parts, **(parts or {})})


def _set(key: str, value: Any) -> Any:
    return lambda h: h.__setitem__(key, value)


def _set_config(key: str, value: Any) -> Any:
    return lambda h: h["config"].__setitem__(key, value)


FORGED: list[tuple[Any, dict[str, bytes] | None, str]] = [
    (_set("ids", ["a", 1.0]), None, r"ids\[1\]=1.0 is not a valid prompt id"),
    (_set("ids", ["a", "a"]), None, r"duplicate prompt ids"),
    (_set("ids", ["a"]), None, r"part 'ring' has 32 bytes; 1 prompts and window 2 need 16"),
    (_set("ids", "ab"), None, r"'ids' must be a list"),
    (_set("ids", [{"x": 1}, "b"]), None, r"ids\[0\]=\{'x': 1\} is not a valid prompt id"),
    (_set("epoch", -1), None, r"epoch must be >= 0"),
    (_set("step", 2**70), None, r"step must be <= "),
    (_set("epoch", True), None, r"epoch must be an integer"),
    (_set("format", 3), None, r"its meta must hold exactly \['config', 'epoch', 'ids', 'step'\]"),
    (lambda h: h.pop("config"), None, r"its meta must hold exactly"),
    (_set("config", None), None, r"tracker config must be a mapping; got None"),
    (_set_config("extra", 1), None, r"tracker config must have exactly the keys"),
    (_set_config("window", "2"), None, r"window must be an integer"),
    (_set_config("beta_prior", 5), None, r"beta_prior must be a pair"),
    (_set_config("estimator", ["recipe"]), None, r"estimator must be one of"),
    (None, {"count": b"\x00" * 8}, r"part 'count' has 8 bytes; 2 prompts and window 2 need 16"),
    (None, {"ring": b""}, r"part 'ring' has 0 bytes"),
]


@pytest.mark.parametrize(("edit", "parts", "message"), FORGED, ids=[m for *_, m in FORGED])
def test_forged_files_with_a_valid_checksum_are_validated_field_by_field(
    edit: Any, parts: dict[str, bytes] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=rf"^<f>: malformed tracker file: .*{message}") as info:
        Tracker.from_bytes(_forge(edit, parts), source="<f>")
    assert type(info.value) is ValueError


def test_forged_state_values_are_refused() -> None:
    base = _small_tracker().state_dict()
    edits = {
        ("ring_pos", (0,), 2): r"'ring_pos' has 2 at \(0,\), outside \[0, 1\]",
        ("ema", (1,), np.nan): r"'ema' has nan at \(1,\)",
        ("ring", (0, 1), 1.5): r"'ring' has 1.5 at \(0, 1\)",
        ("count", (0,), -1): r"'count' has -1",
        ("epoch_count", (0,), 99): r"inconsistent at row 0: it breaks epoch_count <= count",
        ("beta_f", (0,), np.inf): r"'beta_f' has inf",
    }
    for (name, where, value), message in edits.items():
        state = {**base, "arrays": {k: v.copy() for k, v in base["arrays"].items()}}
        state["arrays"][name][where] = value
        with pytest.raises(ValueError, match=message):
            Tracker.from_state_dict(state)
    with pytest.raises(ValueError, match=r"tracker state lacks \['arrays', 'ids'\]"):
        Tracker.from_state_dict({"config": {}, "epoch": 0, "step": 0})
    state = {**base, "arrays": {**base["arrays"], "count": base["arrays"]["count"].astype(float)}}
    with pytest.raises(ValueError, match=r"'count' must be int64 of shape \(2,\); got float64 \(2,\)"):
        Tracker.from_state_dict(state)


def _forged_bytes(edit: Any, tracker: Tracker | None = None) -> bytes:
    """The file of a tracker whose state was edited in place: a valid checksum around forged values."""
    t = _small_tracker() if tracker is None else tracker
    edit(t)
    return t.to_bytes()


def _put(name: str, where: Any, value: Any) -> Any:
    return lambda t: t._state[name].__setitem__(where, value)


def _huge_window(t: Tracker) -> None:
    object.__setattr__(t.config, "window", 10**9)  # with no prompt the file stays 572 bytes


FORGED_STATES = [
    # a ring holding more rewards than were recorded: the recipe estimate of "b" (count 1) was 2.0
    (_put("ring", 1, 1.0), None, r"inconsistent at row 1: it breaks ring is 0 past the rewards recorded"),
    (_put("ring_pos", 0, 1), None, r"inconsistent at row 0: it breaks ring_pos == count % window"),
    # a count that wraps negative at the next update (whose own save could then not be loaded)
    (_put("count", 0, np.iinfo(np.int64).max - 1), None, r"'count' has 9223372036854775806 at \(0,\), outside \[1, "),
    (_put("count", 0, 0), None, r"'count' has 0 at \(0,\), outside \[1, "),
    # discounted counts far beyond the rewards recorded: budgets [20, 2, 2] with a negative objective
    (_put("beta_s", 0, 1e18), None, r"inconsistent at row 0: it breaks beta_s \+ beta_f <= count"),
    (_put("epoch_id", 0, -1), None, r"'epoch_id' has -1 at \(0,\), outside \[0, None\]"),
    (_put("epoch_count", 0, 0), None, r"'epoch_count' has 0 at \(0,\), outside \[1, None\]"),
    # window 10^9 in a tiny file: the first update allocated 477 GiB
    (_huge_window, Tracker(), r"window must be <= 65536; got window=1000000000"),
]


@pytest.mark.parametrize(("edit", "tracker", "message"), FORGED_STATES, ids=[m for *_, m in FORGED_STATES])
def test_forged_values_with_a_valid_checksum_are_refused_before_anything_is_built(
    edit: Any, tracker: Tracker | None, message: str
) -> None:
    data = _forged_bytes(edit, tracker)
    with pytest.raises(ValueError, match=rf"^<f>: malformed tracker file: .*{message}") as info:
        Tracker.from_bytes(data, source="<f>")
    assert "\n" not in str(info.value)


def test_an_update_past_max_count_is_refused_so_every_save_loads_again() -> None:
    cap = 1 << 32  # tracker.MAX_COUNT
    t = _small_tracker()
    t._state["count"][0] = cap - 1  # the largest count a file may hold, less one
    t._state["ring_pos"][0] = (cap - 1) % 2
    t = Tracker.from_bytes(t.to_bytes())  # a legal file
    before = t.to_bytes()
    with pytest.raises(ValueError, match=r"this update of 2 rewards could take a prompt past 4294967296 rewards"):
        t.update(["a", "a"], [1, 0])
    assert t.to_bytes() == before
    t.update(["b"], [1])  # one more reward fits: the count reaches the cap and the file still loads
    assert Tracker.from_bytes(t.to_bytes()).counts(["a", "b"]).tolist() == [cap - 1, 2]


# ------------------------------------------------------------------------------------ bad input
def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"estimator must be one of \['beta', .*'recipe'.*\]; got estimator='mean'"):
        TrackerConfig(estimator="mean")
    with pytest.raises(ValueError, match="window must be >= 1; got window=0"):
        TrackerConfig(window=0)
    with pytest.raises(ValueError, match=r"forgetting must be <= 1.0; got forgetting=1.5"):
        TrackerConfig(forgetting=1.5)
    with pytest.raises(ValueError, match=r"beta_prior must be a pair \(a0, b0\); got beta_prior=\(1.0,\)"):
        TrackerConfig(beta_prior=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"beta_prior must be > 0.0; got beta_prior=0.0"):
        TrackerConfig(beta_prior=(1.0, 0.0))
    assert TrackerConfig(beta_prior=[2, 1]).beta_prior == (2.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"config must be a TrackerConfig; got \{'window': 4\}"):
        Tracker({"window": 4})  # type: ignore[arg-type]
    t = Tracker()
    with pytest.raises(ValueError, match="same length; got 2 and 1"):
        t.update([1, 2], [1])
    message = r"prompt_ids\[0\]=1.5 is not a valid prompt id: prompt ids must be int or str, not float"
    with pytest.raises(ValueError, match=message):
        t.update([1.5], [1])
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("recipe")(lambda tr, rows: rows)
