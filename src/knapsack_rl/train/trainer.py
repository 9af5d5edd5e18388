"""The reference GRPO trainer with per-prompt rollout budgets (single process, CPU or CUDA).

Every arm runs through one rule interface (:mod:`knapsack_rl.rules`): the run's rule is its own
:class:`~knapsack_rl.KnapsackConfig` through :class:`~knapsack_rl.rules.KnapsackRule` (``rule:
knapsack`` or ``uniform``; the Planner's only code path here), or a registered rule by name
(``reinforce-ada``, ``pilot-commit``, ``dapo``, ``greso``, ``knapsack:two-phase``, ...). One step, top
to bottom (:meth:`Trainer.step`):

    batch of M prompts (the stream) -> rounds (run_step: the rule plans, the engine generates with
    the batched KV-cache sampler and scores) -> the rule's trained rollouts -> grouped advantages (by
    candidate) -> PPO-clip update (train/update.py) -> log

Rules that plan rounds within a step (two-phase knapsack: probe, then the rest; Reinforce-Ada-like;
Pilot-Commit-like; DAPO's refill) get them here: every round sees the rewards of the earlier ones.

**Budget** (:class:`~knapsack_rl.rules.stream.RolloutBudget`, shared with the simulator). Every arm's
step may generate B = ``prompts_per_step x n`` rollouts (DAPO up to 10 B). A run ends once it has
*generated* the uniform arm's total, ``total_steps x B`` rollouts (trained on or not), so every arm gets
the same compute: exactly ``total_steps`` steps for rules that spend B per step, fewer steps for DAPO,
more (at most ``MAX_STEPS_FACTOR x total_steps``) for rules that spend less. A run also ends when a
step generates nothing (the rule has no prompt left to sample).

**Data order** (:class:`~knapsack_rl.rules.stream.PromptStream`, shared with the simulator). A cursor
over a seeded permutation per epoch: a step's batch never straddles two epochs; prompts a rule draws
beyond it come from the same stream.
The epoch of a step is its batch's pass over the training prompts (0-based).

The state (model, optimizer, the rule's state, the stream's cursor, RNG states) is checkpointed
atomically in the package's state-file envelope (one SHA-256 over all of it) and its tensors loaded with
``torch.load(weights_only=True)`` (tensors and plain data only: a checkpoint cannot run code). Every
field is checked before anything is restored, so a refused checkpoint changes nothing; a resumed run
continues bit-for-bit like an uninterrupted one on CPU, and refuses to resume a run whose settings (or
rule) differ in anything that changes what a step computes.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from knapsack_rl.core.config import config_diff
from knapsack_rl.core.planner import Planner
from knapsack_rl.core.tracker import Tracker
from knapsack_rl.core.validate import check_bool, check_int
from knapsack_rl.grpo.advantages import grouped_advantages
from knapsack_rl.grpo.metrics import eval_metrics, rollout_metrics
from knapsack_rl.io import atomic_write_bytes, encode_state_file, lock_folder, read_file_bytes, read_state_file
from knapsack_rl.progress import Progress
from knapsack_rl.rollout.generate import Rollouts, generate
from knapsack_rl.rules import KnapsackRule, Selection, StepLog, StepSpec, run_step, step_log_metrics
from knapsack_rl.rules.state import PART_PREFIX, pack_rule_state, unpack_rule_state
from knapsack_rl.rules.stream import PromptStream, RolloutBudget
from knapsack_rl.tasks.base import PromptSet
from knapsack_rl.tasks.source import Task, load_task
from knapsack_rl.train.config import RESUMABLE_CHANGES, TrainConfig
from knapsack_rl.train.engine import (
    PhaseTimer,
    StepBatch,
    TrainerEngine,
    build_rule,
    select_rollouts,
)
from knapsack_rl.train.logging_utils import MetricsLogger
from knapsack_rl.train.update import UpdateSettings, update_policy

logger = logging.getLogger(__name__)

__all__ = ["PhaseTimer", "StepBatch", "Trainer", "load_task_and_policy", "resolve_device"]
CHECKPOINT_KIND = "trainer-checkpoint"
CHECKPOINT_FORMAT = 5
"""The envelope kind and format of ``checkpoint.pt`` (format 3, a bare ``torch.save`` without checksum, is refused)."""
LEGACY: Mapping[bytes, str] = MappingProxyType(
    {
        b"PK\x03\x04": (
            "a checkpoint of the format of knapsack-rl 0.1.0 (format 3, a bare torch.save without checksum), "
            "which this version does not read; resume it with the version that wrote it, or start afresh "
            "(resume=false or another out_dir)"
        )
    }
)
_META_KEYS = ("global_step", "rollouts_total", "exhausted", "config", "stream", "rule")
_TENSOR_KEYS = ("model", "optimizer", "generator", "torch_rng")
_ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")
_UPDATE_KEYS = ("actor/loss", "actor/grad_norm", "actor/grad_clipped", "actor/clipfrac", "actor/approx_kl",
                "actor/ratio_mean")  # fmt: skip
"""The keys :func:`~knapsack_rl.train.update.update_policy` returns (logged as NaN for a step with nothing to train)."""


MAX_TRACKER_BYTES = 1 << 34
"""Largest ``tracker_init`` file read (16 GiB)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a named CUDA or MPS device must exist on this machine.

    Raises:
        ValueError: one line, for ``cuda`` / ``cuda:<i>`` without CUDA or with fewer than ``i + 1``
            devices, and for ``mps`` without MPS.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available on this machine; use device: cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device={name!r} but this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r} but MPS is not available on this machine; use device: cpu or auto")
    return device


class Trainer:
    """GRPO training of one arm; see the module docstring for the step.

    Args:
        config: the run's settings; ``config.rule`` names a registered rule (:func:`knapsack_rl.rules.rule_names`;
            ``knapsack`` plans with ``config.knapsack``). The step's budget is ``prompts_per_step x n`` (``n``
            from ``config.knapsack``) whatever the rule.
    """

    def __init__(self, config: TrainConfig) -> None:
        """Check what can be checked before any work (the device exists, ``tracker_init`` is a tracker file),
        then lock ``out_dir`` for this run (:func:`knapsack_rl.io.lock_folder`: a second run on the same
        folder is refused at once, naming the holder; the lock goes with :meth:`close`, which :meth:`train`
        calls at its end, or with the process), then build the run. A refused call writes nothing."""
        self.config = config
        self.out_dir = Path(config.out_dir)
        self.device = resolve_device(config.device)
        tracker = None
        if config.tracker_init is not None:
            data = read_file_bytes(config.tracker_init, what="tracker_init file", max_bytes=MAX_TRACKER_BYTES)
            tracker = Tracker.from_bytes(data, source=config.tracker_init)
        self._lock = lock_folder(self.out_dir, what="out_dir")
        try:
            self._build(config, tracker)
        except BaseException:
            if hasattr(self, "task"):  # the scorer's worker processes go with a refused start
                self.task.close()
            self._lock.release()
            raise

    def _build(self, config: TrainConfig, tracker: Tracker | None) -> None:
        """The rest of :meth:`__init__`, under ``out_dir``'s lock."""
        if config.threads:
            torch.set_num_threads(config.threads)
        self.task, self.model, self.tokenizer = load_task_and_policy(config, self.device)
        self.train_set, self.eval_set = self.task.train, self.task.eval
        self._reward_counts = self.task.reward_counts()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.rule = build_rule(config, tracker=tracker)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.steps_per_epoch = len(self.train_set) // config.prompts_per_step
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"prompts_per_step={config.prompts_per_step} exceeds the {len(self.train_set)} training prompts"
            )
        self.stream = PromptStream(len(self.train_set), config.seed)
        self.engine = TrainerEngine(self.train_set, self.stream, self.generate, self.score)
        epochs_steps = config.epochs * self.steps_per_epoch
        self.total_steps = epochs_steps if config.max_steps is None else min(config.max_steps, epochs_steps)
        self.budget = RolloutBudget(self.total_steps * config.prompts_per_step * config.n, self.total_steps)
        checkpoint = self.out_dir / "checkpoint.pt"
        if config.resume and checkpoint.exists():
            self.load_checkpoint(checkpoint)
        self._save_config()
        self.metrics = MetricsLogger(self.out_dir, tensorboard=config.tensorboard, start_step=self.global_step)

    def close(self) -> None:
        """End the run: close the logs and the task's scorer, release ``out_dir``'s lock (idempotent)."""
        self.metrics.close()
        self.task.close()
        self._lock.release()

    # ------------------------------------------------------------------ loop
    @property
    def global_step(self) -> int:
        """Steps taken (:class:`~knapsack_rl.rules.stream.RolloutBudget`)."""
        return self.budget.step

    @property
    def rollouts_total(self) -> int:
        """Rollouts generated so far, trained on or not."""
        return self.budget.spent

    @property
    def rollout_budget(self) -> int:
        """Rollouts the run may generate: the uniform arm's ``total_steps x B``."""
        return self.budget.total

    @property
    def exhausted(self) -> bool:
        """Whether a step generated nothing (the rule had no prompt left to sample)."""
        return self.budget.exhausted

    @property
    def finished(self) -> bool:
        """The run has generated its rollout budget (or hit the step cap, or its rule ran out of prompts)."""
        return self.budget.finished

    def train(self, *, stop_after: int | None = None, stop: Callable[[], bool] | None = None) -> dict[str, float]:
        """Run until :attr:`finished` (or ``stop_after`` more steps); returns the last logged metrics.

        ``stop`` is asked before every step (:func:`knapsack_rl.progress.stop_on_sigint` gives one for
        Ctrl-C): once it is true the run stops at that clean point, between two steps, and writes its
        checkpoint (when it took a step since the last one), so that a resume continues from there.
        """
        cfg = self.config
        last: dict[str, float] = {}
        if self.global_step == 0 and cfg.eval_every and self._evaluates:
            self.metrics.log(0, self.evaluate())
        todo = self.total_steps - self.global_step if stop_after is None else stop_after
        progress = Progress(max(todo, 0), f"train {self.out_dir.name}", enabled=cfg.progress)
        taken, saved = 0, self.global_step
        while not self.finished and (stop_after is None or taken < stop_after):
            if stop is not None and stop():
                logger.info("%s: stop asked; stopping after step %d", self.out_dir, self.global_step)
                break
            metrics = self.step()
            taken += 1
            if not metrics:  # the rule had nothing left to sample: the run ends
                break
            last = metrics
            progress.update(f"egr {last['train/effective_grad_ratio']:.2f} r {last['train/reward_mean']:.2f}")
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
                saved = self.global_step
        progress.close()
        if not self.finished and stop is not None and stop() and self.global_step > saved:
            self.save_checkpoint()
        if self.finished:
            if self.rollouts_total < self.rollout_budget:
                logger.warning("%s stopped after %d steps with %d of %d rollouts", self.out_dir, self.global_step,
                               self.rollouts_total, self.rollout_budget)  # fmt: skip
            self.save_checkpoint()
        self.close()
        return last

    def step(self) -> dict[str, float]:
        """One GRPO step (the named phases); logs and returns its metrics ({} when nothing was generated)."""
        cfg, timer = self.config, PhaseTimer()
        start = time.perf_counter()
        with timer.phase("sample"):
            left = self.budget.left
            spec = self.engine.begin_step(cfg.prompts_per_step, step=self.global_step, n=cfg.n, timer=timer,
                                          budget_left=left)  # fmt: skip
        log, selection, rollouts = self.rollout(spec, timer)
        if rollouts is None:
            logger.info("rule %s generated nothing in step %d; the run ends", self.rule.name, self.global_step + 1)
            self.budget.exhausted = True
            return {}
        update_metrics = self.update(select_rollouts(rollouts, selection.train), log.rewards[selection.train], timer)
        self.budget.add(log.spent)
        step_s = time.perf_counter() - start
        metrics = {
            **step_log_metrics(log, selection),
            **update_metrics,
            **rollout_metrics(rollouts.response_mask, cfg.max_new_tokens),
            **timer.seconds,
            **self._reward_failures(),
            "actor/lr": cfg.lr,
            "train/epoch": float(spec.epoch),
            "train/rollouts_total": float(self.rollouts_total),
            "perf/step_s": step_s,
            "perf/rollouts_per_s": log.spent / step_s,
        }
        due = cfg.eval_every and (self.global_step % cfg.eval_every == 0 or self.finished)
        if due and self._evaluates:
            metrics.update(self.evaluate())
        self.metrics.log(self.global_step, metrics)
        return metrics

    # ---------------------------------------------------------------- phases
    @property
    def _evaluates(self) -> bool:
        return self.eval_set is not None or self.config.eval_train_prompts > 0

    @property
    def planner(self) -> Planner | None:
        """The Planner of the run's knapsack rule (None for a rule that does not plan through one)."""
        return self.rule.planner if isinstance(self.rule, KnapsackRule) else None

    @property
    def epoch(self) -> int:
        """0-based epoch (pass over the training prompts) of the next step's batch."""
        return self.stream.peek(self.config.prompts_per_step)[1]

    def rollout(self, spec: StepSpec, timer: PhaseTimer) -> tuple[StepLog, Selection, Rollouts | None]:
        """The step's rounds: the rule plans, the engine generates and scores (``timing_s/generate``,
        ``timing_s/score``); ``timing_s/plan`` is the rest of the rounds' time (the rule's planning and
        bookkeeping, the Planner's observe included). Logs the step's counts to allocations.jsonl."""
        start, inner = time.perf_counter(), timer.total("generate", "score")
        log, selection = run_step(self.rule, spec, self.engine)
        rollouts = self.engine.end_step(log, self.tokenizer.pad_token_id)
        timer.add("plan", time.perf_counter() - start - (timer.total("generate", "score") - inner))
        record = self.planner.last if self.planner is not None else None
        estimates = np.full(log.size, np.nan) if record is None else record.p_hat  # no estimates outside the Planner
        p_hat = [None if np.isnan(p) else float(p) for p in estimates]
        self.metrics.log_allocation(self.global_step + 1, spec.epoch, p_hat, log.counts.tolist())
        return log, selection, rollouts

    def update(self, batch: Rollouts, rewards: np.ndarray, timer: PhaseTimer) -> dict[str, float]:
        """Grouped advantages (groups: the step's candidates) and the PPO-clip update on the trained
        rollouts; ``actor/*`` metrics (NaN, and no optimizer step, when the rule trains on nothing)."""
        cfg = self.config
        if len(batch) == 0:
            timer.add("advantages", 0.0)
            timer.add("update", 0.0)
            return dict.fromkeys(_UPDATE_KEYS, float("nan"))
        with timer.phase("advantages"):
            adv = grouped_advantages(
                torch.as_tensor(rewards, dtype=torch.float32),
                batch.prompt_index,
                eps=cfg.advantage_eps,
                clip=cfg.advantage_clip,
            )
        with timer.phase("update"):
            return update_policy(self.model, self.optimizer, batch, adv.to(self.device), UpdateSettings.of(cfg))

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
        """Everything needed to continue, as tensors and plain data (what :func:`encode_checkpoint` stores)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rule": {"name": self.config.rule, "state": self.rule.state_dict()},
            "stream": self.stream.state_dict(),
            "global_step": self.global_step,
            "rollouts_total": self.rollouts_total,
            "exhausted": self.exhausted,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> Path:
        """Write ``out_dir/checkpoint.pt`` atomically (temporary file, fsync, rename)."""
        path = self.out_dir / "checkpoint.pt"
        atomic_write_bytes(path, encode_checkpoint(self.state_dict()))
        logger.debug("checkpoint at step %d -> %s", self.global_step, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore :meth:`save_checkpoint`'s state; nothing in the file can execute code.

        Every field is checked before anything changes: the checksum, the settings (:func:`_check_resumable`),
        each tensor's name, shape and dtype against the live model and optimizer, the generator states (set
        on scratch generators first), the stream's cursor and the counters; then the rule's state, which
        its rule checks in full before adopting it. A refused load leaves the model, optimizer, rule,
        stream, counters and RNG states exactly as they were.

        Raises:
            ValueError: one line naming the file: not a checkpoint of this trainer (or of an older format),
                corrupt, malformed, or written by a run with other settings.
        """
        state = read_checkpoint(path, self.device)
        source = str(path)
        _check_resumable(path, state["config"], self.config.to_dict())  # the rule is part of the config
        if state["rule"]["name"] != self.config.rule:
            raise ValueError(f"{source}: holds the state of rule {state['rule']['name']!r}, not {self.config.rule!r}")
        check_model_state(state["model"], self.model, source)
        check_optimizer_state(state["optimizer"], self.optimizer, source)
        _check_generator_state(state["generator"], self.device, "generator", source)
        _check_generator_state(state["torch_rng"], torch.device("cpu"), "torch_rng", source)
        cursor = self.stream.check_state(state["stream"], source=source)
        self.rule.load_state_dict(state["rule"]["state"], source=source)  # checks all, then adopts; or raises
        # ---- everything is checked; nothing below can fail on the file's content
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.epoch, self.stream.position = cursor
        self.budget.step, self.budget.spent = state["global_step"], state["rollouts_total"]
        self.budget.exhausted = state["exhausted"]
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        torch.set_rng_state(state["torch_rng"].cpu())
        logger.info("resumed %s at step %d", self.out_dir, self.global_step)

    def _save_config(self) -> None:
        atomic_write_bytes(self.out_dir / "config.json", json.dumps(self.config.to_dict(), indent=1).encode())


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """A :meth:`Trainer.state_dict` as checkpoint bytes: one state-file envelope (:mod:`knapsack_rl.io`).

    The plain fields (steps, rollouts, ``exhausted``, the config, the stream's cursor) are its JSON meta;
    the rule's state is stored as in every engine's state file (:func:`knapsack_rl.rules.state.pack_rule_state`:
    JSON in the meta, its bytes as ``rule/k`` parts); the model, optimizer and RNG states are one
    ``torch.save`` part, ``"tensors"``, read back with ``torch.load(weights_only=True)``. One SHA-256
    covers it all.
    """
    meta = {k: state[k] for k in ("global_step", "rollouts_total", "exhausted", "config", "stream")}
    meta["rule"], rule_parts = pack_rule_state(state["rule"]["name"], state["rule"]["state"])
    buf = io.BytesIO()
    torch.save({k: state[k] for k in _TENSOR_KEYS}, buf)
    return encode_state_file(CHECKPOINT_KIND, CHECKPOINT_FORMAT, meta, {"tensors": buf.getvalue(), **rule_parts})


def read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The contents of a trainer checkpoint, shaped as :meth:`Trainer.state_dict`, with every field's type
    and range checked (tensors are checked against a live model by :func:`check_model_state`).

    Read with :func:`knapsack_rl.io.read_file_bytes` (regular files only) and the tensors with
    ``torch.load(weights_only=True)``: nothing in the file can run code.

    Raises:
        ValueError: one line naming the file, if it is not a checkpoint of this trainer (an older format,
            a foreign or corrupt file, a missing or malformed field).
    """
    source = str(path)
    file = read_state_file(
        path, what="checkpoint", kind=CHECKPOINT_KIND, version=CHECKPOINT_FORMAT, parts=["tensors"], legacy=LEGACY,
        more_parts=PART_PREFIX,
    )  # fmt: skip
    meta = _check_meta(file.meta, source)
    name, rule_state = unpack_rule_state(meta.pop("rule"), file.parts, source=source)
    try:
        tensors = torch.load(io.BytesIO(file.parts["tensors"]), map_location=device, weights_only=True)
    except Exception as exc:  # a forged pickle can fail in any way inside the restricted unpickler
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{source}: not a loadable knapsack-rl checkpoint ({first})") from None
    if not isinstance(tensors, dict) or sorted(map(str, tensors)) != sorted(_TENSOR_KEYS):
        got = sorted(map(str, tensors)) if isinstance(tensors, dict) else type(tensors).__name__
        raise ValueError(f"{source}: checkpoint tensors must hold exactly {sorted(_TENSOR_KEYS)}; got {got}")
    return {**meta, **tensors, "rule": {"name": name, "state": rule_state}}


def _check_meta(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The checkpoint's plain fields, each checked for type and range."""
    if sorted(meta) != sorted(_META_KEYS):
        raise ValueError(f"{source}: checkpoint must hold exactly {sorted(_META_KEYS)}; got {sorted(meta)}")
    try:
        out = {
            "global_step": check_int("global_step", meta["global_step"], low=0),
            "rollouts_total": check_int("rollouts_total", meta["rollouts_total"], low=0),
            "exhausted": check_bool("exhausted", meta["exhausted"]),
        }
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    if not isinstance(meta["config"], dict):
        raise ValueError(f"{source}: the checkpoint has no saved config (got {type(meta['config']).__name__})")
    return out | {"config": meta["config"], "stream": meta["stream"], "rule": meta["rule"]}


def check_model_state(saved: object, model: torch.nn.Module, source: str) -> None:
    """``saved`` must be ``model``'s state dict in kind: the same names, each tensor of the same shape and dtype."""
    _check_tensor_dict(saved, model.state_dict(), "model", source)


def _check_tensor_dict(saved: object, live: Mapping[Any, torch.Tensor], what: str, source: str) -> None:
    if not isinstance(saved, dict) or set(saved) != set(live):
        keys = set(saved) if isinstance(saved, dict) else set()
        missing, extra = sorted(map(str, set(live) - keys)), sorted(map(str, keys - set(live)))
        raise ValueError(f"{source}: {what} tensors are not this run's (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, ref in live.items():
        t = saved[key]
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.dtype != ref.dtype or t.shape != ref.shape:
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{source}: {what}[{key!r}] must be {ref.dtype} of shape {tuple(ref.shape)}; got {got}")


def check_optimizer_state(saved: object, optimizer: torch.optim.Optimizer, source: str) -> None:
    """``saved`` must be a state of ``optimizer`` (AdamW) for this run: the same parameter groups and settings,
    and per parameter the AdamW state with tensors of that parameter's shape and dtype."""
    if not isinstance(saved, dict) or sorted(map(str, saved)) != ["param_groups", "state"]:
        raise ValueError(f"{source}: optimizer state must hold exactly ['param_groups', 'state']")
    params = _check_param_groups(saved["param_groups"], optimizer, source)
    state = saved["state"]
    if not isinstance(state, dict) or not set(state) <= set(params):
        raise ValueError(f"{source}: optimizer state must map this run's parameter indices to their AdamW state")
    for pid, entry in state.items():
        param, keys = params[pid]
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, torch.Tensor) or step.ndim or not step.is_floating_point() or not 0 <= step < 2**53:
            raise ValueError(f"{source}: optimizer state[{pid}]['step'] must be a finite scalar tensor >= 0")
        _check_tensor_dict(entry, {k: param if k != "step" else step for k in keys}, f"optimizer state[{pid}]", source)


def _check_param_groups(
    groups: object, optimizer: torch.optim.Optimizer, source: str
) -> dict[Any, tuple[torch.Tensor, tuple[str, ...]]]:
    """Saved parameter groups equal to ``optimizer``'s; returns each parameter index's tensor and state keys."""
    live = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(live):
        raise ValueError(f"{source}: optimizer state must have {len(live)} parameter group(s)")
    params: dict[Any, tuple[torch.Tensor, tuple[str, ...]]] = {}
    for i, (group, ref, tensors) in enumerate(zip(groups, live, optimizer.param_groups, strict=True)):
        if not isinstance(group, dict) or set(group) != set(ref):
            raise ValueError(f"{source}: optimizer param_groups[{i}] must have the keys {sorted(ref)}")
        for key, value in ref.items():
            if type(group[key]) is not type(value) or group[key] != value:
                shown = f"{group[key]!r:.80}; this run's is {value!r:.80}"
                raise ValueError(f"{source}: optimizer param_groups[{i}][{key!r}] is {shown}")
        keys = _ADAMW_STATE + (("max_exp_avg_sq",) if ref.get("amsgrad") else ())
        params.update((pid, (p, keys)) for pid, p in zip(ref["params"], tensors["params"], strict=True))
    return params


def _check_generator_state(saved: object, device: torch.device, what: str, source: str) -> None:
    """``saved`` must be a generator state for ``device``: tried on a scratch generator, never on a live one."""
    if not isinstance(saved, torch.Tensor) or saved.dtype != torch.uint8 or saved.ndim != 1:
        raise ValueError(f"{source}: {what} must be a 1-D uint8 generator state; got {saved!r:.80}")
    try:
        torch.Generator(device=device).set_state(saved.cpu())
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {what} is not a valid generator state ({str(exc).splitlines()[0]})") from None


POLICY_FIELDS = ("model", "task", "tiny_model", "warmstart")
"""The settings that make a checkpoint's policy one of this run's (same model, same prompts)."""


def load_policy_weights(path: Path, config: TrainConfig, model: Any, device: torch.device) -> int:
    """Load the policy weights of a trainer checkpoint into ``model``; returns the checkpoint's step.

    Raises:
        ValueError: naming the file and the settings, if the checkpoint was written for another model or
            task (:data:`POLICY_FIELDS`), or is not a trainer checkpoint.
    """
    state = read_checkpoint(path, device)
    saved, current = state["config"], config.to_dict()
    differ = [k for k in POLICY_FIELDS if saved.get(k) != current[k]]
    if differ:
        raise ValueError(
            f"{path} was written for another policy or task ({', '.join(differ)} differ); "
            f"its {', '.join(POLICY_FIELDS)} must be this run's"
        )
    check_model_state(state["model"], model, str(path))
    model.load_state_dict(state["model"])
    return int(state["global_step"])


def _check_resumable(path: Path, saved: Any, current: dict[str, Any]) -> None:
    """Refuse to resume when a setting that changes what a step computes differs (names each one)."""
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: the checkpoint has no saved config")
    differ = config_diff(saved, current, ignore=RESUMABLE_CHANGES)
    if differ:
        shown = "; ".join(differ)
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
            config.warmstart_dir,
            task,
            warm=config.warmstart,
            model=config.tiny_model,
            device=str(device),
            max_new_tokens=config.max_new_tokens,
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
