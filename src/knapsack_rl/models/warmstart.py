"""Supervised warm start of the tiny policy, cached under ``runs/`` by the hash of its config.

The warm start trains on i.i.d. problems of the task suite (cross-entropy on the answer and EOS
tokens only), weighted towards the easy levels, for a fixed number of steps. It is meant to stop
early: the RL training prompts must span the whole range of success rates (some ~always solved,
some ~never, many in between), like a real model on a real data set. :func:`success_profile`
measures that spread with ``samples`` rollouts per prompt at temperature 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knapsack_rl.core.validate import check_int, check_real
from knapsack_rl.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_model
from knapsack_rl.tasks.arithmetic import ArithmeticConfig, build_splits, sft_pairs
from knapsack_rl.tasks.base import PromptSet, get_reward

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmStartConfig:
    """Settings of the supervised warm start."""

    steps: int = 1000
    """Optimizer steps of supervised training."""
    batch_size: int = 64
    """Problems per step."""
    lr: float = 1e-3
    """AdamW learning rate (linear warm-up over 5% of the steps, then constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    level_weights: tuple[float, ...] = (4.0, 3.0, 3.0, 2.0, 2.0, 2.0, 1.0, 1.0)
    """Sampling weight of each task level in the supervised data (L1..L8), favouring the easy ones."""
    seed: int = 0
    """Seed of the data stream and of the model's initial weights."""
    profile_samples: int = 16
    """Rollouts per training prompt when measuring the starting success rates."""

    def __post_init__(self) -> None:
        check_int("steps", self.steps, low=0)
        check_int("batch_size", self.batch_size, low=1)
        check_real("lr", self.lr, low=0.0, open_low=True)
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_int("seed", self.seed, low=0)
        check_int("profile_samples", self.profile_samples, low=1)


def cache_key(warm: WarmStartConfig, model: TinyModelConfig, task: ArithmeticConfig) -> str:
    """First 12 hex digits of sha256 over the three configs (as sorted JSON)."""
    blob = json.dumps({"warm": asdict(warm), "model": asdict(model), "task": asdict(task)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def encode_sft_batch(tokenizer: Any, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Right-padded ``<bos> prompt answer <eos>`` with labels -100 outside ``answer <eos>``; (B, L) each."""
    import torch

    rows, labels = [], []
    for prompt, answer in pairs:
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def train_supervised(model: Any, tokenizer: Any, config: WarmStartConfig, task: ArithmeticConfig) -> list[float]:
    """Run the supervised steps in place; returns the loss per step."""
    import torch
    from tqdm.auto import tqdm

    rng = np.random.default_rng(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in tqdm(range(config.steps), desc="warm start (supervised)", leave=False):
        pairs = sft_pairs(config.batch_size, rng, level_weights=config.level_weights, levels=task.levels)
        batch = {k: v.to(device) for k, v in encode_sft_batch(tokenizer, pairs).items()}
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def success_profile(
    model: Any, tokenizer: Any, prompts: PromptSet, *, samples: int = 16, seed: int = 0, max_new_tokens: int = 8
) -> dict[str, Any]:
    """Per-prompt success rates with ``samples`` rollouts at temperature 1, and their spread.

    Returns a dict with ``success_rates`` (list, one per prompt), ``below_0.1``, ``above_0.9`` and
    ``between`` (fractions of prompts), and ``per_level`` mean success rate.
    """
    import torch

    from knapsack_rl.rollout.generate import generate

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    counts = np.full(len(prompts), samples, dtype=np.int64)
    out = generate(model, tokenizer, prompts.prompts, counts, max_new_tokens=max_new_tokens, generator=gen)
    idx = out.prompt_index.numpy()
    rewards = get_reward("exact")(out.texts, [prompts.answers[i] for i in idx])
    rates = np.bincount(idx, weights=rewards, minlength=len(prompts)) / samples
    levels = np.asarray(prompts.levels)
    return {
        "samples": samples,
        "success_rates": [float(x) for x in rates],
        "below_0.1": float((rates < 0.1).mean()),
        "above_0.9": float((rates > 0.9).mean()),
        "between": float(((rates >= 0.1) & (rates <= 0.9)).mean()),
        "per_level": {lv: float(rates[levels == lv].mean()) for lv in prompts.level_names()},
    }


def warm_start(
    root: str | Path,
    *,
    warm: WarmStartConfig | None = None,
    model_config: TinyModelConfig | None = None,
    task: ArithmeticConfig | None = None,
    device: str = "cpu",
) -> Path:
    """Directory of the warm-started tiny policy (model, tokenizer, ``warmstart.json``); built if missing.

    The cache lives at ``root/<cache_key>``; it is built in a temporary directory and renamed into
    place, so an interrupted build leaves no half-written cache.
    """
    warm, model_config, task = warm or WarmStartConfig(), model_config or TinyModelConfig(), task or ArithmeticConfig()
    path = Path(root) / cache_key(warm, model_config, task)
    if (path / "warmstart.json").is_file():
        logger.info("warm start: using cache %s", path)
        return path
    start = time.perf_counter()
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, model_config, seed=warm.seed).to(device)
    logger.info("warm start: training %d steps -> %s", warm.steps, path)
    losses = train_supervised(model, tokenizer, warm, task)
    train_set, _ = build_splits(task)
    profile = success_profile(model, tokenizer, train_set, samples=warm.profile_samples, seed=warm.seed)
    report = {
        "config": {"warm": asdict(warm), "model": asdict(model_config), "task": asdict(task)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": losses[-1] if losses else None,
        "seconds": time.perf_counter() - start,
        "profile": profile,
    }
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.to("cpu").save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "warmstart.json").write_text(json.dumps(report, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    logger.info(
        "warm start: %.0f s; success rates <0.1: %.0f%%, >0.9: %.0f%%, between: %.0f%%",
        report["seconds"],
        100 * profile["below_0.1"],
        100 * profile["above_0.9"],
        100 * profile["between"],
    )
    return path
