"""verl's own V1 trainer on CPU with the knapsack hooks: real rollout workers and agent loop, stubbed GPU workers.

What runs is verl 0.9.1's code: the config (the YAML shipped in the package, composed with Hydra),
``PPOTrainerSync`` (its ``__init__``, which loads ``KnapsackCheckpointCallback`` and ``KnapsackReplayBuffer``
by name; its tokenizer and ``RLHFDataset`` / ``StatefulDataLoader`` set-up; ``_load_checkpoint``; ``fit`` and
``step``: prompt submission, ``ReplayBuffer.sample``, batch balancing and padding, advantages,
``_save_checkpoint`` with ``latest_checkpointed_iteration.txt``, metrics), ``KnapsackAgentLoopManager.create``
with verl's ``AgentLoopWorkerTQ`` Ray actors and its ``single_turn_agent`` loop, verl's ``RewardLoopManager``
and its reward workers (with a custom reward function), Ray and TransferQueue.

What stands in, because it needs a GPU or a model server: the LLM server (:class:`ScriptedClient`, an
``LLMServerClient`` whose ``generate`` answers "yes" with a known probability per prompt and "no"
otherwise; the reward function scores "yes" +1 and "no" -1, as ``math_dapo`` does), the actor worker group
(:class:`StubActor`: log-probs of 0, no update; it records verl's advantages), the weight sync and the
resource pool. The model folder holds a config and a character tokenizer built here, no weights.

Every event goes to ``{out}/events_{resume mode}.jsonl`` (``plan``: the counts stamped per uid; ``sample``:
rollouts per uid sampled by verl's replay buffer and the adapter's metrics; ``update``: verl's advantages against
:func:`knapsack_rl.grpo.grouped_advantages`, the padding rows; ``restored``: the rule's state after the
trainer was built). ``tests/integrations/test_verl_trainer.py`` runs it, kills it and resumes it::

    python examples/verl/smoke_hooks_cpu.py --out runs/verl_cpu --steps 4
    python examples/verl/smoke_hooks_cpu.py --out runs/verl_cpu --steps 4 --block-save 4   # hangs in step 4's save
    python examples/verl/smoke_hooks_cpu.py --out runs/verl_cpu --ckpt runs/verl_cpu/ckpt_b --steps 4 \
        --resume resume_path --resume-from runs/verl_cpu/ckpt/global_step_3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
import transfer_queue as tq
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.experimental.reward_loop.reward_loop import RewardLoopManager
from verl.trainer.ppo.v1 import get_trainer_cls
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

import knapsack_rl.integrations.verl.hooks as hooks
from knapsack_rl.grpo import grouped_advantages
from knapsack_rl.integrations.verl import ROLLOUT_N_KEY, run_key, yaml_dir

P_TRUE = (1.0, 0.0, 0.5, 0.25, 0.75, 1.0, 0.0, 0.5, 0.125, 0.875, 0.5, 0.375)
"""Chance that the scripted server answers prompt i with "yes" (12 training prompts, 6 per step)."""
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .?:"
SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")
CHAT = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}a:{% endif %}"
REWARD = """def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return 1.0 if solution_str.strip().startswith("yes") else -1.0
"""


# ----------------------------------------------------------------------------- files (no download)
def write_files(root: Path) -> dict[str, Path]:
    """A model folder (config + character tokenizer, no weights), train / val parquet files, a reward function."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    model = root / "model"
    vocab = {tok: i for i, tok in enumerate(SPECIAL)} | {c: len(SPECIAL) + i for i, c in enumerate(CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.chat_template = CHAT
    tok.save_pretrained(model)
    LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, eos_token_id=vocab["<eos>"], pad_token_id=0,
        bos_token_id=vocab["<bos>"], architectures=["LlamaForCausalLM"],
    ).save_pretrained(model)  # fmt: skip

    def rows(ids: range) -> pd.DataFrame:
        return pd.DataFrame({
            "data_source": ["knapsack_cpu"] * len(ids),
            "prompt": [[{"role": "user", "content": f"q{i}?"}] for i in ids],
            "ability": ["yes"] * len(ids),
            "reward_model": [{"style": "rule", "ground_truth": "yes"} for _ in ids],
            "extra_info": [{"index": i, "split": "train"} for i in ids],
        })  # fmt: skip

    rows(range(len(P_TRUE))).to_parquet(root / "train.parquet")
    rows(range(100, 102)).to_parquet(root / "val.parquet")
    (root / "reward.py").write_text(REWARD)
    return {"model": model, "train": root / "train.parquet", "val": root / "val.parquet", "reward": root / "reward.py"}


def compose_config(files: dict[str, Path], ckpt: Path, steps: int, resume: str, resume_from: str | None) -> Any:
    """verl's config as ``main_ppo`` composes it: verl's ``ppo_trainer`` + the shipped YAML + these overrides."""
    overrides = [
        f"actor_rollout_ref.model.path={files['model']}",
        f"data.train_files={files['train']}",
        f"data.val_files={files['val']}",
        "data.train_batch_size=6",
        "data.max_prompt_length=16",
        "data.max_response_length=8",
        "data.dataloader_num_workers=0",
        "+data.seed=7",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.name=vllm",  # a name only: no server is started
        "actor_rollout_ref.rollout.prompt_length=16",
        "actor_rollout_ref.rollout.response_length=8",
        "actor_rollout_ref.rollout.agent.num_workers=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",  # 24 rollouts per step: verl pads them to 32
        f"reward.custom_reward_function.path={files['reward']}",
        "reward.custom_reward_function.name=compute_score",
        "reward.num_workers=1",
        "trainer.logger=[console]",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=1",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={ckpt}",
        f"trainer.resume_mode={resume}",
        "trainer.n_gpus_per_node=1",
        "+knapsack.uniform_epochs=0",
        "+knapsack.min_count=2",
        "+knapsack.max_n=12",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    ]
    if resume_from is not None:
        overrides.append(f"trainer.resume_from_path={resume_from}")
    with initialize_config_dir(config_dir=str(yaml_dir()), version_base=None):
        return compose(config_name="knapsack_grpo", overrides=overrides)


# ----------------------------------------------------------------------------- stand-ins for GPU pieces
class ScriptedClient(LLMServerClient):
    """verl's LLM client with a scripted server: the k-th answer to prompt "q{i}?" in this process is "yes" with
    probability ``P_TRUE[i]`` (a generator keyed on seed, i and k), else "no"; then <eos>."""

    def __init__(self, config: Any, vocab: dict[str, int], seed: int) -> None:
        super().__init__(config=config)
        self.vocab, self.seed = vocab, seed
        self.chars = {v: k for k, v in vocab.items()}
        self.asked: dict[int, int] = {}

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kw: Any) -> Any:
        text = "".join(self.chars.get(t, "") for t in prompt_ids)
        i = int(re.search(r"q(\d+)\?", text).group(1))  # type: ignore[union-attr]
        k = self.asked[i] = self.asked.get(i, -1) + 1
        yes = np.random.default_rng([self.seed, i, k]).random() < P_TRUE[i]
        answer = ("yes" if yes else "no") + "." * (k % 3)  # lengths differ between sessions
        ids = [self.vocab[c] for c in answer] + [self.vocab["<eos>"]]
        return TokenOutput(token_ids=ids, log_probs=[0.0] * len(ids), stop_reason="completed",
                           extra_fields={"global_steps": 0, "min_global_steps": 0, "max_global_steps": 0})  # fmt: skip


class StubActor:
    """The actor worker group's calls verl's trainer makes, without a model (one data-parallel rank)."""

    def __init__(self, log: Any) -> None:
        self._dispatch_info: dict[str, list[int]] = {}
        self.log = log

    def _query_dispatch_info(self, role: str) -> list[int]:
        return [0]

    def compute_log_prob(self, batch: Any) -> Any:
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["input_ids"])
        zeros = torch.nested.as_nested_tensor([torch.zeros(len(x)) for x in data["input_ids"].unbind()],
                                              layout=torch.jagged)  # fmt: skip
        fields = {"log_probs": zeros, "entropy": zeros.clone()}
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields_td(fields, len(batch)))
        return batch

    def update_actor(self, batch: Any) -> dict[str, Any]:
        """Record verl's advantages of the real rows against ours (grouped by uid) and the padding rows."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["advantages", "rm_scores", "uid"])  # fmt: skip
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        adv = torch.stack([a[-1] for a in data["advantages"].unbind()]).double()  # every token carries it
        rewards = torch.stack([r.sum() for r in data["rm_scores"].unbind()]).double()
        uids = [str(u) for u in data["uid"]]
        _, group = np.unique(np.asarray([uids[i] for i in real], dtype=object), return_inverse=True)
        ours = grouped_advantages(rewards[real], torch.as_tensor(group.reshape(-1)))
        self.log("update", rows=len(batch), real=len(real), padding_uids=sorted({uids[i] for i in range(len(uids))
                 if i not in set(real)}), max_abs_diff=float((adv[real] - ours).abs().max()),
                 max_abs_adv=float(adv[real].abs().max()))  # fmt: skip
        return {"metrics": {"mfu": 0.0, "pg_loss": 0.0}}

    def save_checkpoint(self, local_path: str, remote_path: Any, global_steps: int, max_ckpt_to_keep: Any) -> None:
        Path(local_path).mkdir(parents=True, exist_ok=True)
        (Path(local_path) / "weights.txt").write_text(str(global_steps))

    def load_checkpoint(self, local_path: str, del_local_after_load: bool = False) -> None:
        if not (Path(local_path) / "weights.txt").is_file():
            raise FileNotFoundError(f"no stub weights in {local_path}")


def fields_td(fields: dict[str, Any], size: int) -> Any:
    from tensordict import TensorDict

    return TensorDict(fields, batch_size=size)


class _Stub:
    """An object with the given methods (weight sync, resource pool, server manager)."""

    def __init__(self, **methods: Any) -> None:
        self.__dict__.update(methods)


# ----------------------------------------------------------------------------- the run
class Events:
    """Appends one JSON line per event to ``path`` (flushed: the process may be killed at any point)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, event: str, **fields: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")


def build_trainer(config: Any, files: dict[str, Path], log: Events) -> Any:
    """verl's sync trainer: its real ``__init__``, then ``_setup``'s CPU parts with the GPU parts stubbed."""
    trainer = get_trainer_cls("sync")(config=config)  # loads the knapsack callback (restores) and replay buffer
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer._init_dump_executor()
    trainer.resource_pool_manager = _Stub(get_n_gpus=lambda: 1)
    trainer.ref_in_actor = False
    trainer.actor_rollout_wg = StubActor(log)
    trainer.reward_loop_manager = RewardLoopManager(config=config)  # verl's reward workers (Ray actors)
    trainer.teacher_model_manager = trainer.distillation_config = None
    vocab = dict(trainer.tokenizer.get_vocab())
    client = ScriptedClient(config, vocab, seed=int(config.data.seed))
    trainer.llm_server_manager = _Stub(get_client=lambda: client)
    trainer.checkpoint_manager = _Stub(update_weights=lambda step: None, sleep_replicas=lambda: None)
    trainer._load_checkpoint()
    return trainer


def watch(trainer: Any, log: Events, block_save: int | None, out: Path) -> None:
    """Log what the hooks did: wraps the adapter's planning function and the instances' ``sample`` and ``on_save``
    (each still runs; only ``--block-save`` changes anything: it hangs before the knapsack save of that step)."""
    plan, sample, callback = hooks.plan_tensordict, trainer.replay_buffer.sample, trainer.checkpoint_callback
    on_save = callback.on_save

    def logged_plan(run: Any, prompts: Any) -> Any:
        counts = plan(run, prompts)  # what the adapter planned, whether or not it reached verl's workers
        uids = [str(u) for u in prompts["uid"]]
        ids = [int(e["index"]) for e in prompts["extra_info"]]
        log("plan", step=trainer.global_steps, uids=uids, ids=ids, counts=[int(c) for c in counts],
            stamped=prompts[ROLLOUT_N_KEY].tolist() if ROLLOUT_N_KEY in prompts else None)  # fmt: skip
        return counts

    def logged_sample(**kw: Any) -> Any:
        batch, metrics = sample(**kw)
        per_uid: dict[str, int] = {}
        for key in batch.keys:
            per_uid[key.rsplit("_", 2)[0]] = per_uid.get(key.rsplit("_", 2)[0], 0) + 1
        log("sample", step=kw["global_steps"], per_uid=per_uid,
            metrics={k: v for k, v in metrics.items() if k.startswith(("train/", "alloc/", "tracker/"))})  # fmt: skip
        return batch, metrics

    def blocking_on_save(**kw: Any) -> None:
        if kw["global_step"] == block_save:  # verl has written its marker; the knapsack state is not written yet
            (out / f"blocked_{block_save}").write_text(str(os.getpid()))
            time.sleep(3600)  # the test kills the process here
        on_save(**kw)
        log("saved", step=kw["global_step"], folder=kw["checkpoint_dir"])

    hooks.plan_tensordict = logged_plan  # KnapsackAgentLoopManager.generate_sequences calls it by this name
    trainer.replay_buffer.sample = logged_sample
    callback.on_save = blocking_on_save


def run(out: Path, ckpt: Path, steps: int, resume: str, resume_from: str | None, block_save: int | None) -> None:
    files = write_files(out / f"files_{resume}")
    config = compose_config(files, ckpt, steps, resume, resume_from)
    log = Events(out / f"events_{resume}.jsonl")
    config.transfer_queue.enable = True
    OmegaConf.resolve(config)
    tq.init(config.transfer_queue)
    try:
        trainer = build_trainer(config, files, log)
        state = hooks.RUNS.get(run_key(config)).save(out / f"restored_{resume}")  # the rule's state, as restored
        log("restored", folder=str(state), global_steps=trainer.global_steps)
        trainer.on_init_end()
        manager = hooks.KnapsackAgentLoopManager.create(
            config=config, llm_client=trainer.get_llm_client(), teacher_client=trainer.get_teacher_client(),
            reward_loop_worker_handles=trainer.get_reward_handles(),
        )  # fmt: skip
        watch(trainer, log, block_save, out)
        trainer.fit(manager)
        log("done", global_steps=trainer.global_steps)
    finally:
        tq.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/verl_cpu"))
    parser.add_argument("--ckpt", type=Path, default=None, help="trainer.default_local_dir (default: OUT/ckpt)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--resume", default="disable", choices=["disable", "auto", "resume_path"])
    parser.add_argument("--resume-from", default=None, help="trainer.resume_from_path (with --resume resume_path)")
    parser.add_argument("--block-save", type=int, default=None, help="hang in on_save of this step (after the marker)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=True)  # logical CPUs for TQ's actors and workers
    try:
        run(args.out, args.ckpt or args.out / "ckpt", args.steps, args.resume, args.resume_from, args.block_save)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
