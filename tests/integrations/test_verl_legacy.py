"""The verl legacy back-end without Ray: its batch, its trainer's save order and construction, its entry point, the
check CLI for ``trainer.use_v1=false``, and the start-up check that verl still consumes what each back-end sets
(:mod:`knapsack_rl.integrations.verl.contract`), against verl 0.9.1 and against a verl that no longer does
(monkeypatched). verl's real ``fit`` with these pieces: ``test_verl_legacy_trainer.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import verl
from verl import DataProto

from knapsack_rl.integrations.verl.contract import LEGACY, V1, check_verl_contract, needs, resolve
from knapsack_rl.integrations.verl.legacy import KnapsackRayPPOTrainer, KnapsackTaskRunner, mark_planned, run_legacy
from knapsack_rl.integrations.verl.runs import RUNS, run_key
from tests.integrations.test_verl_legacy_trainer import StubActorWG, _Stub, compose_config, write_files

VERSION = str(verl.__version__)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter that imports what this one does (this checkout's knapsack_rl)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def _batch(m: int, tensor: str = "dummy_tensor") -> DataProto:
    """A step's batch as verl's legacy fit holds it before the repeats: a dummy tensor, uids, prompt ids."""
    out: DataProto = DataProto.from_single_dict({
        tensor: torch.arange(m).reshape(m, 1),
        "uid": np.array([f"u{i}" for i in range(m)], dtype=object),
        "extra_info": np.array([{"index": i} for i in range(m)], dtype=object),
    })  # fmt: skip
    return out


# ----------------------------------------------------------------------------- the planned batch
def test_a_planned_batch_repeats_each_row_by_its_count_keeping_its_uid_and_the_total() -> None:
    """verl's fit calls batch.repeat(repeat_times=n, interleave=True) on both batches: a planned one gives row i
    counts[i] times, rows of a prompt contiguous, M * n rows in all, as a plain DataProto."""
    batch, counts = _batch(4), np.array([6, 2, 3, 5])
    mark_planned(batch, counts, n=4)
    out = batch.repeat(repeat_times=4, interleave=True)
    assert type(out) is DataProto and len(out) == 16
    assert list(out.non_tensor_batch["uid"]) == ["u0"] * 6 + ["u1"] * 2 + ["u2"] * 3 + ["u3"] * 5
    assert out.batch["dummy_tensor"].reshape(-1).tolist() == [0] * 6 + [1] * 2 + [2] * 3 + [3] * 5


def test_verls_union_accepts_two_planned_repeats_and_refuses_a_uniform_one_against_a_planned_one() -> None:
    """Why the back-end marks the step's batch too, not only the generation batch: verl merges the generation
    output into its own repeat of the step's batch with DataProto.union, which asserts that shared columns (uid)
    are equal; a rewrite of the generation batch alone would meet verl's uniform repeat there."""
    counts = np.array([6, 2, 3, 5])
    step, gen = _batch(4), _batch(4, tensor="responses")
    mark_planned(step, counts, 4)
    mark_planned(gen, counts, 4)
    merged = step.repeat(repeat_times=4, interleave=True).union(gen.repeat(repeat_times=4, interleave=True))
    assert list(merged.non_tensor_batch["uid"]).count("u0") == 6
    assert merged.batch["responses"].reshape(-1).tolist() == merged.batch["dummy_tensor"].reshape(-1).tolist()
    planned = _batch(4, tensor="responses")
    mark_planned(planned, counts, 4)
    with pytest.raises(AssertionError, match="uid"):
        _batch(4).repeat(repeat_times=4, interleave=True).union(planned.repeat(repeat_times=4, interleave=True))


@pytest.mark.parametrize(("repeat_times", "interleave"), [(3, True), (4, False)])
def test_a_planned_batch_refuses_a_repeat_the_back_end_was_not_written_for(repeat_times: int, interleave: bool) -> None:
    batch = _batch(2)
    mark_planned(batch, np.array([5, 3]), n=4)
    with pytest.raises(ValueError, match=r"expects repeat_times=rollout.n=4, interleave=True") as info:
        batch.repeat(repeat_times=repeat_times, interleave=interleave)
    assert f"repeat_times={repeat_times}, interleave={interleave}" in str(info.value)


def test_counts_of_the_wrong_length_are_refused_and_leave_the_batch_as_verl_made_it() -> None:
    batch = _batch(3)
    with pytest.raises(ValueError, match=r"one count per row of the batch \(3\); got shape \(2,\)"):
        mark_planned(batch, np.array([4, 4]), n=4)
    assert type(batch) is DataProto and len(batch.repeat(repeat_times=2, interleave=True)) == 6


# ----------------------------------------------------------------------------- the trainer, without Ray
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_files(tmp_path_factory.mktemp("verl_legacy_files"))


@pytest.fixture
def fresh_runs() -> Iterator[None]:
    """Forget the runs a test registers in the process-wide registry."""
    before = set(RUNS.keys())
    yield
    for key in set(RUNS.keys()) - before:
        RUNS.release(key)


def _trainer(config: Any, actor: Any) -> KnapsackRayPPOTrainer:
    from verl.trainer.ppo.ray_trainer import Role
    from verl.utils.config import omega_conf_to_dataclass

    tokenizer = omega_conf_to_dataclass(config.actor_rollout_ref.model).tokenizer
    trainer = KnapsackRayPPOTrainer(config=config, tokenizer=tokenizer, role_worker_mapping={Role.ActorRollout: object},
                                    resource_pool_manager=_Stub(get_n_gpus=lambda: 1))  # fmt: skip
    trainer.actor_rollout_wg = actor
    return trainer


class _FailingSave(StubActorWG):
    def save_checkpoint(self, local_path: str, remote_path: Any, global_steps: int, max_ckpt_to_keep: Any) -> None:
        raise OSError(f"disk full while saving {local_path}")


@pytest.mark.usefixtures("fresh_runs")
def test_the_knapsack_state_is_written_before_verls_checkpoint_and_marker(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """_save_checkpoint writes global_step_k/knapsack/state.bin first: verl failing in its own save leaves the
    state and no marker naming the step; a save that completes has both, the marker last."""
    ckpt = tmp_path / "ckpt"
    trainer = _trainer(compose_config(files, ckpt), _FailingSave(log=None, step=None))
    trainer.global_steps = 1
    with pytest.raises(OSError, match="disk full"):
        trainer._save_checkpoint()
    assert (ckpt / "global_step_1" / "knapsack" / "state.bin").is_file()
    assert not (ckpt / "latest_checkpointed_iteration.txt").exists()
    trainer.actor_rollout_wg = StubActorWG(log=None, step=None)
    trainer.global_steps = 2
    trainer._save_checkpoint()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert (ckpt / "global_step_2" / "knapsack" / "state.bin").is_file()


@pytest.mark.usefixtures("fresh_runs")
def test_a_critic_warm_up_is_refused_when_the_trainer_is_built(files: dict[str, Path], tmp_path: Path) -> None:
    """verl skips _update_actor, where the back-end reads the rewards, during a critic warm-up."""
    config = compose_config(files, tmp_path / "ckpt")
    config.trainer.critic_warmup = 2
    with pytest.raises(ValueError, match=r"^trainer.critic_warmup=2: .* set trainer.critic_warmup=0$"):
        _trainer(config, StubActorWG(log=None, step=None))
    assert run_key(config) not in RUNS


@pytest.mark.usefixtures("fresh_runs")
def test_verls_legacy_task_runner_builds_the_knapsack_trainer_and_gets_its_own_back(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KnapsackTaskRunner.run is verl's main_ppo_v0.TaskRunner.run (tokenizer, datasets, resource pools, the
    trainer), with the trainer it builds a KnapsackRayPPOTrainer; verl's name is back afterwards, also after a
    failure. init_workers (GPUs) and fit (test_verl_legacy_trainer.py) are replaced here by recorders."""
    from verl.trainer import main_ppo_v0
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    built: list[Any] = []
    monkeypatch.setattr(KnapsackRayPPOTrainer, "init_workers", lambda self: built.append(self))
    monkeypatch.setattr(KnapsackRayPPOTrainer, "fit", lambda self: built.append("fit"))
    runner = KnapsackTaskRunner.__ray_actor_class__()
    runner.run(compose_config(files, tmp_path / "ckpt"))
    assert type(built[0]) is KnapsackRayPPOTrainer and built[1:] == ["fit"]
    assert built[0].knapsack is RUNS.get(run_key(built[0].config))
    assert main_ppo_v0.RayPPOTrainer is RayPPOTrainer

    def crash(self: Any) -> None:
        raise RuntimeError("fit failed")

    monkeypatch.setattr(KnapsackRayPPOTrainer, "fit", crash)
    with pytest.raises(RuntimeError, match="fit failed"):
        runner.run(compose_config(files, tmp_path / "ckpt2"))
    assert main_ppo_v0.RayPPOTrainer is RayPPOTrainer


def test_the_entry_point_checks_the_config_then_runs_verls_run_ppo_with_the_knapsack_task_runner(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_legacy is what verl's main_ppo does for use_v1=false (run_ppo), with KnapsackTaskRunner; a config the
    check refuses stops before Ray, in one line."""
    import verl.trainer.main_ppo as main_ppo

    calls: list[tuple[Any, Any]] = []
    monkeypatch.setattr(
        main_ppo, "run_ppo", lambda config, task_runner_class: calls.append((config, task_runner_class))
    )
    config = compose_config(files, tmp_path / "ckpt")
    run_legacy(config)
    assert calls == [(config, KnapsackTaskRunner)]
    config.actor_rollout_ref.rollout.n = 1
    with pytest.raises(SystemExit) as info:
        run_legacy(config)
    assert str(info.value).startswith("error: actor_rollout_ref.rollout.n=1: GRPO needs at least 2 rollouts")
    assert len(calls) == 1


def test_the_module_is_verls_main_ppo_command_line_with_the_legacy_yaml() -> None:
    """python -m knapsack_rl.integrations.verl.legacy composes the shipped legacy YAML over verl's ppo_trainer
    (Hydra's --cfg job prints it without running)."""
    out = _python("-m", "knapsack_rl.integrations.verl.legacy", "--cfg", "job", "actor_rollout_ref.rollout.n=8")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "use_v1: false" in out.stdout and "critic_warmup: 0" in out.stdout
    assert "rule: knapsack" in out.stdout and "negative_n: 2" in out.stdout
    assert "ppo_mini_batch_size" in out.stdout  # verl's ppo_trainer is underneath


# ----------------------------------------------------------------------------- the check CLI, legacy
def test_the_check_accepts_the_legacy_yaml_and_names_its_back_end(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from knapsack_rl.integrations.verl.check import main

    argv = ["--config-name", "knapsack_grpo_legacy", *_overrides(files, tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    summary = capsys.readouterr().out.strip().splitlines()[-1]  # after verl's own validation line
    assert summary.startswith(f"ok: verl {VERSION}; rule knapsack; rollout.n=4, train_batch_size=6")
    assert summary.endswith(
        "back-end: legacy RayPPOTrainer (run it with python -m knapsack_rl.integrations.verl.legacy)"
    )


@pytest.mark.parametrize(
    ("config_name", "override", "message"),
    [
        ("knapsack_grpo", "trainer.use_v1=false",
         "actor_rollout_ref.rollout.agent.agent_loop_manager_class='knapsack_rl.integrations.verl.hooks."
         "KnapsackAgentLoopManager' is the V1 back-end's"),
        ("knapsack_grpo_legacy", "trainer.critic_warmup=3", "trainer.critic_warmup=3: the knapsack legacy back-end"),
        ("knapsack_grpo_legacy", "actor_rollout_ref.rollout.n=1", "actor_rollout_ref.rollout.n=1: GRPO needs"),
    ],
)  # fmt: skip
def test_the_check_refuses_what_the_legacy_back_end_cannot_run(
    config_name: str, override: str, message: str, files: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from knapsack_rl.integrations.verl.check import main

    assert main(["--config-name", config_name, *_overrides(files, tmp_path), override]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def _overrides(files: dict[str, Path], tmp_path: Path) -> list[str]:
    config = compose_config(files, tmp_path / "ckpt")
    keys = ("actor_rollout_ref.model.path", "data.train_files", "data.val_files", "data.train_batch_size",
            "actor_rollout_ref.rollout.n", "actor_rollout_ref.actor.ppo_mini_batch_size",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", "reward.custom_reward_function.path",
            "reward.custom_reward_function.name", "trainer.default_local_dir", "trainer.n_gpus_per_node")  # fmt: skip
    from omegaconf import OmegaConf

    return [f"{k}={OmegaConf.select(config, k)}" for k in keys]


# ----------------------------------------------------------------------------- the start-up check
def test_the_installed_verl_consumes_what_both_back_ends_set() -> None:
    check_verl_contract(V1)
    check_verl_contract(LEGACY)
    assert len(needs(V1)) >= 5 and len(needs(LEGACY)) >= 10


def _v1_worker() -> Any:
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    return AgentLoopWorkerTQ.__ray_actor_class__


def _legacy_fit_uniform(self: Any) -> None:  # a fit that repeats the prompts itself, not through interleave=True
    batch = self._get_gen_batch(None)
    batch.non_tensor_batch["uid"] = None
    gen_batch = batch.repeat(repeat_times=4, interleave=False)
    batch = batch.repeat(repeat_times=4, interleave=True)
    self._update_actor(gen_batch)
    self._save_checkpoint()


async def _run_prompt_without_counts(self: Any, prompt: dict[str, Any], sampling_params: dict[str, Any],
                                     trajectory: dict[str, Any], trace: bool = False) -> None:  # fmt: skip
    n = self.config.actor_rollout_ref.rollout.n  # every prompt gets rollout.n sessions
    del n, prompt


def _task_runner_run_other(self: Any, config: Any) -> None:
    from verl.trainer.ppo.v1 import get_trainer_cls

    get_trainer_cls("sync")(config=config).fit()


def _sample_other(self: Any, global_steps: int, partition_id: str) -> None:
    return None


def _owner(where: str) -> Any:
    """The class (or module) at a dotted name; a Ray actor class as the class verl wrote."""
    obj = resolve(where)
    return getattr(obj, "__ray_actor_class__", obj)


V1_MODULE, LEGACY_TRAINER = "verl.trainer.ppo.v1", "verl.trainer.ppo.ray_trainer.RayPPOTrainer"


@pytest.mark.parametrize(
    ("backend", "owner", "name", "replacement", "what"),
    [
        (V1, f"{V1_MODULE}.agent_loop_tq.AgentLoopWorkerTQ", "_run_prompt", _run_prompt_without_counts,
         "pops __rollout_n__ from each prompt"),
        (V1, f"{V1_MODULE}.replay_buffer.ReplayBuffer", "sample", _sample_other,
         "takes (self, global_steps, partition_id, batch_size)"),
        (LEGACY, LEGACY_TRAINER, "fit", _legacy_fit_uniform, "repeats the generation batch by rollout.n"),
        (LEGACY, "verl.trainer.main_ppo_v0.TaskRunner", "run", _task_runner_run_other,
         "builds the trainer by the name RayPPOTrainer"),
    ],
)  # fmt: skip
def test_a_verl_that_no_longer_consumes_what_the_adapter_sets_is_refused_naming_its_version(
    backend: str, owner: str, name: str, replacement: Any, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each simulated verl (one method replaced) fails the back-end's check in one line: the version, the
    method, what it no longer does; the other back-end's check still passes."""
    monkeypatch.setattr(_owner(owner), name, replacement)
    where = f"{owner}.{name}"
    with pytest.raises(ValueError) as info:
        check_verl_contract(backend)
    message = str(info.value)
    assert message.startswith(f"verl {VERSION}: {where} no longer {what}") and "\n" not in message
    assert f"the knapsack adapter's {backend} back-end relies on it" in message
    other = LEGACY if backend == V1 else V1
    check_verl_contract(other)  # the other back-end's pieces are untouched


def test_a_newer_verl_without_the_piece_is_named_by_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from verl.trainer.ppo import ray_trainer

    def compute_advantage(data: Any, adv_estimator: Any, **kwargs: Any) -> Any:
        return data.batch["scores"]  # groups by nothing

    monkeypatch.setattr(ray_trainer, "compute_advantage", compute_advantage)
    monkeypatch.setattr(verl, "__version__", "0.10.0")
    with pytest.raises(
        ValueError, match=r"^verl 0\.10\.0: verl\.trainer\.ppo\.ray_trainer\.compute_advantage no longer"
    ):
        check_verl_contract(LEGACY)


def test_a_piece_whose_source_cannot_be_read_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    monkeypatch.setattr(RayPPOTrainer, "fit", len)  # a builtin: no Python source to read
    with pytest.raises(ValueError, match=r"RayPPOTrainer\.fit no longer .* \(cannot read it: TypeError\)"):
        check_verl_contract(LEGACY)


def test_the_check_cli_stops_on_a_verl_that_no_longer_pops_the_counts(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from knapsack_rl.integrations.verl.check import main

    monkeypatch.setattr(_v1_worker(), "_run_prompt", _run_prompt_without_counts)
    argv = [*_overrides(files, tmp_path), "actor_rollout_ref.actor.ppo_mini_batch_size=4"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: verl {VERSION}: verl.trainer.ppo.v1.agent_loop_tq.AgentLoopWorkerTQ._run_prompt")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("patch", "module", "what"),
    [
        ("from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ as W\n"
         "async def _run_prompt(self, prompt, sampling_params, trajectory, trace=False):\n    pass\n"
         "W.__ray_actor_class__._run_prompt = _run_prompt\n",
         "knapsack_rl.integrations.verl.hooks", "pops __rollout_n__ from each prompt"),
        ("from verl.trainer.ppo.ray_trainer import RayPPOTrainer as T\n"
         "def _update_actor(self, batch, metrics):\n    pass\n"
         "T._update_actor = _update_actor\n",
         "knapsack_rl.integrations.verl.legacy", "_update_actor no longer takes (self, batch)"),
    ],
)  # fmt: skip
def test_loading_a_back_end_runs_the_check(patch: str, module: str, what: str, tmp_path: Path) -> None:
    """What verl loads by name (the V1 hooks module; the legacy module behind the entry point) checks at import:
    a fresh interpreter with verl changed as above cannot import it."""
    script = tmp_path / "drift.py"
    script.write_text(f"{patch}import {module}\n")
    out = _python(str(script))
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ValueError: verl {VERSION}: ") and what in last
