"""How verl's hooks of one run find their shared :class:`~knapsack_rl.integrations.verl.planner.VerlRun`.

verl builds the three hook classes itself, by name, in its driver process, and passes them different
things: the checkpoint callback and the agent-loop manager get verl's full config; the replay buffer
gets only its own sub-config, then batches whose trajectory keys start with the prompts' ``uid`` s.
So the hooks meet in a :class:`RunRegistry`, the only process-wide state of the adapter:

- **key**: :class:`RunKey` = (absolute ``trainer.default_local_dir``, ``trainer.project_name``,
  ``trainer.experiment_name``), where verl writes the run's checkpoints. The checkpoint callback and
  the agent-loop manager call :meth:`RunRegistry.get_or_create` with verl's config: whichever comes first
  creates the run (restoring it from the checkpoint verl resumes from), the other gets the same object.
- **the replay buffer** finds the run by the uids of the batch it sampled (:meth:`RunRegistry.for_uids`):
  verl draws a fresh ``uuid4`` per prompt, and a uid belongs to the run that planned it.
- **two runs in one process** (two keys) get two runs that share nothing. Two configs with the same key
  are one run: the second call gets the first's object, and raises if its knapsack settings differ.
  :meth:`RunRegistry.release` forgets a run (e.g. before starting a run again from scratch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.integrations.verl.config import KnapsackVerlConfig, _get
from knapsack_rl.integrations.verl.planner import VerlRun, final_session_rows
from knapsack_rl.integrations.verl.resume import restore_or_create

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunKey:
    """Identity of a verl run in one process: where it checkpoints, and its names."""

    local_dir: str
    project: str
    experiment: str


def run_key(config: Any) -> RunKey:
    """The :class:`RunKey` of verl's full config (relative ``default_local_dir`` resolved against the cwd)."""
    trainer = _get(config, "trainer")
    local_dir = _get(trainer, "default_local_dir")
    if not local_dir:
        raise ValueError(f"trainer.default_local_dir must be set to identify the run; got {local_dir!r}")
    path = Path(str(local_dir))
    path = path if path.is_absolute() else Path(os.getcwd()) / path
    return RunKey(str(path), str(_get(trainer, "project_name", "")), str(_get(trainer, "experiment_name", "")))


class RunRegistry:
    """Runs of one process by :class:`RunKey` (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: dict[RunKey, VerlRun] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, key: object) -> bool:
        return key in self._runs

    def keys(self) -> list[RunKey]:
        """The keys of the registered runs."""
        return list(self._runs)

    def get_or_create(self, config: Any) -> VerlRun:
        """The run of verl's ``config``; the first call creates it (restoring it when verl resumes)."""
        key = run_key(config)
        settings = KnapsackVerlConfig.from_verl(config)
        run = self._runs.get(key)
        if run is None:
            run = restore_or_create(config, settings)
            self._runs[key] = run
            logger.info("knapsack: registered run %s", key)
        elif run.settings != settings:
            raise ValueError(
                f"run {key} is already registered with other knapsack settings ({run.settings} != {settings}); "
                f"give the second run its own trainer.default_local_dir or experiment_name"
            )
        return run

    def get(self, key: RunKey) -> VerlRun:
        """The run registered under ``key``."""
        if key not in self._runs:
            raise ValueError(f"no knapsack run {key} in this process; registered: {self.keys()}")
        return self._runs[key]

    def for_uids(self, uids: Sequence[str]) -> VerlRun:
        """The one run that planned every uid in ``uids`` (and has not observed them yet)."""
        if len(uids) == 0:
            raise ValueError("uids is empty: no rollout to find a run for")
        owners = {id(run): run for uid in set(uids) for run in self._runs.values() if run.owns(uid)}
        unplanned = sorted(u for u in set(uids) if not any(run.owns(u) for run in self._runs.values()))
        if unplanned:
            raise ValueError(
                f"{len(unplanned)} uid(s) were never planned by a knapsack run in this process or were already "
                f"observed, e.g. {unplanned[0]!r}; is actor_rollout_ref.rollout.agent.agent_loop_manager_class "
                f"set to knapsack_rl.integrations.verl.hooks.KnapsackAgentLoopManager?"
            )
        if len(owners) > 1:
            raise ValueError(f"one sampled batch holds prompts of {len(owners)} different knapsack runs")
        return next(iter(owners.values()))

    def release(self, key: RunKey) -> None:
        """Forget the run under ``key`` (its state on disk is untouched)."""
        self.get(key)
        del self._runs[key]


RUNS = RunRegistry()
"""The registry verl's hooks use (verl builds them by class name, so they cannot be handed one)."""


def observe_sampled(
    registry: RunRegistry,
    keys: Sequence[str],
    read_rewards: Callable[[list[str]], NDArray[np.float64]],
    step: int,
) -> dict[str, float]:
    """Observe a sampled training batch: the final output of each session, its reward, its run.

    Args:
        registry: where the run that planned the batch's prompts is found.
        keys: (K,) TransferQueue keys ``{uid}_{session_id}_{index}`` of the batch.
        read_rewards: maps the R keys of final outputs to their (R,) scalar rewards.
        step: verl's global step.
    """
    if len(keys) == 0:
        return {}
    rows, uids = final_session_rows(keys)
    run = registry.for_uids(uids)
    rewards = np.asarray(read_rewards([keys[i] for i in rows]), dtype=np.float64).reshape(-1)
    return run.observe(uids, rewards, step=step)
