"""The ``knapsack-rl simulate`` subcommand (matplotlib and tqdm are imported inside the handler)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from knapsack_rl.io import atomic_write_text
from knapsack_rl.sim.config import SimConfig, init_names

if TYPE_CHECKING:
    from knapsack_rl.sim.run import RunTrace

DEFAULT_RULES = (
    "uniform,knapsack:recipe,knapsack:project,knapsack:two-phase,reinforce-ada,pilot-commit,dapo,greso,uncertainty,coba"
)
_DEFAULT = SimConfig()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to the ``knapsack-rl`` subcommands."""
    p = sub.add_parser(
        "simulate",
        help="compare allocation rules in the offline simulator",
        description="Simulate GRPO learning dynamics with several allocation rules on the same worlds and "
        "random streams, every rule at equal rollouts; print a table (mean ± 95% CI over seeds) and write PNG "
        "plots. With --regimes, one paired table per training regime (many epochs, few epochs, single pass).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rules", default=DEFAULT_RULES, help="comma-separated registered rules")
    p.add_argument("--regimes", default=None,
                   help="comma-separated regimes (many-epochs, few-epochs, single-pass) or 'all': one table each; "
                   "sets the number of training prompts and, unless --steps is given, the run length")  # fmt: skip
    p.add_argument("--prompts", type=int, default=None,
                   help=f"training prompts (default {_DEFAULT.num_prompts}; not with --regimes)")  # fmt: skip
    p.add_argument("--heldout", type=int, default=_DEFAULT.num_heldout, help="held-out prompts")
    p.add_argument("--steps", type=int, default=None,
                   help=f"run length in steps of B rollouts (default {_DEFAULT.steps}, or the regime's)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="number of paired seeds (0..seeds-1)")
    p.add_argument("--prompts-per-step", type=int, default=_DEFAULT.prompts_per_step, help="prompts per step M")
    p.add_argument("--n", type=int, default=_DEFAULT.n, help="uniform rollouts per prompt N (budget N x M)")
    p.add_argument("--init", default=_DEFAULT.init, choices=init_names(), help="initial success-rate distribution")
    p.add_argument("--loss-norm", default=_DEFAULT.loss_norm, choices=("trained", "budget", "group"),
                   help="update divisor: rollouts trained on (token-mean) or B (the same for every rule)")  # fmt: skip
    p.add_argument("--target", type=float, default=None,
                   help="success rate for 'rollouts to target' (default: baseline's final)")  # fmt: skip
    p.add_argument("--target-from", default=None,
                   help="per seed, the target is this rule's final success (default: the baseline's)")  # fmt: skip
    p.add_argument("--baseline", default="uniform", help="rule the speed-up is measured against")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/simulate-<time>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_simulate)


def _base_config(args: argparse.Namespace) -> SimConfig:
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {args.seeds}")
    if args.regimes is not None and args.prompts is not None:
        raise ValueError("--prompts and --regimes exclude each other: a regime sets the number of training prompts")
    changes = {"num_heldout": args.heldout, "prompts_per_step": args.prompts_per_step, "n": args.n, "init": args.init}
    changes["loss_norm"] = args.loss_norm
    if args.prompts is not None:
        changes["num_prompts"] = args.prompts
    if args.steps is not None:
        changes["steps"] = args.steps
    return dataclasses.replace(_DEFAULT, **changes)


def _run_simulate(args: argparse.Namespace) -> int:
    base = _base_config(args)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    out = args.out or Path("runs") / time.strftime("simulate-%Y%m%d-%H%M%S")
    start = time.perf_counter()
    if args.regimes is not None:
        _run_regimes(args, base, rules, out)
    else:
        _run_one(args, base, rules, out)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _run_one(args: argparse.Namespace, config: SimConfig, rules: list[str], out: Path) -> None:
    from knapsack_rl.sim.run import run_rules
    from knapsack_rl.sim.summary import CAVEAT, format_table, summarize

    traces = run_rules(config, rules, list(range(args.seeds)), progress=not args.no_progress)
    summaries, target = summarize(traces, target=args.target, target_from=args.target_from, baseline=args.baseline)
    print(format_table(summaries, target, args.baseline))
    print(f"\n{CAVEAT}\n")
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "caveat": CAVEAT,
        "config": vars(config) | {"rules": rules, "seeds": args.seeds, "target": target},
        "summary": {s.rule: {k: vars(v) for k, v in s.stats.items()} | {"spend": s.spend} for s in summaries},
    }
    atomic_write_text(out / "summary.json", json.dumps(record, indent=1, default=str))
    print(f"wrote {out / 'summary.json'}")
    if not args.no_plots:
        _plots(traces, out, "", f"{config.num_prompts} prompts, init={config.init}")


def _run_regimes(args: argparse.Namespace, base: SimConfig, rules: list[str], out: Path) -> None:
    from knapsack_rl.sim.regimes import REGIMES, regime_names, regime_table, run_regime
    from knapsack_rl.sim.summary import CAVEAT

    names = regime_names() if args.regimes == "all" else [r.strip() for r in args.regimes.split(",") if r.strip()]
    for name in names:
        REGIMES.get(name)  # fail fast on unknown names
    if args.baseline not in rules:
        raise ValueError(f"--baseline {args.baseline!r} must be one of --rules {rules}")
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for name in names:
        seeds = list(range(args.seeds))
        config, traces = run_regime(name, rules, seeds, base=base, steps=args.steps, progress=not args.no_progress)
        sections.append(regime_table(name, config, traces, baseline=args.baseline))
        print(sections[-1])
        if not args.no_plots:
            _plots(traces, out, f"{name}_", f"{name}: {config.num_prompts} prompts, init={config.init}")
    print(f"\n{CAVEAT}\n")
    atomic_write_text(out / "regimes.md", "\n".join([*sections, CAVEAT, ""]))
    print(f"wrote {out / 'regimes.md'}")


def _plots(traces: dict[str, list[RunTrace]], out: Path, prefix: str, title: str) -> None:
    from knapsack_rl.sim.plots import plot_budgets, plot_curves

    paths = [
        plot_curves(traces, out / f"{prefix}curves.png", title=title),
        plot_budgets(traces, out / f"{prefix}budget_vs_p.png"),
    ]
    for path in paths:
        if path is not None:
            print(f"wrote {path}")
