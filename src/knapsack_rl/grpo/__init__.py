"""Torch code where gradients flow: grouped advantages, the PPO-clip policy loss."""

from knapsack_rl.grpo.advantages import grouped_advantages

__all__ = ["grouped_advantages"]
