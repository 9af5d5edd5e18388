"""Tables and PNG plots of run logs (metrics.jsonl, allocations.jsonl) for the two-arm comparison."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (empty list when missing)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that have ``key`` with a non-null value."""
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts, strict=True)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def plot_comparison(runs: Mapping[str, Sequence[Path]], out_dir: Path, *, eval_key: str) -> list[Path]:
    """Write the three PNGs of a comparison; ``runs`` maps arm name -> run directories (one per seed).

    - ``effective_grad_ratio.png``: effective gradient ratio over steps, mean over seeds, per arm;
    - ``heldout_accuracy.png``: held-out ``eval_key`` over steps, mean over seeds, per arm;
    - ``budget_vs_p.png``: budget against estimated p of every (prompt, step) of the knapsack arm.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, name, ylabel in (
        ("train/effective_grad_ratio", "effective_grad_ratio.png", "effective gradient ratio"),
        (eval_key, "heldout_accuracy.png", f"held-out {eval_key.split('/')[-1]}"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, dirs in runs.items():
            steps, mean = _mean_over_seeds([read_jsonl(d / "metrics.jsonl") for d in dirs], key)
            if steps.size:
                ax.plot(steps, mean, label=arm)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    if "knapsack" in runs:
        written.append(_plot_budget_vs_p(runs["knapsack"], out_dir / "budget_vs_p.png", plt))
    return written


def _mean_over_seeds(logs: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray]:
    curves = [series(rows, key) for rows in logs]
    curves = [c for c in curves if c[0].size]
    if not curves:
        return np.zeros(0), np.zeros(0)
    length = min(c[0].size for c in curves)
    return curves[0][0][:length], np.mean([c[1][:length] for c in curves], axis=0)


def _plot_budget_vs_p(dirs: Sequence[Path], path: Path, plt: Any) -> Path:
    p_all, b_all = [], []
    for d in dirs:
        for row in read_jsonl(d / "allocations.jsonl"):
            for p, b in zip(row["p_hat"], row["budget"], strict=True):
                if p is not None:
                    p_all.append(p)
                    b_all.append(b)
    fig, ax = plt.subplots(figsize=(6, 4))
    if p_all:
        jitter = np.random.default_rng(0).uniform(-0.006, 0.006, len(p_all))
        ax.scatter(np.asarray(p_all) + jitter, b_all, s=6, alpha=0.3)
    ax.set_xlabel("estimated success rate p")
    ax.set_ylabel("rollouts given (budget)")
    ax.set_title("knapsack arm: budget vs estimated p")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarize_run(run_dir: Path) -> dict[str, float]:
    """Headline numbers of one run from its logs.

    ``egr`` mean effective gradient ratio over the steps where estimates drove allocation (epoch >=
    2), ``egr_all`` over all steps, ``final/<eval key>`` the last evaluation, ``rollouts`` total,
    ``budget_max`` the largest budget any prompt got, ``wall_s`` from ``summary.json`` when present.
    """
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in rows if "train/effective_grad_ratio" in r]
    late = [r for r in train if r.get("train/epoch", 1) >= 2] or train
    out: dict[str, float] = {
        "egr": float(np.mean([r["train/effective_grad_ratio"] for r in late])) if late else float("nan"),
        "egr_all": float(np.mean([r["train/effective_grad_ratio"] for r in train])) if train else float("nan"),
        "rollouts": float(train[-1]["train/rollouts_total"]) if train else 0.0,
        "budget_max": float(max((r["alloc/budget_max"] for r in train), default=0)),
    }
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        out.update({f"final/{k}": v for k, v in evals[-1].items() if k.startswith("eval/") and v is not None})
        out.update({f"start/{k}": v for k, v in evals[0].items() if k.startswith("eval/") and v is not None})
    summary = run_dir / "summary.json"
    if summary.exists():
        out["wall_s"] = float(json.loads(summary.read_text())["wall_s"])
    return out
