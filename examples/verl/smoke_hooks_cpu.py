"""CPU smoke run of the three verl hooks through verl's own V1 code, Ray and TransferQueue (no GPU, no LLM).

What is real: verl 0.9's config (composed from the YAML shipped in the package), its loaders for the three
hook classes (``build_checkpoint_callback``, ``PPOTrainer._build_replay_buffer``, ``load_class_from_fqn``),
``PPOTrainer._submit_batch_to_rollout``, ``AgentLoopManagerTQ.generate_sequences`` (chunking and Ray
dispatch), ``ReplayBuffer.sample`` (TransferQueue polling), Ray and TransferQueue themselves.
What stands in: the agent-loop worker. Instead of verl's ``AgentLoopWorkerTQ`` (which needs LLM servers)
a small Ray actor does what it does with TransferQueue: pops ``__rollout_n__`` per prompt, writes that
many scored trajectories under ``{uid}_{session}_0`` and marks the prompt finished. Rewards are
Bernoulli(p) with a known p per prompt.

Needs verl's V1 stack (``ray``, ``TransferQueue``, ``torchdata`` ...); it is not part of the test suite::

    python examples/verl/smoke_hooks_cpu.py --out runs/verl_smoke
"""

from __future__ import annotations

import argparse
import json
import types
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import transfer_queue as tq
from hydra import compose, initialize_config_dir
from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback
from verl.trainer.ppo.v1.trainer_base import PPOTrainer
from verl.utils import tensordict_utils as tu
from verl.utils.import_utils import load_class_from_fqn

import knapsack_rl.integrations.verl.hooks as hooks
from knapsack_rl.integrations.verl import run_key, yaml_dir

P_TRUE = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 0.0, 0.2, 0.4, 0.6, 0.9, 1.0])


@ray.remote(num_cpus=0)
class StandInAgentLoopWorker:
    """Writes scored trajectories to TransferQueue the way verl's AgentLoopWorkerTQ does (no LLM)."""

    def __init__(self, seed: int) -> None:
        tq.init()
        self.rng = np.random.default_rng(seed)

    def generate_sequences(self, batch: Any) -> None:
        steps = tu.get(batch, "global_steps")
        for i in range(len(batch)):
            uid, index = tu.get(batch, "uid")[i], tu.get(batch, "extra_info")[i]["index"]
            n = int(batch["__rollout_n__"][i])  # what AgentLoopWorkerTQ._run_prompt pops
            tq.kv_put(key=uid, partition_id="train", tag={"status": "running"})
            keys, fields, tags = [], [], []
            for session in range(n):
                length = int(self.rng.integers(3, 9))
                scores = torch.zeros(length)
                scores[-1] = 1.0 if self.rng.random() < P_TRUE[index] else -1.0  # math_dapo-style +-1
                keys.append(f"{uid}_{session}_0")
                fields.append({"rm_scores": scores, "response_mask": torch.ones(length, dtype=torch.int64)})
                tags.append(
                    {
                        "status": "success",
                        "prompt_len": 4,
                        "response_len": length,
                        "seq_len": 4 + length,
                        "global_steps": steps,
                        "min_global_steps": steps,
                        "max_global_steps": steps,
                    }
                )
            tq.kv_batch_put(keys=keys, fields=tu.list_of_dict_to_tensordict(fields), tags=tags, partition_id="train")
            tq.kv_put(key=uid, partition_id="train", tag={"status": "finished"})


def compose_config(ckpt_dir: Path, resume: str) -> Any:
    with initialize_config_dir(config_dir=str(yaml_dir()), version_base=None):
        return compose(
            config_name="knapsack_grpo",
            overrides=[
                "data.train_batch_size=6",
                "actor_rollout_ref.rollout.n=4",
                "+knapsack.max_n=12",
                "+knapsack.min_count=4",
                f"trainer.default_local_dir={ckpt_dir}",
                f"trainer.resume_mode={resume}",
            ],
        )


def prompt_batch(order: np.ndarray, step: int) -> Any:
    batch = tu.get_tensordict(
        {
            "uid": np.array([str(uuid.uuid4()) for _ in order], dtype=object),
            "extra_info": [{"index": int(i)} for i in order],
            "raw_prompt": [[{"role": "user", "content": f"question {int(i)}"}] for i in order],
        }
    )
    tu.assign_non_tensor_data(batch, "global_steps", step)
    return batch


def run(out: Path, steps: int) -> dict[str, Any]:
    ckpt_dir = out / "ckpt"
    cfg = compose_config(ckpt_dir, "disable")
    trainer = types.SimpleNamespace(config=cfg, trainer_mode="sync", global_steps=0)
    trainer._add_prompts_to_generate = lambda num: 0
    buffer = PPOTrainer._build_replay_buffer(trainer)  # verl's loader -> KnapsackReplayBuffer (first, as in verl)
    buffer.poll_interval = 0.2
    manager_cls = load_class_from_fqn(cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class, "AgentLoopManager")
    manager = manager_cls.__new__(manager_cls)  # skip LLM-server setup; keep verl's generate_sequences
    manager.config = cfg
    manager.agent_loop_workers = [StandInAgentLoopWorker.remote(seed) for seed in range(2)]
    trainer.agent_loop_manager = manager
    callback = None  # built after the first plan: the manager creates the run, the callback finds it
    rng = np.random.default_rng(0)
    log: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        if step % 2 == 1:  # a new epoch: 12 prompts, 6 per step
            perm = rng.permutation(len(P_TRUE))
        order = perm[:6] if step % 2 == 1 else perm[6:]
        trainer.global_steps = step
        batch = prompt_batch(order, step)
        PPOTrainer._submit_batch_to_rollout(trainer, batch)  # verl: register prompts, call our manager
        callback = callback or build_checkpoint_callback(cfg)  # verl's loader -> KnapsackCheckpointCallback
        counts = batch["__rollout_n__"].tolist()
        sampled, metrics = buffer.sample(global_steps=step, partition_id="train", batch_size=6)
        per_uid: dict[str, int] = {}
        for key in sampled.keys:
            per_uid[key.rsplit("_", 2)[0]] = per_uid.get(key.rsplit("_", 2)[0], 0) + 1
        uids = tu.get(batch, "uid")
        assert [per_uid[u] for u in uids] == counts, (per_uid, counts)
        tq.kv_clear(keys=sampled.keys, partition_id="train")
        if step == steps:
            callback.on_save(trainer=trainer, global_step=step, checkpoint_dir=str(ckpt_dir / f"global_step_{step}"))
            (ckpt_dir / "latest_checkpointed_iteration.txt").write_text(str(step))
        keep = ("train/effective_grad_ratio", "alloc/budget_max", "alloc/budget_min", "train/epoch")
        log.append(
            {"step": step, "indices": order.tolist(), "counts": counts, **{k: metrics[k] for k in keep if k in metrics}}
        )
    saved = hooks.RUNS.get(run_key(cfg))
    assert callback is not None and callback.run is saved
    hooks.RUNS.release(run_key(cfg))  # a new driver process, resuming
    restored = hooks.RUNS.get_or_create(compose_config(ckpt_dir, "auto"))
    return {
        "steps": log,
        "restored_prompts": len(restored.planner.tracker),
        "restored_epoch": restored.epoch,
        "restored_state_equals_saved": restored.planner.tracker.to_bytes() == saved.planner.tracker.to_bytes(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/verl_smoke"))
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=8, include_dashboard=False)  # logical CPUs: TQ controller, storage and workers are actors
    tq.init()
    try:
        result = run(args.out, args.steps)
    finally:
        tq.close()
        ray.shutdown()
    (args.out / "smoke.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
