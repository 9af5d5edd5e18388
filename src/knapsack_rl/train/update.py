"""The update phase of a step: PPO-clip on the step's rollouts, grouped by prompt.

:func:`update_policy` runs ``ppo_epochs`` passes of ``ppo_mini_batches`` mini-batches (prompts split
into mini-batches, every rollout of a prompt in the same one). Per mini-batch the loss is
``sum_{r,t} w_{r,t} l_{r,t}`` with the aggregation weights of
:func:`knapsack_rl.grpo.loss.aggregation_weights` computed over the whole mini-batch; rollouts whose
advantage is exactly 0 add 0 to the loss and its gradient, so their forward and backward passes are
skipped (the weights keep them in the denominator: same loss, same gradient).

**Cost follows the useful tokens** (each measure keeps the loss and every gradient equal to those of
the padded full-sequence forward of :func:`knapsack_rl.grpo.loss.token_logprobs`; tested in
tests/train/test_update.py):

- identical rollouts (same tokens, masks and advantage) are computed once, weighted by their copies
  (:func:`distinct_rows`; a small model sampling short answers repeats itself a lot);
- the rollouts of a prompt share its prompt tokens: :func:`response_logprobs` runs each distinct
  prompt once (columns no prompt uses dropped) and copies its key/value cache to its rollouts;
  autograd flows through the copy (its backward sums the rollouts' gradients into the prompt);
- the response tokens run on that cache in buckets of similar length (:func:`length_buckets`), each
  cut to its longest response, so padding after short responses is not computed;
- only the positions that predict a response token go through the output head.
"""

from __future__ import annotations

import copy
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
    pass_overhead_tokens: int = 64
    """Fixed cost of one forward/backward pass in response tokens: response rows are split into length
    buckets when a bucket saves more padded tokens than this (:func:`length_buckets`). 64 measured best
    of {0, 32, 64, 128, one bucket} for the tiny model on CPU; a GPU, where a pass's launch overhead
    dominates small batches, wants more. Changes speed only, never the loss or the gradient."""

    @classmethod
    def of(cls, config: Any) -> UpdateSettings:
        """The fields of this dataclass read from a config (e.g. a TrainConfig); fields it lacks keep their default."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__ if hasattr(config, name)})


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


def response_logprobs(model: Any, batch: SharedPrefixBatch, *, pass_overhead_tokens: int = 64) -> torch.Tensor:
    """``log pi(y_t | x, y_<t)`` of every response token of ``batch``; shape (R, T).

    Entries past a row's response (``response_attn`` 0) are unspecified (0 or a prediction from padding).

    A forward pass on the P distinct prompts (only the last position's logits are computed: it
    predicts the first response token), then passes on the rows' response tokens ``y_0 .. y_{n-2}``
    (each predicts the next one) on the prompts' key/value cache indexed to the rows
    (``cache[prompt_of]``). Positions count real tokens (``cumsum(mask) - 1``), as in a full forward.

    The response passes run on buckets of rows of similar response length n (:func:`length_buckets`),
    each cut to its longest response, so padding after short responses is not computed; a bucket
    costs a pass, worth ``pass_overhead_tokens`` tokens.
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
    lengths = _last_true(batch.response_attn).clamp(min=1)  # (R,) response length n of each row
    buckets = length_buckets(lengths, pass_overhead_tokens if _copyable(out.past_key_values) else 1 << 60)
    parts = []
    for i, (rows, width) in enumerate(buckets):
        if width == 1:  # one-token responses: the prompt pass predicted them
            parts.append(logp.new_zeros(len(rows), 0))
            continue
        cache = out.past_key_values if i == len(buckets) - 1 else _shallow_copy(out.past_key_values)
        cache = select_cache_rows(cache, batch.prompt_of.index_select(0, rows))  # backward sums per prompt
        parts.append(_response_pass(model, batch, rows, width, cache))  # (B, width - 1)
    rest = torch.cat([torch.nn.functional.pad(p, (0, length - 1 - p.shape[1])) for p in parts])  # bucket order
    order = torch.cat([rows for rows, _ in buckets])
    rest = rest.index_select(0, torch.argsort(order))  # (R, T - 1) back in row order
    return torch.cat([logp, rest], dim=1)


def _response_pass(model: Any, batch: SharedPrefixBatch, rows: torch.Tensor, width: int, cache: Any) -> torch.Tensor:
    """Log-probabilities of ``y_1 .. y_{width-1}`` of ``rows`` given their prompts' ``cache``; (B, width - 1)."""
    ids = batch.response_ids.index_select(0, rows)[:, :width]  # (B, width)
    prompt_mask = batch.prompt_mask.index_select(0, batch.prompt_of.index_select(0, rows))
    attn = torch.cat([prompt_mask, batch.response_attn.index_select(0, rows)[:, : width - 1]], dim=1)
    logits = model(
        input_ids=ids[:, :-1],
        attention_mask=attn,
        position_ids=position_ids_from_mask(attn)[:, -(width - 1) :],
        past_key_values=cache,
        use_cache=True,
    ).logits  # (B, width - 1, V)
    return _log_softmax(logits).gather(-1, ids[:, 1:, None]).squeeze(-1)


def length_buckets(lengths: torch.Tensor, pass_overhead_tokens: int) -> list[tuple[torch.Tensor, int]]:
    """Rows grouped by length to minimise ``sum_b rows_b * (width_b - 1) + pass_overhead_tokens * passes``.

    ``lengths`` (R,) >= 1; a bucket of width w holds rows of length <= w and costs a pass on w - 1
    tokens per row (none when w = 1). Optimal over buckets that are ranges of the sorted lengths
    (dynamic programme over the K distinct lengths, O(K^2)). Returns (rows (B,), width) pairs.
    """
    values, counts = torch.unique(lengths, return_counts=True)  # ascending
    u, c = values.tolist(), counts.tolist()
    best = [0.0] + [float("inf")] * len(u)  # best[j]: cost of the j shortest lengths
    cut = [0] * (len(u) + 1)
    for j in range(1, len(u) + 1):
        for i in range(j):
            rows = sum(c[i:j])
            cost = best[i] + rows * (u[j - 1] - 1) + (pass_overhead_tokens if u[j - 1] > 1 else 0)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    bounds, j = [], len(u)
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    out = []
    for i, j in reversed(bounds):
        rows = torch.nonzero((lengths > (u[i - 1] if i else 0)) & (lengths <= u[j - 1])).squeeze(-1)
        out.append((rows, int(u[j - 1])))
    return out


def _last_true(mask: torch.Tensor) -> torch.Tensor:
    """(R,) one past the last non-zero column of each row of ``mask`` (R, T); 0 for an all-zero row."""
    cols = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.ne(0) * cols).amax(-1) if mask.shape[1] else mask.new_zeros(mask.shape[0])


def _copyable(cache: Any) -> bool:
    """Whether ``cache`` has only plain growing layers (so :func:`_shallow_copy` gives an independent cache)."""
    from transformers.cache_utils import DynamicLayer

    layers: list[Any] = getattr(cache, "layers", None) or []
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _shallow_copy(cache: Any) -> Any:
    """A cache object sharing ``cache``'s tensors whose layers can be re-indexed without touching ``cache``."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    return out


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
        old = _old_logprobs(model, rollouts, adv, settings.pass_overhead_tokens)
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

    Identical rollouts (same tokens, masks and advantage: :func:`distinct_rows`) have identical
    per-token losses, so each distinct one is computed once: its weight is the sum of its copies'
    weights and its mask counts its copies (``mask * k`` with weights ``w_sum / k``: the loss
    ``sum w_sum l`` and the statistics' token counts are those of all the copies).
    Without a row to forward, the gradients are set to zero here and the loss is a constant 0.
    """
    mask = rollouts.response_mask[rows]  # (B, T)
    weights = aggregation_weights(mask, rollouts.prompt_index[rows], settings.loss_agg)  # over the whole mini-batch
    active = adv[rows] != 0  # A = 0 adds exactly 0 to loss and gradient: skip its forward
    length = _response_length(mask[active])
    if length == 0:
        return _zero_gradient(model)
    r = rows[active]
    first, inverse, copies = distinct_rows(rollouts, adv, r)  # (U,), (Ba,), (U,)
    w = torch.zeros(len(first), length, dtype=weights.dtype, device=weights.device)
    w.index_add_(0, inverse, weights[active, :length])  # (U, length) summed over copies
    k = copies[:, None].to(w.dtype)
    u = r.index_select(0, first)  # (U,) one row of each distinct rollout
    logp = response_logprobs(
        model, SharedPrefixBatch.of(rollouts, u, length), pass_overhead_tokens=settings.pass_overhead_tokens
    )  # (U, length)
    old_u = logp.detach() if old is None else old[u, :length]
    return ppo_clip_loss(
        logp, old_u, adv[u], rollouts.response_mask[u, :length] * k, clip_low=settings.clip_low,
        clip_high=settings.clip_high, dual_clip=settings.dual_clip, weights=w / k,
    )  # fmt: skip


def distinct_rows(rollouts: Rollouts, adv: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Group ``rows`` (B,) into distinct rollouts: equal tokens, attention and response masks, and advantage.

    Returns ``first`` (U,) the position in ``rows`` of each group's first row, ``inverse`` (B,) each
    row's group and ``copies`` (U,) the group sizes. A small model sampling short answers repeats
    itself often (the demo's steps: 2.5-7 copies per distinct rollout); long free-form responses
    rarely do, and then this costs one sort of the rows.
    """
    bits = adv.index_select(0, rows).to(torch.float64).view(torch.int64)[:, None]  # the advantage, exactly
    key = torch.cat(
        [rollouts.input_ids[rows], rollouts.attention_mask[rows], rollouts.response_mask[rows], bits], dim=1
    )  # (B, K) int64
    _, inverse, copies = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    position = torch.arange(len(rows), device=rows.device)
    first = torch.full_like(copies, len(rows)).scatter_reduce_(0, inverse, position, reduce="amin")
    return first, inverse, copies


def _old_logprobs(model: Any, rollouts: Rollouts, adv: torch.Tensor, overhead: int) -> torch.Tensor:
    """(R, T) log-probabilities of the sampling policy for the non-zero-advantage rows (0 elsewhere).

    Computed once per distinct rollout (:func:`distinct_rows`) and copied to its copies.
    """
    mask = rollouts.response_mask
    old = torch.zeros(mask.shape, dtype=torch.float32, device=adv.device)
    rows = torch.nonzero(adv != 0).squeeze(-1)
    length = _response_length(mask[rows])
    if length == 0:
        return old
    first, inverse, _ = distinct_rows(rollouts, adv, rows)
    with torch.no_grad():
        batch = SharedPrefixBatch.of(rollouts, rows.index_select(0, first), length)
        old_rows = response_logprobs(model, batch, pass_overhead_tokens=overhead)  # (U, length)
    old = old.to(old_rows.dtype)
    old[rows, :length] = old_rows.index_select(0, inverse)
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
