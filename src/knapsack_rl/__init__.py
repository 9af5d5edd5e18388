"""knapsack-rl: spend the rollout budget of GRPO-style RL where it teaches the most (Knapsack RL).

The top-level API is seven names: :func:`allocate` and its :class:`Allocation` (one step's counts),
:class:`Tracker` (per-prompt success rates), :class:`KnapsackConfig` (every knapsack setting, validated once;
its sections :class:`AllocationConfig` and :class:`TrackerConfig`) and :class:`Planner` (the knapsack rule's
engine-free core, for your own loop). Every engine reaches the method through one interface,
:mod:`knapsack_rl.rules` (a rule by name: :func:`~knapsack_rl.rules.make_rule`; what each engine can run:
``knapsack-rl rules``).
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
