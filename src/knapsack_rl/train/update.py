"""The update phase of a step: PPO-clip on the step's rollouts, grouped by prompt.

:func:`update_policy` runs ``ppo_epochs`` passes of ``ppo_mini_batches`` mini-batches (prompts split
into mini-batches, every rollout of a prompt in the same one). Per mini-batch the loss is
``sum_{r,t} w_{r,t} l_{r,t}`` with the aggregation weights of
:func:`knapsack_rl.grpo.loss.aggregation_weights` computed over the whole mini-batch; rollouts whose
advantage is exactly 0 add 0 to the loss and its gradient, so their forward and backward passes are
skipped (the weights keep them in the denominator: same loss, same gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from knapsack_rl.grpo.loss import aggregation_weights, ppo_clip_loss, token_logprobs
from knapsack_rl.rollout.generate import Rollouts


@dataclass(frozen=True)
class UpdateSettings:
    """What the update needs of the run's config (a view, so tests can build one directly)."""

    ppo_mini_batches: int = 1
    ppo_epochs: int = 1
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = 10.0
    grad_clip: float = 1.0
    loss_agg: str = "token-mean"

    @classmethod
    def of(cls, config: Any) -> UpdateSettings:
        """The fields of this dataclass read from a config that has them (e.g. a TrainConfig)."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def update_policy(
    model: Any, optimizer: torch.optim.Optimizer, rollouts: Rollouts, adv: torch.Tensor, settings: UpdateSettings
) -> dict[str, float]:
    """PPO-clip updates on the step's rollouts; returns ``actor/*`` metrics averaged over the updates.

    With one mini-batch and one epoch the sampling policy is the current one, so the old
    log-probabilities are the current ones detached (ratio 1, as verl / TRL do) and the extra forward
    pass is skipped; otherwise they are computed once before the first update.
    """
    device = adv.device
    ids = rollouts.input_ids.to(device)
    attn = rollouts.attention_mask.to(device)
    mask = rollouts.response_mask.to(device)
    groups = rollouts.prompt_index.to(device)
    on_policy = settings.ppo_mini_batches == 1 and settings.ppo_epochs == 1  # ratio exactly 1: no extra forward
    old = None
    if not on_policy:
        with torch.no_grad():
            old = token_logprobs(model, ids, attn, rollouts.prompt_len)  # (R, T) sampling policy
    model.train()
    prompt_index = rollouts.prompt_index.numpy()
    parts = np.array_split(np.unique(prompt_index), settings.ppo_mini_batches)
    sums: dict[str, float] = {}
    updates = 0
    for _ in range(settings.ppo_epochs):
        for prompts in parts:
            rows = torch.as_tensor(np.flatnonzero(np.isin(prompt_index, prompts)), device=device)
            if rows.numel() == 0:
                continue
            weights = aggregation_weights(mask[rows], groups[rows], settings.loss_agg)  # over the whole mini-batch
            active = adv[rows] != 0  # A = 0 adds exactly 0 to loss and gradient: skip its forward
            optimizer.zero_grad(set_to_none=True)
            if not bool(active.any()):
                loss, stats = _zero_gradient(model)
            else:
                r = rows[active]
                logp = token_logprobs(model, ids[r], attn[r], rollouts.prompt_len)
                old_r = logp.detach() if old is None else old[r]
                loss, stats = ppo_clip_loss(
                    logp, old_r, adv[r], mask[r], clip_low=settings.clip_low, clip_high=settings.clip_high,
                    dual_clip=settings.dual_clip, weights=weights[active],
                )  # fmt: skip
                loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            stats = {**stats, "actor/loss": loss.item(), "actor/grad_norm": float(grad_norm)}
            stats["actor/grad_clipped"] = float(float(grad_norm) > settings.grad_clip)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            updates += 1
    model.eval()
    return {k: v / max(updates, 1) for k, v in sums.items()}


def _zero_gradient(model: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """No rollout with a non-zero advantage: zero gradients, so the optimizer steps as on a zero loss."""
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    return torch.zeros(()), {"actor/clipfrac": 0.0, "actor/approx_kl": 0.0, "actor/ratio_mean": 1.0}
