"""Worlds and rules added for the allocator study (docs/simulation.md, section 10).

``demo``: an initial success-rate profile like the reference trainer's demo task (issue 9): easy
prompts that saturate, a block of hard but learnable prompts, and prompts that no rollout will ever
solve. The fractions of the training (and held-out) prompts, before the topic offset:

==========================  ========  ===========================================
block                       share     initial success rate p
==========================  ========  ===========================================
easy (saturating)           40%       ``U(0.85, 0.99)``
middle                      25%       ``U(0.15, 0.85)``
hard but learnable          20%       logit uniform between ``logit(0.02)`` and ``logit(0.15)``
unreachable                 15%       ``sigmoid(-30)``, i.e. 0 (stays ~0 through any shared gain)
==========================  ========  ===========================================

A small per-topic offset (std 0.25) is added, so topics differ a little; the shares measured at
p >= 0.85, in (1e-6, 0.15] and below 1e-6 are given in docs/simulation.md.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.sim.config import register_init

DEMO_SHARES = (0.40, 0.25, 0.20, 0.15)
"""Shares of the ``demo`` blocks: easy, middle, hard but learnable, unreachable."""
UNREACHABLE_LOGIT = -30.0
"""Logit of an unreachable prompt: p = sigmoid(-30) ~ 1e-13 (no shared or topic gain lifts it)."""


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.log(p / (1.0 - p))
    return out


@register_init("demo", topic_std=0.25)
def demo_init(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    """Logits (size,) of the ``demo`` world: a mixture of four blocks with shares :data:`DEMO_SHARES`.

    Each prompt's block is drawn independently (``rng.choice``), then its p inside the block; the
    block draws come first, so the shares do not depend on the later draws.
    """
    block = rng.choice(len(DEMO_SHARES), size=size, p=DEMO_SHARES)  # (size,) 0 easy, 1 middle, 2 hard, 3 unreachable
    easy = _logit(rng.uniform(0.85, 0.99, size))
    middle = _logit(rng.uniform(0.15, 0.85, size))
    hard = rng.uniform(_logit(np.float64(0.02)), _logit(np.float64(0.15)), size)
    out: NDArray[np.float64] = np.choose(block, [easy, middle, hard, np.full(size, UNREACHABLE_LOGIT)])
    return out
