"""knapsack-rl: spend the rollout budget of GRPO-style RL where it teaches the most (Knapsack RL).

The top-level API is seven names: :func:`allocate` and its :class:`Allocation` (one step's counts),
:class:`Tracker` (per-prompt success rates), :class:`KnapsackConfig` (every knapsack setting, validated once;
its sections :class:`AllocationConfig` and :class:`TrackerConfig`) and :class:`Planner` (the knapsack rule's
engine-free core, for your own loop). Every engine reaches the method through one interface,
:mod:`knapsack_rl.rules` (a rule by name: :func:`~knapsack_rl.rules.make_rule`; what each engine can run:
``knapsack-rl rules``).

Example:
    One step of 3 prompts, 8 rollouts each on average: the knapsack moves rollouts from the prompt that
    is always solved (it keeps ``positive_n``) to the two that are not.

    >>> from knapsack_rl import KnapsackConfig, allocate
    >>> allocate([0.25, 0.5, 1.0], KnapsackConfig.preset("project").allocation).budgets.tolist()
    [15, 8, 1]
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
