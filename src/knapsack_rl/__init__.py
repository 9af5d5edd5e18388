"""knapsack-rl: spend the rollout budget of GRPO-style RL where it teaches the most (Knapsack RL).

The public API is five names: :func:`allocate` and its :class:`Allocation` (one step's counts),
:class:`Tracker` (per-prompt success rates), :class:`KnapsackConfig` (every setting, validated once)
and :class:`Planner` (the one object engines talk to).
"""

from knapsack_rl.core import Allocation, AllocationConfig, KnapsackConfig, Planner, Tracker, TrackerConfig, allocate

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "AllocationConfig",
    "KnapsackConfig",
    "Planner",
    "Tracker",
    "TrackerConfig",
    "__version__",
    "allocate",
]
