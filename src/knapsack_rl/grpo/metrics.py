"""Metrics of a training step and of held-out evaluation, as dicts with slash names.

- :func:`rollout_metrics`: ``rollout/response_len_mean``, ``rollout/response_len_max``,
  ``rollout/truncated_ratio``.
- :func:`eval_metrics`: the evaluation conventions of the field, from k samples per prompt: ``eval/avg@k``,
  ``eval/pass@j`` (the unbiased estimator of Chen et al. 2021, for j = 1, 2, 4, ... and k), ``eval/maj@k``
  overall and ``eval/avg@k/<level>`` per difficulty level; and, under the names runs of earlier versions
  logged, ``eval/mean@k`` (= avg@k), ``eval/best@k`` (= pass@k) and ``eval/mean@k/<level>``, so that every
  reader of those names goes on working. ``knapsack-rl report`` reads either through one mapping
  (:mod:`knapsack_rl.report.names`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray


def rollout_metrics(response_mask: torch.Tensor, max_new_tokens: int) -> dict[str, float]:
    """Response length statistics from the (R, T) response mask."""
    lengths = response_mask.sum(-1).float()  # (R,)
    if lengths.numel() == 0:
        return {"rollout/response_len_mean": 0.0, "rollout/response_len_max": 0.0, "rollout/truncated_ratio": 0.0}
    return {
        "rollout/response_len_mean": float(lengths.mean()),
        "rollout/response_len_max": float(lengths.max()),
        "rollout/truncated_ratio": float((lengths >= max_new_tokens).float().mean()),
    }


def pass_at_k(samples: ArrayLike, correct: ArrayLike, k: int) -> NDArray[np.float64]:
    """Per prompt, the unbiased estimate of pass@k from ``samples`` (n) responses of which ``correct`` (c) are
    right: ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021), the chance that k of the n responses drawn
    without replacement hold at least one right one. Computed as a product (no large binomials).

    Raises:
        ValueError: if ``k`` is not in ``1..min(n)``, or a ``correct`` is outside ``0..n``.
    """
    n = np.asarray(samples, dtype=np.int64)
    c = np.asarray(correct, dtype=np.int64)
    fewest = int(n.min()) if n.size else 0
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= fewest:
        raise ValueError(f"k must be an integer in 1..{fewest} (the fewest samples of a prompt); got k={k}")
    if n.shape != c.shape or np.any(c < 0) or np.any(c > n):
        raise ValueError("correct must hold, per prompt, an integer in 0..samples")
    j = np.arange(k)  # C(n - c, k) / C(n, k) = prod_{j < k} (n - c - j) / (n - j); 0 once n - c < k
    miss = np.prod(np.maximum(n[:, None] - c[:, None] - j, 0) / (n[:, None] - j), axis=1)
    out: NDArray[np.float64] = 1.0 - miss
    return out


def pass_ks(k: int) -> list[int]:
    """The j of the ``pass@j`` logged from k samples: 1, 2, 4, ... below k, and k."""
    out, j = [], 1
    while j < k:
        out.append(j)
        j *= 2
    return [*out, k]


def eval_metrics(
    rewards: ArrayLike, prompt_index: ArrayLike, levels: Sequence[str], answers: Sequence[str], k: int
) -> dict[str, float]:
    """Held-out metrics from k samples per prompt (success = reward >= 0.5).

    - ``avg@k`` = mean over prompts of (successes / k): the expected accuracy of one sample;
    - ``pass@j`` = mean over prompts of the unbiased estimate ``1 - C(k - c, j) / C(k, j)`` (:func:`pass_at_k`;
      ``pass@k`` is the fraction of prompts with at least one success, ``pass@1`` equals ``avg@k``);
    - ``maj@k`` = fraction of prompts whose most frequent response is correct (ties: first seen);
    - ``avg@k/<level>`` per difficulty level;
    - ``mean@k``, ``best@k``, ``mean@k/<level>``: the names of earlier versions (= ``avg@k``, ``pass@k``,
      ``avg@k/<level>``), still logged.

    Args:
        rewards: (R,) rewards in {0, 1} (success = reward >= 0.5).
        prompt_index: (R,) prompt position of each rollout (0..P-1).
        levels: P difficulty labels.
        answers: R response texts (for maj@k).
        k: samples per prompt (for the metric names).
    """
    r = np.asarray(rewards, dtype=np.float64) >= 0.5
    idx = np.asarray(prompt_index, dtype=np.int64)
    num = len(levels)
    counts = np.bincount(idx, minlength=num)
    size = np.maximum(counts, 1)
    hits = np.bincount(idx, weights=r.astype(np.float64), minlength=num)
    per_prompt = hits / size  # (P,)
    majority = _majority_correct(r, idx, answers, num)
    out = {f"eval/avg@{k}": float(per_prompt.mean())}
    fewest = int(counts.min()) if counts.size else 0
    for j in pass_ks(k):
        if j <= fewest:  # the trainer draws k samples of every prompt
            out[f"eval/pass@{j}"] = float(pass_at_k(counts, hits.astype(np.int64), j).mean())
    out[f"eval/maj@{k}"] = float(majority.mean())
    lv = np.asarray(levels)
    for name in dict.fromkeys(levels):
        out[f"eval/avg@{k}/{name}"] = float(per_prompt[lv == name].mean())
    out[f"eval/mean@{k}"] = out[f"eval/avg@{k}"]  # the names of earlier versions
    out[f"eval/best@{k}"] = float((per_prompt > 0).mean())
    out.update({f"eval/mean@{k}/{name}": out[f"eval/avg@{k}/{name}"] for name in dict.fromkeys(levels)})
    return out


def _majority_correct(r: np.ndarray, idx: np.ndarray, answers: Sequence[str], num: int) -> np.ndarray:
    votes: list[Counter[str]] = [Counter() for _ in range(num)]
    correct: list[set[str]] = [set() for _ in range(num)]
    for j, (i, text) in enumerate(zip(idx.tolist(), answers, strict=True)):
        votes[i][text.strip()] += 1
        if r[j]:
            correct[i].add(text.strip())
    return np.array([bool(v) and v.most_common(1)[0][0] in c for v, c in zip(votes, correct, strict=True)])
