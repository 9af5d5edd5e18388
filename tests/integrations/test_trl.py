"""KnapsackGRPOTrainer on CPU with a tiny Llama and a character tokenizer built here (no hub access)."""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import importlib
import json
import math
import os
import re
import shutil
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
from knapsack_rl import KnapsackConfig, Planner
from knapsack_rl.core.config import AllocationConfig, flat_fields
from knapsack_rl.grpo import grouped_advantages
from knapsack_rl.grpo.loss import aggregation_weights
from knapsack_rl.integrations.trl import KNAPSACK_FIELDS, KnapsackGRPOConfig, KnapsackGRPOTrainer, batch_advantages, cli
from knapsack_rl.integrations.trl import checkpoint as ckpt
from knapsack_rl.integrations.trl.config import field_docs
from knapsack_rl.integrations.trl.plan import group_mean_scale, merge_gathered_ids, prompt_id_of, unique_in_order
from knapsack_rl.io import STATE_MAGIC, encode_state_file
from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from knapsack_rl.rules import KnapsackRule, OneRound, RuleSetup, StepSpec, make_rule, rule_names
from knapsack_rl.rules.state import pack_rule_state

torch.set_num_threads(1)

TRL_RULES = ["coba", "knapsack", "knapsack:project", "knapsack:recipe", "knapsack:signal", "uncertainty", "uniform"]
"""The rules TRL runs: every registered rule whose needs TRL meets (``knapsack-rl rules``)."""
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


def base_kwargs(tmp_path: Path) -> dict[str, Any]:
    return {
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
    }


def make_args(tmp_path: Path, **overrides: Any) -> KnapsackGRPOConfig:
    kwargs = base_kwargs(tmp_path) | {"min_n": 2, "max_n": 8, "min_count": 4}
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


def seed_tracker(planner: Planner, ids: list[int], rates: list[float]) -> None:
    """Give every prompt 10 rewards with success rate ``rate`` (epoch 0, step 0)."""
    for pid, p in zip(ids, rates, strict=True):
        planner.tracker.update([pid] * 10, (np.arange(10) < 10 * p).astype(float), epoch=0, step=0)


# ---------------------------------------------------------------------------------------------- config


def test_knapsack_fields_are_generated_from_knapsack_config() -> None:
    assert set(KNAPSACK_FIELDS) == set(flat_fields(KnapsackConfig)) - {"n"}  # n is TRL's num_generations
    by_name = {f.name: f for f in dataclasses.fields(KnapsackGRPOConfig)}
    assert by_name["max_n"].metadata["help"].startswith(field_docs(AllocationConfig)["max_n"])
    assert (
        by_name["max_n"].metadata["help"].endswith("[unset: the preset's value, project=128, recipe=128, signal=128]")
    )
    assert by_name["knapsack_preset"].default == "project"
    assert "project, recipe, signal;" in by_name["knapsack_preset"].metadata["help"]  # not two-phase: TRL refuses it
    assert by_name["rule"].default == "knapsack" and "rule" not in KNAPSACK_FIELDS  # `allocate` is the flat field
    assert (
        "coba, knapsack, knapsack:project, knapsack:recipe, knapsack:signal, uncertainty, uniform ("
        in (by_name["rule"].metadata["help"])
    )
    assert "n" not in by_name and "allocation" not in by_name and "tracker_min_count" not in by_name


def test_config_resolves_preset_and_takes_n_from_num_generations(tmp_path: Path) -> None:
    args = KnapsackGRPOConfig(**base_kwargs(tmp_path), knapsack_preset="recipe", max_n=64, estimator="beta")
    assert args.knapsack == KnapsackConfig.preset("recipe", n=N, max_n=64, estimator="beta")
    assert (args.fallback, args.objective, args.max_n, args.beta_prior) == (True, "recipe", 64, [1.0, 1.0])
    plain = KnapsackGRPOConfig(**base_kwargs(tmp_path))
    assert plain.knapsack == KnapsackConfig.preset("project", n=N)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n'"):
        KnapsackGRPOConfig(**base_kwargs(tmp_path), n=8)


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"with strict_max_n=True, n must be <= max_n; got n=4, max_n=3 .*num_generations=4"
    ):
        make_args(tmp_path, min_n=2, max_n=3)
    with pytest.raises(ValueError, match=r"allocate must be true or false \(a bool\); got allocate='no'"):
        make_args(tmp_path, allocate="no")
    with pytest.raises(ValueError, match=r"fallback must be true or false \(a bool\); got fallback='false'"):
        make_args(tmp_path, fallback="false")
    with pytest.raises(
        ValueError, match=r"preset='paper' is not a registered preset; valid: \['project', 'recipe', 'signal', 'two-ph"
    ):
        make_args(tmp_path, knapsack_preset="paper")
    with pytest.raises(
        ValueError,
        match=r"^rule 'knapsack' cannot run in trl: it generates in rounds within a step, and TRL 1.16's GRPOTrainer "
        r"makes one generation call per batch; engines that can run it: simulator, trainer \(probe_n=2: two-phase "
        r"planning; set probe_n to 0\)$",
    ):
        make_args(tmp_path, probe_n=2)
    with pytest.raises(ValueError, match=r"^rule 'knapsack' cannot run in trl: it generates in rounds .*probe_n=4"):
        make_args(tmp_path, knapsack_preset="two-phase")
    make_args(tmp_path, rule="uniform", probe_n=2)  # the uniform baseline never probes
    with pytest.raises(
        ValueError, match=r"preset='uniform' is not a preset: the uniform baseline is the rule 'uniform'"
    ):
        make_args(tmp_path, knapsack_preset="uniform")
    with pytest.raises(ValueError, match=r"^rule='nope' is not a registered rule; valid: \['coba', 'dapo', "):
        make_args(tmp_path, rule="nope")


ROUNDS = "it generates in rounds within a step, and TRL 1.16's GRPOTrainer makes one generation call per batch"
DRAWS = "it draws prompts beyond the step's batch, and TRL's sampler fixes the prompts of a batch"
DROPS = "it trains on a subset of the rollouts it generates, and TRL trains on every rollout it generates"
REFUSED = {
    "dapo": [ROUNDS, DRAWS, DROPS],
    "greso": [DRAWS],
    "knapsack:two-phase": [ROUNDS],
    "pilot-commit": [ROUNDS, DRAWS, DROPS],
    "reinforce-ada": [ROUNDS, DROPS],
    "reinforce-ada-pos": [ROUNDS, DROPS],
}
"""The registered rules TRL cannot run, and why (what each needs that TRL 1.16 cannot give)."""


def test_the_rules_trl_runs_are_every_rule_it_does_not_refuse() -> None:
    assert ktrl.trl_rule_names() == TRL_RULES
    assert sorted([*TRL_RULES, *REFUSED]) == rule_names()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_rule_trl_cannot_run_is_refused_when_the_config_is_read(tmp_path: Path, name: str) -> None:
    reasons = "; ".join(REFUSED[name])
    message = f"rule {name!r} cannot run in trl: {reasons}; engines that can run it: simulator, trainer"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_args(tmp_path, rule=name)


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
    with pytest.raises(ValueError, match=r"ids must be int or str; got 1\.5 \(float\)"):
        prompt_id_of({"prompt_id": 1.5}, "prompt_id")


def test_unique_in_order_rejects_shared_ids() -> None:
    ids, first = unique_in_order([5, 5, 3, 3, 9, 9], 2)
    assert ids == [5, 3, 9] and first.tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="prompt id 5 occurs 4 times in a generation batch built with num_gen"):
        unique_in_order([5, 5, 5, 5, 3, 3], 2)


def test_gathered_ids_raise_the_first_error_on_every_process() -> None:
    assert merge_gathered_ids([(1, None, [7, 7]), (0, None, [5, 5])]) == [5, 5, 7, 7]
    with pytest.raises(ValueError, match=r"refused on process\(es\) \[1, 2\]: bad id on 1"):
        merge_gathered_ids([(0, None, [5]), (1, "bad id on 1", []), (2, "bad id on 2", [])])


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
    with pytest.raises(ValueError, match=r"train_dataset has no column 'prompt_id'.*add_prompt_ids"):
        KnapsackGRPOTrainer(
            model=make_model(), reward_funcs=correct_reward, args=args, train_dataset=no_ids, processing_class=tok
        )
    dup = make_dataset().map(lambda x: {"prompt_id": x["prompt_id"] % 4})
    with pytest.raises(ValueError, match=r"dataset column 'prompt_id'\[4\]=0 appears more than once"):
        KnapsackGRPOTrainer(
            model=make_model(), reward_funcs=correct_reward, args=args, train_dataset=dup, processing_class=tok
        )


def test_unsupported_setups_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="normalize_then_sum' is not supported"):
        make_trainer(tmp_path, multi_objective_aggregation="normalize_then_sum")
    with pytest.raises(
        ValueError, match=r"reward functions need distinct names .*\['correct_reward', 'correct_reward'\]"
    ):
        KnapsackGRPOTrainer(
            model=make_model(),
            reward_funcs=[correct_reward, correct_reward],
            args=make_args(tmp_path),
            train_dataset=make_dataset(),
            processing_class=make_tokenizer(),
        )
    with pytest.raises(ValueError, match="args must be a KnapsackGRPOConfig; got GRPOConfig"):
        KnapsackGRPOTrainer(
            model=make_model(),
            reward_funcs=correct_reward,
            args=trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none"),
            train_dataset=make_dataset(),
            processing_class=make_tokenizer(),
        )


def trainer_with_rule(tmp_path: Path, given: Any, **overrides: Any) -> KnapsackGRPOTrainer:
    """A trainer given the rule ``given`` (the ``rule=`` argument); ``overrides`` go to the args."""
    return KnapsackGRPOTrainer(
        model=make_model(),
        reward_funcs=correct_reward,
        args=make_args(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
        rule=given,
    )


def test_a_given_rule_must_be_the_one_the_args_name(tmp_path: Path) -> None:
    knapsack = make_args(tmp_path).knapsack
    refused = [
        (
            KnapsackRule(knapsack.replace(max_n=16)),
            r"knapsack settings must be those of args .*: allocation.max_n: 8 -> 16",
        ),
        (
            make_rule("coba", RuleSetup(N, 3, knapsack=knapsack)),
            r"rule must be the rule args.rule='knapsack' names \(a KnapsackRule named 'knapsack'\); got a CobaRule",
        ),
        (object(), r"rule must be a knapsack_rl.rules.Rule; got object"),
    ]
    for rule, message in refused:
        with pytest.raises(ValueError, match=message):
            trainer_with_rule(tmp_path, rule)
    warm = KnapsackRule(knapsack)  # warm-started from another run's estimates
    seed_tracker(warm.planner, [100], [0.5])
    trainer = trainer_with_rule(tmp_path, warm)
    assert trainer.rule is warm and trainer.planner is warm.planner
    coba = make_rule("coba", RuleSetup(N, 3, knapsack=knapsack))
    assert trainer_with_rule(tmp_path, coba, rule="coba").planner is None


# ---------------------------------------------------------------------------------------------- behaviour


MIXED: dict[int, list[float | None]] = {
    100: [1.0, 0.0],
    101: [1.0, 1.0, 1.0, 0.0],
    102: [0.0],
    103: [1.0],
    104: [1.0, 0.0, 0.0, 0.0],
    105: [0.0, 0.0, 1.0],
}
"""Each prompt's rewards, rollout by rollout: success rates 1/2, 3/4, 0, 1, 1/4, 1/3."""


@pytest.mark.parametrize("name", TRL_RULES)
def test_every_trl_rule_plans_what_the_rule_plans_through_one_round_step_by_step(tmp_path: Path, name: str) -> None:
    """The issue's "must show", for every rule TRL runs: the counts reaching the reward function are those of a
    mirror rule driven by OneRound on the same ids, epoch and step, fed the same successes, across three epochs."""
    reward = ScheduledReward(MIXED)
    trainer = make_trainer(tmp_path, reward=reward, rule=name)
    trainer.model.train()
    args = trainer.args
    mirror = OneRound(make_rule(name, RuleSetup(N, 3, args.seed, knapsack=args.knapsack)), "trl")
    unequal = []
    for step, ids in enumerate([[100, 102, 103], [101, 104, 105]] * 3):  # two batches per epoch
        trainer.state.epoch, trainer.state.global_step = step / 2, step  # what the Trainer holds at the batch
        trainer._generate_and_score_completions(repeat_rows(trainer.train_dataset, ids))
        spec = StepSpec(np.asarray(ids), epoch=step // 2, step=step, n=N, total_budget=N * 3)
        expected = mirror.plan(spec)
        called, rewards = reward.calls[-1]
        counts = collections.Counter(called)
        assert [counts[i] for i in ids] == expected.tolist(), step
        plan = trainer.last_plan
        assert plan is not None and (plan.epoch, plan.spec.step) == (step // 2, step)
        metrics = mirror.observe(spec, [ids.index(i) for i in called], rewards)
        for key in ("train/effective_prompts", "train/reward_mean", "alloc/budget_max", "alloc/budget_min"):
            assert trainer._metrics["train"][key][-1] == metrics[key], key
        unequal.append(len(set(expected.tolist())) > 1)
    assert any(unequal) == (name != "uniform")  # allocation happened (after a cold start for knapsack rules)


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
    trainer.state.epoch = 1.0
    ids = [100, 101, 102, 103]
    seed_tracker(trainer.planner, ids, [0.2, 0.8, 0.0, 0.5])
    reference = Planner(trainer.args.knapsack)
    seed_tracker(reference, ids, [0.2, 0.8, 0.0, 0.5])
    expected = reference.plan(ids, epoch=1)
    assert not np.all(expected.budgets == N)  # the test is only meaningful with unequal counts

    out = trainer._generate_and_score_completions(repeat_rows(trainer.train_dataset, ids))

    called_ids, called_rewards = reward.calls[-1]
    counts = collections.Counter(called_ids)
    assert [counts[i] for i in ids] == expected.budgets.tolist()
    assert len(called_ids) == 4 * N  # TRL's batch size is unchanged
    rewards = torch.tensor([math.nan if r is None else r for r in called_rewards])
    torch.testing.assert_close(trainer.last_rewards, rewards, equal_nan=True)  # read back from TRL's record
    ok = ~torch.isnan(rewards)
    ref = torch.zeros(len(called_ids))
    ref[ok] = grouped_advantages(rewards[ok], torch.tensor(called_ids)[ok], eps=1e-4)
    torch.testing.assert_close(out["advantages"], ref)
    # the planner saw every scorable rollout once more
    assert trainer.planner.tracker.counts(ids).tolist() == [
        10 + b - (i == 103) for i, b in zip(ids, expected.budgets, strict=True)
    ]
    metrics = trainer._metrics["train"]
    assert metrics["alloc/budget_max"] == [float(expected.budgets.max())]
    varied = {
        i
        for i in ids
        if len({r for c, r in zip(called_ids, called_rewards, strict=True) if c == i and r is not None}) > 1
    }
    assert metrics["train/effective_prompts"] == [float(len(varied))] and 102 not in varied  # grouped by prompt id
    assert len(metrics["frac_reward_zero_std"]) == 1  # TRL's own metric is logged as TRL computed it
    assert requested_n == [1]  # one completion per row (what keeps vLLM server mode per-prompt correct)


@pytest.mark.parametrize(
    ("settings", "table"),
    [
        ({"reward_format": "signed"}, {100: [1.0, -1.0, -1.0, -1.0], 101: [1.0, 1.0, 1.0, -1.0], 102: [-1.0]}),
        (
            {"reward_format": "continuous", "success_threshold": 0.0},
            {100: [0.5, -0.5, -0.2, -1.0], 101: [0.1, 0.0, 2.0, -0.1], 102: [-3.0]},
        ),
    ],
)
def test_rewards_become_successes_once_on_their_way_to_the_rule(
    tmp_path: Path, settings: dict[str, Any], table: dict[int, list[float | None]]
) -> None:
    """Rewards -1 / 1 (or any scale with a success_threshold) are mapped to successes once, under the run's
    settings; the knapsack rule's planner records those successes as they are."""
    reward = ScheduledReward(table)
    trainer = make_trainer(tmp_path, reward=reward, estimator="ema", ema_weight=1.0, min_count=1, **settings)
    trainer.model.train()
    ids = [100, 101, 102]
    trainer._generate_and_score_completions(repeat_rows(trainer.train_dataset, ids))
    assert trainer.planner is not None
    np.testing.assert_allclose(trainer.planner.tracker.estimate(ids), [0.25, 0.75, 0.0])
    assert trainer._metrics["train"]["train/reward_mean"] == [1 / 3]  # the mean success
    assert trainer._metrics["train"]["train/all_wrong_ratio"] == [1 / 3]  # prompt 102 only


def signed_parity_reward(completions: list[str], **_: Any) -> list[float]:
    """:func:`parity_reward` as -1 / 1."""
    return [2.0 * r - 1.0 for r in parity_reward(completions)]


def test_a_signed_reward_run_trains_end_to_end(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, reward=signed_parity_reward, max_steps=4, reward_format="signed", min_count=2)
    assert math.isfinite(trainer.train().training_loss)
    steps = [h for h in trainer.state.log_history if "train/reward_mean" in h]
    assert len(steps) == 4 and all(0.0 <= h["train/reward_mean"] <= 1.0 for h in steps)
    assert trainer.planner is not None and len(trainer.planner.tracker) == NUM_PROMPTS


def test_group_mean_scale_weighs_every_prompt_the_same_whatever_its_count() -> None:
    tokens = torch.tensor([3, 1, 4, 4, 2, 0, 5, 2, 2, 1])  # loss tokens of each rollout
    groups = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 2, 2])  # counts 6, 1, 3
    scale = group_mean_scale(tokens, groups)
    weight = torch.zeros(3, dtype=torch.float64).index_add_(0, groups, scale.double() * tokens / tokens.sum())
    torch.testing.assert_close(weight, torch.full((3,), 1 / 3, dtype=torch.float64))  # under TRL's dapo: T = sum
    mask = (torch.arange(5)[None, :] < tokens[:, None]).float()  # (R, T)
    torch.testing.assert_close(mask * scale[:, None] / tokens.sum(), aggregation_weights(mask, groups, "group-mean"))


def test_group_mean_makes_trls_own_loss_weigh_every_prompt_the_same(tmp_path: Path) -> None:
    """With unequal counts TRL's dapo loss weighs a prompt by its tokens (so by its count); with
    loss_agg="group-mean" TRL's own _compute_loss is the reference trainer's group-mean loss."""
    ids = [100, 101, 102, 103]
    table: dict[int, list[float | None]] = {
        100: [1.0, 0.0, 0.0],
        101: [1.0, 1.0, 0.0],
        102: [0.0, 1.0],
        103: [1.0, 0.0],
    }
    losses = []
    for agg, mode in ((None, "token-mean"), ("group-mean", "group-mean")):
        trainer = make_trainer(tmp_path, reward=ScheduledReward(table), per_device_train_batch_size=4 * N, loss_agg=agg)
        trainer.model.train()
        trainer.state.epoch = 1.0
        assert trainer.planner is not None
        seed_tracker(trainer.planner, ids, [0.2, 0.8, 0.0, 0.5])
        out = trainer._generate_and_score_completions(repeat_rows(trainer.train_dataset, ids))
        plan = trainer.last_plan
        assert plan is not None and not np.all(plan.budgets == N)
        trainer.current_gradient_accumulation_steps = 1  # what the Trainer sets before the loss
        loss = trainer._compute_loss(trainer.model, out).detach()
        # on the batch it was just sampled from the PPO ratio is 1, so l_{r,t} = -A_r and the loss is -sum w_{r,t} A_r
        groups = torch.as_tensor(plan.rollout_group)
        assert trainer.last_rewards is not None
        advantages = batch_advantages(trainer.last_rewards, groups, eps=1e-4)  # before any loss weight
        weights = aggregation_weights(out["completion_mask"], groups, mode)
        torch.testing.assert_close(loss, -(weights * advantages[:, None]).sum())
        losses.append(float(loss))
    assert abs(losses[0] - losses[1]) > 1e-3  # the aggregation changed what the loss weighs


def test_loss_agg_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^loss_agg must be one of \['group-mean'\] or unset; got loss_agg='token-m"):
        make_args(tmp_path, loss_agg="token-mean")
    with pytest.raises(
        ValueError, match=r"^loss_agg='group-mean' needs loss_type in \['dapo'\] .*got loss_type='grpo'"
    ):
        make_args(tmp_path, loss_agg="group-mean", loss_type="grpo")


def test_equal_counts_keep_trl_advantages_and_match_them_when_recomputed(tmp_path: Path) -> None:
    table: dict[int, list[float | None]] = {
        100: [1.0, 0.0, 0.5, 0.0],
        101: [1.0, 1.0, 1.0, 1.0],
        102: [0.0, None, 1.0, 1.0],
    }
    ids = [100, 101, 102]
    outs, calls = [], []
    for cls, extra in (
        (trl.GRPOTrainer, {}),
        (KnapsackGRPOTrainer, {}),
        (KnapsackGRPOTrainer, {"advantage_clip": 1e6}),
    ):
        reward = ScheduledReward(table)
        args = make_args(tmp_path, **extra) if cls is KnapsackGRPOTrainer else trl.GRPOConfig(**base_kwargs(tmp_path))
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
    assert calls[0] == calls[1] == calls[2]  # same rollout order, same rewards
    assert not torch.all(outs[0]["advantages"] == 0)
    assert torch.equal(outs[1]["advantages"], outs[0]["advantages"])  # TRL's own, untouched
    torch.testing.assert_close(outs[2]["advantages"], outs[0]["advantages"])  # ours (clip inactive) agree


def parity_reward(completions: list[str], **_: Any) -> list[float]:
    """1 if the completion starts with an even digit or '+': a mix of successes for an untrained model."""
    return [float(len(c) > 0 and c[0] in "02468+") for c in completions]


def test_training_steps_update_parameters_planner_and_metrics(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, reward=parity_reward, max_steps=4, min_count=2, posterior=False)  # point: unequal
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert changed > 0
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 4 and all(math.isfinite(h["loss"]) for h in steps)
    keys = ("alloc/budget_max", "alloc/unestimated_ratio", "train/effective_grad_ratio", "train/effective_prompts")
    for key in (*keys, "tracker/prompts", "timing_s/plan"):
        assert all(key in h for h in steps), key
    assert all(h["alloc/budget_total"] == 3 * N and h["alloc/budget_mean"] == N for h in steps)
    assert [h["epoch"] for h in steps] == [0.5, 1.0, 1.5, 2.0]  # 6 prompts, 3 per step: epochs 0, 0, 1, 1
    assert all(h["alloc/budget_max"] == h["alloc/budget_min"] == N for h in steps[:2])  # cold start: epoch 0
    assert any(h["alloc/budget_max"] > h["alloc/budget_min"] for h in steps[2:])  # epoch 1: unequal counts
    assert len(trainer.planner.tracker) == NUM_PROMPTS


class FakeProcessGroup:
    """``gather_object`` across threads standing in for processes (rank per thread); never waits forever."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=20)
        self.slots: list[list[Any]] = [[] for _ in range(world)]
        self.local = threading.local()

    def gather_object(self, obj: list[Any]) -> list[Any]:
        self.slots[self.local.rank] = obj
        self.barrier.wait()
        out = [x for slot in self.slots for x in slot]
        self.barrier.wait()
        return out


def _plan_on_two_fake_processes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rates: list[list[float]],
    edit: Callable[[int, list[dict[str, Any]]], None] = lambda rank, rows: None,
) -> tuple[list[KnapsackGRPOTrainer], list[Any]]:
    """Run ``_plan`` on two trainers in threads standing in for ranks 0 and 1; ``rates[r]`` seeds rank r's planner."""
    ids = [100, 101, 102, 103, 104, 105]
    trainers = [make_trainer(tmp_path, per_device_train_batch_size=3 * N) for _ in range(2)]
    for t, ps in zip(trainers, rates, strict=True):
        seed_tracker(t.planner, ids, ps)
        t.state.epoch = 1.0
    group = FakeProcessGroup(2)
    monkeypatch.setattr("knapsack_rl.integrations.trl.trainer.gather_object", group.gather_object)
    batch = repeat_rows(trainers[0].train_dataset, ids)  # 24 rows; prompt 102's copies sit on both ranks
    results: list[Any] = [None, None]

    def run(rank: int) -> None:
        group.local.rank = rank
        trainers[rank].accelerator = types.SimpleNamespace(process_index=rank)
        rows = [dict(r) for r in batch[rank * 3 * N : (rank + 1) * 3 * N]]
        edit(rank, rows)
        try:
            results[rank] = trainers[rank]._plan(rows)
        except (RuntimeError, ValueError, threading.BrokenBarrierError) as exc:
            results[rank] = exc

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    return trainers, results


def test_two_processes_agree_on_counts_and_split_the_rebuilt_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = [0.1, 0.5, 0.9, 0.3, 0.0, 1.0]
    trainers, results = _plan_on_two_fake_processes(tmp_path, monkeypatch, [rates, rates])
    (plan0, rows0), (plan1, rows1) = results
    ids = [100, 101, 102, 103, 104, 105]
    reference = Planner(trainers[0].args.knapsack)
    seed_tracker(reference, ids, rates)
    expected = reference.plan(ids, epoch=1)
    assert plan0.prompt_ids == plan1.prompt_ids == ids
    assert plan0.budgets.tolist() == plan1.budgets.tolist() == expected.budgets.tolist()
    assert not np.all(expected.budgets == N)
    assert len(rows0) == len(rows1) == 3 * N
    assert [r["prompt_id"] for r in rows0 + rows1] == plan0.rollout_prompt_ids()


def test_diverged_planners_are_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rates = [0.1, 0.5, 0.9, 0.3, 0.0, 1.0]
    _, results = _plan_on_two_fake_processes(tmp_path, monkeypatch, [rates, rates[::-1]])
    for res in results:
        assert isinstance(res, RuntimeError) and "processes disagree on the rollout counts" in str(res)


def test_an_id_error_on_one_process_raises_on_every_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_id_on_rank_1(rank: int, rows: list[dict[str, Any]]) -> None:
        if rank == 1:
            rows[5]["prompt_id"] = 1.5  # a float id: refused by prompt_id_of on rank 1 only

    rates = [0.1, 0.5, 0.9, 0.3, 0.0, 1.0]
    _, results = _plan_on_two_fake_processes(tmp_path, monkeypatch, [rates, rates], edit=bad_id_on_rank_1)
    messages = [str(res) for res in results]
    assert all(isinstance(res, ValueError) for res in results), results  # nobody left waiting in the gather
    assert messages[0] == messages[1]
    assert "refused on process(es) [1]: prompt_id_column='prompt_id': ids must be int or str; got 1.5" in messages[0]


# ---------------------------------------------------------------------------------------------- checkpoints


def _raw_envelope(kind: bytes, head: bytes, payload: bytes = b"", version: int = 1) -> bytes:
    """A state file built by hand around any header bytes, with a valid checksum: what only a forger writes."""
    body = STATE_MAGIC + kind.ljust(32, b"\0") + version.to_bytes(4, "little") + len(head).to_bytes(8, "little")
    body += head + payload
    return body + hashlib.sha256(body).digest()


def _rule_files(rule: KnapsackRule, knapsack: KnapsackConfig) -> list[tuple[bytes, str]]:
    """Altered, foreign, old, nested and incomplete rule files, and the message each gets."""
    meta, parts = pack_rule_state(rule.name, rule.state_dict())
    head = {"knapsack": knapsack.to_dict(), "rule": meta}
    good = encode_state_file("rule-state", 1, head, parts)
    tracker = parts["rule/0"]
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    deep = b'{"meta": {"knapsack": ' + b"[" * 100_000 + b"]" * 100_000 + b'}, "parts": []}'
    planner_meta = {"version": 1, "config": knapsack.to_dict()}
    old_state = {**meta, "state": {**meta["state"], "version": 2}}
    return [
        (bytes(flipped), r"state file is truncated or corrupt \(SHA-256 mismatch\)"),
        (good[:-1], r"state file is truncated or corrupt"),
        (b"", r"state file is truncated \(0 bytes\)"),
        (b"\x80\x04pickle" * 20, r"not a knapsack-rl state file \(bad magic\)"),
        (b"KNAPSACK-RL-PLANNER\x00v1\n" + b"\0" * 64, r"a planner state file of knapsack-rl 0.1.0 .*resume this che"),
        (encode_state_file("planner", 1, planner_meta, {"tracker": tracker}), r"of an earlier knapsack-rl \(before ru"),
        (encode_state_file("verl-run", 1, head, parts), r"holds a 'verl-run' state, not a 'rule-state'"),
        (encode_state_file("rule-state", 2, head, parts), r"rule-state format version 2 is not supported"),
        (_raw_envelope(b"rule-state", deep), r"header is not valid JSON \(nested too deeply\)"),
        (_raw_envelope(b"rule-state", b'{"meta": {}, "meta": {}, "parts": []}'), r"header is not valid JSON \(dup"),
        (_raw_envelope(b"rule-state", b'{"meta": {"x": NaN}, "parts": []}'), r"header is not valid JSON \(NaN is no"),
        (_raw_envelope(b"rule-state", b'{"meta": {}, "parts": [["rule/0", 5]]}'), r"the parts take 5 bytes but 0"),
        (encode_state_file("rule-state", 1, {"rule": meta}, parts), r"holds exactly \['knapsack', 'rule'\]; got \['ru"),
        (encode_state_file("rule-state", 1, head | {"knapsack": "x"}, parts), r"saved knapsack settings must be a map"),
        (encode_state_file("rule-state", 1, head, {}), r"refers to a part that is not there"),
        (encode_state_file("rule-state", 1, head, {**parts, "rule/1": b"x"}), r"parts \['rule/1'\] are not referenced"),
        (encode_state_file("rule-state", 1, head, {"rule/0": tracker[:-1]}), r"tracker file is truncated or corrupt"),
        (encode_state_file("rule-state", 1, head | {"rule": old_state}, parts), r"not a planner state of version 1"),
        (
            encode_state_file("rule-state", 1, head | {"rule": {**meta, "name": "coba"}}, parts),
            r"holds the state of rule 'coba', not of this run's rule 'knapsack'",
        ),
    ]


def test_a_refused_rule_file_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    knapsack = make_args(tmp_path).knapsack
    saved = KnapsackRule(knapsack)
    seed_tracker(saved.planner, [100, 101], [0.5, 0.25])
    path = ckpt.save_rule_file(saved, knapsack, tmp_path)
    rule = KnapsackRule(knapsack)
    seed_tracker(rule.planner, [7], [1.0])
    tracker, before = rule.planner.tracker, rule.planner.tracker.to_bytes()
    for data, message in _rule_files(saved, knapsack):
        path.write_bytes(data)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: .*{message}") as info:
            ckpt.check_rule_file(rule, knapsack, tmp_path)
        assert "\n" not in str(info.value) and type(info.value) is ValueError
        assert rule.planner.tracker is tracker and tracker.to_bytes() == before, message
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ValueError, match=r"knapsack_rule.bin is not a regular file \(a FIFO"):
        ckpt.check_rule_file(rule, knapsack, tmp_path)
    path.unlink()
    with pytest.raises(ValueError, match=r"has no knapsack_rule.bin: it was not written by KnapsackGRPOTrainer"):
        ckpt.check_rule_file(rule, knapsack, tmp_path)
    (tmp_path / "knapsack_planner.bin").write_bytes(_rule_files(saved, knapsack)[5][0])  # what earlier versions wrote
    with pytest.raises(
        ValueError,
        match=r"holds knapsack_planner.bin, the planner state of an earlier knapsack-rl, not knapsack_rule.bin; this "
        r"version does not read it: resume this checkpoint with the knapsack-rl version that wrote it, or start a "
        r"new run from its weights",
    ):
        ckpt.check_rule_file(rule, knapsack, tmp_path)
    ckpt.save_rule_file(saved, knapsack, tmp_path)
    restore = ckpt.check_rule_file(rule, knapsack, tmp_path)
    assert restore.rule is not rule and restore.rule.planner.tracker.to_bytes() == saved.planner.tracker.to_bytes()
    assert tracker.to_bytes() == before and restore.changes == []


@pytest.fixture(scope="module", params=["knapsack", "coba"])
def trl_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, KnapsackGRPOTrainer]:
    """A TRL checkpoint folder written after 4 steps (two epochs) of a rule, and the trainer that wrote it."""
    name: str = request.param
    tmp_path = tmp_path_factory.mktemp(f"trl-ckpt-{name}")
    trainer = make_trainer(tmp_path, reward=parity_reward, rule=name, max_steps=4, save_strategy="steps", save_steps=4)
    trainer.train()
    return name, tmp_path / "out" / "checkpoint-4", trainer


def test_the_rules_state_is_saved_with_checkpoints_and_restored_on_resume(
    tmp_path: Path, trl_checkpoint: tuple[str, Path, KnapsackGRPOTrainer]
) -> None:
    name, folder, trained = trl_checkpoint
    assert (folder / ktrl.RULE_FILE).is_file()
    resumed = make_trainer(tmp_path, reward=parity_reward, rule=name, max_steps=4, save_strategy="no")
    fresh = pack_rule_state(name, resumed.rule.state_dict())
    resumed.train(resume_from_checkpoint=str(folder))  # already at max_steps: restores state, trains nothing
    state = pack_rule_state(name, resumed.rule.state_dict())
    assert state == pack_rule_state(name, trained.rule.state_dict()) and state != fresh
    spec = StepSpec(np.array([100, 102, 104]), epoch=2, step=4, n=N, total_budget=3 * N)
    expected = OneRound(copy.deepcopy(trained.rule), "trl").plan(spec)
    assert OneRound(resumed.rule, "trl").plan(spec).tolist() == expected.tolist()  # and it plans the same


def test_a_refused_resume_changes_neither_the_rule_nor_the_model(
    tmp_path: Path, trl_checkpoint: tuple[str, Path, KnapsackGRPOTrainer]
) -> None:
    name, source, _ = trl_checkpoint
    other = "coba" if name == "knapsack" else "knapsack"
    folder = tmp_path / "checkpoint-4"
    shutil.copytree(source, folder)
    knapsack = make_args(tmp_path).knapsack
    ckpt.save_rule_file(make_rule(other, RuleSetup(N, 3, knapsack=knapsack)), knapsack, folder)  # another rule's
    trainer = make_trainer(tmp_path, rule=name, max_steps=4, save_strategy="no")
    trainer.model.train()
    trainer._generate_and_score_completions(repeat_rows(trainer.train_dataset, [100, 101, 102]))  # some state
    rule, rule_before = trainer.rule, pack_rule_state(name, trainer.rule.state_dict())
    weights_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    message = rf"knapsack_rule.bin: holds the state of rule '{other}', not of this run's rule '{name}'$"
    with pytest.raises(ValueError, match=message):
        trainer.train(resume_from_checkpoint=str(folder))
    with pytest.raises(ValueError, match=message):  # transformers' own hook refuses it too, before the optimizer
        trainer._load_optimizer_and_scheduler(str(folder))
    assert trainer.rule is rule and pack_rule_state(name, rule.state_dict()) == rule_before
    assert all(torch.equal(v, weights_before[k]) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize(("change", "named"), [({"estimator": "beta"}, "estimator"), ({"min_count": 2}, "min_count")])
def test_a_tracker_saved_under_other_settings_is_refused(tmp_path: Path, change: dict[str, Any], named: str) -> None:
    knapsack = make_args(tmp_path).knapsack
    saved = KnapsackRule(knapsack)
    seed_tracker(saved.planner, [100, 101], [0.5, 0.25])
    ckpt.save_rule_file(saved, knapsack, tmp_path)
    trainer = make_trainer(tmp_path, **change)
    before = trainer.rule
    with pytest.raises(ValueError, match=rf"knapsack_rule.bin: the tracker was saved with other settings \(.*{named}"):
        trainer._load_optimizer_and_scheduler(str(tmp_path))
    assert trainer.rule is before and trainer.planner is not None and len(trainer.planner.tracker) == 0


def test_resume_under_other_allocation_settings_is_allowed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    knapsack = make_args(tmp_path).knapsack
    saved = KnapsackRule(knapsack)
    seed_tracker(saved.planner, [100, 101], [0.5, 0.25])
    ckpt.save_rule_file(saved, knapsack, tmp_path)
    trainer = make_trainer(tmp_path, max_n=6)
    with caplog.at_level("WARNING", logger="knapsack_rl.integrations.trl.checkpoint"):
        trainer._load_optimizer_and_scheduler(str(tmp_path))
    assert trainer.planner is not None and trainer.planner.tracker.counts([100, 101]).tolist() == [10, 10]
    assert trainer.planner.config.allocation.max_n == 6  # the run's settings, the saved estimates
    assert "resuming with other knapsack settings than saved: allocation.max_n: 8 -> 6" in caplog.text


# ---------------------------------------------------------------------------------------------- YAML launcher


def write_yaml(path: Path, values: dict[str, Any]) -> Path:
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in values.items()) + "\n")
    return path


def launch_values(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    values = base_kwargs(tmp_path) | {
        "model_path": str(tmp_path / "model"),
        "dataset_path": str(tmp_path / "data.jsonl"),
        "reward_funcs": [f"{__name__}.parity_reward"],
    }
    return values | extra


def test_yaml_launcher_parses_knapsack_fields_through_trl_parser(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "c.yaml",
        launch_values(tmp_path, rule="coba", knapsack_preset="recipe", max_n=16, estimator="beta", fallback=False),
    )
    launch, args = cli.parse_args(["--config", str(config), "--min_count", "3"])
    assert launch.reward_funcs == [f"{__name__}.parity_reward"] and args.rule == "coba"
    assert args.knapsack == KnapsackConfig.preset(
        "recipe", n=N, max_n=16, estimator="beta", fallback=False, min_count=3
    )
    assert cli.parse_args(["--config", str(config), "--rule", "uniform"])[1].rule == "uniform"  # the flag wins
    with pytest.raises(ValueError, match=r"Unknown arguments from config file: \['--max_rollouts', '64'\]"):
        cli.parse_args(["--config", str(write_yaml(tmp_path / "u.yaml", launch_values(tmp_path, max_rollouts=64)))])
    with pytest.raises(ValueError, match=r"Unknown arguments from config file: \['--n', '8'\]"):
        cli.parse_args(["--config", str(write_yaml(tmp_path / "n.yaml", launch_values(tmp_path, n=8)))])
    with pytest.raises(
        ValueError, match=r"estimator must be one of \['beta', 'ema', 'recipe'.*\]; got estimator='bayes'"
    ):
        cli.parse_args(["--config", str(write_yaml(tmp_path / "e.yaml", launch_values(tmp_path, estimator="bayes")))])


def test_yaml_launcher_trains_from_local_files_with_content_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_model().save_pretrained(tmp_path / "model")
    make_tokenizer().save_pretrained(tmp_path / "model")
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in make_dataset()]  # no prompt_id column
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    values = launch_values(tmp_path, max_steps=1, rule="coba", loss_agg="group-mean")
    values["model_name_or_path"], values["dataset_name"] = values.pop("model_path"), values.pop("dataset_path")
    config = write_yaml(tmp_path / "c.yaml", values)  # TRL's own names for the model and the data
    torch.set_num_threads(3)
    try:
        assert cli.main(["--config", str(config)]) == 0
        assert torch.get_num_threads() == 1  # pinned (threads: 1 unless set), as the reference trainer does
    finally:
        torch.set_num_threads(1)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    capsys.readouterr()
    assert cli.main(["--config", str(config), "--model_name_or_path", "nowhere/model"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "python -m knapsack_rl.integrations.trl: error: model_name_or_path='nowhere/model' is not a local directory; "
        "the launcher loads local models only (no Hub downloads): download the model first (e.g. `hf download NAME "
        "--local-dir DIR`) and pass DIR"
    ]
