"""Knapsack allocation for verl (0.9.x, V1 trainer): per-prompt rollout counts through verl's own hooks.

Framework-free parts (NumPy; torch only to stamp counts; verl's ``DataProto`` where one is passed):
:class:`KnapsackVerlConfig` (the ``knapsack:`` section: the run's rule and its settings), :class:`VerlRun`
(verl batches to and from the rule, through :class:`knapsack_rl.rules.OneRound`), :class:`RunRegistry` /
:data:`RUNS` (how the hooks of one run meet) and the batch helpers of
:mod:`~knapsack_rl.integrations.verl.planner`. The classes verl loads by name from
its config (:class:`KnapsackCheckpointCallback`, :class:`KnapsackAgentLoopManager`,
:class:`KnapsackReplayBuffer`) live in :mod:`~knapsack_rl.integrations.verl.hooks` and are imported on
first access, because they need verl's full V1 stack (Ray, TransferQueue). The Hydra YAML ships with
the package: ``python -m knapsack_rl.integrations.verl.config --print``.

Names are resolved lazily (PEP 562), so ``python -m knapsack_rl.integrations.verl.config`` runs the
config module once, as ``__main__``.
"""

from __future__ import annotations

import importlib
from typing import Any

SUPPORTED_VERL = (">=0.9.1", "<0.10")
"""verl versions the adapter is written and tested against (see the README's verl section). 0.9.0 is
refused: it lacks ``trainer.checkpoint_callback_class``, so the hooks module would not even import."""

_NAMES = {
    "config": (
        "ADAPTER_KEYS",
        "KnapsackVerlConfig",
        "VerlAdapterConfig",
        "check_verl_compat",
        "check_verl_rule",
        "yaml_dir",
        "yaml_path",
    ),
    "planner": (
        "ROLLOUT_N_KEY",
        "VerlRun",
        "batch_column",
        "dataproto_rewards",
        "final_session_rows",
        "is_validation_batch",
        "plan_dataproto",
        "plan_tensordict",
        "read_prompt_ids",
    ),
    "runs": ("RUNS", "RunKey", "RunRegistry", "observe_sampled", "run_key"),
    "resume": ("newest_complete_checkpoint", "restore_or_create", "resume_folder"),
    "hooks": (
        "KnapsackAgentLoopManager",
        "KnapsackCheckpointCallback",
        "KnapsackReplayBuffer",
        "KnapsackReplayBufferAsync",
    ),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}

__all__ = ["SUPPORTED_VERL", "check_verl_version", *sorted(_MODULE_OF)]


def check_verl_version(version: str | None = None) -> str:
    """Raise a one-line ValueError unless verl ``version`` (default: the installed one) is in :data:`SUPPORTED_VERL`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if version is None:
        import verl

        version = str(verl.__version__)
    supported = ",".join(SUPPORTED_VERL)
    try:
        v = Version(version)
    except InvalidVersion:
        raise ValueError(f"verl version {version!r} is not a version number (supported: verl{supported})") from None
    if v not in SpecifierSet(supported):
        raise ValueError(
            f"verl {version} is not supported by knapsack_rl.integrations.verl, which needs verl{supported}: the "
            f"adapter relies on the V1 trainer's __rollout_n__, agent_loop_manager_class, custom_sampler and "
            f"checkpoint_callback_class hooks (verl 0.9.0 lacks the last); pip install 'verl{supported}'"
        )
    return version


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (the hooks also check the verl version)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "hooks":
        check_verl_version()
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
