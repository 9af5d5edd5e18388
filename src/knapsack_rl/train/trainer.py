"""The reference GRPO trainer with per-prompt rollout budgets (single process, CPU or CUDA).

One step, top to bottom (:meth:`Trainer.step`):

    sample prompts -> counts (uniform n, or allocate() from the tracker) -> generate -> score ->
    tracker.update -> grouped advantages -> PPO-clip loss + optimizer step(s) -> metrics

Prompts are visited once per epoch in a seeded order; estimates drive allocation from epoch
``alloc_from_epoch`` (recipe: 2). The state (model, optimizer, tracker, data position, RNG states) is
checkpointed atomically; a resumed run continues bit-for-bit like an uninterrupted one on CPU.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knapsack_rl.core.allocate import allocate, allocate_options
from knapsack_rl.core.groups import step_metrics
from knapsack_rl.core.tracker import Tracker, TrackerConfig, atomic_write_bytes
from knapsack_rl.grpo.advantages import grouped_advantages
from knapsack_rl.grpo.loss import ppo_clip_loss, token_logprobs
from knapsack_rl.grpo.metrics import eval_metrics, rollout_metrics
from knapsack_rl.rollout.generate import Rollouts, generate
from knapsack_rl.tasks.base import PromptSet, get_reward
from knapsack_rl.train.config import TrainConfig
from knapsack_rl.train.logging_utils import MetricsLogger

logger = logging.getLogger(__name__)


@dataclass
class StepBatch:
    """The prompts of one step: positions in the training set and their ids / texts."""

    index: np.ndarray
    prompts: PromptSet


class PhaseTimer:
    """Accumulates wall seconds per named phase into ``timing_s/<phase>``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"timing_s/{name}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """GRPO training of one arm; see the module docstring for the step."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.model, self.tokenizer = _load_policy(config, self.device)
        self.train_set, self.eval_set = _load_prompts(config, self.tokenizer)
        self.reward_fn = get_reward(config.reward)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.tracker = _initial_tracker(config)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.steps_per_epoch = len(self.train_set) // config.prompts_per_step
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"prompts_per_step={config.prompts_per_step} exceeds the {len(self.train_set)} training prompts"
            )
        epochs_steps = config.epochs * self.steps_per_epoch
        self.total_steps = epochs_steps if config.max_steps is None else min(config.max_steps, epochs_steps)
        self.global_step = 0
        self.rollouts_total = 0
        self._save_config()
        if config.resume and (self.out_dir / "checkpoint.pt").exists():
            self.load_checkpoint(self.out_dir / "checkpoint.pt")
        self.metrics = MetricsLogger(self.out_dir, tensorboard=config.tensorboard, start_step=self.global_step)

    # ------------------------------------------------------------------ loop
    def train(self, *, stop_after: int | None = None) -> dict[str, float]:
        """Run until the last step (or ``stop_after`` more steps); returns the last logged metrics."""
        from tqdm.auto import tqdm

        cfg = self.config
        last: dict[str, float] = {}
        if self.global_step == 0 and cfg.eval_every and self.eval_set is not None:
            self.metrics.log(0, self.evaluate())
        end = self.total_steps if stop_after is None else min(self.total_steps, self.global_step + stop_after)
        bar = tqdm(total=end - self.global_step, desc=f"train {cfg.arm}", disable=not cfg.progress, leave=False)
        while self.global_step < end:
            last = self.step()
            bar.update(1)
            bar.set_postfix(egr=f"{last['train/effective_grad_ratio']:.2f}", r=f"{last['train/reward_mean']:.2f}")
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        if self.global_step == self.total_steps:
            self.save_checkpoint()
        self.metrics.close()
        return last

    def step(self) -> dict[str, float]:
        """One GRPO step (the named phases); logs and returns its metrics."""
        cfg, timer = self.config, PhaseTimer()
        start = time.perf_counter()
        epoch = self.epoch
        with timer.phase("sample"):
            batch = self.take_prompts()
        with timer.phase("allocate"):
            counts, alloc_metrics = self.rollout_counts(batch, epoch)
        with timer.phase("generate"):
            rollouts = self.generate(batch, counts)
        with timer.phase("score"):
            rewards = self.score(batch, rollouts)
        ids = batch.prompts.ids[rollouts.prompt_index.numpy()]  # (R,) prompt id per rollout
        with timer.phase("track"):
            self.tracker.update(ids, rewards, epoch=epoch, step=self.global_step + 1)
        with timer.phase("advantages"):
            adv = grouped_advantages(
                torch.as_tensor(rewards, dtype=torch.float32), torch.as_tensor(ids), eps=cfg.adv_eps, clip=cfg.adv_clip
            )
        with timer.phase("update"):
            update_metrics = self.update(rollouts, adv.to(self.device))
        self.global_step += 1
        self.rollouts_total += len(rollouts)
        step_s = time.perf_counter() - start
        metrics = {
            **step_metrics(rewards, ids),
            **alloc_metrics,
            **update_metrics,
            **rollout_metrics(rollouts.response_mask, cfg.max_new_tokens),
            **timer.seconds,
            "train/epoch": float(epoch),
            "train/rollouts_total": float(self.rollouts_total),
            "perf/step_s": step_s,
            "perf/rollouts_per_s": len(rollouts) / step_s,
        }
        due = cfg.eval_every and (self.global_step % cfg.eval_every == 0 or self.global_step == self.total_steps)
        if due and self.eval_set is not None:
            metrics.update(self.evaluate())
        self.metrics.log(self.global_step, metrics)
        return metrics

    # ---------------------------------------------------------------- phases
    @property
    def epoch(self) -> int:
        """1-based epoch of the next step."""
        return self.global_step // self.steps_per_epoch + 1

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Seeded permutation of the training prompts for ``epoch`` (a pure function of seed and epoch)."""
        return np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_set))

    def take_prompts(self) -> StepBatch:
        """The next M prompts of this epoch's order."""
        m = self.config.prompts_per_step
        pos = self.global_step % self.steps_per_epoch
        index = self.epoch_order(self.epoch)[pos * m : (pos + 1) * m]
        return StepBatch(index=index, prompts=self.train_set.subset(index))

    def rollout_counts(self, batch: StepBatch, epoch: int) -> tuple[np.ndarray, dict[str, float]]:
        """Per-prompt counts: n each (uniform arm) or ``allocate()`` of the tracker's estimates."""
        cfg = self.config
        m = len(batch.prompts)
        if cfg.arm == "uniform":
            counts = np.full(m, cfg.n, dtype=np.int64)
            return counts, budget_metrics(counts, cfg.n)
        p_hat = self.tracker.estimate(batch.prompts.ids)
        if epoch < cfg.alloc_from_epoch:
            p_hat = np.full(m, np.nan)  # cold start: no estimate drives allocation yet
        result = allocate(p_hat, **allocate_options(cfg))  # type: ignore[arg-type]
        self.metrics.log_allocation(
            self.global_step + 1, epoch, [None if np.isnan(p) else float(p) for p in p_hat], result.budgets.tolist()
        )
        return result.budgets, result.metrics(cfg.n)

    def generate(self, batch: StepBatch, counts: np.ndarray) -> Rollouts:
        """Sample exactly ``counts[i]`` rollouts of prompt i, temperature ``config.temperature``."""
        self.model.eval()
        return generate(
            self.model, self.tokenizer, batch.prompts.prompts, counts, max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature, generator=self.generator,
        )  # fmt: skip

    def score(self, batch: StepBatch, rollouts: Rollouts) -> np.ndarray:
        """(R,) rewards of the responses against their prompt's answer."""
        answers = [batch.prompts.answers[i] for i in rollouts.prompt_index.tolist()]
        return self.reward_fn(rollouts.texts, answers)

    def update(self, rollouts: Rollouts, adv: torch.Tensor) -> dict[str, float]:
        """PPO-clip updates on the step's rollouts: ``ppo_epochs`` passes of ``ppo_mini_batches`` mini-batches.

        With one mini-batch and one epoch the sampling policy is the current one, so the old
        log-probabilities are the current ones detached (ratio 1, as verl / TRL do) and the extra
        forward pass is skipped; otherwise they are computed once before the first update.
        """
        cfg = self.config
        ids = rollouts.input_ids.to(self.device)
        attn = rollouts.attention_mask.to(self.device)
        mask = rollouts.response_mask.to(self.device)
        on_policy = cfg.ppo_mini_batches == 1 and cfg.ppo_epochs == 1  # ratio is exactly 1: no extra forward
        old = None
        if not on_policy:
            with torch.no_grad():
                old = token_logprobs(self.model, ids, attn, rollouts.prompt_len)  # (R, T) sampling policy
        self.model.train()
        parts = np.array_split(np.unique(rollouts.prompt_index.numpy()), cfg.ppo_mini_batches)
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.ppo_epochs):
            for prompts in parts:
                rows = torch.as_tensor(np.isin(rollouts.prompt_index.numpy(), prompts)).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    continue
                rows = rows.to(self.device)
                tokens = float(mask[rows].sum())  # token-mean denominator: every rollout of the mini-batch
                rows = rows[adv[rows] != 0]  # A = 0 adds exactly 0 to loss and gradient: skip its forward
                self.optimizer.zero_grad(set_to_none=True)
                if rows.numel() == 0:
                    loss, stats = self._zero_gradient()
                else:
                    logp = token_logprobs(self.model, ids[rows], attn[rows], rollouts.prompt_len)
                    old_rows = logp.detach() if old is None else old[rows]
                    loss, stats = ppo_clip_loss(
                        logp, old_rows, adv[rows], mask[rows], clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                        dual_clip=cfg.dual_clip, token_count=tokens,
                    )  # fmt: skip
                    loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                for k, v in {**stats, "actor/loss": loss.item(), "actor/grad_norm": float(grad_norm)}.items():
                    sums[k] = sums.get(k, 0.0) + v
                updates += 1
        self.model.eval()
        return {k: v / max(updates, 1) for k, v in sums.items()} | {"actor/lr": cfg.lr}

    def _zero_gradient(self) -> tuple[torch.Tensor, dict[str, float]]:
        """No rollout with a non-zero advantage: zero gradients, so the optimizer steps as on a zero loss."""
        for param in self.model.parameters():
            param.grad = torch.zeros_like(param)
        return torch.zeros(()), {"actor/clipfrac": 0.0, "actor/approx_kl": 0.0, "actor/ratio_mean": 1.0}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out mean@k / best@k / maj@k, overall and per level, at ``eval_temperature``."""
        cfg = self.config
        assert self.eval_set is not None
        start = time.perf_counter()
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + self.global_step + 17)
        counts = np.full(len(self.eval_set), cfg.eval_k, dtype=np.int64)
        self.model.eval()
        out = generate(
            self.model, self.tokenizer, self.eval_set.prompts, counts, max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.eval_temperature, generator=gen,
        )  # fmt: skip
        idx = out.prompt_index.numpy()
        rewards = self.reward_fn(out.texts, [self.eval_set.answers[i] for i in idx])
        metrics = eval_metrics(rewards, idx, self.eval_set.levels, out.texts, cfg.eval_k)
        metrics["timing_s/eval"] = time.perf_counter() - start
        return metrics

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: model, optimizer, tracker, data position, RNG states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "tracker": self.tracker.state_dict(),
            "global_step": self.global_step,
            "rollouts_total": self.rollouts_total,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> Path:
        """Write ``out_dir/checkpoint.pt`` atomically (temporary file, fsync, rename)."""
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        path = self.out_dir / "checkpoint.pt"
        atomic_write_bytes(path, buf.getvalue())
        logger.debug("checkpoint at step %d -> %s", self.global_step, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore the state written by :meth:`save_checkpoint`."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tracker = Tracker.from_state_dict(state["tracker"])
        self.global_step = int(state["global_step"])
        self.rollouts_total = int(state["rollouts_total"])
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        torch.set_rng_state(state["torch_rng"].cpu())
        logger.info("resumed %s at step %d", self.out_dir, self.global_step)

    def _save_config(self) -> None:
        atomic_write_bytes(self.out_dir / "config.json", json.dumps(self.config.to_dict(), indent=1).encode())


def budget_metrics(counts: np.ndarray, n: int) -> dict[str, float]:
    """``alloc/budget_{max,min,mean,total}`` and ``alloc/num_above_n`` of fixed counts (uniform arm)."""
    return {
        "alloc/budget_max": float(counts.max()),
        "alloc/budget_min": float(counts.min()),
        "alloc/budget_mean": float(counts.mean()),
        "alloc/budget_total": float(counts.sum()),
        "alloc/num_above_n": float((counts > n).sum()),
    }


def _initial_tracker(config: TrainConfig) -> Tracker:
    if config.tracker_init is not None:
        return Tracker.load(config.tracker_init)
    return Tracker(TrackerConfig(estimator=config.estimator, min_count=config.min_count))


def _load_policy(config: TrainConfig, device: torch.device) -> tuple[Any, Any]:
    from knapsack_rl.models.tiny import load_causal_lm
    from knapsack_rl.models.warmstart import warm_start

    path = config.model
    if path is None:
        path = str(
            warm_start(
                config.warmstart_dir, warm=config.warmstart, model_config=config.tiny_model, task=config.task,
                device=str(device),
            )
        )  # fmt: skip
    model, tokenizer = load_causal_lm(path, device=str(device))
    model.eval()
    return model, tokenizer


def _load_prompts(config: TrainConfig, tokenizer: Any) -> tuple[PromptSet, PromptSet | None]:
    from knapsack_rl.tasks.arithmetic import build_splits
    from knapsack_rl.tasks.verl_data import load_verl_dataset

    if config.data is None:
        return build_splits(config.task)
    chat = _chat_formatter(tokenizer)
    train = load_verl_dataset(config.data, chat_format=chat)
    held_out = load_verl_dataset(config.eval_data, chat_format=chat) if config.eval_data else None
    return train, held_out


def _chat_formatter(tokenizer: Any) -> Callable[[list[dict[str, str]]], str] | None:
    """The tokenizer's chat template as a prompt formatter (None when it has no template)."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def fmt(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    return fmt
