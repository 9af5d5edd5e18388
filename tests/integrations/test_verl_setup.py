"""Setting the verl adapter up for real: the version floor, the recipe's advantage and the group-mean loss
through verl's public registries, the offline config check, and the small example's data and launch (CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

from knapsack_rl.grpo import grouped_advantages
from knapsack_rl.grpo.loss import aggregation_weights, ppo_clip_loss
from knapsack_rl.integrations.verl import SUPPORTED_VERL, check_verl_version
from knapsack_rl.integrations.verl.algos import (
    GROUP_MEAN_ADV_EST,
    RECIPE_ADV_EST,
    recipe_grpo_advantage,
    recipe_grpo_group_mean_advantage,
    register_algorithms,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "verl"
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


# ---------------------------------------------------------------------------- the version floor
def test_verl_0_9_0_is_refused_in_one_line_naming_the_installed_version_and_the_floor() -> None:
    assert SUPPORTED_VERL == (">=0.9.1", "<0.10")
    with pytest.raises(ValueError) as info:
        check_verl_version("0.9.0")  # lacks trainer.checkpoint_callback_class: the hooks would not import
    message = str(info.value)
    assert "\n" not in message and message.startswith("verl 0.9.0 is not supported") and "verl>=0.9.1,<0.10" in message
    for bad in ("0.8.5", "0.10.0", "1.0.0"):
        with pytest.raises(ValueError, match=re.escape(f"verl {bad} is not supported")):
            check_verl_version(bad)
    with pytest.raises(ValueError, match=re.escape("verl version 'nightly' is not a version number")):
        check_verl_version("nightly")
    assert check_verl_version("0.9.1") == "0.9.1" and check_verl_version("0.9.5") == "0.9.5"


def test_every_install_line_and_doc_states_the_same_floor() -> None:
    floor = re.compile(r"verl(\[[^\]]*\])?\s*>=\s*0\.9\.0|verl >= 0\.9\.0|verl>=0\.9\.0")
    texts = [REPO / "README.md", EXAMPLES / "README.md", *EXAMPLES.glob("*.sh"), *EXAMPLES.glob("*.py")]
    stale = [str(p.relative_to(REPO)) for p in texts if floor.search(p.read_text())]
    assert stale == []
    assert "verl>=0.9.1,<0.10" in (REPO / "pyproject.toml").read_text()
    assert "0.9.1" in (EXAMPLES / "README.md").read_text()


# ---------------------------------------------------------------------------- the recipe's advantage
def rollout_batch(sizes: list[int], seed: int, length: int = 6) -> tuple[DataProto, np.ndarray, np.ndarray]:
    """Shuffled rollouts of prompts with ``sizes`` rollouts each: (verl batch, group per row, reward per row).

    Rewards are Bernoulli(0.5) except prompt 3 (if any), which has one success among its rollouts, so its
    recipe advantage is clipped at 5 once it has more than 26 rollouts.
    """
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    r = (rng.random(group.size) < 0.5).astype(np.float64)
    if len(sizes) > 3:
        r[group == 3] = 0.0
        r[np.flatnonzero(group == 3)[0]] = 1.0
    perm = rng.permutation(group.size)  # grouping must come from the uid, not from the position
    group, r = group[perm], r[perm]
    lengths = torch.as_tensor(rng.integers(1, length + 1, group.size))
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    scores = torch.zeros(group.size, length)
    scores[torch.arange(group.size), lengths - 1] = torch.as_tensor(r, dtype=torch.float32)  # reward on the last token
    uids = np.array([f"uid-{g}" for g in group], dtype=object)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": scores, "response_mask": mask}, non_tensors={"uid": uids}
    )
    return data, group, r


def algorithm_config(**changes: object) -> Any:
    return OmegaConf.create({"gamma": 1.0, "lam": 1.0, "norm_adv_by_std_in_grpo": True, **changes})


def test_verls_registry_returns_the_recipe_advantage_and_it_is_our_grouped_advantage() -> None:
    assert register_algorithms() == (RECIPE_ADV_EST, GROUP_MEAN_ADV_EST)
    assert register_algorithms() == (RECIPE_ADV_EST, GROUP_MEAN_ADV_EST)  # idempotent
    assert core_algos.get_adv_estimator_fn(RECIPE_ADV_EST) is recipe_grpo_advantage
    assert core_algos.get_adv_estimator_fn(GROUP_MEAN_ADV_EST) is recipe_grpo_group_mean_advantage
    data, group, r = rollout_batch([2, 3, 7, 40, 16, 5], seed=1)
    keys = [f"uid-{g}_{i}_0" for i, g in enumerate(group)]  # V1 keys {uid}_{session}_{index}
    # verl's V1 path: the trainer's compute_advantage_for_multi_trajectories -> registry -> our estimator
    out = compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator=RECIPE_ADV_EST, config=algorithm_config()
    )
    adv, mask = out.batch["advantages"], out.batch["response_mask"]
    assert torch.equal(adv, adv[:, :1] * mask)  # one advantage per rollout, on its response tokens
    ours = grouped_advantages(torch.as_tensor(r), torch.as_tensor(group), eps=1e-6, clip=5.0).numpy()
    np.testing.assert_allclose(adv[:, 0].double().numpy(), ours, rtol=1e-6, atol=1e-6)
    assert ours.max() == 5.0  # the clip bound (prompt 3: one success in 40 gives 6.2 unclipped)
    # where the clip does not bind, it is verl's own GRPO (unbiased std, eps 1e-6) on the same uids
    verl_grpo, _ = core_algos.compute_grpo_outcome_advantage(
        data.batch["token_level_rewards"], data.batch["response_mask"], data.non_tensor_batch["uid"]
    )
    free = group != 3
    np.testing.assert_allclose(verl_grpo[free, 0].double().numpy(), ours[free], rtol=1e-5, atol=1e-5)
    assert verl_grpo[~free, 0].max().item() > 6.0  # verl's grpo leaves it unclipped


def test_recipe_advantage_gives_a_lone_rollout_zero_and_refuses_unscaled_or_ungrouped_use() -> None:
    r = torch.tensor([[1.0], [0.0], [1.0]])
    adv, _ = recipe_grpo_advantage(r, torch.ones_like(r), np.array(["a", "b", "b"], dtype=object))
    assert adv[:, 0].tolist() == pytest.approx([0.0, -0.7071064, 0.7071064])
    with pytest.raises(ValueError, match=re.escape("algorithm.norm_adv_by_std_in_grpo=false")):
        recipe_grpo_advantage(
            r, torch.ones_like(r), np.array(["a", "b", "b"]), config=algorithm_config(norm_adv_by_std_in_grpo=False)
        )
    with pytest.raises(ValueError, match=re.escape("index (verl's uid per rollout) is required")):
        recipe_grpo_advantage(r, torch.ones_like(r), None)
    with pytest.raises(ValueError, match=re.escape("got 2 uids for 3 rollouts")):
        recipe_grpo_advantage(r, torch.ones_like(r), np.array(["a", "b"]))


def test_importing_the_hooks_registers_the_estimators(monkeypatch: pytest.MonkeyPatch) -> None:
    """verl loads the hooks module by name in its driver: executing it must register both estimators."""
    import importlib

    verl_only = {
        k: v for k, v in core_algos.ADV_ESTIMATOR_REGISTRY.items() if k not in (RECIPE_ADV_EST, GROUP_MEAN_ADV_EST)
    }
    monkeypatch.setattr(core_algos, "ADV_ESTIMATOR_REGISTRY", verl_only)  # verl's registry before any knapsack import
    monkeypatch.delitem(sys.modules, "knapsack_rl.integrations.verl.hooks", raising=False)  # executed afresh below
    with pytest.raises(ValueError, match="Unknown advantage estimator"):
        core_algos.get_adv_estimator_fn(RECIPE_ADV_EST)
    importlib.import_module("knapsack_rl.integrations.verl.hooks")
    assert core_algos.get_adv_estimator_fn(RECIPE_ADV_EST) is recipe_grpo_advantage
    assert core_algos.get_adv_estimator_fn(GROUP_MEAN_ADV_EST) is recipe_grpo_group_mean_advantage


# ---------------------------------------------------------------------------- the group-mean loss
def actor_config() -> Any:
    """What verl's vanilla policy loss reads of ``actor_rollout_ref.actor`` (the recipe's clip settings)."""
    return OmegaConf.create(
        {
            "clip_ratio": 0.2,
            "clip_ratio_low": 0.2,
            "clip_ratio_high": 0.28,
            "clip_ratio_c": 10.0,
            "global_batch_info": {},
        }
    )


def verl_loss(estimator: str, data: DataProto, log_prob: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """verl's loss of one mini-batch holding the step: registry estimator, then its vanilla loss at token-mean."""
    adv, _ = core_algos.get_adv_estimator_fn(estimator)(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        config=algorithm_config(),
    )
    loss, _ = core_algos.get_policy_loss_fn("vanilla")(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=data.batch["response_mask"].bool(),
        loss_agg_mode="token-mean", config=actor_config(),
    )  # fmt: skip
    return loss


def test_group_mean_estimator_gives_our_trainers_group_mean_loss_and_gradient_on_variable_groups() -> None:
    register_algorithms()
    data, group, r = rollout_batch([2, 3, 7, 40, 16, 5], seed=2)
    mask = data.batch["response_mask"]
    rng = torch.Generator().manual_seed(0)
    old = -torch.rand(mask.shape, generator=rng) - 0.1
    log_prob = (old + 0.4 * torch.randn(mask.shape, generator=rng)).requires_grad_(True)  # some ratios get clipped
    loss = verl_loss(GROUP_MEAN_ADV_EST, data, log_prob, old)
    (grad,) = torch.autograd.grad(loss, log_prob)
    ours_lp = log_prob.detach().clone().requires_grad_(True)
    adv = grouped_advantages(torch.as_tensor(r), torch.as_tensor(group), eps=1e-6, clip=5.0).float()
    weights = aggregation_weights(mask, torch.as_tensor(group), "group-mean")
    ours, _ = ppo_clip_loss(ours_lp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=10.0, weights=weights)
    (ours_grad,) = torch.autograd.grad(ours, ours_lp)
    assert loss.item() == pytest.approx(ours.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, ours_grad, rtol=1e-4, atol=1e-7)
    token_mean = verl_loss(RECIPE_ADV_EST, data, log_prob, old)
    assert abs(token_mean.item() - loss.item()) > 1e-3  # verl's plain token mean is another loss


def test_group_mean_weighs_every_prompt_the_same_whatever_its_count() -> None:
    """Under verl's token mean a token weighs ``c_g / T``: each prompt's tokens then weigh 1/G in all, for
    counts from 2 to 40 and any lengths; without the scale (the recipe's estimator) a prompt weighs T_g / T."""
    register_algorithms()
    sizes = [2, 3, 7, 40, 16, 5]
    data, group, _ = rollout_batch(sizes, seed=3)
    mask = data.batch["response_mask"].double()
    uids = data.non_tensor_batch["uid"]
    recipe, _ = core_algos.get_adv_estimator_fn(RECIPE_ADV_EST)(
        data.batch["token_level_rewards"], data.batch["response_mask"], uids
    )
    scaled, _ = core_algos.get_adv_estimator_fn(GROUP_MEAN_ADV_EST)(
        data.batch["token_level_rewards"], data.batch["response_mask"], uids
    )
    nonzero = recipe[:, 0] != 0
    scale = (scaled[nonzero, 0] / recipe[nonzero, 0]).double()  # c_g of each rollout with an advantage
    c = torch.zeros(len(sizes), dtype=torch.float64)
    c[torch.as_tensor(group)[nonzero]] = scale
    tokens = torch.zeros(len(sizes), dtype=torch.float64).index_add_(0, torch.as_tensor(group), mask.sum(-1))
    weight = c * tokens / tokens.sum()  # each prompt's share of verl's token mean
    has_adv = torch.zeros(len(sizes), dtype=torch.bool)
    has_adv[torch.as_tensor(group)[nonzero]] = True
    assert int(has_adv.sum()) >= 4  # prompts whose rollouts all agree have no advantage to weigh
    torch.testing.assert_close(weight[has_adv], torch.full((int(has_adv.sum()),), 1 / len(sizes), dtype=torch.float64))
    plain = tokens / tokens.sum()  # the recipe's token mean: the 40-rollout prompt weighs most
    assert plain[3] > 5 * plain[0] and int(plain.argmax()) == 3


# ---------------------------------------------------------------------------- the offline check
def script_argv(script: str, env: dict[str, str]) -> list[str]:
    """The verl command an example script launches (DRY_RUN=1), one argument per element."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/user", "PYTHON": sys.executable, **env, "DRY_RUN": "1"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(["bash", str(EXAMPLES / script)], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
def test_check_names_verls_default_rollout_n_as_the_cause(capsys: pytest.CaptureFixture[str]) -> None:
    from knapsack_rl.integrations.verl.check import main

    assert main(["--no-files"]) == 1  # the shipped YAML alone: verl's default rollout.n=1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: actor_rollout_ref.rollout.n=1: GRPO needs at least 2 rollouts per prompt")
    assert "\n" not in err and "negative_n" not in err
    assert main(["--no-files", "actor_rollout_ref.rollout.n=8", "knapsack.negative_n=1"]) == 1
    err = capsys.readouterr().err  # the adapter's own reading: the rule built and checked against verl's caps
    assert err.startswith("error: rule 'knapsack' cannot run in verl: it can give a prompt a single rollout")
    assert "(settings: negative_n=1 give a single rollout" in err and "knapsack.negative_n=2" in err
    assert main(["--no-files", "actor_rollout_ref.rollout.n=8", "data.train_batch_sizee=8"]) == 1
    assert capsys.readouterr().err.startswith("error: Hydra could not compose knapsack_grpo")
    bad_loss = [
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
        "algorithm.adv_estimator=knapsack_grpo_group_mean",
    ]
    assert main(["--no-files", "actor_rollout_ref.rollout.n=8", *bad_loss]) == 1
    assert (
        "actor_rollout_ref.actor.loss_agg_mode='seq-mean-token-mean': knapsack_grpo_group_mean"
        in capsys.readouterr().err
    )
    assert main(["--no-files", "actor_rollout_ref.rollout.n=8", "algorithm.adv_estimator=knapsack_grpoo"]) == 1
    assert "algorithm.adv_estimator='knapsack_grpoo' is not registered in verl" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
def test_prepared_gym_files_pass_the_check_of_the_small_example_and_score_with_its_reward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from knapsack_rl.integrations.verl.check import compose, main
    from knapsack_rl.integrations.verl.data import INSTRUCTION, config_fields, gym_config, write_gym_files
    from knapsack_rl.tasks.gym import compute_score

    paths = write_gym_files(tmp_path / "gym", train_size=48, val_size=12)
    train, val = (pd.read_parquet(paths[s]) for s in ("train", "eval"))
    train_ids, val_ids = ({e["index"] for e in f["extra_info"]} for f in (train, val))
    assert (len(train_ids), len(val_ids)) == (48, 12) and not train_ids & val_ids  # a held-out validation set
    assert all(p[0]["content"].endswith(INSTRUCTION) for p in train["prompt"])
    files = {"TRAIN_FILES": str(paths["train"]), "VAL_FILES": str(paths["eval"])}
    argv = script_argv("run_small_1gpu.sh", {**files, "GYM_TRAIN_SIZE": "48", "GYM_VAL_SIZE": "12"})
    config_dir = argv[3].removeprefix("--config-path=")
    assert main(["--config-dir", config_dir, *argv[5:]]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(
        "ok: verl 0.9.1; rule knapsack; rollout.n=8, train_batch_size=32, knapsack allocate=True counts in [2, 32]"
    )
    assert (
        "adv_estimator=knapsack_grpo_group_mean, loss_agg_mode=token-mean; train_files: 48 rows, val_files: 12 rows"
        in summary
    )
    cfg = compose(argv[5:], config_dir)  # the reward config exactly as verl will read it
    reward = cfg.reward.custom_reward_function
    assert (reward.path, reward.name) == ("pkg://knapsack_rl.tasks.gym", "compute_score")
    kwargs = {"reasoning_gym": config_fields(gym_config(train_size=48, val_size=12))}
    assert OmegaConf.to_container(reward.reward_kwargs) == kwargs
    for row in val.itertuples():  # what verl's reward loop calls for each response (reward_kwargs merged in)
        truth = row.reward_model["ground_truth"]
        right = f"thinking... <answer>{truth}</answer>"
        assert compute_score(row.data_source, right, truth, row.extra_info, **kwargs) == 1.0
        assert compute_score(row.data_source, "<answer>no idea</answer>", truth, row.extra_info, **kwargs) < 1.0
    default_sizes = script_argv("run_small_1gpu.sh", files)  # reward config of 1024 / 128 prompts, files of 48 / 12
    assert main(["--config-dir", config_dir, *default_sizes[5:]]) == 1
    assert "reward_kwargs.reasoning_gym differs from" in capsys.readouterr().err


def test_check_refuses_missing_or_unkeyed_data_files_naming_file_and_row(tmp_path: Path) -> None:
    import pandas as pd

    from knapsack_rl.integrations.verl.check import check_data_file

    with pytest.raises(ValueError, match=re.escape(f"data.train_files: {tmp_path}/none.parquet does not exist")):
        check_data_file(str(tmp_path / "none.parquet"), "data.train_files", "index")
    rows = {"prompt": ["a", "b", "c"], "extra_info": [{"index": 0}, {"index": 1}, {"index": 0}]}
    pd.DataFrame(rows).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match=re.escape("dup.parquet: extra_info.index=0 appears twice (row 2)")):
        check_data_file(str(tmp_path / "dup.parquet"), "data.train_files", "index")
    pd.DataFrame({"prompt": ["a"], "extra_info": [{"split": "train"}]}).to_parquet(tmp_path / "noid.parquet")
    with pytest.raises(ValueError, match=re.escape("noid.parquet: row 0 has extra_info.index=None")):
        check_data_file(str(tmp_path / "noid.parquet"), "data.val_files", "index")
    pd.DataFrame({"prompt": ["a"]}).to_parquet(tmp_path / "noinfo.parquet")
    with pytest.raises(ValueError, match=re.escape("noinfo.parquet: no extra_info column")):
        check_data_file(str(tmp_path / "noinfo.parquet"), "data.val_files", "index")


def test_check_warns_when_a_local_ray_lacks_the_cpus_transfer_queue_waits_for(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a 2-core machine verl's launch hangs after printing its config: TransferQueue's 8 storage units,
    its controller and the TaskRunner each take a logical CPU, and Ray waits for them without an error."""
    from knapsack_rl.integrations.verl.check import compose, warn_ray_cpus

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with caplog.at_level("WARNING", logger="knapsack_rl.integrations.verl.check"):
        assert warn_ray_cpus(compose(["ray_kwargs.ray_init.num_cpus=2"])) == 10
    assert "a local Ray gets 2 logical CPUs" in caplog.text and "set ray_kwargs.ray_init.num_cpus=16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="knapsack_rl.integrations.verl.check"):
        warn_ray_cpus(compose(["ray_kwargs.ray_init.num_cpus=16"]))
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # verl joins that cluster: its CPUs are unknown here
        warn_ray_cpus(compose(["ray_kwargs.ray_init.num_cpus=2"]))
    assert caplog.text == ""


# ---------------------------------------------------------------------------- the example scripts
def test_small_example_uses_the_repositorys_venv_and_stops_at_the_check_before_verl(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "examples" / "verl").mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    script = repo / "examples" / "verl" / "run_small_1gpu.sh"
    script.write_text((EXAMPLES / "run_small_1gpu.sh").read_text())
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(["bash", str(script)], env={**env, "DRY_RUN": "1"}, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == str(repo / ".venv" / "bin" / "python")  # not a bare python3
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    missing = f"error: data.train_files: {tmp_path}/home/data/knapsack_gym/train.parquet does not exist"
    assert missing in run.stderr and "verl.trainer.main_ppo" not in run.stderr  # stopped before verl and Ray
    dapo = subprocess.run(["bash", str(script)], env={**env, "DATA": "math"}, capture_output=True, text=True)
    assert dapo.returncode == 2 and "DATA must be gym or dapo; got DATA=math" in dapo.stderr


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
def test_the_check_names_missing_gpus_before_verls_ray_waits_for_them_forever(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine without the GPUs the config asks for, verl's V1 trainer starts Ray and waits for them with no
    error (seen: the small example on this CPU machine, 15 minutes). The scripts' check stops first and says why."""
    import torch

    from knapsack_rl.integrations.verl.check import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = script_argv("run_small_1gpu.sh", {"TRAIN_FILES": "/none/train.parquet", "VAL_FILES": "/none/t.parquet"})
    config_dir = argv[3].removeprefix("--config-path=")
    overrides = ["--no-files", "--config-dir", config_dir, *argv[5:]]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert main(overrides) == 0  # without --devices the config alone is checked
    capsys.readouterr()
    assert main(["--devices", *overrides]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: trainer.n_gpus_per_node=1 but this machine has 0 CUDA device(s)")
        and err.count("\n") == 1
    )
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # verl joins a cluster: its GPUs are not this machine's
    assert main(["--devices", *overrides]) == 0
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["--devices", *overrides]) == 0
    assert capsys.readouterr().out.strip().endswith("; 1 CUDA device(s)")
    script = (EXAMPLES / "run_small_1gpu.sh").read_text()
    assert "knapsack_rl.integrations.verl.check --devices" in script
