"""Settings of the verl adapter, read from the ``knapsack`` section of verl's Hydra config.

On the command line every field is a new key, so it takes Hydra's ``+`` prefix::

    +knapsack.max_n=128 +knapsack.estimator=recipe

``n`` and ``train_batch_size`` are not settings of their own: they are read from verl's
``actor_rollout_ref.rollout.n`` and ``data.train_batch_size`` so that the budget per step is always
``train_batch_size * n``, the number of trajectories verl's mini-batch arithmetic expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from knapsack_rl.core.allocate import allocate_options
from knapsack_rl.core.tracker import TrackerConfig, estimator_names
from knapsack_rl.core.validate import check_choice, check_int, check_real


@dataclass(frozen=True)
class KnapsackVerlConfig:
    """Settings of :class:`~knapsack_rl.integrations.verl.planner.RolloutPlanner`."""

    n: int = 8
    """Uniform rollouts per prompt (verl's ``actor_rollout_ref.rollout.n``); budget per step = prompts x n."""
    train_batch_size: int = 256
    """Prompts per step (verl's ``data.train_batch_size``); used to check the budget."""
    enable: bool = True
    """Allocate with the knapsack; False keeps n per prompt but still tracks and logs (a uniform baseline)."""
    min_n: int = 2
    """Lower bound on rollouts per effective prompt (recipe: 2)."""
    max_n: int = 128
    """Upper bound on rollouts per prompt (recipe: 128)."""
    negative_n: int = 2
    """Rollouts of a prompt estimated at p == 0 (recipe: 2)."""
    positive_n: int = 2
    """Rollouts of a prompt estimated at p == 1 (recipe: 2)."""
    fallback: bool = True
    """The recipe's fallback: budget beyond what effective prompts need goes to the p == 0 pool."""
    alpha: float = 0.9
    """Target probability of a non-zero gradient used by the fallback."""
    objective: str = "paper"
    """Knapsack objective: ``paper`` (V(N, p) as written) or ``recipe`` (bit-compatible with the recipe)."""
    overflow: str = "pool"
    """Budget the knapsack cannot place: ``pool`` (p == 0 prompts) or ``recipe`` (spread over effective)."""
    estimator: str = "recipe"
    """Tracker estimator of p: ``recipe``, ``ema`` or ``beta``."""
    window: int = 16
    """Recent rewards per prompt kept by the tracker."""
    min_count: int = 8
    """Rewards a prompt needs before its estimate is used."""
    success_threshold: float | None = None
    """If set, a rollout counts as a success when its reward >= this (for shaped or penalised rewards)."""
    id_key: str = "index"
    """Key of the prompt id inside each row's ``extra_info`` (verl's parquet layout: ``extra_info.index``)."""
    check_prompt_identity: bool = True
    """Remember a fingerprint of each id's prompt and fail if one id is later seen with another prompt."""
    resume_without_state: bool = False
    """On resume from a checkpoint without tracker state: False raises, True starts an empty tracker."""

    def __post_init__(self) -> None:
        check_int("n", self.n, low=1)
        check_int("train_batch_size", self.train_batch_size, low=1)
        check_int("min_n", self.min_n, low=1)
        check_int("max_n", self.max_n, low=self.min_n)
        check_int("negative_n", self.negative_n, low=0, high=self.max_n)
        check_int("positive_n", self.positive_n, low=0, high=self.max_n)
        check_real("alpha", self.alpha, low=0.0, high=1.0, open_low=True, open_high=True)
        check_choice("objective", self.objective, ("paper", "recipe"))
        check_choice("overflow", self.overflow, ("pool", "recipe"))
        check_choice("estimator", self.estimator, estimator_names())
        if self.success_threshold is not None:
            check_real("success_threshold", self.success_threshold)
        if not self.id_key:
            raise ValueError(f"id_key must be a non-empty string; got {self.id_key!r}")

    @classmethod
    def from_verl(cls, config: Any) -> KnapsackVerlConfig:
        """Build from verl's full config: the ``knapsack`` section plus ``rollout.n`` and ``train_batch_size``.

        Unknown keys in the ``knapsack`` section raise (a typo must not silently fall back to a default).
        """
        section = _to_dict(_get(config, "knapsack", {}) or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in the knapsack config section: {unknown}; valid keys: {sorted(known)}")
        for key in ("n", "train_batch_size"):
            if key in section:
                raise ValueError(f"knapsack.{key} is read from verl's config; remove it from the knapsack section")
        n = int(_get(_get(_get(config, "actor_rollout_ref"), "rollout"), "n"))
        train_batch_size = int(_get(_get(config, "data"), "train_batch_size"))
        return cls(n=n, train_batch_size=train_batch_size, **section)

    def tracker_config(self) -> TrackerConfig:
        """The :class:`TrackerConfig` these settings imply."""
        return TrackerConfig(
            estimator=self.estimator,
            window=self.window,
            min_count=self.min_count,
            success_threshold=self.success_threshold,
        )

    def allocate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`knapsack_rl.allocate` (without ``p_hat``)."""
        return allocate_options(self, n=self.n)


def _get(node: Any, key: str, default: Any = None) -> Any:
    """``node[key]`` for dicts and OmegaConf nodes alike; ``default`` when absent."""
    if node is None:
        return default
    if isinstance(node, Mapping):
        return node.get(key, default)
    getter = getattr(node, "get", None)
    return getter(key, default) if callable(getter) else getattr(node, key, default)


def _to_dict(node: Any) -> dict[str, Any]:
    """A plain dict of an OmegaConf node or mapping (OmegaConf is only imported if the node is one)."""
    if isinstance(node, Mapping) and type(node).__module__.split(".")[0] != "omegaconf":
        return dict(node)
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(node, resolve=True)
    if not isinstance(out, dict):
        raise ValueError(f"the knapsack config section must be a mapping; got {type(out).__name__}")
    return {str(k): v for k, v in out.items()}
