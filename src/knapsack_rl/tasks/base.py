"""Prompt sets (columnar: id, prompt, answer, level, optional extras) and the reward registry.

A reward function scores a batch of responses against their reference answers::

    reward(responses, answers) -> (N,) float64 in [0, 1]
    reward(responses, answers, extras) -> (N,) float64 in [0, 1]      (``uses_extras=True``)

``extras[j]`` is the JSON-able per-prompt record of response j's prompt (for example a reasoning-gym
entry that its data set's ``score_answer`` needs). Rewards live in :data:`REWARDS`, a
:class:`knapsack_rl.core.registry.Registry`; :func:`register_reward` adds one. A reward function must
return numbers (a float array, a list of floats): a string such as ``"1.0"`` is refused, not converted
(:class:`RewardValueError`). A reward with its own time limit raises :class:`RewardTimeoutError` when it
runs out, so the response counts as a timeout rather than as an ordinary 0. How rewards are run
(in worker processes with a timeout, or in-process for cheap trusted ones) is
:mod:`knapsack_rl.tasks.scoring`'s business; this module only declares them.
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.validate import check_unique_ids

logger = logging.getLogger(__name__)

RewardFn = Callable[..., NDArray[np.float64]]
"""``reward(responses, answers[, extras]) -> (N,) float64`` rewards in [0, 1]."""

Extra = dict[str, Any]
"""A prompt's JSON-able extra record (e.g. what its scorer needs)."""


@dataclass(frozen=True)
class PromptSet:
    """A set of prompts with stable ids, reference answers and a difficulty label each.

    Attributes:
        ids: (P,) int64 stable prompt ids (unique).
        prompts: P prompt texts (already formatted for the model).
        answers: P reference answers (ground truth).
        levels: P difficulty labels (``"all"`` when a data set has none).
        extras: None, or P JSON-able dicts (one per prompt) that a scorer may need.
    """

    ids: NDArray[np.int64]
    prompts: list[str]
    answers: list[str]
    levels: list[str]
    extras: list[Extra] | None = None

    def __post_init__(self) -> None:
        n = self.ids.shape[0]
        if self.ids.ndim != 1 or not (len(self.prompts) == len(self.answers) == len(self.levels) == n):
            raise ValueError(
                f"ids, prompts, answers and levels must have one entry per prompt; got {self.ids.shape}, "
                f"{len(self.prompts)}, {len(self.answers)}, {len(self.levels)}"
            )
        if self.extras is not None and len(self.extras) != n:
            raise ValueError(f"extras must have one entry per prompt ({n}); got {len(self.extras)}")
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
            extras=None if self.extras is None else [self.extras[i] for i in idx],
        )

    def level_names(self) -> list[str]:
        """Distinct levels in first-seen order."""
        return list(dict.fromkeys(self.levels))

    def chars(self) -> set[str]:
        """Every character of the prompts and answers."""
        return set("".join(self.prompts)) | set("".join(self.answers))

    def content_hash(self) -> str:
        """sha256 hex digest of (ids, prompts, answers, levels, extras) in order, as canonical JSON."""
        import hashlib

        blob = json.dumps(
            [self.ids.tolist(), self.prompts, self.answers, self.levels, self.extras],
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()


def concat(sets: Sequence[PromptSet]) -> PromptSet:
    """The prompts of ``sets`` in order (ids must stay unique; extras kept only when every set has them)."""
    if not sets:
        raise ValueError("sets must hold at least one PromptSet")
    extras: list[Extra] | None = []
    for s in sets:
        if s.extras is None or extras is None:
            extras = None
        else:
            extras += s.extras
    return PromptSet(
        ids=np.concatenate([s.ids for s in sets]).astype(np.int64),
        prompts=[p for s in sets for p in s.prompts],
        answers=[a for s in sets for a in s.answers],
        levels=[lv for s in sets for lv in s.levels],
        extras=extras,
    )


class RewardTimeoutError(Exception):
    """Raised by a reward function whose own time limit ran out (e.g. math_verify's): counted as a timeout."""


class RewardValueError(ValueError):
    """A reward function returned something that is not one number per response."""


def check_rewards(raw: object, n: int) -> NDArray[np.float64]:
    """``raw`` (a reward function's return value) as (n,) float64; it must hold n real numbers.

    Raises:
        RewardValueError: naming the first value that is not a number (``returned '1.0' (str), not a
            number``), or the shape.
    """
    values = np.asarray(raw)
    if values.dtype.kind not in "fiub":
        flat = values.reshape(-1)
        bad = [v for v in flat if not isinstance(v, numbers.Real)][:1]
        if values.dtype.kind != "O" or bad or flat.size == 0:
            shown = bad[0] if bad else (flat[0] if flat.size else raw)
            shown = shown.item() if isinstance(shown, np.generic) else shown
            raise RewardValueError(f"returned {shown!r:.80} ({type(shown).__name__}), not a number")
    if values.shape != (n,) and not (values.shape == () and n == 1):
        raise RewardValueError(f"returned shape {values.shape} for {n} responses (expected ({n},))")
    return values.astype(np.float64).reshape(n)


@dataclass(frozen=True)
class Reward:
    """A registered reward function and how it may be run.

    Attributes:
        fn: ``fn(responses, answers)``, or ``fn(responses, answers, extras)`` when ``uses_extras``.
        in_process: run in the caller's process, batched, without a timeout. Only for cheap rewards that
            cannot hang (exact match); everything else runs in worker processes with a per-call timeout.
        uses_extras: pass the prompts' ``extras`` records as the third argument.
    """

    fn: RewardFn
    in_process: bool = False
    uses_extras: bool = False

    def __call__(
        self, responses: Sequence[str], answers: Sequence[str], extras: Sequence[Extra | None] | None = None
    ) -> NDArray[np.float64]:
        """The rewards, checked by :func:`check_rewards` (no containment: see :mod:`knapsack_rl.tasks.scoring`)."""
        if self.uses_extras:
            if extras is None:
                raise ValueError("this reward needs extras (one record per response); got extras=None")
            return check_rewards(self.fn(responses, answers, extras), len(responses))
        return check_rewards(self.fn(responses, answers), len(responses))


REWARDS: Registry[Reward] = Registry("reward", "reward function")
"""Every reward function by name."""


def register_reward(
    name: str, *, in_process: bool = False, uses_extras: bool = False
) -> Callable[[RewardFn], RewardFn]:
    """Decorator registering a module-level reward function under ``name``; a duplicate name raises.

    A reward that runs in worker processes is sent there by reference (module and name), so it must be
    defined at a module's top level.
    """

    def decorator(fn: RewardFn) -> RewardFn:
        REWARDS.add(name, Reward(fn=fn, in_process=in_process, uses_extras=uses_extras))
        return fn

    return decorator


def get_reward(name: str) -> Reward:
    """The reward registered as ``name``; an unknown name lists the valid ones."""
    return REWARDS.get(name)


def reward_names() -> list[str]:
    """Names of the registered reward functions."""
    return REWARDS.names()


def _check_lengths(responses: Sequence[str], answers: Sequence[str]) -> None:
    if len(responses) != len(answers):
        raise ValueError(f"responses and answers must have equal length; got {len(responses)} and {len(answers)}")


@register_reward("exact", in_process=True)
def exact_match(responses: Sequence[str], answers: Sequence[str]) -> NDArray[np.float64]:
    """1.0 where ``response.strip() == answer.strip()``, else 0.0; shape (N,)."""
    _check_lengths(responses, answers)
    return np.array([float(r.strip() == a.strip()) for r, a in zip(responses, answers, strict=True)])


MATH_VERIFY_TIMEOUT_S = 5
"""Seconds each of math_verify's own steps may take in the ``math_verify`` reward (its default)."""


@register_reward("math_verify")
def math_verify_reward(responses: Sequence[str], answers: Sequence[str]) -> NDArray[np.float64]:
    """:func:`math_verify_scores` with math_verify's own limit of :data:`MATH_VERIFY_TIMEOUT_S` per step."""
    return math_verify_scores(responses, answers, timeout_s=MATH_VERIFY_TIMEOUT_S)


def math_verify_scores(responses: Sequence[str], answers: Sequence[str], *, timeout_s: int) -> NDArray[np.float64]:
    """1.0 where ``math_verify.verify(parse(answer), parse(response))``, else 0.0; shape (N,).

    Each of math_verify's steps (parsing the answer, parsing the response, each comparison of a parsed
    pair) has ``timeout_s`` seconds, math_verify's own ``signal.alarm`` limit. A step that runs out
    raises :class:`RewardTimeoutError` (the response counts as a timeout), unless another pair compares
    equal; an answer math_verify cannot parse scores 0 and is no failure. math_verify's alarm works
    only in a process's main thread: run it through :class:`knapsack_rl.tasks.scoring.Scorer` (worker
    processes), never from a thread.

    Raises:
        ValueError: if the ``math-verify`` package is not installed, or if called outside the main thread.
    """
    try:
        import math_verify  # noqa: F401
    except ImportError as exc:
        raise ValueError("reward='math_verify' needs the math-verify package: pip install 'knapsack-rl[math]'") from exc
    import threading

    if threading.current_thread() is not threading.main_thread():
        raise ValueError("math_verify times itself out with signal.alarm: call it from a process's main thread")
    _check_lengths(responses, answers)
    return np.array([_math_verify_one(r, a, timeout_s) for r, a in zip(responses, answers, strict=True)])


def _math_verify_one(response: str, answer: str, timeout_s: int) -> float:
    """One response's math_verify score; its pairs are compared as ``verify`` does (any pair equal)."""
    from itertools import product

    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    try:
        gold = parse(answer if "$" in answer or "\\boxed" in answer else f"${answer}$", parsing_timeout=timeout_s,
                     raise_on_error=True)  # fmt: skip
        pred = parse(response, parsing_timeout=timeout_s, raise_on_error=True)
    except TimeoutException:
        raise RewardTimeoutError(f"math_verify's parse ran past its {timeout_s} s limit") from None
    except Exception:  # what math_verify itself maps to "nothing parsed" (raise_on_error=False)
        return 0.0
    timed_out = False
    for g, t in product(gold, pred):
        try:
            if verify(g, t, timeout_seconds=timeout_s, raise_on_error=True):
                return 1.0
        except TimeoutException:
            timed_out = True
        except Exception:  # what math_verify itself maps to "not equal" (raise_on_error=False)
            continue
    if timed_out:
        raise RewardTimeoutError(f"math_verify's comparison ran past its {timeout_s} s limit")
    return 0.0
