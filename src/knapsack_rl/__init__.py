"""knapsack-rl: spend the rollout budget of GRPO-style RL where it teaches the most (Knapsack RL)."""

from knapsack_rl.core import Allocation, Tracker, TrackerConfig, allocate

__version__ = "0.1.0"

__all__ = ["Allocation", "Tracker", "TrackerConfig", "__version__", "allocate"]
