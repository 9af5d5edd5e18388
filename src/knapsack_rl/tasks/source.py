"""The trainer's one entry to tasks: ``load_task(TaskConfig) -> Task``.

A task source (:data:`SOURCES`, a :class:`knapsack_rl.core.registry.Registry`) turns a :class:`TaskConfig`
into three prompt sets: ``train`` (RL prompts), ``eval`` (held-out prompts) and ``warmstart``
(supervised warm-start problems for the embedded tiny model). The built-in sources:

* ``arithmetic``: the embedded suite (:mod:`knapsack_rl.tasks.arithmetic`); reward ``exact``.
* ``reasoning_gym``: a reasoning-gym mix (:mod:`knapsack_rl.tasks.gym`); reward ``reasoning_gym``
  (the data set's own ``score_answer``), or ``reasoning_gym_binary`` with ``reasoning_gym.binary``.
* ``file``: verl-layout ``.jsonl`` / ``.parquet`` files ``data``, ``eval_data`` and ``warmstart_data``;
  reward ``reward``. Their ids must not overlap (checked: the three sets must be disjoint). With a
  reasoning-gym reward, each row's reference is completed with the entry it names, regenerated from
  ``reasoning_gym`` (the mix the files were written from), never read from the file.

The :class:`Task` also carries the characters a character tokenizer needs and a contained scorer
(:class:`knapsack_rl.tasks.scoring.Scorer`) for :meth:`Task.score`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.tasks.arithmetic import ArithmeticConfig, build_split
from knapsack_rl.tasks.base import PromptSet, get_reward
from knapsack_rl.tasks.gym import GymConfig, build_gym_split, resolve_references
from knapsack_rl.tasks.scoring import Scorer, ScoringConfig
from knapsack_rl.tasks.verl_data import ChatFormatter, load_verl_dataset, write_verl

ARITHMETIC_CHARS = "0123456789+-*=() "
"""Alphabet of the arithmetic suite (the tiny model's historical tokenizer)."""


@dataclass(frozen=True)
class TaskConfig:
    """Where the prompts come from and how responses are scored."""

    source: str = "arithmetic"
    """Task source: ``arithmetic``, ``reasoning_gym`` or ``file`` (see :data:`SOURCES`)."""
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    """The embedded arithmetic suite (``source="arithmetic"``)."""
    reasoning_gym: GymConfig = field(default_factory=GymConfig)
    """The reasoning-gym mix (``source="reasoning_gym"``, or ``source="file"`` with a reasoning-gym reward:
    the mix the files were written from, whose entries their references name; needs the ``gym`` extra)."""
    data: str | None = None
    """Training prompts, a verl-layout .jsonl / .parquet file (``source="file"``)."""
    eval_data: str | None = None
    """Held-out prompts in the same layout (``source="file"``; None: no evaluation)."""
    warmstart_data: str | None = None
    """Supervised warm-start problems in the same layout (``source="file"``; needed by the tiny model)."""
    reward: str = "exact"
    """Registered reward for ``source="file"`` (the other sources fix their own)."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """How the reward is run: worker processes, timeout, failure policy."""

    def __post_init__(self) -> None:
        if isinstance(self.arithmetic, dict):
            object.__setattr__(self, "arithmetic", ArithmeticConfig(**_tuples(self.arithmetic)))
        if isinstance(self.reasoning_gym, dict):
            object.__setattr__(self, "reasoning_gym", GymConfig(**_tuples(self.reasoning_gym)))
        if isinstance(self.scoring, dict):
            object.__setattr__(self, "scoring", ScoringConfig(**self.scoring))
        SOURCES.get(self.source)
        get_reward(self.reward)
        if self.source == "file" and self.data is None:
            raise ValueError("source='file' needs data (a verl-layout .jsonl / .parquet file); got data=None")
        if self.source != "file":
            given = [k for k in ("data", "eval_data", "warmstart_data") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{given} are read only with source='file'; got source={self.source!r}")

    def reward_name(self) -> str:
        """The reward this source scores with."""
        if self.source == "reasoning_gym":
            return "reasoning_gym_binary" if self.reasoning_gym.binary else "reasoning_gym"
        return "exact" if self.source == "arithmetic" else self.reward


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


@dataclass
class Task:
    """Prompt sets of a run, the tokenizer's characters, and the contained scorer.

    Attributes:
        train: RL training prompts.
        eval: held-out prompts (None: no evaluation).
        warmstart: supervised warm-start problems for the tiny model (None: none available).
        chars: sorted distinct characters of the prompts and answers of all three sets (the arithmetic
            source keeps its fixed alphabet :data:`ARITHMETIC_CHARS`).
        scorer: runs the reward (see :mod:`knapsack_rl.tasks.scoring`).
    """

    train: PromptSet
    eval: PromptSet | None
    warmstart: PromptSet | None
    chars: str
    scorer: Scorer

    def score(
        self, prompts: PromptSet, prompt_index: NDArray[np.int64], responses: Sequence[str]
    ) -> NDArray[np.float64]:
        """(R,) rewards in [0, 1]: response j answers ``prompts[prompt_index[j]]``."""
        idx = np.asarray(prompt_index, dtype=np.int64)
        if idx.shape != (len(responses),) or (idx.size and (idx.min() < 0 or idx.max() >= len(prompts))):
            raise ValueError(
                f"prompt_index must hold one position in [0, {len(prompts)}) per response ({len(responses)}); "
                f"got shape {idx.shape}"
            )
        answers = [prompts.answers[i] for i in idx]
        extras = None if prompts.extras is None else [prompts.extras[i] for i in idx]
        return self.scorer(responses, answers, prompts.ids[idx], extras)

    def reward_counts(self) -> dict[str, int]:
        """Cumulative ``reward/failures``, ``reward/timeouts`` and ``reward/killed`` (see :meth:`Scorer.counts`)."""
        return self.scorer.counts()

    def close(self) -> None:
        """Stop the scorer's worker processes."""
        self.scorer.close()


Splits = tuple[PromptSet, PromptSet | None, PromptSet | None]
SOURCES: Registry[Callable[[TaskConfig, ChatFormatter | None], Splits]] = Registry("source", "task source")
"""Task sources: ``source(config, chat_format) -> (train, eval, warmstart)``."""


@SOURCES.register("arithmetic")
def _arithmetic(config: TaskConfig, chat_format: ChatFormatter | None) -> Splits:
    cfg = config.arithmetic
    return build_split(cfg, "train"), build_split(cfg, "eval"), build_split(cfg, "warmstart")


@SOURCES.register("reasoning_gym")
def _reasoning_gym(config: TaskConfig, chat_format: ChatFormatter | None) -> Splits:
    cfg = config.reasoning_gym
    held = build_gym_split(cfg, "eval") if cfg.eval_size else None
    warm = build_gym_split(cfg, "warmstart") if cfg.warmstart_size else None
    return build_gym_split(cfg, "train"), held, warm


_GYM_REWARDS = ("reasoning_gym", "reasoning_gym_binary")


@SOURCES.register("file")
def _file(config: TaskConfig, chat_format: ChatFormatter | None) -> Splits:
    assert config.data is not None  # checked by TaskConfig
    names = {"data": config.data, "eval_data": config.eval_data, "warmstart_data": config.warmstart_data}
    sets: dict[str, PromptSet | None] = {}
    for key, path in names.items():
        loaded = load_verl_dataset(path, chat_format=chat_format) if path else None
        if loaded is not None and config.reward in _GYM_REWARDS:
            loaded = resolve_references(loaded, config.reasoning_gym, str(path))
        sets[key] = loaded
    present = [(k, v) for k, v in sets.items() if v is not None]
    for i, (name_a, a) in enumerate(present):
        for name_b, b in present[i + 1 :]:
            shared = np.intersect1d(a.ids, b.ids)
            if shared.size:
                raise ValueError(
                    f"{name_a} and {name_b} must be disjoint; {shared.size} extra_info.index values appear in both "
                    f"(first: {int(shared[0])})"
                )
    train = sets["data"]
    assert train is not None
    return train, sets["eval_data"], sets["warmstart_data"]


def load_task(config: TaskConfig, *, chat_format: ChatFormatter | None = None) -> Task:
    """The task of ``config``: its three prompt sets, the characters over them, and its scorer.

    Args:
        chat_format: turns chat-list prompts of files into text (e.g. a tokenizer's chat template).
    """
    train, held, warm = SOURCES.get(config.source)(config, chat_format)
    if config.source == "arithmetic":
        chars = ARITHMETIC_CHARS
    else:
        used: set[str] = set()
        for s in (train, held, warm):
            if s is not None:
                used |= s.chars()
        chars = "".join(sorted(used))
    return Task(
        train=train, eval=held, warmstart=warm, chars=chars, scorer=Scorer(config.reward_name(), config.scoring)
    )


def write_task(
    task: Task, out_dir: str | Path, *, suffix: str = ".parquet", data_source: str = "knapsack_rl"
) -> dict[str, Path]:
    """Write the task's sets as verl-layout files ``train``, ``eval``, ``warmstart`` + ``suffix`` in ``out_dir``.

    Returns the paths written by set name; a ``TaskConfig(source="file", data=..., eval_data=...,
    warmstart_data=..., reward=...)`` over them loads the same prompt sets (with the same reward).
    """
    out = Path(out_dir)
    sets = {"train": task.train, "eval": task.eval, "warmstart": task.warmstart}
    return {
        name: write_verl(s, out / f"{name}{suffix}", data_source=data_source)
        for name, s in sets.items()
        if s is not None
    }


__all__ = ["ARITHMETIC_CHARS", "SOURCES", "Task", "TaskConfig", "load_task", "write_task"]
