"""Rerun the allocation-rule study of docs/simulation.md with the offline simulator.

Parts:
- ``headline``: uniform (also run for 2x the rollouts), the recipe's and the project's knapsack, the
  peers (Reinforce-Ada-like, Pilot-Commit-like, DAPO dynamic sampling, E3-like, GRESO-like), on the
  paper-like world;
- ``defaults``: one-at-a-time variants of the recipe's knapsack (objective, fallback, estimator,
  p = 0 / 1 treatment, cold start) and combinations, with per-seed paired differences to the recipe;
- ``robust``: the same variants on other initial distributions (``hard``, ``uniform``);
- ``sensitivity``: the headline rules when learning only transfers or only memorises;
- ``regimes``: every rule at equal rollouts in each training regime (many epochs, few epochs, a single
  pass), one paired table per regime (:mod:`knapsack_rl.sim.regimes`).

Every variant is a :class:`~knapsack_rl.core.config.KnapsackConfig` run through the Planner
(:func:`knapsack_rl.sim.register_knapsack`). The simulator's former ``smooth`` option (shrinking point
estimates toward 1/2) is gone: the study below found it harmful (-0.002 to -0.079), and the principled
form, scoring E[V(N, p)] under a Beta posterior, is ``KnapsackConfig(posterior=True)``; its variant runs
once the tracker's posterior is available in core.

Usage: ``python benchmarks/study_sim.py --part all --seeds 5 --steps 500 --prompts 10000 --out runs/study``
(``--img docs/img`` also writes the plots there). Prints Markdown tables and writes them to OUT/study.md.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.core.tracker import Tracker
from knapsack_rl.report.stats import mean_ci
from knapsack_rl.sim import SimConfig, register_knapsack, run_rules, simulate, summarize
from knapsack_rl.sim.cli import DEFAULT_RULES
from knapsack_rl.sim.regimes import regime_names, run_regimes
from knapsack_rl.sim.run import RunTrace
from knapsack_rl.sim.summary import format_table

RECIPE = KnapsackConfig.preset("recipe")
TWO_PHASE = {"probe_n": 4, "uniform_epochs": 0}
VARIANTS: dict[str, KnapsackConfig] = {
    "recipe": RECIPE,
    "objective=paper": RECIPE.replace(objective="paper"),
    "no fallback": RECIPE.replace(fallback=False),
    "estimator=ema": RECIPE.replace(estimator="ema"),
    "estimator=beta(0.8)": RECIPE.replace(estimator="beta"),
    "estimator=beta(0.95)": RECIPE.replace(estimator="beta", forgetting=0.95),
    "estimator=beta(0.95), prior (0.1, 0.1)": RECIPE.replace(estimator="beta", forgetting=0.95, beta_prior=(0.1, 0.1)),
    "p=0 and p=1 get 1": RECIPE.replace(negative_n=1, positive_n=1),
    "p=0 gets 4": RECIPE.replace(negative_n=4),
    "cold start=two_phase": RECIPE.replace(**TWO_PHASE),
    "p=0 gets 1": RECIPE.replace(negative_n=1),
    "p=1 gets 1": RECIPE.replace(positive_n=1),
    "p=0 and p=1 get 0 (dropped for good)": RECIPE.replace(negative_n=0, positive_n=0),
    "paper+p01 get 1": RECIPE.replace(objective="paper", negative_n=1, positive_n=1),
    "paper+p01 get 1+no fallback": RECIPE.replace(objective="paper", negative_n=1, positive_n=1, fallback=False),
    "paper+p01 get 1+two_phase": RECIPE.replace(objective="paper", negative_n=1, positive_n=1, **TWO_PHASE),
}
if hasattr(Tracker, "posterior"):  # pending in core: Tracker.posterior and the posterior value functions
    VARIANTS["posterior (E[V] under Beta)"] = RECIPE.replace(estimator="beta", posterior=True)


def _register_variants() -> None:
    for name, config in VARIANTS.items():
        register_knapsack(f"ks/{name}", config)


def _paired(traces: dict[str, list[RunTrace]], base: str, attr: str) -> dict[str, str]:
    """Per rule: mean ± 95% CI over seeds of (rule's final value - base's final value) on the same seed."""
    ref = {t.seed: getattr(t, attr)[-1] for t in traces[base]}
    return {r: mean_ci([getattr(t, attr)[-1] - ref[t.seed] for t in runs]).fmt(3) for r, runs in traces.items()}


def headline(config: SimConfig, seeds: list[int], out: Path, img: Path | None) -> str:
    rules = DEFAULT_RULES.split(",")
    traces = run_rules(config, rules, seeds, progress=True)
    long = replace(config, steps=2 * config.steps)
    traces["uniform (2x steps)"] = [simulate(long, "uniform", s) for s in seeds]
    text = []
    for target_from, baseline in (
        ("uniform", "uniform"),
        ("knapsack:recipe", "uniform (2x steps)"),
        ("knapsack:project", "uniform (2x steps)"),
    ):
        rows, level = summarize(traces, target_from=target_from, baseline=baseline)
        text.append(f"Target: the final training success of `{target_from}` on the same seed (mean {level:.3f}).\n")
        text.append(format_table(rows, level, baseline) + "\n")
    _plots({k: v for k, v in traces.items() if k != "uniform (2x steps)"}, out, img, "headline")
    return "\n".join(text)


def sensitivity(config: SimConfig, seeds: list[int]) -> str:
    """Headline rules when learning only transfers (no per-prompt logit) or only memorises (no sharing)."""
    worlds = {
        "transfer only (lr_prompt=0, lr_shared x2, lr_topic x2)": replace(
            config, lr_prompt=0.0, lr_shared=2 * config.lr_shared, lr_topic=2 * config.lr_topic
        ),
        "memorise only (lr_shared=lr_topic=0, lr_prompt x2)": replace(
            config, lr_shared=0.0, lr_topic=0.0, lr_prompt=2 * config.lr_prompt
        ),
    }
    worlds["large data set (100k prompts, 500 steps = 1.3 epochs)"] = replace(config, num_prompts=100_000)
    rules = ["uniform", "knapsack:recipe", "knapsack:project", "knapsack:two-phase", "greso"]
    text = []
    for label, cfg in worlds.items():
        traces = run_rules(cfg, rules, seeds, progress=True)
        rows, level = summarize(traces, baseline="uniform")
        text.append(f"### {label}\n\n" + format_table(rows, level, "uniform") + "\n")
    return "\n".join(text)


def defaults(config: SimConfig, seeds: list[int], out: Path, img: Path | None, tag: str = "defaults") -> str:
    rules = ["uniform", *(f"ks/{v}" for v in VARIANTS)]
    traces = run_rules(config, rules, seeds, progress=True)
    rows, level = summarize(traces, baseline="uniform")
    d_train = _paired(traces, "ks/recipe", "train_success")
    d_held = _paired(traces, "ks/recipe", "heldout_success")
    lines = [
        "| rule | eff. grad ratio | train final | Δ train vs recipe | held-out final | Δ held-out vs recipe "
        f"| rollouts to {level:.3f} (M) | speed-up vs uniform | max budget |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        st = r.stats
        lines.append(
            f"| {r.rule} | {st['eff_ratio'].fmt()} | {st['train_final'].fmt()} | {d_train[r.rule]} "
            f"| {st['heldout_final'].fmt()} | {d_held[r.rule]} | {st['rollouts_to_target'].fmt(3, 1e-6)} "
            f"| {st['speedup'].fmt(2)} | {st['budget_max'].fmt(0)} |"
        )
    _plots({k: traces[k] for k in ("uniform", "ks/recipe", "ks/paper+p01 get 1")}, out, img, tag)
    return f"init={config.init}; target = uniform's final training success per seed.\n\n" + "\n".join(lines) + "\n"


def _plots(traces: dict[str, list[RunTrace]], out: Path, img: Path | None, tag: str) -> None:
    from knapsack_rl.sim.plots import plot_budgets, plot_curves

    for folder in [out] + ([img] if img is not None else []):
        plot_curves(traces, folder / f"sim_{tag}_curves.png", title=tag)
        plot_budgets(
            {k: v for k, v in traces.items() if k.startswith(("knapsack", "ks/", "reinforce", "pilot"))},
            folder / f"sim_{tag}_budget.png",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=["headline", "defaults", "robust", "sensitivity", "regimes", "all"], default="all"
    )
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--img", type=Path, default=None, help="also write the plots here (e.g. docs/img)")
    args = parser.parse_args()
    _register_variants()
    args.out.mkdir(parents=True, exist_ok=True)
    config = SimConfig(num_prompts=args.prompts, steps=args.steps)
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    sections = [f"Settings: {config}\nProject knapsack: {KnapsackConfig.preset('project').to_dict()}\n"]
    if args.part in ("defaults", "all"):
        sections.append("## Defaults\n\n" + defaults(config, seeds, args.out, args.img))
    if args.part in ("robust", "all"):
        for init in ("hard", "uniform"):
            cfg = replace(config, init=init)
            sections.append(f"## Robustness: init={init}\n\n" + defaults(cfg, seeds[:3], args.out, args.img, init))
    if args.part in ("sensitivity", "all"):
        sections.append("## Sensitivity to the learning model\n\n" + sensitivity(config, seeds[:3]))
    if args.part in ("headline", "all"):
        sections.append("## Headline\n\n" + headline(config, seeds, args.out, args.img))
    if args.part in ("regimes", "all"):
        rules = DEFAULT_RULES.split(",")
        tables = run_regimes(regime_names(), rules, seeds, base=config, steps=config.steps, progress=True)
        sections.append("## Regimes (equal rollouts, paired seeds)\n\n" + "\n".join(tables.values()))
    load = os.getloadavg()
    sections.append(f"wall {time.perf_counter() - start:.0f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    text = "\n".join(sections)
    print(text)
    (args.out / f"study_{args.part}.md").write_text(text)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
