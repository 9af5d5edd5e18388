"""Tracker: the recipe's estimator, EMA, Beta with forgetting, reward formats, persistence, merge."""

from __future__ import annotations

import numpy as np
import pytest

from knapsack_rl.core.tracker import Tracker, TrackerConfig, register_estimator, to_success


def _rollouts(pid: object, rewards: list[float]) -> tuple[list[object], list[float]]:
    return [pid] * len(rewards), rewards


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


def test_reward_formats() -> None:
    assert to_success([-1, 1, 1]).tolist() == [0, 1, 1]
    assert to_success([0, 1]).tolist() == [0, 1]
    assert to_success([0.25, 1.0]).tolist() == [0.25, 1.0]
    assert to_success([0.2, 0.7], success_threshold=0.5).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"continuous rewards must be in \[0, 1\].*rewards\[1\]=-1.0"):
        to_success([0.5, -1.0])
    with pytest.raises(ValueError, match=r"binary rewards must be 0 or 1; rewards\[0\]=0.5"):
        to_success([0.5], reward_format="binary")
    with pytest.raises(ValueError, match=r"rewards must be finite; rewards\[0\]=nan"):
        to_success([float("nan")])
    t = Tracker(TrackerConfig(min_count=1))
    t.update(["p"] * 4, [-1, 1, -1, -1])
    assert t.estimate(["p"])[0] == pytest.approx(0.25)


def test_save_load_round_trip_is_exact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    t = Tracker(TrackerConfig(estimator="beta", forgetting=0.9, min_count=2))
    for step in range(5):
        ids = rng.integers(0, 30, 64)
        t.update(ids, rng.integers(0, 2, 64), epoch=step // 2)
    path = tmp_path / "tracker.bin"
    t.save(path)
    u = Tracker.load(path)
    assert u.ids == t.ids and u.epoch == t.epoch and u.step == t.step and u.config == t.config
    for est in ("recipe", "ema", "beta"):
        np.testing.assert_array_equal(
            u.estimate(list(range(30)), estimator=est), t.estimate(list(range(30)), estimator=est)
        )
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_torn_or_altered_file_is_detected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = Tracker()
    t.update(["a", "b"] * 8, [1, 0] * 8)
    path = tmp_path / "t.bin"
    t.save(path)
    data = path.read_bytes()
    (tmp_path / "torn.bin").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Tracker.load(tmp_path / "torn.bin")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    (tmp_path / "flip.bin").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Tracker.load(tmp_path / "flip.bin")
    (tmp_path / "other.bin").write_bytes(b"hello")
    with pytest.raises(ValueError, match="bad magic"):
        Tracker.load(tmp_path / "other.bin")


def test_merge_of_ranks() -> None:
    a, b = Tracker(TrackerConfig(min_count=1)), Tracker(TrackerConfig(min_count=1))
    a.update([0, 0, 1, 1], [1, 1, 0, 1], step=1)
    b.update([2, 2, 1, 1], [0, 0, 0, 1], step=1)  # prompt 1: same rewards as on rank a
    m = Tracker.merge([a, b])
    assert sorted(m.ids) == [0, 1, 2]
    assert m.estimate([0, 1, 2]).tolist() == pytest.approx([1.0, 0.5, 0.0])
    c = Tracker(TrackerConfig(min_count=1))
    c.update([1, 1, 1, 1], [1, 1, 1, 1], step=3)
    with pytest.raises(ValueError, match="disagrees with an earlier tracker on prompt id 1"):
        Tracker.merge([a, c])
    assert Tracker.merge([a, c], on_conflict="latest").estimate([1])[0] == 1.0
    with pytest.raises(ValueError, match="different config"):
        Tracker.merge([a, Tracker(TrackerConfig(window=8))])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"estimator must be one of \['beta', 'ema', 'recipe'\]; got estimator='mean'"):
        TrackerConfig(estimator="mean")
    with pytest.raises(ValueError, match="window must be >= 1; got window=0"):
        TrackerConfig(window=0)
    with pytest.raises(ValueError, match=r"forgetting must be <= 1.0; got forgetting=1.5"):
        TrackerConfig(forgetting=1.5)
    t = Tracker()
    with pytest.raises(ValueError, match="same length; got 2 and 1"):
        t.update([1, 2], [1])
    with pytest.raises(ValueError, match=r"prompt ids must be int or str; got 1.5 \(float\)"):
        t.update([1.5], [1])
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("recipe")(lambda tr, rows: rows)
