"""Summaries of training runs and the paired comparison of arms (NumPy only).

Per run (:func:`summarize_rows`, from its per-step rows of the canonical names of
:mod:`knapsack_rl.report.names`, whatever engine wrote them; :func:`summarize_run` for a run folder of the
reference trainer; ``compare`` and ``report`` both summarise through it):

- ``auc``: held-out AUC, the primary metric: the mean held-out accuracy over the run, i.e. the
  trapezoidal integral of ``eval/avg@k`` over rollouts generated, divided by the rollouts of the run
  (an arm that gets there sooner scores higher at the same final accuracy; on the axis of compute, so
  rules that spend a step's budget differently, e.g. DAPO, are compared at equal rollouts);
- ``final``, ``start``: the last and the first evaluation; ``final/<level>`` per level;
- ``effective_prompts``: mean over the allocating steps (epoch >= ``uniform_epochs``) of the number of
  prompts per step whose group has reward variance (the prompts that move the policy);
  ``effective_prompts_first``: the same over the first allocating epoch only (what preflight predicts);
- ``train_auc``: the AUC of ``train_eval/avg@k`` (accuracy on a fixed subset of *training* prompts),
  the signal settings are chosen on, when the run evaluated it;
- ``egr``: mean effective gradient ratio over the same steps; ``egr_all`` over every step;
- ``grad_clipped``: fraction of updates whose gradient norm was clipped;
- ``gen_tokens``: response tokens generated over the run (trained on or not), the sum over steps of
  ``train/tokens_generated`` (the engine's mean response length x ``train/rollouts_generated``);
- ``rollouts``, ``budget_max``, ``wall_s`` (as the engine records it).

A number the logs cannot give is NaN (left out of the means over seeds, and named by ``report``), never 0.

Across seeds (:func:`compare_arms`): each arm's mean, and the paired difference ``arm - baseline``
with a 95% CI (same seed, same data order). ``rollouts_ratio`` is the paired "rollouts to target"
ratio: the target is the arm's smoothed final accuracy; the baseline's and the arm's rollouts to first
reach it on their smoothed curves are compared (``baseline / arm``; when the baseline never reaches it,
the ratio is a lower bound, reported with ``>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.report.names import canonical_metric
from knapsack_rl.report.runs import Run, load_run
from knapsack_rl.report.runs import read_jsonl as read_jsonl  # re-exported: the plots read logs through it
from knapsack_rl.report.stats import Stat, arm_stats, first_crossing, mean_ci, render_table

SMOOTH = 3
"""Evaluations averaged (running mean) before reading a curve's final value or its crossing of a target."""


def series(rows: list[dict[str, Any]], key: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(steps, values) of the rows that have ``key`` with a non-null value."""
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts, strict=True)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def spent_series(rows: list[dict[str, Any]], key: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(rollouts generated so far, values) of ``key``: curves on the axis of compute (0 at the start)."""
    spent = {r["step"]: r["train/rollouts_total"] for r in rows if r.get("train/rollouts_total") is not None}
    pts = [(float(spent.get(r["step"], 0.0)), float(r[key])) for r in rows if r.get(key) is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*pts, strict=True)
    return np.asarray(x), np.asarray(y)


def smooth(values: NDArray[np.float64], width: int = SMOOTH) -> NDArray[np.float64]:
    """Trailing running mean over ``width`` points (fewer at the start)."""
    c = np.cumsum(np.r_[0.0, values])
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - width, 0)
    out: NDArray[np.float64] = (c[idx] - c[lo]) / (idx - lo)
    return out


def auc(steps: NDArray[np.float64], values: NDArray[np.float64]) -> float:
    """Mean of a curve over its x range (steps or rollouts): trapezoidal integral / (last x - first x)."""
    if steps.size < 2 or steps[-1] <= steps[0]:
        return float(values[-1]) if values.size else math.nan
    area = float(np.sum((values[1:] + values[:-1]) * np.diff(steps)) / 2.0)  # trapezoidal rule
    return area / float(steps[-1] - steps[0])


def summarize_run(run_dir: Path, *, eval_key: str, uniform_epochs: int = 1) -> dict[str, float]:
    """Headline numbers of one reference-trainer run (:func:`summarize_rows` of its rows)."""
    run = load_run(run_dir, "knapsack-rl")
    return summarize_rows(run.rows, eval_key=eval_key, uniform_epochs=uniform_epochs, wall_s=run.wall_s)


def summarize_rows(
    rows: list[dict[str, Any]], *, eval_key: str, uniform_epochs: int = 1, wall_s: float | None = None
) -> dict[str, float]:
    """Headline numbers of one run from its per-step rows of canonical names (see the module docstring;
    :mod:`knapsack_rl.report.names`): the one summary of ``compare`` and ``report``, whatever the engine.
    ``eval_key`` may be an old name (``eval/mean@4`` is ``eval/avg@4``). A number the rows cannot give is
    NaN, never 0."""
    eval_key = canonical_metric(eval_key)
    train = [r for r in rows if r.get("train/rollouts_total") is not None]
    late = [r for r in train if (r.get("train/epoch") or 0) >= uniform_epochs] or train
    budgets = [r["alloc/budget_max"] for r in train if r.get("alloc/budget_max") is not None]
    out: dict[str, float] = {
        "egr": _mean(late, "train/effective_grad_ratio"),
        "egr_all": _mean(train, "train/effective_grad_ratio"),
        "effective_prompts": _mean(late, "train/effective_prompts"),
        "grad_clipped": _mean(train, "actor/grad_clipped"),
        "rollouts": float(train[-1]["train/rollouts_total"]) if train else math.nan,
        "budget_max": float(max(budgets)) if budgets else math.nan,
        "gen_tokens": _generated_tokens(train),
    }
    first = [r for r in train if r.get("train/epoch") == uniform_epochs]  # the first allocating epoch
    out["effective_prompts_first"] = _mean(first, "train/effective_prompts")
    train_key = "train_eval/" + eval_key.removeprefix("eval/")
    t_spent, t_acc = spent_series(rows, train_key)
    if t_spent.size:
        out["train_auc"] = auc(t_spent, t_acc)
    spent, acc = spent_series(rows, eval_key)
    if spent.size:
        out.update(auc=auc(spent, acc), final=float(smooth(acc)[-1]), start=float(acc[0]))
        for key in {k for r in rows for k in r if k.startswith(eval_key + "/")}:
            out[f"final/{key.removeprefix(eval_key + '/')}"] = float(series(rows, key)[1][-1])
    if wall_s is not None:
        out["wall_s"] = float(wall_s)
    return out


def _generated_tokens(train: list[dict[str, Any]]) -> float:
    """Response tokens generated over the logged steps (NaN when a step lacks them)."""
    if not train or any(r.get("train/tokens_generated") is None for r in train):
        return math.nan
    return float(sum(r["train/tokens_generated"] for r in train))


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else math.nan


def rollouts_to_target(rows: list[dict[str, Any]], eval_key: str, target: float) -> float:
    """Rollouts at which the smoothed held-out curve first reaches ``target`` (interpolated; NaN if never)."""
    x, y = spent_series(rows, canonical_metric(eval_key))
    return first_crossing(x, smooth(y), target) if x.size else math.nan


@dataclass(frozen=True)
class ArmComparison:
    """One arm against the baseline over paired seeds."""

    arm: str
    means: dict[str, Stat]
    diffs: dict[str, Stat]
    rollouts_ratio: Stat
    ratio_censored: int


def compare_arms(
    runs: Mapping[str, Sequence[Path]], *, eval_key: str, baseline: str = "uniform", uniform_epochs: int = 1
) -> tuple[dict[str, list[dict[str, float]]], list[ArmComparison]]:
    """Summaries per arm (one per seed, same seed order in every arm) and each arm's paired comparison, of
    reference-trainer run folders (:func:`compare_runs` of the loaded runs)."""
    loaded = {arm: [load_run(d, "knapsack-rl") for d in dirs] for arm, dirs in runs.items()}
    return compare_runs(loaded, eval_key=eval_key, baseline=baseline, uniform_epochs=uniform_epochs)


def compare_runs(
    runs: Mapping[str, Sequence[Run]], *, eval_key: str, baseline: str = "uniform", uniform_epochs: int = 1
) -> tuple[dict[str, list[dict[str, float]]], list[ArmComparison]]:
    """Summaries per arm and each arm's paired comparison, of runs of any engine (seed i of every arm paired)."""
    summaries = {
        arm: [summarize_rows(r.rows, eval_key=eval_key, uniform_epochs=uniform_epochs, wall_s=r.wall_s) for r in rs]
        for arm, rs in runs.items()
    }
    stats = arm_stats(summaries, baseline)
    out = []
    for arm, rows in summaries.items():
        ratios, censored = _rollout_ratios(runs[arm], runs[baseline], rows, eval_key)
        out.append(ArmComparison(arm, stats[arm].means, stats[arm].diffs, mean_ci(ratios), censored))
    return summaries, out


def _rollout_ratios(
    arm_runs: Sequence[Run], base_runs: Sequence[Run], rows: list[dict[str, float]], eval_key: str
) -> tuple[list[float], int]:
    """Per seed: baseline rollouts / arm rollouts to reach the arm's smoothed final accuracy."""
    ratios, censored = [], 0
    for arm_run, base_run, row in zip(arm_runs, base_runs, rows, strict=True):
        target = row.get("final", math.nan)
        mine = rollouts_to_target(arm_run.rows, eval_key, target)
        theirs = rollouts_to_target(base_run.rows, eval_key, target)
        if math.isnan(theirs):  # never reached within the run: the ratio is at least (run length / mine)
            censored += 1
            theirs = row.get("rollouts", math.nan)
        ratios.append(theirs / mine if mine > 0 else math.nan)
    return ratios, censored


ROWS = (
    ("held-out AUC (%) [primary]", "auc", 100.0),
    ("training-set AUC (%) [to choose settings]", "train_auc", 100.0),
    ("held-out accuracy at end (%)", "final", 100.0),
    ("held-out accuracy at start (%)", "start", 100.0),
    ("prompts with signal per step", "effective_prompts", 1.0),
    ("  in the first allocating epoch", "effective_prompts_first", 1.0),
    ("effective gradient ratio (%)", "egr", 100.0),
    ("updates with clipped gradient (%)", "grad_clipped", 100.0),
    ("largest budget of a prompt", "budget_max", 1.0),
    ("generated tokens per run (thousands)", "gen_tokens", 1e-3),
    ("wall time per run (s)", "wall_s", 1.0),
)


def comparison_table(
    comparisons: Sequence[ArmComparison], levels: Sequence[str] = (), baseline: str = "uniform"
) -> str:
    """Two text tables: each arm's ``mean ± 95% CI`` over seeds, then ``arm - baseline`` paired per seed with
    its 95% CI, and the rollouts the baseline needs to reach each arm's final accuracy over the arm's."""
    rows = [*ROWS, *((f"  {lv} at end (%)", f"final/{lv}", 100.0) for lv in levels)]
    rows = [r for r in rows if any(r[1] in c.means and c.means[r[1]].n for c in comparisons)]
    others = [c for c in comparisons if c.arm != baseline]
    means = [["mean ± 95% CI over seeds", *(c.arm for c in comparisons)]]
    means += [[label, *(_cell(c.means.get(key), scale) for c in comparisons)] for label, key, scale in rows]
    if not others:
        return render_table(means)
    diffs = [[f"paired: arm - {baseline}", *(c.arm for c in others)]]
    diffs += [[label, *(_cell(c.diffs.get(key), scale, signed=True) for c in others)] for label, key, scale in rows]
    diffs.append([f"{baseline}'s rollouts to the arm's final accuracy / the arm's",
                  *(_ratio_cell(c) for c in others)])  # fmt: skip
    note = (
        f"(>: a lower bound, {baseline} never reached the arm's final accuracy on some seeds; "
        f"-: undefined, the arm ended no better than it started)"
    )
    return render_table(means) + "\n\n" + render_table(diffs) + "\n" + note


def _ratio_cell(c: ArmComparison) -> str:
    ratio = c.rollouts_ratio
    if ratio.n == 0:
        return "-"
    text = f"{ratio.mean:.2f} ± {ratio.half:.2f}" if ratio.n > 1 else f"{ratio.mean:.2f}"
    return f">{text} ({c.ratio_censored}/{ratio.n})" if c.ratio_censored else text


def _cell(stat: Stat | None, scale: float, *, signed: bool = False) -> str:
    if stat is None or stat.n == 0:
        return "-"
    m, h = stat.mean * scale, stat.half * scale
    digits = 1 if scale != 1.0 or abs(m) < 1000 else 0
    sign = "+" if signed else ""
    return f"{m:{sign}.{digits}f}" if stat.n == 1 else f"{m:{sign}.{digits}f} ± {h:.{digits}f}"


def verdict(comparison: ArmComparison, baseline: str = "uniform") -> str:
    """One plain sentence on the primary metric: helped, hurt, no detectable difference (95% CI), or the
    same AUC on every seed (an arm that made uniform's choices, e.g. knapsack before any estimate)."""
    d = comparison.diffs.get("auc")
    if d is None or d.n == 0:
        return f"{comparison.arm}: no held-out evaluation, no verdict"
    if d.n < 2:
        return (
            f"{comparison.arm} vs {baseline}: held-out AUC {100 * d.mean:+.1f} points on 1 seed: "
            "an anecdote, not a result (run >= 5 paired seeds)"
        )
    if d.mean == 0.0 and d.half == 0.0:  # e.g. knapsack in a single pass: no prompt has an estimate
        return f"{comparison.arm} vs {baseline}: SAME held-out AUC on every one of {d.n} paired seeds"
    lo, hi = 100 * (d.mean - d.half), 100 * (d.mean + d.half)
    what = f"held-out AUC {100 * d.mean:+.1f} points (95% CI {lo:+.1f} to {hi:+.1f}) over {d.n} paired seeds"
    if lo > 0:
        return f"{comparison.arm} HELPED against {baseline}: {what}"
    if hi < 0:
        return f"{comparison.arm} HURT against {baseline}: {what}"
    return f"{comparison.arm} vs {baseline}: NO DETECTABLE DIFFERENCE: {what}"
