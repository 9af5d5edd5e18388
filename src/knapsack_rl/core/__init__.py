"""The method itself, in NumPy only: value functions, solvers, the per-step allocator, the tracker."""

from knapsack_rl.core.allocate import (
    ALLOCATE_OPTIONS,
    BUCKET_NAMES,
    EFFECTIVE,
    NEGATIVE,
    POSITIVE,
    PRESETS,
    UNESTIMATED,
    Allocation,
    allocate,
    allocate_options,
)
from knapsack_rl.core.registry import Registry
from knapsack_rl.core.solve import Solution, get_solver, register_solver, solve_dp, solve_greedy
from knapsack_rl.core.tracker import (
    Tracker,
    TrackerConfig,
    atomic_write_bytes,
    estimator_names,
    register_estimator,
    to_success,
)
from knapsack_rl.core.value import get_value, register_value, value_names

__all__ = [
    "ALLOCATE_OPTIONS",
    "BUCKET_NAMES",
    "EFFECTIVE",
    "NEGATIVE",
    "POSITIVE",
    "PRESETS",
    "UNESTIMATED",
    "Allocation",
    "Registry",
    "Solution",
    "Tracker",
    "TrackerConfig",
    "allocate",
    "allocate_options",
    "atomic_write_bytes",
    "estimator_names",
    "get_solver",
    "get_value",
    "register_estimator",
    "register_solver",
    "register_value",
    "solve_dp",
    "solve_greedy",
    "to_success",
    "value_names",
]
