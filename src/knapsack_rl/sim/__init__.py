"""Offline simulator of GRPO learning dynamics, to compare rollout allocation rules in seconds.

NumPy only. The simulator is one engine of :mod:`knapsack_rl.rules` (the rule interface, a step as
rounds, and the rules with their registry; the names used here are re-exported for convenience).
:mod:`knapsack_rl.sim.world` is the model and update rule,
:mod:`knapsack_rl.sim.regimes` the comparison per training regime; docs/simulation.md has the study.
"""

from knapsack_rl.rules import (
    KnapsackRule,
    RuleSetup,
    knapsack_factory,
    make_rule,
    register_knapsack,
    register_rule,
    rule_names,
)
from knapsack_rl.rules.interface import Engine, Limits, Round, Rule, Selection, StepLog, StepSpec, run_step
from knapsack_rl.rules.keyed import keyed_uniform
from knapsack_rl.sim import study_rules as study_rules  # registers the study's worlds (``demo``)
from knapsack_rl.sim.config import SimConfig, init_names, register_init
from knapsack_rl.sim.env import StepEnv
from knapsack_rl.sim.run import RunTrace, run_rules, simulate
from knapsack_rl.sim.summary import format_table, summarize
from knapsack_rl.sim.world import Rollouts, World

__all__ = [
    "Engine",
    "KnapsackRule",
    "Limits",
    "Rollouts",
    "Round",
    "Rule",
    "RuleSetup",
    "RunTrace",
    "Selection",
    "SimConfig",
    "StepEnv",
    "StepLog",
    "StepSpec",
    "World",
    "format_table",
    "init_names",
    "keyed_uniform",
    "knapsack_factory",
    "make_rule",
    "register_init",
    "register_knapsack",
    "register_rule",
    "rule_names",
    "run_rules",
    "run_step",
    "simulate",
    "summarize",
]
