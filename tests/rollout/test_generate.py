import numpy as np
import pytest
import torch

from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from knapsack_rl.rollout import generate, position_ids_from_mask
from knapsack_rl.rollout.generate import take_rows

torch.set_num_threads(1)
PROMPTS = ["1+2=", "47+85=", "9*9="]


@pytest.fixture(scope="module")
def policy():
    tok = build_char_tokenizer()
    return build_tiny_model(tok, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2), seed=0), tok


def test_exact_counts_flat_layout(policy):
    model, tok = policy
    counts = np.array([3, 0, 5])
    out = generate(model, tok, PROMPTS, counts, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert len(out) == 8 and len(out.texts) == 8
    assert np.bincount(out.prompt_index.numpy(), minlength=3).tolist() == [3, 0, 5]
    assert out.input_ids.shape[0] == out.response_mask.shape[0] == 8
    # every rollout starts with its own prompt's tokens (left padded)
    for j, i in enumerate(out.prompt_index.tolist()):
        prompt_ids = tok(PROMPTS[i])["input_ids"]
        assert out.input_ids[j, out.prompt_len - len(prompt_ids) : out.prompt_len].tolist() == prompt_ids
    # the response mask is a prefix and stops right after EOS
    resp, mask = out.response_ids, out.response_mask
    for j in range(8):
        n = int(mask[j].sum())
        assert mask[j, :n].all() and not mask[j, n:].any()
        eos = (resp[j, :n] == tok.eos_token_id).nonzero()
        assert eos.numel() == 0 or int(eos[0]) == n - 1


def test_seeded_generator_is_reproducible(policy):
    model, tok = policy
    counts = np.array([4, 4, 4])
    a = generate(model, tok, PROMPTS, counts, generator=torch.Generator().manual_seed(5))
    b = generate(model, tok, PROMPTS, counts, generator=torch.Generator().manual_seed(5))
    c = generate(model, tok, PROMPTS, counts, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.input_ids, c.input_ids)


def test_kv_cache_greedy_matches_full_forward(policy):
    model, tok = policy
    out = generate(model, tok, PROMPTS, np.array([1, 1, 1]), max_new_tokens=4, temperature=0.0)
    ids = out.input_ids[:, : out.prompt_len]
    mask = out.attention_mask[:, : out.prompt_len]
    for _ in range(out.response_ids.shape[1]):  # no cache: recompute the whole sequence each token
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    full = ids[:, out.prompt_len :]
    keep = out.response_mask.bool()
    assert torch.equal(full[keep], out.response_ids[keep])


def test_bad_counts():
    tok = build_char_tokenizer()
    with pytest.raises(ValueError, match="counts must be 2 non-negative integers"):
        generate(None, tok, ["1+1=", "2+2="], np.array([1, -1]))


def _reference_generate(model, tok, prompts, counts, max_new_tokens, temperature, generator):
    """The plain algorithm: every row's whole prompt through the model, one token for every row per step
    (finished rows too) on a cache grown by concatenation, until all rows stopped."""
    enc = tok(list(prompts), return_tensors="pt", padding=True)
    index = torch.repeat_interleave(torch.arange(len(prompts)), torch.as_tensor(counts))
    ids, mask = enc["input_ids"][index], enc["attention_mask"][index]
    done = torch.zeros(len(index), dtype=torch.bool)
    tokens, alive = [], []
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True)
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1, :]
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(-1)
        alive.append(~done)
        tokens.append(nxt)
        done = done | (nxt == tok.eos_token_id)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
            past_key_values=out.past_key_values, use_cache=True,
        )  # fmt: skip
    alive = torch.stack(alive, 1)
    response = torch.where(alive, torch.stack(tokens, 1), torch.full_like(alive, tok.pad_token_id, dtype=torch.long))
    return torch.cat([ids, response], 1), alive.long()


@pytest.fixture(scope="module")
def eos_prone(policy):
    """The tiny policy with +2 on the EOS logit: rows stop at different steps (the batch is compacted)."""
    model, tok = policy
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = 2.0
    handle = model.lm_head.register_forward_hook(lambda _m, _i, out: out + bias)
    yield model, tok
    handle.remove()


@pytest.mark.parametrize(("counts", "temperature", "max_new_tokens"), [
    ([3, 0, 5], 1.0, 6), ([8, 8, 8], 1.0, 8), ([1, 16, 2], 0.7, 5), ([4, 2, 6], 0.0, 6), ([2, 3, 1], 1.0, 1),
])  # fmt: skip
def test_same_tokens_and_masks_as_the_plain_algorithm(eos_prone, counts, temperature, max_new_tokens):
    model, tok = eos_prone
    for seed in range(3):
        got = generate(
            model, tok, PROMPTS, np.array(counts), max_new_tokens=max_new_tokens, temperature=temperature,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        ids, mask = _reference_generate(
            model, tok, PROMPTS, counts, max_new_tokens, temperature, torch.Generator().manual_seed(seed)
        )
        assert torch.equal(got.input_ids, ids) and torch.equal(got.response_mask, mask)
        assert torch.equal(got.attention_mask[:, got.prompt_len :], mask)


def test_prompts_run_once_and_finished_rows_leave_the_batch(eos_prone):
    model, tok = eos_prone
    rows = []
    handle = model.register_forward_pre_hook(lambda _m, _a, kw: rows.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        out = generate(
            model, tok, PROMPTS, np.array([20, 0, 20]), max_new_tokens=8, generator=torch.Generator().manual_seed(1)
        )
    finally:
        handle.remove()
    assert rows[0] == (2, out.prompt_len)  # prefill: the two prompts with rollouts, once each
    assert all(r[1] == 1 for r in rows[1:]) and rows[1][0] == 40  # decoding: one token per row
    sizes = [r[0] for r in rows[1:]]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 40  # finished rows were dropped
    live = out.response_mask.sum(0)  # (T,) rows still decoding at each step
    assert all(size >= int(n) for size, n in zip(sizes, live[1:], strict=False))  # never a live row dropped


def test_take_rows_keeps_layout_and_gradient():
    base = torch.randn(3, 5, 2, 4, dtype=torch.float64, requires_grad=True)
    x = base.transpose(1, 2)  # (3, 2, 5, 4) a transposed view, as attention keys are
    index = torch.tensor([2, 0, 0, 1, 2])
    got = take_rows(x, index)
    assert torch.equal(got, x.index_select(0, index)) and got.transpose(1, 2).is_contiguous()
    (got * torch.arange(got.numel()).reshape(got.shape)).sum().backward()
    grad = base.grad.clone()
    base.grad = None
    (x.index_select(0, index) * torch.arange(got.numel()).reshape(got.shape)).sum().backward()
    assert torch.equal(grad, base.grad)  # rows taken twice get both gradients
