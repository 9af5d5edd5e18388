"""Allocation speed and memory: the knapsack solvers at scale, the landed solver beside the new one.

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

For each row the new solver (``solve``, which picks its path) and the landed one (loaded from
git, ``--old-ref``) run on the same instance in the same process; the landed one only where its
dense table fits (``--old-max-cells``). Times are medians of ``--repeats`` runs after one warm-up
(wall clock, ``time.perf_counter``). Memory is the peak of Python's ``tracemalloc`` (NumPy reports
its buffers to it) above the level before the call, in a separate run, per prompt. A second table
times :func:`knapsack_rl.allocate` end to end on grid estimates (the landed solver registered as
``"landed"``) and the recipe's dynamic programme where it finishes.

    python benchmarks/bench_allocate.py [--quick] [--repeats 7] [--sizes 100000,1000000] [--json out.json]

BLAS/OpenMP threads are pinned to 1 (``--threads``) through the environment before NumPy loads.
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
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402

from knapsack_rl import allocate  # noqa: E402
from knapsack_rl.core.solve import Solution, solve  # noqa: E402
from knapsack_rl.core.value import get_posterior_value, get_value  # noqa: E402

ALLOCATE_MODULE = importlib.import_module("knapsack_rl.core.allocate")  # the module (the package exports the function)
ROOT = Path(__file__).resolve().parents[1]
LANDED_REF = "add1d29"  # main before the O(E)-memory solver


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
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return int(self.lower.size)


def load_landed(ref: str) -> ModuleType | None:
    """The solver module as committed at ``ref`` (None when git or the ref is unavailable)."""
    try:
        cmd = ["git", "show", f"{ref}:src/knapsack_rl/core/solve.py"]
        src = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("landed_solve", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["landed_solve"] = module  # dataclasses look their module up
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


def solve_new(case: Case) -> Solution:
    fn = get_posterior_value("paper") if case.posterior else get_value("paper")
    return solve(fn, case.params, case.lower, case.upper, case.budget, costs=case.costs)


def solve_old(landed: ModuleType, case: Case) -> Solution:
    return landed.solve_greedy(  # type: ignore[no-any-return]
        get_value("paper"), case.params[0], case.lower, case.upper, case.budget, costs=case.costs
    )


def allocate_landed(landed: ModuleType, p: np.ndarray, kw: dict[str, object]) -> object:
    """allocate() with the landed solver in place of ``solve`` (same settings)."""
    new = ALLOCATE_MODULE.solve

    def landed_solve(*args: object, method: str, **kwargs: object) -> Solution:
        return landed.solve_greedy(*args, **kwargs)  # type: ignore[no-any-return]

    ALLOCATE_MODULE.solve = landed_solve  # type: ignore[assignment]
    try:
        return allocate(p, **kw)  # type: ignore[arg-type]
    finally:
        ALLOCATE_MODULE.solve = new


def time_median(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak traced bytes above the level at the start of the call (tracemalloc)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def old_fits(case: Case, max_cells: float) -> bool:
    """The landed solver builds an (E, min(max cap, budget)) table (no merging of rows with costs)."""
    if case.posterior:
        return False  # it has no posterior values
    width = min(int((case.upper - case.lower).max()), int(case.budget) + 1)
    rows = case.m if (case.costs is not None or "grid" not in case.name) else 64
    return rows * width <= max_cells


def run_solver_rows(args: argparse.Namespace, landed: ModuleType | None) -> list[dict[str, object]]:
    plan: list[tuple[str, int, int, bool]] = []
    for m in args.sizes:
        for kind in ("continuous", "grid"):
            plan += [(kind, m, 128, False), (kind, m, 128, True)]
    for m in args.big_n_sizes:
        plan += [("continuous", m, 10**6, False), ("grid", m, 10**6, False), ("continuous", m, 10**6, True)]
    for m in args.posterior_sizes:
        plan.append(("posterior", m, 128, False))
    rows = []
    for kind, m, max_n, costs in plan:
        case = make_case(kind, m, max_n, costs, seed=m + max_n)
        row: dict[str, object] = {"workload": case.name, "M": case.m, "max_n": max_n}
        new = solve_new(case)
        row["new_s"] = time_median(lambda case=case: solve_new(case), args.repeats)
        row["new_peak_bytes_per_prompt"] = peak_bytes(lambda case=case: solve_new(case)) / case.m
        row["placed"] = new.placed
        if landed is not None and old_fits(case, args.old_max_cells):
            old = solve_old(landed, case)
            row["old_s"] = time_median(lambda case=case: solve_old(landed, case), args.old_repeats)
            row["old_peak_bytes_per_prompt"] = peak_bytes(lambda case=case: solve_old(landed, case)) / case.m
            row["objective_diff"] = new.objective - old.objective  # > 0: the new one is better
            row["old_placed"] = old.placed
        rows.append(row)
        print_row(row)
    return rows


COLUMNS = (
    ("workload", 17, "{}"),
    ("M", 8, "{}"),
    ("max_n", 8, "{}"),
    ("new ms", 10, "{:.2f}"),
    ("old ms", 10, "{:.1f}"),
    ("speed-up", 9, "{:.1f}x"),
    ("new B/prompt", 13, "{:.0f}"),
    ("old B/prompt", 13, "{:.0f}"),
    ("obj new-old", 12, "{:.1e}"),
)


def print_header() -> None:
    header = " ".join(f"{name:>{width}}" for name, width, _ in COLUMNS)
    print(header)
    print("-" * len(header))


def print_row(row: dict[str, object]) -> None:
    new_s, old_s = row["new_s"], row.get("old_s")
    values = (
        row["workload"],
        row["M"],
        row["max_n"],
        float(new_s) * 1e3,  # type: ignore[arg-type]
        None if old_s is None else float(old_s) * 1e3,  # type: ignore[arg-type]
        None if old_s is None else float(old_s) / float(new_s),  # type: ignore[arg-type]
        row["new_peak_bytes_per_prompt"],
        row.get("old_peak_bytes_per_prompt"),
        row.get("objective_diff"),
    )
    cells = [("-" if v is None else fmt.format(v)) for v, (_, _, fmt) in zip(values, COLUMNS, strict=True)]
    print(" ".join(f"{c:>{w}}" for c, (_, w, _) in zip(cells, COLUMNS, strict=True)), flush=True)


def run_allocate_rows(args: argparse.Namespace, landed: ModuleType | None) -> list[dict[str, object]]:
    """allocate() end to end on grid estimates (many p = 0 / 1): new solver, landed solver, recipe DP."""
    rows = []
    print(f"\n{'M':>7} {'objective':>9} {'new ms':>9} {'landed ms':>10} {'dp ms':>10} {'|obj diff|':>11}")
    for m in args.allocate_sizes:
        rng = np.random.default_rng(m)
        p = rng.binomial(16, rng.beta(0.35, 0.35, m)) / 16
        for objective in ("recipe", "paper"):
            kw: dict[str, object] = {"objective": objective}
            row: dict[str, object] = {"M": m, "objective": objective}
            new = allocate(p, **kw)  # type: ignore[arg-type]
            row["new_s"] = time_median(lambda kw=kw, p=p: allocate(p, **kw), args.repeats)  # type: ignore[arg-type]
            cells = [f"{m:>7}", f"{objective:>9}", f"{float(row['new_s']) * 1e3:>9.3f}"]  # type: ignore[arg-type]
            if landed is not None:
                row["landed_s"] = time_median(lambda kw=kw, p=p: allocate_landed(landed, p, kw), args.repeats)
                cells.append(f"{float(row['landed_s']) * 1e3:>10.3f}")  # type: ignore[arg-type]
            else:
                cells.append(f"{'-':>10}")
            if m <= args.dp_max:
                kw_d = {**kw, "solver": "dp"}
                dp = allocate(p, **kw_d)  # type: ignore[arg-type]
                row["dp_s"] = time_median(lambda kw=kw_d, p=p: allocate(p, **kw), args.dp_repeats)  # type: ignore[arg-type]
                row["obj_diff"] = abs(dp.objective - new.objective)
                cells += [f"{float(row['dp_s']) * 1e3:>10.1f}", f"{float(row['obj_diff']):>11.1e}"]  # type: ignore[arg-type]
            else:
                cells += [f"{'-':>10}", f"{'-':>11}"]
            print(" ".join(cells), flush=True)
            rows.append(row)
    return rows


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats: a few seconds")
    parser.add_argument("--repeats", type=int, default=7, help="runs per new-solver measurement (median)")
    parser.add_argument("--old-repeats", type=int, default=3, help="runs per landed-solver measurement (median)")
    parser.add_argument("--dp-repeats", type=int, default=3, help="runs per DP measurement (median)")
    parser.add_argument("--dp-max", type=int, default=1024, help="largest M for the recipe's DP")
    parser.add_argument("--old-ref", default=LANDED_REF, help="git ref of the landed solver ('' to skip it)")
    parser.add_argument("--old-max-cells", type=float, default=2e7, help="largest dense table the landed one gets")
    parser.add_argument("--threads", default="1", help="BLAS/OpenMP threads (set before NumPy loads)")
    parser.add_argument("--json", default=None, help="also write all rows as JSON here")
    sizes = "comma-separated prompt counts M ('' for none)"
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help=f"max_n = 128 rows: {sizes}")
    parser.add_argument("--big-n-sizes", default="10000", help=f"max_n = 10**6 rows: {sizes}")
    parser.add_argument("--posterior-sizes", default="10000,100000", help=f"posterior rows: {sizes}")
    parser.add_argument("--allocate-sizes", default="256,1024,8192", help=f"allocate() rows: {sizes}")
    args = parser.parse_args(argv)
    for name in ("sizes", "big_n_sizes", "posterior_sizes", "allocate_sizes"):
        setattr(args, name, [int(v) for v in getattr(args, name).split(",") if v])
    if args.quick:
        args.repeats, args.old_repeats, args.dp_repeats, args.dp_max, args.old_max_cells = 3, 1, 1, 256, 1e6
        args.sizes, args.big_n_sizes, args.posterior_sizes, args.allocate_sizes = [1000, 10_000], [1000], [1000], [256]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    landed = load_landed(args.old_ref) if args.old_ref else None
    threads = ", ".join(f"{v}={os.environ.get(v)}" for v in _THREAD_VARS)
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"threads: {threads}; load average before: {os.getloadavg()}")
    print(f"landed solver: {args.old_ref if landed is not None else 'not available'}; medians of {args.repeats} runs")
    print("memory: tracemalloc peak above the level at the call (NumPy buffers), per prompt\n")
    print_header()
    solver_rows = run_solver_rows(args, landed)
    allocate_rows = run_allocate_rows(args, landed)
    print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        meta = {"threads": threads, "numpy": np.__version__, "landed_ref": args.old_ref, "repeats": args.repeats}
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({"meta": meta, "solver": solver_rows, "allocate": allocate_rows}, indent=1))
        os.replace(tmp, out)  # atomic: a reader sees the old file or the new one


if __name__ == "__main__":
    main()
