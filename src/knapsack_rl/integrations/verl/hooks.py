"""The verl side of the adapter: three classes that verl 0.9's V1 trainer loads by name from its config.

No verl code is copied or patched; each class plugs into an extension point that verl documents:

============================================  ==============================================================
verl config key                               class / what it does
============================================  ==============================================================
``trainer.checkpoint_callback_class``         :class:`KnapsackCheckpointCallback`: creates the driver's
                                              :class:`RolloutPlanner` (restoring it on resume) and saves
                                              it into every ``global_step_{k}/knapsack/``.
``actor_rollout_ref.rollout.agent.``          :class:`KnapsackAgentLoopManager`: before each training batch
``agent_loop_manager_class``                  is dispatched, allocates and stamps ``__rollout_n__`` per
                                              prompt; verl's agent loop then runs that many sessions.
``trainer.v1.sampler.custom_sampler.``        :class:`KnapsackReplayBuffer` (sync trainer; ``...Async`` for the
``{path,name}``                               async ones): after verl's sampler returns a step's trajectories,
                                              reads their rewards, updates the tracker and returns the
                                              ``train/``, ``alloc/`` metrics, which verl merges into its
                                              metrics dict.
============================================  ==============================================================

All three run in verl's driver process (the ``TaskRunner`` Ray actor) and share one planner through
:func:`shared_planner`. Importing this module needs verl's V1 stack (``transfer_queue``, Ray); the
planning logic itself lives in :mod:`knapsack_rl.integrations.verl.planner`, which does not.
"""

from __future__ import annotations

import logging
from typing import Any

import transfer_queue as tq  # type: ignore[import-not-found]
from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

from knapsack_rl.integrations.verl.planner import (
    RolloutPlanner,
    final_session_rows,
    is_validation_batch,
    plan_tensordict,
)
from knapsack_rl.integrations.verl.resume import restore_or_create

logger = logging.getLogger(__name__)

_PLANNER: RolloutPlanner | None = None


def shared_planner(config: Any = None) -> RolloutPlanner:
    """The driver process's planner; the first call (with verl's full ``config``) creates or restores it."""
    global _PLANNER
    if _PLANNER is None:
        if config is None:
            raise RuntimeError(
                "no knapsack planner in this process: set trainer.checkpoint_callback_class="
                "knapsack_rl.integrations.verl.KnapsackCheckpointCallback (see examples/verl/)"
            )
        _PLANNER = restore_or_create(config)
    return _PLANNER


class KnapsackCheckpointCallback(CheckpointCallback):
    """Creates (or restores) the planner at trainer construction and saves it with every checkpoint."""

    def __init__(self, config: Any = None) -> None:
        super().__init__(config=config)  # type: ignore[no-untyped-call]
        self.planner = shared_planner(config)

    def on_save(
        self, trainer: Any, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs: Any
    ) -> None:
        """Write ``{checkpoint_dir}/knapsack/`` (tracker and planner state)."""
        self.planner.save(checkpoint_dir)


class KnapsackAgentLoopManager(AgentLoopManagerTQ):
    """verl's TransferQueue agent-loop manager, with per-prompt counts stamped on training batches."""

    def generate_sequences(self, prompts: Any) -> None:
        """Stamp ``__rollout_n__`` (training batches only; validation keeps ``val_kwargs.n``), then dispatch."""
        if not is_validation_batch(prompts):
            plan_tensordict(shared_planner(self.config), prompts)
        super().generate_sequences(prompts)


def observe_sampled(batch: Any, partition_id: str, global_steps: int) -> dict[str, float]:
    """Read the rewards of a sampled training batch from TransferQueue and update the shared planner."""
    if partition_id != "train" or len(batch.keys) == 0:
        return {}
    rows, uids = final_session_rows(list(batch.keys))
    keys = [batch.keys[i] for i in rows]
    data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["rm_scores"])
    if "rm_scores" not in data:
        raise RuntimeError(
            "knapsack needs the rewards when the batch is sampled: use a rule-based reward or "
            "reward.reward_model.enable_resource_pool=True (a colocated reward model scores too late)"
        )
    rewards = data["rm_scores"].sum(dim=1).double().cpu().numpy()  # (R,) one scalar per rollout
    return shared_planner().observe(uids, rewards, step=global_steps)


class KnapsackReplayBuffer(ReplayBuffer):
    """verl's synchronous replay buffer (``trainer.v1.trainer_mode=sync``); sampling also updates the tracker."""

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict[str, Any]]:
        """Sample as verl does, then observe the batch's rewards; returns verl's and our metrics."""
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        metrics.update(observe_sampled(batch, partition_id, global_steps))
        return batch, metrics


class KnapsackReplayBufferAsync(ReplayBufferAsync):
    """verl's asynchronous replay buffer (``colocate_async`` / ``separate_async``); same tracking (untested)."""

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict[str, Any]]:
        """Sample as verl does, then observe the batch's rewards; returns verl's and our metrics."""
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        metrics.update(observe_sampled(batch, partition_id, global_steps))
        return batch, metrics
