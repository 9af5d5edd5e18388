"""``KnapsackGRPOConfig``: TRL's ``GRPOConfig`` plus the run's rule and the method's settings.

**The rule.** ``rule`` (default ``"knapsack"``) names any registered allocation rule
(:func:`knapsack_rl.rules.rule_names`; ``knapsack-rl rules`` prints them with the engines that run each).
It is built when the config is read and checked with :func:`knapsack_rl.rules.check_runs_on` against
the ``trl`` engine: TRL's ``GRPOTrainer`` makes one generation call per batch of the sampler's prompts
and trains on every rollout, so a rule that generates in rounds within a step, draws prompts beyond the
batch or drops rollouts (``knapsack:two-phase``, ``dapo``, ``reinforce-ada``, ``pilot-commit``,
``greso``; ``knapsack`` with ``probe_n > 0``) is refused at once, in one line naming the reason and the
engines that can run it. The rules TRL runs: :func:`trl_rule_names`.

**The knapsack settings** are *generated*, not typed here: at import, from the flat fields of
:class:`knapsack_rl.KnapsackConfig` (:func:`knapsack_rl.core.config.flat_fields`): same names, same
types, help strings taken from the field docstrings of ``KnapsackConfig``, ``AllocationConfig`` and
``TrackerConfig``. TRL's parser (``TrlParser`` / ``HfArgumentParser``) therefore sees them as ordinary
flat arguments (``--max_n 64 --estimator beta``, or ``max_n: 64`` in a YAML file), and a field added to
``KnapsackConfig`` appears here without an edit. They are the run's settings for the rules that plan
through the Planner (``knapsack``, ``uniform``) and for every rule's reading of the rewards
(``reward_format``, ``success_threshold``).

Resolution (once, in ``__post_init__``), through the package's one resolver
(:func:`knapsack_rl.core.config.knapsack_from_mapping`):

- ``knapsack_preset`` (default ``"project"``) names the starting point; every knapsack field left unset
  (``None``) takes the preset's value, every field set overrides it; the resolved values are written back
  into the fields, so ``args.max_n`` and ``args.to_dict()`` show what runs, and re-parsing
  ``args.to_dict()`` reproduces the same settings;
- the allocation's ``n`` is TRL's ``num_generations`` (the mean rollouts per prompt: a generation batch
  of B rows holds ``M = B / num_generations`` prompts and the rule spreads exactly
  ``B = num_generations * M`` rollouts over them). ``n`` is therefore *not* a field of this config:
  one concept, one name (``num_generations``), never declared twice;
- :attr:`KnapsackGRPOConfig.knapsack` returns the validated :class:`KnapsackConfig`; a bad value raises
  ``ValueError`` at construction, naming the setting.

A field whose own type admits ``None`` (``success_threshold``) cannot be reset to ``None`` against a preset
that sets it; no preset sets it today.

**Loss aggregation.** ``loss_agg="group-mean"`` makes every prompt weigh the same in the policy loss
whatever its count (the reference trainer's ``group-mean``, :mod:`knapsack_rl.grpo.loss`); unset, TRL's
``loss_type`` aggregates as TRL does (its default ``"dapo"`` is a token mean over the generation batch,
under which a prompt with 16x the rollouts weighs 16x). How: :mod:`knapsack_rl.integrations.trl.trainer`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

from trl.trainer.grpo_config import GRPOConfig

from knapsack_rl.cli_args import field_docs
from knapsack_rl.core.config import (
    PRESETS,
    AllocationConfig,
    KnapsackConfig,
    flat_fields,
    knapsack_from_mapping,
    preset_names,
)
from knapsack_rl.core.tracker import TrackerConfig
from knapsack_rl.core.validate import check_int, check_real
from knapsack_rl.rules import KnapsackRule, Rule, RuleSetup, check_runs_on, engines_for, make_rule, rule_names

ENGINE = "trl"
"""This engine's name in :data:`knapsack_rl.rules.ENGINES`."""
NOT_GENERATED = {"n": "num_generations"}
"""KnapsackConfig fields that TRL already declares under its own name (ours -> TRL's)."""
LOSS_AGGS = ("group-mean",)
"""Values of ``loss_agg`` besides ``None`` (TRL's own aggregation)."""
GROUP_MEAN_LOSS_TYPES = ("dapo",)
"""TRL loss types whose aggregation ``loss_agg="group-mean"`` reweighs exactly (module docstring)."""
_LEVELS = (KnapsackConfig, AllocationConfig, TrackerConfig)


def trl_rule_names() -> list[str]:
    """The registered rules TRL can run with their default settings (``knapsack-rl rules``' ``trl`` column)."""
    return [name for name in rule_names() if ENGINE in engines_for(make_rule(name))]


def trl_preset_names() -> list[str]:
    """The knapsack presets TRL can run as the rule ``knapsack`` (a preset with a probe needs two rounds)."""
    return [name for name in preset_names() if ENGINE in engines_for(KnapsackRule(PRESETS.get(name)()))]


def _parser_type(tp: Any) -> Any:
    """The type TRL's parser should see for a KnapsackConfig field type, made optional (None = unset)."""
    if get_origin(tp) is tuple:  # beta_prior: tuple[float, float] -> a list on the command line / in YAML
        return list[get_args(tp)[0]] | None  # type: ignore[misc]
    if get_origin(tp) is Literal:
        return tp | None
    return tp if type(None) in get_args(tp) else tp | None


def _preset_defaults(name: str) -> str:
    """``project=128, recipe=128, signal=128``: the value of flat field ``name`` in every preset TRL runs."""
    paths = flat_fields(KnapsackConfig)
    values = []
    for preset in trl_preset_names():
        node: Any = PRESETS.get(preset)()
        for part in paths[name]:
            node = getattr(node, part)
        values.append(f"{preset}={node!r}")
    return ", ".join(values)


def _knapsack_fields() -> list[tuple[str, Any, Any]]:
    """``(name, type, field)`` of every generated field: ``knapsack_preset``, then KnapsackConfig's flat fields."""
    hints: dict[str, Any] = {}
    docs: dict[str, str] = {}
    for level in _LEVELS:
        hints.update(get_type_hints(level))
        docs.update(field_docs(level))
    preset_help = f"Preset the knapsack settings start from: {', '.join(trl_preset_names())}; fields set override it."
    preset = field(default="project", metadata={"help": preset_help})
    specs: list[tuple[str, Any, Any]] = [("knapsack_preset", str, preset)]
    for name in flat_fields(KnapsackConfig):
        if name in NOT_GENERATED:
            continue
        meta: dict[str, Any] = {"help": f"{docs[name]} [unset: the preset's value, {_preset_defaults(name)}]"}
        if hints[name] is bool:
            meta.update(nargs="?", const=True)  # `--fallback` alone means true, as for TRL's own bool flags
        specs.append((name, _parser_type(hints[name]), field(default=None, metadata=meta)))
    clash = sorted({s[0] for s in specs} & {f.name for f in dataclasses.fields(GRPOConfig)})
    if clash:
        raise TypeError(f"KnapsackConfig field(s) {clash} clash with GRPOConfig fields of this TRL version")
    return specs


KnapsackFields = dataclasses.make_dataclass("KnapsackFields", _knapsack_fields())
KnapsackFields.__doc__ = "The knapsack settings as flat, optional fields (generated from KnapsackConfig)."
KNAPSACK_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(KnapsackFields))[1:]
"""Names of the generated knapsack fields (KnapsackConfig's flat fields but ``n``), in declaration order."""


@dataclass
class KnapsackGRPOConfig(KnapsackFields, GRPOConfig):  # type: ignore[misc,valid-type]
    """``GRPOConfig`` with a rollout-allocation rule: ``rule``, the generated knapsack fields and the adapter's own.

    The method's settings are KnapsackConfig's flat fields (``allocate``, ``max_n``, ``estimator``, ...,
    see :data:`KNAPSACK_FIELDS`) and ``knapsack_preset``; read them resolved from :attr:`knapsack`.
    """

    rule: str = field(
        default="knapsack",
        metadata={"help": f"Allocation rule, by name: {', '.join(trl_rule_names())} (the rules TRL runs)."},
    )
    """The registered rule that gives each prompt its count (module docstring); refused at construction
    if TRL cannot run it."""
    prompt_id_column: str = field(
        default="prompt_id",
        metadata={"help": "Dataset column with a unique, stable id per prompt (nested keys dotted: extra_info.index)."},
    )
    """Column of a unique, stable id per prompt (``prompt_id`` from
    :func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids`, or e.g. ``extra_info.index``); the rule's key."""
    advantage_eps: float = field(
        default=1e-4, metadata={"help": "A = (r - mean_g) / (std_g + advantage_eps); 1e-4 is TRL's, the recipe's 1e-6."}
    )
    """Added to the group std in the advantage; 1e-4 is TRL's value, the recipe uses 1e-6."""
    advantage_clip: float | None = field(
        default=None, metadata={"help": "Clip advantages to [-c, c] with c = advantage_clip (recipe: 5; default none)."}
    )
    """Clip advantages to ``[-advantage_clip, advantage_clip]``; None keeps TRL's behaviour (no clip)."""
    loss_agg: str | None = field(
        default=None,
        metadata={
            "help": "group-mean: every prompt weighs the same in the policy loss whatever its count (needs "
            "loss_type dapo); unset: TRL's loss_type aggregates (dapo: a token mean, a prompt with 4x the "
            "rollouts weighs 4x)."
        },
    )
    """``"group-mean"``: weigh every prompt of a generation batch the same in the policy loss, its rollouts'
    tokens equally within it (the reference trainer's ``group-mean``); ``None``: TRL's ``loss_type`` decides."""

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        if not isinstance(self.prompt_id_column, str) or not self.prompt_id_column:
            got = self.prompt_id_column
            raise ValueError(f"prompt_id_column must be a non-empty string; got prompt_id_column={got!r}")
        check_real("advantage_eps", self.advantage_eps, low=0.0)
        if self.advantage_clip is not None:
            check_real("advantage_clip", self.advantage_clip, low=0.0, open_low=True)
        check_loss_agg(self.loss_agg, self.loss_type)
        resolved = self._resolve()
        for name, value in flat_values(resolved).items():
            if name in KNAPSACK_FIELDS:
                setattr(self, name, list(value) if isinstance(value, tuple) else value)
        build_rule(self)  # an unknown rule, or one TRL cannot run, is refused now, not at the first batch

    def _resolve(self) -> KnapsackConfig:
        """``knapsack_preset`` and the fields set, through the one resolver; ``n`` is ``num_generations``."""
        values = {name: getattr(self, name) for name in KNAPSACK_FIELDS if getattr(self, name) is not None}
        try:
            return knapsack_from_mapping(
                {"preset": self.knapsack_preset, **values}, n=self.num_generations, where="KnapsackGRPOConfig"
            )
        except ValueError as exc:
            raise ValueError(
                f"{exc} (knapsack_preset={self.knapsack_preset!r}; the allocation's n is "
                f"num_generations={self.num_generations!r})"
            ) from None

    @property
    def knapsack(self) -> KnapsackConfig:
        """The validated :class:`KnapsackConfig` these arguments describe (``n = num_generations``)."""
        return self._resolve()

    @property
    def group_size(self) -> int:
        """N = ``num_generations``, the mean rollouts per prompt (the allocation's ``n``)."""
        return check_int("num_generations", self.num_generations, low=1)

    @property
    def prompts_per_batch(self) -> int:
        """M: the prompts of one generation batch (``generation_batch_size / num_generations``)."""
        return check_int("generation_batch_size", self.generation_batch_size, low=1) // self.group_size


def build_rule(args: KnapsackGRPOConfig) -> Rule:
    """A fresh rule as ``args`` name it (:func:`knapsack_rl.rules.make_rule`: told ``n = num_generations``,
    the batch's prompts, ``seed`` and the knapsack settings), checked to run in TRL.

    Raises:
        ValueError: an unknown rule (listing the valid ones), or one TRL cannot run (one line: the reason
            and the engines that can run it).
    """
    setup = RuleSetup(args.group_size, args.prompts_per_batch, args.seed, knapsack=args.knapsack)
    rule = make_rule(args.rule, setup)
    try:
        check_runs_on(rule, ENGINE)
    except ValueError as exc:
        own = isinstance(rule, KnapsackRule) and args.rule == "knapsack"  # the run's own settings: probe_n is theirs
        probe = rule.config.probe_n if isinstance(rule, KnapsackRule) and own else 0
        hint = f" (probe_n={probe}: two-phase planning; set probe_n to 0)" if probe else ""
        raise ValueError(f"{exc}{hint}") from None
    return rule


def check_loss_agg(loss_agg: str | None, loss_type: str) -> None:
    """Raise for a ``loss_agg`` that is not one of :data:`LOSS_AGGS` or that ``loss_type`` cannot take."""
    if loss_agg is None:
        return
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {list(LOSS_AGGS)} or unset; got loss_agg={loss_agg!r}")
    if loss_type not in GROUP_MEAN_LOSS_TYPES:
        raise ValueError(
            f"loss_agg={loss_agg!r} needs loss_type in {list(GROUP_MEAN_LOSS_TYPES)} (a token sum over the "
            f"generation batch, which it reweighs by prompt); got loss_type={loss_type!r}"
        )


def flat_values(config: KnapsackConfig) -> dict[str, Any]:
    """Every flat field of ``config`` by name (``{"allocate": ..., "max_n": ..., ...}``)."""
    out: dict[str, Any] = {}
    for name, path in flat_fields(KnapsackConfig).items():
        node: Any = config
        for part in path:
            node = getattr(node, part)
        out[name] = node
    return out
