"""GRPO advantages for variable group sizes, in torch (mirrors :func:`knapsack_rl.core.groups.grpo_advantages`)."""

from __future__ import annotations

import torch


def grouped_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    eps: float = 1e-6,
    clip: float | None = None,
    scale: bool = True,
) -> torch.Tensor:
    """``A = (r - mean_g) / (std_g + eps)`` per rollout, groups given by integer ids (any size).

    Args:
        rewards: (N,) float rewards.
        group_ids: (N,) int64 group (prompt) id per rollout; need not be contiguous or sorted.
        eps: added to the std (1e-6 as verl).
        clip: clip A to [-clip, clip] (recipe: 5); None for no clip.
        scale: divide by the std (GRPO); False gives ``r - mean_g`` (Dr. GRPO style).

    Returns:
        (N,) advantages; a group of size 1 gets 0 (no baseline). The std is unbiased, as in verl.
    """
    if rewards.ndim != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must be 1-D of equal shape; got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    r = rewards.to(torch.float64)
    _, g = torch.unique(group_ids, return_inverse=True)  # (N,) dense group index
    num = int(g.max().item()) + 1 if g.numel() else 0
    size = torch.zeros(num, dtype=torch.float64, device=r.device).index_add_(0, g, torch.ones_like(r))  # (G,)
    mean = torch.zeros(num, dtype=torch.float64, device=r.device).index_add_(0, g, r) / size  # (G,)
    dev = r - mean[g]  # (N,)
    sq = torch.zeros(num, dtype=torch.float64, device=r.device).index_add_(0, g, dev * dev)  # (G,)
    std = torch.sqrt(sq / torch.clamp(size - 1, min=1))  # (G,) unbiased
    adv = dev / (std[g] + eps) if scale else dev
    adv = torch.where(size[g] > 1, adv, torch.zeros_like(adv))
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)
