import json

import numpy as np
import pytest
import torch

from knapsack_rl.models import TinyModelConfig
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.tasks import ArithmeticConfig, register_reward
from knapsack_rl.train import TrainConfig, config_from_dict, load_config
from knapsack_rl.train.trainer import Trainer

torch.set_num_threads(1)


@register_reward("test_odd_first_char")
def _odd_first_char(responses, answers):
    """A reward the untrained tiny model gets right about half the time (mixed groups, real estimates)."""
    return np.array([float(bool(r) and r[0] in "13579+=") for r in responses])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    return TrainConfig(
        out_dir=str(root / "run"),
        warmstart_dir=str(root / "ws"),
        task=ArithmeticConfig(train_per_level=(2,) * 8, eval_per_level=1),
        tiny_model=TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2),
        warmstart=WarmStartConfig(steps=3, batch_size=8, profile_samples=2),
        reward="test_odd_first_char",
        prompts_per_step=8,
        n=4,
        epochs=3,
        min_count=4,
        max_new_tokens=4,
        eval_every=2,
        eval_k=2,
        lr=1e-3,
        checkpoint_every=2,
        tensorboard=False,
        progress=False,
        threads=1,
    )


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _no_timing(row):
    return {k: v for k, v in row.items() if not k.startswith(("timing_s/", "perf/"))}


def test_knapsack_run_budgets_and_learning(base, tmp_path):
    cfg = base.replace(out_dir=str(tmp_path / "k"), tensorboard=True)
    trainer = Trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert trainer.global_step == 6 == cfg.epochs * 2
    rows = [r for r in _rows(tmp_path / "k") if "train/effective_grad_ratio" in r]
    assert len(rows) == 6
    for r in rows:
        assert r["alloc/budget_total"] == 32 and r["train/rollouts"] == 32  # B = M x n every step
        assert np.isfinite(r["actor/loss"])
        for key in ("timing_s/generate", "timing_s/update", "perf/rollouts_per_s", "alloc/budget_max"):
            assert key in r
    epoch1 = [r for r in rows if r["train/epoch"] == 1]
    later = [r for r in rows if r["train/epoch"] >= 2]
    assert all(r["alloc/budget_max"] == r["alloc/budget_min"] == 4 for r in epoch1)  # cold start: uniform
    assert any(r["alloc/budget_max"] > 4 for r in later)  # estimates move budget from epoch 2
    allocs = [json.loads(line) for line in (tmp_path / "k" / "allocations.jsonl").read_text().splitlines()]
    assert [a["step"] for a in allocs] == list(range(1, 7)) and all(sum(a["budget"]) == 32 for a in allocs)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True))
    evals = [r for r in _rows(tmp_path / "k") if "eval/mean@2" in r]
    assert [r["step"] for r in evals] == [0, 2, 4, 6] and all(f"eval/mean@2/{lv}" in evals[-1] for lv in ("L1", "L8"))
    assert json.loads((tmp_path / "k" / "config.json").read_text())["arm"] == "knapsack"
    assert list((tmp_path / "k" / "tb").iterdir())


def test_uniform_arm_gives_n_each(base, tmp_path):
    cfg = base.replace(out_dir=str(tmp_path / "u"), arm="uniform", eval_every=0, ppo_mini_batches=2)
    Trainer(cfg).train()
    Trainer(cfg.replace(resume=False)).train()
    rows = _rows(tmp_path / "u")  # a fresh (not resumed) run into the same directory replaces the old logs
    assert len(rows) == 6 and all(r["alloc/budget_max"] == r["alloc/budget_min"] == 4 for r in rows)
    # two mini-batches: the second update is off-policy, so the ratio moves away from 1
    assert all(np.isfinite(r["actor/loss"]) for r in rows)
    assert any(abs(r["actor/ratio_mean"] - 1.0) > 1e-6 for r in rows)


def test_killed_and_resumed_run_matches_uninterrupted(base, tmp_path):
    full = base.replace(out_dir=str(tmp_path / "full"))
    Trainer(full).train()
    part = base.replace(out_dir=str(tmp_path / "part"))
    Trainer(part).train(stop_after=3)  # checkpoint at step 2; step 3 is logged, then the process "dies"
    assert len([r for r in _rows(tmp_path / "part") if r["step"] > 0]) == 3
    resumed = Trainer(part)
    assert resumed.global_step == 2
    resumed.train()
    a = [_no_timing(r) for r in _rows(tmp_path / "full")]
    b = [_no_timing(r) for r in _rows(tmp_path / "part")]
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4, 5, 6]
    assert a == b


def test_config_files_and_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("arm: uniform\nn: 4\ntask:\n  train_per_level: [1, 1, 1, 1, 1, 1, 1, 1]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.arm == "uniform" and cfg.n == 4 and cfg.task.train_per_level == (1,) * 8
    (tmp_path / "c.json").write_text(json.dumps({"seed": 3}))
    assert load_config(tmp_path / "c.json").seed == 3
    with pytest.raises(ValueError, match=r"unknown config keys \['nn'\]"):
        config_from_dict({"nn": 4})
    with pytest.raises(ValueError, match="arm must be one of"):
        TrainConfig(arm="greedy")
    with pytest.raises(ValueError, match="min_n must be >= 2"):
        TrainConfig(min_n=1)


def test_local_model_directory_and_verl_data(base, tmp_path):
    from knapsack_rl.models import build_char_tokenizer, build_tiny_model

    model_dir = tmp_path / "model"
    tok = build_char_tokenizer()
    build_tiny_model(
        tok, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2)
    ).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rows = [
        {"prompt": [{"role": "user", "content": f"{i}+1="}], "reward_model": {"ground_truth": str(i + 1)},
         "extra_info": {"index": 100 + i, "difficulty": "easy" if i < 4 else "hard"}}
        for i in range(8)
    ]  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = base.replace(
        out_dir=str(tmp_path / "run"), model=str(model_dir), data=str(data), eval_data=str(data), reward="exact",
        prompts_per_step=4, max_steps=3,
    )  # fmt: skip
    trainer = Trainer(cfg)
    assert trainer.train_set.ids.tolist() == list(range(100, 108))
    trainer.train()
    logged = _rows(tmp_path / "run")
    assert [r["step"] for r in logged] == [0, 1, 2, 3]
    assert "eval/mean@2/easy" in logged[-1] and "eval/mean@2/hard" in logged[-1]
    seen = json.loads((tmp_path / "run" / "allocations.jsonl").read_text().splitlines()[0])
    assert sum(seen["budget"]) == 16
