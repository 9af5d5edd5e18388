"""The verl adapter against verl's real DataProto, TensorDict helpers, config and core_algos (CPU)."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import re
import subprocess
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

from knapsack_rl import allocate
from knapsack_rl.core.groups import grpo_advantages, step_metrics
from knapsack_rl.grpo import grouped_advantages
from knapsack_rl.integrations.verl import (
    ROLLOUT_N_KEY,
    KnapsackVerlConfig,
    RolloutPlanner,
    check_verl_version,
    dataproto_rewards,
    final_session_rows,
    is_validation_batch,
    plan_dataproto,
    plan_tensordict,
    read_prompt_ids,
)
from knapsack_rl.integrations.verl.resume import LATEST_FILE, restore_or_create, resume_folder

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "verl"
VERL_CONFIG = Path(str(__import__("verl").__file__)).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml"
N, M = 8, 12


# ---------------------------------------------------------------------------- fixtures (local helpers)
def make_config(**kw: object) -> KnapsackVerlConfig:
    base: dict[str, object] = {"n": N, "train_batch_size": M, "max_n": 32, "min_count": 4}
    base.update(kw)
    return KnapsackVerlConfig(**base)  # type: ignore[arg-type]


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


def v1_batch(ids: list[int], step: int = 0) -> Any:
    """A V1-trainer TensorDict as PPOTrainer._fetch_one_gen_batch builds it."""
    td = tu.get_tensordict(
        {
            "input_ids": torch.arange(len(ids) * 3).view(len(ids), 3),
            "uid": np.array([f"uid-{step}-{i}" for i in ids], dtype=object),
            "extra_info": [{"index": i} for i in ids],
            "raw_prompt": [[{"role": "user", "content": f"question {i}"}] for i in ids],
        }
    )
    tu.assign_non_tensor_data(td, "global_steps", step)
    return td


def seeded_planner(p_true: np.ndarray, rng: np.random.Generator, **kw: object) -> RolloutPlanner:
    """A planner whose tracker saw 8 Bernoulli(p) rewards of every prompt 0..M-1 (so estimates exist)."""
    planner = RolloutPlanner(make_config(**kw))
    ids = np.repeat(np.arange(len(p_true)), 8)
    planner.tracker.update(list(ids.tolist()), (rng.random(ids.size) < p_true[ids]).astype(float), epoch=0, step=0)
    return planner


def scored(expanded: DataProto, rewards: np.ndarray) -> DataProto:
    """Put one scalar reward per row on its last response token, as verl's reward loop does."""
    scores = torch.zeros(len(expanded), 4)
    scores[:, -1] = torch.as_tensor(rewards, dtype=torch.float32)
    expanded.batch["token_level_scores"] = scores
    expanded.batch["response_mask"] = torch.ones(len(expanded), 4)
    return expanded


P_TRUE = np.array([0.0, 1.0, 0.5, 0.125, 0.875, 0.25, 0.0, 0.5, 1.0, 0.375, 0.625, 0.0])


# ---------------------------------------------------------------------------- counts stamped and expanded
def test_dataproto_counts_are_the_allocation_and_rows_expand_per_prompt() -> None:
    rng = np.random.default_rng(0)
    planner = seeded_planner(P_TRUE, rng)
    ids = list(range(M))
    p_hat = planner.tracker.estimate(ids)
    expected = allocate(p_hat, n=N, max_n=32).budgets  # computed independently of the adapter
    batch = prompt_batch(ids)
    expanded = plan_dataproto(planner, batch)
    counts = batch.non_tensor_batch[ROLLOUT_N_KEY]
    np.testing.assert_array_equal(counts, expected)
    assert len(expanded) == M * N == int(counts.sum())
    assert counts.max() > N and counts.min() < N  # the knapsack actually moved budget
    # rows of prompt i are counts[i] consecutive copies of row i, carrying its uid and index
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for i in range(M):
        rows = slice(starts[i], starts[i] + counts[i])
        assert set(expanded.non_tensor_batch["uid"][rows]) == {f"uid-0-{i}"}
        assert all(e["index"] == i for e in expanded.non_tensor_batch["extra_info"][rows])
        assert torch.equal(expanded.batch["input_ids"][rows], batch.batch["input_ids"][i].expand(counts[i], 3))
        assert set(expanded.non_tensor_batch[ROLLOUT_N_KEY][rows]) == {counts[i]}


def test_v1_tensordict_gets_rollout_n_per_prompt_and_survives_worker_chunking() -> None:
    rng = np.random.default_rng(1)
    planner = seeded_planner(P_TRUE, rng)
    td = v1_batch(list(range(M)))
    budgets = plan_tensordict(planner, td)
    stamped = td.get(ROLLOUT_N_KEY)
    assert stamped.dtype == torch.int64 and stamped.shape == (M,)
    np.testing.assert_array_equal(stamped.numpy(), budgets)
    assert int(stamped.sum()) == M * N
    # AgentLoopManagerTQ splits the batch with TensorDict.chunk; each worker reads prompt[k] per row
    per_row = [int(v) for chunk in td.chunk(5) for v in chunk.get(ROLLOUT_N_KEY)]
    assert per_row == budgets.tolist()
    assert [len(range(v)) for v in stamped] == budgets.tolist()  # the agent loop does range(n) on the value


def test_validation_batches_are_recognised_as_verl_marks_them() -> None:
    td = v1_batch([1, 2])
    assert not is_validation_batch(td)
    tu.assign_non_tensor_data(td, "validate", True)  # what PPOTrainer._validate does
    assert is_validation_batch(td)
    tu.assign_non_tensor_data(td, "validate", False)
    assert not is_validation_batch(td)


def test_first_epoch_is_uniform_and_total_is_always_prompts_times_n() -> None:
    planner = RolloutPlanner(make_config())
    budgets = planner.plan(list(range(M)), [f"u{i}" for i in range(M)])
    np.testing.assert_array_equal(budgets, np.full(M, N))  # no estimates yet: plain GRPO
    rng = np.random.default_rng(2)
    for trial in range(5):
        p = rng.choice([0.0, 0.1, 0.4, 0.9, 1.0], size=M)
        planner = seeded_planner(p, rng)
        m = int(rng.integers(2, M + 1))
        counts = planner.plan(list(range(m)), [f"t{trial}-{i}" for i in range(m)])
        assert int(counts.sum()) == m * N
        assert counts.max() <= 32 or planner.config.overflow != "pool"


def test_disabled_planner_is_a_uniform_baseline_that_still_tracks() -> None:
    planner = seeded_planner(P_TRUE, np.random.default_rng(3), enable=False)
    counts = planner.plan(list(range(M)), [f"u{i}" for i in range(M)])
    np.testing.assert_array_equal(counts, np.full(M, N))
    metrics = planner.observe([f"u{i}" for i in range(M) for _ in range(N)], np.zeros(M * N), step=1)
    assert "alloc/budget_max" not in metrics and metrics["train/all_wrong_ratio"] == 1.0


# ---------------------------------------------------------------------------- uid grouping and advantages
def test_verl_grpo_groups_by_uid_and_matches_our_grouped_advantages() -> None:
    rng = np.random.default_rng(4)
    planner = seeded_planner(P_TRUE, rng)
    expanded = plan_dataproto(planner, prompt_batch(list(range(M))))
    counts = np.bincount(np.unique(expanded.non_tensor_batch["uid"], return_inverse=True)[1])
    assert counts.min() >= 2  # verl and we differ only on groups of size 1 (see the next test)
    rewards = (rng.random(len(expanded)) < 0.5).astype(np.float64)
    expanded = scored(expanded, rewards)
    # shuffle rows: grouping must come from the uid, never from position
    perm = torch.as_tensor(rng.permutation(len(expanded)))
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


def test_group_of_size_one_is_where_verl_and_knapsack_rl_differ() -> None:
    r = torch.tensor([[1.0], [0.0], [1.0]])
    uid = np.array(["a", "b", "b"], dtype=object)
    adv, _ = core_algos.compute_grpo_outcome_advantage(r, torch.ones_like(r), uid)
    assert adv[0, 0].item() == pytest.approx(1.0 / (1.0 + 1e-6))  # verl: mean 0, std 1 for a lone rollout
    assert grpo_advantages(np.array([1.0, 0.0, 1.0]), np.array([0, 1, 1]))[0] == 0.0  # ours: no baseline -> 0


# ---------------------------------------------------------------------------- tracker update and metrics
def test_observe_updates_tracker_with_every_rollout_and_returns_metrics() -> None:
    rng = np.random.default_rng(5)
    planner = RolloutPlanner(make_config(min_count=4))
    expanded = plan_dataproto(planner, prompt_batch(list(range(M))))
    rewards = (rng.random(len(expanded)) < P_TRUE[np.repeat(np.arange(M), N)]).astype(np.float64)
    uids, r = dataproto_rewards(scored(expanded, rewards))
    metrics = planner.observe(uids, r, step=1)
    np.testing.assert_array_equal(planner.tracker.counts(range(M)), np.full(M, N))
    np.testing.assert_allclose(planner.tracker.estimate(range(M)), rewards.reshape(M, N).mean(axis=1))
    _, group = np.unique(np.asarray(uids, dtype=object), return_inverse=True)
    for key, value in step_metrics(rewards, group).items():
        assert metrics[key] == pytest.approx(value)
    assert metrics["alloc/budget_total"] == M * N and metrics["knapsack/tracked_prompts"] == M
    # the next step allocates from these estimates
    counts = planner.plan(list(range(M)), [f"next-{i}" for i in range(M)])
    np.testing.assert_array_equal(counts, allocate(planner.tracker.estimate(range(M)), n=N, max_n=32).budgets)
    assert planner.epoch == 1  # the same prompts again: the dataloader restarted


def test_signed_rewards_map_to_successes_and_unknown_uids_raise() -> None:
    planner = RolloutPlanner(make_config(min_count=2))
    planner.plan([7, 9], ["a", "b"])
    planner.observe(["a", "a", "b", "b"], [1.0, -1.0, -1.0, -1.0], step=1)
    np.testing.assert_allclose(planner.tracker.estimate([7, 9]), [0.5, 0.0])
    with pytest.raises(ValueError, match=re.escape("never planned, e.g. 'a'")):
        planner.observe(["a"], [1.0])  # a's rewards were already observed
    with pytest.raises(ValueError, match="same length"):
        planner.observe(["x", "y"], [1.0])
    shaped = RolloutPlanner(make_config(min_count=2, success_threshold=0.5))  # e.g. overlong-penalised rewards
    shaped.plan([1], ["s"])
    shaped.observe(["s", "s", "s", "s"], [1.0, -1.3, 0.9, -1.0], step=1)
    np.testing.assert_allclose(shaped.tracker.estimate([1]), [0.5])


# ---------------------------------------------------------------------------- checkpoint round trip
def test_checkpoint_round_trip_in_a_verl_checkpoint_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    planner = RolloutPlanner(make_config(min_count=4))
    for step in range(1, 4):
        ids = list(range(M))
        expanded = plan_dataproto(planner, prompt_batch(ids, step))
        rewards = (rng.random(len(expanded)) < 0.4).astype(float)
        planner.observe(*dataproto_rewards(scored(expanded, rewards)), step=step)
    planner.plan([100, 101], ["pending-a", "pending-b"])  # in flight at save time (async trainers)
    root = tmp_path / "ckpts"
    folder = planner.save(root / "global_step_3")
    assert sorted(p.name for p in folder.iterdir()) == ["planner.json", "tracker.bin"]
    (root / LATEST_FILE).write_text("3")
    cfg = OmegaConf.create(
        {
            "data": {"train_batch_size": M},
            "actor_rollout_ref": {"rollout": {"n": N}},
            "trainer": {"resume_mode": "auto", "default_local_dir": str(root), "resume_from_path": None},
            "knapsack": {"max_n": 32, "min_count": 4},
        }
    )
    assert resume_folder(cfg) == root / "global_step_3"
    restored = restore_or_create(cfg)
    assert restored.tracker.state_dict()["ids"] == planner.tracker.state_dict()["ids"]
    for key, arr in planner.tracker.state_dict()["arrays"].items():
        np.testing.assert_array_equal(restored.tracker.state_dict()["arrays"][key], arr)
    assert restored.state_dict() == json.loads(json.dumps(planner.state_dict()))
    # both planners allocate the next batch identically and the in-flight prompts can still be observed
    uids = [f"s4-{i}" for i in range(M)]
    np.testing.assert_array_equal(restored.plan(list(range(M)), uids), planner.plan(list(range(M)), uids))
    restored.observe(["pending-a", "pending-b"], [1.0, 0.0], step=4)


def test_resume_without_state_is_an_error_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "global_step_5").mkdir()
    cfg = OmegaConf.create(
        {
            "data": {"train_batch_size": M},
            "actor_rollout_ref": {"rollout": {"n": N}},
            "trainer": {"resume_mode": "resume_path", "resume_from_path": str(tmp_path / "global_step_5")},
            "knapsack": {},
        }
    )
    with pytest.raises(FileNotFoundError, match="resume_without_state"):
        restore_or_create(cfg)
    cfg.knapsack.resume_without_state = True
    assert len(restore_or_create(cfg).tracker) == 0
    cfg.trainer.resume_mode = "disable"
    assert resume_folder(cfg) is None
    cfg.trainer.resume_mode = "auto"
    cfg.trainer.default_local_dir = str(tmp_path)  # no latest_checkpointed_iteration.txt: fresh start
    assert resume_folder(cfg) is None


def test_restore_refuses_a_tracker_saved_with_other_estimator_settings(tmp_path: Path) -> None:
    RolloutPlanner(make_config(window=16)).save(tmp_path)
    with pytest.raises(ValueError, match=re.escape("same knapsack.estimator/window/min_count")):
        RolloutPlanner.load(tmp_path, make_config(window=8))
    with pytest.raises(FileNotFoundError, match="no knapsack state"):
        RolloutPlanner.load(tmp_path / "elsewhere", make_config())


# ---------------------------------------------------------------------------- bad ids
def test_missing_prompt_id_is_an_error_not_a_shared_state() -> None:
    batch = prompt_batch([0, 1, 2])
    batch.non_tensor_batch["extra_info"][1] = {"split": "train"}  # verl would silently use index 0
    with pytest.raises(ValueError, match=r"row 1 of the batch has no extra_info\['index'\].*'split'"):
        plan_dataproto(RolloutPlanner(make_config()), batch)
    with pytest.raises(ValueError, match="batch has no non-tensor column 'extra_info'"):
        plan_dataproto(RolloutPlanner(make_config()), DataProto.from_dict(tensors={"x": torch.zeros(2, 1)}))


def test_duplicated_and_malformed_ids_raise() -> None:
    planner = RolloutPlanner(make_config())
    with pytest.raises(ValueError, match=r"prompt_ids \(extra_info.index\) must be unique.*=4"):
        plan_dataproto(planner, prompt_batch([3, 4, 4]))
    with pytest.raises(ValueError, match=re.escape("must be an int or a str; got 1.5")):
        read_prompt_ids([{"index": 1.5}])
    with pytest.raises(ValueError, match="uids must be unique"):
        planner.plan([1, 2], ["same", "same"])
    with pytest.raises(ValueError, match="empty batch"):
        planner.plan([], [])
    assert read_prompt_ids([{"index": np.int64(3)}, {"index": "q-7"}]) == [3, "q-7"]


def test_one_id_with_two_prompts_is_an_error() -> None:
    planner = RolloutPlanner(make_config())
    planner.plan([1, 2], ["a", "b"], prompts=["what is 1+1", "what is 2+2"])
    with pytest.raises(ValueError, match=re.escape("extra_info.index=2 is shared by two different prompts")):
        planner.plan([2, 3], ["c", "d"], prompts=["what is 3+3", "what is 4+4"])


# ---------------------------------------------------------------------------- verl's config and keys
def test_settings_come_from_verls_real_config_layout() -> None:
    cfg = OmegaConf.load(VERL_CONFIG)
    # every verl key the adapter and the examples rely on exists in verl's own generated config
    for key in (
        "data.train_batch_size",
        "actor_rollout_ref.rollout.n",
        "trainer.checkpoint_callback_class",
        "trainer.v1.sampler.custom_sampler.path",
        "trainer.v1.sampler.custom_sampler.name",
        "trainer.v1.trainer_mode",
        "trainer.resume_mode",
        "trainer.default_local_dir",
        "trainer.resume_from_path",
        "algorithm.adv_estimator",
    ):
        assert OmegaConf.select(cfg, key, default="MISSING") != "MISSING", key
    # not in the yaml (so the examples add it with Hydra's '+'), but a field of verl's AgentLoopConfig
    assert "agent_loop_manager_class" in {f.name for f in dataclasses.fields(AgentLoopConfig)}
    assert cfg.actor_rollout_ref.rollout.agent._target_ == "verl.workers.config.AgentLoopConfig"
    cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n = 256, 8
    OmegaConf.set_struct(cfg, False)
    cfg.knapsack = {"max_n": 128, "estimator": "beta"}
    settings = KnapsackVerlConfig.from_verl(cfg)
    assert (settings.n, settings.train_batch_size, settings.max_n, settings.estimator) == (8, 256, 128, "beta")
    cfg.knapsack = {"max_nn": 3}
    with pytest.raises(ValueError, match=r"unknown key\(s\) in the knapsack config section: \['max_nn'\]"):
        KnapsackVerlConfig.from_verl(cfg)
    cfg.knapsack = {"n": 16}
    with pytest.raises(ValueError, match=re.escape("knapsack.n is read from verl's config")):
        KnapsackVerlConfig.from_verl(cfg)
    with pytest.raises(ValueError, match="max_n must be >= 2"):
        make_config(max_n=1)


def test_v1_session_keys_pick_the_final_output_of_each_rollout() -> None:
    keys = ["u1_0_0", "u1_0_1", "u1_1_0", "u-2_0_0", "u1_0_2"]
    rows, uids = final_session_rows(keys)
    assert sorted(zip(rows, uids, strict=True)) == [(2, "u1"), (3, "u-2"), (4, "u1")]
    with pytest.raises(ValueError, match="unexpected TransferQueue key 'bad'"):
        final_session_rows(["bad"])


def test_supported_verl_range() -> None:
    assert check_verl_version() == __import__("verl").__version__
    for bad in ("0.8.5", "0.10.0", "0.5.0"):
        with pytest.raises(ValueError, match=f"verl {bad} is not supported"):
            check_verl_version(bad)


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
@pytest.mark.parametrize(
    ("script", "expected"),
    [("run_qwen2.5_math_7b_dapo_knapsack.sh", (8, 256, 128, 8)), ("run_small_1gpu.sh", (8, 32, 32, 1))],
)
def test_example_launch_scripts_compose_and_pass_verls_own_config_checks(
    script: str, expected: tuple[int, int, int, int]
) -> None:
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/user", "DRY_RUN": "1"}
    out = subprocess.run(["bash", str(EXAMPLES / script)], env=env, capture_output=True, text=True, check=True)
    argv = out.stdout.splitlines()
    assert argv[:3] == ["python3", "-m", "verl.trainer.main_ppo"]
    config_dir = argv[3].removeprefix("--config-path=")
    assert argv[4] == "--config-name=knapsack_grpo" and Path(config_dir) == EXAMPLES / "config"
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="knapsack_grpo", overrides=argv[5:])
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    settings = KnapsackVerlConfig.from_verl(cfg)
    assert (settings.n, settings.train_batch_size, settings.max_n, cfg.trainer.n_gpus_per_node) == expected
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


def test_example_yaml_knapsack_section_matches_the_dataclass_defaults() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(EXAMPLES / "config"), version_base=None):
        cfg = compose(
            config_name="knapsack_grpo", overrides=["actor_rollout_ref.rollout.n=8", "data.train_batch_size=256"]
        )
    assert KnapsackVerlConfig.from_verl(cfg) == KnapsackVerlConfig(n=8, train_batch_size=256)
    assert set(cfg.knapsack) == {f.name for f in dataclasses.fields(KnapsackVerlConfig)} - {"n", "train_batch_size"}


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
