"""The update phase of a step: PPO-clip on the step's rollouts, grouped by prompt.

:func:`update_policy` runs ``ppo_epochs`` passes of ``ppo_mini_batches`` mini-batches (prompts split
into mini-batches, every rollout of a prompt in the same one). Per mini-batch the loss is
``sum_{r,t} w_{r,t} l_{r,t}`` with the aggregation weights of
:func:`knapsack_rl.grpo.loss.aggregation_weights` computed over the whole mini-batch; rollouts whose
advantage is exactly 0 add 0 to the loss and its gradient, so their forward and backward passes are
skipped (the weights keep them in the denominator: same loss, same gradient).

**Cost follows the useful tokens.** The rollouts of a prompt share its prompt tokens, so
:func:`response_logprobs` runs the forward pass on each distinct prompt once (one row per prompt, with
the columns no prompt uses dropped), copies its key/value cache to the prompt's rollouts, and runs the
response tokens on top of it (columns past the longest response of the rows dropped). Autograd flows
through the copied cache (the copy's backward sums the rollouts' gradients into the shared prompt), so
loss and gradient equal those of the padded full-sequence forward of
:func:`knapsack_rl.grpo.loss.token_logprobs` (tests/train/test_update.py), while the prompt's tokens are
computed once per prompt instead of once per rollout and only the positions that predict a response
token go through the output head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from knapsack_rl.grpo.loss import aggregation_weights, ppo_clip_loss
from knapsack_rl.rollout.generate import Rollouts, position_ids_from_mask, select_cache_rows


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


@dataclass(frozen=True)
class SharedPrefixBatch:
    """Rows laid out for :func:`response_logprobs`: each distinct prompt once, then every row's response.

    Attributes:
        prompt_ids: (P, Lp) the distinct prompts, left-padded; columns that are padding in every one dropped.
        prompt_mask: (P, Lp) 1 on real prompt tokens.
        prompt_of: (R,) int64 row of ``prompt_ids`` holding each rollout's prompt.
        response_ids: (R, T) response tokens, right-padded; columns past the longest response dropped.
        response_attn: (R, T) attention mask of the response tokens (1 up to and including EOS).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    prompt_of: torch.Tensor
    response_ids: torch.Tensor
    response_attn: torch.Tensor

    @classmethod
    def of(cls, rollouts: Rollouts, rows: torch.Tensor, length: int) -> SharedPrefixBatch:
        """The rollouts ``rows`` (R,), their responses cut to the first ``length`` tokens.

        Rollouts share a prompt row when their prompt tokens and prompt mask are equal (so a batch
        joined by :func:`knapsack_rl.rollout.generate.concat_rollouts` shares them too).
        """
        cut = rollouts.prompt_len
        ids, attn = rollouts.input_ids[rows], rollouts.attention_mask[rows]
        prompts = torch.cat([ids[:, :cut], attn[:, :cut]], dim=1)  # (R, 2 L) a prompt's identity
        unique, prompt_of = torch.unique(prompts, dim=0, return_inverse=True)  # (P, 2 L), (R,)
        p_ids, p_mask = unique[:, :cut], unique[:, cut:]
        used = torch.nonzero(p_mask.any(0))  # columns some prompt uses (left padding: a suffix)
        start = int(used[0]) if used.numel() else cut - 1
        start = min(start, cut - 1)  # keep at least the last column (the one predicting the first token)
        return cls(
            prompt_ids=p_ids[:, start:],
            prompt_mask=p_mask[:, start:],
            prompt_of=prompt_of,
            response_ids=ids[:, cut : cut + length],
            response_attn=attn[:, cut : cut + length],
        )


def response_logprobs(model: Any, batch: SharedPrefixBatch) -> torch.Tensor:
    """``log pi(y_t | x, y_<t)`` of every response token of ``batch``; shape (R, T).

    Two forward passes: the P distinct prompts (only the last position's logits are computed: it
    predicts the first response token), then the R rows' response tokens ``y_0 .. y_{T-2}`` (each
    predicts the next one) on the prompts' key/value cache indexed to the rows
    (``cache[prompt_of]``). Positions count real tokens (``cumsum(mask) - 1``), as in a full forward.
    """
    length = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_mask,
        position_ids=position_ids_from_mask(batch.prompt_mask),
        use_cache=length > 1,
        logits_to_keep=1,
    )
    first = _log_softmax(out.logits[:, -1, :])[batch.prompt_of]  # (R, V) same for a prompt's rollouts
    logp = first.gather(-1, batch.response_ids[:, :1])  # (R, 1)
    if length == 1:
        return logp
    cache = select_cache_rows(out.past_key_values, batch.prompt_of)  # (P, ...) -> (R, ...); backward sums per prompt
    attn = torch.cat([batch.prompt_mask[batch.prompt_of], batch.response_attn[:, :-1]], dim=1)  # (R, Lp + T - 1)
    inputs = batch.response_ids[:, :-1]  # (R, T - 1)
    rest = model(
        input_ids=inputs,
        attention_mask=attn,
        position_ids=position_ids_from_mask(attn)[:, -inputs.shape[1] :],
        past_key_values=cache,
        use_cache=True,
    ).logits  # (R, T - 1, V)
    rest_logp = _log_softmax(rest).gather(-1, batch.response_ids[:, 1:, None]).squeeze(-1)  # (R, T - 1)
    return torch.cat([logp, rest_logp], dim=1)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the vocabulary, in float32 at least (half-precision logits are upcast)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1)


def update_policy(
    model: Any, optimizer: torch.optim.Optimizer, rollouts: Rollouts, adv: torch.Tensor, settings: UpdateSettings
) -> dict[str, float]:
    """PPO-clip updates on the step's rollouts; returns ``actor/*`` metrics averaged over the updates.

    With one mini-batch and one epoch the sampling policy is the current one, so the old
    log-probabilities are the current ones detached (ratio 1, as verl / TRL do) and the extra forward
    pass is skipped; otherwise they are computed once, before the first update, for the rollouts with
    a non-zero advantage (the only ones that enter a forward pass).
    """
    rollouts = _on_device(rollouts, adv.device)
    old = None
    if not (settings.ppo_mini_batches == 1 and settings.ppo_epochs == 1):  # else ratio exactly 1: no extra pass
        old = _old_logprobs(model, rollouts, adv)
    model.train()
    prompt_index = rollouts.prompt_index.cpu().numpy()
    parts = np.array_split(np.unique(prompt_index), settings.ppo_mini_batches)
    sums: dict[str, float] = {}
    updates = 0
    for _ in range(settings.ppo_epochs):
        for prompts in parts:
            rows = torch.as_tensor(np.flatnonzero(np.isin(prompt_index, prompts)), device=adv.device)
            if rows.numel() == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss, stats = _minibatch_loss(model, rollouts, adv, rows, old, settings)
            if loss.requires_grad:
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


def _minibatch_loss(
    model: Any,
    rollouts: Rollouts,
    adv: torch.Tensor,
    rows: torch.Tensor,
    old: torch.Tensor | None,
    settings: UpdateSettings,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of the mini-batch ``rows`` (weights over all its rows; forward on the non-zero-advantage ones).

    Without a row to forward, the gradients are set to zero here and the loss is a constant 0.
    """
    mask = rollouts.response_mask[rows]  # (B, T)
    weights = aggregation_weights(mask, rollouts.prompt_index[rows], settings.loss_agg)  # over the whole mini-batch
    active = adv[rows] != 0  # A = 0 adds exactly 0 to loss and gradient: skip its forward
    length = _response_length(mask[active])
    if length == 0:
        return _zero_gradient(model)
    r = rows[active]
    logp = response_logprobs(model, SharedPrefixBatch.of(rollouts, r, length))  # (Ba, length)
    old_r = logp.detach() if old is None else old[r, :length]
    return ppo_clip_loss(
        logp, old_r, adv[r], mask[active, :length], clip_low=settings.clip_low, clip_high=settings.clip_high,
        dual_clip=settings.dual_clip, weights=weights[active, :length],
    )  # fmt: skip


def _old_logprobs(model: Any, rollouts: Rollouts, adv: torch.Tensor) -> torch.Tensor:
    """(R, T) log-probabilities of the sampling policy for the non-zero-advantage rows (0 elsewhere)."""
    mask = rollouts.response_mask
    old = torch.zeros(mask.shape, dtype=torch.float32, device=adv.device)
    rows = torch.nonzero(adv != 0).squeeze(-1)
    length = _response_length(mask[rows])
    if length == 0:
        return old
    with torch.no_grad():
        old_rows = response_logprobs(model, SharedPrefixBatch.of(rollouts, rows, length))  # (Ra, length)
    old = old.to(old_rows.dtype)
    old[rows, :length] = old_rows
    return old


def _response_length(mask: torch.Tensor) -> int:
    """Columns up to the last one with a loss token in any row of ``mask`` (R, T); 0 when there is none."""
    cols = torch.nonzero(mask.any(0))  # (C, 1)
    return int(cols[-1]) + 1 if cols.numel() else 0


def _on_device(rollouts: Rollouts, device: torch.device) -> Rollouts:
    """The rollouts' tensors on ``device`` (the same object when they are there already)."""
    if rollouts.input_ids.device == device:
        return rollouts
    return Rollouts(
        prompt_index=rollouts.prompt_index.to(device),
        input_ids=rollouts.input_ids.to(device),
        attention_mask=rollouts.attention_mask.to(device),
        response_mask=rollouts.response_mask.to(device),
        prompt_len=rollouts.prompt_len,
        texts=rollouts.texts,
    )


def _zero_gradient(model: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """No rollout with a non-zero advantage: zero gradients, so the optimizer steps as on a zero loss."""
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    return torch.zeros(()), {"actor/clipfrac": 0.0, "actor/approx_kl": 0.0, "actor/ratio_mean": 1.0}
