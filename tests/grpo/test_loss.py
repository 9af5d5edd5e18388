import pytest
import torch

from knapsack_rl.grpo import eval_metrics, ppo_clip_loss, rollout_metrics, token_logprobs
from knapsack_rl.grpo.loss import aggregation_weights
from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model

torch.set_num_threads(1)


def test_ratio_one_gives_token_mean_of_minus_advantage():
    logp = torch.zeros(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    adv = torch.tensor([1.0, -2.0, 3.0])
    loss, stats = ppo_clip_loss(logp, logp, adv, mask)
    # token-mean over all 7 tokens: (2 * -1 + 4 * 2 + 1 * -3) / 7
    assert loss.item() == pytest.approx((2 * -1 + 4 * 2 - 3) / 7)
    assert stats["actor/clipfrac"] == 0.0 and stats["actor/ratio_mean"] == pytest.approx(1.0)


def test_clip_higher_and_dual_clip_by_hand():
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[2.0], [0.5], [1.1], [20.0]]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = ppo_clip_loss(logp, old, adv, torch.ones(4, 1), clip_low=0.2, clip_high=0.28, dual_clip=10.0)
    # row 0: A>0, ratio 2 -> clipped at 1.28 -> -1.28; row 1: A>0, ratio 0.5 -> max(-0.5, -0.8) = -0.5
    # row 2: A<0, ratio 1.1 -> max(1.1, 1.1) = 1.1; row 3: A<0, ratio 20 -> min(20, dual 10) = 10
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 1.1 + 10.0) / 4, rel=1e-6)
    assert stats["actor/clipfrac"] == pytest.approx(1 / 4)
    no_dual, _ = ppo_clip_loss(logp, old, adv, torch.ones(4, 1), dual_clip=None)
    assert no_dual.item() == pytest.approx((-1.28 - 0.5 + 1.1 + 20.0) / 4, rel=1e-6)


def test_shape_and_argument_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages \\(R,\\)"):
        ppo_clip_loss(x, x, torch.zeros(3), x)
    with pytest.raises(ValueError, match=r"dual_clip must be > 1\.0"):
        ppo_clip_loss(x, x, torch.zeros(2), x, dual_clip=1.0)


def test_token_logprobs_match_manual_log_softmax():
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1))
    ids = torch.tensor([tok("12+3=15")["input_ids"]])  # prompt "12+3=" is 6 tokens with <bos>
    mask = torch.ones_like(ids)
    lp = token_logprobs(model, ids, mask, prompt_len=6)
    logits = model(ids).logits[0]
    manual = torch.log_softmax(logits, -1)[[5, 6], ids[0, [6, 7]]]
    assert lp.shape == (1, 2) and torch.allclose(lp[0], manual, atol=1e-5)


def test_eval_and_rollout_metrics():
    rewards = [1, 0, 0, 0, 1, 1]
    idx = [0, 0, 0, 1, 2, 2]
    texts = ["5", "4", "4", "x", "9", "9"]
    m = eval_metrics(rewards, idx, ["a", "b", "b"], texts, k=3)
    assert m["eval/mean@3"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["eval/best@3"] == pytest.approx(2 / 3)
    assert m["eval/maj@3"] == pytest.approx(1 / 3)  # prompt 0's majority "4" is wrong
    assert m["eval/mean@3/a"] == pytest.approx(1 / 3) and m["eval/mean@3/b"] == pytest.approx(0.5)
    r = rollout_metrics(torch.tensor([[1, 1, 0], [1, 1, 1]]), max_new_tokens=3)
    assert r == {"rollout/response_len_mean": 2.5, "rollout/response_len_max": 3.0, "rollout/truncated_ratio": 0.5}


def test_leaving_out_zero_advantage_rollouts_keeps_loss_and_gradient() -> None:
    gen = torch.Generator().manual_seed(3)
    logp_full = (torch.randn(6, 5, generator=gen) * 0.1 - 1.0).requires_grad_(True)
    old = (logp_full.detach() + torch.randn(6, 5, generator=gen) * 0.05).clone()
    adv = torch.tensor([0.0, 1.2, 0.0, -0.7, 0.0, 2.0])
    mask = (torch.rand(6, 5, generator=gen) > 0.2).float()
    full, _ = ppo_clip_loss(logp_full, old, adv, mask)
    full.backward()
    active = adv != 0
    logp_sub = logp_full.detach()[active].clone().requires_grad_(True)
    weights = aggregation_weights(mask, torch.arange(6) // 2, "token-mean")  # over the whole batch
    part, _ = ppo_clip_loss(logp_sub, old[active], adv[active], mask[active], weights=weights[active])
    part.backward()
    assert torch.allclose(part, full, atol=1e-7, rtol=0)
    assert logp_full.grad is not None and logp_sub.grad is not None
    assert torch.allclose(logp_full.grad[active], logp_sub.grad, atol=1e-8, rtol=0)
    assert torch.all(logp_full.grad[~active] == 0)  # what was left out had no gradient to give


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "group-mean"])
def test_aggregation_weights_by_hand(mode: str) -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    groups = torch.tensor([7, 7, 7, 3])  # prompt 7 has three rollouts (3 + ... tokens), prompt 3 one
    w = aggregation_weights(mask, groups, mode)
    assert float(w.sum()) == pytest.approx(1.0) and torch.all(w[mask == 0] == 0)
    expected = {
        "token-mean": [1 / 9] * 4,  # every token of the batch alike
        "seq-mean-token-mean": [1 / 8, 1 / 4, 1 / 12, 1 / 12],  # 1 / (R * T_r)
        "group-mean": [1 / 12, 1 / 12, 1 / 12, 1 / 6],  # 1 / (G * T_g): prompt 7 has 6 tokens, prompt 3 has 3
    }[mode]
    assert w[:, 0].tolist() == pytest.approx(expected)


def test_group_mean_gives_a_large_group_the_weight_of_a_small_one() -> None:
    mask = torch.ones(9, 2)
    groups = torch.tensor([0] * 8 + [1])
    w = aggregation_weights(mask, groups, "group-mean")
    assert float(w[:8].sum()) == pytest.approx(0.5) and float(w[8:].sum()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"loss_agg must be one of .*; got loss_agg='sum'"):
        aggregation_weights(mask, groups, "sum")
