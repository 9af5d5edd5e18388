"""Settings of the offline simulator and the registry of initial success-rate distributions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.validate import check_choice, check_int, check_real

# fn(rng, size) -> initial logits (size,) of the prompts' base difficulty (topic effect excluded)
InitFn = Callable[[np.random.Generator, int], NDArray[np.float64]]
INITS: Registry[tuple[InitFn, float]] = Registry("init", "initial distribution")


def register_init(name: str, topic_std: float = 0.0) -> Callable[[InitFn], InitFn]:
    """Register an initial distribution of logits ``theta_0`` under ``name``; a taken name raises.

    ``fn(rng, size)`` draws the per-prompt part; ``topic_std`` is the std of the shared per-topic
    offset added on top (so prompts of one topic start correlated).
    """
    check_real("topic_std", topic_std, low=0.0)

    def decorator(fn: InitFn) -> InitFn:
        INITS.add(name, (fn, topic_std))
        return fn

    return decorator


def init_names() -> list[str]:
    """Names of the registered initial distributions, sorted."""
    return INITS.names()


def get_init(name: str) -> tuple[InitFn, float]:
    """The registered ``(fn, topic_std)`` pair; an unknown name lists the valid ones."""
    return INITS.get(name)


@register_init("paper", topic_std=1.0)
def _paper(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    """U-shaped success rates as in the paper's Figure 1: at 8 rollouts about 30% of prompts all
    wrong, 20% all right, ~50% of rollouts with signal. theta_0 ~ N(-0.6, 2.8^2) (+ topic)."""
    return rng.normal(-0.6, 2.8, size)


@register_init("uniform", topic_std=0.5)
def _uniform(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    """Success rates roughly uniform on (0, 1): theta_0 = logit(U), U ~ U(0.01, 0.99)."""
    u = rng.uniform(0.01, 0.99, size)
    return np.log(u / (1 - u))


@register_init("hard", topic_std=1.0)
def _hard(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    """Mostly hard prompts (a weak model): theta_0 ~ N(-2.5, 2^2)."""
    return rng.normal(-2.5, 2.0, size)


@register_init("half")
def _half(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    """Every prompt at p = 0.5 (theta_0 = 0); a sanity case for tests."""
    return np.zeros(size)


@dataclass(frozen=True)
class SimConfig:
    """Settings of one simulated training run (the world, the step shape and the learning rule)."""

    num_prompts: int = 10_000
    """Training prompts P."""
    num_heldout: int = 1_000
    """Held-out prompts: same topics, own difficulty, never trained on."""
    num_topics: int = 64
    """Topics; prompts of a topic share a learnable skill component."""
    prompts_per_step: int = 256
    """Prompts per step M: the batch each step starts with."""
    n: int = 8
    """Uniform rollouts per prompt N; the step budget is B = N x M."""
    steps: int = 500
    """Length of a run in steps of B rollouts: every run stops once it has generated ``steps * B``
    rollouts (equal compute for every rule; a rule that spends more per step, such as DAPO, takes
    fewer steps, one that spends less takes more, at most ``4 * steps``)."""
    init: str = "paper"
    """Registered initial distribution of success rates (``paper``, ``uniform``, ``hard``, ``half``)."""
    lr_shared: float = 0.01
    """Step size of the shared ability (moves every prompt)."""
    lr_topic: float = 0.2
    """Step size of the topic skill (moves the prompts of a topic, held-out ones included)."""
    lr_prompt: float = 40.0
    """Step size of the prompt's own logit (memorisation; does not transfer)."""
    adv_clip: float | None = 5.0
    """Clip of the GRPO advantages (the recipe uses 5); None for no clip."""
    loss_norm: str = "trained"
    """Divisor of the summed scores in an update: ``trained`` (the rollouts of the trained batch, R: the
    recipe's token-mean, so a rule that trains only on groups with signal takes larger steps) or
    ``budget`` (B, the same for every step and rule: the step size does not depend on what was dropped), or
    ``group`` (each prompt's mean score, averaged over the step's groups: the trainer's ``group-mean``
    loss, where more rollouts of a prompt sharpen its estimate instead of enlarging its step)."""
    snapshot_every: int = 25
    """Record (true p, budget) of every prompt of one step in this many (for the budget-vs-p plot)."""

    def __post_init__(self) -> None:
        check_int("num_prompts", self.num_prompts, low=1)
        check_int("num_heldout", self.num_heldout, low=0)
        check_int("num_topics", self.num_topics, low=1)
        check_int("prompts_per_step", self.prompts_per_step, low=1, high=self.num_prompts)
        check_int("n", self.n, low=2)
        check_int("steps", self.steps, low=1)
        get_init(self.init)
        for name in ("lr_shared", "lr_topic", "lr_prompt"):
            check_real(name, getattr(self, name), low=0.0)
        check_choice("loss_norm", self.loss_norm, ("trained", "budget", "group"))
        if self.adv_clip is not None:
            check_real("adv_clip", self.adv_clip, low=0.0, open_low=True)
        check_int("snapshot_every", self.snapshot_every, low=1)

    @property
    def budget(self) -> int:
        """Rollouts per step B = N x M."""
        return self.n * self.prompts_per_step

    @property
    def total_rollouts(self) -> int:
        """Rollouts of a run, ``steps * B`` (equal for every rule)."""
        return self.steps * self.budget
