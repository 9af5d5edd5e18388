"""Arms (uniform, knapsack variants and peer rules) from the same warm start, seeds, data order and compute.

An *arm* is a rule by its name in every engine and command (:func:`knapsack_rl.rules.rule_names`;
``knapsack-rl rules`` lists them), resolved by :func:`resolve_arm`:

- ``uniform``: the paired baseline (N per prompt, through the Planner with the base config's knapsack
  settings and ``allocate=False``, so it logs the same ``alloc/*`` as knapsack);
- ``knapsack``: the base config's own knapsack settings; ``knapsack:<preset>`` (``knapsack:recipe``,
  ``knapsack:two-phase``, ...): that preset with the base config's ``n``;
- any other registered rule: ``coba``, ``uncertainty``, ``reinforce-ada``, ``pilot-commit``, ``dapo``,
  ``greso``, ..., or one a study registered;
- a knapsack-family arm (``uniform``, ``knapsack``, ``knapsack:<preset>``) followed by ``+key=value``
  KnapsackConfig changes (``knapsack:project+posterior=false``; values read as YAML 1.2 scalars).

**Equal compute.** Every arm's step may generate B = ``prompts_per_step x n`` rollouts (``n`` of the
base config; DAPO up to 10 B), and every run ends once it has *generated* the uniform arm's total
(``total_steps x B``; see :mod:`knapsack_rl.train.trainer`), so DAPO takes fewer steps and a rule that
spends less than B per step more. Every arm of a seed runs with the same seed (same data order, same
sampling stream at the start, same evaluation prompts), so arms are compared paired. With
``jobs > 1`` runs go to parallel worker processes (one torch thread each is fastest on a small CPU).
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
from knapsack_rl.rules import rule_names
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


@dataclass(frozen=True)
class Arm:
    """What an arm name resolves to: the run's rule and knapsack settings."""

    name: str
    knapsack: KnapsackConfig
    """The run's ``TrainConfig.knapsack`` (its ``n`` sets the step's budget for every rule)."""
    rule: str
    """The run's ``TrainConfig.rule`` (``knapsack:<preset>`` arms run ``knapsack`` with that preset)."""

    @property
    def folder(self) -> str:
        """The arm's run folder name (``:`` becomes ``-``)."""
        return self.name.replace(":", "-")


def resolve_arm(base: TrainConfig, arm: str) -> Arm:
    """The :class:`Arm` of a name (see the module docstring); an unknown name lists the valid ones."""
    name, *changes = arm.split("+")
    if name not in rule_names():
        hint = f" (the preset {name!r} is the arm 'knapsack:{name}')" if name in preset_names() else ""
        raise ValueError(f"arm {arm!r}: {name!r} is not a rule{hint}; valid: {rule_names()}")
    family = name in ("uniform", "knapsack") or name.startswith("knapsack:")
    if changes and not family:
        raise ValueError(
            f"arm {arm!r}: +key=value changes apply to knapsack settings, which rule {name!r} does not use"
        )
    if not family:
        return Arm(arm, base.knapsack, name)
    knapsack = base.knapsack
    if name.startswith("knapsack:"):
        knapsack = KnapsackConfig.preset(name.removeprefix("knapsack:"), n=base.n)
    rule = "uniform" if name == "uniform" else "knapsack"
    return Arm(arm, knapsack.replace(**_changes(arm, changes)), rule)


def _changes(arm: str, changes: list[str]) -> dict[str, object]:
    """``key=value`` items of an arm name as KnapsackConfig changes (values read as YAML 1.2 scalars by
    :func:`knapsack_rl.safe_yaml.parse_yaml_text`: ``lr=1e-4`` is a float); a repeated key is refused."""
    from knapsack_rl.safe_yaml import parse_yaml_text

    values: dict[str, object] = {}
    for change in changes:
        key, sep, raw = change.partition("=")
        if not sep:
            raise ValueError(f"arm {arm!r}: {change!r} must be key=value")
        if key in values:
            raise ValueError(f"arm {arm!r}: {key!r} is set twice")
        values[key] = parse_yaml_text(raw, source=f"arm {arm!r}: {change!r}")
    return values


def arm_config(base: TrainConfig, arm: str) -> KnapsackConfig:
    """The knapsack settings an arm plans with (``uniform``: ``allocate=False``); refused for arms whose rule
    does not plan through the Planner."""
    resolved = resolve_arm(base, arm)
    if resolved.rule not in ("uniform", "knapsack"):
        raise ValueError(f"arm {arm!r}: rule {resolved.rule!r} does not plan with knapsack settings")
    return resolved.knapsack.replace(allocate=resolved.rule == "knapsack")


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
    """Train every arm for every seed from the same warm start and compute; summarise, compare and plot."""
    from knapsack_rl.report.plots import plot_comparison

    if "uniform" not in arms:
        raise ValueError(f"arms must include the baseline 'uniform'; got {list(arms)}")
    if len(set(arms)) != len(arms):
        raise ValueError(f"arms must be distinct; got {list(arms)}")
    resolved = {arm: resolve_arm(base, arm) for arm in arms}  # validate every arm before any work
    start = time.perf_counter()
    alloc_start, profile = prepare(base)
    jobs_list = [
        (arm, base.replace(knapsack=resolved[arm].knapsack, rule=resolved[arm].rule, seed=seed,
                           out_dir=str(out_dir / f"seed{seed}" / resolved[arm].folder)))
        for seed in seeds
        for arm in arms
    ]  # fmt: skip
    _run_all([cfg for _, cfg in jobs_list], jobs)
    runs = {arm: [Path(cfg.out_dir) for a, cfg in jobs_list if a == arm] for arm in arms}
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
        path = warm_start(
            base.warmstart_dir,
            task,
            warm=base.warmstart,
            model=base.tiny_model,
            device=device,
            max_new_tokens=base.max_new_tokens,
        )
        samples = base.warmstart.profile_samples
        profile = training_profile(path, task, samples=samples, max_new_tokens=base.max_new_tokens, device=device)
        return alloc_start, profile
    finally:
        task.close()


def _title(base: TrainConfig, seeds: Sequence[int]) -> str:
    return f"{base.prompts_per_step} prompts x n={base.n} per step, {len(seeds)} seed(s)"
