"""The reference GRPO trainer with per-prompt rollout budgets (single process, CPU or CUDA).

One step, top to bottom (:meth:`Trainer.step`):

    sample prompts -> plan (Planner: counts per prompt) -> generate -> score -> observe (tracker +
    metrics) -> grouped advantages -> PPO-clip update (train/update.py) -> log

With two-phase planning (``knapsack.probe_n > 0``) the plan, generate and score phases run twice:
a probe of the prompts without an estimate, then the rest of the step's fixed budget.

Prompts are visited once per epoch (0-based) in a seeded order. The state (model, optimizer,
planner, data position, RNG states) is checkpointed atomically and loaded with
``torch.load(weights_only=True)`` (tensors and plain data only: a checkpoint cannot run code); a
resumed run continues bit-for-bit like an uninterrupted one on CPU, and refuses to resume a run
whose settings differ in anything that changes what a step computes.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knapsack_rl.core.planner import Planner
from knapsack_rl.core.tracker import Tracker
from knapsack_rl.grpo.advantages import grouped_advantages
from knapsack_rl.grpo.metrics import eval_metrics, rollout_metrics
from knapsack_rl.io import atomic_write_bytes
from knapsack_rl.rollout.generate import Rollouts, concat_rollouts, generate
from knapsack_rl.tasks.base import PromptSet
from knapsack_rl.tasks.source import Task, load_task
from knapsack_rl.train.config import RESUMABLE_CHANGES, TrainConfig
from knapsack_rl.train.logging_utils import MetricsLogger, Progress
from knapsack_rl.train.update import UpdateSettings, update_policy

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
        self.task, self.model, self.tokenizer = load_task_and_policy(config, self.device)
        self.train_set, self.eval_set = self.task.train, self.task.eval
        self._reward_counts = self.task.reward_counts()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        tracker = Tracker.load(config.tracker_init) if config.tracker_init is not None else None
        self.planner = Planner(config.knapsack, tracker=tracker)
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
        checkpoint = self.out_dir / "checkpoint.pt"
        if config.resume and checkpoint.exists():
            self.load_checkpoint(checkpoint)
        self._save_config()
        self.metrics = MetricsLogger(self.out_dir, tensorboard=config.tensorboard, start_step=self.global_step)

    # ------------------------------------------------------------------ loop
    def train(self, *, stop_after: int | None = None) -> dict[str, float]:
        """Run until the last step (or ``stop_after`` more steps); returns the last logged metrics."""
        cfg = self.config
        last: dict[str, float] = {}
        if self.global_step == 0 and cfg.eval_every and self._evaluates:
            self.metrics.log(0, self.evaluate())
        end = self.total_steps if stop_after is None else min(self.total_steps, self.global_step + stop_after)
        progress = Progress(end - self.global_step, f"train {self.out_dir.name}", enabled=cfg.progress)
        while self.global_step < end:
            last = self.step()
            progress.update(f"egr {last['train/effective_grad_ratio']:.2f} r {last['train/reward_mean']:.2f}")
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        progress.close()
        if self.global_step == self.total_steps:
            self.save_checkpoint()
        self.metrics.close()
        self.task.close()
        return last

    def step(self) -> dict[str, float]:
        """One GRPO step (the named phases); logs and returns its metrics."""
        cfg, timer = self.config, PhaseTimer()
        start = time.perf_counter()
        epoch = self.epoch
        with timer.phase("sample"):
            batch = self.take_prompts()
        rollouts, rewards = self.rollout(batch, epoch, timer)
        ids = batch.prompts.ids[rollouts.prompt_index.numpy()]  # (R,) prompt id per rollout
        with timer.phase("observe"):
            method_metrics = self.planner.observe(ids, rewards, epoch=epoch, step=self.global_step + 1)
        with timer.phase("advantages"):
            adv = grouped_advantages(
                torch.as_tensor(rewards, dtype=torch.float32),
                rollouts.prompt_index,
                eps=cfg.advantage_eps,
                clip=cfg.advantage_clip,
            )
        with timer.phase("update"):
            update_metrics = update_policy(
                self.model, self.optimizer, rollouts, adv.to(self.device), UpdateSettings.of(cfg)
            )
        self.global_step += 1
        self.rollouts_total += len(rollouts)
        step_s = time.perf_counter() - start
        metrics = {
            **method_metrics,
            **update_metrics,
            **rollout_metrics(rollouts.response_mask, cfg.max_new_tokens),
            **timer.seconds,
            **self._reward_failures(),
            "actor/lr": cfg.lr,
            "train/epoch": float(epoch),
            "train/rollouts_total": float(self.rollouts_total),
            "perf/step_s": step_s,
            "perf/rollouts_per_s": len(rollouts) / step_s,
        }
        due = cfg.eval_every and (self.global_step % cfg.eval_every == 0 or self.global_step == self.total_steps)
        if due and self._evaluates:
            metrics.update(self.evaluate())
        self.metrics.log(self.global_step, metrics)
        return metrics

    # ---------------------------------------------------------------- phases
    @property
    def _evaluates(self) -> bool:
        return self.eval_set is not None or self.config.eval_train_prompts > 0

    @property
    def epoch(self) -> int:
        """0-based epoch (pass over the training prompts) of the next step."""
        return self.global_step // self.steps_per_epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Seeded permutation of the training prompts for ``epoch`` (a pure function of seed and epoch)."""
        return np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_set))

    def take_prompts(self) -> StepBatch:
        """The next M prompts of this epoch's order."""
        m = self.config.prompts_per_step
        pos = self.global_step % self.steps_per_epoch
        index = self.epoch_order(self.epoch)[pos * m : (pos + 1) * m]
        return StepBatch(index=index, prompts=self.train_set.subset(index))

    def rollout(self, batch: StepBatch, epoch: int, timer: PhaseTimer) -> tuple[Rollouts, np.ndarray]:
        """Plan, generate and score the step's rollouts (twice with a two-phase probe)."""
        ids = batch.prompts.ids
        parts: list[Rollouts] = []
        rewards: list[np.ndarray] = []
        probe = None
        with timer.phase("plan"):
            probe_counts = self.planner.plan_probe(ids, epoch=epoch)
        if probe_counts.any():
            probe = self._generate_and_score(batch, probe_counts, timer)
            parts.append(probe[0])
            rewards.append(probe[1])
        with timer.phase("plan"):
            probe_data = None if probe is None else (ids[probe[0].prompt_index.numpy()], probe[1])
            plan = self.planner.plan(ids, epoch=epoch, probe=probe_data)
        counts = plan.budgets - probe_counts
        rest = self._generate_and_score(batch, counts, timer)
        parts.append(rest[0])
        rewards.append(rest[1])
        record = self.planner.last
        assert record is not None
        p_hat = [None if np.isnan(p) else float(p) for p in record.p_hat]
        self.metrics.log_allocation(self.global_step + 1, epoch, p_hat, plan.budgets.tolist())
        return concat_rollouts(parts, self.tokenizer.pad_token_id), np.concatenate(rewards)

    def _generate_and_score(
        self, batch: StepBatch, counts: np.ndarray, timer: PhaseTimer
    ) -> tuple[Rollouts, np.ndarray]:
        with timer.phase("generate"):
            rollouts = self.generate(batch, counts)
        with timer.phase("score"):
            rewards = self.score(batch, rollouts)
        return rollouts, rewards

    def generate(self, batch: StepBatch, counts: np.ndarray) -> Rollouts:
        """Sample exactly ``counts[i]`` rollouts of prompt i, temperature ``config.temperature``."""
        self.model.eval()
        return generate(
            self.model, self.tokenizer, batch.prompts.prompts, counts, max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature, generator=self.generator,
        )  # fmt: skip

    def score(self, batch: StepBatch, rollouts: Rollouts) -> np.ndarray:
        """(R,) rewards of the responses, by the task's contained scorer."""
        return self.task.score(batch.prompts, rollouts.prompt_index.numpy(), rollouts.texts)

    def _reward_failures(self) -> dict[str, float]:
        """``reward/failures``, ``reward/timeouts``: responses the reward could not score this step (scored 0)."""
        now = self.task.reward_counts()
        delta = {k: float(now[k] - self._reward_counts.get(k, 0)) for k in now}
        self._reward_counts = now
        return delta

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out ``eval/mean@k``, ``best@k``, ``maj@k`` (overall and per level) at ``eval_temperature``;
        with ``eval_train_prompts`` also ``train_eval/...`` on a fixed seeded subset of the training prompts."""
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if self.eval_set is not None:
            metrics.update(self._evaluate_on(self.eval_set, "eval"))
        if self.config.eval_train_prompts:
            size = min(self.config.eval_train_prompts, len(self.train_set))
            pick = np.sort(np.random.default_rng([self.config.seed, 7]).permutation(len(self.train_set))[:size])
            metrics.update(self._evaluate_on(self.train_set.subset(pick), "train_eval"))
        metrics["timing_s/eval"] = time.perf_counter() - start
        return metrics

    def _evaluate_on(self, prompts: PromptSet, prefix: str) -> dict[str, float]:
        cfg = self.config
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + self.global_step + 17)
        counts = np.full(len(prompts), cfg.eval_k, dtype=np.int64)
        self.model.eval()
        out = generate(
            self.model, self.tokenizer, prompts.prompts, counts, max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.eval_temperature, generator=gen,
        )  # fmt: skip
        idx = out.prompt_index.numpy()
        rewards = self.task.score(prompts, idx, out.texts)
        metrics = eval_metrics(rewards, idx, prompts.levels, out.texts, cfg.eval_k)
        return {f"{prefix}/{k.removeprefix('eval/')}": v for k, v in metrics.items()}

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue, as tensors and plain data (loadable with ``weights_only=True``)."""
        return {
            "format": 2,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "planner": self.planner.state_dict(),
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
        """Restore :meth:`save_checkpoint`'s state; nothing in the file can execute code.

        Raises:
            ValueError: naming the file, if it is not a checkpoint of this trainer (or holds anything
                but tensors and plain data), or was written by a run with other settings.
        """
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a loadable knapsack-rl checkpoint ({str(exc).splitlines()[0]})") from exc
        if not isinstance(state, dict) or state.get("format") != 2:
            raise ValueError(f"{path}: not a knapsack-rl trainer checkpoint (format 2)")
        _check_resumable(path, state.get("config"), self.config.to_dict())
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.planner.load_state_dict(state["planner"], source=str(path))
        self.global_step = int(state["global_step"])
        self.rollouts_total = int(state["rollouts_total"])
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        torch.set_rng_state(state["torch_rng"].cpu())
        logger.info("resumed %s at step %d", self.out_dir, self.global_step)

    def _save_config(self) -> None:
        atomic_write_bytes(self.out_dir / "config.json", json.dumps(self.config.to_dict(), indent=1).encode())


def _check_resumable(path: Path, saved: Any, current: dict[str, Any]) -> None:
    """Refuse to resume when a setting that changes what a step computes differs (names each one)."""
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: the checkpoint has no saved config")
    differ = sorted(
        k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES
    )
    if differ:
        shown = "; ".join(f"{k}: {json.dumps(saved.get(k))} -> {json.dumps(current.get(k))}" for k in differ)
        raise ValueError(
            f"{path} was written by a run with other settings ({shown}); resuming would mix two runs. "
            f"Use another out_dir, or resume=false to start afresh (only {sorted(RESUMABLE_CHANGES)} may change)"
        )


def load_task_and_policy(config: TrainConfig, device: torch.device) -> tuple[Task, Any, Any]:
    """The run's task, policy and tokenizer.

    The embedded tiny model is built over the task's characters and warm-started on its warm-start set
    (cached by what determines the weights); a local Hugging Face model is loaded first, so that its chat
    template can format chat prompts of data files.
    """
    from knapsack_rl.models.tiny import load_causal_lm
    from knapsack_rl.models.warmstart import warm_start

    if config.model is None:
        task = load_task(config.task)
        path = warm_start(
            config.warmstart_dir, task, warm=config.warmstart, model=config.tiny_model, device=str(device)
        )
        model, tokenizer = load_causal_lm(path, device=str(device))
    else:
        model, tokenizer = load_causal_lm(config.model, device=str(device))
        task = load_task(config.task, chat_format=_chat_formatter(tokenizer))
    model.eval()
    return task, model, tokenizer


def _chat_formatter(tokenizer: Any) -> Callable[[list[dict[str, str]]], str] | None:
    """The tokenizer's chat template as a prompt formatter (None when it has no template)."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def fmt(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    return fmt
