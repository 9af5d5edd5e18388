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

**One folder, one set of settings.** ``out_dir/compare.json`` records the arms, the seeds and the base
config (less :data:`NOT_RESULTS`); a compare is refused on a folder that holds results of other settings
(naming what differs) or files without that record, rather than overwriting them. Run again with the same
settings, it reuses every finished run (its ``summary.json`` says so and holds the run's config) and
resumes every other one from its checkpoint (with ``resume: false``, it trains every run afresh).

**Ctrl-C** stops it promptly: queued runs are cancelled, the runs in flight stop at their next step and
write their checkpoint, and :class:`RunsInterrupted` says what finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knapsack_rl.core.config import KnapsackConfig, config_diff, preset_names
from knapsack_rl.io import LOCK_NAME, atomic_write_bytes, lock_folder, read_file_bytes
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.progress import StopFlag, stop_on_sigint
from knapsack_rl.report.summary import ArmComparison, compare_arms
from knapsack_rl.rules import rule_names
from knapsack_rl.train.config import TrainConfig, config_from_dict

logger = logging.getLogger(__name__)

DEFAULT_ARMS = ("uniform", "knapsack")
RECORD = "compare.json"
"""The file in a compare's ``out_dir`` that records its arms, seeds and base config."""
NOT_RESULTS = frozenset({"out_dir", "seed", "resume", "progress", "tensorboard", "checkpoint_every", "threads"})
"""TrainConfig fields left out of the comparisons of settings: set per run (``out_dir``, ``seed``), or not
changing what a run computes."""


class RunsInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a compare; the message says what finished and how to resume."""


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
    reused: tuple[Path, ...] = ()
    """Runs found finished in ``out_dir`` with this compare's settings, and not trained again."""
    trained: tuple[Path, ...] = ()
    """Runs trained (or resumed) by this call."""


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
    """Train every arm for every seed from the same warm start and compute; summarise, compare and plot.

    Raises:
        ValueError: one line, before any work: an invalid arm or seed list, or an ``out_dir`` holding the
            results of other settings (:func:`check_out_dir`).
        RunsInterrupted: on Ctrl-C, once the runs in flight have stopped at a checkpoint.
    """
    from knapsack_rl.report.plots import plot_comparison

    configs = plan_runs(base, out_dir, seeds, arms)  # every arm and seed checked before any work
    record = compare_record(base, seeds, arms)
    check_out_dir(out_dir, record)
    with lock_folder(out_dir, what="out_dir"):
        check_out_dir(out_dir, record)  # again under the lock: another compare may have written it meanwhile
        start = time.perf_counter()
        atomic_write_bytes(out_dir / RECORD, json.dumps(record, indent=1).encode())
        done = [cfg for cfg in configs.values() if base.resume and run_finished(cfg)]
        todo = [cfg for cfg in configs.values() if cfg not in done]
        if done:
            logger.info("reusing %d finished run(s) of %d under %s", len(done), len(configs), out_dir)
        try:
            alloc_start, profile = prepare(base)
            _run_all(todo, jobs)
        except KeyboardInterrupt:
            raise RunsInterrupted(_interrupted(list(configs.values()), resume=base.resume)) from None
        runs = {arm: [Path(cfg.out_dir) for (a, _), cfg in configs.items() if a == arm] for arm in arms}
        eval_key = f"eval/avg@{base.eval_k}"
        summaries, comparisons = compare_arms(runs, eval_key=eval_key, uniform_epochs=base.knapsack.uniform_epochs)
        title = _title(base, seeds)
        plots = plot_comparison(runs, out_dir, eval_key=eval_key, alloc_start=alloc_start, title=title)
        wall = time.perf_counter() - start
        data = {"summaries": summaries, "wall_s": wall, "warmstart_profile": profile}
        atomic_write_bytes(out_dir / "summary.json", json.dumps(data, indent=1).encode())
    trained = tuple(Path(cfg.out_dir) for cfg in todo)
    reused = tuple(Path(cfg.out_dir) for cfg in done)
    return CompareResult(out_dir, runs, summaries, comparisons, plots, wall, profile, reused, trained)


def plan_runs(
    base: TrainConfig, out_dir: Path, seeds: Sequence[int], arms: Sequence[str]
) -> dict[tuple[str, int], TrainConfig]:
    """The config of every run, by (arm, seed), seed-major; invalid arms and seed lists are refused."""
    if "uniform" not in arms:
        raise ValueError(f"arms must include the baseline 'uniform'; got {list(arms)}")
    if len(set(arms)) != len(arms):
        raise ValueError(f"arms must be distinct; got {list(arms)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one; got {list(seeds)}")
    resolved = {arm: resolve_arm(base, arm) for arm in arms}
    return {
        (arm, seed): base.replace(knapsack=resolved[arm].knapsack, rule=resolved[arm].rule, seed=seed,
                                  out_dir=str(out_dir / f"seed{seed}" / resolved[arm].folder))
        for seed in seeds
        for arm in arms
    }  # fmt: skip


def compare_record(base: TrainConfig, seeds: Sequence[int], arms: Sequence[str]) -> dict[str, Any]:
    """What a compare's ``out_dir`` records (:data:`RECORD`): its arms, seeds and base config."""
    config = {k: v for k, v in base.to_dict().items() if k not in NOT_RESULTS}
    return {"arms": list(arms), "seeds": list(seeds), "config": config}


def check_out_dir(out_dir: Path, record: dict[str, Any]) -> None:
    """Refuse an ``out_dir`` that holds results of other settings than ``record`` (naming what differs), or
    files but no :data:`RECORD`; a missing or empty folder, or one of the same settings, passes.

    Raises:
        ValueError: one line naming the folder.
    """
    path = out_dir / RECORD
    if path.is_file():
        saved = _read_json(path, "compare record")
        differ = config_diff(saved, record) if isinstance(saved, dict) else [f"not a compare record: {saved!r:.60}"]
        if differ:
            shown = "; ".join(differ[:6]) + (f"; and {len(differ) - 6} more" if len(differ) > 6 else "")
            raise ValueError(
                f"out_dir {out_dir} holds the results of other settings ({shown}); "
                "use another --out-dir, or delete that folder to start over"
            )
    elif out_dir.is_dir() and any(p.name != LOCK_NAME for p in out_dir.iterdir()):
        raise ValueError(
            f"out_dir {out_dir} holds files but no {RECORD} (not a compare's results, or of an older version); "
            "use another --out-dir, or delete that folder"
        )
    elif out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is not a folder")


def run_finished(cfg: TrainConfig) -> bool:
    """Whether ``cfg.out_dir`` holds this very run, finished: its ``summary.json`` says finished and holds a
    config equal to ``cfg`` (but for :data:`NOT_RESULTS`)."""
    path = Path(cfg.out_dir) / "summary.json"
    if not path.is_file():
        return False
    data = _read_json(path, "run summary")
    if not isinstance(data, dict) or data.get("finished") is not True or not isinstance(data.get("config"), dict):
        return False
    return not config_diff(data["config"], cfg.to_dict(), ignore=NOT_RESULTS)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_file_bytes(path, what=what, max_bytes=1 << 26))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a valid {what} ({exc})") from None


def _interrupted(configs: list[TrainConfig], *, resume: bool) -> str:
    """The line that says what an interrupted compare finished and how to resume."""
    finished = sum(run_finished(cfg) for cfg in configs)
    stopped = sum(not run_finished(cfg) and (Path(cfg.out_dir) / "checkpoint.pt").is_file() for cfg in configs)
    how = "run the same command again" if resume else "run it again without --no-resume (resume: false)"
    return (
        f"{finished} of {len(configs)} runs finished, {stopped} stopped at a checkpoint, "
        f"{len(configs) - finished - stopped} to train from the start; {how} to reuse the finished runs and resume "
        "the others"
    )


def _run_all(configs: list[TrainConfig], jobs: int) -> None:
    """Train every config, ``jobs`` at a time in worker processes (1: in this process).

    Ctrl-C (or a run's error) cancels the queued runs and stops those in flight at their next step, with
    a checkpoint; then ``KeyboardInterrupt`` (or the error) is raised.
    """
    if jobs <= 1:
        with stop_on_sigint():  # Ctrl-C stops the run in flight at its next step (train_one's stop)
            for cfg in configs:
                if not train_one(cfg.to_dict()):  # a stop was asked: it stopped at a checkpoint, or did not start
                    raise KeyboardInterrupt
        return
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no inherited torch state
    stop = ctx.Event()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(stop,))
    try:
        for future in [pool.submit(train_one, cfg.to_dict()) for cfg in configs]:
            if not future.result():  # re-raises a worker's error here; False: a worker was stopped
                raise KeyboardInterrupt
    except BaseException:
        stop.set()  # the runs in flight stop at their next step; queued runs do not start
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _init_worker(stop: Any) -> None:
    """A worker's SIGINT handler: Ctrl-C, or ``stop`` set by the main process, stops its run at the next step."""
    signal.signal(signal.SIGINT, StopFlag(stop))


def train_one(config: dict[str, object]) -> bool:
    """Train (or resume) one run from a plain config dict (picklable for worker processes); returns whether it
    finished, False when a stop was asked (:func:`knapsack_rl.progress.stop_on_sigint`; then it stopped at
    a checkpoint, or before it started). A finished run's ``summary.json`` records its config."""
    from knapsack_rl.train.trainer import Trainer

    cfg = config_from_dict(config)
    with stop_on_sigint() as stopping:
        if stopping():
            return False
        summary = Path(cfg.out_dir) / "summary.json"
        summary.unlink(missing_ok=True)  # a run being trained is not finished
        start = time.perf_counter()
        trainer = Trainer(cfg)
        trainer.train(stop=stopping)
    if not trainer.finished:
        return False
    wall = time.perf_counter() - start
    data = {"finished": True, "wall_s": wall, "steps": trainer.global_step, "config": cfg.to_dict()}
    atomic_write_bytes(summary, json.dumps(data, indent=1).encode())
    logger.info("finished %s in %.0f s", cfg.out_dir, wall)
    return True


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
