"""Rollout backends that take per-prompt counts (Hugging Face transformers, KV-cached sampling)."""

from knapsack_rl.rollout.generate import Rollouts, generate, position_ids_from_mask

__all__ = ["Rollouts", "generate", "position_ids_from_mask"]
