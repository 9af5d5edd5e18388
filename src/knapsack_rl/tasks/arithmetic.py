"""Multi-digit arithmetic with graded difficulty: the embedded task suite of the demo.

A problem is a prompt such as ``"47+85="`` with the answer ``"132"``. A level is data
(:class:`LevelSpec`): an operation, the range of each operand and the range of the number of carries
(``+``), borrows (``-``) or partial-product carries (``*``). The built-in levels, easiest first:

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
L8     2-digit x 1-digit (2..9)                      ``47*6=`` -> 282
=====  ============================================  ================

More levels are declared in :attr:`ArithmeticConfig.custom_levels`.

Ids and splits:

* Every problem has a stable integer id: the first 8 bytes of ``blake2b(prompt)`` masked to 63 bits.
* Every problem belongs to exactly one split (train, held-out, warm start), decided by a second hash of
  its prompt against ``split_weights``: ``u = blake2b("split:" + prompt) / 2**64`` falls in
  ``[0, w_train)``, ``[w_train, w_train + w_eval)`` or the rest. The splits are therefore disjoint by
  construction, whatever the seed, and a held-out problem is held out in every run.
* Each (split, level) is drawn with its own generator, ``np.random.default_rng([seed, split, level])``,
  by rejection from that split's part of the level. So changing one split's size, or adding a level,
  never changes another split or level; growing a size only appends problems (prefix-stable).
* A level whose part of a split has fewer distinct problems than asked raises a ``ValueError`` naming the
  level, the split, the number of distinct problems it has there and the count asked (L1 has 100
  problems in all, about ``100 * weight`` per split): nothing is silently drawn short.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from knapsack_rl.core.validate import check_choice, check_int, check_real
from knapsack_rl.tasks.base import PromptSet

Split = Literal["train", "eval", "warmstart"]
SPLITS: tuple[Split, ...] = ("train", "eval", "warmstart")
_ENUMERATE_LIMIT = 2_000_000
"""Largest operand space (pairs) counted exactly in an exhaustion error."""


@dataclass(frozen=True)
class LevelSpec:
    """One difficulty level: ``a op b =`` with operands in ranges and a carry / borrow count in a range."""

    name: str
    """Label of the level (unique within a config)."""
    op: str
    """``+``, ``-`` (only ``a >= b``: non-negative results) or ``*``."""
    a: tuple[int, int]
    """Inclusive range of the first operand, e.g. (10, 99) for two digits."""
    b: tuple[int, int]
    """Inclusive range of the second operand."""
    carries: tuple[int, int] = (0, 99)
    """Inclusive range of the carries of the column addition (``+``), borrows of the column subtraction
    (``-``), or carries summed over the partial products ``a * digit`` of each digit of b (``*``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string; got name={self.name!r}")
        check_choice("op", self.op, ["+", "-", "*"])
        for key in ("a", "b", "carries"):
            pair = tuple(getattr(self, key))
            if len(pair) != 2:
                raise ValueError(f"level {self.name}: {key} must be (low, high); got {key}={getattr(self, key)!r}")
            low = check_int(f"level {self.name}: {key}[0]", pair[0], low=0)
            check_int(f"level {self.name}: {key}[1]", pair[1], low=low)
            object.__setattr__(self, key, (int(pair[0]), int(pair[1])))

    def sample(self, rng: np.random.Generator) -> tuple[str, str] | None:
        """One random (prompt, answer) of this level, or None when the draw misses the carry range / a >= b."""
        a = int(rng.integers(self.a[0], self.a[1] + 1))
        b = int(rng.integers(self.b[0], self.b[1] + 1))
        return self.problem(a, b)

    def problem(self, a: int, b: int) -> tuple[str, str] | None:
        """(prompt, answer) of ``a op b`` when it belongs to this level, else None."""
        if self.op == "-" and a < b:
            return None
        if not self.carries[0] <= count_carries(self.op, a, b) <= self.carries[1]:
            return None
        value = a + b if self.op == "+" else a - b if self.op == "-" else a * b
        return f"{a}{self.op}{b}=", str(value)


def count_carries(op: str, a: int, b: int) -> int:
    """Carries of the column addition a + b, borrows of the column subtraction a - b (a >= b), or the
    carries of the partial products a * d summed over the digits d of b."""
    if op == "*":
        total = 0
        while True:
            total += _mul_carries(a, b % 10)
            b //= 10
            if not b:
                return total
    carry, count = 0, 0
    while a or b:
        column = a % 10 + b % 10 + carry if op == "+" else a % 10 - b % 10 - carry
        carry = int(column >= 10) if op == "+" else int(column < 0)
        count += carry
        a, b = a // 10, b // 10
    return count


def _mul_carries(a: int, d: int) -> int:
    """Non-zero carries of the single-digit multiplication a * d, column by column."""
    carry, count = 0, 0
    while a:
        carry = (a % 10 * d + carry) // 10
        count += int(carry > 0)
        a //= 10
    return count


BUILTIN_LEVELS: dict[str, LevelSpec] = {
    spec.name: spec
    for spec in (
        LevelSpec("L1", "+", (0, 9), (0, 9), (0, 1)),
        LevelSpec("L2", "+", (10, 99), (0, 9), (0, 0)),
        LevelSpec("L3", "+", (10, 99), (0, 9), (1, 9)),
        LevelSpec("L4", "+", (10, 99), (10, 99), (0, 0)),
        LevelSpec("L5", "+", (10, 99), (10, 99), (1, 9)),
        LevelSpec("L6", "-", (10, 99), (10, 99), (1, 9)),
        LevelSpec("L7", "+", (100, 999), (100, 999), (2, 9)),
        LevelSpec("L8", "*", (10, 99), (2, 9), (0, 99)),
    )
}
LEVELS: tuple[str, ...] = tuple(BUILTIN_LEVELS)
"""Built-in difficulty labels, easiest first."""


def problem_id(prompt: str) -> int:
    """Stable non-negative int64 id of a prompt text: ``blake2b(prompt)[:8] & (2**63 - 1)``."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def split_of(prompt: str, weights: Sequence[float]) -> Split:
    """The split a prompt belongs to: ``u = blake2b("split:" + prompt) / 2**64`` against the cumulative weights."""
    digest = hashlib.blake2b(b"split:" + prompt.encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    total = float(sum(weights))
    if u < weights[0] / total:
        return "train"
    return "eval" if u < (weights[0] + weights[1]) / total else "warmstart"


@dataclass(frozen=True)
class ArithmeticConfig:
    """Settings of the arithmetic task suite: levels, sizes of the three splits, and the split partition."""

    seed: int = 1234
    """Seed of the problem draws (the splits' partition does not depend on it)."""
    levels: tuple[str, ...] = LEVELS
    """Levels used, by name: built-ins L1..L8 or names declared in ``custom_levels``."""
    train_per_level: tuple[int, ...] = (32, 64, 64, 64, 64, 64, 64, 64)
    """RL training prompts per level, in the order of ``levels``."""
    eval_per_level: int = 16
    """Held-out prompts per level."""
    warmstart_per_level: tuple[int, ...] = (24, 120, 100, 500, 1500, 400, 2000, 200)
    """Distinct supervised warm-start problems per level, in the order of ``levels``."""
    split_weights: tuple[float, float, float] = (0.5, 0.2, 0.3)
    """Shares of every level's problems that belong to the train, held-out and warm-start splits."""
    custom_levels: tuple[LevelSpec, ...] = field(default_factory=tuple)
    """Extra levels (a mapping with LevelSpec's fields is accepted, e.g. from a JSON config)."""

    def __post_init__(self) -> None:
        check_int("seed", self.seed, low=0)
        check_int("eval_per_level", self.eval_per_level, low=0)
        specs = tuple(_as_spec(s) for s in self.custom_levels)
        object.__setattr__(self, "custom_levels", specs)
        clash = sorted({s.name for s in specs} & set(BUILTIN_LEVELS))
        if clash or len({s.name for s in specs}) != len(specs):
            raise ValueError(f"custom_levels names must be unique and not built-in; got {[s.name for s in specs]}")
        known = {**BUILTIN_LEVELS, **{s.name: s for s in specs}}
        for name in self.levels:
            if name not in known:
                raise ValueError(f"levels must be built-in {list(LEVELS)} or declared in custom_levels; got {name!r}")
        for key in ("train_per_level", "warmstart_per_level"):
            counts = getattr(self, key)
            if len(counts) != len(self.levels):
                raise ValueError(f"{key} needs one count per level ({len(self.levels)}); got {counts!r}")
            for count in counts:
                check_int(key, count, low=0)
        if len(self.split_weights) != 3:
            raise ValueError(f"split_weights must be (train, eval, warmstart); got {self.split_weights!r}")
        for w in self.split_weights:
            check_real("split_weights", w, low=0.0)
        if sum(self.split_weights) <= 0:
            raise ValueError(f"split_weights must not all be 0; got {self.split_weights!r}")

    def spec(self, name: str) -> LevelSpec:
        """The level called ``name`` (custom levels first)."""
        for s in self.custom_levels:
            if s.name == name:
                return s
        return BUILTIN_LEVELS[name]

    def count(self, split: Split, index: int) -> int:
        """Prompts asked of the level at position ``index`` in ``split``."""
        if split == "train":
            return int(self.train_per_level[index])
        return self.eval_per_level if split == "eval" else int(self.warmstart_per_level[index])


def _as_spec(item: LevelSpec | Mapping[str, Any]) -> LevelSpec:
    if isinstance(item, LevelSpec):
        return item
    if isinstance(item, Mapping):
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in item.items()}
        return LevelSpec(**values)
    raise ValueError(f"custom_levels entries must be LevelSpec or mappings; got {item!r}")


def sample_problems(
    level: str | LevelSpec,
    count: int,
    rng: np.random.Generator,
    *,
    exclude: set[int] | None = None,
    split: Split | None = None,
    split_weights: Sequence[float] = (0.5, 0.2, 0.3),
) -> list[tuple[str, str]]:
    """``count`` distinct (prompt, answer) pairs of one level, in draw order.

    Args:
        level: a built-in level name or a :class:`LevelSpec`.
        exclude: ids to skip.
        split: keep only problems of this split (see :func:`split_of`); None keeps every problem.

    Raises:
        ValueError: if the level is unknown, or has fewer than ``count`` distinct problems (in ``split``),
            naming the level, the split and the number it has.
    """
    spec = level if isinstance(level, LevelSpec) else _builtin(level)
    check_int("count", count, low=0)
    seen = set(exclude or ())
    out: list[tuple[str, str]] = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > 400 * (count + 25):
            raise ValueError(_exhausted(spec, count, split, split_weights, seen))
        pair = spec.sample(rng)
        if pair is None or (split is not None and split_of(pair[0], split_weights) != split):
            continue
        pid = problem_id(pair[0])
        if pid not in seen:
            seen.add(pid)
            out.append(pair)
    return out


def _builtin(name: str) -> LevelSpec:
    if name not in BUILTIN_LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)} or a LevelSpec; got {name!r}")
    return BUILTIN_LEVELS[name]


def _exhausted(spec: LevelSpec, count: int, split: Split | None, weights: Sequence[float], seen: set[int]) -> str:
    where = "" if split is None else f" in the {split} split (split_weights={tuple(weights)})"
    size = (spec.a[1] - spec.a[0] + 1) * (spec.b[1] - spec.b[0] + 1)
    if size > _ENUMERATE_LIMIT:
        return f"level {spec.name} has fewer than {count} distinct new problems{where}"
    total = 0
    for a in range(spec.a[0], spec.a[1] + 1):
        for b in range(spec.b[0], spec.b[1] + 1):
            pair = spec.problem(a, b)
            total += pair is not None and (split is None or split_of(pair[0], weights) == split)
    return f"level {spec.name} has {total} distinct problems{where}; {count} were asked for"


def build_split(config: ArithmeticConfig, split: Split) -> PromptSet:
    """One split of the suite, every level drawn with its own generator (see the module docstring)."""
    rows: list[tuple[str, str, str]] = []
    for index, name in enumerate(config.levels):
        level_key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little")
        rng = np.random.default_rng([config.seed, SPLITS.index(split), level_key])
        count = config.count(split, index)
        try:
            pairs = sample_problems(config.spec(name), count, rng, split=split, split_weights=config.split_weights)
        except ValueError as exc:
            key = {"train": "train_per_level", "eval": "eval_per_level", "warmstart": "warmstart_per_level"}[split]
            raise ValueError(f"{exc} ({key} asks for {count}: lower it or raise that split's weight)") from None
        rows += [(p, a, name) for p, a in pairs]
    return _to_set(rows)


def build_splits(config: ArithmeticConfig) -> tuple[PromptSet, PromptSet]:
    """(train, held-out) prompt sets of the suite; disjoint, each labelled by level."""
    return build_split(config, "train"), build_split(config, "eval")


def _to_set(rows: list[tuple[str, str, str]]) -> PromptSet:
    ids = np.array([problem_id(p) for p, _, _ in rows], dtype=np.int64)
    return PromptSet(
        ids=ids, prompts=[p for p, _, _ in rows], answers=[a for _, a, _ in rows], levels=[lv for _, _, lv in rows]
    )


__all__ = [
    "BUILTIN_LEVELS",
    "LEVELS",
    "SPLITS",
    "ArithmeticConfig",
    "LevelSpec",
    "build_split",
    "build_splits",
    "count_carries",
    "problem_id",
    "sample_problems",
    "split_of",
]
