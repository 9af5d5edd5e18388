"""Allocation speed and memory: the solver before and after a change, and where its large-scale paths pay.

Workloads (recipe settings: n = 8, min_n = 2, max_n = 128, so each prompt takes 2..128 rollouts and
the knapsack places 6 extra per prompt on average; every prompt is "effective", 0 < p < 1):

- ``continuous``: p ~ Beta(0.35, 0.35), U-shaped as in RL training, kept in [1e-3, 1 - 1e-3]
  (what the ``ema`` and ``beta`` estimators produce);
- ``grid``: p = k / 16, k ~ Binomial(16, q), q ~ Beta(0.35, 0.35), 0 < k < 16 (16 recorded rewards);
- ``+costs``: per-prompt cost of a rollout ~ LogNormal(log 1, 0.5) (expected tokens, normalised),
  budget 6 * sum(costs);
- ``max_n=1e6``: the same with max_n = 10**6;
- ``posterior``: the posterior form of "paper", p ~ Beta(a, b) with a = 1 + u s, b = 1 + u f,
  (s, f) from 16 rewards and a forgetting factor u ~ U(0.5, 1) (continuous a, b).

Three tables:

1. **before / after**: ``solve`` (``method="greedy"``, which picks its path) against the solver of
   ``--old-ref`` (default: the commit before the one-entry solver), loaded from git and run on the
   same instance in the same process, the two interleaved run by run. Wall-clock medians
   (``time.perf_counter``) and CPU-time medians (``time.process_time``, less sensitive to other
   processes), the peak of Python's ``tracemalloc`` per prompt (NumPy reports its buffers to it), and
   whether the counts are identical. ``--old-ref add1d29`` compares with 0.1.0 instead (its dense
   table only where it fits, ``--old-max-cells``; it has no posterior values).
2. **where the large-scale machinery pays**: ``method="dense"`` (the dense top-R listing of
   :mod:`knapsack_rl.core.solve`) against ``method="threshold"`` (:mod:`knapsack_rl.core.solve_large`)
   over ``--crossover-sizes``, and the smallest M from which the threshold search is faster.
3. :func:`knapsack_rl.allocate` end to end on grid estimates, after and before (the old solver swapped
   in), and the recipe's dynamic programme where it finishes.
4. **allocate() against the recipe's DP** (``recipe``): the ``recipe`` preset's allocation settings
   (n = 8, min_n = 2, max_n = 128, the fallback and the recipe's scoring) on both sides, the only
   difference ``solver="dp"`` (our port of the recipe's dynamic programme) against the default
   ``solver="greedy"``, at ``--recipe-sizes`` (default 256, 1024, 2048; 256 prompts x 8 is the example
   step of docs/method.md), on estimates from 8 rollouts (k / 8, some 0 and 1) and on
   continuous ones. Interleaved round by round (who goes first alternates), CPU-time medians per call
   (wall too), the ratio the median of the per-round CPU ratios, and the two objectives' difference.
5. **memory of a whole allocate() call** (``memory``) at ``--memory-size`` prompts (default 10^6):
   the tracemalloc peak of the whole call above the level before it (the input already allocated, the
   returned Allocation included), and the solver's own peak inside it (above the level at the
   solver's call), per prompt, for the ``recipe`` preset and for ``AllocationConfig()``.

    python benchmarks/bench_allocate.py [--quick] [--repeats 7] [--sizes 256,1024,8192] [--json out.json]
    python benchmarks/bench_allocate.py --sections recipe,memory     # tables 4 and 5 only

BLAS/OpenMP threads are pinned to 1 (``--threads``) through the environment before NumPy loads. The
load average is printed before and after: on a shared machine, trust the CPU-time columns.
"""

from __future__ import annotations

import argparse
import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def _pin_threads(argv: list[str]) -> str:
    """Set the BLAS/OpenMP thread variables before NumPy is imported (``--threads N``, default 1)."""
    threads = "1"
    if "--threads" in argv:
        threads = argv[argv.index("--threads") + 1]
    for var in _THREAD_VARS:
        os.environ[var] = threads
    return threads


_pin_threads(sys.argv)

import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402

from knapsack_rl import allocate  # noqa: E402
from knapsack_rl.core.config import AllocationConfig, KnapsackConfig  # noqa: E402
from knapsack_rl.core.solve import Solution, solve  # noqa: E402
from knapsack_rl.core.value import ValueFunction, get_posterior_value, get_value  # noqa: E402

ALLOCATE_MODULE = importlib.import_module("knapsack_rl.core.allocate")  # the module (the package exports the function)
ROOT = Path(__file__).resolve().parents[1]
OLD_REF = "c91230a"  # main before the one-entry solver (solve_greedy + the threshold search)


@dataclass
class Case:
    """One solver instance."""

    name: str
    params: tuple[np.ndarray, ...]
    lower: np.ndarray
    upper: np.ndarray
    budget: float
    costs: np.ndarray | None = None
    posterior: bool = False

    @property
    def m(self) -> int:
        return int(self.lower.size)

    @property
    def value(self) -> ValueFunction:
        return get_posterior_value("paper") if self.posterior else get_value("paper")


def load_old(ref: str) -> ModuleType | None:
    """The solver module as committed at ``ref`` (None when git or the ref is unavailable)."""
    try:
        cmd = ["git", "show", f"{ref}:src/knapsack_rl/core/solve.py"]
        src = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("old_solve", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_solve"] = module  # dataclasses look their module up
    exec(compile(src, f"{ref}:solve.py", "exec"), module.__dict__)  # our own repository's code at ref
    return module


def u_shaped(rng: np.random.Generator, m: int) -> np.ndarray:
    return np.clip(rng.beta(0.35, 0.35, m), 1e-3, 1 - 1e-3)


def grid(rng: np.random.Generator, m: int) -> np.ndarray:
    k = rng.binomial(16, rng.beta(0.35, 0.35, 4 * m + 64))
    return (k[(k > 0) & (k < 16)][:m] / 16).astype(np.float64)


def make_case(kind: str, m: int, max_n: int, costs: bool, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    posterior = kind == "posterior"
    if posterior:
        s = rng.binomial(16, rng.beta(0.35, 0.35, m))
        u = rng.uniform(0.5, 1.0, m)
        params: tuple[np.ndarray, ...] = (1.0 + u * s, 1.0 + u * (16 - s))
    else:
        params = (grid(rng, m) if kind == "grid" else u_shaped(rng, m),)
    lower, upper = np.full(m, 2, dtype=np.int64), np.full(m, max_n, dtype=np.int64)
    c = rng.lognormal(0.0, 0.5, m) if costs else None
    budget = 6.0 * float(np.sum(c)) if c is not None else float(6 * m)
    name = f"{kind}{'+costs' if costs else ''}"
    return Case(name, params, lower, upper, budget if c is not None else int(budget), c, posterior)


def solve_new(case: Case, method: str = "greedy") -> Solution:
    return solve(case.value, case.params, case.lower, case.upper, case.budget, costs=case.costs, method=method)


def solve_old(old: ModuleType, case: Case) -> Solution:
    params = case.params if hasattr(old, "solve_threshold") else case.params[0]  # 0.1.0: one p array
    return old.solve_greedy(  # type: ignore[no-any-return]
        case.value, params, case.lower, case.upper, case.budget, costs=case.costs
    )


def time_pair(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU) medians of each function, run interleaved (one of each per round) after a warm-up."""
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            cpus[k].append(time.process_time() - cpu)
            walls[k].append(time.perf_counter() - wall)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus, strict=True)]


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak traced bytes above the level at the start of the call (tracemalloc)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def old_runs(old: ModuleType, case: Case, max_cells: float) -> bool:
    """Whether the old solver takes this case: 0.1.0 builds an (E, min(max cap, budget)) table and has
    no posterior values; later ones take everything."""
    if hasattr(old, "solve_threshold"):
        return True
    if case.posterior:
        return False
    width = min(int((case.upper - case.lower).max()), int(case.budget) + 1)
    rows = case.m if (case.costs is not None or "grid" not in case.name) else 64
    return rows * width <= max_cells


def print_table(header: list[tuple[str, int]], cells: list[str] | None = None) -> None:
    """Print the header (``cells`` None) or one row, right-aligned to the header's widths."""
    if cells is None:
        line = " ".join(f"{name:>{width}}" for name, width in header)
        print(line + "\n" + "-" * len(line), flush=True)
    else:
        print(" ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, header, strict=True)), flush=True)


BEFORE_AFTER = [("workload", 17), ("M", 8), ("max_n", 8), ("new ms", 9), ("old ms", 9), ("new cpu", 9),
                ("old cpu", 9), ("old/new", 8), ("new B/p", 8), ("old B/p", 8), ("same", 5)]  # fmt: skip


def run_before_after(args: argparse.Namespace, old: ModuleType | None) -> list[dict[str, object]]:
    plan: list[tuple[str, int, int, bool]] = []
    for m in args.sizes:
        for kind in ("continuous", "grid"):
            plan += [(kind, m, 128, False), (kind, m, 128, True)]
    for m in args.big_n_sizes:
        plan += [("continuous", m, 10**6, False), ("grid", m, 10**6, False), ("continuous", m, 10**6, True)]
    plan += [("posterior", m, 128, False) for m in args.posterior_sizes]
    if not plan:
        return []
    print_table(BEFORE_AFTER)
    rows = []
    for kind, m, max_n, costs in plan:
        case = make_case(kind, m, max_n, costs, seed=m + max_n)
        row: dict[str, object] = {"workload": case.name, "M": case.m, "max_n": max_n}
        new = solve_new(case)
        fns: list[Callable[[], object]] = [lambda case=case: solve_new(case)]
        ran_old = old is not None and old_runs(old, case, args.old_max_cells)
        if ran_old:
            fns.append(lambda case=case: solve_old(old, case))  # type: ignore[arg-type]
        times = time_pair(fns, args.repeats)
        row["new_s"], row["new_cpu_s"] = times[0]
        row["new_peak_bytes_per_prompt"] = peak_bytes(fns[0]) / case.m
        row["placed"] = new.placed
        cells = [case.name, str(case.m), str(max_n), f"{times[0][0] * 1e3:.2f}", "-", f"{times[0][1] * 1e3:.2f}"]
        cells += ["-", "-", f"{row['new_peak_bytes_per_prompt']:.0f}", "-", "-"]
        if ran_old:
            before = solve_old(old, case)  # type: ignore[arg-type]
            row["old_s"], row["old_cpu_s"] = times[1]
            row["old_peak_bytes_per_prompt"] = peak_bytes(fns[1]) / case.m
            row["same_counts"] = bool(np.array_equal(new.extra, before.extra))
            row["objective_diff"] = new.objective - before.objective  # > 0: the new one is better
            cells[4], cells[6] = f"{times[1][0] * 1e3:.2f}", f"{times[1][1] * 1e3:.2f}"
            cells[7], cells[9] = f"{times[1][1] / times[0][1]:.2f}x", f"{row['old_peak_bytes_per_prompt']:.0f}"
            cells[10] = "yes" if row["same_counts"] else "NO"
        print_table(BEFORE_AFTER, cells)
        rows.append(row)
    return rows


CROSSOVER = [("workload", 17), ("M", 8), ("dense ms", 9), ("thresh ms", 10), ("dense cpu", 10),
             ("thresh cpu", 11), ("faster", 10)]  # fmt: skip


def run_crossover(args: argparse.Namespace) -> list[dict[str, object]]:
    """method="dense" against method="threshold": the size from which the threshold search pays."""
    if not args.crossover_sizes:
        return []
    print_table(CROSSOVER)
    rows: list[dict[str, object]] = []
    first: dict[str, int] = {}  # workload -> smallest M of the threshold search's run of wins
    for kind, costs in (("continuous", False), ("grid", False), ("posterior", False), ("continuous", True)):
        name = f"{kind}{'+costs' if costs else ''}"
        for m in args.crossover_sizes:
            case = make_case(kind, m, 128, costs, seed=m)
            fns: list[Callable[[], object]] = [lambda c=case, k=k: solve_new(c, k) for k in ("dense", "threshold")]
            (dw, dc), (tw, tc) = time_pair(fns, args.repeats)
            faster = "threshold" if tc < dc else "dense"
            if faster == "threshold":
                first.setdefault(name, m)
            else:
                first.pop(name, None)  # "from M on": only a run of wins up to the largest size counts
            cells = [name, str(m), f"{dw * 1e3:.2f}", f"{tw * 1e3:.2f}", f"{dc * 1e3:.2f}", f"{tc * 1e3:.2f}", faster]
            print_table(CROSSOVER, cells)
            rows.append({"workload": name, "M": m, "dense_s": dw, "threshold_s": tw, "dense_cpu_s": dc,
                         "threshold_cpu_s": tc})  # fmt: skip
    for name in ("continuous", "grid", "posterior", "continuous+costs"):
        where = f"from M = {first[name]}" if name in first else "not within these sizes"
        print(f"  {name}: the threshold search is faster (CPU time) {where}")
    return rows


def allocate_old(old: ModuleType, p: np.ndarray, kw: dict[str, object]) -> object:
    """allocate() with the old solver in place of ``solve`` (same settings)."""
    new = ALLOCATE_MODULE.solve

    def old_solve(*args: object, method: str, **kwargs: object) -> Solution:
        return old.solve_greedy(*args, **kwargs)  # type: ignore[no-any-return]

    ALLOCATE_MODULE.solve = old_solve
    try:
        return allocate(p, **kw)  # type: ignore[arg-type]
    finally:
        ALLOCATE_MODULE.solve = new


ALLOCATE = [("M", 7), ("objective", 9), ("new ms", 8), ("old ms", 8), ("new cpu", 8), ("old cpu", 8),
            ("dp ms", 9), ("|obj diff|", 10)]  # fmt: skip


def run_allocate_rows(args: argparse.Namespace, old: ModuleType | None) -> list[dict[str, object]]:
    """allocate() end to end on grid estimates (many p = 0 / 1): after, before, and the recipe's DP."""
    if not args.allocate_sizes:
        return []
    print_table(ALLOCATE)
    rows = []
    for m in args.allocate_sizes:
        rng = np.random.default_rng(m)
        p = rng.binomial(16, rng.beta(0.35, 0.35, m)) / 16
        for objective in ("recipe", "paper"):
            kw: dict[str, object] = {"objective": objective}
            row: dict[str, object] = {"M": m, "objective": objective}
            new = allocate(p, **kw)  # type: ignore[arg-type]
            fns: list[Callable[[], object]] = [lambda kw=kw, p=p: allocate(p, **kw)]  # type: ignore[arg-type]
            if old is not None:
                fns.append(lambda kw=kw, p=p: allocate_old(old, p, kw))  # type: ignore[arg-type]
            times = time_pair(fns, args.repeats)
            row["new_s"], row["new_cpu_s"] = times[0]
            cells = [str(m), objective, f"{times[0][0] * 1e3:.3f}", "-", f"{times[0][1] * 1e3:.3f}", "-", "-", "-"]
            if old is not None:
                row["old_s"], row["old_cpu_s"] = times[1]
                cells[3], cells[5] = f"{times[1][0] * 1e3:.3f}", f"{times[1][1] * 1e3:.3f}"
            if m <= args.dp_max:
                kw_d = {**kw, "solver": "dp"}
                dp = allocate(p, **kw_d)  # type: ignore[arg-type]
                row["dp_s"] = time_pair([lambda kw=kw_d, p=p: allocate(p, **kw)], args.dp_repeats)[0][0]  # type: ignore[arg-type]
                row["obj_diff"] = abs(dp.objective - new.objective)
                cells[6], cells[7] = f"{float(row['dp_s']) * 1e3:.1f}", f"{float(row['obj_diff']):.1e}"  # type: ignore[arg-type]
            print_table(ALLOCATE, cells)
            rows.append(row)
    return rows


def recipe_estimates(kind: str, m: int, seed: int) -> np.ndarray:
    """``k8``: k / 8 from 8 rollouts of a prompt (success rate q ~ Beta(0.35, 0.35)), some 0 and 1 (what the
    recipe's estimator holds after a step of n = 8); ``continuous``: U-shaped in [1e-3, 1 - 1e-3]."""
    rng = np.random.default_rng(seed)
    return rng.binomial(8, rng.beta(0.35, 0.35, m)) / 8 if kind == "k8" else u_shaped(rng, m)


def time_calls(fn: Callable[[], object], min_s: float = 0.02) -> tuple[float, float]:
    """(wall, CPU) per call of ``fn``, run enough times in a row to take about ``min_s`` of CPU."""
    calls, cpu, wall = 0, time.process_time(), time.perf_counter()
    while True:
        fn()
        calls += 1
        if time.process_time() - cpu >= min_s:
            return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


RECIPE = [("workload", 10), ("M", 6), ("alloc cpu ms", 13), ("dp cpu ms", 10), ("dp/alloc cpu", 13),
          ("alloc ms", 9), ("dp ms", 9), ("|obj diff|", 10), ("fallback", 9)]  # fmt: skip


def run_recipe(args: argparse.Namespace) -> list[dict[str, object]]:
    """allocate() with the recipe preset's settings: the default solver against solver="dp", interleaved."""
    cfg = KnapsackConfig.preset("recipe").allocation
    dp_cfg = replace(cfg, solver="dp")
    print(f"recipe preset allocation: n={cfg.n} min_n={cfg.min_n} max_n={cfg.max_n} objective={cfg.objective} "
          f"fallback={cfg.fallback} overflow={cfg.overflow} solver={cfg.solver} vs solver={dp_cfg.solver}; "
          f"{args.recipe_repeats} rounds")  # fmt: skip
    print_table(RECIPE)
    rows: list[dict[str, object]] = []
    for kind in ("k8", "continuous"):
        for m in args.recipe_sizes:
            p = recipe_estimates(kind, m, seed=m)
            ours, dp = allocate(p, cfg), allocate(p, dp_cfg)  # warm-up, and the objectives
            fns = {"alloc": lambda p=p: allocate(p, cfg), "dp": lambda p=p: allocate(p, dp_cfg)}
            got: dict[str, list[tuple[float, float]]] = {"alloc": [], "dp": []}
            for k in range(args.recipe_repeats):
                for name in ("alloc", "dp") if k % 2 == 0 else ("dp", "alloc"):
                    got[name].append(time_calls(fns[name]))
            wall = {n: statistics.median(w for w, _ in v) for n, v in got.items()}
            cpu = {n: statistics.median(c for _, c in v) for n, v in got.items()}
            ratio = statistics.median(d[1] / a[1] for d, a in zip(got["dp"], got["alloc"], strict=True))
            row = {"workload": kind, "M": m, "alloc_cpu_s": cpu["alloc"], "dp_cpu_s": cpu["dp"], "dp_over_alloc_cpu":
                   ratio, "alloc_s": wall["alloc"], "dp_s": wall["dp"], "obj_diff": abs(dp.objective - ours.objective),
                   "fallback_fired": ours.fallback_fired}  # fmt: skip
            cells = [kind, str(m), f"{cpu['alloc'] * 1e3:.3f}", f"{cpu['dp'] * 1e3:.1f}", f"{ratio:.0f}x",
                     f"{wall['alloc'] * 1e3:.3f}", f"{wall['dp'] * 1e3:.1f}", f"{row['obj_diff']:.1e}",
                     "yes" if ours.fallback_fired else "no"]  # fmt: skip
            print_table(RECIPE, cells)
            rows.append(row)
    return rows


def allocate_peaks(p: np.ndarray, cfg: AllocationConfig) -> tuple[int, int]:
    """(whole call, solver) tracemalloc peaks in bytes: the whole allocate() call above the level before it,
    and the solver's largest peak above the level at its call (the solver swapped for a measuring wrapper)."""
    whole = peak_bytes(lambda: allocate(p, cfg))
    inner = ALLOCATE_MODULE.solve
    solver_peaks: list[int] = []

    def measured(*args: object, **kwargs: object) -> Solution:
        level = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            return inner(*args, **kwargs)  # type: ignore[no-any-return]
        finally:
            solver_peaks.append(tracemalloc.get_traced_memory()[1] - level)

    ALLOCATE_MODULE.solve = measured
    try:
        peak_bytes(lambda: allocate(p, cfg))
    finally:
        ALLOCATE_MODULE.solve = inner
    return whole, max(solver_peaks)


MEMORY = [("settings", 20), ("estimates", 10), ("M", 8), ("whole call B/p", 15), ("solver B/p", 11)]


def run_memory(args: argparse.Namespace) -> list[dict[str, object]]:
    """Peak memory per prompt of a whole allocate() call and of the solver inside it."""
    m = args.memory_size
    print("tracemalloc peaks per prompt: 'whole call' above the level before allocate() (its input p, 8 B/prompt,")
    print("already allocated; the returned Allocation included); 'solver' above the level at the solver's call")
    print_table(MEMORY)
    rows: list[dict[str, object]] = []
    configs = {"recipe preset": KnapsackConfig.preset("recipe").allocation, "AllocationConfig()": AllocationConfig()}
    for name, cfg in configs.items():
        for kind in ("k8", "continuous"):
            whole, solver = allocate_peaks(recipe_estimates(kind, m, seed=m), cfg)
            print_table(MEMORY, [name, kind, str(m), f"{whole / m:.0f}", f"{solver / m:.0f}"])
            rows.append({"settings": name, "estimates": kind, "M": m, "whole_bytes_per_prompt": whole / m,
                         "solver_bytes_per_prompt": solver / m})  # fmt: skip
    return rows


SECTIONS = ("before-after", "crossover", "allocate", "recipe", "memory")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats: a few seconds")
    parser.add_argument("--repeats", type=int, default=7, help="runs per measurement (median)")
    parser.add_argument("--dp-repeats", type=int, default=3, help="runs per DP measurement (median)")
    parser.add_argument("--dp-max", type=int, default=1024, help="largest M for the recipe's DP")
    parser.add_argument("--old-ref", default=OLD_REF, help="git ref of the solver to compare with ('' to skip it)")
    parser.add_argument("--old-max-cells", type=float, default=2e7, help="largest dense table 0.1.0 gets")
    parser.add_argument("--threads", default="1", help="BLAS/OpenMP threads (set before NumPy loads)")
    parser.add_argument("--json", default=None, help="also write all rows as JSON here")
    sizes = "comma-separated prompt counts M ('' for none)"
    parser.add_argument("--sizes", default="256,1024,2048,8192,100000,1000000", help=f"max_n = 128 rows: {sizes}")
    parser.add_argument("--big-n-sizes", default="1024,10000", help=f"max_n = 10**6 rows: {sizes}")
    parser.add_argument("--posterior-sizes", default="256,1024,8192,100000", help=f"posterior rows: {sizes}")
    crossover = "256,512,1024,2048,4096,8192,32768,100000"
    parser.add_argument("--crossover-sizes", default=crossover, help=f"dense vs threshold: {sizes}")
    parser.add_argument("--allocate-sizes", default="256,1024,8192", help=f"allocate() rows: {sizes}")
    parser.add_argument("--recipe-sizes", default="256,1024,2048", help=f"allocate() vs the recipe's DP: {sizes}")
    parser.add_argument("--recipe-repeats", type=int, default=7, help="rounds of allocate() vs the DP (median)")
    parser.add_argument("--memory-size", type=int, default=10**6, help="prompts of the whole-call memory table")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"tables to run, comma-separated: {SECTIONS}")
    args = parser.parse_args(argv)
    for name in ("sizes", "big_n_sizes", "posterior_sizes", "crossover_sizes", "allocate_sizes", "recipe_sizes"):
        setattr(args, name, [int(v) for v in getattr(args, name).split(",") if v])
    args.sections = [v for v in args.sections.split(",") if v]
    for section in args.sections:
        if section not in SECTIONS:
            parser.error(f"--sections: unknown table {section!r}; choose from {', '.join(SECTIONS)}")
    if args.quick:
        args.repeats, args.dp_repeats, args.dp_max, args.old_max_cells = 3, 1, 256, 1e6
        args.sizes, args.big_n_sizes, args.posterior_sizes = [256, 2048], [1000], [1000]
        args.crossover_sizes, args.allocate_sizes = [256, 4096], [256]
        args.recipe_sizes, args.recipe_repeats, args.memory_size = [256], 3, 10**4
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    needs_old = {"before-after", "allocate"} & set(args.sections)
    old = load_old(args.old_ref) if args.old_ref and needs_old else None
    threads = ", ".join(f"{v}={os.environ.get(v)}" for v in _THREAD_VARS)
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"threads: {threads}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    old_state = args.old_ref if old is not None else ("not available" if needs_old else "not needed")
    print(f"old solver: {old_state}; tables 1-3: medians of {args.repeats} runs")
    print("memory: tracemalloc peak above the level at the call (NumPy buffers), bytes per prompt\n")
    runs: dict[str, Callable[[], list[dict[str, object]]]] = {
        "before-after": lambda: run_before_after(args, old),
        "crossover": lambda: run_crossover(args),
        "allocate": lambda: run_allocate_rows(args, old),
        "recipe": lambda: run_recipe(args),
        "memory": lambda: run_memory(args),
    }
    results: dict[str, list[dict[str, object]]] = {}
    for section in SECTIONS:
        if section in args.sections:
            results[section] = runs[section]()
            print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        meta = {"threads": threads, "numpy": np.__version__, "old_ref": args.old_ref, "repeats": args.repeats}
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        payload = {"meta": meta, **{k.replace("-", "_"): v for k, v in results.items()}}
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, out)  # atomic: a reader sees the old file or the new one


if __name__ == "__main__":
    main()
