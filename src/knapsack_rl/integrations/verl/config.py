"""Settings of the verl adapter: the ``knapsack:`` section of verl's Hydra config, and the shipped YAML.

The section embeds :class:`~knapsack_rl.KnapsackConfig`; nothing of it is redeclared here::

    knapsack:
      preset: project            # a KnapsackConfig preset ("project", "recipe", "uniform"); default "project"
      negative_n: 2              # any KnapsackConfig field by its flat name (core.config.flat_fields)
      id_key: index              # adapter-only settings (VerlAdapterConfig)

``n`` is verl's ``actor_rollout_ref.rollout.n`` and the prompts per step are ``data.train_batch_size``:
neither is a key of the section (writing one raises). ``rule: uniform`` (or ``preset: uniform``) is the
uniform baseline, which still tracks and logs the same metrics. Unknown keys raise, naming them.

The YAML the examples launch with ships inside the package (:func:`yaml_path`)::

    python -m knapsack_rl.integrations.verl.config --print    # the YAML
    python -m knapsack_rl.integrations.verl.config --path     # its file (its folder is Hydra's --config-path)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from knapsack_rl.core.config import KnapsackConfig, flat_fields, preset_names
from knapsack_rl.core.validate import check_bool, check_choice, check_int

YAML_NAME = "knapsack_grpo"
"""Hydra config name of the shipped YAML (``--config-name=knapsack_grpo``)."""
PRESET_KEY = "preset"
DEFAULT_PRESET = "project"
VERL_OWNED = {"n": "actor_rollout_ref.rollout.n"}
"""Flat KnapsackConfig fields whose value is verl's (key: where verl keeps it)."""


@dataclass(frozen=True)
class VerlAdapterConfig:
    """Settings that exist only because of verl's data layout and checkpoints (not the method's)."""

    id_key: str = "index"
    """Key of the prompt id inside each row's ``extra_info`` (verl's parquet layout: ``extra_info.index``)."""
    check_prompt_identity: bool = True
    """Remember a fingerprint of each id's prompt and fail if one id is later seen with another prompt."""
    resume_without_state: bool = False
    """On resume from a checkpoint without knapsack state: False raises, True starts an empty tracker."""

    def __post_init__(self) -> None:
        if not isinstance(self.id_key, str) or not self.id_key:
            raise ValueError(f"id_key must be a non-empty string; got {self.id_key!r}")
        check_bool("check_prompt_identity", self.check_prompt_identity)
        check_bool("resume_without_state", self.resume_without_state)


ADAPTER_KEYS = tuple(f.name for f in fields(VerlAdapterConfig))


@dataclass(frozen=True)
class KnapsackVerlConfig:
    """Everything the verl hooks of one run need: the method, the adapter settings, verl's batch size.

    Attributes:
        knapsack: the method's settings; ``knapsack.allocation.n`` is verl's ``rollout.n``.
        adapter: the adapter-only settings.
        train_batch_size: verl's ``data.train_batch_size`` (prompts per step; informs the logs only).
    """

    knapsack: KnapsackConfig
    adapter: VerlAdapterConfig
    train_batch_size: int

    def __post_init__(self) -> None:
        if not isinstance(self.knapsack, KnapsackConfig):
            raise ValueError(f"knapsack must be a KnapsackConfig; got {type(self.knapsack).__name__}")
        if not isinstance(self.adapter, VerlAdapterConfig):
            raise ValueError(f"adapter must be a VerlAdapterConfig; got {type(self.adapter).__name__}")
        check_int("train_batch_size", self.train_batch_size, low=1)
        check_verl_groups(self.knapsack)

    @property
    def n(self) -> int:
        """Uniform rollouts per prompt (verl's ``actor_rollout_ref.rollout.n``)."""
        return self.knapsack.allocation.n

    @classmethod
    def from_section(cls, section: Mapping[str, Any], *, n: int, train_batch_size: int) -> KnapsackVerlConfig:
        """Build from a plain ``knapsack:`` section plus verl's ``rollout.n`` and ``train_batch_size``."""
        if not isinstance(section, Mapping):
            raise ValueError(f"the knapsack config section must be a mapping; got {type(section).__name__}")
        values = dict(section)
        method_keys = sorted(set(flat_fields(KnapsackConfig)) - set(VERL_OWNED))
        valid = sorted([PRESET_KEY, *ADAPTER_KEYS, *method_keys])
        unknown = sorted(k for k in values if k not in valid and k not in VERL_OWNED)
        if unknown:
            raise ValueError(f"unknown key(s) in the knapsack config section: {unknown}; valid keys: {valid}")
        for key, where in VERL_OWNED.items():
            if key in values:
                raise ValueError(f"knapsack.{key} is verl's {where}; remove it from the knapsack section")
        preset = check_choice("knapsack.preset", values.pop(PRESET_KEY, DEFAULT_PRESET), preset_names())
        adapter = VerlAdapterConfig(**{k: values.pop(k) for k in ADAPTER_KEYS if k in values})
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        knapsack = KnapsackConfig.preset(preset, n=n, **changes)
        return cls(knapsack=knapsack, adapter=adapter, train_batch_size=train_batch_size)

    @classmethod
    def from_verl(cls, config: Any) -> KnapsackVerlConfig:
        """Build from verl's full config (a DictConfig or a nested dict); see :func:`check_verl_compat`."""
        check_verl_compat(config)
        section = _to_dict(_get(config, "knapsack", None) or {})
        n = _get(_get(_get(config, "actor_rollout_ref"), "rollout"), "n")
        train_batch_size = _get(_get(config, "data"), "train_batch_size")
        return cls.from_section(section, n=n, train_batch_size=train_batch_size)


def check_verl_groups(cfg: KnapsackConfig) -> None:
    """Refuse settings whose groups verl would treat differently from the method (verl 0.9).

    - A group of exactly one rollout: verl's GRPO gives it mean 0 and std 1, so its advantage is
      ``r / (1 + 1e-6)`` (``core_algos.compute_grpo_outcome_advantage``), where the method gives 0.
      So ``n`` and (for the knapsack rule) ``min_n``, ``negative_n`` and ``positive_n`` must not be 1
      (0 is allowed: no rollout).
    - Two-phase planning (``probe_n > 0``): verl's agent loop numbers a prompt's sessions
      ``range(__rollout_n__)`` in one dispatch, so a second round cannot be added to the same GRPO group
      (see the README's "Within-step rounds").
    """
    alloc = cfg.allocation
    counts = ("n", "min_n", "negative_n", "positive_n") if cfg.allocate else ("n",)
    ones = [f"{k}=1" for k in counts if getattr(alloc, k) == 1]
    if ones:
        raise ValueError(
            f"the verl adapter refuses groups of one rollout ({', '.join(ones)}): verl's GRPO gives a lone "
            f"rollout the advantage r / (1 + 1e-6), not 0; use 0 or >= 2 (e.g. knapsack.negative_n=2 "
            f"knapsack.positive_n=2 with the 'project' preset)"
        )
    if cfg.probe_n > 0:
        raise ValueError(
            f"probe_n={cfg.probe_n}: two-phase planning is not available on verl 0.9 (a prompt's sessions are "
            f"dispatched once, numbered range(__rollout_n__)); set knapsack.probe_n=0"
        )


def check_verl_compat(config: Any) -> None:
    """Refuse verl settings under which the hooks would silently do something else (verl 0.9.x).

    - ``trainer.v1.rollout_level_dispatch=true``: verl 0.9 has no such option (nothing reads it); the
      open proposal that adds it registers every prompt as expecting ``rollout.n`` sessions, so a prompt
      given fewer never becomes sampleable and one given more is sampled before its last sessions.
    - ``algorithm.filter_groups.enable`` / ``trainer.v1.sampler.sync_refill_failed_groups``: verl passes
      neither to a custom sampler (``PPOTrainer._build_replay_buffer``), so both would silently be off.
    """
    trainer = _get(config, "trainer")
    v1 = _get(trainer, "v1")
    if bool(_get(v1, "rollout_level_dispatch", False)):
        raise ValueError(
            "trainer.v1.rollout_level_dispatch=true is not supported: verl 0.9 ignores it, and where it exists "
            "(an open verl proposal) each prompt's readiness counts rollout.n sessions, not its __rollout_n__"
        )
    if bool(_get(_get(_get(config, "algorithm"), "filter_groups"), "enable", False)):
        raise ValueError(
            "algorithm.filter_groups.enable=true has no effect with the knapsack sampler: verl 0.9 does not pass "
            "the group filter to a custom sampler (trainer.v1.sampler.custom_sampler); disable one of them"
        )
    if bool(_get(_get(v1, "sampler"), "sync_refill_failed_groups", False)):
        raise ValueError(
            "trainer.v1.sampler.sync_refill_failed_groups=true has no effect with the knapsack sampler: verl 0.9 "
            "does not pass it to a custom sampler; set it to false"
        )


# ----------------------------------------------------------------------------- shipped YAML
def yaml_path() -> Path:
    """The Hydra YAML shipped with the package (``hydra/knapsack_grpo.yaml`` beside this module)."""
    return Path(__file__).resolve().parent / "hydra" / f"{YAML_NAME}.yaml"


def yaml_dir() -> Path:
    """The folder to pass as Hydra's ``--config-path`` (with ``--config-name=knapsack_grpo``)."""
    return yaml_path().parent


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m knapsack_rl.integrations.verl.config --print | --path | --dir``."""
    parser = argparse.ArgumentParser(
        prog="python -m knapsack_rl.integrations.verl.config",
        description="The verl Hydra config shipped with knapsack-rl (verl's ppo_trainer + the knapsack hooks).",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--print", action="store_true", help="print the YAML")
    group.add_argument("--path", action="store_true", help="print the YAML file's path")
    group.add_argument("--dir", action="store_true", help="print its folder (verl's --config-path)")
    args = parser.parse_args(argv)
    sys.stdout.write(yaml_path().read_text() if args.print else f"{yaml_path() if args.path else yaml_dir()}\n")
    return 0


# ----------------------------------------------------------------------------- verl config access
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


if __name__ == "__main__":
    sys.exit(main())
