"""Counter-based random numbers, re-exported: they live in :mod:`knapsack_rl.rules.keyed` (rules flip coins too)."""

from knapsack_rl.rules.keyed import REWARD_STREAM, SKIP_STREAM, id_keys, keyed_uniform

__all__ = ["REWARD_STREAM", "SKIP_STREAM", "id_keys", "keyed_uniform"]
