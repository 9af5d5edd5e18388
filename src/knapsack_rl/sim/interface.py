"""The rule interface, re-exported: it lives in :mod:`knapsack_rl.rules.interface` (shared by every engine)."""

from knapsack_rl.rules.interface import (
    Engine,
    Limits,
    Round,
    Rule,
    Selection,
    StepLog,
    StepSpec,
    run_step,
    step_log_metrics,
)

__all__ = ["Engine", "Limits", "Round", "Rule", "Selection", "StepLog", "StepSpec", "run_step", "step_log_metrics"]
