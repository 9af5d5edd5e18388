"""Offline simulator of GRPO learning dynamics, to compare rollout allocation rules in seconds.

NumPy only. See :mod:`knapsack_rl.sim.world` for the model and update rule, :mod:`knapsack_rl.sim.rules`
for the rules and their registry, and docs/simulation.md for the study.
"""

from knapsack_rl.sim.config import SimConfig, init_names, register_init
from knapsack_rl.sim.env import StepEnv
from knapsack_rl.sim.rules import BudgetRule, KnapsackRule, KnapsackSettings, Rule, make_rule, register_rule, rule_names
from knapsack_rl.sim.run import RunTrace, run_rules, simulate
from knapsack_rl.sim.summary import format_table, mean_ci, summarize
from knapsack_rl.sim.world import Draw, Rollouts, World, keyed_uniform

__all__ = [
    "BudgetRule",
    "Draw",
    "KnapsackRule",
    "KnapsackSettings",
    "Rollouts",
    "Rule",
    "RunTrace",
    "SimConfig",
    "StepEnv",
    "World",
    "format_table",
    "init_names",
    "keyed_uniform",
    "make_rule",
    "mean_ci",
    "register_init",
    "register_rule",
    "rule_names",
    "run_rules",
    "simulate",
    "summarize",
]
