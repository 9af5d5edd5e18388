"""``knapsack-rl preflight``: sample the starting model, then predict each arm's prompts with signal per step.

Loads the policy and the training prompts exactly as ``knapsack-rl train`` would (embedded task and
tiny model after its warm start, or a local Hugging Face model on a verl-layout file), samples
``samples`` responses per training prompt at the training temperature, scores them with the run's
reward, and hands the rewards to :func:`knapsack_rl.preflight.predict`.

With ``checkpoint``, the policy is that of a trainer checkpoint of the same model and task instead of
the starting one. Every arm's first ``uniform_epochs`` are uniform, so a uniform run stopped where
allocation would start (``knapsack-rl train --rule uniform --max-steps S``) has the policy every arm
allocates for first: the preflight of its checkpoint predicts the first allocating epoch, learning of
the uniform epochs included (the realistic estimates are still simulated from the first n samples).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knapsack_rl.cli_args import given
from knapsack_rl.io import atomic_write_bytes
from knapsack_rl.preflight import Prediction, format_predictions, predict
from knapsack_rl.rollout.generate import generate
from knapsack_rl.train.compare import arm_config
from knapsack_rl.train.config import TrainConfig
from knapsack_rl.train.trainer import load_policy_weights, load_task_and_policy, resolve_device

logger = logging.getLogger(__name__)


def sample_rewards(
    config: TrainConfig, samples: int, *, checkpoint: Path | None = None, chunk: int = 64
) -> tuple[list[int | str], np.ndarray]:
    """(ids, rewards (P, samples)) of the starting policy (or ``checkpoint``'s) on the training prompts."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    task, model, tokenizer = load_task_and_policy(config, device)
    if checkpoint is not None:
        load_policy_weights(checkpoint, config, model, device)
    train = task.train
    gen = torch.Generator(device=device).manual_seed(config.seed)
    out = np.zeros((len(train), samples))
    for lo in range(0, len(train), chunk):
        part = train.subset(range(lo, min(lo + chunk, len(train))))
        counts = np.full(len(part), samples, dtype=np.int64)
        roll = generate(model, tokenizer, part.prompts, counts, max_new_tokens=config.max_new_tokens,
                        temperature=config.temperature, generator=gen)  # fmt: skip
        r = task.score(part, roll.prompt_index.numpy(), roll.texts)
        out[lo : lo + len(part)] = r.reshape(len(part), samples)  # rollouts of a prompt are consecutive
        logger.info("preflight: sampled %d / %d prompts", lo + len(part), len(train))
    task.close()
    return [i.item() if hasattr(i, "item") else i for i in train.ids], out


def run_preflight(
    config: TrainConfig, arms: list[str], samples: int, out: Path | None, *, checkpoint: Path | None = None
) -> tuple[str, list[Prediction]]:
    """Sample, predict for every arm, and (with ``out``) write the predictions as JSON."""
    start = time.perf_counter()
    ids, rewards = sample_rewards(config, samples, checkpoint=checkpoint)
    configs = {arm: arm_config(config, arm) for arm in arms}
    preds = predict(ids, rewards, configs, prompts_per_step=config.prompts_per_step, seed=config.seed)
    p = rewards.mean(axis=1)
    took = time.perf_counter() - start
    policy = "the starting model" if checkpoint is None else f"the policy of {checkpoint}"
    head = (
        f"{len(ids)} training prompts x {samples} samples of {policy} in {took:.0f} s: "
        f"{100 * np.mean(p == 0):.0f}% never solved, {100 * np.mean(p == 1):.0f}% always solved, "
        f"{100 * np.mean((p > 0) & (p <= 0.15)):.0f}% rarely (0 < p <= 0.15), mean p {p.mean():.3f}"
    )
    text = head + "\n\n" + format_predictions(preds, config.prompts_per_step)
    if out is not None:
        data: dict[str, Any] = {
            "samples": samples,
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "success_rates": p.tolist(),
            "predictions": [vars(x) for x in preds],
        }
        atomic_write_bytes(out, json.dumps(data, indent=1).encode())
    return text, preds


STATE_FLAGS = ("seed", "prompts_per_step")
"""The settings ``preflight --state`` takes besides the state itself (the rest are the state's)."""


def run_state_preflight(args: argparse.Namespace, arms: list[str]) -> str:
    """``knapsack-rl preflight --state FILE``: predict every arm from an engine's state (no model, no sampling:
    :func:`knapsack_rl.preflight.predict_from_state`); with ``--json``, write the predictions.

    Raises:
        ValueError: a flag that does not apply to a state (the model, task and knapsack settings are the
            state's), no prompts per step known, or a state preflight cannot read.
    """
    from knapsack_rl.preflight import format_state_predictions, predict_from_state, read_engine_state, state_arms

    ignored = [f"--{k.replace('_', '-')}" for k in given(args, args.flag_names) if k not in STATE_FLAGS]
    others = {"--config": args.config, "--preset": args.preset, "--set": args.assignments,
              "--checkpoint": args.checkpoint, "--samples": args.samples}  # fmt: skip
    ignored += [flag for flag, value in others.items() if value is not None and value != []]
    if ignored:
        raise ValueError(
            f"--state predicts from the state's own settings and rewards: {', '.join(ignored)} does not apply "
            f"(with --state: --arms, --prompts-per-step, --seed, --json)"
        )
    state = read_engine_state(args.state)
    per_step = args.prompts_per_step if args.prompts_per_step is not None else state.prompts_per_step
    if per_step is None:
        raise ValueError(
            f"--state {args.state}: the {state.engine} state does not record the prompts per step; give "
            "--prompts-per-step (TRL: per_device_train_batch_size x processes / num_generations)"
        )
    seed = 0 if args.seed is None else args.seed
    preds = predict_from_state(state, state_arms(state, arms), prompts_per_step=per_step, seed=seed)
    if args.json is not None:
        data = {"state": state.path, "engine": state.engine, "rule": state.rule, "prompts_per_step": per_step,
                "predictions": [vars(x) for x in preds]}  # fmt: skip
        atomic_write_bytes(args.json, json.dumps(data, indent=1).encode())
    return format_state_predictions(state, preds, per_step)
