"""The reference GRPO trainer: config, loop, checkpoint / resume, logging, and the two-arm comparison."""

from knapsack_rl.train.config import TrainConfig, config_from_dict, load_config

__all__ = ["TrainConfig", "config_from_dict", "load_config"]
