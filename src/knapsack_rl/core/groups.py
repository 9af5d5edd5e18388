"""Group-by-id reductions and GRPO advantages in NumPy, and the step metrics the recipe logs (docs/metrics.md).

Rollouts are flat arrays plus a group id per rollout (the prompt they came from), so every prompt
can have its own group size. Nothing here reshapes by a fixed group size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def group_index(group_ids: ArrayLike) -> tuple[NDArray[np.int64], int]:
    """Dense group index per rollout (0..G-1, in order of first appearance) and the number of groups."""
    ids = np.asarray(group_ids)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)  # order of first appearance
    return rank[inverse.reshape(-1)], int(first.size)


def group_counts(
    prompt_ids: Sequence[object] | ArrayLike, rollout_prompt_ids: Sequence[object] | ArrayLike, values: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per prompt of ``prompt_ids``: the number of rollouts and the sum of ``values`` over them.

    ``rollout_prompt_ids[j]`` is the prompt of rollout j; every one must be in ``prompt_ids``
    (the error names the first that is not). Shapes: (M,), (R,), (R,) -> (M,), (M,).
    """
    ids = list(np.asarray(prompt_ids, dtype=object).tolist())
    rollout = list(np.asarray(rollout_prompt_ids, dtype=object).reshape(-1).tolist())
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(rollout) != v.size:
        raise ValueError(f"rollout_prompt_ids and values must have equal length; got {len(rollout)} and {v.size}")
    position = {pid: i for i, pid in enumerate(ids)}
    missing = [pid for pid in dict.fromkeys(rollout) if pid not in position]
    if missing:
        raise ValueError(f"rollout_prompt_ids holds {missing[0]!r}, which is not among the step's prompt ids")
    rows = np.fromiter((position[pid] for pid in rollout), dtype=np.int64, count=len(rollout))
    counts: NDArray[np.int64] = np.bincount(rows, minlength=len(ids)).astype(np.int64)
    sums: NDArray[np.float64] = np.bincount(rows, weights=v, minlength=len(ids)).astype(np.float64)
    return counts, sums


def group_mean_std(
    rewards: ArrayLike, group_ids: ArrayLike, *, unbiased: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per-rollout group mean, group std and group size (segment reductions with bincount).

    ``std_g = sqrt(sum_j (r_j - mean_g)^2 / (n_g - 1))`` when ``unbiased`` (as verl / torch.std), else
    divided by ``n_g``. A group of size 1 has std 0.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    g, num = group_index(group_ids)
    size = np.bincount(g, minlength=num)  # (G,)
    mean = np.bincount(g, weights=r, minlength=num) / size  # (G,)
    sq = np.bincount(g, weights=(r - mean[g]) ** 2, minlength=num)  # (G,) sum of squared deviations
    denom = np.maximum(size - 1, 1) if unbiased else size
    std = np.sqrt(sq / denom)
    return mean[g], std[g], size[g]


def grpo_advantages(
    rewards: ArrayLike,
    group_ids: ArrayLike,
    *,
    eps: float = 1e-6,
    clip: float | None = None,
    scale: bool = True,
) -> NDArray[np.float64]:
    """GRPO advantages grouped by id: ``A = (r - mean_g) / (std_g + eps)`` (``r - mean_g`` if not ``scale``).

    Unbiased std as verl. ``clip`` bounds A to [-clip, clip] (the recipe uses 5). A group of size 1
    has no baseline: its advantage is defined as 0 (verl instead uses mean 0, std 1).
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    mean, std, size = group_mean_std(r, group_ids)
    dev = r - mean
    denom = std + eps if scale else np.ones_like(std)
    adv = np.divide(dev, denom, out=np.zeros_like(dev), where=(size > 1) & (denom > 0))  # size-1 groups: 0
    if clip is not None:
        adv = np.clip(adv, -clip, clip)
    return adv


def step_metrics(rewards: ArrayLike, group_ids: ArrayLike, *, success_threshold: float = 0.5) -> dict[str, float]:
    """Coverage metrics of one step (the recipe's, docs/metrics.md), as slash-named floats.

    - ``train/effective_grad_ratio``: rollouts in groups whose reward std > 0 / all rollouts;
    - ``train/effective_prompts``: the number of groups (prompts) with reward std > 0: the prompts that
      move the policy this step (the effective gradient ratio can rise while this falls);
    - ``train/effective_prompt_ratio``: groups with reward std > 0 / groups;
    - ``train/all_correct_ratio``, ``train/all_wrong_ratio``: groups whose every reward is a success /
      a failure (success: reward >= ``success_threshold``; rewards in {-1, 1} work with the default);
    - ``train/positive_coverage``, ``train/negative_coverage``: groups with at least one success / failure;
    - ``train/rollouts``, ``train/prompts``, ``train/reward_mean``.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    g, num = group_index(group_ids)
    size = np.bincount(g, minlength=num)
    rmax = np.full(num, -np.inf)
    rmin = np.full(num, np.inf)
    np.maximum.at(rmax, g, r)
    np.minimum.at(rmin, g, r)
    varied = rmax > rmin  # (G,) reward std > 0
    succ = np.bincount(g, weights=(r >= success_threshold).astype(np.float64), minlength=num)
    return {
        "train/effective_grad_ratio": float(size[varied].sum() / max(r.size, 1)),
        "train/effective_prompts": float(varied.sum()),
        "train/effective_prompt_ratio": float(varied.mean()) if num else 0.0,
        "train/all_correct_ratio": float((succ == size).mean()) if num else 0.0,
        "train/all_wrong_ratio": float((succ == 0).mean()) if num else 0.0,
        "train/positive_coverage": float((succ > 0).mean()) if num else 0.0,
        "train/negative_coverage": float((succ < size).mean()) if num else 0.0,
        "train/rollouts": float(r.size),
        "train/prompts": float(num),
        "train/reward_mean": float(r.mean()) if r.size else 0.0,
    }
