"""Thin adapters that plug knapsack allocation into other RL frameworks.

- :mod:`knapsack_rl.integrations.trl`: ``KnapsackGRPOTrainer``, a drop-in subclass of TRL's ``GRPOTrainer``.
- :mod:`knapsack_rl.integrations.verl`: the verl adapter.

Nothing is imported here, so ``import knapsack_rl.integrations`` stays cheap and needs neither framework.
"""
