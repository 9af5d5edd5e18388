"""PNG plots of a comparison of arms, from run logs (matplotlib is imported only here, lazily).

Every figure is rendered in memory and written with :func:`knapsack_rl.io.atomic_write_bytes`
(:func:`save_figure`): a reader sees the old plot or the new one, never half a PNG.

Every plot has a title, one line per arm (mean over seeds) with a band of +- one standard deviation
over seeds, and a dashed vertical line where allocation starts (the first step of epoch
``uniform_epochs``: before it every arm gives every prompt n rollouts).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knapsack_rl.io import atomic_write_bytes
from knapsack_rl.report.summary import read_jsonl, series, smooth

logger = logging.getLogger(__name__)

CURVES = (
    ("heldout_accuracy.png", None, "held-out accuracy (mean@k)", "Held-out accuracy"),
    ("effective_prompts.png", "train/effective_prompts", "prompts with signal per step", "Prompts with signal"),
    ("effective_grad_ratio.png", "train/effective_grad_ratio", "effective gradient ratio", "Effective gradient ratio"),
)


def plot_comparison(
    runs: Mapping[str, Sequence[Path]], out_dir: Path, *, eval_key: str, alloc_start: int | None, title: str = ""
) -> list[Path]:
    """Write the comparison's PNGs into ``out_dir``; ``runs`` maps arm -> run directories (one per seed).

    ``alloc_start`` is the step where allocation starts (None: no marker). Returns the files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    logs = {arm: [read_jsonl(d / "metrics.jsonl") for d in dirs] for arm, dirs in runs.items()}
    written = []
    for name, key, ylabel, heading in CURVES:
        metric = key or eval_key
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for arm, arm_logs in logs.items():
            steps, mean, sd = _band([series(rows, metric) for rows in arm_logs], smoothing=key is not None)
            if steps.size:
                (line,) = ax.plot(steps, mean, label=f"{arm} ({len(arm_logs)} seeds)")
                ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
        if alloc_start is not None:
            ax.axvline(alloc_start, color="grey", linestyle="--", linewidth=1, label="allocation starts")
        ax.set(xlabel="training step", ylabel=ylabel, title=f"{heading}{f': {title}' if title else ''}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    for arm, dirs in runs.items():
        if arm != "uniform":
            written.append(_plot_budget_vs_p(dirs, out_dir / f"budget_vs_p_{arm}.png", arm, plt))
    return written


def _band(curves: list[tuple[np.ndarray, np.ndarray]], *, smoothing: bool) -> tuple[np.ndarray, ...]:
    """Steps, mean and standard deviation over seeds (per-step metrics smoothed over 5 steps)."""
    curves = [c for c in curves if c[0].size]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    length = min(c[0].size for c in curves)
    values = np.asarray([smooth(c[1][:length], 5) if smoothing else c[1][:length] for c in curves])
    sd = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(length)
    return curves[0][0][:length], values.mean(axis=0), sd


def _plot_budget_vs_p(dirs: Sequence[Path], path: Path, arm: str, plt: Any) -> Path:
    p_all, b_all = [], []
    for d in dirs:
        for row in read_jsonl(d / "allocations.jsonl"):
            for p, b in zip(row["p_hat"], row["budget"], strict=True):
                if p is not None:
                    p_all.append(p)
                    b_all.append(b)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if p_all:
        jitter = np.random.default_rng(0).uniform(-0.006, 0.006, len(p_all))
        ax.scatter(np.asarray(p_all) + jitter, b_all, s=6, alpha=0.3)
    ax.set(xlabel="estimated success rate p", ylabel="rollouts given (budget)", title=f"Budget vs estimate: {arm}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def save_figure(fig: Any, path: Path, *, dpi: int) -> Path:
    """Render the matplotlib figure ``fig`` in memory (format from the suffix, default PNG) and write it
    to ``path`` atomically; returns ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ------------------------------------------------------------------ knapsack-rl report: any engine's runs
AXES = (
    ("train/rollouts_total", "heldout_vs_rollouts.png", "rollouts generated", "rollouts"),
    ("train/tokens_total", "heldout_vs_tokens.png", "response tokens generated", "generated tokens"),
    ("train/wall_s", "heldout_vs_wall.png", "training wall-clock (s)", "wall-clock"),
)
"""The x axes of :func:`plot_axes`: the running sums of the canonical rows (:mod:`knapsack_rl.report.names`)."""


def plot_axes(
    logs: Mapping[str, Sequence[list[dict[str, Any]]]], out_dir: Path, *, eval_key: str, title: str = ""
) -> tuple[list[Path], list[str]]:
    """Held-out accuracy (%) against rollouts, generated tokens and training wall-clock: per arm, every seed's
    curve (thin) and their mean with a 95% CI band over seeds on the range all seeds cover.

    ``logs`` maps arm -> per-seed canonical rows. Returns the files written and one line per axis not drawn
    (no run logged it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for xkey, name, xlabel, short in AXES:
        curves = {arm: [_curve(rows, xkey, eval_key) for rows in arm_logs] for arm, arm_logs in logs.items()}
        if not any(c[0].size for cs in curves.values() for c in cs):
            skipped.append(f"{name} not drawn: no run logged {xkey} with {eval_key}")
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for arm, arm_curves in curves.items():
            _draw_arm(ax, arm, [c for c in arm_curves if c[0].size])
        ax.set(xlabel=xlabel, ylabel=f"held-out accuracy (%), {eval_key}")
        ax.set_title(f"Held-out accuracy by {short}" + (f"\n{title}" if title else ""), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(save_figure(fig, out_dir / name, dpi=110))
        plt.close(fig)
    return written, skipped


def _curve(rows: list[dict[str, Any]], xkey: str, ykey: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, 100 y) at each evaluation, x being the latest ``xkey`` at or before its step (0 before the first
    step); empty when the run never logged ``xkey``."""
    if not any(r.get(xkey) is not None for r in rows):
        return np.zeros(0), np.zeros(0)
    last, pts = 0.0, []
    for r in rows:  # sorted by step
        if r.get(xkey) is not None:
            last = float(r[xkey])
        if r.get(ykey) is not None:
            pts.append((last, 100.0 * float(r[ykey])))
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*pts, strict=True)
    return np.asarray(xs), np.asarray(ys)


def _draw_arm(ax: Any, arm: str, curves: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Every seed thin; the mean over seeds with a 95% CI band where every seed has a value."""
    from knapsack_rl.report.stats import mean_ci

    if not curves:
        return
    lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
    (line,) = ax.plot([], [], label=f"{arm} (mean of {len(curves)} seeds, band: 95% CI)")
    for x, y in curves:
        ax.plot(x, y, color=line.get_color(), alpha=0.3, linewidth=0.8)
    if hi <= lo:
        return
    grid = np.linspace(lo, hi, 60)
    stats = [mean_ci([float(np.interp(g, x, y)) for x, y in curves]) for g in grid]
    mean = np.array([s.mean for s in stats])
    half = np.array([s.half if s.n > 1 else 0.0 for s in stats])
    line.set_data(grid, mean)
    ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_allocation(
    logs: Mapping[str, Sequence[list[dict[str, Any]]]],
    allocations: Mapping[str, Sequence[list[dict[str, Any]]]],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """The allocation diagnostics in one figure of three panels, per arm (all seeds together):

    1. the allocated counts: a histogram of every prompt's count where the run logs its allocations
       (``allocations``: rows with a ``budget`` list), else the range of ``alloc/budget_min`` ..
       ``alloc/budget_max`` per step with ``alloc/budget_mean``;
    2. the fraction of groups with mixed rewards (``train/effective_prompt_ratio``) against rollouts;
    3. the solver's latency (``alloc/solve_s``, in ms) against rollouts (0 for rules without a solver).

    A panel says so where no run logged what it needs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    if any(rows for seeds in allocations.values() for rows in seeds):
        _counts_histogram(axes[0], allocations)
    else:
        _counts_range(axes[0], logs)
    for ax, key, scale, label in (
        (axes[1], "train/effective_prompt_ratio", 100.0, "groups with mixed rewards (%)"),
        (axes[2], "alloc/solve_s", 1e3, "allocation solve time (ms)"),
    ):
        drawn = False
        for arm, arm_logs in logs.items():
            pts = [(r["train/rollouts_total"], scale * r[key]) for rows in arm_logs for r in rows
                   if r.get(key) is not None and r.get("train/rollouts_total") is not None]  # fmt: skip
            if pts:
                xs, ys = zip(*sorted(pts), strict=True)
                ax.plot(xs, ys, ".", markersize=3, alpha=0.6, label=arm)
                drawn = True
        ax.set(xlabel="rollouts generated", ylabel=label, title=label[0].upper() + label[1:])
        _say_if_empty(ax, drawn, key)
    axes[0].set_title("Allocated counts")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _counts_histogram(ax: Any, allocations: Mapping[str, Sequence[list[dict[str, Any]]]]) -> None:
    counts = {arm: [b for rs in seeds for r in rs for b in r.get("budget", [])] for arm, seeds in allocations.items()}
    top = max((max(c) for c in counts.values() if c), default=1)
    bins = np.arange(0, top + 2) - 0.5
    for arm, c in counts.items():
        if c:
            ax.hist(c, bins=bins, histtype="step", density=True, label=f"{arm} ({len(c)} prompt-steps)")
    ax.set(xlabel="rollouts given to a prompt", ylabel="share of prompt-steps")
    ax.legend(fontsize=8)


def _counts_range(ax: Any, logs: Mapping[str, Sequence[list[dict[str, Any]]]]) -> None:
    drawn = False
    for arm, arm_logs in logs.items():
        keys = ("alloc/budget_mean", "train/rollouts_total")
        rows = [r for rs in arm_logs for r in rs if all(r.get(k) is not None for k in keys)]
        rows.sort(key=lambda r: r["train/rollouts_total"])
        if not rows:
            continue
        x = [r["train/rollouts_total"] for r in rows]
        (line,) = ax.plot(x, [r["alloc/budget_mean"] for r in rows], ".", markersize=3, label=f"{arm}: mean")
        lo = [r.get("alloc/budget_min", r["alloc/budget_mean"]) for r in rows]
        hi = [r.get("alloc/budget_max", r["alloc/budget_mean"]) for r in rows]
        ax.vlines(x, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0.8)
        drawn = True
    ax.set(xlabel="rollouts generated", ylabel="rollouts given to a prompt (min..max, mean)")
    _say_if_empty(ax, drawn, "alloc/budget_mean")


def _say_if_empty(ax: Any, drawn: bool, key: str) -> None:
    if drawn:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, f"no run logged {key}", ha="center", va="center", transform=ax.transAxes)
