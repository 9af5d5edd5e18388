"""The ``knapsack-rl simulate`` subcommand (matplotlib and tqdm are imported inside the handler)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from knapsack_rl.sim.config import SimConfig, init_names


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to the ``knapsack-rl`` subcommands."""
    p = sub.add_parser(
        "simulate",
        help="compare allocation rules in the offline simulator",
        description="Simulate GRPO learning dynamics with several allocation rules on the same worlds and "
        "random streams; print a table (mean ± 95%% CI over seeds) and write PNG plots.",
    )
    p.add_argument("--rules", default="uniform,knapsack-recipe,knapsack,dapo,uncertainty,greso",
                   help="comma-separated registered rules")  # fmt: skip
    p.add_argument("--prompts", type=int, default=10_000, help="training prompts")
    p.add_argument("--heldout", type=int, default=1_000, help="held-out prompts")
    p.add_argument("--steps", type=int, default=500, help="training steps")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..seeds-1)")
    p.add_argument("--prompts-per-step", type=int, default=256, help="prompts per step M")
    p.add_argument("--n", type=int, default=8, help="uniform rollouts per prompt N (budget N x M)")
    p.add_argument("--init", default="paper", choices=init_names(), help="initial success-rate distribution")
    p.add_argument("--target", type=float, default=None,
                   help="success rate for 'rollouts to target' (default: baseline's final)")  # fmt: skip
    p.add_argument("--target-from", default=None,
                   help="per seed, the target is this rule's final success (default: the baseline's)")  # fmt: skip
    p.add_argument("--baseline", default="uniform", help="rule the speed-up is measured against")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/simulate-<time>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from knapsack_rl.sim.run import run_rules
    from knapsack_rl.sim.summary import format_table, summarize

    config = SimConfig(
        num_prompts=args.prompts,
        num_heldout=args.heldout,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        n=args.n,
        init=args.init,
    )
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {args.seeds}")
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    start = time.perf_counter()
    traces = run_rules(config, rules, list(range(args.seeds)), progress=not args.no_progress)
    summaries, target = summarize(traces, target=args.target, target_from=args.target_from, baseline=args.baseline)
    print(format_table(summaries, target, args.baseline))
    out = args.out or Path("runs") / time.strftime("simulate-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "config": vars(config) | {"rules": rules, "seeds": args.seeds, "target": target},
        "summary": {s.rule: {k: vars(v) for k, v in s.stats.items()} | {"spend": s.spend} for s in summaries},
    }
    (out / "summary.json").write_text(json.dumps(record, indent=1, default=str))
    if not args.no_plots:
        from knapsack_rl.sim.plots import plot_budgets, plot_curves

        paths = [
            plot_curves(traces, out / "curves.png", title=f"{args.prompts} prompts, init={args.init}"),
            plot_budgets(traces, out / "budget_vs_p.png"),
        ]
        for path in paths:
            if path is not None:
                print(f"wrote {path}")
    print(f"wrote {out / 'summary.json'}  ({time.perf_counter() - start:.1f} s)")
    return 0
