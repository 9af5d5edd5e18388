"""Evaluation conventions: avg@k, the unbiased pass@k of Chen et al. (2021), maj@k, and the old names."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

from knapsack_rl.grpo.metrics import eval_metrics, pass_at_k, pass_ks


def test_pass_at_k_is_the_share_of_k_subsets_that_hold_a_right_answer() -> None:
    """Against the definition itself: every k-subset of the n responses, counted."""
    for n, c in itertools.product(range(1, 8), range(8)):
        if c > n:
            continue
        right = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(right, k))
            share = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k([n], [c], k)[0] == pytest.approx(share, abs=1e-12)
            assert pass_at_k([n], [c], k)[0] == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_is_unbiased_for_the_true_pass_rate() -> None:
    """Summed over the binomial law of c, the estimate is exactly 1 - (1 - p)^k (the plug-in 1 - (1 - c/n)^k
    is not)."""
    n = 10
    for p in (0.05, 0.3, 0.7):
        law = np.array([comb(n, c) * p**c * (1 - p) ** (n - c) for c in range(n + 1)])
        for k in (1, 2, 4, 10):
            est = pass_at_k(np.full(n + 1, n), np.arange(n + 1), k)
            assert float(law @ est) == pytest.approx(1 - (1 - p) ** k, abs=1e-12)
        plug_in = 1 - (1 - np.arange(n + 1) / n) ** 4
        assert abs(float(law @ plug_in) - (1 - (1 - p) ** 4)) > 1e-3


def test_pass_at_k_refuses_k_beyond_the_samples() -> None:
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.4 .*got k=5"):
        pass_at_k([4, 6], [1, 2], 5)
    with pytest.raises(ValueError, match="correct must hold"):
        pass_at_k([4], [5], 2)


def test_eval_metrics_logs_the_field_names_and_the_old_ones() -> None:
    rewards = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1]  # prompt 0: 1 of 4 right, prompt 1: none, prompt 2: 3 of 4
    idx = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    texts = ["5", "4", "4", "4", "x", "y", "x", "x", "9", "9", "8", "9"]
    m = eval_metrics(rewards, idx, ["a", "b", "b"], texts, k=4)
    assert pass_ks(4) == [1, 2, 4] and pass_ks(6) == [1, 2, 4, 6] and pass_ks(1) == [1]
    assert m["eval/avg@4"] == pytest.approx((1 / 4 + 0 + 3 / 4) / 3)
    assert m["eval/pass@1"] == pytest.approx(m["eval/avg@4"])
    pass2 = ((1 - comb(3, 2) / comb(4, 2)) + 0 + (1 - comb(1, 2) / comb(4, 2))) / 3
    assert m["eval/pass@2"] == pytest.approx(pass2)
    assert m["eval/pass@4"] == pytest.approx(2 / 3)
    assert m["eval/maj@4"] == pytest.approx(1 / 3)  # prompt 0's majority "4" is wrong, prompt 2's "9" right
    assert m["eval/avg@4/a"] == pytest.approx(1 / 4) and m["eval/avg@4/b"] == pytest.approx(3 / 8)
    # the names of earlier versions, with the same values: compare and old readers go on working
    assert m["eval/mean@4"] == m["eval/avg@4"] and m["eval/best@4"] == m["eval/pass@4"]
    assert m["eval/mean@4/b"] == m["eval/avg@4/b"]
