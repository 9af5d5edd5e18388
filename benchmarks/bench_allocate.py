"""Allocation speed: the exact greedy solver vs the project's dynamic programme, same instances, same run.

Success rates are drawn from a U-shaped distribution on a 1/16 grid (k / 16 with k ~ Binomial(16, q),
q ~ Beta(0.35, 0.35)), as with 16 recorded rewards per prompt: many prompts at p = 0 and p = 1.
Settings are the recipe's: n = 8 (B = 8 M), min_n = 2, max_n = 128, fallback on, objective "recipe"
and "paper". The DP runs where it finishes in reasonable time (M <= 1024).

    python benchmarks/bench_allocate.py [--repeats 21] [--dp-repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from knapsack_rl import allocate


def u_shaped(m: int, seed: int) -> np.ndarray:
    """``k / 16`` with ``k ~ Binomial(16, q)``, ``q ~ Beta(0.35, 0.35)``."""
    rng = np.random.default_rng(seed)
    return rng.binomial(16, rng.beta(0.35, 0.35, m)) / 16


def time_call(p: np.ndarray, repeats: int, **kwargs: object) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = allocate(p, **kwargs)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,8192,100000", help="comma-separated prompt counts M")
    parser.add_argument("--repeats", type=int, default=21, help="runs per greedy measurement (median)")
    parser.add_argument("--dp-repeats", type=int, default=3, help="runs per DP measurement (median)")
    parser.add_argument("--dp-max", type=int, default=1024, help="largest M for the DP")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    cols = ("M", "objective", "fallback", "effective", "greedy ms", "dp ms", "speed-up", "|obj diff|")
    widths = (7, 9, 8, 9, 10, 10, 9, 10)
    header = " ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))
    print(header)
    print("-" * len(header))
    for m in (int(s) for s in args.sizes.split(",")):
        p = u_shaped(m, seed=m)
        for objective, fallback in (("recipe", True), ("paper", True), ("paper", False)):
            kw = {"objective": objective, "fallback": fallback}
            allocate(p, **kw)  # type: ignore[arg-type]  # warm-up
            g_s, g = time_call(p, args.repeats, **kw)
            row = {"M": m, **kw, "effective": int(g.bucket_counts()["effective"]), "greedy_s": g_s}
            dp_txt = speed_txt = diff_txt = "-"
            if m <= args.dp_max:
                d_s, d = time_call(p, args.dp_repeats, solver="dp", **kw)
                assert d.budgets.sum() == g.budgets.sum() == 8 * m
                row.update(dp_s=d_s, obj_diff=abs(d.objective - g.objective))
                dp_txt, speed_txt, diff_txt = f"{d_s * 1e3:10.1f}", f"{d_s / g_s:8.0f}x", f"{row['obj_diff']:10.1e}"
            rows.append(row)
            cells = (m, objective, "on" if fallback else "off", row["effective"], f"{g_s * 1e3:.3f}")
            cells += (dp_txt.strip(), speed_txt.strip(), diff_txt.strip())
            print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
