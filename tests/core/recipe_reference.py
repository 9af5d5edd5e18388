"""A literal, slow re-statement of the recipe's allocation procedure (docs/method.md), for tests only.

Written from docs/method.md, independently of ``knapsack_rl.core.allocate``: plain loops and the
dynamic programme, with the recipe's quirks (unestimated prompts count as p == 0; an effective
prompt given no extra rollout scores 0; overflow spread over the effective prompts).
"""

from __future__ import annotations

import math

import numpy as np

from knapsack_rl.core.solve import solve
from knapsack_rl.core.value import get_value


def _split(budgets: list[int], pool: list[int], amount: int) -> None:
    for j, i in enumerate(pool):
        budgets[i] += amount // len(pool) + (1 if j < amount % len(pool) else 0)


def recipe_allocate(
    p_hat: np.ndarray,
    n: int = 8,
    min_n: int = 2,
    max_n: int = 128,
    negative_n: int = 2,
    positive_n: int = 2,
    alpha: float = 0.9,
    fallback: bool = True,
) -> tuple[list[int], float]:
    m = len(p_hat)
    total = n * m
    rate = [0.0 if math.isnan(p) else float(p) for p in p_hat]  # the recipe stores 0 for "no estimate"
    budgets, eff, zero, others = [0] * m, [], [], []
    for i, p in enumerate(p_hat):
        if math.isnan(p):
            budgets[i] = n
        elif 0 < p < 1:
            budgets[i] = min_n
            eff.append(i)
        elif p == 0:
            budgets[i] = negative_n
        else:
            budgets[i] = positive_n
        if not 0 < rate[i] < 1:
            others.append(i)
            if rate[i] == 0:
                zero.append(i)
    remaining = total - sum(budgets)
    if not eff:
        if remaining > 0 and zero:
            _split(budgets, zero, remaining)
        elif remaining > 0:
            budgets = [n] * m
        return budgets, 0.0
    knap = remaining
    if fallback:
        c = sum(int(min(max_n, math.log(1 - alpha) / math.log(max(rate[i], 1 - rate[i])))) for i in eff)
        if c < remaining:
            _split(budgets, zero if zero else others, remaining - c)
            knap = c
    p_eff = np.array([rate[i] for i in eff])
    sol = solve(
        get_value("paper"),
        p_eff,
        np.full(len(eff), min_n),
        np.full(len(eff), max_n),
        knap,
        zero_at_lower=True,
        method="dp",
    )
    for i, k in zip(eff, sol.extra, strict=True):
        budgets[i] += int(k)
    _split(budgets, eff, knap - int(sol.extra.sum()))  # what the knapsack could not place
    return budgets, sol.objective
