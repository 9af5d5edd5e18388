"""The examples in the public API's docstrings run, and assert what they print (``make test`` runs them).

The modules: the top-level package and the core (allocate / Allocation, Tracker, KnapsackConfig,
Planner, the population prior) and the rules' entry points (make_rule, OneRound, run_step).
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "knapsack_rl",
    "knapsack_rl.core.allocate",
    "knapsack_rl.core.config",
    "knapsack_rl.core.planner",
    "knapsack_rl.core.tracker",
    "knapsack_rl.rules.builtin",
    "knapsack_rl.rules.engines",
    "knapsack_rl.rules.interface",
]
DOCUMENTED = {  # each must hold at least one example
    "knapsack_rl": ["knapsack_rl"],
    "knapsack_rl.core.allocate": ["allocate", "Allocation"],
    "knapsack_rl.core.config": ["KnapsackConfig"],
    "knapsack_rl.core.planner": ["Planner"],
    "knapsack_rl.core.tracker": ["Tracker"],
    "knapsack_rl.rules.builtin": ["make_rule"],
    "knapsack_rl.rules.engines": ["OneRound"],
    "knapsack_rl.rules.interface": ["run_step"],
}


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run_and_print_what_they_show(name: str) -> None:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    with_examples = {t.name.removeprefix(f"{name}.") for t in tests if t.examples}
    missing = [obj for obj in DOCUMENTED.get(name, []) if obj not in with_examples]
    assert not missing, f"{name}: no example in the docstring of {missing}"
    assert runner.failures == 0, f"{runner.failures} of {runner.tries} examples in {name} failed (printed above)"
