"""Allocation rules for the simulator, behind one interface and a registry.

A rule is an object with ``step(env) -> Rollouts``: it draws prompts from ``env``, asks
:meth:`StepEnv.sample` for the rollouts it wants (every one is counted as spend) and returns the batch
to train on. Most rules only decide counts for M drawn prompts: subclass :class:`BudgetRule` and
implement ``budgets``. Register a factory ``fn(config) -> Rule`` with :func:`register_rule`::

    @register_rule("mine")
    def _make(config: SimConfig) -> Rule:
        return MyRule(...)

Built-in rules (SPEC sections 4-5 and 10):

- ``uniform``: N rollouts for each of the M prompts.
- ``knapsack-recipe``: the recipe: recipe tracker estimator (window 16, min 8 rewards), fallback on,
  ``objective="recipe"`` (its zero-pool quirk included), p = 0 / p = 1 prompts get 2.
- ``knapsack``: the project's defaults chosen by the study (docs/simulation.md): as the recipe but
  ``objective="paper"``, no fallback, and 1 rollout (not 2) for prompts estimated at p = 0 or p = 1.
- ``knapsack-two-phase``: ``knapsack`` with the two-phase cold start (unestimated prompts are probed
  with 4 rollouts within the step, then the rest of the budget is allocated).
- ``dapo``: DAPO dynamic sampling: rounds of M prompts x N rollouts, drop zero-variance groups,
  refill until M groups with signal are kept (at most ``max_rounds`` rounds), trim to M; every
  generated rollout is spend.
- ``uncertainty``: E3-like: counts proportional to the estimated reward std ``sqrt(p(1-p))`` (Beta
  posterior mean), at least ``min_n``, unestimated prompts N, total B (largest remainder).
- ``greso``: GRESO-like pre-rollout filtering: a prompt whose last group had zero variance is skipped
  with probability q (0.8) and replaced by the next prompt of the stream; N rollouts each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.allocate import allocate
from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.core.tracker import Tracker, TrackerConfig
from knapsack_rl.core.validate import check_choice, check_int, check_real
from knapsack_rl.sim.config import SimConfig
from knapsack_rl.sim.env import StepEnv
from knapsack_rl.sim.world import SKIP_STREAM, Draw, Rollouts


class Rule(ABC):
    """One allocation rule; holds its own state (tracker) across the steps of one run."""

    name: str = "rule"

    @abstractmethod
    def step(self, env: StepEnv) -> Rollouts:
        """Generate this step's rollouts through ``env.sample`` and return the batch to train on."""


class BudgetRule(Rule):
    """Draw M prompts, give them ``budgets(draw, env)`` rollouts, observe the rewards, train on all."""

    def step(self, env: StepEnv) -> Rollouts:
        draw = env.draw(env.prompts_per_step)
        batch = env.sample(draw, self.budgets(draw, env))
        self.observe(batch, env)
        return batch

    @abstractmethod
    def budgets(self, draw: Draw, env: StepEnv) -> NDArray[np.int64]:
        """Rollouts per drawn prompt (M,)."""

    def observe(self, batch: Rollouts, env: StepEnv) -> None:
        """Record the rewards of every generated rollout (default: nothing)."""


class TrackedRule(BudgetRule):
    """A budget rule with a :class:`Tracker` fed with every rollout it generates."""

    def __init__(self, tracker: TrackerConfig) -> None:
        self.tracker = Tracker(tracker)

    def observe(self, batch: Rollouts, env: StepEnv) -> None:
        self.tracker.update(batch.prompt, batch.reward, epoch=env.epoch, step=env.step)


RuleFactory = Callable[[SimConfig], Rule]
_RULES: dict[str, RuleFactory] = {}


def register_rule(name: str) -> Callable[[RuleFactory], RuleFactory]:
    """Register ``factory(config) -> Rule`` under ``name``; duplicates raise."""

    def decorator(factory: RuleFactory) -> RuleFactory:
        if name in _RULES:
            raise ValueError(f"rule {name!r} is already registered")
        _RULES[name] = factory
        return factory

    return decorator


def rule_names() -> list[str]:
    """Names of the registered rules, sorted."""
    return sorted(_RULES)


def make_rule(name: str, config: SimConfig) -> Rule:
    """A fresh instance of the rule registered as ``name``; an unknown name lists the valid ones."""
    check_choice("rule", name, rule_names())
    rule = _RULES[name](config)
    rule.name = name
    return rule


# --------------------------------------------------------------------------- uniform
class UniformRule(BudgetRule):
    """N rollouts per prompt."""

    def budgets(self, draw: Draw, env: StepEnv) -> NDArray[np.int64]:
        return np.full(len(draw), env.n, dtype=np.int64)


@register_rule("uniform")
def _uniform(config: SimConfig) -> Rule:
    return UniformRule()


# --------------------------------------------------------------------------- knapsack
@dataclass(frozen=True)
class KnapsackSettings:
    """Settings of :class:`KnapsackRule` (tracker plus :func:`knapsack_rl.allocate` arguments)."""

    estimator: str = "recipe"
    """Tracker estimator: ``recipe``, ``ema`` or ``beta``."""
    min_count: int = 8
    """Rewards a prompt needs before its estimate is used."""
    forgetting: float = 0.8
    """Beta estimator: discount of old evidence per update."""
    beta_prior: tuple[float, float] = (1.0, 1.0)
    """Beta estimator: prior pseudo-counts."""
    smooth: float = 0.0
    """p = 0 / p = 1 treatment: Beta(smooth/2, smooth/2) prior on the point estimate over its last
    ``min(count, window)`` rewards, ``(smooth/2 + p_hat n) / (smooth + n)``; 0 keeps the point estimate."""
    fallback: bool = True
    """allocate(): the alpha = 0.9 fallback."""
    objective: str = "recipe"
    """allocate(): ``recipe`` (with its zero-pool quirk) or ``paper``."""
    min_n: int = 2
    """allocate(): lower bound of an effective prompt."""
    max_n: int = 128
    """allocate(): upper bound of an effective prompt."""
    negative_n: int = 2
    """allocate(): rollouts of a prompt estimated at p = 0."""
    positive_n: int = 2
    """allocate(): rollouts of a prompt estimated at p = 1."""
    value: str = "paper"
    """allocate(): registered value function."""
    cold_start: str = "uniform"
    """Unestimated prompts: ``uniform`` (N each, the recipe) or ``two_phase`` (probe then allocate)."""
    probe_n: int = 4
    """two_phase: rollouts of the probe given to each unestimated prompt first."""

    def __post_init__(self) -> None:
        check_choice("estimator", self.estimator, ("recipe", "ema", "beta"))
        check_choice("objective", self.objective, ("recipe", "paper"))
        check_choice("cold_start", self.cold_start, ("uniform", "two_phase"))
        check_int("probe_n", self.probe_n, low=1)
        check_real("forgetting", self.forgetting, low=0.0, high=1.0, open_low=True)
        check_real("smooth", self.smooth, low=0.0)


class KnapsackRule(TrackedRule):
    """Knapsack RL: tracker estimates -> :func:`knapsack_rl.allocate` -> counts (total B exactly).

    ``cold_start="two_phase"``: prompts without an estimate first get ``probe_n`` rollouts each; their
    estimate becomes ``(smooth/2 + s) / (smooth + probe_n)`` with s the probe's successes (the point
    estimate when ``smooth = 0``, so an all-wrong probe lands in the p = 0 bucket), and one
    allocation of the remaining ``B - probe_n * k`` over all M prompts adds to the probe (so a probed
    prompt can reach ``probe_n + max_n``). The probe's rollouts are part of the trained group.
    """

    def __init__(self, settings: KnapsackSettings) -> None:
        super().__init__(
            TrackerConfig(
                estimator=settings.estimator,
                min_count=settings.min_count,
                forgetting=settings.forgetting,
                beta_prior=settings.beta_prior,
            )
        )
        self.settings = settings

    def _allocate(self, p_hat: NDArray[np.float64], n: int, total: int) -> NDArray[np.int64]:
        s = self.settings
        result = allocate(
            p_hat,
            unestimated_in_zero_pool=s.objective == "recipe",
            strict_max_n=s.objective != "recipe",
            n=n,
            total_budget=total,
            min_n=s.min_n,
            max_n=s.max_n,
            negative_n=s.negative_n,
            positive_n=s.positive_n,
            fallback=s.fallback,
            objective=s.objective,  # type: ignore[arg-type]
            value=s.value,
        )
        return result.budgets

    def estimate(self, prompts: NDArray[np.int64]) -> NDArray[np.float64]:
        """Tracker estimate, shrunk toward 1/2 by the ``smooth`` prior (NaN = no estimate)."""
        p_hat = self.tracker.estimate(prompts)
        a = self.settings.smooth
        if a > 0:
            n = np.minimum(self.tracker.counts(prompts), self.tracker.config.window)  # rewards behind p_hat
            p_hat = (a / 2 + p_hat * n) / (a + n)  # Beta(a/2, a/2) posterior mean
        return p_hat

    def budgets(self, draw: Draw, env: StepEnv) -> NDArray[np.int64]:
        return self._allocate(self.estimate(draw.prompts), env.n, env.budget)

    def step(self, env: StepEnv) -> Rollouts:
        if self.settings.cold_start == "uniform":
            return super().step(env)
        draw = env.draw(env.prompts_per_step)
        p_hat = self.estimate(draw.prompts)
        new = np.isnan(p_hat)
        k = self.settings.probe_n
        probe = env.sample(draw.select(new), np.full(int(new.sum()), k)) if new.any() else Rollouts.concat([])
        if new.any():
            succ = np.bincount(
                np.searchsorted(draw.groups[new], probe.group), weights=probe.reward, minlength=new.sum()
            )
            a = self.settings.smooth
            p_hat[new] = (a / 2 + succ) / (a + k)  # probe estimate, with the same Beta(a/2, a/2) prior
        counts = self._allocate(p_hat, env.n, env.budget - k * int(new.sum()))
        rest = env.sample(draw, counts, offset=np.where(new, k, 0))
        batch = Rollouts.concat([probe, rest])
        self.observe(batch, env)
        return batch


_KEYS = ("objective", "fallback", "negative_n", "positive_n")


def _recipe_settings() -> KnapsackSettings:
    a = KnapsackConfig.preset("recipe").allocation
    return KnapsackSettings(estimator="recipe", **{k: getattr(a, k) for k in _KEYS})


PROJECT_SETTINGS = replace(
    _recipe_settings(), **{k: getattr(KnapsackConfig.preset("project").allocation, k) for k in _KEYS}
)
"""The project's defaults as chosen by the study in docs/simulation.md: the recipe's tracker estimator,
point estimates (no posterior shrinkage), the plain objective V(N, p), no fallback, and one rollout
(a re-estimation probe, no gradient) for prompts estimated at p = 0 or p = 1; epoch 1 uniform."""


@register_rule("knapsack-recipe")
def _knapsack_recipe(config: SimConfig) -> Rule:
    return KnapsackRule(_recipe_settings())


@register_rule("knapsack")
def _knapsack(config: SimConfig) -> Rule:
    return KnapsackRule(PROJECT_SETTINGS)


@register_rule("knapsack-two-phase")
def _knapsack_two_phase(config: SimConfig) -> Rule:
    return KnapsackRule(replace(PROJECT_SETTINGS, cold_start="two_phase"))


# --------------------------------------------------------------------------- DAPO
class DapoRule(Rule):
    """DAPO dynamic sampling: rounds of M prompts x N; keep groups with signal until M are kept."""

    def __init__(self, max_rounds: int = 10) -> None:
        self.max_rounds = check_int("max_rounds", max_rounds, low=1)

    def step(self, env: StepEnv) -> Rollouts:
        kept: list[Rollouts] = []
        groups = 0
        for _ in range(self.max_rounds):
            draw = env.draw(env.prompts_per_step)
            batch = env.sample(draw, np.full(len(draw), env.n))
            useful = batch.select(batch.varied_groups())
            ids = np.unique(useful.group)[: env.prompts_per_step - groups]  # trim to M groups
            kept.append(useful.select(np.isin(useful.group, ids)))
            groups += ids.size
            if groups >= env.prompts_per_step:
                break
        return Rollouts.concat(kept)


@register_rule("dapo")
def _dapo(config: SimConfig) -> Rule:
    return DapoRule()


# --------------------------------------------------------------------------- E3-like
class UncertaintyRule(TrackedRule):
    """Counts proportional to the estimated reward std: ``N_i = min_n + round(R w_i / sum w)``, with
    ``w_i = sqrt(p_i (1 - p_i))`` (Beta posterior mean p), R the budget above the floors (largest
    remainder rounding, so the total is B exactly); unestimated prompts get N. No upper bound."""

    def __init__(self, min_n: int = 2) -> None:
        super().__init__(TrackerConfig(estimator="beta", min_count=1))
        self.min_n = min_n

    def budgets(self, draw: Draw, env: StepEnv) -> NDArray[np.int64]:
        p = self.tracker.estimate(draw.prompts)
        new = np.isnan(p)
        counts = np.where(new, env.n, self.min_n).astype(np.int64)
        rest = env.budget - int(counts.sum())
        w = np.where(new, 0.0, np.sqrt(np.nan_to_num(p) * (1 - np.nan_to_num(p))))
        if rest <= 0 or w.sum() <= 0:
            return counts
        share = rest * w / w.sum()
        extra = np.floor(share).astype(np.int64)
        left = rest - int(extra.sum())
        extra[np.argsort(-(share - extra), kind="stable")[:left]] += 1  # largest remainder
        out: NDArray[np.int64] = counts + extra
        return out


@register_rule("uncertainty")
def _uncertainty(config: SimConfig) -> Rule:
    return UncertaintyRule()


# --------------------------------------------------------------------------- GRESO-like
class GresoRule(Rule):
    """Skip a prompt whose last group had zero variance with probability ``skip_prob`` (a coin from
    the shared skip stream), refill from the stream; N rollouts for each of M kept prompts."""

    def __init__(self, num_prompts: int, skip_prob: float = 0.8) -> None:
        self.skip_prob = check_real("skip_prob", skip_prob, low=0.0, high=1.0, open_high=True)
        self.zero_last = np.zeros(num_prompts, dtype=bool)

    def step(self, env: StepEnv) -> Rollouts:
        chosen: list[Draw] = []
        need = env.prompts_per_step
        while need > 0:
            draw = env.draw(need)
            skip = self.zero_last[draw.prompts] & (env.coin(draw, SKIP_STREAM) < self.skip_prob)
            chosen.append(draw.select(~skip))
            need -= int((~skip).sum())
        draw = Draw.concat(chosen)
        batch = env.sample(draw, np.full(len(draw), env.n))
        varied = batch.varied_groups()
        self.zero_last[batch.prompt] = ~varied  # per rollout; same value within a group
        return batch


@register_rule("greso")
def _greso(config: SimConfig) -> Rule:
    return GresoRule(config.num_prompts)
