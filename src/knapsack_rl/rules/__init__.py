"""Rollout-allocation rules behind one interface, for every engine (NumPy and :mod:`knapsack_rl.core` only).

:mod:`knapsack_rl.rules.interface` is the interface (a step as rounds: :class:`StepSpec`,
:class:`Round`, :class:`StepLog`, :class:`Selection`, :class:`Rule`, the :class:`Engine` protocol and
:func:`run_step`); :mod:`knapsack_rl.rules.builtin` holds the rules (uniform, knapsack presets and
two-phase through the Planner, Reinforce-Ada-like, Pilot-Commit-like, DAPO, GRESO-like, E3-like) and
their registry; :mod:`knapsack_rl.rules.coba` adds the CoBA-RL-like rule ``coba``. The simulator
(:mod:`knapsack_rl.sim`) and the reference trainer (:mod:`knapsack_rl.train`) are two engines of it.
"""

from knapsack_rl.rules.builtin import (
    RULES,
    DapoRule,
    GresoRule,
    KnapsackRule,
    PilotCommitRule,
    ReinforceAdaRule,
    RuleFactory,
    RuleSetup,
    UncertaintyRule,
    knapsack_factory,
    make_rule,
    register_knapsack,
    register_rule,
    rule_names,
)
from knapsack_rl.rules.coba import CobaConfig, CobaRule
from knapsack_rl.rules.engines import ENGINES, EngineCaps, OneRound, check_runs_on, engines_for
from knapsack_rl.rules.interface import (
    Engine,
    Limits,
    Needs,
    Round,
    Rule,
    Selection,
    StepLog,
    StepSpec,
    run_step,
    step_log_metrics,
)
from knapsack_rl.rules.keyed import keyed_uniform

__all__ = [
    "ENGINES",
    "RULES",
    "CobaConfig",
    "CobaRule",
    "DapoRule",
    "Engine",
    "EngineCaps",
    "GresoRule",
    "KnapsackRule",
    "Limits",
    "Needs",
    "OneRound",
    "PilotCommitRule",
    "ReinforceAdaRule",
    "Round",
    "Rule",
    "RuleFactory",
    "RuleSetup",
    "Selection",
    "StepLog",
    "StepSpec",
    "UncertaintyRule",
    "check_runs_on",
    "engines_for",
    "keyed_uniform",
    "knapsack_factory",
    "make_rule",
    "register_knapsack",
    "register_rule",
    "rule_names",
    "run_step",
    "step_log_metrics",
]
