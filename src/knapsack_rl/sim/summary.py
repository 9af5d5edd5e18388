"""Per-rule summaries over seeds: means, 95% confidence intervals and a Markdown table.

Metrics (per run, then mean and CI over seeds):

- ``eff_ratio``: effective gradient ratio, ``sum_t effective_t / sum_t spend_t`` (rollouts in groups
  with signal that were trained on, over every rollout generated);
- ``train_final`` / ``heldout_final``: mean true success rate after the last step;
- ``train_at_ref``: training success when the rule had spent as many rollouts as the reference
  (baseline) run in total (linear interpolation on the cumulative spend; NaN if it never got there);
- ``rollouts_to_target``: rollouts generated until the training success first reached the target
  (interpolated; NaN if never; the target is per seed, see :func:`summarize`); ``speedup``: the
  baseline's rollouts_to_target over the rule's on the same seed (NaN when either never got there);
- ``budget_max``: the largest count one prompt got in any step; ``spend``: rollouts generated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.report.stats import Stat, arm_stats, first_crossing, render_table, value_at
from knapsack_rl.sim.run import RunTrace

CAVEAT = (
    "This is a model of GRPO learning (a logistic skill model with Bernoulli rewards), not a language model: "
    "its rankings are hypotheses to check, not predictions. Calibration against the reference trainer "
    "(docs/evidence.md, 'Simulator against trainer'): with the default update (--loss-norm trained, a token mean) "
    "it gives the recipe 1.72x and point-estimate knapsack 1.83x uniform's speed, where the trainer measured "
    "both hurting (held-out AUC -0.6 ± 0.5; training AUC -5.0 ± 2.6); with --loss-norm group, the trainer's "
    "weighting, it agrees with the trainer. Pilot-Commit, first here under the default update, lost 22.0 ± 3.4 "
    "points of held-out AUC in the trainer. Check a rule with `knapsack-rl compare` before trusting it."
)
"""What the simulator is and how far its rankings held in the reference trainer; printed by ``simulate`` and
stored with its results (the numbers are the evidence page's)."""

METRICS = ("eff_ratio", "train_final", "heldout_final", "train_at_ref", "rollouts_to_target", "speedup", "budget_max")


@dataclass(frozen=True)
class RuleSummary:
    """Summary of one rule over seeds; ``stats`` maps each name in :data:`METRICS` to a :class:`Stat`."""

    rule: str
    stats: dict[str, Stat]
    spend: float


def _levels(
    traces: Mapping[str, list[RunTrace]], target: float | None, target_from: str | None, baseline: str
) -> dict[int, float]:
    """Target success per seed: ``target``; else the final success of ``target_from`` (default the baseline)
    on the same seed; else (neither present) the lowest final success of any rule."""
    seeds = {t.seed for runs in traces.values() for t in runs}
    if target is not None:
        return dict.fromkeys(seeds, float(target))
    source = target_from or baseline
    if source in traces:
        return {t.seed: float(t.train_success[-1]) for t in traces[source]}
    low = min(float(t.train_success[-1]) for runs in traces.values() for t in runs)
    return dict.fromkeys(seeds, low)


def summarize(
    traces: Mapping[str, list[RunTrace]],
    *,
    target: float | None = None,
    target_from: str | None = None,
    baseline: str = "uniform",
) -> tuple[list[RuleSummary], float]:
    """One :class:`RuleSummary` per rule and the mean target level.

    The target of ``rollouts_to_target`` is per seed (paired runs): ``target`` if given, else the final
    training success of rule ``target_from`` on that seed (default: the baseline's). ``speedup`` is the
    baseline's rollouts to the target over the rule's, on the same seed.
    """
    levels = _levels(traces, target, target_from, baseline)
    base = {t.seed: t for t in traces.get(baseline, [])}
    per_seed: dict[str, list[dict[str, float]]] = {}
    for rule, runs in traces.items():
        per: dict[str, list[float]] = {k: [] for k in METRICS}
        for tr in runs:
            x = tr.cumulative_spend.astype(np.float64)
            ref = base.get(tr.seed)
            ref_spend = float(ref.spend.sum()) if ref is not None else float(x[-1])
            hit = first_crossing(x, tr.train_success, levels[tr.seed])
            base_hit = (
                first_crossing(ref.cumulative_spend.astype(float), ref.train_success, levels[tr.seed])
                if ref is not None
                else math.nan
            )
            per["eff_ratio"].append(float(tr.effective.sum() / max(tr.spend.sum(), 1)))
            per["train_final"].append(float(tr.train_success[-1]))
            per["heldout_final"].append(float(tr.heldout_success[-1]))
            per["train_at_ref"].append(value_at(x, tr.train_success, ref_spend))
            per["rollouts_to_target"].append(hit)
            per["speedup"].append(base_hit / hit if hit > 0 else math.nan)
            per["budget_max"].append(float(tr.budget_max.max()))
        per_seed[rule] = [dict(zip(per, values, strict=True)) for values in zip(*per.values(), strict=True)]
    stats = arm_stats(per_seed)
    out = [
        RuleSummary(rule, {k: stats[rule].means[k] for k in METRICS}, float(np.mean([t.spend.sum() for t in runs])))
        for rule, runs in traces.items()
    ]
    return out, float(np.mean(list(levels.values())))


def format_table(summaries: Sequence[RuleSummary], target: float, baseline: str = "uniform") -> str:
    """A Markdown table of the summaries (mean ± 95% CI over seeds)."""
    head = ["rule", "eff. grad ratio", "train success (final)", "held-out (final)", "train @ baseline's rollouts",
            f"rollouts to target {target:.3f} (M)", f"speed-up vs {baseline}", "max budget",
            "rollouts (M)"]  # fmt: skip
    rows = [head]
    for s in summaries:
        st = s.stats
        rows.append([s.rule, st["eff_ratio"].fmt(), st["train_final"].fmt(), st["heldout_final"].fmt(),
                     st["train_at_ref"].fmt(), st["rollouts_to_target"].fmt(3, 1e-6), st["speedup"].fmt(2),
                     st["budget_max"].fmt(0), f"{s.spend / 1e6:.3f}"])  # fmt: skip
    return render_table(rows, markdown=True)


# ----------------------------------------------------------------------------- paired comparison
COMPARE = (
    "speedup",
    "train",
    "d_train",
    "heldout",
    "d_heldout",
    "eff_ratio",
    "signal",
    "passes",
    "budget_max",
    "steps",
)


@dataclass(frozen=True)
class Comparison:
    """One rule against the baseline at equal rollouts, over paired seeds.

    ``stats`` maps each name of :data:`COMPARE` to a :class:`Stat` (mean and 95% CI over seeds):

    - ``speedup``: the baseline's rollouts to reach its own final training success over the rule's
      rollouts to reach it, per seed (seeds where the rule never gets there are left out: ``reached``);
    - ``train`` / ``heldout``: mean true success after ``budget`` rollouts (interpolated; a run that
      ended earlier because its rule had no data left keeps its last value), and
      ``d_train`` / ``d_heldout`` the paired differences rule - baseline on the same seed;
    - ``eff_ratio``: rollouts trained on in groups with signal / rollouts generated;
    - ``signal``: prompts with signal trained on per B rollouts generated;
    - ``passes``: prompts drawn from the stream / training prompts (1 = one pass over the data);
    - ``budget_max``: most rollouts one prompt got in one step; ``steps``: steps taken.
    """

    rule: str
    stats: dict[str, Stat]
    reached: int
    seeds: int


def compare(
    traces: Mapping[str, list[RunTrace]], *, budget: int, step_budget: int, num_prompts: int, baseline: str = "uniform"
) -> list[Comparison]:
    """Every rule against ``baseline`` on the same seeds, at ``budget`` rollouts (see :class:`Comparison`)."""
    if baseline not in traces:
        raise ValueError(f"baseline={baseline!r} is not among the rules run: {sorted(traces)}")
    base = {t.seed: t for t in traces[baseline]}
    per_seed = {rule: [_at_budget(tr, base[tr.seed], budget, step_budget, num_prompts) for tr in runs]
                for rule, runs in traces.items()}  # fmt: skip
    stats = arm_stats(per_seed, baseline)  # means, and the paired train / held-out differences
    out = []
    for rule, runs in traces.items():
        st = dict(stats[rule].means) | {
            "d_train": stats[rule].diffs["train"],
            "d_heldout": stats[rule].diffs["heldout"],
        }
        reached = sum(math.isfinite(row["speedup"]) for row in per_seed[rule])
        out.append(Comparison(rule, st, reached, len(runs)))
    return out


def _at_budget(tr: RunTrace, ref: RunTrace, budget: int, step_budget: int, num_prompts: int) -> dict[str, float]:
    """One seed's values of :class:`Comparison` (but the paired differences), against the baseline's run."""
    x, x_ref = tr.cumulative_spend.astype(np.float64), ref.cumulative_spend.astype(np.float64)
    level = _at(x_ref, ref.train_success, budget)  # the baseline's final success
    hit = first_crossing(x, tr.train_success, level)
    spend = float(tr.spend.sum())
    return {
        "speedup": first_crossing(x_ref, ref.train_success, level) / hit if hit > 0 else math.nan,
        "train": _at(x, tr.train_success, budget),
        "heldout": _at(x, tr.heldout_success, budget),
        "eff_ratio": float(tr.effective.sum()) / spend,
        "signal": float(tr.signal_prompts.sum()) * step_budget / spend,
        "passes": tr.prompts_drawn / num_prompts,
        "budget_max": float(tr.budget_max.max()),
        "steps": float(tr.spend.size),
    }


def _at(x: NDArray[np.float64], y: NDArray[np.float64], budget: float) -> float:
    """y at ``budget`` rollouts; a run that ended before (its data used up) keeps its last value."""
    return float(y[-1]) if budget > x[-1] else value_at(x, y, budget)


def format_comparison(rows: Sequence[Comparison], *, baseline: str = "uniform") -> str:
    """A Markdown table of :func:`compare` rows (mean ± 95% CI over paired seeds)."""
    head = [
        "rule", f"speed-up vs {baseline}", "reached", "train success", "Δ train", "held-out success", "Δ held-out",
        "eff. grad ratio", "prompts with signal / B", "passes over data", "max budget", "steps",
    ]  # fmt: skip
    table = [head]
    for r in rows:
        st = r.stats
        table.append([r.rule, st["speedup"].fmt(2), f"{r.reached}/{r.seeds}", st["train"].fmt(), st["d_train"].fmt(),
                      st["heldout"].fmt(), st["d_heldout"].fmt(), st["eff_ratio"].fmt(), st["signal"].fmt(1),
                      st["passes"].fmt(2), st["budget_max"].fmt(0), st["steps"].fmt(0)])  # fmt: skip
    return render_table(table, markdown=True)
