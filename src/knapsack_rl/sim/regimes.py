"""Training regimes for comparing rules at equal rollouts: many epochs, one or two epochs, a single pass.

A regime is a data-set size for a fixed run length (``steps`` x B rollouts): it decides how often a
prompt comes back, which is what trackers (knapsack, GRESO, E3-like) need and within-step rules
(two-phase knapsack, Reinforce-Ada, Pilot-Commit, DAPO) do not. Regimes are registered in
:data:`REGIMES` like every other pluggable part.

    tables = run_regimes(["many-epochs", "single-pass"], ["uniform", "knapsack:project"], seeds=range(5))
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.validate import check_int
from knapsack_rl.sim.config import SimConfig
from knapsack_rl.sim.run import RunTrace, run_rules
from knapsack_rl.sim.summary import compare, format_comparison

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Regime:
    """A training regime: how many training prompts a run of ``steps`` steps of B rollouts sees."""

    name: str
    """Registered name."""
    description: str
    """One line for the table's title."""
    num_prompts: int
    """Training prompts P."""
    steps: int = 500
    """Run length in steps of B rollouts (every rule gets ``steps * B`` rollouts)."""

    def __post_init__(self) -> None:
        check_int("num_prompts", self.num_prompts, low=1)
        check_int("steps", self.steps, low=1)

    def config(self, base: SimConfig | None = None, *, steps: int | None = None) -> SimConfig:
        """``base`` (default :class:`SimConfig`) with this regime's data-set size and run length
        (``steps`` instead of the regime's, e.g. for a short trial)."""
        length = self.steps if steps is None else steps
        return dataclasses.replace(base or SimConfig(), num_prompts=self.num_prompts, steps=length)

    def epochs(self, base: SimConfig | None = None) -> float:
        """Passes over the data of a rule that uses M prompts per step (uniform)."""
        cfg = self.config(base)
        return cfg.steps * cfg.prompts_per_step / cfg.num_prompts


REGIMES: Registry[Regime] = Registry("regime", "training regime")
for _regime in (
    Regime("many-epochs", "10k prompts, 500 steps: 12.8 epochs (the paper's setting, ~15 epochs)", 10_000),
    Regime("few-epochs", "100k prompts, 500 steps: 1.28 epochs (a large data set, one or two passes)", 100_000),
    Regime("single-pass", "400k prompts, 500 steps: 0.32 epochs (no prompt is seen twice)", 400_000),
):
    REGIMES.add(_regime.name, _regime)


def regime_names() -> list[str]:
    """Names of the registered regimes, sorted."""
    return REGIMES.names()


def run_regime(
    name: str,
    rules: Sequence[str],
    seeds: Sequence[int],
    *,
    base: SimConfig | None = None,
    steps: int | None = None,
    progress: bool = False,
) -> tuple[SimConfig, dict[str, list[RunTrace]]]:
    """Every rule on every seed in regime ``name`` (paired: the same worlds and streams for every rule)."""
    config = REGIMES.get(name).config(base, steps=steps)
    logger.debug("regime %s: %s", name, config)
    return config, run_rules(config, rules, seeds, progress=progress)


def regime_table(name: str, config: SimConfig, traces: dict[str, list[RunTrace]], *, baseline: str = "uniform") -> str:
    """The Markdown section of one regime: a title line and the paired comparison against ``baseline``."""
    regime = REGIMES.get(name)
    rows = compare(
        traces,
        budget=config.total_rollouts,
        step_budget=config.budget,
        num_prompts=config.num_prompts,
        baseline=baseline,
    )
    seeds = len(next(iter(traces.values())))
    title = (
        f"### {name}: {regime.description}\n\n{config.num_prompts} training / {config.num_heldout} held-out prompts, "
        f"init={config.init}, M={config.prompts_per_step}, N={config.n}, {config.total_rollouts / 1e6:.3f}M rollouts "
        f"per run, {seeds} paired seeds; success at equal rollouts; speed-up = {baseline}'s rollouts to its own "
        f"final training success over the rule's (paired per seed); Δ = rule - {baseline} on the same seed.\n"
    )
    return title + "\n" + format_comparison(rows, baseline=baseline) + "\n"


def run_regimes(
    names: Sequence[str],
    rules: Sequence[str],
    seeds: Sequence[int],
    *,
    base: SimConfig | None = None,
    steps: int | None = None,
    baseline: str = "uniform",
    progress: bool = False,
) -> dict[str, str]:
    """One table per regime (Markdown), every rule at equal rollouts over paired seeds."""
    if baseline not in rules:
        raise ValueError(f"baseline={baseline!r} must be one of the rules {list(rules)}")
    for name in names:
        REGIMES.get(name)  # fail fast on unknown names
    tables = {}
    for name in names:
        config, traces = run_regime(name, rules, seeds, base=base, steps=steps, progress=progress)
        tables[name] = regime_table(name, config, traces, baseline=baseline)
    return tables
