"""The method itself, in NumPy only: value functions, solvers, the per-step allocator, the tracker, the planner."""

from knapsack_rl.core.allocate import (
    BUCKET_NAMES,
    EFFECTIVE,
    NEGATIVE,
    POSITIVE,
    UNESTIMATED,
    Allocation,
    allocate,
    uniform_allocation,
)
from knapsack_rl.core.config import AllocationConfig, KnapsackConfig, preset_names
from knapsack_rl.core.planner import EpochCounter, Planner
from knapsack_rl.core.registry import Registry
from knapsack_rl.core.solve import Solution  # the solver, solve.solve, is not re-exported: it would hide its module
from knapsack_rl.core.tracker import Tracker, TrackerConfig, estimator_names, register_estimator, to_success
from knapsack_rl.core.value import (
    ValueFunction,
    get_posterior_value,
    get_value,
    posterior_value_names,
    register_posterior_value,
    register_value,
    value_names,
)

__all__ = [
    "BUCKET_NAMES",
    "EFFECTIVE",
    "NEGATIVE",
    "POSITIVE",
    "UNESTIMATED",
    "Allocation",
    "AllocationConfig",
    "EpochCounter",
    "KnapsackConfig",
    "Planner",
    "Registry",
    "Solution",
    "Tracker",
    "TrackerConfig",
    "ValueFunction",
    "allocate",
    "estimator_names",
    "get_posterior_value",
    "get_value",
    "posterior_value_names",
    "preset_names",
    "register_estimator",
    "register_posterior_value",
    "register_value",
    "to_success",
    "uniform_allocation",
    "value_names",
]
