"""Torch code where gradients flow: grouped advantages, the PPO-clip policy loss."""

from knapsack_rl.grpo.advantages import grouped_advantages
from knapsack_rl.grpo.loss import ppo_clip_loss, token_logprobs
from knapsack_rl.grpo.metrics import eval_metrics, rollout_metrics

__all__ = ["eval_metrics", "grouped_advantages", "ppo_clip_loss", "rollout_metrics", "token_logprobs"]
