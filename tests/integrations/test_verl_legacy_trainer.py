"""verl's legacy ``RayPPOTrainer`` on CPU with the knapsack legacy back-end (``trainer.use_v1=false``).

What runs is verl 0.9.1's code: the config (the shipped ``knapsack_grpo_legacy.yaml`` composed with Hydra),
``RayPPOTrainer.__init__`` (tokenizer, ``RLHFDataset``, ``StatefulDataLoader``) through
:class:`~knapsack_rl.integrations.verl.legacy.KnapsackRayPPOTrainer`, and its real ``fit``: uid draw, the two
repeats, ``union``, batch balancing, ``_compute_old_log_prob``, GRPO advantages (``compute_advantage``),
``_update_actor``, ``_save_checkpoint`` / ``_load_checkpoint`` with ``latest_checkpointed_iteration.txt``,
``_validate``, metrics; verl's ``AgentLoopManager`` with its ``AgentLoopWorker`` Ray actors and the
``single_turn_agent`` loop, its ``RewardLoopManager`` and reward workers (a custom reward function), Ray.

What stands in, because it needs a GPU or a model server (as in ``tests/integrations/test_verl_trainer.py``,
whose script provides the files and the LLM client): the LLM server (``ScriptedClient``: "yes" with a known
probability per prompt, scored +1, else "no", -1), the actor worker group (:class:`StubActorWG`: log-probs of 0,
no update; it records what verl hands it), the weight sync and the resource pool.

Three runs of this file as a script (each a new process with its own Ray; 12 prompts, 6 per step, so epoch 1
starts at step 3): A (4 steps, a checkpoint per step, validation at steps 2 and 4), C (the same with the
back-end's rewrite disabled: ``legacy.mark_planned`` made a no-op, so verl repeats every prompt ``rollout.n``
times) and B (a new process resumed from A's ``global_step_3``; not an epoch boundary, where verl 0.9.1's
``_load_checkpoint`` skips the dataloader's state and the next epoch's order differs). About a minute and a half
on two cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
V1_SCRIPT = REPO / "examples" / "verl" / "smoke_hooks_cpu.py"
STEPS, RESUME_AT, N, M = 4, 3, 4, 6


# ----------------------------------------------------------------------------- the driver (run as a script)
def smoke_script() -> ModuleType:
    """The V1 CPU script (files, ScriptedClient), importable by name so that Ray can ship its classes."""
    name = "smoke_hooks_cpu"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, V1_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_files(root: Path) -> dict[str, Path]:
    """The V1 script's files (model folder without weights, 12 training prompts, reward function); the validation
    file asks the scripted server prompts it knows ("q0?", "q1?") under their own ids (100, 101)."""
    import pandas as pd

    files: dict[str, Path] = smoke_script().write_files(root)
    val = pd.read_parquet(files["train"]).iloc[:2].copy()
    val["extra_info"] = [{"index": 100 + i, "split": "test"} for i in range(2)]
    val.to_parquet(files["val"])
    return files


def compose_config(files: dict[str, Path], ckpt: Path, resume: str = "disable", resume_from: str | None = None,
                   test_freq: int = 2) -> Any:  # fmt: skip
    """verl's config as ``python -m knapsack_rl.integrations.verl.legacy`` composes it (the legacy YAML)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from knapsack_rl.integrations.verl.config import yaml_dir
    from knapsack_rl.integrations.verl.legacy import LEGACY_YAML_NAME

    overrides = [
        f"actor_rollout_ref.model.path={files['model']}",
        f"data.train_files={files['train']}",
        f"data.val_files={files['val']}",
        "data.train_batch_size=6",
        "data.max_prompt_length=16",
        "data.max_response_length=8",
        "data.dataloader_num_workers=0",
        "+data.seed=7",
        f"actor_rollout_ref.rollout.n={N}",
        "actor_rollout_ref.rollout.name=vllm",  # a name only: no server is started
        "actor_rollout_ref.rollout.prompt_length=16",
        "actor_rollout_ref.rollout.response_length=8",
        "actor_rollout_ref.rollout.agent.num_workers=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=3",  # x rollout.n = 12: two mini-batches of the 24 rollouts
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        f"reward.custom_reward_function.path={files['reward']}",
        "reward.custom_reward_function.name=compute_score",
        "reward.num_workers=1",
        "trainer.logger=[console]",
        "trainer.val_before_train=false",
        f"trainer.test_freq={test_freq}",
        "trainer.save_freq=1",
        f"trainer.total_training_steps={STEPS}",
        f"trainer.default_local_dir={ckpt}",
        f"trainer.resume_mode={resume}",
        "trainer.n_gpus_per_node=1",
        "+knapsack.uniform_epochs=0",
        "+knapsack.min_count=2",
        "+knapsack.max_n=12",
    ]
    if resume_from is not None:
        overrides.append(f"trainer.resume_from_path={resume_from}")
    with initialize_config_dir(config_dir=str(yaml_dir()), version_base=None):
        config = compose(config_name=LEGACY_YAML_NAME, overrides=overrides)
    OmegaConf.resolve(config)
    return config


class StubActorWG:
    """The calls verl's legacy trainer makes on the actor worker group, without a model (one data-parallel rank).

    ``update_actor`` records what verl hands the actor: rollouts per uid, and verl's advantages against
    :func:`knapsack_rl.grpo.grouped_advantages` of the same rewards grouped by uid."""

    def __init__(self, log: Any, step: Any) -> None:
        self._dispatch_info: dict[str, list[int]] = {}
        self.log, self.step = log, step

    def _query_dispatch_info(self, role: str) -> list[int]:
        return [0]

    def compute_log_prob(self, td: Any) -> Any:
        import torch
        from verl.utils import tensordict_utils as tu

        zeros = torch.nested.as_nested_tensor([torch.zeros(len(x)) for x in td["input_ids"].unbind()],
                                              layout=torch.jagged)  # fmt: skip
        return tu.get_tensordict({"log_probs": zeros, "entropy": zeros.clone()}, {"metrics": {"mfu": 0.0}})

    def update_actor(self, td: Any) -> Any:
        import numpy as np
        import torch
        from verl.utils import tensordict_utils as tu

        from knapsack_rl.grpo import grouped_advantages

        uids = [str(u) for u in tu.get(td, "uid")]
        mask = td["response_mask"].double()
        adv = (td["advantages"].double() * mask).sum(-1) / mask.sum(-1)  # every response token carries it
        rewards = td["token_level_scores"].double().sum(-1)
        _, group = np.unique(np.asarray(uids, dtype=object), return_inverse=True)
        ours = grouped_advantages(rewards, torch.as_tensor(group.reshape(-1)))
        diff, biggest = float((adv - ours).abs().max()), float(adv.abs().max())
        self.log("update", step=self.step(), rows=len(uids), per_uid=_per_uid(uids), max_abs_diff=diff,
                 max_abs_adv=biggest)  # fmt: skip
        return tu.get_tensordict({"loss": torch.zeros(1)}, {"metrics": {"mfu": 0.0, "pg_loss": 0.0}})

    def save_checkpoint(self, local_path: str, remote_path: Any, global_steps: int, max_ckpt_to_keep: Any) -> None:
        Path(local_path).mkdir(parents=True, exist_ok=True)
        (Path(local_path) / "weights.txt").write_text(str(global_steps))

    def load_checkpoint(self, local_path: str, del_local_after_load: bool = False) -> None:
        if not (Path(local_path) / "weights.txt").is_file():
            raise FileNotFoundError(f"no stub weights in {local_path}")


class _Stub:
    """An object with the given methods (resource pool, weight sync, server manager)."""

    def __init__(self, **methods: Any) -> None:
        self.__dict__.update(methods)


def _per_uid(uids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in uids:
        out[u] = out.get(u, 0) + 1
    return out


def build_trainer(config: Any, log: Any) -> Any:
    """verl's legacy trainer as ``TaskRunner.run`` builds it (real ``__init__``), its workers as ``init_workers``
    leaves them with the GPU parts stubbed; verl's reward workers and agent-loop workers are real Ray actors."""
    import ray
    from verl.experimental.agent_loop import AgentLoopManager
    from verl.experimental.reward_loop import RewardLoopManager
    from verl.trainer.ppo.ray_trainer import Role
    from verl.utils.config import omega_conf_to_dataclass

    from knapsack_rl.integrations.verl.legacy import KnapsackRayPPOTrainer

    tokenizer = omega_conf_to_dataclass(config.actor_rollout_ref.model).tokenizer
    trainer = KnapsackRayPPOTrainer(config=config, tokenizer=tokenizer, role_worker_mapping={Role.ActorRollout: object},
                                    resource_pool_manager=_Stub(get_n_gpus=lambda: 1))  # fmt: skip
    trainer.actor_rollout_wg = StubActorWG(log, step=lambda: trainer.global_steps)
    trainer.reward_loop_manager = RewardLoopManager(config=config, rm_resource_pool=None)
    ray.cloudpickle.register_pickle_by_value(smoke_script())  # the workers get ScriptedClient by value
    client = smoke_script().ScriptedClient(config, dict(tokenizer.get_vocab()), seed=int(config.data.seed))
    trainer.async_rollout_manager = AgentLoopManager.create(
        config=config, llm_client=client, teacher_client=None,
        reward_loop_worker_handles=trainer.reward_loop_manager.reward_loop_workers,
    )  # fmt: skip
    trainer.checkpoint_manager = _Stub(update_weights=lambda step: None, sleep_replicas=lambda: None)
    trainer.llm_server_manager = _Stub()
    return trainer


def watch(trainer: Any, log: Any) -> None:
    """Log what the back-end and verl did (each wrapped function still runs as it is)."""
    import knapsack_rl.integrations.verl.legacy as legacy

    plan, generate, update = (
        legacy.plan_legacy_batch,
        trainer.async_rollout_manager.generate_sequences,
        trainer._update_actor,
    )

    def logged_plan(run: Any, batch: Any, step: int) -> Any:
        counts = plan(run, batch, step)
        log("plan", step=step, uids=[str(u) for u in batch.non_tensor_batch["uid"]], counts=counts.tolist(),
            ids=[int(e["index"]) for e in batch.non_tensor_batch["extra_info"]])  # fmt: skip
        return counts

    def logged_generate(batch: Any) -> Any:
        out = generate(batch)
        uids = [str(u) for u in batch.non_tensor_batch["uid"]]
        log("validate" if batch.meta_info.get("validate") else "generate", step=trainer.global_steps,
            per_uid=_per_uid(uids), rows_in=len(batch), rows_out=len(out))  # fmt: skip
        return out

    def logged_update(batch: Any) -> Any:
        out = update(batch)
        metrics = {k: float(v) for k, v in out.meta_info["metrics"].items() if k.startswith(("train/", "alloc/"))}
        log("metrics", step=trainer.global_steps, metrics=metrics)
        return out

    legacy.plan_legacy_batch = logged_plan  # KnapsackRayPPOTrainer._get_gen_batch calls it by this name
    trainer.async_rollout_manager.generate_sequences = logged_generate
    trainer._update_actor = logged_update


def run(args: argparse.Namespace) -> int:
    import knapsack_rl.integrations.verl.legacy as legacy
    from knapsack_rl.integrations.verl.config import KnapsackVerlConfig

    events = args.out / f"events_{args.tag}.jsonl"

    def log(event: str, **fields: Any) -> None:
        with events.open("a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")

    files = write_files(args.out / f"files_{args.tag}")
    config = compose_config(files, args.ckpt, args.resume, args.resume_from, test_freq=args.test_freq)
    parse, parses = KnapsackVerlConfig.from_verl, []  # how often the back-end reads verl's knapsack section
    KnapsackVerlConfig.from_verl = staticmethod(lambda cfg: parses.append(1) or parse(cfg))
    trainer = build_trainer(config, log)
    log("restored", folder=str(trainer.knapsack.save(args.out / f"restored_{args.tag}")))
    watch(trainer, log)
    if args.drop_counts:
        legacy.mark_planned = lambda batch, counts, n: None  # the rewrite disabled: verl repeats uniformly
    try:
        trainer.fit()
    except ValueError as exc:
        log("error", message=str(exc))
        return 3
    log("done", global_steps=trainer.global_steps, parses=len(parses))
    return 0


def main() -> int:
    import ray

    parser = argparse.ArgumentParser(description="verl's legacy RayPPOTrainer on CPU with the knapsack back-end")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--resume", default="disable", choices=["disable", "auto", "resume_path"])
    parser.add_argument("--resume-from", default=None)
    parser.add_argument("--test-freq", type=int, default=2)
    parser.add_argument("--drop-counts", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=True)  # logical CPUs for verl's workers
    try:
        return run(args)
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- the tests
def _run(out: Path, tag: str, *args: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RAY_DEDUP_LOGS": "0"}
    cmd = [sys.executable, __file__, "--out", str(out), "--tag", tag, *args]
    with (out / f"log_{tag}.txt").open("wb") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=420, check=False)
    return proc.returncode


def _events(out: Path, tag: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / f"events_{tag}.jsonl").read_text().splitlines()]


def _tail(out: Path, tag: str) -> str:
    return (out / f"log_{tag}.txt").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs A, C, then B (module docstring); their events under ``events_{a,c,b}.jsonl``."""
    out = tmp_path_factory.mktemp("verl_legacy_cpu")
    assert _run(out, "a", "--ckpt", str(out / "ckpt")) == 0, _tail(out, "a")
    assert _run(out, "c", "--ckpt", str(out / "ckpt_c"), "--test-freq", "-1", "--drop-counts") == 3, _tail(out, "c")
    resume_from = str(out / "ckpt" / f"global_step_{RESUME_AT}")
    rc = _run(out, "b", "--ckpt", str(out / "ckpt_b"), "--resume", "resume_path", "--resume-from", resume_from)
    assert rc == 0, _tail(out, "b")
    return out


def _by_step(events: list[dict[str, Any]], kind: str) -> dict[int, dict[str, Any]]:
    return {e["step"]: e for e in events if e["event"] == kind}


def test_verls_legacy_fit_runs_each_uid_exactly_its_count_with_the_total_kept_and_verls_grpo_advantages(
    runs: Path,
) -> None:
    """Every training step: verl's agent loop got each uid exactly its planned count, and so did the actor (after
    verl's repeat of its own batch, union and balancing); the total is M * n (verl's mini-batches unchanged); verl's
    GRPO advantages are knapsack_rl.grpo.grouped_advantages of the rewards grouped by uid; the rule's metrics reach
    verl's metrics. Epoch 1 (step 3) moves rollouts between prompts."""
    events = _events(runs, "a")
    plans, gens, updates, metrics = (_by_step(events, k) for k in ("plan", "generate", "update", "metrics"))
    assert sorted(plans) == sorted(gens) == sorted(updates) == sorted(metrics) == list(range(1, STEPS + 1))
    for step, plan in plans.items():
        counts = dict(zip(plan["uids"], plan["counts"], strict=True))
        assert sum(plan["counts"]) == M * N, step
        assert gens[step]["per_uid"] == counts and gens[step]["rows_in"] == gens[step]["rows_out"] == M * N, step
        assert updates[step]["per_uid"] == counts and updates[step]["rows"] == M * N, step
        assert updates[step]["max_abs_diff"] < 1e-6 and updates[step]["max_abs_adv"] > 0.5, step
        assert metrics[step]["metrics"]["train/rollouts"] == M * N and metrics[step]["metrics"]["train/prompts"] == M
    assert plans[1]["counts"] == [N] * M  # epoch 0: nothing estimated yet
    for step in (3, 4):  # epoch 1: the knapsack's counts
        assert len(set(plans[step]["counts"])) > 1 and min(plans[step]["counts"]) >= 2, step
        assert metrics[step]["metrics"]["alloc/budget_total"] == M * N
    done = events[-1]
    assert done["event"] == "done" and done["global_steps"] == STEPS + 1
    assert done["parses"] == 1  # verl's knapsack section read once (trainer built), not once per step


def test_validation_keeps_verls_val_n_and_is_not_planned(runs: Path) -> None:
    """verl's _validate (steps 2 and 4) goes through _get_gen_batch too: its batches keep val_kwargs.n (1) and
    never reach the rule (only the training steps were planned)."""
    events = _events(runs, "a")
    validations = [e for e in events if e["event"] == "validate"]
    assert [e["step"] for e in validations] == [2, 4]
    assert all(set(e["per_uid"].values()) == {1} and e["rows_out"] == e["rows_in"] for e in validations)
    assert [e["step"] for e in events if e["event"] == "plan"] == list(range(1, STEPS + 1))


def test_with_the_rewrite_disabled_verl_runs_uniform_counts_and_the_back_end_refuses_the_step(runs: Path) -> None:
    """Check that the tests above see the counts: with legacy.mark_planned a no-op, verl's fit repeats every prompt
    rollout.n times; epochs 0 pass (the plan is uniform) and step 3, planned non-uniform, is refused in one line
    naming the prompt, both counts and what to check, before the actor is updated."""
    events = _events(runs, "c")
    plans, gens = _by_step(events, "plan"), _by_step(events, "generate")
    assert sorted(plans) == [1, 2, 3] and len(set(plans[3]["counts"])) > 1  # step 3 was the last
    assert set(gens[3]["per_uid"].values()) == {N}  # what verl ran: its uniform repeat
    assert len([e for e in events if e["event"] == "update"]) == 2  # step 3 never reached the actor
    message = next(e["message"] for e in events if e["event"] == "error")
    assert "rollouts but 4 came back: verl did not run the knapsack counts" in message and "\n" not in message
    assert "KnapsackRayPPOTrainer" in message


def test_the_state_is_saved_before_verls_marker_and_a_new_process_resumes_it_exactly(runs: Path) -> None:
    """Every global_step_k of run A holds verl's state and knapsack/state.bin; run B (a new process, verl's
    _load_checkpoint from global_step_3: the dataloader and the stub weights) restored exactly that state and plans
    step 4 with the same prompts and the same (non-uniform) counts as run A."""
    ckpt = runs / "ckpt"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == str(STEPS)
    for step in range(1, STEPS + 1):
        folder = ckpt / f"global_step_{step}"
        assert (folder / "actor" / "weights.txt").is_file() and (folder / "data.pt").is_file()
        assert (folder / "knapsack" / "state.bin").is_file()
    resumed = _events(runs, "b")
    restored = Path(next(e["folder"] for e in resumed if e["event"] == "restored")) / "state.bin"
    assert restored.read_bytes() == (ckpt / f"global_step_{RESUME_AT}" / "knapsack" / "state.bin").read_bytes()
    plan_a, plan_b = _by_step(_events(runs, "a"), "plan")[STEPS], _by_step(resumed, "plan")[STEPS]
    assert sorted(_by_step(resumed, "plan")) == [STEPS]
    assert plan_b["ids"] == plan_a["ids"]  # verl's dataloader state
    assert plan_b["counts"] == plan_a["counts"] and len(set(plan_a["counts"])) > 1  # the rule's state
    assert [e["event"] for e in resumed][-1] == "done"


if __name__ == "__main__":
    sys.exit(main())
