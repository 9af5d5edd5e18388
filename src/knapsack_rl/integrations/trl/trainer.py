"""``KnapsackGRPOTrainer``: TRL's GRPOTrainer with per-prompt rollout counts from :func:`knapsack_rl.allocate`.

Per generation batch (training only; evaluation is TRL's own code path):

1. **plan**: the B rows TRL's sampler produced (M prompts x N copies, split over processes) are gathered as
   prompt ids; the M unique prompts get counts ``allocate(tracker.estimate(ids), n=N, total_budget=B)``
   (computed on every process from identical inputs, so identical everywhere); the batch is rebuilt with
   prompt i repeated ``budgets[i]`` times and each process keeps its same-sized slice;
2. **generate and score**: TRL's ``_generate_and_score_completions`` runs unchanged on the rebuilt rows;
3. **advantages**: TRL's fixed-reshape advantages are replaced by advantages grouped by prompt id
   (:func:`knapsack_rl.integrations.trl.plan.batch_advantages`, built on
   :func:`knapsack_rl.grpo.grouped_advantages`) from the gathered rewards;
4. **track**: the tracker is updated from the gathered rewards (same data, same state on every process);
5. **log**: ``alloc/...`` (:meth:`Allocation.metrics`), ``train/...`` coverage
   (:func:`knapsack_rl.core.groups.step_metrics`) and ``tracker/prompts`` go into TRL's metrics.

The tracker is saved as ``knapsack_tracker.bin`` in every checkpoint folder and restored on resume.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl.trainer.grpo_trainer import GRPOTrainer

from knapsack_rl.core.allocate import allocate
from knapsack_rl.core.groups import step_metrics
from knapsack_rl.core.tracker import Tracker
from knapsack_rl.integrations.trl.config import KnapsackGRPOConfig
from knapsack_rl.integrations.trl.plan import (
    GenerationPlan,
    batch_advantages,
    dataset_prompt_ids,
    expand_rows,
    prompt_id_of,
    rollout_groups,
    unique_in_order,
)

logger = logging.getLogger(__name__)

TRACKER_FILE = "knapsack_tracker.bin"


class KnapsackGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
    """GRPOTrainer whose prompts get rollout counts from the knapsack allocator (see the module docstring).

    Takes the same arguments as ``trl.GRPOTrainer``; ``args`` must be a :class:`KnapsackGRPOConfig` and
    ``train_dataset`` needs a unique prompt id per row in ``args.prompt_id_column``. ``tracker`` optionally
    passes a pre-filled :class:`Tracker` (e.g. from an earlier run); by default a fresh one is made from
    the config.

    Attributes:
        tracker: the success-rate tracker (identical on every process).
        last_plan: the :class:`GenerationPlan` of the latest training generation batch.
        last_rewards: (B,) float32 gathered rewards of that batch (NaN = unscorable), in plan order.
        last_advantages: (B,) float32 gathered advantages of that batch, in plan order.
    """

    def __init__(self, *args: Any, tracker: Tracker | None = None, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, KnapsackGRPOConfig):
            raise ValueError(f"args must be a KnapsackGRPOConfig; got {type(config).__name__}")
        super().__init__(*args, **kwargs)
        self._check_supported()
        self.knapsack_config: KnapsackGRPOConfig = config
        self.tracker = tracker if tracker is not None else Tracker(config.tracker_config())
        self.last_plan: GenerationPlan | None = None
        self.last_rewards: torch.Tensor | None = None
        self.last_advantages: torch.Tensor | None = None
        self._rewards_per_func: torch.Tensor | None = None
        if isinstance(self.train_dataset, Dataset):
            top = config.prompt_id_column.split(".")[0]
            if top not in self.train_dataset.column_names:
                raise ValueError(
                    f"prompt_id_column={config.prompt_id_column!r}: train_dataset has no column {top!r} "
                    f"(columns: {self.train_dataset.column_names}); add a unique id per row"
                )
            dataset_prompt_ids([{top: v} for v in self.train_dataset[top]], config.prompt_id_column)

    def _check_supported(self) -> None:
        """Raise at construction for TRL features whose batches cannot take per-prompt counts."""
        if self.rollout_func is not None:
            raise ValueError(
                "KnapsackGRPOTrainer does not support rollout_func: a custom rollout function may assume "
                "num_generations consecutive copies per prompt; generate inside the reward function instead"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} is not supported by "
                "KnapsackGRPOTrainer (it normalises per fixed-size group); use 'sum_then_normalize'"
            )
        if self.use_vllm:
            logger.warning(
                "KnapsackGRPOTrainer with vLLM (%s mode): every rollout is requested as its own n=1 prompt; this "
                "path follows TRL's code but has not been run against a live vLLM by knapsack-rl's tests",
                self.vllm_mode,
            )

    @property
    def _training(self) -> bool:
        """Whether TRL is in its training mode (as it decides: from the model's ``training`` flag)."""
        return bool(getattr(self.model, "training", False))

    # ------------------------------------------------------------------ TRL hooks
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[no-untyped-call]
        top = self.knapsack_config.prompt_id_column.split(".")[0]
        columns: list[str] = list(self._signature_columns or [])
        if top not in columns:
            self._signature_columns = [*columns, top]  # type: ignore[assignment]

    def _generate_single_turn(
        self, prompt_ids: Any, images: Any, multimodal_fields: Any, num_generations: int, *rest: Any
    ) -> Any:
        # Rows already carry each prompt's own count; with n = num_generations vLLM server mode would take every
        # N-th row as a new prompt. n = 1 per row is what the transformers and colocate paths do anyway.
        n = 1 if self._training else num_generations
        return super()._generate_single_turn(  # type: ignore[no-untyped-call]
            prompt_ids, images, multimodal_fields, n, *rest
        )

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> torch.Tensor:
        rewards_per_func: torch.Tensor = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func  # (B, F), gathered over processes
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self._training:
            return super()._generate_and_score_completions(inputs)  # type: ignore[no-any-return]
        plan, local_rows = self._plan(inputs)
        output: dict[str, Any] = super()._generate_and_score_completions(local_rows)
        rewards = self._gathered_rewards()  # (B,)
        groups = torch.as_tensor(plan.rollout_group, device=rewards.device)  # (B,)
        cfg = self.knapsack_config
        advantages = batch_advantages(
            rewards, groups, scale_rewards=self.scale_rewards, eps=cfg.advantage_eps, clip=cfg.advantage_clip
        )  # (B,)
        lo = self.accelerator.process_index * len(local_rows)
        output["advantages"] = advantages[lo : lo + len(local_rows)].to(output["advantages"].dtype)
        self._logs["advantages"].extend(advantages.tolist())  # type: ignore[attr-defined]  # replaces TRL's (deque of length B)
        self.last_plan, self.last_rewards, self.last_advantages = plan, rewards.cpu(), advantages.cpu()
        self._track_and_log(plan, rewards.cpu().numpy())
        return output

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(folder, exist_ok=True)
            self.tracker.save(os.path.join(folder, TRACKER_FILE))
        super()._save_checkpoint(model, trial)  # type: ignore[no-untyped-call]

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[no-untyped-call]
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, TRACKER_FILE)
        if not os.path.exists(path):
            raise ValueError(f"resume_from_checkpoint={checkpoint!r} has no {TRACKER_FILE}; cannot restore the tracker")
        self.tracker = Tracker.load(path)
        logger.info("restored the knapsack tracker (%d prompts) from %s", len(self.tracker), path)

    # ------------------------------------------------------------------ phases
    def _plan(self, inputs: list[dict[str, Any]]) -> tuple[GenerationPlan, list[dict[str, Any]]]:
        """Phase 1: gather ids, allocate counts, rebuild the batch; returns the plan and this process's rows."""
        start = time.perf_counter()
        cfg = self.knapsack_config
        local_ids = [prompt_id_of(row, cfg.prompt_id_column) for row in inputs]
        all_ids: list[Hashable] = gather_object(local_ids)  # (B,) same order on every process
        unique, first_pos = unique_in_order(all_ids, cfg.num_generations or 0)
        lo, size = self.accelerator.process_index * len(inputs), len(inputs)
        mine = [inputs[p - lo] for p in first_pos.tolist() if lo <= p < lo + size]
        rows: list[dict[str, Any]] = gather_object(mine)  # (M,) in order of first appearance
        p_hat = self.tracker.estimate(unique) if cfg.allocation == "knapsack" else np.full(len(unique), np.nan)
        allocation = allocate(p_hat, total_budget=len(all_ids), **cfg.allocate_kwargs())
        plan = GenerationPlan(unique, allocation.budgets, rollout_groups(allocation.budgets), allocation)
        _check_same_on_every_process(plan)
        local_rows = expand_rows(rows, allocation.budgets)[lo : lo + size]
        self._metrics["train"]["timing_s/plan"].append(time.perf_counter() - start)
        return plan, local_rows

    def _gathered_rewards(self) -> torch.Tensor:
        """(B,) weighted reward sum per rollout as TRL forms it; NaN where every reward function returned None."""
        if self._rewards_per_func is None:
            raise RuntimeError("TRL did not call _calculate_rewards; this TRL version is not supported")
        rpf, self._rewards_per_func = self._rewards_per_func, None
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)  # (B,)
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        return rewards

    def _track_and_log(self, plan: GenerationPlan, rewards: np.ndarray) -> None:
        """Phases 4 and 5: update the tracker from the gathered rewards, log allocation and coverage metrics."""
        ok = np.isfinite(rewards)  # (B,) scorable rollouts
        ids = plan.rollout_prompt_ids()
        metrics = self._metrics["train"]
        if plan.allocation is not None:
            for name, value in plan.allocation.metrics(self.num_generations).items():
                metrics[name].append(value)
        if ok.any():
            epoch = math.floor((self.state.epoch or 0.0) + 1e-6)
            self.tracker.update(
                [ids[j] for j in np.flatnonzero(ok)], rewards[ok], epoch=epoch, step=self.state.global_step
            )
            threshold = self.knapsack_config.success_threshold
            coverage = step_metrics(
                rewards[ok], plan.rollout_group[ok], success_threshold=0.5 if threshold is None else threshold
            )
            for name, value in coverage.items():
                metrics[name].append(value)
            if metrics["frac_reward_zero_std"]:  # TRL's value came from the fixed reshape
                metrics["frac_reward_zero_std"][-1] = 1.0 - coverage["train/effective_grad_ratio"]
        metrics["tracker/prompts"].append(float(len(self.tracker)))


def _check_same_on_every_process(plan: GenerationPlan) -> None:
    """Raise if the processes computed different counts (their trackers diverged); one small gather per batch."""
    digest = hashlib.sha256(repr(plan.prompt_ids).encode() + plan.budgets.tobytes()).hexdigest()[:16]
    digests: list[str] = gather_object([digest])
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"processes disagree on the rollout counts of this generation batch (plan digests {digests}); "
            "the tracker must be identical on every process (same checkpoint, same updates)"
        )
