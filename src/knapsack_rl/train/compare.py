"""Both arms (uniform and knapsack) from the same warm start and seeds, with the same total rollouts."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knapsack_rl.core.tracker import atomic_write_bytes
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.tasks.arithmetic import ArithmeticConfig
from knapsack_rl.train.config import TrainConfig

logger = logging.getLogger(__name__)

ARMS = ("uniform", "knapsack")


@dataclass(frozen=True)
class CompareResult:
    """Run directories per arm (one per seed) and each run's summary."""

    out_dir: Path
    runs: dict[str, list[Path]]
    summaries: dict[str, list[dict[str, float]]]
    plots: list[Path]


def quick_config(base: TrainConfig) -> TrainConfig:
    """A seconds-long version of ``base`` for tests: tiny suite, short warm start, a few steps."""
    return base.replace(
        task=ArithmeticConfig(train_per_level=(4,) * 8, eval_per_level=2),
        warmstart=WarmStartConfig(steps=20, batch_size=32, profile_samples=4),
        prompts_per_step=8,
        n=4,
        epochs=3,
        eval_every=2,
        eval_k=2,
        checkpoint_every=0,
        tensorboard=False,
    )


def run_compare(base: TrainConfig, out_dir: Path, seeds: list[int]) -> CompareResult:
    """Train both arms for every seed (same warm start, same budget B = M x n per step); plot and summarise."""
    from knapsack_rl.report.plots import plot_comparison, summarize_run
    from knapsack_rl.train.trainer import Trainer

    runs: dict[str, list[Path]] = {arm: [] for arm in ARMS}
    if base.model is None:  # build (or find) the shared warm start first, so arm wall times exclude it
        import torch

        from knapsack_rl.models.warmstart import warm_start
        from knapsack_rl.train.trainer import resolve_device

        if base.threads:
            torch.set_num_threads(base.threads)
        device = str(resolve_device(base.device))
        warm_start(base.warmstart_dir, warm=base.warmstart, model_config=base.tiny_model, task=base.task, device=device)
    for seed in seeds:
        for arm in ARMS:
            run_dir = out_dir / f"seed{seed}" / arm
            cfg = base.replace(arm=arm, seed=seed, out_dir=str(run_dir))
            start = time.perf_counter()
            Trainer(cfg).train()
            wall = time.perf_counter() - start
            atomic_write_bytes(run_dir / "summary.json", json.dumps({"wall_s": wall}).encode())
            runs[arm].append(run_dir)
    summaries = {arm: [summarize_run(d) for d in dirs] for arm, dirs in runs.items()}
    eval_key = f"eval/mean@{base.eval_k}"
    plots = plot_comparison(runs, out_dir, eval_key=eval_key)
    result = CompareResult(out_dir=out_dir, runs=runs, summaries=summaries, plots=plots)
    atomic_write_bytes(out_dir / "summary.json", json.dumps(summaries, indent=1).encode())
    return result


def _fmt(values: list[float], pct: bool = False) -> str:
    """``mean ± sample std`` over seeds (just the value for one seed); percentages when ``pct``; NaN dropped."""
    arr = np.asarray([v for v in values if v == v], dtype=np.float64)
    if arr.size == 0:
        return "-"
    if pct:
        arr = 100.0 * arr
    if arr.size == 1:
        return f"{arr[0]:.1f}" if pct else f"{arr[0]:.0f}"
    return f"{arr.mean():.1f} ± {arr.std(ddof=1):.1f}" if pct else f"{arr.mean():.0f} ± {arr.std(ddof=1):.0f}"


def comparison_table(result: CompareResult, eval_k: int, levels: list[str]) -> str:
    """Side-by-side text table (mean ± std over seeds): effective gradient ratio, held-out accuracy, ..."""
    s = result.summaries

    def row(label: str, key: str, pct: bool = True) -> tuple[str, str, str]:
        u, k = (_fmt([x.get(key, np.nan) for x in s[arm]], pct) for arm in ARMS)
        return label, u, k

    mean = f"eval/mean@{eval_k}"
    rows = [
        row("effective gradient ratio, epoch >= 2 (%)", "egr"),
        row("effective gradient ratio, all steps (%)", "egr_all"),
        row(f"held-out mean@{eval_k} at start (%)", f"start/{mean}"),
        row(f"held-out mean@{eval_k} at end (%)", f"final/{mean}"),
        *(row(f"  level {lv} at end (%)", f"final/{mean}/{lv}") for lv in levels),
        row(f"held-out best@{eval_k} at end (%)", f"final/eval/best@{eval_k}"),
        row("rollouts used", "rollouts", pct=False),
        row("largest budget of a prompt", "budget_max", pct=False),
        row("wall time (s)", "wall_s", pct=False),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'uniform':>16}  {'knapsack':>16}"]
    lines += [f"{name:<{width}}  {u:>16}  {k:>16}" for name, u, k in rows]
    egr_u = np.mean([x["egr"] for x in s["uniform"]])
    egr_k = np.mean([x["egr"] for x in s["knapsack"]])
    if egr_u > 0:
        lines.append(f"relative gain in effective gradient ratio (epoch >= 2): {100 * (egr_k / egr_u - 1):+.1f}%")
    return "\n".join(lines)
