"""Grouped advantages (NumPy and torch agree; hand values) and step metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knapsack_rl.core.groups import group_index, grpo_advantages, step_metrics
from knapsack_rl.grpo import grouped_advantages


def test_hand_computed_advantages_with_variable_group_sizes() -> None:
    r = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    g = np.array([10, 10, 4, 4, 4, 99])  # sizes 2, 3, 1
    adv = grpo_advantages(r, g, eps=0.0)
    s2 = np.sqrt(0.5)  # unbiased std of (1, 0)
    s3 = np.sqrt(1 / 3)  # unbiased std of (0, 1, 1)
    np.testing.assert_allclose(adv, [0.5 / s2, -0.5 / s2, -(2 / 3) / s3, (1 / 3) / s3, (1 / 3) / s3, 0.0])


def test_clip_binds_for_one_success_in_many() -> None:
    n = 40
    r = np.r_[1.0, -np.ones(n - 1)]
    adv = grpo_advantages(r, np.zeros(n), clip=5.0)
    assert np.sqrt(n) * (1 - 1 / n) > 5 and adv[0] == 5.0


@pytest.mark.parametrize("seed", range(5))
def test_torch_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 12, 200)
    r = rng.integers(0, 2, 200).astype(float)
    ref = grpo_advantages(r, g, clip=5.0)
    got = grouped_advantages(torch.tensor(r), torch.tensor(g), clip=5.0)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


def test_group_index_follows_first_appearance() -> None:
    idx, num = group_index(["b", "a", "b", "c"])
    assert idx.tolist() == [0, 1, 0, 2] and num == 3


def test_step_metrics() -> None:
    r = np.array([1, 0, 1, 1, 0, 0, 0, 1.0])
    g = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    m = step_metrics(r, g)
    assert m["train/effective_grad_ratio"] == pytest.approx(2 / 8)
    assert m["train/effective_prompt_ratio"] == pytest.approx(1 / 4)
    assert m["train/all_correct_ratio"] == pytest.approx(2 / 4)
    assert m["train/all_wrong_ratio"] == pytest.approx(1 / 4)
    assert m["train/positive_coverage"] == pytest.approx(3 / 4)
    assert m["train/negative_coverage"] == pytest.approx(2 / 4)
    signed = step_metrics(2 * r - 1, g, success_threshold=0.0)
    assert signed["train/all_correct_ratio"] == m["train/all_correct_ratio"]
