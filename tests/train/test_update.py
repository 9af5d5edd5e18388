"""The update phase computes what the padded full-sequence update computes (loss and every gradient).

The reference below is the update as it was before the shared-prefix layout: every rollout's whole
padded row through the model, log-softmax over all positions, per-mini-batch aggregation weights,
zero-advantage rows left out after the weights. The model runs in float64, but transformers'
LlamaRMSNorm computes in float32 whatever the model's dtype, so every gradient passing a norm is
rounded to float32: two exact ways of summing the same gradient agree to ~1e-7 relative, not 1e-15.
Gradients are compared to 1e-6 of their largest entry; log-probabilities (no such rounding of a
sum) to 1e-12; one float32 test checks the tolerance the trainer actually sees.
"""

import copy

import numpy as np
import pytest
import torch

from knapsack_rl.grpo.loss import aggregation_weights, ppo_clip_loss
from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from knapsack_rl.rollout.generate import Rollouts, concat_rollouts, position_ids_from_mask
from knapsack_rl.train.update import (
    SharedPrefixBatch,
    UpdateSettings,
    distinct_rows,
    length_buckets,
    response_logprobs,
    update_policy,
)

torch.set_num_threads(1)
PROMPTS = ["1+2=", "47+85=", "9*9=", "(3-1)*4=", "6="]
COUNTS = [3, 1, 5, 2, 4]  # unequal groups, one of a single rollout


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def _model(tok, dtype=torch.float64):
    cfg = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2)
    return build_tiny_model(tok, cfg, seed=1).to(dtype)


def _rollouts(tok, seed=0, resp_len=6, prompts=PROMPTS, counts=COUNTS):
    """Left-padded prompts repeated by count, random responses of random lengths (right-padded).

    The first and third rollouts of a prompt are the same response (a small model repeats itself).
    """
    gen = torch.Generator().manual_seed(seed)
    enc = tok(list(prompts), return_tensors="pt", padding=True)
    index = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(counts))
    rows = len(index)
    lengths = torch.randint(1, resp_len + 1, (rows,), generator=gen)
    lengths[0] = resp_len  # one row uses every column
    response = torch.randint(4, len(tok), (rows, resp_len), generator=gen)
    starts = np.cumsum([0, *counts[:-1]])
    for start, count in zip(starts, counts, strict=True):
        if count >= 3:
            lengths[start + 2], response[start + 2] = lengths[start], response[start]
    mask = (torch.arange(resp_len)[None, :] < lengths[:, None]).long()  # (R, T) a prefix
    response = torch.where(mask.bool(), response, torch.full_like(response, tok.pad_token_id))
    return Rollouts(
        prompt_index=index,
        input_ids=torch.cat([enc["input_ids"][index], response], dim=1),
        attention_mask=torch.cat([enc["attention_mask"][index], mask], dim=1),
        response_mask=mask,
        prompt_len=enc["input_ids"].shape[1],
        texts=[""] * rows,
    )


def _advantages(rollouts, seed=0, zeros=True):
    """Random advantages, equal for equal rollouts of a prompt (as GRPO's are), some zero."""
    gen = torch.Generator().manual_seed(seed + 100)
    adv = torch.randn(len(rollouts), generator=gen, dtype=torch.float64)
    ids = rollouts.input_ids.tolist()
    for i in range(len(ids)):
        adv[i] = adv[ids.index(ids[i])]  # the first row with the same tokens
    if zeros:
        adv[1::3] = 0.0  # zero-advantage rows in several groups
        adv[rollouts.prompt_index == 3] = 0.0  # and one group without signal
    return adv


def _full_logprobs(model, ids, attn, prompt_len):
    """Reference: the whole padded row through the model; (R, T) log-probabilities of the responses."""
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    logits = logits[:, prompt_len - 1 : -1, :]
    return torch.log_softmax(logits, -1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)


def _reference_update(model, optimizer, rollouts, adv, s):
    """The padded full-sequence update (see the module docstring); returns the per-update losses."""
    ids, attn, mask, groups = rollouts.input_ids, rollouts.attention_mask, rollouts.response_mask, rollouts.prompt_index
    old = None
    if not (s.ppo_mini_batches == 1 and s.ppo_epochs == 1):
        with torch.no_grad():
            old = _full_logprobs(model, ids, attn, rollouts.prompt_len)
    model.train()
    parts = np.array_split(np.unique(groups.numpy()), s.ppo_mini_batches)
    losses = []
    for _ in range(s.ppo_epochs):
        for prompts in parts:
            rows = torch.as_tensor(np.flatnonzero(np.isin(groups.numpy(), prompts)))
            weights = aggregation_weights(mask[rows], groups[rows], s.loss_agg)
            active = adv[rows] != 0
            optimizer.zero_grad(set_to_none=True)
            if not bool(active.any()):
                for p in model.parameters():
                    p.grad = torch.zeros_like(p)
                loss = torch.zeros(())
            else:
                r = rows[active]
                logp = _full_logprobs(model, ids[r], attn[r], rollouts.prompt_len)
                old_r = logp.detach() if old is None else old[r]
                loss, _ = ppo_clip_loss(
                    logp, old_r, adv[r], mask[r], clip_low=s.clip_low, clip_high=s.clip_high,
                    dual_clip=s.dual_clip, weights=weights[active].to(logp.dtype),
                )  # fmt: skip
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return losses


class RecordingSGD(torch.optim.SGD):
    """SGD that keeps a copy of every gradient it steps on (one list entry per optimizer step)."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.seen: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        self.seen.append([p.grad.detach().clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def _run_both(tok, rollouts, adv, settings, dtype=torch.float64):
    model = _model(tok, dtype)
    ref_model = copy.deepcopy(model)
    opt, ref_opt = RecordingSGD(model.parameters(), lr=0.05), RecordingSGD(ref_model.parameters(), lr=0.05)
    metrics = update_policy(model, opt, rollouts, adv.to(dtype), settings)
    losses = _reference_update(ref_model, ref_opt, rollouts, adv.to(dtype), settings)
    return metrics, losses, opt.seen, ref_opt.seen, model, ref_model


def _assert_close(a, b, rel):
    a, b = a.detach(), b.detach()
    scale = max(float(b.abs().max()), 1e-30)
    assert float((a - b).abs().max()) <= rel * scale, (float((a - b).abs().max()), scale)


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "group-mean"])
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize(("mini_batches", "epochs", "overhead"), [(1, 1, 0), (1, 1, 10**9), (3, 2, 0), (2, 2, 64)])
def test_same_loss_and_gradients_as_the_padded_update(tok, loss_agg, zeros, mini_batches, epochs, overhead):
    """overhead 0: a response pass per length; 10**9: one pass (no buckets) -- both equal the reference."""
    rollouts = _rollouts(tok, seed=mini_batches + 7 * epochs)
    adv = _advantages(rollouts, zeros=zeros)
    settings = UpdateSettings(
        ppo_mini_batches=mini_batches,
        ppo_epochs=epochs,
        loss_agg=loss_agg,
        grad_clip=0.5,
        pass_overhead_tokens=overhead,
    )
    metrics, losses, seen, ref_seen, model, ref_model = _run_both(tok, rollouts, adv, settings)
    assert len(seen) == len(ref_seen) == mini_batches * epochs  # one optimizer step per mini-batch and epoch
    for grads, ref_grads in zip(seen, ref_seen, strict=True):  # every step's gradient of every parameter
        for g, ref in zip(grads, ref_grads, strict=True):
            _assert_close(g, ref, 1e-6)
    assert metrics["actor/loss"] == pytest.approx(np.mean(losses), rel=1e-6, abs=1e-12)
    for p, ref in zip(model.parameters(), ref_model.parameters(), strict=True):
        _assert_close(p.detach(), ref.detach(), 1e-6)
    if epochs > 1:  # the later updates are off-policy: the ratio moved, so the old log-probs were used
        assert metrics["actor/approx_kl"] > 0


def test_float32_update_matches_to_single_precision(tok):
    rollouts = _rollouts(tok, seed=3)
    adv = _advantages(rollouts)
    settings = UpdateSettings(ppo_mini_batches=2, ppo_epochs=2)
    _, _, seen, ref_seen, _, _ = _run_both(tok, rollouts, adv, settings, dtype=torch.float32)
    for grads, ref_grads in zip(seen, ref_seen, strict=True):
        for g, ref in zip(grads, ref_grads, strict=True):
            _assert_close(g, ref, 1e-5)


def test_response_logprobs_equal_the_full_forward_on_concatenated_batches(tok):
    # a probe and a rest with different prompt paddings, as the two-phase trainer joins them
    probe = _rollouts(tok, seed=1, resp_len=3, prompts=PROMPTS[:2], counts=[2, 2])
    rest = _rollouts(tok, seed=2, resp_len=5)
    both = concat_rollouts([probe, rest], tok.pad_token_id)
    model = _model(tok)
    rows = torch.arange(len(both))
    batch = SharedPrefixBatch.of(both, rows, both.response_mask.shape[1])
    assert batch.prompt_ids.shape[0] == len(PROMPTS)  # each distinct prompt once, whichever part it came from
    want = _full_logprobs(model, both.input_ids, both.attention_mask, both.prompt_len)
    keep = both.response_mask.bool()
    for overhead in (0, 3, 10**9):  # a pass per length, some buckets, one pass
        got = response_logprobs(model, batch, pass_overhead_tokens=overhead)
        _assert_close(got[keep], want[keep], 1e-12)
        if overhead == 0:  # every row in a bucket of its own length: nothing computed past a response
            assert torch.all(got[~keep] == 0)


def test_shared_prefix_batch_drops_padding_columns(tok):
    rollouts = _rollouts(tok, seed=4, resp_len=6)
    short = torch.nonzero(torch.isin(rollouts.prompt_index, torch.tensor([0, 2, 4]))).squeeze(-1)  # short prompts
    batch = SharedPrefixBatch.of(rollouts, short, 2)
    longest = max(len(tok(PROMPTS[i])["input_ids"]) for i in (0, 2, 4))
    assert batch.prompt_ids.shape == (3, longest) < (3, rollouts.prompt_len)  # columns no prompt uses are gone
    assert batch.response_ids.shape == (len(short), 2)
    prompt_cols = rollouts.input_ids[short][:, rollouts.prompt_len - longest : rollouts.prompt_len]
    assert torch.equal(batch.prompt_ids[batch.prompt_of], prompt_cols)


def test_single_token_responses_need_no_second_pass(tok):
    rollouts = _rollouts(tok, seed=5, resp_len=1)
    model = _model(tok)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    got = response_logprobs(model, SharedPrefixBatch.of(rollouts, torch.arange(len(rollouts)), 1))
    assert len(calls) == 1  # the prompt pass predicts the only response token
    want = _full_logprobs(model, rollouts.input_ids, rollouts.attention_mask, rollouts.prompt_len)
    _assert_close(got, want, 1e-12)


def test_equal_rollouts_run_once_and_weigh_as_their_copies(tok):
    rollouts = _rollouts(tok, seed=9, prompts=PROMPTS[:1], counts=[6])  # rows 0 and 2 are the same rollout
    for copy_adv, distinct in ((1.5, 5), (-0.5, 6)):  # equal advantage: merged; another: not merged
        adv = torch.tensor([1.5, 0.7, copy_adv, -1.0, 0.3, -0.2], dtype=torch.float64)
        first, inverse, copies = distinct_rows(rollouts, adv, torch.arange(6))
        assert len(first) == distinct and int(copies.sum()) == 6 and torch.equal(first[inverse[first]], first)
        assert (int(inverse[0]) == int(inverse[2])) == (distinct == 5)
        model = _model(tok)
        ref_model = copy.deepcopy(model)
        rows: list[int] = []
        model.register_forward_pre_hook(
            lambda _m, _a, kw, out=rows: out.append(kw["input_ids"].shape[0]), with_kwargs=True
        )
        settings = UpdateSettings(loss_agg="seq-mean-token-mean", pass_overhead_tokens=10**9)
        opt, ref_opt = RecordingSGD(model.parameters(), lr=0.05), RecordingSGD(ref_model.parameters(), lr=0.05)
        metrics = update_policy(model, opt, rollouts, adv, settings)
        losses = _reference_update(ref_model, ref_opt, rollouts, adv, settings)
        assert rows[0] == 1 and rows[1] == distinct  # the prompt once, each distinct rollout once
        assert metrics["actor/loss"] == pytest.approx(losses[0], rel=1e-9)
        for g, ref in zip(opt.seen[0], ref_opt.seen[0], strict=True):
            _assert_close(g, ref, 1e-6)


def test_no_signal_steps_with_zero_gradients(tok):
    rollouts = _rollouts(tok, seed=6)
    model = _model(tok)
    opt = RecordingSGD(model.parameters(), lr=0.05)
    metrics = update_policy(model, opt, rollouts, torch.zeros(len(rollouts), dtype=torch.float64), UpdateSettings())
    assert metrics["actor/loss"] == 0.0 and len(opt.seen) == 1
    assert all(torch.all(g == 0) for g in opt.seen[0])


def _brute_force_cost(lengths, overhead):
    """Cheapest split of the sorted distinct lengths into contiguous buckets, by enumerating every split."""
    values = sorted(set(lengths))
    best = float("inf")
    for mask in range(1 << (len(values) - 1)):
        cost, start = 0, 0
        for k in range(len(values)):
            if k == len(values) - 1 or mask >> k & 1:  # bucket ends after values[k]
                rows = sum(1 for x in lengths if values[start] <= x <= values[k])
                cost += rows * (values[k] - 1) + (overhead if values[k] > 1 else 0)
                start = k + 1
        best = min(best, cost)
    return best


@pytest.mark.parametrize("overhead", [0, 5, 40, 10**6])
def test_length_buckets_are_optimal_and_cover_every_row_once(overhead):
    gen = np.random.default_rng(overhead)
    for _ in range(20):
        lengths = gen.integers(1, 9, size=gen.integers(1, 40))
        buckets = length_buckets(torch.as_tensor(lengths), overhead)
        rows = torch.cat([r for r, _ in buckets]).tolist()
        assert sorted(rows) == list(range(len(lengths)))  # a partition of the rows
        assert all(int(lengths[r].max()) == w for r, w in ((r.numpy(), w) for r, w in buckets))  # width = longest
        cost = sum(len(r) * (w - 1) + (overhead if w > 1 else 0) for r, w in buckets)
        assert cost == _brute_force_cost(lengths.tolist(), overhead)


def test_length_buckets_by_hand():
    lengths = torch.tensor([3, 1, 3, 8, 3, 2])
    assert [(r.tolist(), w) for r, w in length_buckets(lengths, 0)] == [([1], 1), ([5], 2), ([0, 2, 4], 3), ([3], 8)]
    # overhead 100: one pass of width 8 (5 rows x 7 = 35 tokens) beats any split; the 1-token row needs no pass
    assert [(r.tolist(), w) for r, w in length_buckets(lengths, 100)] == [([1], 1), ([0, 2, 3, 4, 5], 8)]
