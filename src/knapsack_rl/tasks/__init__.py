"""Task sources (embedded arithmetic, reasoning-gym, verl-layout files), prompt sets and contained rewards.

The trainer's entry point is :func:`load_task` (a :class:`TaskConfig` in, a :class:`Task` out).
"""

from knapsack_rl.tasks.arithmetic import (
    BUILTIN_LEVELS,
    LEVELS,
    ArithmeticConfig,
    LevelSpec,
    build_split,
    build_splits,
    problem_id,
    sample_problems,
)
from knapsack_rl.tasks.base import (
    REWARDS,
    PromptSet,
    Reward,
    RewardFn,
    exact_match,
    get_reward,
    register_reward,
    reward_names,
)
from knapsack_rl.tasks.gym import GymConfig, GymDataset, compute_score
from knapsack_rl.tasks.scoring import RewardError, Scorer, ScoringConfig
from knapsack_rl.tasks.source import SOURCES, Task, TaskConfig, load_task, write_task
from knapsack_rl.tasks.verl_data import load_verl_dataset, write_verl

__all__ = [
    "BUILTIN_LEVELS",
    "LEVELS",
    "REWARDS",
    "SOURCES",
    "ArithmeticConfig",
    "GymConfig",
    "GymDataset",
    "LevelSpec",
    "PromptSet",
    "Reward",
    "RewardError",
    "RewardFn",
    "Scorer",
    "ScoringConfig",
    "Task",
    "TaskConfig",
    "build_split",
    "build_splits",
    "compute_score",
    "exact_match",
    "get_reward",
    "load_task",
    "load_verl_dataset",
    "problem_id",
    "register_reward",
    "reward_names",
    "sample_problems",
    "write_task",
    "write_verl",
]
