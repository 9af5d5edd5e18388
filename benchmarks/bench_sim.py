"""Speed of the offline simulator: P prompts, M prompts per step, T steps, one rule per run.

Target (issue 4): 10k prompts, 256 prompts per step, 1000 steps, one rule, <= 60 s on 2 CPU cores.
Every run generates ``steps * B`` rollouts (equal compute), so rules that spend more per step (DAPO)
take fewer steps: compare rules by rollouts per second. Prints a table of median / min / max wall time
and the median CPU time of the process (``time.process_time``: on a shared machine, less sensitive to other
processes) over ``--repeats`` runs per rule, and with ``--profile`` the functions that take the most time in one
run of the first rule.

Usage: ``python benchmarks/bench_sim.py [--rules knapsack:recipe,uniform] [--repeats 3] [--json out.json]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import time
from pathlib import Path

from knapsack_rl.sim import SimConfig, simulate
from knapsack_rl.sim.cli import DEFAULT_RULES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=DEFAULT_RULES)
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--prompts-per-step", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one run of the first rule")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    config = SimConfig(num_prompts=args.prompts, prompts_per_step=args.prompts_per_step, steps=args.steps)
    rules = [r for r in args.rules.split(",") if r]
    rows = []
    print(f"P={args.prompts} M={args.prompts_per_step} steps={args.steps} repeats={args.repeats} "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print("| rule | median s | min s | max s | median cpu s | steps | steps/s (median) | rollouts/s (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for rule in rules:
        times, cpu, spend, steps = [], [], 0, 0
        for rep in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            trace = simulate(config, rule, seed=rep)
            cpu.append(time.process_time() - start_cpu)
            times.append(time.perf_counter() - start)
            spend, steps = int(trace.spend.sum()), int(trace.spend.size)
        med = statistics.median(times)
        row = {"rule": rule, "median_s": med, "min_s": min(times), "max_s": max(times),
               "median_cpu_s": statistics.median(cpu), "steps": steps, "spend": spend}  # fmt: skip
        rows.append(row)
        print(
            f"| {rule} | {med:.2f} | {min(times):.2f} | {max(times):.2f} | {row['median_cpu_s']:.2f} | {steps} "
            f"| {steps / med:.0f} "
            f"| {spend / med / 1e6:.2f}M |"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(simulate, config, rules[0], 0)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(18)
        print(buf.getvalue())
    if args.json is not None:
        args.json.write_text(json.dumps({"config": vars(config), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
