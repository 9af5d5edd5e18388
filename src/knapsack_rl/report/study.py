"""Which runs make a study: arms, seeds and paths, from a manifest the user writes or a ``compare`` folder.

A **manifest** (YAML, read by :func:`knapsack_rl.safe_yaml.load_yaml_file`; paths relative to its folder)::

    baseline: uniform            # the arm the others are paired against (default: uniform)
    eval_metric: eval/avg@4      # the primary metric (default: the one eval/avg@k the baseline's runs log)
    eval_k: 4                    # TRL only: samples per prompt of TRL's evaluation (its log does not say)
    uniform_epochs: 1            # epochs every arm runs uniform before allocating (default 1)
    tolerance: 0.02              # rollouts of an arm may differ from the baseline's by this share (default 0.02)
    title: my study              # figure titles (optional)
    arms:
      uniform:
        - {seed: 0, path: runs/uniform-0}                 # engine detected
        - {seed: 1, path: runs/uniform-1, engine: trl}    # or named: knapsack-rl, trl, verl, jsonl
      knapsack:
        - {seed: 0, path: runs/knapsack-0}
        - {seed: 1, path: runs/knapsack-1}

A **compare folder** (``knapsack-rl compare --out-dir DIR``) says all of this itself: its ``compare.json``
records the arms, the seeds and the settings, and its runs lie in ``seed<S>/<arm>``.

Every mistake is one ``ValueError`` line naming the file and the entry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knapsack_rl.io import read_file_bytes
from knapsack_rl.report.names import ENGINES, canonical_metric

COMPARE_RECORD = "compare.json"
"""The record ``knapsack-rl compare`` writes in its folder (:data:`knapsack_rl.train.compare.RECORD`)."""
MANIFEST_KEYS = ("arms", "baseline", "eval_k", "eval_metric", "title", "tolerance", "uniform_epochs")
RUN_KEYS = ("engine", "eval_k", "path", "seed")
DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class RunRef:
    """One run of a study: its arm, seed, path, and (optionally) its engine and TRL's eval k."""

    arm: str
    seed: int
    path: Path
    engine: str | None = None
    eval_k: int | None = None


@dataclass(frozen=True)
class Study:
    """Arms (in the order given) and their runs; the baseline and how to read the runs."""

    source: Path
    arms: dict[str, list[RunRef]]
    baseline: str = "uniform"
    eval_metric: str | None = None
    """The primary metric in canonical form (None: the one ``eval/avg@k`` the baseline's runs log)."""
    uniform_epochs: int = 1
    tolerance: float = DEFAULT_TOLERANCE
    title: str = ""
    heading: list[str] = field(default_factory=list)
    """Lines the report prints first (a compare folder's settings)."""


def load_study(source: str | Path) -> Study:
    """The study of a manifest file, or of a ``compare`` folder.

    Raises:
        ValueError: one line naming ``source``: neither a manifest nor a compare folder, or a bad entry.
    """
    source = Path(source)
    if source.is_dir():
        if (source / COMPARE_RECORD).is_file():
            return study_of_compare(source)
        raise ValueError(
            f"{source} is a folder without {COMPARE_RECORD} (not a knapsack-rl compare folder); for runs of other "
            "engines, write a manifest (docs/cluster.md) and pass it"
        )
    if not source.exists():
        raise ValueError(f"manifest {source} does not exist")
    return load_manifest(source)


def load_manifest(path: Path) -> Study:
    """A :class:`Study` from a manifest file (see the module docstring)."""
    from knapsack_rl.safe_yaml import load_yaml_file

    data = load_yaml_file(path, what="manifest")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a manifest is a mapping with 'arms'; got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(MANIFEST_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; a manifest holds {list(MANIFEST_KEYS)}")
    arms = data.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise ValueError(f"{path}: 'arms' must map each arm's name to its list of runs; got {arms!r:.60}")
    eval_k = _opt_int(data.get("eval_k"), f"{path}: eval_k", low=1)
    refs = {str(arm): _runs_of(path, str(arm), runs, eval_k) for arm, runs in arms.items()}
    baseline = data.get("baseline", "uniform")
    if not isinstance(baseline, str) or baseline not in refs:
        raise ValueError(f"{path}: baseline {baseline!r} is not an arm; arms: {list(refs)} (set baseline: <arm>)")
    if len(refs) < 2:
        raise ValueError(f"{path}: a study needs the baseline and at least one other arm; got {list(refs)}")
    metric = data.get("eval_metric")
    if metric is not None and not isinstance(metric, str):
        raise ValueError(f"{path}: eval_metric must be a metric name like eval/avg@4; got {metric!r}")
    tolerance = data.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 <= tolerance < 1:
        raise ValueError(f"{path}: tolerance must be a share in [0, 1); got {tolerance!r}")
    title = data.get("title", "")
    if not isinstance(title, str):
        raise ValueError(f"{path}: title must be text; got {title!r}")
    return Study(
        source=path, arms=refs, baseline=baseline, eval_metric=None if metric is None else canonical_metric(metric),
        uniform_epochs=_opt_int(data.get("uniform_epochs", 1), f"{path}: uniform_epochs", low=0) or 0,
        tolerance=float(tolerance), title=title,
    )  # fmt: skip


def _runs_of(path: Path, arm: str, runs: Any, eval_k: int | None) -> list[RunRef]:
    """The runs of one arm in a manifest, each checked."""
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"{path}: arms.{arm} must be a list of runs ({{seed, path}}); got {runs!r:.60}")
    out = []
    for i, entry in enumerate(runs):
        where = f"{path}: arms.{arm}[{i}]"
        if not isinstance(entry, dict) or not {"seed", "path"} <= set(entry) or not set(entry) <= set(RUN_KEYS):
            raise ValueError(f"{where}: a run is {{seed, path}} (and optionally engine, eval_k); got {entry!r:.80}")
        seed = _opt_int(entry["seed"], f"{where}: seed", low=None)
        where_path = entry["path"]
        if not isinstance(where_path, str) or not where_path:
            raise ValueError(f"{where}: path must be a file or folder name; got {where_path!r}")
        engine = entry.get("engine")
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"{where}: engine {engine!r} is not one the report reads; valid: {list(ENGINES)}")
        run_k = _opt_int(entry.get("eval_k", eval_k), f"{where}: eval_k", low=1)
        assert seed is not None
        out.append(RunRef(arm, seed, (path.parent / where_path), engine, run_k))
    seeds = [r.seed for r in out]
    if len(set(seeds)) != len(seeds):
        dup = next(s for j, s in enumerate(seeds) if s in seeds[:j])
        raise ValueError(f"{path}: arms.{arm} lists seed {dup} twice")
    return out


def _opt_int(value: Any, where: str, *, low: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise ValueError(f"{where} must be an integer{bound}; got {value!r}")
    return value


def study_of_compare(folder: Path) -> Study:
    """The study of a ``knapsack-rl compare`` folder: its recorded arms and seeds, runs in ``seed<S>/<arm>``."""
    record_path = folder / COMPARE_RECORD
    try:
        record = json.loads(read_file_bytes(record_path, what="compare record", max_bytes=1 << 26))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{record_path}: not a valid compare record ({exc})") from None
    arms, seeds, config = (record.get(k) if isinstance(record, dict) else None for k in ("arms", "seeds", "config"))
    if not isinstance(arms, list) or not isinstance(seeds, list) or not isinstance(config, dict):
        raise ValueError(f"{record_path}: a compare record holds 'arms', 'seeds' and 'config'")
    refs = {
        str(arm): [RunRef(str(arm), int(s), folder / f"seed{s}" / str(arm).replace(":", "-"), "knapsack-rl")
                   for s in seeds]
        for arm in arms
    }  # fmt: skip
    eval_k, knapsack = config.get("eval_k"), config.get("knapsack")
    if not isinstance(knapsack, dict) or not isinstance(knapsack.get("allocation"), dict):
        raise ValueError(f"{record_path}: the recorded config has no knapsack settings")
    step = f"{config.get('prompts_per_step')} prompts x n={knapsack['allocation'].get('n')} per step"
    heading = (
        f"{len(seeds)} paired seed(s) {seeds}; {step}; mean ± 95% CI over seeds; 'arm - uniform' is the paired "
        "difference"
    )
    return Study(
        source=folder, arms=refs, eval_metric=f"eval/avg@{eval_k}" if isinstance(eval_k, int) else None,
        uniform_epochs=int(knapsack.get("uniform_epochs", 1)), title=f"{step}, {len(seeds)} seed(s)",
        heading=[heading],
    )  # fmt: skip


def paired_seeds(study: Study) -> tuple[list[int], list[str]]:
    """The seeds every arm has (in the baseline's order), and one line per seed left out of the pairing."""
    have = {arm: [r.seed for r in runs] for arm, runs in study.arms.items()}
    common = [s for s in have[study.baseline] if all(s in seeds for seeds in have.values())]
    notes = []
    for seed in dict.fromkeys(s for seeds in have.values() for s in seeds):
        if seed not in common:
            missing = [arm for arm, seeds in have.items() if seed not in seeds]
            notes.append(f"UNPAIRED: seed {seed} has no run in arm(s) {missing}: left out of every paired number")
    if not common:
        raise ValueError(f"{study.source}: no seed has a run in every arm ({have}); nothing can be paired")
    return common, notes


def relative_gap(value: float, reference: float) -> float:
    """``value / reference - 1`` (NaN when either is unknown or the reference is 0)."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.nan
    return value / reference - 1.0
