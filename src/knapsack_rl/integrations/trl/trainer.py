"""``KnapsackGRPOTrainer``: TRL's GRPOTrainer with per-prompt rollout counts from an allocation rule.

The trainer only translates TRL's generation batch to and from ``(prompt ids, counts, rewards)``; it reaches
the rule *only* through :class:`knapsack_rl.rules.OneRound` (the driver of engines that generate once per
step): every count comes from ``driver.plan`` and every reward goes to ``driver.observe``. Per training
generation batch (evaluation is TRL's own code path, unchanged):

1. **plan**: the B rows TRL's sampler produced (M prompts x N copies, split over processes) are gathered as
   prompt ids (checked collectively: :mod:`knapsack_rl.integrations.trl.plan`); the M unique prompts make a
   :class:`~knapsack_rl.rules.StepSpec` (``epoch = floor(state.epoch)``, ``step = state.global_step``,
   ``n = num_generations``, ``total_budget = n * M``) and ``driver.plan(spec)`` gives each its count (every
   process holds the same rule state and computes the same counts; a digest check per batch proves it);
   the batch is rebuilt with prompt i repeated ``counts[i]`` times and each process keeps its same-sized
   slice;
2. **generate and score**: TRL's ``_generate_and_score_completions`` runs unchanged on the rebuilt rows;
3. **rewards**: read from TRL's own per-batch record of the gathered rewards (``self._logs["rewards"]``, one
   deque of length ``generation_batch_size`` per reward function, filled unconditionally by TRL) and
   combined as TRL does (weighted sum, NaN where every function returned None). Nothing is captured from
   inside a TRL method;
4. **advantages**: TRL computes them by reshaping the rewards to ``(-1, num_generations)``. With unequal
   counts that reshape is wrong: a window of ``num_generations`` consecutive rollouts then mixes prompts
   (counts ``[2, 6]`` with N = 4 put prompt 0's two rollouts and two of prompt 1's in the first window),
   so its mean and std are no prompt's baseline. Only then (or when ``advantage_eps`` / ``advantage_clip``
   differ from TRL's fixed ``1e-4`` / no clip) the adapter replaces ``output["advantages"]`` by
   advantages grouped by prompt id (:func:`~knapsack_rl.integrations.trl.plan.batch_advantages`, TRL's
   NaN and ``scale_rewards`` semantics). With equal counts TRL's own advantages are kept untouched;
5. **loss weights** (``loss_agg="group-mean"`` only): TRL's ``dapo`` loss is ``sum l_{r,t} / T`` over the
   generation batch's T loss tokens (``num_items_in_batch``), so a prompt weighs by its tokens, i.e. by
   its count. Each rollout's advantage is multiplied by ``T / (G * T_g)``
   (:func:`~knapsack_rl.integrations.trl.plan.group_mean_scale`; ``T_g``: its prompt's tokens, G: the
   batch's prompts): the PPO-clip term is linear in the advantage (a positive factor keeps its sign and
   clipping), so TRL's own loss becomes ``sum_g (1/G) sum_{r in g,t} l_{r,t} / T_g``, the reference
   trainer's ``group-mean``, exactly when ``steps_per_generation == gradient_accumulation_steps`` (TRL's
   default). The KL term (``beta > 0``) and the entropy bonus keep TRL's token weighting; the
   completions table logs the advantages before the factor;
6. **observe**: the scorable rollouts' rewards become successes with
   :func:`knapsack_rl.core.tracker.to_success` under the run's ``reward_format`` / ``success_threshold``,
   and ``driver.observe(spec, prompt_index, successes)`` returns the step's metrics, logged under our own
   names (below). TRL's metrics are never modified.

**Epoch.** ``epoch = floor(state.epoch)`` read when the batch is planned, the spec's epoch for both the plan
and the observation (the 0-based pass over the training prompts). The Trainer sets
``state.epoch = e + (i + 1) / steps_in_epoch`` after each optimizer update, and TRL's sampler shows every
prompt once per pass, so the floor is the pass the batch is drawn from: exactly ``e`` at the first batch of
pass ``e`` (``e + 1.0`` is exact in floating point), and before the first update ``state.epoch`` is 0. On
resume ``state.epoch`` is restored with the Trainer's state, so the epoch continues. The cold start
(``uniform_epochs``) therefore counts TRL epochs.

**Metrics** (added to TRL's ``_metrics["train"]``, averaged over each logging interval like TRL's own):
everything ``driver.observe`` returns (:func:`knapsack_rl.rules.step_log_metrics`: ``train/*`` grouped by
prompt id, ``alloc/*`` of the counts; a knapsack rule's own ``alloc/*`` and ``tracker/prompts`` from the
Planner) and ``timing_s/plan`` (seconds gathering ids and planning). How they relate to TRL's names:

- ``train/effective_grad_ratio`` = rollouts in prompts whose rewards vary / all scorable rollouts. TRL's
  ``frac_reward_zero_std`` is the fraction of rollouts whose fixed ``num_generations`` window has zero
  reward std; with equal counts and ``scale_rewards`` "group" or "none", ``1 - frac_reward_zero_std`` equals
  ``train/effective_grad_ratio`` (up to TRL's ``isclose`` tolerance and its NaN rows); with unequal counts
  TRL's windows straddle prompts and ``frac_reward_zero_std`` has no meaning (with "batch" it is the batch
  std's flag in any case). Read ours.
- ``train/effective_prompts`` = prompts with a reward-varying group (the prompts that move the policy);
  ``train/effective_prompt_ratio`` = the same over all prompts. TRL has no equivalent.
- ``train/reward_mean`` = the mean success of the scorable rollouts (TRL's ``reward`` with 0/1 rewards).
- ``alloc/budget_{max,min,mean,total}``, ``alloc/num_above_n`` describe the counts; a knapsack rule adds
  ``alloc/<bucket>_ratio``, ``alloc/solve_s`` (:meth:`knapsack_rl.Allocation.metrics`); TRL's batch has no
  counts to describe.

**Checkpoints.** The rule's state is written to ``knapsack_rule.bin`` in every checkpoint folder
(:mod:`knapsack_rl.integrations.trl.checkpoint`). On resume the file is read and checked in full first (in
:meth:`KnapsackGRPOTrainer.train`, before transformers restores the weights or the optimizer: loaded into a
fresh rule built like the run's), then read again and adopted by swapping the checked rule in once
transformers has restored the optimizer, so a refused resume changes neither the rule nor the model. The
hooks are transformers' ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``, which TRL's own
GRPOTrainer extends the same way for its entropy controller.
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

from knapsack_rl.core.config import config_diff
from knapsack_rl.core.planner import Planner
from knapsack_rl.core.tracker import to_success
from knapsack_rl.integrations.trl.checkpoint import check_rule_file, save_rule_file
from knapsack_rl.integrations.trl.config import ENGINE, KnapsackGRPOConfig, build_rule
from knapsack_rl.integrations.trl.plan import (
    GenerationPlan,
    batch_advantages,
    dataset_prompt_ids,
    expand_rows,
    group_mean_scale,
    local_prompt_ids,
    merge_gathered_ids,
    rollout_groups,
    unique_in_order,
)
from knapsack_rl.rules import KnapsackRule, OneRound, Rule, StepSpec

logger = logging.getLogger(__name__)

TRL_ADVANTAGE_EPS = 1e-4
"""The eps TRL 1.16 adds to the std in its own advantages (``grpo_trainer.py``: ``std_rewards + 1e-4``)."""


class KnapsackGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
    """GRPOTrainer whose prompts get rollout counts from an allocation rule (module docstring).

    Takes the same arguments as ``trl.GRPOTrainer``; ``args`` must be a :class:`KnapsackGRPOConfig` (its
    ``rule`` names the rule) and ``train_dataset`` needs a unique prompt id per row in
    ``args.prompt_id_column`` (:func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids` adds one).

    Args:
        rule: optionally the rule built elsewhere (e.g. a ``KnapsackRule`` warm-started from an earlier run's
            tracker); it must be what ``args`` describe: named ``args.rule``, of the class that name builds
            and, for a knapsack rule, with the settings it builds. Default: built from ``args``.

    Attributes:
        last_plan: the :class:`GenerationPlan` of the latest training generation batch.
        last_rewards: (B,) float32 gathered rewards of that batch (NaN = unscorable), in plan order.
    """

    def __init__(self, *args: Any, rule: Rule | None = None, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, KnapsackGRPOConfig):
            raise ValueError(f"args must be a KnapsackGRPOConfig; got {type(config).__name__}")
        built = build_rule(config)
        if rule is not None:
            check_given_rule(rule, built, config)
        super().__init__(*args, **kwargs)
        self._check_supported()
        self.knapsack_args: KnapsackGRPOConfig = config
        self._tracker_settings = config.knapsack.tracker  # how rewards become successes, fixed for the run
        self._driver = OneRound(rule if rule is not None else built, ENGINE)
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
    def rule(self) -> Rule:
        """The run's rule (identical state on every process); reached only through its :class:`OneRound`."""
        return self._driver.rule

    @property
    def planner(self) -> Planner | None:
        """The Planner of a knapsack rule (``knapsack``, ``knapsack:<preset>``, ``uniform``), else None."""
        rule = self._driver.rule
        return rule.planner if isinstance(rule, KnapsackRule) else None

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
        lo, size = self.accelerator.process_index * len(local_rows), len(local_rows)
        if self._needs_own_advantages(plan):
            cfg = self.knapsack_args
            groups = torch.as_tensor(plan.rollout_group, device=rewards.device)  # (B,)
            advantages = batch_advantages(
                rewards, groups, scale_rewards=self.scale_rewards, eps=cfg.advantage_eps, clip=cfg.advantage_clip
            )  # (B,)
            local = output["advantages"]
            output["advantages"] = advantages[lo : lo + size].to(device=local.device, dtype=local.dtype)
            if self.log_completions:  # the completions table shows the advantages the loss uses
                self._logs["advantages"].extend(advantages.tolist())  # type: ignore[attr-defined]
        if self.knapsack_args.loss_agg == "group-mean":
            output["advantages"] = output["advantages"] * self._group_mean_scale(output, plan, lo, size)
        self.last_plan, self.last_rewards = plan, rewards.cpu()
        self._observe(plan, rewards.cpu().numpy())
        return output

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_rule_file(self.rule, self.knapsack_args.knapsack, folder)
        super()._save_checkpoint(model, trial)  # type: ignore[no-untyped-call]

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """TRL's ``train``; the rule file of the checkpoint to resume from is checked first (loaded into a
        fresh rule), so a refused resume fails before transformers restores anything (weights, optimizer)
        and the run's rule is unchanged."""
        folder = resume_from_checkpoint
        if folder is True:  # transformers' own rule: the latest checkpoint folder of output_dir
            folder = get_last_checkpoint(self.args.output_dir)  # type: ignore[no-untyped-call]
        if isinstance(folder, str | os.PathLike):
            check_rule_file(self.rule, self.knapsack_args.knapsack, folder)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # the rule file is read and checked first: a refused resume changes neither the rule nor the optimizer
        restore = check_rule_file(self.rule, self.knapsack_args.knapsack, checkpoint) if checkpoint else None
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[no-untyped-call]
        if restore is not None:
            self._driver = OneRound(restore.rule, ENGINE)  # adopt by swapping: cannot fail half-way
            restore.warn()
            logger.info("restored the state of rule %r from %s", restore.rule.name, restore.path)

    # ------------------------------------------------------------------ phases
    def _plan(self, inputs: list[dict[str, Any]]) -> tuple[GenerationPlan, list[dict[str, Any]]]:
        """Phase 1: gather ids (checked collectively), plan counts, rebuild the batch; returns this process's rows."""
        start = time.perf_counter()
        rank, size, n = self.accelerator.process_index, len(inputs), self.knapsack_args.group_size
        ids, error = local_prompt_ids(inputs, self.knapsack_args.prompt_id_column)
        all_ids = merge_gathered_ids(gather_object([(rank, error, ids)]))  # (B,) same on every process, or raises
        unique, first_pos = unique_in_order(all_ids, n)
        lo = rank * size
        mine = [inputs[p - lo] for p in first_pos.tolist() if lo <= p < lo + size]
        rows: list[dict[str, Any]] = gather_object(mine)  # (M,) in order of first appearance
        spec = StepSpec(
            np.asarray(unique), epoch=self.current_epoch, step=self.state.global_step, n=n, total_budget=n * len(unique)
        )
        counts = self._driver.plan(spec)  # (M,)
        plan = GenerationPlan(unique, counts, rollout_groups(counts), spec)
        _check_same_on_every_process(plan)
        local_rows = expand_rows(rows, counts)[lo : lo + size]
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
        unequal = bool(np.any(plan.budgets != cfg.group_size))
        return unequal or cfg.advantage_eps != TRL_ADVANTAGE_EPS or cfg.advantage_clip is not None

    def _group_mean_scale(self, output: dict[str, Any], plan: GenerationPlan, lo: int, size: int) -> torch.Tensor:
        """Phase 5: this process's (size,) factors on the advantages that make TRL's loss a group mean."""
        mask = output["completion_mask"]
        if output.get("tool_mask") is not None:
            mask = mask * output["tool_mask"]  # the tokens TRL's loss counts (its num_items_in_batch)
        tokens = self.accelerator.gather(mask.sum(dim=1))  # (B,) in process order, like plan.rollout_group
        groups = torch.as_tensor(plan.rollout_group, device=tokens.device)
        local = output["advantages"]
        return group_mean_scale(tokens, groups)[lo : lo + size].to(device=local.device, dtype=local.dtype)

    def _observe(self, plan: GenerationPlan, rewards: np.ndarray) -> None:
        """Phase 6: the scorable rollouts' successes to the rule; its metrics logged under their own names."""
        ok = np.flatnonzero(np.isfinite(rewards))  # scorable rollouts
        cfg = self._tracker_settings
        successes = to_success(rewards[ok].astype(np.float64), cfg.reward_format, cfg.success_threshold)
        metrics = self._driver.observe(plan.spec, plan.rollout_group[ok], successes)
        for name, value in metrics.items():
            self._metrics["train"][name].append(value)


def check_given_rule(rule: Rule, built: Rule, args: KnapsackGRPOConfig) -> None:
    """Raise unless ``rule`` is what ``args`` describe (``built``: the rule ``args`` build): one source of settings."""
    if not isinstance(rule, Rule):
        raise ValueError(f"rule must be a knapsack_rl.rules.Rule; got {type(rule).__name__}")
    if rule.name != args.rule or type(rule) is not type(built):
        raise ValueError(
            f"rule must be the rule args.rule={args.rule!r} names (a {type(built).__name__} named {built.name!r}); "
            f"got a {type(rule).__name__} named {rule.name!r}"
        )
    if isinstance(rule, KnapsackRule) and isinstance(built, KnapsackRule) and rule.config != built.config:
        diff = ", ".join(config_diff(built.config.to_dict(), rule.config.to_dict()))
        raise ValueError(f"rule's knapsack settings must be those of args (one source of settings); differ: {diff}")


def _check_same_on_every_process(plan: GenerationPlan) -> None:
    """Raise if the processes computed different counts (their rules diverged); one small gather per batch."""
    digest = hashlib.sha256(repr(plan.prompt_ids).encode() + plan.budgets.tobytes()).hexdigest()[:16]
    digests: list[str] = gather_object([digest])
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"processes disagree on the rollout counts of this generation batch (plan digests {digests}); "
            "the rule must be identical on every process (same checkpoint, same observations)"
        )
