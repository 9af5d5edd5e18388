"""``KnapsackGRPOConfig``: TRL's ``GRPOConfig`` plus the method's settings, generated from :class:`KnapsackConfig`.

No allocation or tracker setting is typed here. The knapsack fields are *generated* at import from the
flat fields of :class:`knapsack_rl.KnapsackConfig` (:func:`knapsack_rl.core.config.flat_fields`): same names,
same types, help strings taken from the field docstrings of ``KnapsackConfig``, ``AllocationConfig`` and
``TrackerConfig``. TRL's parser (``TrlParser`` / ``HfArgumentParser``) therefore sees them as ordinary flat
arguments (``--max_n 64 --estimator beta``, or ``max_n: 64`` in a YAML file), and a field added to
``KnapsackConfig`` appears here without an edit.

Resolution (once, in ``__post_init__``):

- ``knapsack_preset`` (default ``"project"``) names the starting point (:meth:`KnapsackConfig.preset`);
- every knapsack field left unset (``None``) takes the preset's value, every field set overrides it; the
  resolved values are written back into the fields, so ``args.max_n`` and ``args.to_dict()`` show what
  runs, and re-parsing ``args.to_dict()`` reproduces the same settings;
- the allocation's ``n`` is TRL's ``num_generations`` (the mean rollouts per prompt: a generation batch
  of B rows holds ``M = B / num_generations`` prompts and the planner spreads exactly
  ``B = num_generations * M`` rollouts over them). ``n`` is therefore *not* a field of this config:
  one concept, one name (``num_generations``), never declared twice;
- :attr:`KnapsackGRPOConfig.knapsack` returns the validated :class:`KnapsackConfig`; a bad value raises
  ``ValueError`` at construction, naming the setting.

A field whose own type admits ``None`` (``success_threshold``) cannot be reset to ``None`` against a preset
that sets it; no preset sets it today.

Not supported by the TRL adapter (``ValueError`` at construction): ``probe_n > 0``. Two-phase planning
needs two generation rounds per generation batch (probe the unestimated prompts, then allocate the rest
of the budget from what the probe saw); TRL's ``GRPOTrainer`` generates, scores and pads a generation
batch in one ``_generate_and_score_completions`` call, so a second round would mean merging two padded
outputs and logging every TRL metric twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

from trl.trainer.grpo_config import GRPOConfig

from knapsack_rl.cli_args import field_docs
from knapsack_rl.core.config import PRESETS, AllocationConfig, KnapsackConfig, flat_fields, preset_names
from knapsack_rl.core.tracker import TrackerConfig
from knapsack_rl.core.validate import check_real

NOT_GENERATED = {"n": "num_generations"}
"""KnapsackConfig fields that TRL already declares under its own name (ours -> TRL's)."""
_LEVELS = (KnapsackConfig, AllocationConfig, TrackerConfig)


def _parser_type(tp: Any) -> Any:
    """The type TRL's parser should see for a KnapsackConfig field type, made optional (None = unset)."""
    if get_origin(tp) is tuple:  # beta_prior: tuple[float, float] -> a list on the command line / in YAML
        return list[get_args(tp)[0]] | None  # type: ignore[misc]
    if get_origin(tp) is Literal:
        return tp | None
    return tp if type(None) in get_args(tp) else tp | None


def _preset_defaults(name: str) -> str:
    """``project=128, recipe=128, uniform=128``: the value of flat field ``name`` in every preset."""
    paths = flat_fields(KnapsackConfig)
    values = []
    for preset in preset_names():
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
    preset_help = f"Preset the knapsack settings start from: {', '.join(preset_names())}; fields set override it."
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
    """``GRPOConfig`` with knapsack allocation: generated flat fields plus the adapter's own (module docstring).

    The method's settings are KnapsackConfig's flat fields (``rule``, ``max_n``, ``estimator``, ...,
    see :data:`KNAPSACK_FIELDS`) and ``knapsack_preset``; read them resolved from :attr:`knapsack`.
    """

    prompt_id_column: str = field(
        default="prompt_id",
        metadata={"help": "Dataset column with a unique, stable id per prompt (nested keys dotted: extra_info.index)."},
    )
    """Column of a unique, stable id per prompt (``prompt_id`` from
    :func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids`, or e.g. ``extra_info.index``); the tracker's key."""
    advantage_eps: float = field(
        default=1e-4, metadata={"help": "A = (r - mean_g) / (std_g + advantage_eps); 1e-4 is TRL's, the recipe's 1e-6."}
    )
    """Added to the group std in the advantage; 1e-4 is TRL's value, the recipe uses 1e-6."""
    advantage_clip: float | None = field(
        default=None, metadata={"help": "Clip advantages to [-c, c] with c = advantage_clip (recipe: 5; default none)."}
    )
    """Clip advantages to ``[-advantage_clip, advantage_clip]``; None keeps TRL's behaviour (no clip)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        if not isinstance(self.prompt_id_column, str) or not self.prompt_id_column:
            got = self.prompt_id_column
            raise ValueError(f"prompt_id_column must be a non-empty string; got prompt_id_column={got!r}")
        check_real("advantage_eps", self.advantage_eps, low=0.0)
        if self.advantage_clip is not None:
            check_real("advantage_clip", self.advantage_clip, low=0.0, open_low=True)
        resolved = self._resolve()
        for name, value in flat_values(resolved).items():
            if name in KNAPSACK_FIELDS:
                setattr(self, name, list(value) if isinstance(value, tuple) else value)
        check_supported(resolved)

    def _resolve(self) -> KnapsackConfig:
        """``KnapsackConfig.preset(knapsack_preset, n=num_generations, **set fields)``, errors naming the setting."""
        changes = {name: getattr(self, name) for name in KNAPSACK_FIELDS if getattr(self, name) is not None}
        if isinstance(changes.get("beta_prior"), list):
            changes["beta_prior"] = tuple(changes["beta_prior"])
        try:
            return KnapsackConfig.preset(self.knapsack_preset, n=self.num_generations, **changes)
        except ValueError as exc:
            raise ValueError(
                f"KnapsackGRPOConfig: {exc} (knapsack_preset={self.knapsack_preset!r}; the allocation's n is "
                f"num_generations={self.num_generations!r})"
            ) from None

    @property
    def knapsack(self) -> KnapsackConfig:
        """The validated :class:`KnapsackConfig` these arguments describe (``n = num_generations``)."""
        return self._resolve()


def flat_values(config: KnapsackConfig) -> dict[str, Any]:
    """Every flat field of ``config`` by name (``{"rule": ..., "max_n": ..., ...}``)."""
    out: dict[str, Any] = {}
    for name, path in flat_fields(KnapsackConfig).items():
        node: Any = config
        for part in path:
            node = getattr(node, part)
        out[name] = node
    return out


def check_supported(config: KnapsackConfig) -> None:
    """Raise for settings the TRL adapter cannot run (see the module docstring)."""
    if config.probe_n > 0:
        raise ValueError(
            f"probe_n={config.probe_n}: two-phase planning needs two generation rounds per generation batch (a probe "
            "of the unestimated prompts, then the rest of the budget), but TRL's GRPOTrainer generates and scores a "
            "batch in one call; KnapsackGRPOTrainer supports probe_n=0 only"
        )
