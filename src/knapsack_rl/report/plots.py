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
