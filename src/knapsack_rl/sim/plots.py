"""PNG plots of simulator runs (matplotlib, imported lazily by the callers)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.report.plots import save_figure
from knapsack_rl.report.stats import mean_ci
from knapsack_rl.sim.run import RunTrace


def _band(grid: NDArray[np.float64], curves: list[NDArray[np.float64]]) -> tuple[NDArray[np.float64], ...]:
    """Pointwise mean and 95% CI band of curves sampled on ``grid`` (NaN where a run has not reached it)."""
    ys = np.array(curves)  # (seeds, G)
    stats = [mean_ci(ys[:, k]) for k in range(grid.size)]
    mean = np.array([s.mean for s in stats])
    half = np.array([s.half for s in stats])
    return mean, mean - half, mean + half


def plot_curves(traces: Mapping[str, list[RunTrace]], path: Path, *, title: str = "") -> Path:
    """Training / held-out success against rollouts generated and effective gradient ratio against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x_max = max(float(t.cumulative_spend[-1]) for runs in traces.values() for t in runs)
    grid = np.linspace(0.0, x_max, 200)
    for rule, runs in traces.items():
        for ax, attr in ((axes[0], "train_success"), (axes[1], "heldout_success")):
            curves = [np.interp(grid, t.cumulative_spend, getattr(t, attr), right=np.nan) for t in runs]
            mean, lo, hi = _band(grid, curves)  # NaN beyond a run's end
            (line,) = ax.plot(grid / 1e6, mean, label=rule, lw=1.3)
            ax.fill_between(grid / 1e6, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        k = 10  # moving average over k steps
        eff = [np.convolve(t.effective_ratio, np.ones(k) / k, mode="valid") for t in runs]
        common = min(e.size for e in eff)  # runs of a rule may take different numbers of steps
        eff = [e[:common] for e in eff]
        steps = np.arange(common) + k
        mean, lo, hi = _band(steps.astype(float), eff)
        (line,) = axes[2].plot(steps, mean, label=rule, lw=1.3)
        axes[2].fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    axes[0].set(xlabel="rollouts generated (M)", ylabel="mean true success", title="training prompts")
    axes[1].set(xlabel="rollouts generated (M)", ylabel="mean true success", title="held-out prompts")
    axes[2].set(xlabel="step", ylabel="effective gradient ratio", title="signal per rollout (10-step mean)")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=72)  # rendered in memory, written atomically
    plt.close(fig)
    return path


def plot_budgets(traces: Mapping[str, list[RunTrace]], path: Path) -> Path | None:
    """Rollouts given against the prompt's true p (first seed, every snapshot step), one panel per rule
    whose counts vary within a step (uniform-count rules such as uniform, dapo, greso are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = [r for r, runs in traces.items() if any(s[2].min() != s[2].max() for s in runs[0].snapshots)]
    if not rules:
        return None
    fig, axes = plt.subplots(1, len(rules), figsize=(4.2 * len(rules), 3.4), squeeze=False, sharey=True)
    bins = np.linspace(0, 1, 21)
    for ax, rule in zip(axes[0], rules, strict=True):
        snaps = traces[rule][0].snapshots
        p = np.concatenate([s[1] for s in snaps])
        b = np.concatenate([s[2] for s in snaps])
        ax.scatter(p, b, s=2, alpha=0.15, color="tab:blue", rasterized=True)
        which = np.digitize(p, bins[1:-1])
        mean = [b[which == k].mean() if np.any(which == k) else np.nan for k in range(bins.size - 1)]
        ax.plot((bins[:-1] + bins[1:]) / 2, mean, color="tab:red", lw=1.5, label="mean per p bin")
        ax.set(xlabel="true success rate p at the step", title=rule, yscale="log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("rollouts given")
    fig.tight_layout()
    save_figure(fig, path, dpi=72)
    plt.close(fig)
    return path
