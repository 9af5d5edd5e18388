"""Metrics of a training step and of held-out evaluation, as dicts with slash names.

- :func:`rollout_metrics`: ``rollout/response_len_mean``, ``rollout/response_len_max``,
  ``rollout/truncated_ratio``.
- :func:`eval_metrics`: ``eval/mean@k``, ``eval/best@k``, ``eval/maj@k`` overall and
  ``eval/mean@k/<level>`` per difficulty level.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike


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


def eval_metrics(
    rewards: ArrayLike, prompt_index: ArrayLike, levels: Sequence[str], answers: Sequence[str], k: int
) -> dict[str, float]:
    """Held-out metrics from k samples per prompt.

    - ``mean@k`` = mean over prompts of (successes / k) (the recipe's avg@k);
    - ``best@k`` = fraction of prompts with at least one success (pass@k with k samples);
    - ``maj@k`` = fraction of prompts whose most frequent response is correct (ties: first seen).

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
    size = np.maximum(np.bincount(idx, minlength=num), 1)
    per_prompt = np.bincount(idx, weights=r.astype(np.float64), minlength=num) / size  # (P,)
    majority = _majority_correct(r, idx, answers, num)
    out = {
        f"eval/mean@{k}": float(per_prompt.mean()),
        f"eval/best@{k}": float((per_prompt > 0).mean()),
        f"eval/maj@{k}": float(majority.mean()),
    }
    lv = np.asarray(levels)
    for name in dict.fromkeys(levels):
        out[f"eval/mean@{k}/{name}"] = float(per_prompt[lv == name].mean())
    return out


def _majority_correct(r: np.ndarray, idx: np.ndarray, answers: Sequence[str], num: int) -> np.ndarray:
    votes: list[Counter[str]] = [Counter() for _ in range(num)]
    correct: list[set[str]] = [set() for _ in range(num)]
    for j, (i, text) in enumerate(zip(idx.tolist(), answers, strict=True)):
        votes[i][text.strip()] += 1
        if r[j]:
            correct[i].add(text.strip())
    return np.array([bool(v) and v.most_common(1)[0][0] in c for v, c in zip(votes, correct, strict=True)])
