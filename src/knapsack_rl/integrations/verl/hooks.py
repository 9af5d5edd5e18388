"""The verl side of the adapter: three classes that verl 0.9's V1 trainer loads by name from its config.

No verl code is copied or patched; each class plugs into an extension point that verl documents:

============================================  ==============================================================
verl config key                               class / what it does
============================================  ==============================================================
``actor_rollout_ref.rollout.agent.``          :class:`KnapsackAgentLoopManager`: before each training batch
``agent_loop_manager_class``                  is dispatched, plans it and stamps ``__rollout_n__`` per
                                              prompt; verl's agent loop then runs that many sessions.
``trainer.v1.sampler.custom_sampler.``        :class:`KnapsackReplayBuffer` (sync trainer; ``...Async`` for the
``{path,name}``                               async ones): after verl's sampler returns a step's trajectories,
                                              reads their rewards, hands them to the rule and returns the
                                              metrics, which verl merges into its metrics dict.
``trainer.checkpoint_callback_class``         :class:`KnapsackCheckpointCallback`: saves the run (the rule's
                                              state and the adapter's) into every ``global_step_{k}/knapsack/``.
============================================  ==============================================================

All three run in verl's driver process (the ``TaskRunner`` Ray actor) and share one
:class:`~knapsack_rl.integrations.verl.planner.VerlRun` per run through
:data:`~knapsack_rl.integrations.verl.runs.RUNS` (keyed by run; either config-holding hook may create
it; see :mod:`~knapsack_rl.integrations.verl.runs`). Importing this module needs verl's V1 stack
(``transfer_queue``, Ray); everything else in the adapter does not.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import transfer_queue as tq
from numpy.typing import NDArray
from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

from knapsack_rl.integrations.verl.algos import register_algorithms
from knapsack_rl.integrations.verl.contract import V1, check_verl_contract
from knapsack_rl.integrations.verl.planner import VerlRun, is_validation_batch, plan_tensordict
from knapsack_rl.integrations.verl.runs import RUNS, observe_sampled

logger = logging.getLogger(__name__)
check_verl_contract(V1)  # the installed verl still pops __rollout_n__ and calls the hooks as they are written
register_algorithms()  # verl loads this module in its driver: algorithm.adv_estimator can name the knapsack estimators


class KnapsackCheckpointCallback(CheckpointCallback):
    """Gets (or creates and restores) the run at trainer construction and saves it with every checkpoint.

    verl builds it in ``PPOTrainer.__init__``, before anything heavy: a resume that cannot restore the rule's
    state stops there."""

    def __init__(self, config: Any = None) -> None:
        super().__init__(config=config)  # type: ignore[no-untyped-call]
        self.run = RUNS.get_or_create(config)

    def on_save(
        self, trainer: Any, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs: Any
    ) -> None:
        """Write ``{checkpoint_dir}/knapsack/state.bin`` (the rule's state and the adapter's).

        verl calls this after it wrote ``latest_checkpointed_iteration.txt`` (see
        :mod:`~knapsack_rl.integrations.verl.resume` for what a crash in between leaves and how a resume
        refuses it)."""
        self.run.save(checkpoint_dir)


class KnapsackAgentLoopManager(AgentLoopManagerTQ):
    """verl's TransferQueue agent-loop manager, with per-prompt counts stamped on training batches."""

    knapsack_run: VerlRun | None = None
    """The run of this manager's config: found (verl's config read and checked) at the first training batch,
    then kept, so the ``knapsack:`` section is parsed once per run, not once per step."""

    def generate_sequences(self, prompts: Any) -> None:
        """Stamp ``__rollout_n__`` (training batches only; validation keeps ``val_kwargs.n``), then dispatch."""
        if not is_validation_batch(prompts):
            if self.knapsack_run is None:
                self.knapsack_run = RUNS.get_or_create(self.config)
            plan_tensordict(self.knapsack_run, prompts)
        super().generate_sequences(prompts)


def _rm_scores(partition_id: str) -> Any:
    """A reader of the scalar reward (sum of ``rm_scores``) of TransferQueue keys in ``partition_id``."""

    def read(keys: list[str]) -> NDArray[np.float64]:
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["rm_scores"])
        if "rm_scores" not in data:
            raise RuntimeError(
                "knapsack needs the rewards when the batch is sampled: use a rule-based reward or "
                "reward.reward_model.enable_resource_pool=True (a colocated reward model scores too late)"
            )
        out: NDArray[np.float64] = data["rm_scores"].sum(dim=1).double().cpu().numpy()  # (R,) one per rollout
        return out

    return read


class KnapsackReplayBuffer(ReplayBuffer):
    """verl's synchronous replay buffer (``trainer.v1.trainer_mode=sync``); sampling also observes the rewards."""

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict[str, Any]]:
        """Sample as verl does, then observe the batch's rewards; returns verl's and our metrics."""
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id == "train":
            metrics.update(observe_sampled(RUNS, list(batch.keys), _rm_scores(batch.partition_id), global_steps))
        return batch, metrics


class KnapsackReplayBufferAsync(ReplayBufferAsync):
    """verl's asynchronous replay buffer (``colocate_async`` / ``separate_async``); same tracking (untested)."""

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict[str, Any]]:
        """Sample as verl does, then observe the batch's rewards; returns verl's and our metrics."""
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id == "train":
            metrics.update(observe_sampled(RUNS, list(batch.keys), _rm_scores(batch.partition_id), global_steps))
        return batch, metrics
