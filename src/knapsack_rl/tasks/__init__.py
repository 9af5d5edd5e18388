"""The embedded task suite (graded arithmetic), verl-layout data sets and reward functions."""

from knapsack_rl.tasks.arithmetic import LEVELS, ArithmeticConfig, build_splits, problem_id, sample_problems, sft_pairs
from knapsack_rl.tasks.base import PromptSet, RewardFn, exact_match, get_reward, register_reward, reward_names
from knapsack_rl.tasks.verl_data import load_verl_dataset

__all__ = [
    "LEVELS",
    "ArithmeticConfig",
    "PromptSet",
    "RewardFn",
    "build_splits",
    "exact_match",
    "get_reward",
    "load_verl_dataset",
    "problem_id",
    "register_reward",
    "reward_names",
    "sample_problems",
    "sft_pairs",
]
