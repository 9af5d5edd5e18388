"""Arms (uniform and knapsack variants) from the same warm start, seeds, data order and total rollouts.

An *arm* is a name that resolves to a :class:`~knapsack_rl.KnapsackConfig` (:func:`arm_config`):

- ``uniform``: the base config's knapsack settings with ``rule="uniform"`` (the paired baseline);
- ``knapsack``: the base config's own knapsack settings;
- any preset name (``recipe``, ``project``, ...): that preset;
- any of these followed by ``+key=value`` changes (``project+posterior=true``).

Every arm of a seed runs with the same seed (same data order, same sampling stream at the start, same
evaluation prompts), so arms are compared paired. Runs are independent processes' worth of work; with
``jobs > 1`` they run in parallel worker processes (one torch thread each is fastest on a small CPU).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from knapsack_rl.core.config import KnapsackConfig, preset_names
from knapsack_rl.io import atomic_write_bytes
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.report.summary import ArmComparison, compare_arms
from knapsack_rl.train.config import TrainConfig, config_from_dict

logger = logging.getLogger(__name__)

DEFAULT_ARMS = ("uniform", "knapsack")


@dataclass(frozen=True)
class CompareResult:
    """Run directories per arm (one per seed, in seed order), summaries and the paired comparisons."""

    out_dir: Path
    runs: dict[str, list[Path]]
    summaries: dict[str, list[dict[str, float]]]
    comparisons: list[ArmComparison]
    plots: list[Path]
    wall_s: float
    profile: dict[str, object] | None


def arm_config(base: TrainConfig, arm: str) -> KnapsackConfig:
    """The knapsack settings of an arm (see the module docstring).

    An arm may add KnapsackConfig fields by flat name after ``+``: ``project+posterior=true+value=nonzero``
    (values read as YAML scalars).
    """
    import yaml

    name, *changes = arm.split("+")
    if name == "uniform":
        cfg = base.knapsack.replace(rule="uniform")
    elif name == "knapsack":
        cfg = base.knapsack
    elif name in preset_names():
        cfg = KnapsackConfig.preset(name)
    else:
        raise ValueError(f"arm {arm!r}: {name!r} is not 'uniform', 'knapsack' or a preset {preset_names()}")
    values = {}
    for change in changes:
        key, sep, raw = change.partition("=")
        if not sep:
            raise ValueError(f"arm {arm!r}: {change!r} must be key=value")
        values[key] = yaml.safe_load(raw)
    return cfg.replace(**values)


def quick_config(base: TrainConfig) -> TrainConfig:
    """A seconds-long smoke version of ``base`` (tiny suite, short warm start, a few steps): not a result."""
    levels = base.task.arithmetic.levels
    arithmetic = dataclasses.replace(
        base.task.arithmetic,
        train_per_level=(4,) * len(levels),
        eval_per_level=2,
        warmstart_per_level=(8,) * len(levels),
    )
    return base.replace(
        task=dataclasses.replace(base.task, arithmetic=arithmetic),
        warmstart=WarmStartConfig(steps=20, batch_size=32, profile_samples=4),
        prompts_per_step=8,
        n=4,
        epochs=3,
        eval_every=2,
        eval_k=2,
        checkpoint_every=0,
        tensorboard=False,
    )


def run_compare(
    base: TrainConfig, out_dir: Path, seeds: Sequence[int], arms: Sequence[str] = DEFAULT_ARMS, *, jobs: int = 1
) -> CompareResult:
    """Train every arm for every seed from the same warm start and budget; summarise, compare and plot."""
    from knapsack_rl.report.plots import plot_comparison

    if "uniform" not in arms:
        raise ValueError(f"arms must include the baseline 'uniform'; got {list(arms)}")
    configs = {arm: arm_config(base, arm) for arm in arms}  # validate every arm before any work
    start = time.perf_counter()
    alloc_start, profile = prepare(base)
    jobs_list = [
        (arm, seed, base.replace(knapsack=configs[arm], seed=seed, out_dir=str(out_dir / f"seed{seed}" / arm)))
        for seed in seeds
        for arm in arms
    ]
    _run_all([cfg for _, _, cfg in jobs_list], jobs)
    runs = {arm: [Path(cfg.out_dir) for a, _, cfg in jobs_list if a == arm] for arm in arms}
    eval_key = f"eval/mean@{base.eval_k}"
    uniform_epochs = base.knapsack.uniform_epochs
    summaries, comparisons = compare_arms(runs, eval_key=eval_key, uniform_epochs=uniform_epochs)
    plots = plot_comparison(runs, out_dir, eval_key=eval_key, alloc_start=alloc_start, title=_title(base, seeds))
    wall = time.perf_counter() - start
    data = {"summaries": summaries, "wall_s": wall, "warmstart_profile": profile}
    atomic_write_bytes(out_dir / "summary.json", json.dumps(data, indent=1).encode())
    return CompareResult(out_dir, runs, summaries, comparisons, plots, wall, profile)


def _run_all(configs: list[TrainConfig], jobs: int) -> None:
    """Train every config, ``jobs`` at a time in worker processes (1: in this process)."""
    if jobs <= 1:
        for cfg in configs:
            train_one(cfg.to_dict())
        return
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no inherited torch state
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        for future in [pool.submit(train_one, cfg.to_dict()) for cfg in configs]:
            future.result()  # re-raises a worker's error here


def train_one(config: dict[str, object]) -> float:
    """Train one run from a plain config dict (picklable for worker processes); writes summary.json."""
    from knapsack_rl.train.trainer import Trainer

    cfg = config_from_dict(config)
    start = time.perf_counter()
    Trainer(cfg).train()
    wall = time.perf_counter() - start
    atomic_write_bytes(Path(cfg.out_dir) / "summary.json", json.dumps({"wall_s": wall}).encode())
    logger.info("finished %s in %.0f s", cfg.out_dir, wall)
    return wall


def prepare(base: TrainConfig) -> tuple[int, dict[str, object] | None]:
    """Build (or find) the shared warm start before any run, so that parallel runs never build it twice.

    Returns the step where allocation can start (the first step of epoch ``uniform_epochs``) and, for the
    embedded tiny model, the success profile of the training prompts under the warm start.
    """
    import torch

    from knapsack_rl.models.warmstart import training_profile, warm_start
    from knapsack_rl.tasks.source import load_task
    from knapsack_rl.train.trainer import resolve_device

    if base.threads:
        torch.set_num_threads(base.threads)
    task = load_task(base.task)
    try:
        alloc_start = base.knapsack.uniform_epochs * (len(task.train) // base.prompts_per_step)
        if base.model is not None:
            return alloc_start, None
        device = str(resolve_device(base.device))
        path = warm_start(base.warmstart_dir, task, warm=base.warmstart, model=base.tiny_model, device=device)
        samples = base.warmstart.profile_samples
        profile = training_profile(path, task, samples=samples, max_new_tokens=base.max_new_tokens, device=device)
        return alloc_start, profile
    finally:
        task.close()


def _title(base: TrainConfig, seeds: Sequence[int]) -> str:
    return f"{base.prompts_per_step} prompts x n={base.n} per step, {len(seeds)} seed(s)"
