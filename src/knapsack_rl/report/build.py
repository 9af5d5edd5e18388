"""``knapsack-rl report``: the paired comparison of finished runs of any engine (NumPy; matplotlib for plots).

:func:`build_report` reads a :class:`~knapsack_rl.report.study.Study` (a manifest, or a ``compare`` folder),
loads every run (:func:`knapsack_rl.report.runs.load_run`), pairs the arms by seed and summarises them
exactly as ``compare`` does (:func:`knapsack_rl.report.summary.compare_runs`: one summary, one table, one
verdict). It flags, one line each, what a reader must know before believing the table:

- ``UNPAIRED``: a seed that some arm lacks (left out of every paired number);
- ``MISSING``: a number one run lacks but others have (its arm's mean is over fewer seeds; never a zero);
- ``UNEQUAL COMPUTE``: an arm whose run generated more or fewer rollouts than the baseline's of the same
  seed, beyond the study's tolerance;
- ``STEPS DIFFER``: arms that took different numbers of steps (they are compared on the axis of rollouts);
- ``ENGINES DIFFER``, and what each reader had to say (``NOTE``).

It writes into ``out_dir``: ``table.txt`` (what it printed), each run's canonical rows
(``runs/<arm>/seed<S>/metrics.jsonl``, with ``allocations.jsonl`` where the run logged one), the plots of
``compare`` (:func:`~knapsack_rl.report.plots.plot_comparison`, drawn from those rows: the same figures
``compare`` draws for the same runs), held-out accuracy on the axes of rollouts, generated tokens and
wall-clock (:func:`~knapsack_rl.report.plots.plot_axes`) and the allocation diagnostics
(:func:`~knapsack_rl.report.plots.plot_allocation`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knapsack_rl.io import atomic_write_bytes, atomic_write_text
from knapsack_rl.report.names import split_canonical
from knapsack_rl.report.runs import Run, load_run
from knapsack_rl.report.study import Study, paired_seeds, relative_gap
from knapsack_rl.report.summary import ROWS, ArmComparison, compare_runs, comparison_table, verdict

logger = logging.getLogger(__name__)

NEEDS = {
    "auc": "the primary evaluation metric",
    "train_auc": "train_eval/ of the primary metric",
    "final": "the primary evaluation metric",
    "start": "the primary evaluation metric",
    "effective_prompts": "train/effective_prompts",
    "effective_prompts_first": "train/effective_prompts with train/epoch",
    "egr": "train/effective_grad_ratio",
    "grad_clipped": "actor/grad_clipped (the reference trainer's)",
    "budget_max": "alloc/budget_max",
    "gen_tokens": "a mean response length every step (rollout/response_len_mean, TRL's completions/mean_length, "
    "verl's response_length/mean) or train/tokens_generated",
    "wall_s": "the run's wall time (summary.json, TRL's train_runtime, or train/wall_s)",
}
"""What each number of the table needs from a run's log (named in a MISSING line)."""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` computed and wrote."""

    text: str
    eval_key: str | None
    seeds: list[int]
    runs: dict[str, list[Run]]
    summaries: dict[str, list[dict[str, float]]]
    comparisons: list[ArmComparison]
    flags: list[str]
    plots: list[Path]


def build_report(study: Study, out_dir: Path, *, plots: bool = True) -> ReportResult:
    """Load, pair, summarise, flag, print-ready text; write ``table.txt``, the canonical rows and the plots.

    Raises:
        ValueError: one line: a run that cannot be read (naming its arm, seed and path), no seed common to
            every arm, or a primary metric that is ambiguous.
    """
    seeds, unpaired = paired_seeds(study)
    runs = load_runs(study, seeds)
    eval_key, eval_note = choose_eval_metric(study, runs)
    summaries, comparisons = compare_runs(
        runs, eval_key=eval_key or "eval/avg@1", baseline=study.baseline, uniform_epochs=study.uniform_epochs
    )
    flags = [*unpaired, *eval_note, *missing_lines(study, runs, summaries, seeds)]
    flags += compute_lines(study, runs, summaries, seeds)
    flags += [f"NOTE: {note}" for rs in runs.values() for r in rs for note in r.notes]
    written: list[Path] = []
    if plots:
        written = draw(study, runs, seeds, out_dir, eval_key)
    levels = sorted({k.removeprefix("final/") for s in summaries[study.baseline] for k in s if k.startswith("final/")})
    table = comparison_table(comparisons, levels, baseline=study.baseline)
    lines = [
        *(study.heading or [_heading(study, runs, seeds)]),
        f"primary metric: held-out AUC of {eval_key} over rollouts generated" if eval_key else "no held-out metric",
        *flags,
        "",
        table,
        "",
        *(verdict(c, study.baseline) for c in comparisons if c.arm != study.baseline),
        "",
        "plots: " + (", ".join(str(p) for p in written) or "none"),
    ]
    text = "\n".join(lines)
    atomic_write_text(out_dir / "table.txt", text + "\n")
    return ReportResult(text, eval_key, seeds, runs, summaries, comparisons, flags, written)


def load_runs(study: Study, seeds: Sequence[int]) -> dict[str, list[Run]]:
    """Every arm's runs of the paired seeds, in seed order (a run that cannot be read: one line naming it)."""
    out: dict[str, list[Run]] = {}
    for arm, refs in study.arms.items():
        by_seed = {r.seed: r for r in refs}
        out[arm] = []
        for seed in seeds:
            ref = by_seed[seed]
            try:
                out[arm].append(load_run(ref.path, ref.engine, eval_k=ref.eval_k))
            except ValueError as exc:
                raise ValueError(f"arm {arm!r} seed {seed}: {exc}") from None
    return out


def choose_eval_metric(study: Study, runs: Mapping[str, Sequence[Run]]) -> tuple[str | None, list[str]]:
    """The primary metric: the study's, else the one ``eval/avg@k`` (without a level) the baseline's runs log.

    Raises:
        ValueError: the baseline's runs log several ``eval/avg@k`` and the study names none.
    """
    if study.eval_metric is not None:
        return study.eval_metric, []
    logged = sorted({k for r in runs[study.baseline] for row in r.rows for k in row
                     if (p := split_canonical(k)) and p[:2] == ("eval", "avg") and not p[3]})  # fmt: skip
    if len(logged) == 1:
        return logged[0], []
    if len(logged) > 1:
        raise ValueError(f"{study.source}: the baseline's runs log {logged}; name the primary one as eval_metric")
    per_source = sorted({k for r in runs[study.baseline] for row in r.rows for k in row
                         if (p := split_canonical(k)) and p[:2] == ("eval", "avg")})  # fmt: skip
    if per_source:
        raise ValueError(
            f"{study.source}: the runs evaluate several data sources or levels ({per_source}) and no overall "
            "metric; name the primary one as eval_metric (e.g. eval_metric: " + per_source[0] + ")"
        )
    return None, ["MISSING: no run of the baseline logged a held-out evaluation (eval/avg@k): no AUC, no verdict"]


def missing_lines(
    study: Study, runs: Mapping[str, Sequence[Run]], summaries: Mapping[str, Sequence[Mapping[str, float]]],
    seeds: Sequence[int],
) -> list[str]:  # fmt: skip
    """One line per number of the table that one run lacks while another has it."""
    out = []
    for label, key, _ in ROWS:
        have = [s.get(key, math.nan) for arm in summaries for s in summaries[arm]]
        if all(math.isnan(v) for v in have):
            continue
        for arm, arm_summaries in summaries.items():
            for seed, run, s in zip(seeds, runs[arm], arm_summaries, strict=True):
                if math.isnan(s.get(key, math.nan)):
                    out.append(
                        f"MISSING: arm {arm} seed {seed} ({run.path}): no {label.strip()} (needs "
                        f"{NEEDS.get(key, key)}); its arm's mean is over the other seeds, and this seed is out of "
                        "that row's paired difference"
                    )
    return out


def compute_lines(
    study: Study, runs: Mapping[str, Sequence[Run]], summaries: Mapping[str, Sequence[Mapping[str, float]]],
    seeds: Sequence[int],
) -> list[str]:  # fmt: skip
    """UNEQUAL COMPUTE, STEPS DIFFER and ENGINES DIFFER lines (see the module docstring)."""
    out, base = [], study.baseline
    for i, seed in enumerate(seeds):
        b_roll, b_steps = summaries[base][i].get("rollouts", math.nan), len(runs[base][i].train_rows)
        for arm in (a for a in summaries if a != base):
            roll = summaries[arm][i].get("rollouts", math.nan)
            gap = relative_gap(roll, b_roll)
            if not math.isnan(gap) and abs(gap) > study.tolerance:
                out.append(
                    f"UNEQUAL COMPUTE: seed {seed}: {arm} generated {roll:,.0f} rollouts, {base} {b_roll:,.0f} "
                    f"({100 * gap:+.1f}%, over the {100 * study.tolerance:g}% tolerance): the arms did not get the "
                    "same compute; AUC is on the axis of rollouts, final accuracy is not"
                )
            steps = len(runs[arm][i].train_rows)
            if steps != b_steps:
                out.append(
                    f"STEPS DIFFER: seed {seed}: {base} {b_steps} steps, {arm} {steps} (arms are compared on the axis "
                    "of rollouts generated)"
                )
    engines = {arm: sorted({r.engine for r in rs}) for arm, rs in runs.items()}
    if len({tuple(e) for e in engines.values()}) > 1:
        out.append(f"ENGINES DIFFER: {engines}: the arms ran in different engines, which is not a paired study")
    return out


def _heading(study: Study, runs: Mapping[str, Sequence[Run]], seeds: Sequence[int]) -> str:
    engines = sorted({r.engine for rs in runs.values() for r in rs})
    return (
        f"{len(seeds)} paired seed(s) {list(seeds)}; arms {list(runs)} ({', '.join(engines)}); mean ± 95% CI over "
        f"seeds; 'arm - {study.baseline}' is the paired difference"
    )


def draw(
    study: Study, runs: Mapping[str, Sequence[Run]], seeds: Sequence[int], out_dir: Path, eval_key: str | None
) -> list[Path]:
    """Write every run's canonical rows under ``out_dir/runs`` and draw the plots from them."""
    from knapsack_rl.report.plots import plot_allocation, plot_axes, plot_comparison

    folders = write_rows(runs, seeds, out_dir / "runs")
    start = _allocation_start(runs[study.baseline], study.uniform_epochs)
    key = eval_key or "eval/avg@1"
    written = plot_comparison(folders, out_dir, eval_key=key, alloc_start=start, title=study.title)
    logs = {arm: [r.rows for r in rs] for arm, rs in runs.items()}
    axes, skipped = plot_axes(logs, out_dir, eval_key=key, title=study.title)
    for line in skipped:
        logger.info("%s", line)
    allocations = {arm: [r.allocations for r in rs] for arm, rs in runs.items()}
    alloc = plot_allocation(logs, allocations, out_dir / "allocation.png", title=study.title)
    return [*written, *axes, alloc]


def write_rows(runs: Mapping[str, Sequence[Run]], seeds: Sequence[int], root: Path) -> dict[str, list[Path]]:
    """Each run's canonical rows as ``root/<arm>/seed<S>/metrics.jsonl`` (and ``allocations.jsonl``); ``runs``
    holds every arm's runs in the order of ``seeds``."""
    folders: dict[str, list[Path]] = {}
    for arm, rs in runs.items():
        folders[arm] = []
        for seed, run in zip(seeds, rs, strict=True):
            folder = root / arm.replace(":", "-").replace("/", "-") / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / "metrics.jsonl", _jsonl(run.rows))
            atomic_write_bytes(folder / "allocations.jsonl", _jsonl(run.allocations))
            folders[arm].append(folder)
    return folders


def _jsonl(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """JSONL with non-finite numbers as null (as the trainer's own log writes them)."""

    def plain(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return "".join(json.dumps({k: plain(v) for k, v in r.items()}) + "\n" for r in rows).encode()


def _allocation_start(runs: Sequence[Run], uniform_epochs: int) -> int | None:
    """The last step before the first allocating epoch (where ``compare`` draws its marker); None unknown."""
    for r in runs[0].train_rows if runs else []:
        epoch = r.get("train/epoch")
        if epoch is not None and epoch >= uniform_epochs:
            return int(r["step"]) - 1
    return None
