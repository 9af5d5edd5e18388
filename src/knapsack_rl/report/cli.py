"""``knapsack-rl report``: the paired table, verdict and plots of finished runs of any engine.

Light at start: NumPy and the report modules; matplotlib only when the plots are drawn.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

HELP = "paired table, verdict and plots of finished runs of any engine (verl, TRL, the reference trainer, own loops)"
DESCRIPTION = (
    "Read finished runs, pair the arms by seed and print the table and verdict of `compare`, with a flag for every "
    "unpaired seed, missing number and unequal compute; write the plots (held-out accuracy by rollouts, tokens and "
    "wall-clock; allocation diagnostics). SOURCE is a manifest (YAML: arms -> [{seed, path, engine?}]; "
    "docs/cluster.md) or a `knapsack-rl compare` folder."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser("report", help=HELP, description=DESCRIPTION)
    p.add_argument("source", type=Path, help="manifest file (YAML) or a compare folder")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where table.txt, the runs' canonical rows and the plots go (default: report/ beside the "
                   "manifest, or inside the compare folder)")  # fmt: skip
    p.add_argument("--baseline", default=None, help="the arm the others are paired against (default: the manifest's)")
    p.add_argument("--eval-metric", default=None, help="primary metric, e.g. eval/avg@4 (default: the manifest's)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="share by which an arm's rollouts may differ from the baseline's (default 0.02)")  # fmt: skip
    p.add_argument("--no-plots", action="store_true", help="print and write the table only")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from knapsack_rl.report.build import build_report
    from knapsack_rl.report.names import canonical_metric
    from knapsack_rl.report.study import load_study

    study = load_study(args.source)
    changes: dict[str, object] = {}
    if args.baseline is not None:
        if args.baseline not in study.arms:
            raise ValueError(f"--baseline {args.baseline!r} is not an arm; arms: {list(study.arms)}")
        changes["baseline"] = args.baseline
    if args.eval_metric is not None:
        changes["eval_metric"] = canonical_metric(args.eval_metric)
    if args.tolerance is not None:
        if not 0 <= args.tolerance < 1:
            raise ValueError(f"--tolerance must be a share in [0, 1); got {args.tolerance}")
        changes["tolerance"] = args.tolerance
    study = dataclasses.replace(study, **changes)  # type: ignore[arg-type]
    out_dir = args.out_dir or (args.source / "report" if args.source.is_dir() else args.source.parent / "report")
    result = build_report(study, out_dir, plots=not args.no_plots)
    print(result.text)
    return 0
