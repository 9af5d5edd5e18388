"""Knapsack allocation for verl (0.9.x, V1 trainer): per-prompt rollout counts through verl's own hooks.

Framework-free parts (need only NumPy, torch for stamping, and verl's ``DataProto`` where one is passed):
:class:`KnapsackVerlConfig`, :class:`RolloutPlanner` and the batch helpers of
:mod:`~knapsack_rl.integrations.verl.planner`. The classes verl loads by name from its config
(:class:`KnapsackCheckpointCallback`, :class:`KnapsackAgentLoopManager`, :class:`KnapsackReplayBuffer`)
live in :mod:`~knapsack_rl.integrations.verl.hooks` and are imported on first access, because they
need verl's full V1 stack (Ray, TransferQueue). See ``examples/verl/`` for the launch scripts.
"""

from __future__ import annotations

import importlib
from typing import Any

from knapsack_rl.integrations.verl.config import KnapsackVerlConfig
from knapsack_rl.integrations.verl.planner import (
    ROLLOUT_N_KEY,
    RolloutPlanner,
    batch_column,
    dataproto_rewards,
    final_session_rows,
    is_validation_batch,
    plan_dataproto,
    plan_tensordict,
    read_prompt_ids,
)

SUPPORTED_VERL = (">=0.9.0", "<0.10")
"""verl versions the adapter is written and tested against (see the README's verl section)."""

_HOOKS = (
    "KnapsackAgentLoopManager",
    "KnapsackCheckpointCallback",
    "KnapsackReplayBuffer",
    "KnapsackReplayBufferAsync",
    "shared_planner",
)

__all__ = [
    "ROLLOUT_N_KEY",
    "SUPPORTED_VERL",
    "KnapsackVerlConfig",
    "RolloutPlanner",
    "batch_column",
    "check_verl_version",
    "dataproto_rewards",
    "final_session_rows",
    "is_validation_batch",
    "plan_dataproto",
    "plan_tensordict",
    "read_prompt_ids",
    *_HOOKS,
]


def check_verl_version(version: str | None = None) -> str:
    """Raise a ValueError unless verl ``version`` (default: the installed one) is in :data:`SUPPORTED_VERL`."""
    from packaging.version import Version

    if version is None:
        import verl

        version = str(verl.__version__)
    v = Version(version)
    if not (Version("0.9.0") <= v < Version("0.10")):
        raise ValueError(
            f"verl {version} is not supported by knapsack_rl.integrations.verl (supported: verl>=0.9.0,<0.10): "
            f"the adapter relies on the V1 trainer's __rollout_n__, agent_loop_manager_class, custom_sampler "
            f"and checkpoint_callback_class hooks"
        )
    return version


def __getattr__(name: str) -> Any:
    """Import the verl-facing hook classes on first access (they need verl's V1 stack)."""
    if name in _HOOKS:
        hooks = importlib.import_module("knapsack_rl.integrations.verl.hooks")
        check_verl_version()
        return getattr(hooks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
