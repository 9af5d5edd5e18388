"""A second verl back-end: verl 0.9's legacy ``RayPPOTrainer`` (``trainer.use_v1=false``) with per-prompt counts.

verl's legacy trainer draws a fresh ``uid`` per prompt, then repeats each step's batch uniformly by
``rollout.n`` twice, with no hook in between: the prompts sent to generation
(``gen_batch.repeat(repeat_times=n, interleave=True)``) and, after generation, the batch the outputs are
merged into (``batch.repeat(...)`` then ``batch.union(outputs)``, which asserts that the columns both hold,
``uid`` among them, are equal). GRPO then groups advantages by ``uid``.

**The route, and why.** An agent-loop manager loaded by name (``actor_rollout_ref.rollout.agent.
agent_loop_manager_class``) sees only the repeated generation batch. If it dropped or duplicated rows per
uid, the trainer's own batch would still be repeated ``n`` times per uid afterwards: ``union`` then either
refuses the other ``uid`` column (when the agent loop returns the input columns) or keeps the trainer's
uniform one (when the reward workers score inside the agent loop), so GRPO would group rollouts of one
prompt under another's uid. No extension point of the legacy trainer reaches the trainer's batch; its
``TaskRunner`` builds ``RayPPOTrainer`` by name. So this back-end is a small subclass,
:class:`KnapsackRayPPOTrainer`, that overrides four methods and never the training loop:

- ``_get_gen_batch(batch)`` (verl calls it with the step's batch, right before both repeats): plans the
  counts (``OneRound.plan`` through the same :class:`~.planner.VerlRun` as the V1 back-end, keyed by uid),
  then marks the step's batch and the generation batch as :class:`PlannedBatch`, whose
  ``repeat(n, interleave=True)`` repeats row i ``N_i`` times (``DataProto.sample_level_repeat``). Rows of a
  prompt stay contiguous and keep its uid; the total stays ``M * n``, so verl's mini-batch arithmetic
  (``ppo_mini_batch_size * n``) is unchanged, and verl's own ``union`` still checks that both batches agree.
- ``_validate()``: marks validation, whose batches keep verl's ``val_kwargs.n``.
- ``_update_actor(batch)`` (the first place every training step reaches with the rewards): hands
  ``token_level_scores`` per uid to the rule (``OneRound.observe``; a uid that came back with other than
  its count is refused), then updates as verl does and adds the rule's metrics to the actor's, which verl
  merges into its metrics.
- ``_save_checkpoint()``: writes ``global_step_k/knapsack/state.bin`` (the V1 back-end's file,
  :meth:`~.planner.VerlRun.save`), then lets verl save; verl writes its latest-checkpoint marker last,
  so (unlike the V1 back-end) a crash cannot leave a marked checkpoint without knapsack state. The run is
  restored when the trainer is built, from the folder verl's ``_load_checkpoint`` resumes from
  (:func:`~.resume.restore_or_create`, same rules).

The entry point, ``python -m knapsack_rl.integrations.verl.legacy`` (Hydra, as ``verl.trainer.main_ppo``;
default ``--config-name=knapsack_grpo_legacy``), runs verl's own ``main_ppo_v0.TaskRunner.run`` in a Ray
actor of its own, with the name ``RayPPOTrainer`` it builds the trainer from bound to
:class:`KnapsackRayPPOTrainer` there for the duration of the run (:class:`KnapsackTaskRunner`).

**Limits.** Rewards are observed in ``_update_actor``, which verl skips while ``trainer.critic_warmup``
exceeds the step: refused at construction. REMAX's greedy baseline batch (``adv_estimator=remax``) is
sliced from the planned batch and has never run. Importing this module checks that the installed verl
still does what the subclass relies on (:func:`~.contract.check_verl_contract`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import ray
from numpy.typing import NDArray
from verl import DataProto
from verl.trainer import main_ppo_v0
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from knapsack_rl.integrations.verl.algos import register_algorithms
from knapsack_rl.integrations.verl.config import _get
from knapsack_rl.integrations.verl.contract import LEGACY, check_verl_contract
from knapsack_rl.integrations.verl.planner import VerlRun, batch_column, dataproto_rewards, read_prompt_ids
from knapsack_rl.integrations.verl.runs import RUNS

logger = logging.getLogger(__name__)
check_verl_contract(LEGACY)  # the installed verl still repeats by rollout.n, with uids, where the subclass hooks in
register_algorithms()  # algorithm.adv_estimator can name the knapsack estimators

LEGACY_COUNTS_HINT = (
    "was the trainer knapsack_rl.integrations.verl.legacy.KnapsackRayPPOTrainer, and does verl's RayPPOTrainer.fit "
    "still repeat the batches _get_gen_batch planned?"
)
"""What to check when a prompt came back with other than its planned rollouts (:meth:`.VerlRun.observe`)."""
LEGACY_YAML_NAME = "knapsack_grpo_legacy"
"""Hydra config name of the legacy back-end's YAML (beside ``knapsack_grpo.yaml``)."""


class PlannedBatch(DataProto):
    """A ``DataProto`` of one step's M prompts whose ``repeat(n, interleave=True)`` follows the planned counts.

    Set by :func:`mark_planned` (``counts``: (M,) int64 rollouts per row, summing to ``M * n``); any other
    repeat (another ``repeat_times`` or ``interleave=False``) is refused: verl would then no longer repeat
    the way this back-end was written for. The repeated batch is a plain ``DataProto``.
    """

    knapsack_counts: NDArray[np.int64]
    knapsack_n: int

    def repeat(self, repeat_times: int = 2, interleave: bool = True) -> DataProto:
        """Row i ``counts[i]`` times, rows of one prompt contiguous (``DataProto.sample_level_repeat``)."""
        if repeat_times != self.knapsack_n or interleave is not True:
            raise ValueError(
                f"verl repeated a planned batch with repeat_times={repeat_times!r}, interleave={interleave!r}; "
                f"the knapsack legacy back-end expects repeat_times=rollout.n={self.knapsack_n}, interleave=True"
            )
        out = DataProto.sample_level_repeat(self, self.knapsack_counts.tolist())  # type: ignore[no-untyped-call]
        return DataProto(batch=out.batch, non_tensor_batch=out.non_tensor_batch, meta_info=out.meta_info)


def mark_planned(batch: DataProto, counts: NDArray[np.int64], n: int) -> None:
    """Make verl's ``batch`` (M rows, in place) a :class:`PlannedBatch` with these counts."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(batch),):
        raise ValueError(f"counts must hold one count per row of the batch ({len(batch)}); got shape {counts.shape}")
    batch.__class__ = PlannedBatch
    assert isinstance(batch, PlannedBatch)
    batch.knapsack_counts, batch.knapsack_n = counts, int(n)


def plan_legacy_batch(run: VerlRun, batch: DataProto, step: int) -> NDArray[np.int64]:
    """Counts of the step's M prompts: ``extra_info[id_key]``, ``uid`` and (if present) ``raw_prompt`` of ``batch``."""
    ids = read_prompt_ids(batch_column(batch, "extra_info"), run.settings.adapter.id_key)
    prompts = batch_column(batch, "raw_prompt") if "raw_prompt" in batch.non_tensor_batch else None
    return run.plan(ids, batch_column(batch, "uid"), prompts, step=step)


class KnapsackRayPPOTrainer(RayPPOTrainer):  # type: ignore[misc]
    """verl's ``RayPPOTrainer`` with per-prompt counts (module docstring); every other method is verl's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        warmup = _get(_get(self.config, "trainer"), "critic_warmup", 0)
        if warmup:
            raise ValueError(
                f"trainer.critic_warmup={warmup}: the knapsack legacy back-end reads the rewards where verl updates "
                f"the actor, which verl skips during critic warm-up; set trainer.critic_warmup=0"
            )
        # verl's config read and checked once per run; restored from the checkpoint verl resumes from
        self.knapsack = RUNS.get_or_create(self.config)
        self.knapsack_validating = False

    def _validate(self, merged: bool = False) -> Any:
        """verl's validation; its batches keep ``val_kwargs.n`` (not planned)."""
        self.knapsack_validating = True
        try:
            return super()._validate(merged=merged)
        finally:
            self.knapsack_validating = False

    def _get_gen_batch(self, batch: DataProto) -> DataProto:
        """verl's generation batch; for a training step, plan the counts and mark both batches planned."""
        gen_batch = super()._get_gen_batch(batch)
        if self.knapsack_validating:
            return gen_batch
        counts = plan_legacy_batch(self.knapsack, gen_batch, step=int(self.global_steps))
        n = self.knapsack.settings.n  # verl's rollout.n, as read once when the trainer was built
        mark_planned(batch, counts, n)
        mark_planned(gen_batch, counts, n)
        return gen_batch

    def _update_actor(self, batch: DataProto) -> DataProto:
        """Hand the step's rewards to the rule, then update as verl does; the rule's metrics join the actor's."""
        uids, rewards = dataproto_rewards(batch, "token_level_scores")
        metrics = self.knapsack.observe(uids, rewards, step=int(self.global_steps), hint=LEGACY_COUNTS_HINT)
        output: DataProto = super()._update_actor(batch)
        output.meta_info.setdefault("metrics", {}).update(metrics)
        return output

    def _save_checkpoint(self) -> None:
        """The run's state into ``global_step_k/knapsack/``, then verl's checkpoint (its marker last)."""
        folder = os.path.join(str(self.config.trainer.default_local_dir), f"global_step_{self.global_steps}")
        self.knapsack.save(folder)
        super()._save_checkpoint()  # type: ignore[no-untyped-call]


_VerlTaskRunner: Any = main_ppo_v0.TaskRunner.__ray_actor_class__  # type: ignore[attr-defined]  # verl's own class


@ray.remote
class KnapsackTaskRunner(_VerlTaskRunner):  # type: ignore[misc]
    """verl's legacy ``TaskRunner``: its own ``run``, with :class:`KnapsackRayPPOTrainer` as the trainer it builds.

    The name ``RayPPOTrainer`` in ``verl.trainer.main_ppo_v0`` is rebound in this actor's process only, for
    the duration of ``run`` (the actor runs nothing else)."""

    def run(self, config: Any) -> None:
        verl_trainer = main_ppo_v0.RayPPOTrainer  # type: ignore[attr-defined]
        main_ppo_v0.RayPPOTrainer = KnapsackRayPPOTrainer  # type: ignore[attr-defined]
        try:
            super().run(config)
        finally:
            main_ppo_v0.RayPPOTrainer = verl_trainer  # type: ignore[attr-defined]


def run_legacy(config: Any) -> None:
    """What ``verl.trainer.main_ppo`` does for ``trainer.use_v1=false``, with :class:`KnapsackTaskRunner`; the
    config is checked first (:func:`~.check.check_config`: a problem stops the launch in one line, before Ray)."""
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.device import auto_set_device

    from knapsack_rl.integrations.verl.check import check_config

    auto_set_device(config)
    try:
        summary = check_config(config)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    logger.info("knapsack legacy back-end: %s", summary)
    run_ppo(config, task_runner_class=KnapsackTaskRunner)


def main() -> None:
    """``python -m knapsack_rl.integrations.verl.legacy [--config-path DIR] [--config-name NAME] OVERRIDES...``
    (Hydra's command line, as ``verl.trainer.main_ppo``'s; the shipped legacy YAML by default)."""
    import hydra

    from knapsack_rl.integrations.verl.config import yaml_dir

    hydra.main(config_path=str(yaml_dir()), config_name=LEGACY_YAML_NAME, version_base=None)(run_legacy)()


if __name__ == "__main__":
    main()
