"""Multi-digit arithmetic with graded difficulty: the embedded task suite of the demo.

A problem is a prompt such as ``"47+85="`` with the answer ``"132"``. Difficulty levels grow with the
number of digits, the number of carries / borrows and the operation:

=====  ============================================  ================
level  problem                                       example
=====  ============================================  ================
L1     1-digit + 1-digit                             ``3+5=`` -> 8
L2     2-digit + 1-digit, no carry                   ``23+4=`` -> 27
L3     2-digit + 1-digit, with a carry               ``27+5=`` -> 32
L4     2-digit + 2-digit, no carry                   ``23+41=`` -> 64
L5     2-digit + 2-digit, with a carry               ``47+85=`` -> 132
L6     2-digit - 2-digit (non-negative), a borrow    ``52-27=`` -> 25
L7     3-digit + 3-digit, at least two carries       ``478+365=`` -> 843
L8     2-digit x 1-digit                             ``47*6=`` -> 282
=====  ============================================  ================

Every problem has a stable integer id: the first 8 bytes of ``blake2b(prompt)`` masked to 63 bits, so
the same problem gets the same id whatever the seed or the order of generation. Splits are disjoint
by id and generated reproducibly from ``np.random.Generator(seed)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from knapsack_rl.core.validate import check_int
from knapsack_rl.tasks.base import PromptSet

LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8")
"""Difficulty labels, easiest first."""


def problem_id(prompt: str) -> int:
    """Stable non-negative int64 id of a prompt text: ``blake2b(prompt)[:8] & (2**63 - 1)``."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _carries(a: int, b: int) -> int:
    """Number of carries in the column addition a + b."""
    carry, count = 0, 0
    while a or b:
        carry = int((a % 10 + b % 10 + carry) >= 10)
        count += carry
        a, b = a // 10, b // 10
    return count


def _pair(rng: np.random.Generator, da: int, db: int) -> tuple[int, int]:
    a = int(rng.integers(10 ** (da - 1) if da > 1 else 0, 10**da))
    b = int(rng.integers(10 ** (db - 1) if db > 1 else 0, 10**db))
    return a, b


def _add(da: int, db: int, carries: tuple[int, int]) -> Callable[[np.random.Generator], tuple[int, str, int] | None]:
    """Generator of ``a + b`` with da / db digits and a number of carries in [lo, hi]."""

    def gen(rng: np.random.Generator) -> tuple[int, str, int] | None:
        a, b = _pair(rng, da, db)
        return (a, "+", b) if carries[0] <= _carries(a, b) <= carries[1] else None

    return gen


def _sub_borrow(rng: np.random.Generator) -> tuple[int, str, int] | None:
    a, b = _pair(rng, 2, 2)
    a, b = max(a, b), min(a, b)
    return (a, "-", b) if a % 10 < b % 10 else None  # a borrow in the units column


def _mul(rng: np.random.Generator) -> tuple[int, str, int] | None:
    return int(rng.integers(10, 100)), "*", int(rng.integers(2, 10))


_GENERATORS: dict[str, Callable[[np.random.Generator], tuple[int, str, int] | None]] = {
    "L1": _add(1, 1, (0, 1)),
    "L2": _add(2, 1, (0, 0)),
    "L3": _add(2, 1, (1, 9)),
    "L4": _add(2, 2, (0, 0)),
    "L5": _add(2, 2, (1, 9)),
    "L6": _sub_borrow,
    "L7": _add(3, 3, (2, 9)),
    "L8": _mul,
}
_OPS: dict[str, Callable[[int, int], int]] = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class ArithmeticConfig:
    """Settings of the arithmetic task suite (train and held-out splits)."""

    seed: int = 1234
    """Seed of the problem generator (the splits are a pure function of the whole config)."""
    train_per_level: tuple[int, ...] = (64, 64, 64, 64, 64, 64, 64, 64)
    """RL training prompts per level L1..L8."""
    eval_per_level: int = 24
    """Held-out prompts per level (disjoint from the training prompts)."""
    levels: tuple[str, ...] = LEVELS
    """Levels used, a subset of L1..L8, in the order of ``train_per_level``."""

    def __post_init__(self) -> None:
        check_int("seed", self.seed, low=0)
        check_int("eval_per_level", self.eval_per_level, low=0)
        for name in self.levels:
            if name not in _GENERATORS:
                raise ValueError(f"levels must be a subset of {list(LEVELS)}; got {name!r}")
        if len(self.train_per_level) != len(self.levels):
            raise ValueError(
                f"train_per_level needs one count per level ({len(self.levels)}); got {self.train_per_level!r}"
            )
        for count in self.train_per_level:
            check_int("train_per_level", count, low=0)


def sample_problems(
    level: str, count: int, rng: np.random.Generator, *, exclude: set[int] | None = None
) -> list[tuple[str, str]]:
    """``count`` distinct (prompt, answer) pairs of one level, skipping ids in ``exclude``.

    Raises:
        ValueError: if the level is unknown or has fewer than ``count`` new distinct problems.
    """
    if level not in _GENERATORS:
        raise ValueError(f"level must be one of {list(LEVELS)}; got {level!r}")
    check_int("count", count, low=0)
    seen = set(exclude or ())
    out: list[tuple[str, str]] = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > 200 * (count + 10):
            raise ValueError(f"level {level} has fewer than count={count} distinct new problems")
        sample = _GENERATORS[level](rng)
        if sample is None:
            continue
        a, op, b = sample
        prompt = f"{a}{op}{b}="
        pid = problem_id(prompt)
        if pid in seen:
            continue
        seen.add(pid)
        out.append((prompt, str(_OPS[op](a, b))))
    return out


def build_splits(config: ArithmeticConfig) -> tuple[PromptSet, PromptSet]:
    """(train, held-out) prompt sets of the suite; disjoint ids, each labelled by level."""
    rng = np.random.default_rng(config.seed)
    train_rows: list[tuple[str, str, str]] = []
    eval_rows: list[tuple[str, str, str]] = []
    used: set[int] = set()
    for level, n_train in zip(config.levels, config.train_per_level, strict=True):
        eval_pairs = sample_problems(level, config.eval_per_level, rng, exclude=used)
        used.update(problem_id(p) for p, _ in eval_pairs)
        train_pairs = sample_problems(level, n_train, rng, exclude=used)
        used.update(problem_id(p) for p, _ in train_pairs)
        eval_rows += [(p, a, level) for p, a in eval_pairs]
        train_rows += [(p, a, level) for p, a in train_pairs]
    return _to_set(train_rows), _to_set(eval_rows)


def sft_pairs(
    count: int, rng: np.random.Generator, *, level_weights: Sequence[float], levels: Sequence[str] = LEVELS
) -> list[tuple[str, str]]:
    """``count`` (prompt, answer) pairs drawn i.i.d. (repeats allowed) with the given level weights."""
    w = np.asarray(level_weights, dtype=np.float64)
    if w.shape != (len(levels),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"level_weights must be {len(levels)} non-negative weights; got {list(level_weights)}")
    picks = rng.choice(len(levels), size=count, p=w / w.sum())
    out: list[tuple[str, str]] = []
    for k in picks:
        out += sample_problems(levels[int(k)], 1, rng)
    return out


def _to_set(rows: list[tuple[str, str, str]]) -> PromptSet:
    ids = np.array([problem_id(p) for p, _, _ in rows], dtype=np.int64)
    return PromptSet(
        ids=ids, prompts=[p for p, _, _ in rows], answers=[a for _, a, _ in rows], levels=[lv for _, _, lv in rows]
    )


__all__ = ["LEVELS", "ArithmeticConfig", "build_splits", "problem_id", "sample_problems", "sft_pairs"]
