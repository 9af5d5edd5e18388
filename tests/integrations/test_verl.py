"""The verl adapter against verl's real DataProto, TensorDict helpers, config, core_algos and hooks (CPU).

Nothing here is skipped: the ``[verl]`` extra installs verl's V1 stack (``transfer_queue`` and the rest
of verl's ``verl-core`` extra), so a missing piece fails the test that needs it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.utils import tensordict_utils as tu
from verl.workers.config import AgentLoopConfig

from knapsack_rl import KnapsackConfig, Planner
from knapsack_rl.core.groups import grpo_advantages, step_metrics
from knapsack_rl.grpo import grouped_advantages
from knapsack_rl.integrations.verl import (
    ROLLOUT_N_KEY,
    KnapsackVerlConfig,
    RunRegistry,
    VerlAdapterConfig,
    VerlRun,
    check_verl_version,
    dataproto_rewards,
    final_session_rows,
    is_validation_batch,
    observe_sampled,
    plan_dataproto,
    plan_tensordict,
    read_prompt_ids,
    run_key,
    yaml_dir,
    yaml_path,
)
from knapsack_rl.integrations.verl.resume import LATEST_FILE, restore_or_create, resume_folder

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "verl"
VERL_DIR = Path(str(__import__("verl").__file__)).parent
VERL_CONFIG = VERL_DIR / "trainer" / "config" / "_generated_ppo_trainer.yaml"
N, M = 8, 12


# ---------------------------------------------------------------------------- fixtures (local helpers)
def make_settings(**section: object) -> KnapsackVerlConfig:
    """Adapter settings as the knapsack section would give them (cold start off unless asked)."""
    base: dict[str, object] = {"max_n": 32, "min_count": 4, "negative_n": 2, "positive_n": 2, "uniform_epochs": 0}
    base.update(section)
    return KnapsackVerlConfig.from_section(base, n=N, train_batch_size=M)


def verl_config(root: Path, experiment: str = "exp", resume: str = "disable", **section: object) -> Any:
    """The part of verl's config the adapter reads."""
    knapsack: dict[str, object] = {"max_n": 32, "min_count": 4, "negative_n": 2, "positive_n": 2}
    knapsack.update(section)
    return OmegaConf.create(
        {
            "data": {"train_batch_size": M},
            "actor_rollout_ref": {"rollout": {"n": N}},
            "trainer": {
                "resume_mode": resume,
                "default_local_dir": str(root),
                "resume_from_path": None,
                "project_name": "knapsack-rl",
                "experiment_name": experiment,
                "v1": {"trainer_mode": "sync", "sampler": {}},
            },
            "algorithm": {"adv_estimator": "grpo"},
            "knapsack": knapsack,
        }
    )


def objects(values: list[object]) -> np.ndarray:
    """A 1-D object array (np.array would turn a list of lists into a 2-D array)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def prompt_batch(ids: list[int], step: int = 0) -> DataProto:
    """A legacy-trainer DataProto of prompts as verl's RLHFDataset + uid assignment produce it."""
    m = len(ids)
    return DataProto.from_dict(
        tensors={"input_ids": torch.arange(m * 3).view(m, 3), "attention_mask": torch.ones(m, 3, dtype=torch.int64)},
        non_tensors={
            "uid": np.array([f"uid-{step}-{i}" for i in ids], dtype=object),
            "extra_info": np.array([{"index": i, "split": "train"} for i in ids], dtype=object),
            "raw_prompt": objects([[{"role": "user", "content": f"question {i}"}] for i in ids]),
        },
    )


def v1_batch(ids: list[int], step: int = 1, prefix: str = "uid") -> Any:
    """A V1-trainer TensorDict as PPOTrainer._next_train_batch builds it."""
    td = tu.get_tensordict(
        {
            "input_ids": torch.arange(len(ids) * 3).view(len(ids), 3),
            "uid": np.array([f"{prefix}-{step}-{i}" for i in ids], dtype=object),
            "index": np.array(ids, dtype=object),
            "extra_info": [{"index": i} for i in ids],
            "raw_prompt": [[{"role": "user", "content": f"question {i}"}] for i in ids],
        }
    )
    tu.assign_non_tensor_data(td, "global_steps", step)
    return td


def seeded_run(p_true: np.ndarray, rng: np.random.Generator, **section: object) -> VerlRun:
    """A run whose tracker saw 8 Bernoulli(p) rewards of every prompt 0..M-1 (so estimates exist)."""
    run = VerlRun(make_settings(**section))
    ids = np.repeat(np.arange(len(p_true)), 8)
    run.planner.tracker.update(ids.tolist(), (rng.random(ids.size) < p_true[ids]).astype(float), epoch=0, step=0)
    return run


def scored(expanded: DataProto, rewards: np.ndarray) -> DataProto:
    """Put one scalar reward per row on its last response token, as verl's reward loop does."""
    scores = torch.zeros(len(expanded), 4)
    scores[:, -1] = torch.as_tensor(rewards, dtype=torch.float32)
    expanded.batch["token_level_scores"] = scores
    expanded.batch["response_mask"] = torch.ones(len(expanded), 4)
    return expanded


def mirror_plan(run: VerlRun, ids: list[int], epoch: int) -> np.ndarray:
    """What a separate Planner with the run's settings and state plans for ``ids`` in ``epoch``."""
    mirror = Planner(run.settings.knapsack)
    mirror.load_state_dict(run.planner.state_dict())
    return mirror.plan(ids, epoch=epoch).budgets


def rollouts_of(uids: list[str], counts: np.ndarray) -> list[str]:
    return [u for u, c in zip(uids, counts, strict=True) for _ in range(int(c))]


P_TRUE = np.array([0.0, 1.0, 0.5, 0.125, 0.875, 0.25, 0.0, 0.5, 1.0, 0.375, 0.625, 0.0])


# ---------------------------------------------------------------------------- counts stamped and expanded
def test_dataproto_counts_are_the_allocation_and_rows_expand_per_prompt() -> None:
    run = seeded_run(P_TRUE, np.random.default_rng(0))
    ids = list(range(M))
    expected = mirror_plan(run, ids, epoch=0)
    batch = prompt_batch(ids)
    expanded = plan_dataproto(run, batch)
    counts = batch.non_tensor_batch[ROLLOUT_N_KEY]
    np.testing.assert_array_equal(counts, expected)
    assert len(expanded) == M * N == int(counts.sum())
    assert counts.max() > N and counts.min() < N  # the knapsack actually moved budget
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for i in range(M):  # rows of prompt i: counts[i] consecutive copies of row i with its uid and index
        rows = slice(starts[i], starts[i] + counts[i])
        assert set(expanded.non_tensor_batch["uid"][rows]) == {f"uid-0-{i}"}
        assert all(e["index"] == i for e in expanded.non_tensor_batch["extra_info"][rows])
        assert torch.equal(expanded.batch["input_ids"][rows], batch.batch["input_ids"][i].expand(counts[i], 3))
        assert set(expanded.non_tensor_batch[ROLLOUT_N_KEY][rows]) == {counts[i]}


def test_v1_tensordict_gets_rollout_n_per_prompt_and_survives_worker_chunking() -> None:
    run = seeded_run(P_TRUE, np.random.default_rng(1))
    td = v1_batch(list(range(M)))
    budgets = plan_tensordict(run, td)
    stamped = td.get(ROLLOUT_N_KEY)
    assert stamped.dtype == torch.int64 and stamped.shape == (M,)
    np.testing.assert_array_equal(stamped.numpy(), budgets)
    assert int(stamped.sum()) == M * N and len(set(budgets.tolist())) > 1
    # AgentLoopManagerTQ splits the batch with TensorDict.chunk; each worker reads prompt[k] per row
    per_row = [int(v) for chunk in td.chunk(5) for v in chunk.get(ROLLOUT_N_KEY)]
    assert per_row == budgets.tolist()


def test_validation_batches_are_recognised_as_verl_marks_them() -> None:
    td = v1_batch([1, 2])
    assert not is_validation_batch(td)
    tu.assign_non_tensor_data(td, "validate", True)  # what PPOTrainer._validate does
    assert is_validation_batch(td)
    tu.assign_non_tensor_data(td, "validate", False)
    assert not is_validation_batch(td)


def test_hook_plans_equal_planner_plan_on_the_same_inputs_and_epoch() -> None:
    """The adapter allocates only through Planner: a twin Planner fed the same ids, rewards and verl's own
    epoch ((global_step - 1) // steps_per_epoch in the sync trainer) gives the same counts every step."""
    settings = make_settings(uniform_epochs=1)  # the cold start is part of what must agree
    run, twin = VerlRun(settings), Planner(settings.knapsack)
    rng = np.random.default_rng(7)
    p = np.linspace(0.0, 1.0, M)
    steps_per_epoch, moved = 2, 0
    for step in range(1, 4 * steps_per_epoch + 1):
        if (step - 1) % steps_per_epoch == 0:
            order = rng.permutation(M)
        ids = order[(step - 1) % steps_per_epoch :: steps_per_epoch].tolist()
        verl_epoch = (step - 1) // steps_per_epoch
        td = v1_batch(ids, step)
        counts = plan_tensordict(run, td)
        expected = twin.plan(ids, epoch=verl_epoch).budgets
        np.testing.assert_array_equal(counts, expected)
        assert run.epoch == verl_epoch
        moved += int(np.any(counts != N))
        rewards = (rng.random(int(counts.sum())) < np.repeat(p[ids], counts)).astype(float)
        uids = [str(u) for u in tu.get(td, "uid")]
        ours = run.observe(rollouts_of(uids, counts), rewards, step=step)
        theirs = twin.observe(np.repeat(ids, counts).tolist(), rewards, epoch=verl_epoch, step=step)
        timers = ("alloc/solve_s", "timing_s/plan")  # wall-clock seconds: the only keys that may differ
        step_keys = {  # what every rule's step reports (step_log_metrics) beside the Planner's metrics
            "train/rollouts_generated": float(counts.sum()),
            "train/generation_rounds": 1.0,
            "train/candidates": float(len(ids)),
        }
        assert {k: v for k, v in ours.items() if k not in timers} == {
            **{k: v for k, v in theirs.items() if k not in timers},
            **step_keys,
            "train/epoch": float(verl_epoch),
        }
        assert set(ours) == set(theirs) | {"train/epoch", "timing_s/plan"} | set(step_keys)
    assert moved >= 4  # epochs 1..3 allocated from estimates, epoch 0 was uniform (cold start)


@pytest.mark.parametrize("shuffle", [False, True])
def test_counted_epoch_is_verls_epoch_with_verls_sampler(shuffle: bool) -> None:
    """verl's sync trainer: one dataloader batch per step from verl's sampler (drop_last), a new iterator
    at StopIteration, ``training/epoch = (global_steps - 1) // (len(dataset) // train_batch_size)``."""
    from torch.utils.data import DataLoader
    from verl.trainer.ppo.utils import create_rl_sampler

    dataset = [{"index": i} for i in range(23)]  # 23 // 4 = 5 steps per epoch, 3 prompts dropped per pass
    data_cfg = OmegaConf.create({"shuffle": shuffle, "seed": 3})
    loader = DataLoader(dataset, batch_size=4, drop_last=True, sampler=create_rl_sampler(data_cfg, dataset))
    run, it = VerlRun(make_settings()), iter(loader)
    for step in range(1, 5 * 4 + 1):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        ids = [int(i) for i in batch["index"]]
        run.plan(ids, [f"{step}-{i}" for i in ids])
        assert run.epoch == (step - 1) // (len(dataset) // 4), step


def test_first_epoch_is_uniform_and_total_is_always_prompts_times_n() -> None:
    cold = seeded_run(P_TRUE, np.random.default_rng(2), uniform_epochs=1)
    np.testing.assert_array_equal(cold.plan(list(range(M)), [f"u{i}" for i in range(M)]), np.full(M, N))
    rng = np.random.default_rng(2)
    for trial in range(5):
        run = seeded_run(rng.choice([0.0, 0.1, 0.4, 0.9, 1.0], size=M), rng)
        m = int(rng.integers(2, M + 1))
        counts = run.plan(list(range(m)), [f"t{trial}-{i}" for i in range(m)])
        assert int(counts.sum()) == m * N and counts.max() <= 32


def test_uniform_rule_is_a_baseline_that_still_tracks_and_logs_the_same_keys() -> None:
    rng = np.random.default_rng(3)
    knap, base = seeded_run(P_TRUE, rng), seeded_run(P_TRUE, rng, allocate=False)
    uids = [f"u{i}" for i in range(M)]
    np.testing.assert_array_equal(base.plan(list(range(M)), uids), np.full(M, N))
    counts = knap.plan(list(range(M)), uids)
    m_base = base.observe(rollouts_of(uids, np.full(M, N)), np.zeros(M * N), step=1)
    m_knap = knap.observe(rollouts_of(uids, counts), np.zeros(int(counts.sum())), step=1)
    assert set(m_base) == set(m_knap) and m_base["train/all_wrong_ratio"] == 1.0
    assert int(base.planner.tracker.counts(range(M)).sum()) == M * 8 + M * N
    preset = KnapsackVerlConfig.from_section({"allocate": False}, n=N, train_batch_size=M)
    assert not preset.knapsack.allocate


# ---------------------------------------------------------------------------- uid grouping and advantages
def test_verl_grpo_groups_by_uid_and_matches_our_grouped_advantages() -> None:
    rng = np.random.default_rng(4)
    expanded = plan_dataproto(seeded_run(P_TRUE, rng), prompt_batch(list(range(M))))
    counts = np.bincount(np.unique(expanded.non_tensor_batch["uid"], return_inverse=True)[1])
    assert counts.min() >= 2  # verl and we differ only on groups of size 1 (see the next test)
    rewards = (rng.random(len(expanded)) < 0.5).astype(np.float64)
    expanded = scored(expanded, rewards)
    perm = torch.as_tensor(rng.permutation(len(expanded)))  # grouping must come from the uid, not position
    shuffled = expanded.select_idxs(perm)
    grpo = core_algos.get_adv_estimator_fn(core_algos.AdvantageEstimator.GRPO)
    adv, _ = grpo(
        token_level_rewards=shuffled.batch["token_level_scores"],
        response_mask=shuffled.batch["response_mask"],
        index=shuffled.non_tensor_batch["uid"],
    )
    verl_adv = adv[:, -1].double().numpy()
    _, group = np.unique(shuffled.non_tensor_batch["uid"], return_inverse=True)
    r = rewards[perm.numpy()]
    np.testing.assert_allclose(verl_adv, grpo_advantages(r, group), rtol=1e-5, atol=1e-5)
    torch_adv = grouped_advantages(torch.as_tensor(r), torch.as_tensor(group)).numpy()
    np.testing.assert_allclose(verl_adv, torch_adv, rtol=1e-5, atol=1e-5)
    assert np.abs(verl_adv).max() > 1.0  # non-trivial advantages were compared


def test_groups_of_one_differ_in_verl_so_the_adapter_refuses_counts_of_one() -> None:
    r = torch.tensor([[1.0], [0.0], [1.0]])
    uid = np.array(["a", "b", "b"], dtype=object)
    adv, _ = core_algos.compute_grpo_outcome_advantage(r, torch.ones_like(r), uid)
    assert adv[0, 0].item() == pytest.approx(1.0 / (1.0 + 1e-6))  # verl: mean 0, std 1 for a lone rollout
    assert grpo_advantages(np.array([1.0, 0.0, 1.0]), np.array([0, 1, 1]))[0] == 0.0  # ours: no baseline -> 0
    lone = "it can give a prompt a single rollout, and verl's GRPO gives a lone rollout the advantage r / (1 + 1e-6)"
    with pytest.raises(ValueError, match=re.escape(f"rule 'knapsack' cannot run in verl: {lone}")) as info:
        KnapsackVerlConfig.from_section({}, n=N, train_batch_size=M)  # the 'project' preset probes with 1
    assert "(settings: negative_n=1, positive_n=1 give a single rollout" in str(info.value)
    assert "knapsack.negative_n=2 knapsack.positive_n=2" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=re.escape("(settings: n=1 (set actor_rollout_ref.rollout.n >= 2))")):
        KnapsackVerlConfig.from_section({"rule": "uniform"}, n=1, train_batch_size=M)
    with pytest.raises(ValueError, match=re.escape("negative_n=0, positive_n=0 give no rollout")):
        make_settings(negative_n=0, positive_n=0)  # verl runs at least one session per prompt
    with pytest.raises(ValueError, match=re.escape("probe_n=2 plans in two rounds (set knapsack.probe_n=0)")):
        make_settings(probe_n=2)


# ---------------------------------------------------------------------------- tracker update and metrics
def test_observe_updates_tracker_with_every_rollout_and_returns_metrics() -> None:
    rng = np.random.default_rng(5)
    run = VerlRun(make_settings(min_count=4))
    expanded = plan_dataproto(run, prompt_batch(list(range(M))))
    rewards = (rng.random(len(expanded)) < P_TRUE[np.repeat(np.arange(M), N)]).astype(np.float64)
    uids, r = dataproto_rewards(scored(expanded, rewards))
    metrics = run.observe(uids, r, step=1)
    tracker = run.planner.tracker
    np.testing.assert_array_equal(tracker.counts(range(M)), np.full(M, N))
    np.testing.assert_allclose(tracker.estimate(range(M)), rewards.reshape(M, N).mean(axis=1))
    _, group = np.unique(np.asarray(uids, dtype=object), return_inverse=True)
    for key, value in step_metrics(rewards, group).items():
        assert metrics[key] == pytest.approx(value)
    assert metrics["alloc/budget_total"] == M * N and metrics["tracker/prompts"] == M
    assert metrics["train/epoch"] == 0.0 and metrics["timing_s/plan"] > 0.0
    expected = mirror_plan(run, list(range(M)), epoch=1)
    counts = run.plan(list(range(M)), [f"next-{i}" for i in range(M)])  # allocates from these estimates
    np.testing.assert_array_equal(counts, expected)
    assert run.epoch == 1 and run.pending == M  # the same prompts again: the dataloader restarted


def test_a_reissued_prompt_is_planned_again_in_its_epoch() -> None:
    """After an async resume verl re-issues in-flight prompts with their uids (_reissue_inflight_prompts)."""
    run = seeded_run(P_TRUE, np.random.default_rng(8))
    uids = [f"u{i}" for i in range(M)]
    first = run.plan(list(range(M)), uids)
    np.testing.assert_array_equal(run.plan(list(range(M)), uids), first)
    assert (run.epoch, run.pending) == (0, M)  # the same ids again, yet no new pass: they are the same prompts
    run.plan([0], ["fresh-0"])
    assert run.epoch == 1


def test_signed_rewards_map_to_successes_and_unknown_or_reused_uids_raise() -> None:
    run = VerlRun(make_settings(min_count=2))
    np.testing.assert_array_equal(run.plan([7, 9], ["a", "b"]), [N, N])
    run.observe(["a"] * N + ["b"] * N, [1.0, -1.0] * (N // 2) + [-1.0] * N, step=1)
    np.testing.assert_allclose(run.planner.tracker.estimate([7, 9]), [0.5, 0.0])
    with pytest.raises(ValueError, match=re.escape("never planned or were already observed, e.g. 'a'")):
        run.observe(["a"], [1.0])  # a's rewards were already observed
    with pytest.raises(ValueError, match="same length"):
        run.observe(["x", "y"], [1.0])
    shaped = VerlRun(make_settings(min_count=2, success_threshold=0.5))  # e.g. overlong-penalised rewards
    shaped.plan([1], ["s"])
    shaped.observe(["s"] * N, [1.0, -1.3, 0.9, -1.0] * (N // 4), step=1)
    np.testing.assert_allclose(shaped.planner.tracker.estimate([1]), [0.5])


# ---------------------------------------------------------------------------- the registry keyed by run
def test_two_runs_in_one_process_share_nothing_and_the_replay_buffer_finds_its_run(tmp_path: Path) -> None:
    registry = RunRegistry()
    a = registry.get_or_create(verl_config(tmp_path / "a", "a"))
    b = registry.get_or_create(verl_config(tmp_path / "b", "b", max_n=16))
    assert a is not b and a.planner.tracker is not b.planner.tracker and len(registry) == 2
    assert registry.get_or_create(verl_config(tmp_path / "a", "a")) is a  # the other hook of run a
    assert registry.get(run_key(verl_config(tmp_path / "a", "a"))) is a
    a.plan([0, 1], ["a0", "a1"])
    b.plan([0, 1], ["b0", "b1"])  # the same prompt ids in the other run
    keys = [f"a{i}_{s}_0" for i in (0, 1) for s in range(N)] + ["a1_0_1"]  # a1's session 0 has two outputs
    read = {k: float((k.startswith("a1") and k != "a1_0_0") or k == "a0_1_0") for k in keys}  # a1_0_0: not final
    metrics = observe_sampled(registry, keys, lambda ks: np.array([read[k] for k in ks]), step=3)
    assert metrics["train/rollouts"] == 2 * N and a.planner.tracker.step == 3
    np.testing.assert_array_equal(a.planner.tracker.counts([0, 1]), [N, N])
    np.testing.assert_allclose(a.planner.tracker.estimate([0, 1]), [1 / N, 1.0])  # a1's session 0: its last output
    assert len(b.planner.tracker) == 0 and b.pending == 2  # run b saw nothing
    with pytest.raises(ValueError, match=re.escape("were never planned by a knapsack run in this process")):
        observe_sampled(registry, ["a0_0_0"], lambda ks: np.zeros(len(ks)), step=4)  # already observed
    a.plan([5], ["a5"])
    with pytest.raises(ValueError, match="holds prompts of 2 different knapsack runs"):
        registry.for_uids(["a5", "b0"])
    with pytest.raises(ValueError, match="already registered with other knapsack settings"):
        registry.get_or_create(verl_config(tmp_path / "a", "a", max_n=8))
    registry.release(run_key(verl_config(tmp_path / "a", "a")))
    assert registry.get_or_create(verl_config(tmp_path / "a", "a")) is not a  # a new run from scratch
    assert observe_sampled(registry, [], lambda ks: np.zeros(0), step=5) == {}


def test_run_key_is_the_checkpoint_folder_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    key = run_key(verl_config(Path("ckpt/x"), "x"))
    assert (key.local_dir, key.project, key.experiment) == (str(tmp_path / "ckpt/x"), "knapsack-rl", "x")
    assert run_key(verl_config(Path("ckpt/x"), "y")) != key
    cfg = verl_config(tmp_path)
    cfg.trainer.default_local_dir = None
    with pytest.raises(ValueError, match=re.escape("trainer.default_local_dir must be set")):
        run_key(cfg)


def test_a_batch_of_older_prompts_observed_after_a_newer_one_keeps_the_latest_epoch() -> None:
    """verl's async modes can finish a batch planned in epoch 0 after one planned in epoch 1; the Planner
    refuses an epoch going backwards, so the run records the late batch in the latest epoch."""
    run = VerlRun(make_settings())
    run.plan([1, 2], ["a1", "a2"])  # epoch 0
    run.plan([1, 3], ["b1", "b3"])  # prompt 1 again: epoch 1
    late = run.observe(rollouts_of(["b1", "b3"], np.full(2, N)), np.tile([1.0, 0.0], N), step=1)
    early = run.observe(rollouts_of(["a1", "a2"], np.full(2, N)), np.tile([0.0, 1.0], N), step=2)
    assert late["train/epoch"] == early["train/epoch"] == 1.0 and run.planner.tracker.epoch == 1


# ---------------------------------------------------------------------------- checkpoint round trip
def test_checkpoint_round_trip_in_a_verl_checkpoint_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    run = VerlRun(make_settings(min_count=4))
    for step in range(1, 4):
        expanded = plan_dataproto(run, prompt_batch(list(range(M)), step))
        run.observe(*dataproto_rewards(scored(expanded, (rng.random(len(expanded)) < 0.4).astype(float))), step=step)
    run.plan([100, 101], ["pending-a", "pending-b"])  # in flight at save time (async trainers)
    root = tmp_path / "ckpts"
    folder = run.save(root / "global_step_3")
    assert sorted(p.name for p in folder.iterdir()) == ["state.bin"]  # one file, one checksum
    (root / LATEST_FILE).write_text("3")
    cfg = verl_config(root, resume="auto")
    assert resume_folder(cfg) == root / "global_step_3"
    restored = restore_or_create(cfg)
    assert restored.planner.tracker.to_bytes() == run.planner.tracker.to_bytes()
    assert restored.epoch == run.epoch == 2 and restored.pending == 2
    uids = [f"s4-{i}" for i in range(M)]  # both allocate the next batch identically
    np.testing.assert_array_equal(restored.plan(list(range(M)), uids), run.plan(list(range(M)), uids))
    restored.observe(rollouts_of(["pending-a", "pending-b"], np.full(2, N)), np.ones(2 * N), step=4)  # in flight
    data = bytearray((folder / "state.bin").read_bytes())
    data[len(data) // 2] ^= 1
    (folder / "state.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape("state.bin: state file is truncated or corrupt (SHA-256 mismatch)")):
        restore_or_create(cfg)
    (root / LATEST_FILE).write_text("3; rm -rf /")
    with pytest.raises(ValueError, match=r"latest_checkpointed_iteration.txt: expected the step of verl's latest"):
        resume_folder(cfg)


def test_resume_without_state_is_an_error_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "global_step_5").mkdir()
    cfg = verl_config(tmp_path, resume="resume_path")
    cfg.trainer.resume_from_path = str(tmp_path / "global_step_5")
    with pytest.raises(FileNotFoundError, match="resume_without_state"):
        restore_or_create(cfg)
    cfg.knapsack.resume_without_state = True
    assert len(restore_or_create(cfg).planner.tracker) == 0
    cfg.trainer.resume_mode = "disable"
    assert resume_folder(cfg) is None
    cfg.trainer.resume_mode = "auto"  # no latest_checkpointed_iteration.txt: fresh start
    assert resume_folder(cfg) is None


def test_restore_refuses_a_tracker_saved_with_other_tracker_settings(tmp_path: Path) -> None:
    VerlRun(make_settings(window=16)).save(tmp_path)
    with pytest.raises(ValueError, match=re.escape("window: 16 -> 8")):  # Planner.load_state_dict's message
        VerlRun.load(tmp_path, make_settings(window=8))
    with pytest.raises(FileNotFoundError, match="no knapsack state"):
        VerlRun.load(tmp_path / "elsewhere", make_settings())
    (tmp_path / "knapsack" / "state.bin").unlink()
    (tmp_path / "knapsack" / "run.json").write_text('{"format": "knapsack-rl/verl-run", "version": 1}')
    with pytest.raises(
        ValueError, match=r"knapsack state in the layout of knapsack-rl 0.1.0 \(run.json \+ tracker.bin\)"
    ):
        VerlRun.load(tmp_path, make_settings(window=16))


def _forged_run_states(run: VerlRun) -> list[tuple[dict[str, Any], dict[str, bytes], str]]:
    """Nested, incomplete and out-of-range run states (valid checksums): meta, parts, message."""
    from knapsack_rl.rules.state import pack_rule_state

    assert run.planner is not None
    rule, parts = pack_rule_state("knapsack", run.rule.state_dict())
    batch = {"prompt_ids": [1, 2], "prompt_epochs": [0, 0], "epoch": 0, "step": 0, "n": N, "total_budget": 2 * N,
             "counts": [N, N], "uids": ["u1", "u2"]}  # fmt: skip
    meta = {
        "rule": rule,
        "epoch_counter": run.epochs.state_dict(),
        "fingerprints": [[1, "0123456789abcdef"]],
        "batches": [batch],
        "observed": {"epoch": 0, "step": 0},
        "rewards": {"reward_format": "auto", "success_threshold": None},
    }
    state = rule["state"]
    deep: Any = []
    for _ in range(500):
        deep = [deep]
    return [
        ({k: v for k, v in meta.items() if k != "batches"}, parts, r"holds exactly \['batches', 'epoch_counter'"),
        (meta | {"rule": deep}, parts, r"a rule's state must hold exactly 'name' and 'state'"),
        (meta | {"rule": {"name": "uniform", "state": state}}, parts, r"holds the state of rule 'uniform', not of"),
        (meta | {"rule": {"name": "knapsack", "state": {"version": 1}}}, parts, r"parts \['rule/0'\] are not"),
        (meta | {"rule": {"name": "knapsack", "state": {**state, "config": deep}}}, parts, r"is nested deeper than 32"),
        (meta | {"rule": {"name": "knapsack", "state": {**state, "config": [1]}}}, parts, r"config is invalid"),
        (meta | {"rule": {"name": "knapsack", "state": {**state, "version": 2}}}, parts, r"not a planner state of ver"),
        (
            meta | {"rewards": {"reward_format": "signed", "success_threshold": None}},
            parts,
            r"rewards were mapped to successes with other settings \(reward_format: \"signed\" -> \"auto\"\)",
        ),
        (meta | {"epoch_counter": {"epoch": 0}}, parts, r"an epoch counter state holds exactly"),
        (meta | {"epoch_counter": {"epoch": "0", "seen": []}}, parts, r"epoch counter epoch must be an integer"),
        (meta | {"fingerprints": {"1": "x"}}, parts, r"'fingerprints' must be a list; got dict"),
        (meta | {"fingerprints": [[1]]}, parts, r"fingerprints\[0\] must be a list of 2 entries"),
        (meta | {"fingerprints": [[deep, "0123456789abcdef"]]}, parts, r"fingerprints\[0\]: prompt id .* is not"),
        (meta | {"fingerprints": [[1.5, "0123456789abcdef"]]}, parts, r"fingerprints\[0\]: prompt id 1.5 is not"),
        (meta | {"fingerprints": [[2**64, "0123456789abcdef"]]}, parts, r"prompt id 18446744073709551616 is not"),
        (meta | {"fingerprints": [[1, "zz"]]}, parts, r"fingerprints\[0\]: 'zz' is not a fingerprint"),
        (meta | {"batches": {"0": batch}}, parts, r"'batches' must be a list; got dict"),
        (meta | {"batches": [deep]}, parts, r"'batches\[0\]' must be an object; got list"),
        (meta | {"batches": [{**batch, "epoch": 5}]}, parts, r"\[0\].epoch: epoch 5 is not an integer in \[0, 0"),
        (meta | {"batches": [{**batch, "prompt_epochs": [0, True]}]}, parts, r"prompt_epochs\[1\]: epoch True is not"),
        (meta | {"batches": [{**batch, "uids": [7, "u2"]}]}, parts, r"batches\[0\].uids\[0\]: uid 7 is not a str"),
        (meta | {"batches": [{**batch, "uids": ["u1"]}]}, parts, r"need one entry per prompt"),
        (meta | {"batches": [{**batch, "counts": [N, -1]}]}, parts, r"batches\[0\].counts\[1\]: -1 is not a count"),
        (meta | {"batches": [batch, batch]}, parts, r"'batches' lists a pending uid twice"),
        (meta | {"batches": [{**batch, "prompt_ids": [1, 1]}]}, parts, r"is not a planned step: prompt_ids must"),
        (meta | {"batches": [{**batch, "n": 0}]}, parts, r"is not a planned step: n must be"),
        (meta | {"batches": [{**batch, "prompt_ids": [1, deep]}]}, parts, r"prompt_ids\[1\]: prompt id .* is not"),
        (meta | {"observed": {"epoch": 0, "step": -1}}, parts, r"observed.step -1 is not an integer >= 0"),
        (meta | {"observed": {"epoch": 3, "step": 0}}, parts, r"observed.epoch: epoch 3 is not an integer in \[0, 0\]"),
        (meta, {"rule/0": parts["rule/0"][:100]}, r"tracker file is truncated"),
    ]


def test_nested_or_incomplete_run_states_are_refused_in_one_line(tmp_path: Path) -> None:
    from knapsack_rl.io import write_state_file

    run = VerlRun(make_settings())
    run.plan([1, 2], ["u1", "u2"])
    run.save(tmp_path)
    path = tmp_path / "knapsack" / "state.bin"
    assert VerlRun.load(tmp_path, make_settings()).pending == 2
    for meta, parts, message in _forged_run_states(run):
        write_state_file(path, "verl-run", 3, meta, parts)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: .*{message}") as info:
            VerlRun.load(tmp_path, make_settings())
        assert "\n" not in str(info.value) and type(info.value) is ValueError
    write_state_file(path, "planner", 1, {}, {"tracker": b""})
    with pytest.raises(ValueError, match=r"holds a 'planner' state, not a 'verl-run' state"):
        VerlRun.load(tmp_path, make_settings())
    write_state_file(path, "verl-run", 2, {}, {"tracker": b""})  # the Planner-only format of the last release
    with pytest.raises(ValueError, match=r"verl-run format version 2 is not supported \(this knapsack-rl reads ver"):
        VerlRun.load(tmp_path, make_settings())


# ---------------------------------------------------------------------------- bad ids
def test_missing_prompt_id_is_an_error_not_a_shared_state() -> None:
    batch = prompt_batch([0, 1, 2])
    batch.non_tensor_batch["extra_info"][1] = {"split": "train"}  # verl would silently use index 0
    with pytest.raises(ValueError, match=r"row 1 of the batch has no extra_info\['index'\].*'split'"):
        plan_dataproto(VerlRun(make_settings()), batch)
    with pytest.raises(ValueError, match="batch has no non-tensor column 'extra_info'"):
        plan_dataproto(VerlRun(make_settings()), DataProto.from_dict(tensors={"x": torch.zeros(2, 1)}))


def test_duplicated_and_malformed_ids_raise_and_change_nothing() -> None:
    run = VerlRun(make_settings())
    run.plan([1, 2], ["p", "q"])
    with pytest.raises(ValueError, match=r"prompt_ids \(extra_info.index\) must be unique.*=4"):
        plan_dataproto(run, prompt_batch([3, 4, 4]))
    with pytest.raises(ValueError, match=re.escape("must be an int or a str; got 1.5")):
        read_prompt_ids([{"index": 1.5}])
    with pytest.raises(ValueError, match="uids must be unique"):
        run.plan([5, 6], ["same", "same"])
    with pytest.raises(ValueError, match="empty batch"):
        run.plan([], [])
    assert (run.epoch, run.pending) == (0, 2)  # rejected calls changed nothing (ids 1, 2 would start epoch 1)
    assert read_prompt_ids([{"index": np.int64(3)}, {"index": "q-7"}]) == [3, "q-7"]


def test_one_id_with_two_prompts_is_an_error() -> None:
    run = VerlRun(make_settings())
    run.plan([1, 2], ["a", "b"], prompts=["what is 1+1", "what is 2+2"])
    with pytest.raises(ValueError, match=re.escape("extra_info.index=2 is shared by two different prompts")):
        run.plan([2, 3], ["c", "d"], prompts=["what is 3+3", "what is 4+4"])
    assert run.pending == 2
    off = VerlRun(make_settings(check_prompt_identity=False))
    off.plan([1], ["a"], prompts=["x"])
    off.plan([1], ["b"], prompts=["y"])


# ---------------------------------------------------------------------------- verl's config and keys
def test_settings_come_from_verls_real_config_layout() -> None:
    cfg = OmegaConf.load(VERL_CONFIG)
    for key in (  # every verl key the adapter and the YAML rely on exists in verl's own generated config
        "data.train_batch_size",
        "actor_rollout_ref.rollout.n",
        "trainer.checkpoint_callback_class",
        "trainer.v1.sampler.custom_sampler.path",
        "trainer.v1.sampler.custom_sampler.name",
        "trainer.v1.trainer_mode",
        "trainer.resume_mode",
        "trainer.default_local_dir",
        "trainer.resume_from_path",
        "trainer.project_name",
        "trainer.experiment_name",
        "algorithm.adv_estimator",
        "algorithm.filter_groups.enable",
    ):
        assert OmegaConf.select(cfg, key, default="MISSING") != "MISSING", key
    # not in the yaml (so the YAML adds it), but a field of verl's AgentLoopConfig
    assert "agent_loop_manager_class" in {f.name for f in dataclasses.fields(AgentLoopConfig)}
    cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n = 256, 8
    OmegaConf.set_struct(cfg, False)
    cfg.knapsack = {"preset": "recipe", "max_n": 128, "estimator": "beta", "beta_prior": [2.0, 2.0]}
    settings = KnapsackVerlConfig.from_verl(cfg)
    assert settings.knapsack == KnapsackConfig.preset("recipe", n=8, max_n=128, estimator="beta", beta_prior=(2.0, 2.0))
    assert (settings.n, settings.train_batch_size, settings.adapter) == (8, 256, VerlAdapterConfig())
    cfg.knapsack = {"max_nn": 3, "enable": True}
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['enable', 'max_nn'\] in the knapsack config section"):
        KnapsackVerlConfig.from_verl(cfg)
    cfg.knapsack = {"n": 16}
    with pytest.raises(ValueError, match=re.escape("knapsack.n is verl's actor_rollout_ref.rollout.n")):
        KnapsackVerlConfig.from_verl(cfg)
    cfg.knapsack = {"preset": "papers"}
    with pytest.raises(ValueError, match=re.escape("preset='papers' is not a registered preset")):
        KnapsackVerlConfig.from_verl(cfg)
    cfg.knapsack = {"max_n": 1, "negative_n": 2, "positive_n": 2}
    with pytest.raises(ValueError, match="max_n must be >= min_n"):
        KnapsackVerlConfig.from_verl(cfg)


def test_rollout_level_dispatch_is_not_a_verl_0_9_option_and_is_refused(tmp_path: Path) -> None:
    """verl 0.9.x dispatches whole prompts (AgentLoopManagerTQ chunks the batch; each worker pops
    ``__rollout_n__`` per prompt): covered by the chunking test. ``trainer.v1.rollout_level_dispatch``
    exists only in an open verl proposal, where each prompt is registered as expecting ``rollout.n``
    sessions, which per-prompt counts break; verl 0.9 neither declares nor reads it."""
    assert OmegaConf.select(OmegaConf.load(VERL_CONFIG), "trainer.v1.rollout_level_dispatch", default=None) is None
    readers = [p for p in VERL_DIR.rglob("*.py") if "rollout_level_dispatch" in p.read_text(errors="ignore")]
    assert readers == []
    cfg = verl_config(tmp_path)
    cfg.trainer.v1.rollout_level_dispatch = True
    with pytest.raises(ValueError, match=re.escape("trainer.v1.rollout_level_dispatch=true is not supported")):
        KnapsackVerlConfig.from_verl(cfg)
    cfg.trainer.v1.rollout_level_dispatch = False
    cfg.algorithm.filter_groups = {"enable": True, "metric": "acc"}
    with pytest.raises(ValueError, match=re.escape("algorithm.filter_groups.enable=true has no effect")):
        KnapsackVerlConfig.from_verl(cfg)
    cfg.algorithm.filter_groups.enable = False
    cfg.trainer.v1.sampler.sync_refill_failed_groups = True
    with pytest.raises(ValueError, match=re.escape("sync_refill_failed_groups=true has no effect")):
        KnapsackVerlConfig.from_verl(cfg)


def test_v1_session_keys_pick_the_final_output_of_each_rollout() -> None:
    keys = ["u1_0_0", "u1_0_1", "u1_1_0", "u-2_0_0", "u1_0_2"]
    rows, uids = final_session_rows(keys)
    assert sorted(zip(rows, uids, strict=True)) == [(2, "u1"), (3, "u-2"), (4, "u1")]
    for bad in ("bad", "u1_0_x"):
        with pytest.raises(ValueError, match=f"unexpected TransferQueue key '{bad}'"):
            final_session_rows([bad])


def test_supported_verl_range() -> None:
    assert check_verl_version() == __import__("verl").__version__
    for bad in ("0.8.5", "0.10.0", "0.5.0"):
        with pytest.raises(ValueError, match=f"verl {bad} is not supported"):
            check_verl_version(bad)


# ---------------------------------------------------------------------------- the shipped YAML and examples
def compose_shipped(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(yaml_dir()), version_base=None):
        return compose(config_name="knapsack_grpo", overrides=overrides)


def test_config_module_prints_and_locates_the_shipped_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    from knapsack_rl.integrations.verl.config import main

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-W", "error::RuntimeWarning", "-m", "knapsack_rl.integrations.verl.config", "--print"]
    assert subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout == yaml_path().read_text()
    assert main(["--path"]) == 0 and Path(capsys.readouterr().out.strip()) == yaml_path()
    assert main(["--dir"]) == 0 and Path(capsys.readouterr().out.strip()) == yaml_dir()
    with pytest.raises(SystemExit):
        main([])  # one of --print, --path, --dir is required
    package = Path(importlib.import_module("knapsack_rl").__file__ or "").parent
    assert yaml_path().is_relative_to(package)  # package data, not an example file
    assert not (EXAMPLES / "config").exists()


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
def test_shipped_yaml_composes_with_verls_config_and_passes_its_validation() -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = compose_shipped(
        [
            "actor_rollout_ref.rollout.n=8",
            "data.train_batch_size=256",
            "actor_rollout_ref.actor.ppo_mini_batch_size=32",
            "actor_rollout_ref.actor.use_dynamic_bsz=true",
            "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true",
            "+knapsack.max_n=64",
        ]
    )
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    settings = KnapsackVerlConfig.from_verl(cfg)
    assert settings.knapsack == KnapsackConfig.preset("project", n=8, negative_n=2, positive_n=2, max_n=64)
    assert settings.adapter == VerlAdapterConfig() and settings.train_batch_size == 256
    hooks = ast.parse((REPO / "src/knapsack_rl/integrations/verl/hooks.py").read_text())
    defined = {f"knapsack_rl.integrations.verl.hooks.{n.name}" for n in hooks.body if isinstance(n, ast.ClassDef)}
    sampler = cfg.trainer.v1.sampler.custom_sampler
    named = {
        cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class,
        cfg.trainer.checkpoint_callback_class,
        sampler.path.removeprefix("pkg://") + "." + sampler.name,
    }
    assert named <= defined, named - defined
    assert cfg.trainer.use_v1 and cfg.trainer.v1.trainer_mode == "sync" and cfg.algorithm.adv_estimator == "grpo"
    base = KnapsackVerlConfig.from_verl(compose_shipped(["+knapsack.allocate=false", "actor_rollout_ref.rollout.n=4"]))
    assert not base.knapsack.allocate


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("run_qwen2.5_math_7b_dapo_knapsack.sh", ("recipe", 8, 256, 128, 8)),
        ("run_small_1gpu.sh", ("project", 8, 32, 32, 1)),
    ],
)
def test_example_launch_scripts_use_the_shipped_yaml_and_pass_verls_checks(
    script: str, expected: tuple[str, int, int, int, int]
) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/user", "DRY_RUN": "1", "PYTHON": sys.executable}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(["bash", str(EXAMPLES / script)], env=env, capture_output=True, text=True, check=True)
    argv = out.stdout.splitlines()
    assert argv[:3] == [sys.executable, "-m", "verl.trainer.main_ppo"]
    assert Path(argv[3].removeprefix("--config-path=")) == yaml_dir() and argv[4] == "--config-name=knapsack_grpo"
    cfg = compose_shipped(argv[5:])
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    settings = KnapsackVerlConfig.from_verl(cfg)
    preset, *numbers = expected
    assert settings.knapsack == KnapsackConfig.preset(preset, n=8, negative_n=2, positive_n=2, max_n=numbers[2])
    assert [settings.n, settings.train_batch_size, settings.knapsack.allocation.max_n, cfg.trainer.n_gpus_per_node] == (
        numbers
    )


def test_prepare_script_deduplicates_into_verls_layout(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("prepare_dapo_math", EXAMPLES / "prepare_dapo_math.py")
    assert spec is not None and spec.loader is not None
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    rows = [(q, str(a)) for q, a in [("1+1?", 2), ("2+3?", 5), ("1+1?", 2), ("7*6?", 42), ("2+3?", 5)]]
    frame = pd.DataFrame(
        {
            "data_source": ["math_dapo"] * 5,
            "prompt": [[{"role": "user", "content": q}] for q, _ in rows],
            "ability": ["MATH"] * 5,
            "reward_model": [{"style": "rule", "ground_truth": a} for _, a in rows],
            "extra_info": [{"index": f"uuid-{k}"} for k in range(5)],
        }
    )
    src = tmp_path / "dapo.parquet"
    frame.to_parquet(src)
    out = tmp_path / "dedup" / "train.parquet"
    assert prep.main(["--input", str(src), "--output", str(out)]) == 0
    back = pd.read_parquet(out)
    assert [p[0]["content"] for p in back["prompt"]] == ["1+1?", "2+3?", "7*6?"]
    assert [e["index"] for e in back["extra_info"]] == [0, 1, 2]
    assert [e["source_index"] for e in back["extra_info"]] == ["uuid-0", "uuid-1", "uuid-3"]
    assert read_prompt_ids(list(back["extra_info"])) == [0, 1, 2]  # what the adapter reads


# ---------------------------------------------------------------------------- the hook classes (verl's V1 stack)
class FakeWorker:
    """Stands in for a Ray actor handle of AgentLoopWorkerTQ: records the chunks it is sent."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.generate_sequences = self  # handle.generate_sequences.remote(chunk)

    def remote(self, chunk: Any) -> None:
        self.chunks.append(chunk)


@pytest.mark.parametrize("order", ["callback-first", "manager-first", "no-callback"])
def test_hooks_share_one_run_whatever_their_construction_order(
    order: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    hooks = importlib.import_module("knapsack_rl.integrations.verl.hooks")
    cfg = verl_config(tmp_path / order, order)
    key = run_key(cfg)
    monkeypatch.setattr(ray, "get", lambda refs: refs)  # AgentLoopManagerTQ waits on the workers' acks
    try:
        buffer = hooks.KnapsackReplayBuffer("sync", {}, None, "drop", {})  # verl builds it before the others
        callback = hooks.KnapsackCheckpointCallback(cfg) if order == "callback-first" else None
        manager = hooks.KnapsackAgentLoopManager.__new__(hooks.KnapsackAgentLoopManager)  # no LLM servers
        manager.config, manager.agent_loop_workers = cfg, [FakeWorker(), FakeWorker()]
        td = v1_batch(list(range(M)), step=1, prefix=order)
        manager.generate_sequences(td)  # verl's own chunking and dispatch after our stamping
        if order == "manager-first":
            callback = hooks.KnapsackCheckpointCallback(cfg)
        run = hooks.RUNS.get(key)
        assert callback is None or callback.run is run
        sent = [int(n) for w in manager.agent_loop_workers for c in w.chunks for n in c.get(ROLLOUT_N_KEY)]
        assert sent == td.get(ROLLOUT_N_KEY).tolist() and sum(sent) == M * N
        uids = [str(u) for u in tu.get(td, "uid")]
        keys = [f"{u}_{s}_0" for u, n in zip(uids, sent, strict=True) for s in range(n)]
        sampled = KVBatchMeta(keys=keys, tags=[{}] * len(keys), partition_id="train")
        monkeypatch.setattr(ReplayBuffer, "sample", lambda self, **kw: (sampled, {}))
        scores = torch.nested.nested_tensor([torch.tensor([0.0, 1.0])] * len(keys), layout=torch.jagged)
        monkeypatch.setattr(hooks.tq, "kv_batch_get", lambda **kw: {"rm_scores": scores})
        _, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=M)
        assert metrics["train/rollouts"] == M * N and metrics["train/all_correct_ratio"] == 1.0
        assert run.pending == 0 and len(run.planner.tracker) == M
    finally:
        if key in hooks.RUNS:
            hooks.RUNS.release(key)


def test_the_agent_loop_manager_parses_verls_knapsack_section_once_per_run_not_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three training steps and a validation batch through the V1 manager: verl's config is read and checked
    (KnapsackVerlConfig.from_verl, which builds the rule) once, at the first training batch; every step plans with
    that same run, whose rule keeps its state across the steps."""
    import ray

    hooks = importlib.import_module("knapsack_rl.integrations.verl.hooks")
    parse = KnapsackVerlConfig.from_verl
    parses: list[Any] = []

    def counted(config: Any) -> KnapsackVerlConfig:
        parses.append(config)
        return parse(config)

    monkeypatch.setattr(KnapsackVerlConfig, "from_verl", staticmethod(counted))
    monkeypatch.setattr(ray, "get", lambda refs: refs)  # AgentLoopManagerTQ waits on the workers' acks
    cfg = verl_config(tmp_path, "parsed-once")
    key = run_key(cfg)
    manager = hooks.KnapsackAgentLoopManager.__new__(hooks.KnapsackAgentLoopManager)  # no LLM servers
    manager.config, manager.agent_loop_workers = cfg, [FakeWorker()]
    try:
        for step in (1, 2, 3):
            td = v1_batch(list(range(M)), step=step, prefix="once")
            manager.generate_sequences(td)
            assert len(parses) == 1, f"step {step}: verl's config parsed {len(parses)} times"
            assert td.get(ROLLOUT_N_KEY).sum().item() == M * N
            validation = v1_batch(list(range(2)), step=step, prefix="val")
            tu.assign_non_tensor_data(validation, "validate", True)
            manager.generate_sequences(validation)
        run = hooks.RUNS.get(key)
        assert parses == [cfg] and manager.knapsack_run is run
        assert run.pending == 3 * M  # the one run planned the three training steps, not the validation batches
    finally:
        if key in hooks.RUNS:
            hooks.RUNS.release(key)
