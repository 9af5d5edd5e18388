"""PPO-clip policy loss with clip-higher, dual clip and token-mean aggregation (SPEC 6 and 8)."""

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


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 10.0,
    token_count: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean PPO-clip loss over a batch of responses.

    With ratio ``rho_t = exp(logp_t - logp_old_t)`` and the rollout's advantage ``A``:

    ``l_t = max(-A rho_t, -A clip(rho_t, 1 - clip_low, 1 + clip_high))``; for ``A < 0`` and a dual clip c,
    ``l_t = min(l_t, -A c)``. Loss ``= sum_t mask_t l_t / sum_t mask_t`` over every token of the batch
    (prompts with more rollouts weigh more; no per-group reweighting).

    Args:
        logprobs: (R, T) current log-probabilities (with grad).
        old_logprobs: (R, T) log-probabilities of the sampling policy (no grad).
        advantages: (R,) one advantage per rollout.
        mask: (R, T) 1 on response tokens.
        clip_low, clip_high: clip range ``[1 - clip_low, 1 + clip_high]`` (recipe: 0.2 / 0.28).
        dual_clip: bound c > 1 of the loss for negative advantages (recipe: 10); None disables it.
        token_count: denominator of the token mean (default ``mask.sum()``). A rollout whose advantage
            is 0 adds exactly 0 to the loss and its gradient, so a caller may leave such rollouts out of
            ``logprobs`` and pass the token count of the whole batch here: same loss, same gradient,
            less compute. The stats are then over the rollouts given.

    Returns:
        (scalar loss, stats) with stats ``actor/clipfrac``, ``actor/approx_kl``, ``actor/ratio_mean``.
    """
    check_real("clip_low", clip_low, low=0.0, high=1.0)
    check_real("clip_high", clip_high, low=0.0)
    if dual_clip is not None:
        check_real("dual_clip", dual_clip, low=1.0, open_low=True)
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape or advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"shapes must be logprobs/old_logprobs/mask (R, T) and advantages (R,); got {tuple(logprobs.shape)}, "
            f"{tuple(old_logprobs.shape)}, {tuple(mask.shape)}, {tuple(advantages.shape)}"
        )
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
    total = denom if token_count is None else torch.as_tensor(max(float(token_count), 1.0), dtype=m.dtype)
    loss = (per_token * m).sum() / total  # token-mean over the whole batch
    with torch.no_grad():
        stats = {
            "actor/clipfrac": float(((clipped > unclipped).to(m.dtype) * m).sum() / denom),
            "actor/approx_kl": float((0.5 * log_ratio.pow(2) * m).sum() / denom),
            "actor/ratio_mean": float((ratio * m).sum() / denom),
        }
    return loss, stats
