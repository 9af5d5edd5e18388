"""``KnapsackGRPOTrainer``: TRL's GRPOTrainer with per-prompt rollout counts from :class:`knapsack_rl.Planner`.

The trainer only translates TRL's generation batch to and from ``(prompt ids, counts, rewards)``; every count
comes from ``Planner.plan`` and every reward goes to ``Planner.observe``. Per training generation batch
(evaluation is TRL's own code path, unchanged):

1. **plan**: the B rows TRL's sampler produced (M prompts x N copies, split over processes) are gathered as
   prompt ids (checked collectively: :mod:`knapsack_rl.integrations.trl.plan`); the M unique prompts get
   ``planner.plan(ids, epoch=epoch).budgets`` (every process holds the same planner state and computes the
   same counts; a digest check per batch proves it); the batch is rebuilt with prompt i repeated
   ``budgets[i]`` times and each process keeps its same-sized slice;
2. **generate and score**: TRL's ``_generate_and_score_completions`` runs unchanged on the rebuilt rows;
3. **rewards**: read from TRL's own per-batch record of the gathered rewards (``self._logs["rewards"]``, one
   deque of length ``generation_batch_size`` per reward function, filled unconditionally by TRL) and
   combined as TRL does (weighted sum, NaN where every function returned None). Nothing is captured from
   inside a TRL method;
4. **advantages**: TRL computes them by reshaping the rewards to ``(-1, num_generations)``. With unequal
   counts that reshape is wrong: a window of ``num_generations`` consecutive rollouts then mixes prompts
   (budgets ``[2, 6]`` with N = 4 put prompt 0's two rollouts and two of prompt 1's in the first window),
   so its mean and std are no prompt's baseline. Only then (or when ``advantage_eps`` / ``advantage_clip``
   differ from TRL's fixed ``1e-4`` / no clip) the adapter replaces ``output["advantages"]`` by
   advantages grouped by prompt id (:func:`~knapsack_rl.integrations.trl.plan.batch_advantages`, TRL's
   NaN and ``scale_rewards`` semantics). With equal counts TRL's own advantages are kept untouched;
5. **observe**: ``planner.observe(rollout ids, rewards, epoch=epoch, step=global_step)`` on the scorable
   rollouts; its metrics are logged under our own names (below). TRL's metrics are never modified.

**Epoch.** ``epoch = floor(state.epoch)`` read when the batch is planned, passed to both ``plan`` and
``observe`` (the Planner's contract: the 0-based pass over the training prompts, the same value for the
plan and the observation of a step). The Trainer sets ``state.epoch = e + (i + 1) / steps_in_epoch`` after
each optimizer update, and TRL's sampler shows every prompt once per pass, so the floor is the pass the
batch is drawn from: exactly ``e`` at the first batch of pass ``e`` (``e + 1.0`` is exact in floating
point), and before the first update ``state.epoch`` is 0. On resume ``state.epoch`` is restored with the
Trainer's state, so the epoch continues. The cold start (``uniform_epochs``) therefore counts TRL epochs.

**Metrics** (added to TRL's ``_metrics["train"]``, averaged over each logging interval like TRL's own):
everything :meth:`Planner.observe` returns (``alloc/*`` of the batch's plan, ``train/*`` grouped by prompt
id, ``alloc/probe_rollouts``, ``tracker/prompts``) and ``timing_s/plan`` (seconds gathering ids and
planning). How they relate to TRL's names:

- ``train/effective_grad_ratio`` = rollouts in prompts whose rewards vary / all scorable rollouts. TRL's
  ``frac_reward_zero_std`` is the fraction of rollouts whose fixed ``num_generations`` window has zero
  reward std; with equal counts and ``scale_rewards`` "group" or "none", ``1 - frac_reward_zero_std`` equals
  ``train/effective_grad_ratio`` (up to TRL's ``isclose`` tolerance and its NaN rows); with unequal counts
  TRL's windows straddle prompts and ``frac_reward_zero_std`` has no meaning (with "batch" it is the batch
  std's flag in any case). Read ours.
- ``train/effective_prompts`` = prompts with a reward-varying group (the prompts that move the policy);
  ``train/effective_prompt_ratio`` = the same over all prompts. TRL has no equivalent.
- ``train/reward_mean`` = TRL's ``reward`` over scorable rollouts; TRL's ``reward_std`` has no twin.
- ``alloc/budget_{max,min,mean,total}``, ``alloc/num_above_n``, ``alloc/<bucket>_ratio``, ``alloc/solve_s``
  describe the counts (:meth:`knapsack_rl.Allocation.metrics`); TRL's batch has no counts to describe.

**Checkpoints.** ``planner.state_dict()`` (the tracker's bytes inside) is written to
``knapsack_planner.bin`` in every checkpoint folder (:mod:`knapsack_rl.integrations.trl.checkpoint`). On
resume the file is read and checked in full first (``check_planner``: a malformed file, or a tracker saved
under other tracker settings, is refused in :meth:`KnapsackGRPOTrainer.train` before transformers restores
the weights or the optimizer), then adopted once transformers has restored the optimizer, so a refused
resume changes neither the planner nor the model. The hooks are transformers' ``_save_checkpoint`` /
``_load_optimizer_and_scheduler``, which TRL's
own GRPOTrainer extends the same way for its entropy controller.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl.trainer.grpo_trainer import GRPOTrainer

from knapsack_rl.core.planner import Planner
from knapsack_rl.integrations.trl.checkpoint import check_planner, save_planner
from knapsack_rl.integrations.trl.config import KnapsackGRPOConfig, check_supported
from knapsack_rl.integrations.trl.plan import (
    GenerationPlan,
    batch_advantages,
    dataset_prompt_ids,
    expand_rows,
    local_prompt_ids,
    merge_gathered_ids,
    rollout_groups,
    unique_in_order,
)

logger = logging.getLogger(__name__)

TRL_ADVANTAGE_EPS = 1e-4
"""The eps TRL 1.16 adds to the std in its own advantages (``grpo_trainer.py``: ``std_rewards + 1e-4``)."""


class KnapsackGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
    """GRPOTrainer whose prompts get rollout counts from a :class:`knapsack_rl.Planner` (module docstring).

    Takes the same arguments as ``trl.GRPOTrainer``; ``args`` must be a :class:`KnapsackGRPOConfig` and
    ``train_dataset`` needs a unique prompt id per row in ``args.prompt_id_column``
    (:func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids` adds one).

    Args:
        planner: optionally a planner built elsewhere (e.g. warm-started from an earlier run); its config
            must equal ``args.knapsack``. Default: ``Planner(args.knapsack)``.

    Attributes:
        planner: the :class:`Planner` (identical state on every process).
        last_plan: the :class:`GenerationPlan` of the latest training generation batch.
        last_rewards: (B,) float32 gathered rewards of that batch (NaN = unscorable), in plan order.
    """

    def __init__(self, *args: Any, planner: Planner | None = None, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, KnapsackGRPOConfig):
            raise ValueError(f"args must be a KnapsackGRPOConfig; got {type(config).__name__}")
        knapsack = config.knapsack
        check_supported(knapsack)
        if planner is not None and planner.config != knapsack:
            raise ValueError(
                f"planner.config must equal args.knapsack (one source of settings); got {planner.config} and {knapsack}"
            )
        super().__init__(*args, **kwargs)
        self._check_supported()
        self.knapsack_args: KnapsackGRPOConfig = config
        self.planner = planner if planner is not None else Planner(knapsack)
        self.last_plan: GenerationPlan | None = None
        self.last_rewards: torch.Tensor | None = None
        if isinstance(self.train_dataset, Dataset):
            top = config.prompt_id_column.split(".")[0]
            if top not in self.train_dataset.column_names:
                raise ValueError(
                    f"prompt_id_column={config.prompt_id_column!r}: train_dataset has no column {top!r} "
                    f"(columns: {self.train_dataset.column_names}); add a unique, stable id per row with "
                    "knapsack_rl.integrations.prompt_ids.add_prompt_ids(dataset)"
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
        names = list(self.reward_func_names)
        if len(set(names)) != len(names):
            raise ValueError(
                f"reward functions need distinct names (TRL keys its per-batch reward record by name); got {names}"
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

    @property
    def current_epoch(self) -> int:
        """``floor(state.epoch)``: the 0-based pass over the training prompts (module docstring)."""
        return math.floor(self.state.epoch or 0.0)

    # ------------------------------------------------------------------ TRL hooks
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[no-untyped-call]
        top = self.knapsack_args.prompt_id_column.split(".")[0]
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

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self._training:
            return super()._generate_and_score_completions(inputs)  # type: ignore[no-any-return]
        plan, local_rows = self._plan(inputs)
        output: dict[str, Any] = super()._generate_and_score_completions(local_rows)
        rewards = self._batch_rewards(plan.rollout_group.size)  # (B,)
        if self._needs_own_advantages(plan):
            cfg = self.knapsack_args
            groups = torch.as_tensor(plan.rollout_group, device=rewards.device)  # (B,)
            advantages = batch_advantages(
                rewards, groups, scale_rewards=self.scale_rewards, eps=cfg.advantage_eps, clip=cfg.advantage_clip
            )  # (B,)
            lo = self.accelerator.process_index * len(local_rows)
            local = output["advantages"]
            output["advantages"] = advantages[lo : lo + len(local_rows)].to(device=local.device, dtype=local.dtype)
            if self.log_completions:  # the completions table shows the advantages the loss uses
                self._logs["advantages"].extend(advantages.tolist())  # type: ignore[attr-defined]
        self.last_plan, self.last_rewards = plan, rewards.cpu()
        self._observe(plan, rewards.cpu().numpy())
        return output

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_planner(self.planner, folder)
        super()._save_checkpoint(model, trial)  # type: ignore[no-untyped-call]

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """TRL's ``train``; the planner file of the checkpoint to resume from is checked first, so a refused
        resume fails before transformers restores anything (weights, optimizer) and the planner is unchanged."""
        folder = resume_from_checkpoint
        if folder is True:  # transformers' own rule: the latest checkpoint folder of output_dir
            folder = get_last_checkpoint(self.args.output_dir)  # type: ignore[no-untyped-call]
        if isinstance(folder, str | os.PathLike):
            check_planner(self.planner, folder)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # the planner file is read and checked first: a refused resume changes neither the planner nor the optimizer
        restore = check_planner(self.planner, checkpoint) if checkpoint is not None else None
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[no-untyped-call]
        if restore is not None:
            path = restore.apply()
            logger.info("restored the knapsack planner (%d prompts tracked) from %s", len(self.planner.tracker), path)

    # ------------------------------------------------------------------ phases
    def _plan(self, inputs: list[dict[str, Any]]) -> tuple[GenerationPlan, list[dict[str, Any]]]:
        """Phase 1: gather ids (checked collectively), plan counts, rebuild the batch; returns this process's rows."""
        start = time.perf_counter()
        rank, size = self.accelerator.process_index, len(inputs)
        ids, error = local_prompt_ids(inputs, self.knapsack_args.prompt_id_column)
        all_ids = merge_gathered_ids(gather_object([(rank, error, ids)]))  # (B,) same on every process, or raises
        unique, first_pos = unique_in_order(all_ids, self.planner.config.allocation.n)  # n == num_generations
        lo = rank * size
        mine = [inputs[p - lo] for p in first_pos.tolist() if lo <= p < lo + size]
        rows: list[dict[str, Any]] = gather_object(mine)  # (M,) in order of first appearance
        epoch = self.current_epoch
        allocation = self.planner.plan(unique, epoch=epoch)
        plan = GenerationPlan(unique, allocation.budgets, rollout_groups(allocation.budgets), allocation, epoch)
        _check_same_on_every_process(plan)
        local_rows = expand_rows(rows, allocation.budgets)[lo : lo + size]
        self._metrics["train"]["timing_s/plan"].append(time.perf_counter() - start)
        return plan, local_rows

    def _batch_rewards(self, size: int) -> torch.Tensor:
        """(B,) rewards of the latest batch from TRL's record, combined as TRL does (module docstring, phase 3)."""
        record: Any = self._logs["rewards"]
        columns = []
        for name in self.reward_func_names:
            values = list(record[name])[-size:] if name in record else []
            if len(values) != size:
                raise RuntimeError(
                    f"TRL's reward record for {name!r} holds {len(values)} values, not the batch's {size}; this TRL "
                    "version stores rewards differently and is not supported"
                )
            columns.append(values)
        per_func = torch.tensor(columns, dtype=torch.float32).T  # (B, F), NaN where a function returned None
        rewards = (per_func * self.reward_weights.detach().cpu().float().unsqueeze(0)).nansum(dim=1)  # (B,)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        return rewards

    def _needs_own_advantages(self, plan: GenerationPlan) -> bool:
        """TRL's reshape advantages are right only for equal counts, its eps and no clip (module docstring)."""
        cfg = self.knapsack_args
        unequal = bool(np.any(plan.budgets != self.planner.config.allocation.n))
        return unequal or cfg.advantage_eps != TRL_ADVANTAGE_EPS or cfg.advantage_clip is not None

    def _observe(self, plan: GenerationPlan, rewards: np.ndarray) -> None:
        """Phase 5: hand the scorable rollouts to the planner and log its metrics under their own names."""
        ok = np.flatnonzero(np.isfinite(rewards))  # scorable rollouts
        ids = plan.rollout_prompt_ids()
        metrics = self.planner.observe([ids[j] for j in ok], rewards[ok], epoch=plan.epoch, step=self.state.global_step)
        for name, value in metrics.items():
            self._metrics["train"][name].append(value)


def _check_same_on_every_process(plan: GenerationPlan) -> None:
    """Raise if the processes computed different counts (their planners diverged); one small gather per batch."""
    digest = hashlib.sha256(repr(plan.prompt_ids).encode() + plan.budgets.tobytes()).hexdigest()[:16]
    digests: list[str] = gather_object([digest])
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"processes disagree on the rollout counts of this generation batch (plan digests {digests}); "
            "the planner must be identical on every process (same checkpoint, same observations)"
        )
