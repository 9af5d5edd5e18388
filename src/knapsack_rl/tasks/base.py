"""Prompt sets (columnar: id, prompt, answer, level) and reward functions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.validate import check_unique_ids

logger = logging.getLogger(__name__)

RewardFn = Callable[[Sequence[str], Sequence[str]], NDArray[np.float64]]
"""``reward(responses, answers) -> (N,) float64`` rewards in [0, 1]."""


@dataclass(frozen=True)
class PromptSet:
    """A set of prompts with stable ids, reference answers and a difficulty label each.

    Attributes:
        ids: (P,) int64 stable prompt ids (unique).
        prompts: P prompt texts (already formatted for the model).
        answers: P reference answers (ground truth).
        levels: P difficulty labels (``"all"`` when a data set has none).
    """

    ids: NDArray[np.int64]
    prompts: list[str]
    answers: list[str]
    levels: list[str]

    def __post_init__(self) -> None:
        n = self.ids.shape[0]
        if self.ids.ndim != 1 or not (len(self.prompts) == len(self.answers) == len(self.levels) == n):
            raise ValueError(
                f"ids, prompts, answers and levels must have one entry per prompt; got {self.ids.shape}, "
                f"{len(self.prompts)}, {len(self.answers)}, {len(self.levels)}"
            )
        check_unique_ids("ids", self.ids)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def subset(self, index: NDArray[np.int64] | Sequence[int]) -> PromptSet:
        """The prompts at the given positions (in that order)."""
        idx = [int(i) for i in index]
        return PromptSet(
            ids=self.ids[idx],
            prompts=[self.prompts[i] for i in idx],
            answers=[self.answers[i] for i in idx],
            levels=[self.levels[i] for i in idx],
        )

    def level_names(self) -> list[str]:
        """Distinct levels in first-seen order."""
        return list(dict.fromkeys(self.levels))


_REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register a reward function under ``name``; a duplicate name raises."""

    def decorator(fn: RewardFn) -> RewardFn:
        if name in _REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        _REWARDS[name] = fn
        return fn

    return decorator


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``; an unknown name lists the valid ones."""
    if name not in _REWARDS:
        raise ValueError(f"reward must be one of {sorted(_REWARDS)}; got reward={name!r}")
    return _REWARDS[name]


def reward_names() -> list[str]:
    """Names of the registered reward functions."""
    return sorted(_REWARDS)


@register_reward("exact")
def exact_match(responses: Sequence[str], answers: Sequence[str]) -> NDArray[np.float64]:
    """1.0 where ``response.strip() == answer.strip()``, else 0.0; shape (N,)."""
    if len(responses) != len(answers):
        raise ValueError(f"responses and answers must have equal length; got {len(responses)} and {len(answers)}")
    return np.array([float(r.strip() == a.strip()) for r, a in zip(responses, answers, strict=True)])


@register_reward("math_verify")
def math_verify_reward(responses: Sequence[str], answers: Sequence[str]) -> NDArray[np.float64]:
    """1.0 where ``math_verify.verify(parse(answer), parse(response))``, else 0.0; shape (N,).

    Raises:
        ValueError: if the ``math-verify`` package is not installed.
    """
    try:
        from math_verify import parse, verify
    except ImportError as exc:
        raise ValueError("reward='math_verify' needs the math-verify package: pip install 'knapsack-rl[math]'") from exc
    if len(responses) != len(answers):
        raise ValueError(f"responses and answers must have equal length; got {len(responses)} and {len(answers)}")
    out = np.zeros(len(responses))
    for i, (resp, ans) in enumerate(zip(responses, answers, strict=True)):
        gold = parse(ans if "$" in ans or "\\boxed" in ans else f"${ans}$")
        out[i] = float(bool(verify(gold, parse(resp))))
    return out
