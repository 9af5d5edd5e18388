import numpy as np
import pytest
import torch

from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from knapsack_rl.rollout import generate, position_ids_from_mask

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
