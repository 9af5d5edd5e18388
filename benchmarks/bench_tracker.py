"""Tracker speed: one step's update + estimate beside allocate() on the same step, and whole plans.

A step is M prompts x n rollouts (default 8192 x 8). Rows, interleaved in one loop so that both sides
see the same machine load (medians over ``--repeats`` of the process's CPU time, so that other
processes on a shared machine slow a row less than they would its wall-clock time):

- ``update + estimate``: ``tracker.update(rollout_ids, rewards)`` on prompts the tracker has seen, then
  ``tracker.estimate(prompt_ids)``; each timed step is a new epoch, as in training (every prompt comes
  once an epoch, so the recipe estimator reads its ring of recent rewards); ids given as an int64
  array listed prompt by prompt (what the trainer and the verl hooks pass), the same array with
  rollouts interleaved across prompts (rollout 0 of every prompt, then rollout 1, ...), the same
  array shuffled, a list of Python ints, a list of str ids, and an int64 array grouped with the
  budgets ``allocate`` gives these prompts (a knapsack step: 2 to 128 rollouts each, so groups differ
  in size and many bring more than the window);
- ``allocate``: ``allocate(p_hat)`` with the tracker's estimates of that step (recipe settings, n = 8);
- the ``project`` preset's pair, what a :class:`~knapsack_rl.Planner` with posterior scoring does per
  step (where the tracker has ``posterior``): ``update + estimate + posterior`` (int64 array, grouped)
  and ``allocate, posterior``: ``allocate`` of the posterior means with the Beta posterior ``(a, b)``;
- ``update, new prompts``: a first update of M unseen prompts (index growth included);
- ``plan``: a :class:`~knapsack_rl.Planner`'s whole plan of ``--plan-prompts`` (default 256) prompts
  from a tracker of ``--signal-prompts`` (default 1e5) prompts after 4 epochs of 2-20 rollouts each,
  for the ``project`` preset (Beta posterior) and the ``signal`` preset (a population prior fitted to
  the tracked prompts; where the planner warm-starts it, each fit goes on from the last), each planner
  observing every step it plans as in training (the first plan is not timed); skipped on versions
  without ``signal``.

BLAS and OpenMP threads are pinned to 1 (set before NumPy is imported); the load average is printed.
Runs on any version with the public Tracker API, so the same script times an earlier tracker too.

    python benchmarks/bench_tracker.py [--prompts 8192] [--rollouts 8] [--repeats 31] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from knapsack_rl import KnapsackConfig, Planner, Tracker, TrackerConfig, allocate  # noqa: E402

POSTERIOR_TRACKER = "update+estimate+posterior"
POSTERIOR_ALLOCATE = "allocate, posterior"
KNAPSACK_STEP = "int64 array, knapsack step"


def _timed(fn: Callable[[], object]) -> float:
    """CPU seconds of the process spent in ``fn()`` (one thread: BLAS and OpenMP are pinned to 1)."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def step_rows(m: int, n: int, repeats: int, seed: int) -> list[dict[str, object]]:
    """update + estimate for several id forms, interleaved with allocate on the same estimates."""
    rng = np.random.default_rng(seed)
    prompts = rng.permutation(10 * m)[:m].astype(np.int64)  # (M,) sparse dataset indices
    grouped = np.repeat(prompts, n)  # (M n,) rollouts listed prompt by prompt
    j = np.arange(grouped.size)
    interleaved = grouped[np.lexsort((j // n, j % n))]  # rollout 0 of every prompt, then rollout 1, ...
    first = Tracker(TrackerConfig(min_count=1))
    first.update(grouped, rng.integers(0, 2, grouped.size), epoch=0)
    budgets = allocate(first.estimate(prompts)).budgets  # (M,) a knapsack step's rollouts per prompt
    assert budgets.sum() == grouped.size
    forms: dict[str, tuple[object, object]] = {
        "int64 array, grouped": (grouped, prompts),
        "int64 array, interleaved": (interleaved, prompts),
        "int64 array, shuffled": (grouped[rng.permutation(grouped.size)], prompts),
        "list of int": (grouped.tolist(), prompts.tolist()),
        "list of str": ([f"prompt-{i}" for i in grouped.tolist()], [f"prompt-{i}" for i in prompts.tolist()]),
        KNAPSACK_STEP: (np.repeat(prompts, budgets), prompts),
    }
    trackers = {}
    for name, (ids, _) in forms.items():
        t = Tracker(TrackerConfig(min_count=1))
        t.update(ids, rng.integers(0, 2, grouped.size), epoch=0)  # every prompt seen once
        trackers[name] = t
    trackers[POSTERIOR_TRACKER] = Tracker.from_state_dict(trackers["int64 array, grouped"].state_dict())
    rewards = rng.integers(0, 2, grouped.size).astype(np.float64)
    p_hat = trackers["int64 array, grouped"].estimate(prompts)  # the estimates allocate() is timed on
    epoch = [0]  # each repeat is a new epoch, as in training (every prompt comes once an epoch)

    def step(t: Tracker, ids: object, uniq: object) -> Callable[[], object]:
        return lambda: (t.update(ids, rewards, epoch=epoch[0]), t.estimate(uniq))

    def new_prompts() -> object:
        fresh = Tracker(TrackerConfig(min_count=1))
        return fresh.update(grouped + epoch[0] * 10 * m, rewards, epoch=0)  # ids it has not seen

    cases: dict[str, Callable[[], object]] = {name: step(trackers[name], *forms[name]) for name in forms}
    cases["allocate"] = lambda: allocate(p_hat)
    cases["update, new prompts"] = new_prompts
    if hasattr(Tracker, "posterior"):  # the landed tracker has no posterior
        t = trackers[POSTERIOR_TRACKER]  # its own: two updates of one tracker in an epoch would fill it
        a, b = t.posterior(prompts)
        project = KnapsackConfig.preset("project").allocation
        cases[POSTERIOR_TRACKER] = lambda: (step(t, grouped, prompts)(), t.posterior(prompts))
        cases[POSTERIOR_ALLOCATE] = lambda: allocate(a / (a + b), project, posterior=(a, b))
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        epoch[0] = r + 1
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotated: each case follows each other
            times[name].append(_timed(cases[name]))
    return [{"case": name, "M": m, "n": n, "median_ms": statistics.median(ts) * 1e3} for name, ts in times.items()]


def plan_rows(tracked: int, m: int, repeats: int, seed: int) -> list[dict[str, object]]:
    """Planners' plans of m prompts from a tracker of ``tracked`` prompts, ``project`` beside ``signal``.

    Each timed plan is of a new step, and each planner then observes the rollouts it planned (not
    timed), as in training: a plan's work can depend on what changed since the last one.
    """
    try:
        configs = {name: KnapsackConfig.preset(name) for name in ("project", "signal")}
    except ValueError:
        return []  # a version without the signal preset
    rng = np.random.default_rng(seed)
    ids, p = np.arange(tracked, dtype=np.int64), rng.beta(0.3, 0.3, tracked)
    planners = {name: Planner(cfg) for name, cfg in configs.items()}
    for epoch in range(4):
        k = rng.integers(2, 21, tracked) if epoch else np.full(tracked, 8)
        rollout_ids = np.repeat(ids, k)
        rewards = (rng.random(rollout_ids.size) < p[rollout_ids]).astype(np.float64)
        for planner in planners.values():
            planner.observe(rollout_ids, rewards, epoch=epoch)
    times: dict[str, list[float]] = {name: [] for name in planners}
    for r in range(repeats + 1):  # the first plan of each planner is not timed
        step = rng.choice(ids, size=m, replace=False)
        draws = rng.random(m * 128)
        for name, planner in planners.items():
            start = time.process_time()
            plan = planner.plan(step, epoch=4)
            if r:
                times[name].append(time.process_time() - start)
            rollout_ids = np.repeat(step, plan.budgets)
            rewards = (draws[: rollout_ids.size] < p[rollout_ids]).astype(np.float64)
            planner.observe(rollout_ids, rewards, epoch=4)
    return [
        {"case": f"plan, {name}", "M": m, "n": tracked, "median_ms": statistics.median(ts) * 1e3}
        for name, ts in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=8192, help="prompts per step M")
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per prompt n")
    parser.add_argument("--plan-prompts", type=int, default=256, help="prompts per step in the plan rows")
    parser.add_argument("--signal-prompts", type=int, default=100_000, help="tracked prompts in the plan rows")
    parser.add_argument("--repeats", type=int, default=31, help="timed runs per row (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} cpus")
    print(f"threads pinned: OMP/OPENBLAS/MKL_NUM_THREADS=1; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = step_rows(args.prompts, args.rollouts, args.repeats, args.seed)
    rows += plan_rows(args.signal_prompts, args.plan_prompts, max(5, args.repeats // 3), args.seed)
    print(f"{'case':<28} {'size':>20} {'median CPU ms':>14}")
    print("-" * 64)
    for row in rows:
        size = (
            f"{row['M']} of {row['n']} tracked" if str(row["case"]).startswith("plan, ") else f"{row['M']} x {row['n']}"
        )
        print(f"{row['case']:<28} {size:>20} {row['median_ms']:>14.2f}")
    by_case = {row["case"]: row["median_ms"] for row in rows}
    forms = ("int64 array, grouped", "int64 array, interleaved", "int64 array, shuffled", "list of int", "list of str")
    for name in (*forms, KNAPSACK_STEP):
        ratio = by_case[name] / by_case["allocate"]  # type: ignore[operator]
        print(f"update + estimate ({name}) / allocate: {ratio:.2f}")
    if POSTERIOR_TRACKER in by_case:
        ratio = by_case[POSTERIOR_TRACKER] / by_case[POSTERIOR_ALLOCATE]  # type: ignore[operator]
        print(f"project preset: update + estimate + posterior / allocate with the posterior: {ratio:.2f}")
    if "plan, signal" in by_case:
        ratio = by_case["plan, signal"] / by_case["plan, project"]  # type: ignore[operator]
        print(f"plan, signal / plan, project: {ratio:.2f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_before": load, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
