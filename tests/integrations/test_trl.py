"""KnapsackGRPOTrainer on CPU with a tiny Llama and a character tokenizer built here (no hub access)."""

from __future__ import annotations

import collections
import importlib
import math
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trl
from datasets import Dataset
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

import knapsack_rl.integrations.trl as ktrl
from knapsack_rl import allocate
from knapsack_rl.grpo import grouped_advantages
from knapsack_rl.integrations.trl import KnapsackGRPOConfig, KnapsackGRPOTrainer, batch_advantages
from knapsack_rl.integrations.trl.plan import prompt_id_of, unique_in_order
from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model

torch.set_num_threads(1)

CHARS = list("0123456789+=- ")
NUM_PROMPTS = 6
N = 4  # num_generations: the mean count per prompt


def make_tokenizer() -> PreTrainedTokenizerFast:
    """The project's character tokenizer over CHARS (knapsack_rl.models)."""
    return build_char_tokenizer("".join(CHARS))


def make_model(seed: int = 0) -> LlamaForCausalLM:
    """A ~40k-parameter Llama with the tokenizer's vocabulary."""
    return build_tiny_model(make_tokenizer(), TinyModelConfig(32, 64, 2, 4, 64), seed=seed)


def make_dataset(num: int = NUM_PROMPTS) -> Dataset:
    """Plain-text prompts ``"a+b="`` with a unique ``prompt_id`` and the answer."""
    return Dataset.from_dict(
        {
            "prompt": [f"{i}+{i % 3}=" for i in range(num)],
            "prompt_id": [100 + i for i in range(num)],
            "answer": [str(i + i % 3) for i in range(num)],
        }
    )


def make_args(tmp_path: Path, **overrides: Any) -> KnapsackGRPOConfig:
    kwargs: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "per_device_train_batch_size": 3 * N,  # 3 prompts x N per generation batch
        "num_generations": N,
        "max_completion_length": 4,
        "max_steps": 2,
        "learning_rate": 5e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "disable_tqdm": True,
        "min_n": 2,
        "max_n": 8,
        "tracker_min_count": 4,
    }
    kwargs.update(overrides)
    return KnapsackGRPOConfig(**kwargs)


def correct_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """1 if the completion starts with the answer, else 0."""
    return [float(c.strip().startswith(a)) for c, a in zip(completions, answer, strict=True)]


def make_trainer(
    tmp_path: Path, reward: Callable[..., list[float | None]] = correct_reward, **overrides: Any
) -> KnapsackGRPOTrainer:
    return KnapsackGRPOTrainer(
        model=make_model(),
        reward_funcs=reward,
        args=make_args(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )


class ScheduledReward:
    """Reward that ignores the completion: prompt ``pid``'s k-th rollout in a call gets ``table[pid][k]``.

    Records the prompt ids and rewards of every call, in rollout order.
    """

    __name__ = "scheduled_reward"

    def __init__(self, table: dict[int, list[float | None]]) -> None:
        self.table = table
        self.calls: list[tuple[list[int], list[float | None]]] = []

    def __call__(self, completions: list[str], prompt_id: list[int], **_: Any) -> list[float | None]:
        seen: collections.Counter[int] = collections.Counter()
        out: list[float | None] = []
        for pid in prompt_id:
            row = self.table[pid]
            out.append(row[seen[pid] % len(row)])
            seen[pid] += 1
        self.calls.append((list(prompt_id), out))
        return out


def repeat_rows(dataset: Dataset, ids: list[int]) -> list[dict[str, Any]]:
    """The generation batch TRL's RepeatSampler yields: each row N times, consecutively."""
    by_id = {row["prompt_id"]: row for row in dataset}
    return [dict(by_id[i]) for i in ids for _ in range(N)]


# ---------------------------------------------------------------------------------------------- config


def test_config_rejects_mean_count_outside_bounds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"num_generations \(the mean count N\) must lie in \[min_n, max_n\]"):
        make_args(tmp_path, min_n=6, max_n=8)
    with pytest.raises(ValueError, match="allocation must be one of"):
        make_args(tmp_path, allocation="greedy")
    with pytest.raises(ValueError, match="min_n must be >= 2"):
        make_args(tmp_path, min_n=1)


def test_version_check_names_supported_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trl, "__version__", "1.17.0")
    monkeypatch.delenv("KNAPSACK_RL_TRL_ANY_VERSION", raising=False)
    with pytest.raises(ImportError, match=r"supports trl<1.17,>=1.16 but trl==1.17.0 is installed"):
        importlib.reload(ktrl)
    monkeypatch.setattr(trl, "__version__", "1.16.0")
    importlib.reload(ktrl)
    assert str(ktrl.SUPPORTED_TRL) == "<1.17,>=1.16"


# ---------------------------------------------------------------------------------------------- helpers


def test_prompt_id_of_reads_nested_column_and_names_missing_key() -> None:
    assert prompt_id_of({"extra_info": {"index": np.int64(7)}}, "extra_info.index") == 7
    with pytest.raises(ValueError, match=r"key 'index' not found in a training row \(available: \['split'\]\)"):
        prompt_id_of({"extra_info": {"split": "train"}}, "extra_info.index")
    with pytest.raises(ValueError, match=r"ids must be int or str; got 1\.5"):
        prompt_id_of({"prompt_id": 1.5}, "prompt_id")


def test_unique_in_order_rejects_shared_ids() -> None:
    ids, first = unique_in_order([5, 5, 3, 3, 9, 9], 2)
    assert ids == [5, 3, 9] and first.tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="prompt id 5 occurs 4 times in a generation batch built with num_gen"):
        unique_in_order([5, 5, 5, 5, 3, 3], 2)


def test_batch_advantages_ignores_nan_rows_and_matches_reference() -> None:
    rewards = torch.tensor([1.0, 0.0, float("nan"), 1.0, 0.5, 0.5, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    adv = batch_advantages(rewards, groups, eps=1e-4)
    ok = ~torch.isnan(rewards)
    ref = grouped_advantages(rewards[ok], groups[ok], eps=1e-4)
    torch.testing.assert_close(adv[ok], ref)
    assert adv[2].item() == 0.0 and adv[4].item() == 0.0  # unscorable row, zero-std group
    centred = batch_advantages(rewards, groups, scale_rewards="none")
    torch.testing.assert_close(centred[:2], torch.tensor([1 / 3, -2 / 3]))


# ---------------------------------------------------------------------------------------------- construction


def test_missing_or_duplicate_prompt_ids_fail_at_construction(tmp_path: Path) -> None:
    tok, args = make_tokenizer(), make_args(tmp_path)
    no_ids = make_dataset().remove_columns("prompt_id")
    with pytest.raises(ValueError, match="train_dataset has no column 'prompt_id'"):
        KnapsackGRPOTrainer(
            model=make_model(), reward_funcs=correct_reward, args=args, train_dataset=no_ids, processing_class=tok
        )
    dup = make_dataset().map(lambda x: {"prompt_id": x["prompt_id"] % 4})
    with pytest.raises(ValueError, match=r"dataset column 'prompt_id'\[4\]=0 appears more than once"):
        KnapsackGRPOTrainer(
            model=make_model(), reward_funcs=correct_reward, args=args, train_dataset=dup, processing_class=tok
        )


def test_unsupported_trl_features_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="normalize_then_sum' is not supported"):
        make_trainer(tmp_path, multi_objective_aggregation="normalize_then_sum")
    with pytest.raises(ValueError, match="args must be a KnapsackGRPOConfig; got GRPOConfig"):
        KnapsackGRPOTrainer(
            model=make_model(),
            reward_funcs=correct_reward,
            args=trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none"),
            train_dataset=make_dataset(),
            processing_class=make_tokenizer(),
        )


# ---------------------------------------------------------------------------------------------- behaviour


def test_counts_are_allocated_and_advantages_grouped_by_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requested_n: list[int] = []
    original = trl.GRPOTrainer._generate_single_turn

    def spy(self: Any, prompt_ids: Any, images: Any, fields: Any, num_generations: int, *rest: Any) -> Any:
        requested_n.append(num_generations)
        return original(self, prompt_ids, images, fields, num_generations, *rest)

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_single_turn", spy)
    table: dict[int, list[float | None]] = {
        100: [1.0, 0.0, 0.0, 0.0],  # hard
        101: [1.0, 1.0, 1.0, 0.0],  # easy
        102: [0.0],  # never solved
        103: [1.0, None, 0.0, 1.0],  # one unscorable rollout
    }
    reward = ScheduledReward(table)
    trainer = make_trainer(tmp_path, reward=reward, per_device_train_batch_size=4 * N)
    trainer.model.train()
    ids = [100, 101, 102, 103]
    # Seed the tracker with estimates 0.2, 0.8, 0 and 0.5 (8 rewards each, min_count 4).
    for pid, p in zip(ids, [0.2, 0.8, 0.0, 0.5], strict=True):
        trainer.tracker.update([pid] * 10, (np.arange(10) < 10 * p).astype(float), epoch=0, step=0)
    expected = allocate(trainer.tracker.estimate(ids), total_budget=4 * N, **trainer.args.allocate_kwargs())
    assert not np.all(expected.budgets == N)  # the test is only meaningful with unequal counts

    out = trainer._generate_and_score_completions(repeat_rows(trainer.train_dataset, ids))

    called_ids, called_rewards = reward.calls[-1]
    counts = collections.Counter(called_ids)
    assert [counts[i] for i in ids] == expected.budgets.tolist()
    assert len(called_ids) == 4 * N  # TRL's batch size is unchanged
    rewards = torch.tensor([math.nan if r is None else r for r in called_rewards])
    ok = ~torch.isnan(rewards)
    groups = torch.tensor(called_ids)
    ref = torch.zeros(len(called_ids))
    ref[ok] = grouped_advantages(rewards[ok], groups[ok], eps=1e-4)
    torch.testing.assert_close(out["advantages"], ref)
    assert trainer.last_plan is not None and trainer.last_plan.budgets.tolist() == expected.budgets.tolist()
    # the tracker saw every scorable rollout once more
    assert trainer.tracker.counts(ids).tolist() == [
        10 + b - (i == 103) for i, b in zip(ids, expected.budgets, strict=True)
    ]
    assert trainer._metrics["train"]["alloc/budget_max"] == [float(expected.budgets.max())]
    assert "train/effective_grad_ratio" in trainer._metrics["train"]
    assert requested_n == [1]  # one completion per row (what keeps vLLM server mode per-prompt correct)


def test_uniform_counts_give_stock_grpo_advantages(tmp_path: Path) -> None:
    table: dict[int, list[float | None]] = {
        100: [1.0, 0.0, 0.5, 0.0],
        101: [1.0, 1.0, 1.0, 1.0],
        102: [0.0, None, 1.0, 1.0],
    }
    ids = [100, 101, 102]
    outs, calls = [], []
    for cls in (trl.GRPOTrainer, KnapsackGRPOTrainer):
        reward = ScheduledReward(table)
        args = make_args(tmp_path) if cls is KnapsackGRPOTrainer else trl.GRPOConfig(**_stock_kwargs(tmp_path))
        trainer = cls(
            model=make_model(),
            reward_funcs=reward,
            args=args,
            train_dataset=make_dataset(),
            processing_class=make_tokenizer(),
        )
        trainer.model.train()
        outs.append(trainer._generate_and_score_completions(repeat_rows(trainer.train_dataset, ids)))
        calls.append(reward.calls[-1])
    assert calls[0] == calls[1]  # same rollout order, same rewards
    assert not torch.all(outs[0]["advantages"] == 0)
    torch.testing.assert_close(outs[1]["advantages"], outs[0]["advantages"])


def _stock_kwargs(tmp_path: Path) -> dict[str, Any]:
    args = make_args(tmp_path)
    keep = ("output_dir", "use_cpu", "per_device_train_batch_size", "num_generations", "max_completion_length", "seed")
    return {k: getattr(args, k) for k in keep} | {"report_to": "none"}


def parity_reward(completions: list[str], **_: Any) -> list[float]:
    """1 if the completion starts with an even digit or '+': a mix of successes for an untrained model."""
    return [float(len(c) > 0 and c[0] in "02468+") for c in completions]


def test_training_steps_update_parameters_tracker_and_metrics(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, reward=parity_reward, max_steps=4, tracker_min_count=2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert changed > 0
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 4 and all(math.isfinite(h["loss"]) for h in steps)
    for key in ("alloc/budget_max", "alloc/unestimated_ratio", "train/effective_grad_ratio", "tracker/prompts"):
        assert all(key in h for h in steps), key
    assert all(h["alloc/budget_total"] == 3 * N and h["alloc/budget_mean"] == N for h in steps)
    assert steps[0]["alloc/unestimated_ratio"] == 1.0  # epoch 1 has no estimates: plain GRPO
    assert any(h["alloc/budget_max"] > h["alloc/budget_min"] for h in steps[2:])  # epoch 2: unequal counts
    assert len(trainer.tracker) == NUM_PROMPTS


class FakeProcessGroup:
    """``gather_object`` across threads standing in for processes (rank per thread)."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world)
        self.slots: list[list[Any]] = [[] for _ in range(world)]
        self.local = threading.local()

    def gather_object(self, obj: list[Any]) -> list[Any]:
        self.slots[self.local.rank] = obj
        self.barrier.wait()
        out = [x for slot in self.slots for x in slot]
        self.barrier.wait()
        return out


def _plan_on_two_fake_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rates: list[list[float]]
) -> tuple[list[KnapsackGRPOTrainer], list[Any]]:
    """Run ``_plan`` on two trainers in threads standing in for ranks 0 and 1; ``rates[r]`` seeds rank r's tracker."""
    ids = [100, 101, 102, 103, 104, 105]
    trainers = [make_trainer(tmp_path, per_device_train_batch_size=3 * N) for _ in range(2)]
    for t, ps in zip(trainers, rates, strict=True):
        for pid, p in zip(ids, ps, strict=True):
            t.tracker.update([pid] * 10, (np.arange(10) < 10 * p).astype(float), epoch=0, step=0)
    group = FakeProcessGroup(2)
    monkeypatch.setattr("knapsack_rl.integrations.trl.trainer.gather_object", group.gather_object)
    batch = repeat_rows(trainers[0].train_dataset, ids)  # 24 rows; prompt 102's copies sit on both ranks
    results: list[Any] = [None, None]

    def run(rank: int) -> None:
        group.local.rank = rank
        trainers[rank].accelerator = types.SimpleNamespace(process_index=rank)
        try:
            results[rank] = trainers[rank]._plan(batch[rank * 3 * N : (rank + 1) * 3 * N])
        except RuntimeError as exc:
            results[rank] = exc

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    return trainers, results


def test_two_processes_agree_on_counts_and_split_the_rebuilt_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = [0.1, 0.5, 0.9, 0.3, 0.0, 1.0]
    trainers, results = _plan_on_two_fake_processes(tmp_path, monkeypatch, [rates, rates])
    (plan0, rows0), (plan1, rows1) = results
    ids = [100, 101, 102, 103, 104, 105]
    expected = allocate(trainers[0].tracker.estimate(ids), total_budget=6 * N, **trainers[0].args.allocate_kwargs())
    assert plan0.prompt_ids == plan1.prompt_ids == ids
    assert plan0.budgets.tolist() == plan1.budgets.tolist() == expected.budgets.tolist()
    assert not np.all(expected.budgets == N)
    assert len(rows0) == len(rows1) == 3 * N
    assert [r["prompt_id"] for r in rows0 + rows1] == plan0.rollout_prompt_ids()


def test_diverged_trackers_are_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rates = [0.1, 0.5, 0.9, 0.3, 0.0, 1.0]
    _, results = _plan_on_two_fake_processes(tmp_path, monkeypatch, [rates, rates[::-1]])
    for res in results:
        assert isinstance(res, RuntimeError) and "processes disagree on the rollout counts" in str(res)


def test_tracker_is_saved_with_checkpoints_and_restored_on_resume(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-2"
    assert (ckpt / ktrl.TRACKER_FILE).is_file()
    saved = trainer.tracker.state_dict()

    resumed = make_trainer(tmp_path, max_steps=2, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(ckpt))  # already at max_steps: restores state, trains nothing
    state = resumed.tracker.state_dict()
    assert state["ids"] == saved["ids"] and len(state["ids"]) == NUM_PROMPTS
    for name, arr in saved["arrays"].items():
        np.testing.assert_array_equal(state["arrays"][name], arr)
