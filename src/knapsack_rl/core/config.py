"""Every setting of the method, declared once and validated once: :class:`KnapsackConfig`.

    KnapsackConfig
      allocate        True: counts from allocate() on the estimates; False: n per prompt (same tracking)
      allocation      AllocationConfig: exactly the settings keywords of :func:`knapsack_rl.allocate`
      tracker         TrackerConfig: how success rates are estimated (:class:`knapsack_rl.Tracker`)
      uniform_epochs  cold start: epochs (from 0) in which every prompt gets n
      probe_n         two-phase planning: rollouts that probe each unestimated prompt first (0: off)
      posterior       score E[V(N, p)] under each prompt's posterior instead of V(N, p_hat)
      prior           the posterior's prior: "beta" (tracker.beta_prior) or "population" (fitted)

Engines (the reference trainer, TRL, verl, the simulator) embed a :class:`KnapsackConfig`; none
redeclares one of its fields. Named presets are resolved explicitly with
:meth:`KnapsackConfig.preset` (``"recipe"``: the authors' settings; ``"project"``: this project's
recommendation; ``"two-phase"``: it with a within-step probe; ``"signal"``: it scored for the count of
prompts with signal under a prior fitted to the data set). The uniform baseline is not a preset but a
rule (``uniform``: ``allocate=False``, the same tracking). Field
names are unique across the three levels, so a flat mapping such as ``{"max_n": 64, "estimator":
"beta"}`` (a command line, TRL's flat arguments) has one meaning: :meth:`KnapsackConfig.replace` and
:func:`flat_fields` route it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.solve import METHODS
from knapsack_rl.core.tracker import TrackerConfig
from knapsack_rl.core.validate import check_bool, check_choice, check_int, check_real
from knapsack_rl.core.value import get_posterior_value, get_value

Objective = Literal["paper", "recipe"]
Prior = Literal["beta", "population"]
Overflow = Literal["pool", "effective"]
RENAMED = {"rule": "allocate", "allocation_rule": "rule"}
"""Settings renamed since 0.1.0 (old -> new): an old name is refused with a pointer to the new one."""
RENAMED_WHY = {
    "rule": "allocate: false is the uniform baseline; the allocation rule itself is chosen by name with the "
    "engine's `rule` setting: uniform, knapsack, coba, ...",
    "allocation_rule": "one name per rule in every engine: knapsack, uniform, coba, dapo, ...",
}


@dataclass(frozen=True)
class AllocationConfig:
    """Settings of :func:`knapsack_rl.allocate` (the per-step data ``total_budget``, ``costs``,
    ``posterior`` and ``floor`` are arguments of the call, not settings)."""

    n: int = 8
    """Uniform rollouts per prompt: the default step budget is ``n * M``; unestimated prompts get n."""
    min_n: int = 2
    """Fewest rollouts of an effective prompt (a group of one carries no gradient: its advantage is 0)."""
    max_n: int = 128
    """Most rollouts of an effective prompt (of every prompt when ``strict_max_n``)."""
    negative_n: int = 2
    """Rollouts of a prompt estimated at exactly p = 0 (recipe: 2)."""
    positive_n: int = 2
    """Rollouts of a prompt estimated at exactly p = 1 (recipe: 2)."""
    fallback: bool = True
    """The recipe's alpha-confidence fallback: budget beyond what effective prompts need goes to p = 0."""
    alpha: float = 0.9
    """Fallback: target probability of a non-zero gradient, cost ``log(1 - alpha) / log(max(p, 1 - p))``."""
    objective: Objective = "paper"
    """``paper``: maximise ``sum V(N_i, p_i)``; ``recipe``: the authors' scoring (no extra rollout scores 0)."""
    value: str = "paper"
    """Registered value function V(N, p) (:mod:`knapsack_rl.core.value`): ``paper``, ``nonzero``, ..."""
    overflow: Overflow = "pool"
    """Where the budget the knapsack cannot place goes: ``pool`` (p = 0 prompts, then the others) or
    ``effective`` (evenly over the effective prompts, exceeding ``max_n``, as the recipe does; needs
    ``strict_max_n=False``). The value ``recipe`` was renamed ``effective`` and is refused."""
    unestimated_in_zero_pool: bool = False
    """Count unestimated prompts in the p = 0 pool that takes surplus (the recipe stores rate 0 for them)."""
    strict_max_n: bool = True
    """``max_n`` bounds every prompt, also the p = 0 pool that takes the fallback's surplus (the recipe
    bounds only the knapsack's prompts)."""
    solver: str = "greedy"
    """Knapsack method of :func:`knapsack_rl.core.solve.solve`: ``greedy`` (exact for unit costs; picks the
    fastest path), ``dense``, ``threshold`` (the same answer by other paths), or ``dp`` (the recipe's
    dynamic programme, the slow reference)."""

    def __post_init__(self) -> None:
        check_allocation(self)


def check_allocation(cfg: AllocationConfig) -> None:
    """Validate every field of ``cfg`` once; cross-field errors name every value involved."""
    for name in ("n", "min_n", "max_n"):
        check_int(name, getattr(cfg, name), low=1)
    for name in ("negative_n", "positive_n"):
        check_int(name, getattr(cfg, name), low=0)
    for name in ("fallback", "unestimated_in_zero_pool", "strict_max_n"):
        check_bool(name, getattr(cfg, name))
    check_real("alpha", cfg.alpha, low=0.0, high=1.0, open_low=True, open_high=True)
    check_choice("objective", cfg.objective, ("paper", "recipe"))
    if str(cfg.overflow) == "recipe":  # any str may arrive here, whatever the annotation says
        raise ValueError("overflow='recipe' was renamed overflow='effective' (where the left-over budget goes)")
    check_choice("overflow", cfg.overflow, ("pool", "effective"))
    get_value(cfg.value)
    check_choice("solver", cfg.solver, METHODS)
    if cfg.max_n < cfg.min_n:
        raise ValueError(f"max_n must be >= min_n; got max_n={cfg.max_n}, min_n={cfg.min_n}")
    if cfg.strict_max_n:
        for name in ("n", "negative_n", "positive_n"):
            if getattr(cfg, name) > cfg.max_n:
                raise ValueError(
                    f"with strict_max_n=True, {name} must be <= max_n; got {name}={getattr(cfg, name)}, "
                    f"max_n={cfg.max_n}"
                )
        if cfg.overflow == "effective":
            raise ValueError(
                "overflow='effective' spreads what the knapsack cannot place beyond max_n, which strict_max_n=True "
                "forbids; set strict_max_n=False with it (as the 'recipe' preset does) or use overflow='pool'"
            )


@dataclass(frozen=True)
class KnapsackConfig:
    """The whole method's settings: allocation, tracking, and the planner's schedule (see the module doc).

    Example:
        A preset with flat changes (each routed to the section that declares it), validated once:

        >>> from knapsack_rl import KnapsackConfig
        >>> config = KnapsackConfig.preset("project", n=16)
        >>> config.allocation.n, config.allocation.max_n, config.posterior, config.tracker.estimator
        (16, 128, True, 'recipe')
        >>> config.replace(max_n=64).allocation.max_n
        64
        >>> KnapsackConfig.from_dict(config.to_dict()) == config  # plain data, e.g. for a checkpoint
        True
        >>> KnapsackConfig.preset("project", max_n=4)
        Traceback (most recent call last):
        ...
        ValueError: with strict_max_n=True, n must be <= max_n; got n=8, max_n=4
    """

    allocate: bool = True
    """True: counts from :func:`knapsack_rl.allocate` on the tracker's estimates; False: n per prompt (the
    uniform baseline; the tracker still runs, so both arms log the same metrics)."""
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
    """Settings of :func:`knapsack_rl.allocate`."""
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    """Settings of the success-rate tracker."""
    uniform_epochs: int = 1
    """Cold start: in epochs ``0 .. uniform_epochs - 1`` (0-based passes over the training prompts) every
    prompt gets n rollouts whatever its estimate; the recipe allocates from the second epoch (1)."""
    probe_n: int = 0
    """Two-phase planning when > 0: each prompt without an estimate first gets ``probe_n`` rollouts; the
    rest of the step's budget is then allocated from what the probe saw (:meth:`Planner.plan_probe`)."""
    posterior: bool = False
    """Score each prompt by ``E[V(N, p)]`` under its posterior (the tracker's discounted successes and
    failures) instead of ``V(N, p_hat)``: 0 successes in 8 reads as "hard", not "hopeless"."""
    prior: Prior = "beta"
    """The posterior's prior: ``beta``: ``tracker.beta_prior`` for every prompt; ``population``: the
    distribution of rates over all tracked prompts, fitted on a grid at every plan, each fit going on from the
    last (empirical Bayes, :class:`knapsack_rl.core.population.PopulationPrior`). Needs ``posterior=True``."""

    def __post_init__(self) -> None:
        check_knapsack(self)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> KnapsackConfig:
        """The named preset (:func:`preset_names`), with flat ``changes`` applied
        (:func:`knapsack_from_mapping` with ``{"preset": name, **changes}``)."""
        return knapsack_from_mapping({"preset": name, **changes})

    def replace(self, **changes: Any) -> KnapsackConfig:
        """A copy with fields changed by flat name (``max_n=64``, ``estimator="beta"``, ``allocate=False``).

        Each name is routed to the level that declares it (:func:`flat_fields`); an unknown name raises
        a ValueError listing the valid ones. The copy is validated again.
        """
        return replace_flat(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-safe; tuples become lists)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> KnapsackConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise, naming them and the valid ones."""
        return from_dict(cls, values, where="knapsack")


def check_knapsack(cfg: KnapsackConfig) -> None:
    """Validate the planner-level fields and their cross-field rules."""
    check_bool("allocate", cfg.allocate)
    if not isinstance(cfg.allocation, AllocationConfig):
        raise ValueError(f"allocation must be an AllocationConfig; got {type(cfg.allocation).__name__}")
    if not isinstance(cfg.tracker, TrackerConfig):
        raise ValueError(f"tracker must be a TrackerConfig; got {type(cfg.tracker).__name__}")
    check_int("uniform_epochs", cfg.uniform_epochs, low=0)
    check_int("probe_n", cfg.probe_n, low=0)
    check_bool("posterior", cfg.posterior)
    check_choice("prior", cfg.prior, ("beta", "population"))
    if cfg.prior == "population" and not cfg.posterior:
        raise ValueError("prior='population' is the prior of a posterior; set posterior=True with it")
    if cfg.posterior:
        get_posterior_value(cfg.allocation.value)  # raises, naming the value, when it has no posterior form
    if cfg.probe_n > 0 and cfg.allocation.strict_max_n and cfg.probe_n > cfg.allocation.max_n:
        raise ValueError(
            f"probe_n must be <= max_n with strict_max_n=True; got probe_n={cfg.probe_n}, max_n={cfg.allocation.max_n}"
        )


# ----------------------------------------------------------------------------- presets
PRESETS: Registry[Callable[[], KnapsackConfig]] = Registry("preset", "preset")


def preset_names() -> list[str]:
    """Names of the registered presets, sorted."""
    return PRESETS.names()


@PRESETS.register("recipe")
def _recipe() -> KnapsackConfig:
    """The authors' recipe (docs/method.md): recipe estimator, fallback, 2 rollouts for p = 0 / 1, the recipe's
    scoring and quirks (unestimated prompts in the zero pool, max_n bounds the knapsack only, overflow
    spread over the effective prompts), allocation from the second epoch."""
    allocation = AllocationConfig(
        objective="recipe",
        fallback=True,
        negative_n=2,
        positive_n=2,
        unestimated_in_zero_pool=True,
        strict_max_n=False,
        overflow="effective",
    )
    return KnapsackConfig(allocation=allocation, tracker=TrackerConfig(estimator="recipe"))


@PRESETS.register("project")
def _project() -> KnapsackConfig:
    """This project's recommendation, chosen on training signals only (docs/evidence.md): the paper's value
    scored under each prompt's Beta posterior (``posterior=True``: 0 successes in 8 reads as hard, not
    hopeless), no fallback; allocation from the second epoch as in the recipe."""
    allocation = AllocationConfig(objective="paper", fallback=False, negative_n=1, positive_n=1)
    return KnapsackConfig(allocation=allocation, tracker=TrackerConfig(estimator="recipe"), posterior=True)


@PRESETS.register("two-phase")
def _two_phase() -> KnapsackConfig:
    """``project`` with two-phase planning from the first step: 4 probe rollouts for every prompt without
    an estimate, then the rest of the step's budget from what the probe saw (for a single pass or a few
    epochs over a large data set, where estimates from earlier epochs do not exist)."""
    return dataclasses.replace(_project(), probe_n=4, uniform_epochs=0)


@PRESETS.register("signal")
def _signal() -> KnapsackConfig:
    """``project`` scored for the count of prompts with signal: the expected number of prompts whose
    group has reward variance (value ``nonzero``) under an empirical-Bayes posterior (``prior=
    "population"``: the rates of all tracked prompts, fitted on a grid). Under a correctly specified
    prior this plan has, in expectation, at least as many prompts with signal as uniform's."""
    return _project().replace(value="nonzero", prior="population")


PRESETS_MOVED = {
    "uniform": "the uniform baseline is the rule 'uniform' (`rule: uniform` in a config, `--rule uniform`, "
    "`rule=uniform` in TRL, `knapsack.rule=uniform` in verl)",
}
"""Preset names of 0.1.0 that are no longer presets, and where the user now finds them."""


DEFAULT_PRESET = "project"
"""The preset a KnapsackConfig starts from when a mapping names none (this project's recommendation)."""
SECTIONS = ("allocation", "tracker")
"""Nested sections a mapping may use instead of flat names (``allocation: {max_n: 64}``)."""


def knapsack_from_mapping(
    values: Mapping[str, Any] | None, *, base: KnapsackConfig | None = None, where: str = "knapsack", **fixed: Any
) -> KnapsackConfig:
    """The one route from a mapping to a KnapsackConfig, for every engine and command.

    ``values`` holds an optional ``preset`` (:func:`preset_names`), then settings by flat name
    (``max_n: 64``) or in nested sections (``allocation: {max_n: 64}``). Without a preset the settings
    change ``base`` (default: the :data:`DEFAULT_PRESET` preset). ``fixed`` are settings the engine owns
    (``n``: TRL's ``num_generations``, verl's ``rollout.n``), applied last. Unknown or renamed keys raise a
    one-line ValueError naming them and ``where`` they are.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping; got {type(values).__name__}")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key == "preset":
            continue
        items = value.items() if key in SECTIONS and isinstance(value, Mapping) else [(key, value)]
        flat.update({k: tuple(v) if isinstance(v, list) else v for k, v in items})
    check_known(flat, flat_fields(KnapsackConfig), where=where)
    if "preset" in values:
        moved = PRESETS_MOVED.get(values["preset"]) if isinstance(values["preset"], str) else None
        if moved is not None:
            raise ValueError(f"{where}.preset={values['preset']!r} is not a preset: {moved}")
        start = PRESETS.get(values["preset"])()  # an unknown name lists the valid ones
    else:
        start = base if base is not None else PRESETS.get(DEFAULT_PRESET)()
    return start.replace(**flat, **fixed)


# ----------------------------------------------------------------------------- nested dataclass helpers
T = TypeVar("T")


def flat_fields(cls: type) -> dict[str, tuple[str, ...]]:
    """Flat name -> path of every leaf field of a (nested) config dataclass; names must be unique.

    ``flat_fields(KnapsackConfig)["max_n"] == ("allocation", "max_n")``.
    """
    out: dict[str, tuple[str, ...]] = {}
    for f in fields(cls):
        sub = _dataclass_type(cls, f)
        leaves = {k: (f.name, *p) for k, p in flat_fields(sub).items()} if sub is not None else {f.name: (f.name,)}
        for name, path in leaves.items():
            if name in out:
                raise TypeError(f"{cls.__name__}: field name {name!r} is declared twice ({out[name]} and {path})")
            out[name] = path
    return out


def replace_flat(obj: T, changes: Mapping[str, Any]) -> T:
    """A copy of the nested dataclass ``obj`` with leaf fields changed by flat name (validated again)."""
    paths = flat_fields(type(obj))
    check_known(changes, paths, where="")
    nested: dict[str, Any] = {}
    for name, value in changes.items():
        node = nested
        *head, leaf = paths[name]
        for part in head:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _apply(obj, nested)


def _apply(obj: T, nested: Mapping[str, Any]) -> T:
    kwargs = {k: (_apply(getattr(obj, k), v) if isinstance(v, dict) else v) for k, v in nested.items()}
    return dataclasses.replace(obj, **kwargs)  # type: ignore[type-var]


def to_plain(obj: Any) -> dict[str, Any]:
    """A (nested) dataclass as a JSON-safe dict: tuples become lists, nested configs dicts."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, list | tuple) else v

    out: dict[str, Any] = plain(dataclasses.asdict(obj))
    return out


def from_dict(cls: type[T], values: Mapping[str, Any], *, where: str) -> T:
    """Build the nested dataclass ``cls`` from a plain mapping (JSON / YAML); lists become tuples.

    Unknown keys raise a ValueError naming them, where they are (``where``) and the valid keys.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping; got {type(values).__name__}")
    valid = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    check_known(values, valid, where=where)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        sub = _dataclass_type(cls, valid[key])
        if sub is not None and isinstance(value, Mapping):
            kwargs[key] = from_dict(sub, value, where=f"{where}.{key}")
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def overlay(base: T, values: Mapping[str, Any], *, where: str) -> T:
    """A copy of the (nested) dataclass ``base`` with the keys of ``values`` changed; omitted keys keep
    ``base``'s values, nested mappings overlay nested configs, lists become tuples. Unknown keys raise a
    ValueError naming them, where they are (``where``) and the valid keys; the result is validated again."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping; got {type(values).__name__}")
    check_known(values, {f.name for f in fields(base)}, where=where)  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = overlay(current, value, where=f"{where}.{key}")
        else:
            changes[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> list[str]:
    """``"allocation.max_n: 128 -> 64"`` for every leaf of two nested config dicts that differs, sorted; the
    one config diff of every resume check and warning. Top-level keys in ``ignore`` are left out."""
    skip = set(ignore)

    def leaves(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if not prefix and k in skip:
                continue
            out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, Mapping) and v else {f"{prefix}{k}": v})
        return out

    a, b = leaves(saved), leaves(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [f"{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}" for k in keys]


def check_known(values: Mapping[str, Any], valid: Iterable[str], *, where: str) -> None:
    """Raise a one-line ValueError for keys of ``values`` not in ``valid`` (naming them, ``where`` they are
    and the valid ones); a setting renamed since 0.1.0 (:data:`RENAMED`) is named with its new name."""
    valid = set(valid)
    unknown = sorted(set(values) - valid)
    renamed = [k for k in unknown if RENAMED.get(k) in valid]
    if renamed:
        old = renamed[0]
        raise ValueError(
            f"setting {old!r}{' in ' + where if where else ''} was renamed {RENAMED[old]!r} ({RENAMED_WHY[old]})"
        )
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}{' in ' + where if where else ''}; valid: {sorted(valid)}")


def _dataclass_type(cls: type, f: dataclasses.Field[Any]) -> type | None:
    """The dataclass type of field ``f`` when it holds a nested config (its default says which)."""
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
        return type(default) if dataclasses.is_dataclass(default) else None
    if f.default is not dataclasses.MISSING and dataclasses.is_dataclass(f.default):
        return type(f.default)
    return None
