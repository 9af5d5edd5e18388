"""The reference trainer: budgets, cold start, both arms' metrics, two-phase steps, plans through the Planner."""

import json

import numpy as np
import pytest
import torch

from knapsack_rl import Planner
from knapsack_rl.models import TinyModelConfig
from knapsack_rl.tasks import TaskConfig, register_reward
from knapsack_rl.train.trainer import Trainer
from tests.train.tiny_run import tiny_config

torch.set_num_threads(1)


@register_reward("test_odd_first_char", in_process=True)
def _odd_first_char(responses, answers):
    """A reward the untrained tiny model gets right about half the time (mixed groups, real estimates)."""
    return np.array([float(bool(r) and r[0] in "13579+=") for r in responses])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    return tiny_config(root, reward="test_odd_first_char", layers=2, epochs=3, eval_every=2, checkpoint_every=2,
                       threads=1)  # fmt: skip


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


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
        assert np.isfinite(r["actor/loss"]) and 0 <= r["train/effective_prompts"] <= 8
        for key in ("timing_s/generate", "timing_s/update", "timing_s/plan", "alloc/solve_s", "perf/rollouts_per_s"):
            assert key in r
    epoch0 = [r for r in rows if r["train/epoch"] == 0]
    later = [r for r in rows if r["train/epoch"] >= 1]
    assert all(r["alloc/budget_max"] == r["alloc/budget_min"] == 4 for r in epoch0)  # cold start: uniform
    assert any(r["alloc/budget_max"] > 4 for r in later)  # estimates move budget from epoch 1
    allocs = [json.loads(line) for line in (tmp_path / "k" / "allocations.jsonl").read_text().splitlines()]
    assert [a["step"] for a in allocs] == list(range(1, 7)) and all(sum(a["budget"]) == 32 for a in allocs)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True))
    evals = [r for r in _rows(tmp_path / "k") if "eval/mean@2" in r]
    assert [r["step"] for r in evals] == [0, 2, 4, 6] and all(f"eval/mean@2/{lv}" in evals[-1] for lv in ("L1", "L8"))
    saved = json.loads((tmp_path / "k" / "config.json").read_text())
    assert saved["knapsack"]["allocation"]["negative_n"] == 1 and saved["rule"] == "knapsack"
    assert list((tmp_path / "k" / "tb").iterdir())


def test_both_arms_log_the_same_keys(base, tmp_path):
    keys = {}
    for rule in ("uniform", "knapsack"):
        cfg = base.replace(out_dir=str(tmp_path / rule), rule=rule, eval_every=0, max_steps=4)
        Trainer(cfg).train()
        rows = _rows(tmp_path / rule)
        keys[rule] = {k for r in rows for k in r if not k.startswith("timing_s/")}
        if rule == "uniform":
            assert all(r["alloc/budget_max"] == r["alloc/budget_min"] == 4 for r in rows)
    assert keys["uniform"] == keys["knapsack"]


@pytest.mark.parametrize("changes", [{}, {"value": "nonzero", "prior": "population"}], ids=["project", "signal"])
def test_trainer_plans_equal_planner_plans(base, tmp_path, changes):
    """Issue 10 must-show: the trainer constructs allocations only through Planner (same inputs, same epoch);
    also with the population prior, which the planner refits from the tracker at every plan."""
    base = base.replace(knapsack=base.knapsack.replace(**changes))
    trainer = Trainer(base.replace(out_dir=str(tmp_path / "p"), eval_every=0))
    for _ in range(3):
        trainer.step()
    mirror = Planner(base.knapsack)
    mirror.load_state_dict(trainer.planner.state_dict())
    index, epoch = trainer.stream.peek(base.prompts_per_step)  # the next step's batch, not taken
    expected = mirror.plan(trainer.train_set.ids[index], epoch=epoch)
    trainer.step()
    assert trainer.planner.last is not None
    assert trainer.planner.last.allocation.budgets.tolist() == expected.budgets.tolist()
    assert trainer.epoch == 2 and expected.budgets.sum() == 32


def test_two_phase_step_probes_then_spends_the_rest(base, tmp_path):
    cfg = base.replace(out_dir=str(tmp_path / "tp"), probe_n=2, uniform_epochs=0, eval_every=0, max_steps=2)
    Trainer(cfg).train()
    rows = _rows(tmp_path / "tp")
    assert rows[0]["alloc/probe_rollouts"] == 16  # 8 prompts without an estimate, 2 each
    assert all(r["train/rollouts"] == 32 and r["alloc/budget_total"] == 32 for r in rows)


def test_loss_aggregations_train(base, tmp_path):
    for agg in ("seq-mean-token-mean", "group-mean"):
        Trainer(base.replace(out_dir=str(tmp_path / agg), loss_agg=agg, eval_every=0, max_steps=2)).train()
        assert all(np.isfinite(r["actor/loss"]) for r in _rows(tmp_path / agg))


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
    data, eval_data = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_data.write_text("".join(json.dumps({**r, "extra_info": {**r["extra_info"], "index": 200 + i}}) + "\n"
                                 for i, r in enumerate(rows)))  # fmt: skip
    task = TaskConfig(source="file", data=str(data), eval_data=str(eval_data), reward="exact")
    cfg = base.replace(out_dir=str(tmp_path / "run"), model=str(model_dir), task=task, prompts_per_step=4, max_steps=3)
    trainer = Trainer(cfg)
    assert trainer.train_set.ids.tolist() == list(range(100, 108))
    trainer.train()
    logged = _rows(tmp_path / "run")
    assert [r["step"] for r in logged] == [0, 1, 2, 3]
    assert "eval/mean@2/easy" in logged[-1] and "eval/mean@2/hard" in logged[-1]
    seen = json.loads((tmp_path / "run" / "allocations.jsonl").read_text().splitlines()[0])
    assert sum(seen["budget"]) == 16
