"""Generation with per-prompt counts: one batched, KV-cached sampling pass over all rollouts.

Rollout j belongs to prompt ``prompt_index[j]``; counts may differ per prompt (knapsack budgets).
Outputs are flat tensors (R = sum of counts rows), never reshaped into groups.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from knapsack_rl.core.validate import check_int, check_real

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollouts:
    """A batch of sampled rollouts, flat.

    Attributes:
        prompt_index: (R,) int64 position of each rollout's prompt in the list passed in.
        input_ids: (R, L + T) left-padded prompt tokens followed by the response tokens.
        attention_mask: (R, L + T) 1 on real prompt and response tokens (response up to and including EOS).
        response_mask: (R, T) 1 on response tokens that count in the loss (up to and including EOS).
        prompt_len: L, the padded prompt length.
        texts: R decoded responses (special tokens removed).
    """

    prompt_index: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    texts: list[str]

    @property
    def response_ids(self) -> torch.Tensor:
        """(R, T) response tokens (pad after EOS)."""
        return self.input_ids[:, self.prompt_len :]

    def __len__(self) -> int:
        return int(self.prompt_index.shape[0])


def concat_rollouts(parts: Sequence[Rollouts], pad_id: int) -> Rollouts:
    """One batch of the rollouts of several generation rounds over the same prompt list.

    ``prompt_index`` must refer to the same prompts in every part. Prompts are left-padded and
    responses right-padded to the longest of all parts (padding has attention and response mask 0).
    """
    if not parts:
        raise ValueError("concat_rollouts needs at least one batch")
    if len(parts) == 1:
        return parts[0]
    prompt_len = max(p.prompt_len for p in parts)
    resp_len = max(p.response_mask.shape[1] for p in parts)

    def pad(r: Rollouts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        left, right = prompt_len - r.prompt_len, resp_len - r.response_mask.shape[1]
        ids = torch.nn.functional.pad(r.input_ids, (left, right), value=pad_id)
        attn = torch.nn.functional.pad(r.attention_mask, (left, right), value=0)
        return ids, attn, torch.nn.functional.pad(r.response_mask, (0, right), value=0)

    padded = [pad(r) for r in parts]
    return Rollouts(
        prompt_index=torch.cat([r.prompt_index for r in parts]),
        input_ids=torch.cat([p[0] for p in padded]),
        attention_mask=torch.cat([p[1] for p in padded]),
        response_mask=torch.cat([p[2] for p in padded]),
        prompt_len=prompt_len,
        texts=[t for r in parts for t in r.texts],
    )


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens only: ``cumsum(mask) - 1`` clamped at 0; shape of ``mask``."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from ``softmax(logits / temperature)`` (greedy when temperature == 0); (B,)."""
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    counts: ArrayLike,
    *,
    max_new_tokens: int = 8,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """Sample ``counts[i]`` responses to ``prompts[i]`` for every i, in one batched pass with a KV cache.

    Every row is a prompt repeated by its count (``repeat_interleave``), left-padded; each decoding step
    feeds one new token per row and reuses the cache. A row stops at EOS; the loop ends when all rows
    stopped or after ``max_new_tokens``.

    Args:
        model: a causal LM (Hugging Face interface: ``model(input_ids, attention_mask, position_ids,
            past_key_values, use_cache)``).
        tokenizer: its tokenizer (left padding; ``pad_token_id`` and ``eos_token_id`` set).
        prompts: P prompt texts.
        counts: (P,) non-negative rollouts per prompt.
        max_new_tokens: longest response.
        temperature: sampling temperature (1.0 in training; 0 is greedy).
        generator: torch.Generator on the model's device for the sampling draws.
    """
    c = np.asarray(counts)
    if c.shape != (len(prompts),) or not np.issubdtype(c.dtype, np.integer) or (c < 0).any():
        raise ValueError(f"counts must be {len(prompts)} non-negative integers; got {c.tolist()!r:.120}")
    check_int("max_new_tokens", max_new_tokens, low=1)
    check_real("temperature", temperature, low=0.0)
    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    reps = torch.as_tensor(c, dtype=torch.long)
    prompt_index = torch.repeat_interleave(torch.arange(len(prompts)), reps)  # (R,)
    ids = enc["input_ids"][prompt_index].to(device)  # (R, L)
    mask = enc["attention_mask"][prompt_index].to(device)  # (R, L)
    response, alive = _decode(model, ids, mask, max_new_tokens, temperature, generator, tokenizer)
    response_mask = alive.long()  # (R, T) 1 up to and including EOS
    pad = tokenizer.pad_token_id
    response = torch.where(alive, response, torch.full_like(response, pad))
    texts = tokenizer.batch_decode(response.tolist(), skip_special_tokens=True)
    return Rollouts(
        prompt_index=prompt_index,
        input_ids=torch.cat([ids, response], dim=1),
        attention_mask=torch.cat([mask, response_mask], dim=1),
        response_mask=response_mask,
        prompt_len=int(ids.shape[1]),
        texts=texts,
    )


def _decode(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator | None,
    tokenizer: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling loop with a KV cache; returns (tokens (R, T), in-response mask (R, T))."""
    rows = ids.shape[0]
    if rows == 0:
        empty = torch.zeros(0, 1, dtype=torch.long, device=ids.device)
        return empty, empty.bool()
    eos = tokenizer.eos_token_id
    done = torch.zeros(rows, dtype=torch.bool, device=ids.device)  # (R,)
    tokens, alive = [], []
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True)
    for _ in range(max_new_tokens):
        nxt = _sample(out.logits[:, -1, :], temperature, generator)  # (R,)
        alive.append(~done)
        tokens.append(nxt)
        done = done | (nxt == eos)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (R, L + t)
        pos = mask.long().sum(-1, keepdim=True) - 1  # (R, 1)
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return torch.stack(tokens, dim=1), torch.stack(alive, dim=1)
