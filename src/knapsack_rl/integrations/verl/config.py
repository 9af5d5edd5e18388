"""Settings of the verl adapter: the ``knapsack:`` section of verl's Hydra config, and the shipped YAML.

The section names the run's rule and embeds :class:`~knapsack_rl.KnapsackConfig`; nothing of it is
redeclared here::

    knapsack:
      rule: knapsack             # a registered rule that verl can run (``knapsack-rl rules``); default "knapsack"
      preset: project            # the knapsack settings: a KnapsackConfig preset ("project", "recipe", "signal")
      negative_n: 2              # any KnapsackConfig field by its flat name (core.config.flat_fields)
      id_key: index              # adapter-only settings (VerlAdapterConfig)

The settings go through :func:`knapsack_rl.core.config.knapsack_from_mapping`, the one route of every
engine. ``n`` is verl's ``actor_rollout_ref.rollout.n`` and the prompts per step are
``data.train_batch_size``: neither is a key of the section (writing one raises). ``rule: uniform`` is the
uniform baseline, which still tracks and logs the same metrics. Unknown keys raise, naming them.

The rule is built when the section is read and checked against what verl can run
(:func:`knapsack_rl.rules.check_runs_on` with the ``verl`` engine's capabilities): a rule that needs rounds
within a step, prompts beyond the batch, counts of 0 or 1, or dropped rollouts is refused in one line,
with the reason, the engines that can run it and, for a knapsack rule, the settings to change.

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

from knapsack_rl.core.config import SECTIONS, KnapsackConfig, check_known, flat_fields, knapsack_from_mapping
from knapsack_rl.core.validate import check_bool, check_int
from knapsack_rl.rules import KnapsackRule, Rule, RuleSetup, check_runs_on, make_rule

ENGINE = "verl"
"""The engine's name in :data:`knapsack_rl.rules.ENGINES`."""
YAML_NAME = "knapsack_grpo"
"""Hydra config name of the shipped YAML (``--config-name=knapsack_grpo``)."""
PRESET_KEY = "preset"
RULE_KEY = "rule"
DEFAULT_RULE = "knapsack"
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
    """On resume from a checkpoint without knapsack state: False raises, True starts the rule from scratch."""

    def __post_init__(self) -> None:
        if not isinstance(self.id_key, str) or not self.id_key:
            raise ValueError(f"id_key must be a non-empty string; got {self.id_key!r}")
        check_bool("check_prompt_identity", self.check_prompt_identity)
        check_bool("resume_without_state", self.resume_without_state)


ADAPTER_KEYS = tuple(f.name for f in fields(VerlAdapterConfig))


@dataclass(frozen=True)
class KnapsackVerlConfig:
    """Everything the verl hooks of one run need: the rule, the method's settings, the adapter's, verl's batch.

    Attributes:
        knapsack: the run's knapsack settings; ``knapsack.allocation.n`` is verl's ``rollout.n``.
        adapter: the adapter-only settings.
        train_batch_size: verl's ``data.train_batch_size`` (prompts per step, M).
        rule: the registered rule the run uses (``knapsack``: the run's own settings; ``uniform``, ...).
        seed: the seed the rule is told (verl's ``data.seed``; 0 where verl's is null).

    Raises:
        ValueError: on construction, a rule verl cannot run (one line: the reason, the engines that can, and
            the settings to change).
    """

    knapsack: KnapsackConfig
    adapter: VerlAdapterConfig
    train_batch_size: int
    rule: str = DEFAULT_RULE
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.knapsack, KnapsackConfig):
            raise ValueError(f"knapsack must be a KnapsackConfig; got {type(self.knapsack).__name__}")
        if not isinstance(self.adapter, VerlAdapterConfig):
            raise ValueError(f"adapter must be a VerlAdapterConfig; got {type(self.adapter).__name__}")
        check_int("train_batch_size", self.train_batch_size, low=1)
        check_int("seed", self.seed, low=0)
        if not isinstance(self.rule, str):
            raise ValueError(f"knapsack.rule must be a rule's name (a str); got {self.rule!r}")
        self.make_rule()  # built and checked once when the config is read

    @property
    def n(self) -> int:
        """Uniform rollouts per prompt (verl's ``actor_rollout_ref.rollout.n``)."""
        return self.knapsack.allocation.n

    def make_rule(self) -> Rule:
        """A fresh instance of the run's rule, checked against what verl can run (:func:`check_verl_rule`).

        The rule is told verl's ``rollout.n``, ``train_batch_size``, the seed and the run's knapsack settings.
        The adapter maps verl's rewards to successes once (``reward_format``, ``success_threshold``); a rule
        takes successes as they are (a knapsack rule's Planner does not map them again).
        """
        setup = RuleSetup(self.n, self.train_batch_size, self.seed, knapsack=self.knapsack)
        try:
            rule = make_rule(self.rule, setup)
        except ValueError as exc:
            raise ValueError(f"knapsack.{exc}") from None
        check_verl_rule(rule)
        return rule

    @classmethod
    def from_section(
        cls, section: Mapping[str, Any], *, n: int, train_batch_size: int, seed: int = 0
    ) -> KnapsackVerlConfig:
        """Build from a plain ``knapsack:`` section plus verl's ``rollout.n``, ``train_batch_size`` and seed."""
        if not isinstance(section, Mapping):
            raise ValueError(f"the knapsack config section must be a mapping; got {type(section).__name__}")
        values = dict(section)
        for key, where in VERL_OWNED.items():
            if key in values:
                raise ValueError(f"knapsack.{key} is verl's {where}; remove it from the knapsack section")
        own = (PRESET_KEY, RULE_KEY, *ADAPTER_KEYS, *SECTIONS)
        valid = set(flat_fields(KnapsackConfig)) - set(VERL_OWNED) | set(own)
        check_known(values, valid, where="the knapsack config section")
        rule = values.pop(RULE_KEY, DEFAULT_RULE)
        adapter = VerlAdapterConfig(**{k: values.pop(k) for k in ADAPTER_KEYS if k in values})
        knapsack = knapsack_from_mapping(values, where="knapsack", n=n)
        return cls(knapsack=knapsack, adapter=adapter, train_batch_size=train_batch_size, rule=rule, seed=seed)

    @classmethod
    def from_verl(cls, config: Any) -> KnapsackVerlConfig:
        """Build from verl's full config (a DictConfig or a nested dict); see :func:`check_verl_compat`."""
        check_verl_compat(config)
        section = _to_dict(_get(config, "knapsack", None) or {})
        n = _get(_get(_get(config, "actor_rollout_ref"), "rollout"), "n")
        data = _get(config, "data")
        seed = _get(data, "seed", None)
        return cls.from_section(
            section, n=n, train_batch_size=_get(data, "train_batch_size"), seed=0 if seed is None else seed
        )


def check_verl_rule(rule: Rule) -> None:
    """Refuse a rule verl cannot run, in one line: :func:`~knapsack_rl.rules.check_runs_on` (what the rule
    needs against the ``verl`` engine's capabilities) plus, for a knapsack rule, which settings cause it
    and their fix (e.g. ``negative_n=1`` gives single rollouts: ``knapsack.negative_n=2``)."""
    try:
        check_runs_on(rule, ENGINE)
    except ValueError as exc:
        fix = _knapsack_fix(rule) if isinstance(rule, KnapsackRule) else ""
        raise ValueError(f"{exc}{fix}") from None


def _knapsack_fix(rule: KnapsackRule) -> str:
    """The settings of a knapsack rule behind what verl refuses, and how to change them ("" if none)."""
    cfg, alloc = rule.config, rule.config.allocation
    names = ("min_n", "negative_n", "positive_n") if cfg.allocate else ()
    fixes = []
    if alloc.n == 1:
        fixes.append("n=1 (set actor_rollout_ref.rollout.n >= 2)")
    for value, what in ((1, "a single rollout"), (0, "no rollout")):
        given = [f"{k}={value}" for k in names if getattr(alloc, k) == value]
        if given:
            fixes.append(f"{', '.join(given)} give {what} (set them >= 2: e.g. knapsack.negative_n=2 "
                         f"knapsack.positive_n=2, as the shipped YAML does)")  # fmt: skip
    if cfg.allocate and cfg.probe_n > 0:
        fixes.append(f"probe_n={cfg.probe_n} plans in two rounds (set knapsack.probe_n=0)")
    if not fixes:
        return ""
    where = "" if rule.name in ("knapsack", "uniform") else (
        f"; rule {rule.name!r} fixes its settings: use knapsack.rule=knapsack with the settings changed"
    )  # fmt: skip
    return f" (settings: {'; '.join(fixes)}{where})"


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
