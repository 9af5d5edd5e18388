"""PPO-clip policy loss with clip-higher and dual clip (the recipe's), and how token losses are aggregated.

Aggregation (:func:`aggregation_weights`) decides how much each token's loss weighs in the step's
loss ``L = sum_{r,t} w_{r,t} l_{r,t}`` (weights sum to 1 over the batch's response tokens):

- ``token-mean`` (the recipe, verl's default): ``w = 1 / T_batch`` for every token. A prompt with 16x
  the rollouts weighs 16x: with knapsack budgets one large group can dominate the update.
- ``seq-mean-token-mean``: ``w = 1 / (R * T_r)``: every rollout weighs the same.
- ``group-mean``: ``w = 1 / (G * T_g)`` with ``T_g`` the tokens of the rollout's prompt group and G the
  number of groups: every prompt weighs the same whatever its count, so more rollouts of a prompt
  buy a better estimate of its gradient rather than a bigger push.
"""

from __future__ import annotations

from typing import Any

import torch

from knapsack_rl.core.validate import check_real


def token_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Log-probabilities of the response tokens under ``model``; shape (R, T).

    ``log pi(y_t | x, y_<t)`` read from the logits at the position before each response token.
    """
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (R, L + T)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).logits  # (R, L + T, V)
    logits = logits[:, prompt_len - 1 : -1, :].float()  # (R, T, V) predicts tokens prompt_len..end
    targets = input_ids[:, prompt_len:]  # (R, T)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)


AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "group-mean")


def aggregation_weights(mask: torch.Tensor, groups: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-token weights ``w`` (R, T) of the step's loss, summing to 1 over ``mask`` (module docstring).

    Args:
        mask: (R, T) 1 on response tokens.
        groups: (R,) integer group (prompt) index of each rollout.
        mode: ``token-mean``, ``seq-mean-token-mean`` or ``group-mean``.

    A rollout whose advantage is 0 adds exactly 0 to the loss and its gradient whatever its weight, so
    a caller may compute the weights over the whole batch, then keep only the rows with a non-zero
    advantage: same loss, same gradient, less compute.
    """
    m = mask.to(torch.float64)
    if mode == "token-mean":
        w = m / m.sum().clamp(min=1.0)
    elif mode == "seq-mean-token-mean":
        lengths = m.sum(-1, keepdim=True).clamp(min=1.0)  # (R, 1)
        w = m / (lengths * m.shape[0])
    elif mode == "group-mean":
        _, g = torch.unique(groups, return_inverse=True)  # (R,) dense group index
        num = int(g.max().item()) + 1 if g.numel() else 0
        tokens = torch.zeros(num, dtype=torch.float64, device=m.device).index_add_(0, g, m.sum(-1))  # (G,)
        w = m / (tokens[g].clamp(min=1.0)[:, None] * num)
    else:
        raise ValueError(f"loss_agg must be one of {list(AGGREGATIONS)}; got loss_agg={mode!r}")
    return w.to(mask.dtype if mask.is_floating_point() else torch.float32)


def _check_loss_args(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> None:
    check_real("clip_low", clip_low, low=0.0, high=1.0)
    check_real("clip_high", clip_high, low=0.0)
    if dual_clip is not None:
        check_real("dual_clip", dual_clip, low=1.0, open_low=True)
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape or advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"shapes must be logprobs/old_logprobs/mask (R, T) and advantages (R,); got {tuple(logprobs.shape)}, "
            f"{tuple(old_logprobs.shape)}, {tuple(mask.shape)}, {tuple(advantages.shape)}"
        )


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 10.0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss over a batch of responses, aggregated with per-token ``weights``.

    With ratio ``rho_t = exp(logp_t - logp_old_t)`` and the rollout's advantage ``A``:

    ``l_t = max(-A rho_t, -A clip(rho_t, 1 - clip_low, 1 + clip_high))``; for ``A < 0`` and a dual clip c,
    ``l_t = min(l_t, -A c)``. Loss ``= sum_t w_t l_t`` with ``w`` from :func:`aggregation_weights`
    (default: the token mean ``w = mask / sum(mask)``).

    Args:
        logprobs: (R, T) current log-probabilities (with grad).
        old_logprobs: (R, T) log-probabilities of the sampling policy (no grad).
        advantages: (R,) one advantage per rollout.
        mask: (R, T) 1 on response tokens.
        clip_low, clip_high: clip range ``[1 - clip_low, 1 + clip_high]`` (recipe: 0.2 / 0.28).
        dual_clip: bound c > 1 of the loss for negative advantages (recipe: 10); None disables it.
        weights: (R, T) per-token weights (zero off the mask); default the token mean of this batch.
            Computed over a whole batch and then subset to the rollouts with a non-zero advantage,
            they give the whole batch's loss and gradient (the stats are over the rollouts given).

    Returns:
        (scalar loss, stats) with stats ``actor/clipfrac``, ``actor/approx_kl``, ``actor/ratio_mean``.
    """
    _check_loss_args(logprobs, old_logprobs, advantages, mask, clip_low, clip_high, dual_clip)
    m = mask.to(logprobs.dtype)
    adv = advantages.to(logprobs.dtype)[:, None]  # (R, 1)
    log_ratio = logprobs - old_logprobs  # (R, T)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)  # (R, T)
    if dual_clip is not None:
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * dual_clip), per_token)
    denom = m.sum().clamp(min=1.0)
    if weights is None:
        weights = m / denom  # token-mean over this batch
    elif weights.shape != logprobs.shape:
        raise ValueError(f"weights must have shape {tuple(logprobs.shape)}; got {tuple(weights.shape)}")
    loss = (per_token * weights.to(logprobs.dtype) * m).sum()  # sum_t w_t l_t
    with torch.no_grad():
        stats = {
            "actor/clipfrac": float(((clipped > unclipped).to(m.dtype) * m).sum() / denom),
            "actor/approx_kl": float((0.5 * log_ratio.pow(2) * m).sum() / denom),
            "actor/ratio_mean": float((ratio * m).sum() / denom),
        }
    return loss, stats
