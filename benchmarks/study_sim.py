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
  pass), one paired table per regime (:mod:`knapsack_rl.sim.regimes`);
- ``allocator``: the allocator design study (docs/simulation.md, section 10): the knapsack candidates
  of :data:`CANDIDATES` and the peers in two worlds (``paper``, ``demo``) x three regimes, paired
  tables, and the selection rule :func:`select` applied on training signals only; writes
  OUT/allocator.json (every per-seed value);
- ``allocator-sensitivity``: Beta prior and forgetting for the best two posterior candidates of
  OUT/allocator.json, then the selection rule over all of them;
- ``allocator-report``: no new runs; the selected rule of OUT/allocator.json against the peers, paired.

Every variant is a :class:`~knapsack_rl.core.config.KnapsackConfig` run through the Planner
(:func:`knapsack_rl.sim.register_knapsack`). The simulator's former ``smooth`` option (shrinking point
estimates toward 1/2) is gone: the study below found it harmful (-0.002 to -0.079), and the principled
form, scoring E[V(N, p)] under a Beta posterior, is ``KnapsackConfig(posterior=True)``: one variant in
``defaults``, and the ``allocator`` part studies it with every posterior value.

Usage: ``python benchmarks/study_sim.py --part all --seeds 5 --steps 500 --prompts 10000 --out runs/study``
(``--img docs/img`` also writes the plots there). Prints Markdown tables and writes them to
OUT/study_<part>.md. ``--seed0`` moves the seeds (development runs used seeds from 100, the final
tables seeds 0..4).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.report.stats import Stat, first_crossing, mean_ci, paired
from knapsack_rl.sim import SimConfig, World, register_knapsack, run_rules, simulate, summarize
from knapsack_rl.sim.cli import DEFAULT_RULES
from knapsack_rl.sim.regimes import REGIMES, regime_names, run_regime, run_regimes
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


# ----------------------------------------------------------------------------- allocator study (section 10)
PROJECT = KnapsackConfig.preset("project", posterior=False)
"""This study's ``project`` rows: the point-estimate project preset of 0.1.0 (the current ``project`` preset
is the posterior-scored one the trainer study chose, ``post:paper`` here)."""
POSTERIOR_VALUES = ("paper", "nonzero", "hora", "vip")
CANDIDATES: dict[str, KnapsackConfig] = {
    "recipe": RECIPE,
    "project": PROJECT,
    **{f"post:{v}": PROJECT.replace(posterior=True, value=v) for v in POSTERIOR_VALUES},
    "2p:project": PROJECT.replace(**TWO_PHASE),
    **{f"2p:post:{v}": PROJECT.replace(posterior=True, value=v, **TWO_PHASE) for v in POSTERIOR_VALUES},
}
"""The knapsack candidates of the allocator study, each a KnapsackConfig run through the Planner."""
SENSITIVITY = {
    "prior(.5,.5)": {"beta_prior": (0.5, 0.5)},
    "forget .95": {"forgetting": 0.95},
    "prior(.5,.5)+forget .95": {"beta_prior": (0.5, 0.5), "forgetting": 0.95},
}
"""Beta prior / forgetting variants tried on the best two candidates (defaults: prior (1, 1), forgetting 0.8)."""
PEERS = ("pilot-commit", "reinforce-ada", "reinforce-ada-pos", "dapo", "greso")
BUDGET_NORM_PEERS = ("pilot-commit", "reinforce-ada", "reinforce-ada-pos")
"""Peers that train on fewer rollouts than they generate: also run with the update divided by B (``÷B``)."""
WORLDS = ("paper", "demo")
ALLOCATOR_PARTS = ("allocator", "allocator-sensitivity", "allocator-report", "calibration")
KS = "alloc/"
PerSeed = dict[str, list[float]]


def _per_seed(traces: dict[str, list[RunTrace]], config: SimConfig) -> dict[str, PerSeed]:
    """Per rule and seed: speed-up vs uniform and the values at equal rollouts (uniform's are the pairs).

    speedup = uniform's rollouts to its own final training success / the rule's (NaN: never reached);
    train / heldout = true success after ``config.total_rollouts`` rollouts; signal = prompts trained
    on with reward variance per B rollouts generated (= the mean per step for rules that spend B a step);
    eff_ratio = rollouts in groups with signal / rollouts generated.
    """
    base = {t.seed: t for t in traces["uniform"]}
    budget = float(config.total_rollouts)
    out: dict[str, PerSeed] = {}
    for rule, runs in traces.items():
        per: PerSeed = {k: [] for k in ("seed", "speedup", "train", "heldout", "signal", "eff_ratio", "budget_max")}
        for tr in runs:
            ref = base[tr.seed]
            x, x_ref = tr.cumulative_spend.astype(float), ref.cumulative_spend.astype(float)
            level = float(np.interp(budget, x_ref, ref.train_success))
            hit = first_crossing(x, tr.train_success, level)
            spend = float(tr.spend.sum())
            end = min(budget, x[-1])  # a run that ended early (its data used up) keeps its last value
            values = {
                "seed": tr.seed,
                "speedup": first_crossing(x_ref, ref.train_success, level) / hit if hit > 0 else math.nan,
                "train": float(np.interp(end, x, tr.train_success)),
                "heldout": float(np.interp(end, x, tr.heldout_success)),
                "signal": float(tr.signal_prompts.sum()) * config.budget / spend,
                "eff_ratio": float(tr.effective.sum()) / spend,
                "budget_max": float(tr.budget_max.max()),
            }
            for key, value in values.items():
                per[key].append(float(value))
        out[rule] = per
    return out


def _stats(cell: dict[str, PerSeed], rule: str) -> dict[str, Stat]:
    """Mean ± 95% CI over seeds, and paired differences to uniform (``d_*``)."""
    per, base = cell[rule], cell["uniform"]
    if per["seed"] != base["seed"]:
        raise ValueError(f"rule {rule!r} ran seeds {per['seed']}, uniform {base['seed']}: not paired")
    st = {k: mean_ci(v) for k, v in per.items() if k != "seed"}
    for key in ("train", "heldout", "signal"):
        st[f"d_{key}"] = paired(per[key], base[key])
    return st


def _cell_table(cell: dict[str, PerSeed]) -> str:
    head = (
        "| rule | speed-up vs uniform | reached | Δ train | train success | signal prompts / B | Δ signal "
        "| eff. grad ratio | held-out | Δ held-out | max budget |"
    )
    lines = [head, "|" + "---|" * 11]
    for rule in cell:
        st, seeds = _stats(cell, rule), len(cell[rule]["seed"])
        lines.append(
            f"| {rule.removeprefix(KS)} | {st['speedup'].fmt(2)} | {st['speedup'].n}/{seeds} | {st['d_train'].fmt()} "
            f"| {st['train'].fmt()} | {st['signal'].fmt(1)} | {st['d_signal'].fmt(1)} | {st['eff_ratio'].fmt()} "
            f"| {st['heldout'].fmt()} | {st['d_heldout'].fmt()} | {st['budget_max'].fmt(0)} |"
        )
    return "\n".join(lines)


Cells = dict[str, dict[str, dict[str, PerSeed]]]
"""world -> regime -> rule -> per-seed values."""


def _run_cells(
    rules: list[str], worlds: list[str], regimes: list[str], seeds: list[int], steps: int, budget_norm: tuple[str, ...]
) -> Cells:
    """Per-seed values of every rule in every (world, regime); ``budget_norm`` rules also with loss_norm=budget."""
    cells: Cells = {}
    for world in worlds:
        for regime in regimes:
            config, traces = run_regime(regime, rules, seeds, base=SimConfig(init=world), steps=steps, progress=True)
            if budget_norm:
                alt = replace(config, loss_norm="budget")
                extra = run_rules(alt, list(budget_norm), seeds)
                traces.update({f"{r} [÷B]": runs for r, runs in extra.items()})
            cells.setdefault(world, {})[regime] = _per_seed(traces, config)
    return cells


def select(cells: Cells, candidates: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The selection rule of docs/simulation.md section 10 (training signals only; held-out never read).

    Per (world, regime) cell and candidate: ``ok_train`` = reached uniform's final training success on
    every seed and the paired Δ train CI reaches >= 0 (not worse than uniform); ``ok_signal`` = the
    paired Δ signal-prompts CI reaches >= 0 (no fewer prompts with signal than uniform). Eligible:
    both in every cell. Score: geometric mean over cells of the mean speed-up. Pick: the eligible
    candidate with the highest score; candidates within 2% of it are tied and the tie goes to the
    most signal prompts (mean Δ signal over cells). If none is eligible, ``ok_signal`` is dropped
    (said in the output).
    """
    rows = []
    for cand in candidates:
        ok_train = ok_signal = True
        logs, d_signal = [], []
        for cell in (c for world in cells.values() for c in world.values()):
            st = _stats(cell, cand)
            seeds = len(cell[cand]["seed"])
            ok_train &= st["speedup"].n == seeds and st["d_train"].mean + st["d_train"].half >= 0
            ok_signal &= st["d_signal"].mean + st["d_signal"].half >= 0
            logs.append(math.log(st["speedup"].mean) if st["speedup"].n else -math.inf)
            d_signal.append(st["d_signal"].mean)
        score = math.exp(sum(logs) / len(logs))
        rows.append({"candidate": cand, "ok_train": ok_train, "ok_signal": ok_signal, "score": score,
                     "d_signal": float(np.mean(d_signal))})  # fmt: skip
    pool = [r for r in rows if r["ok_train"] and r["ok_signal"]] or [r for r in rows if r["ok_train"]] or rows
    best = max(r["score"] for r in pool)
    tied = [r for r in pool if r["score"] >= best / 1.02]
    choice = max(tied, key=lambda r: r["d_signal"])["candidate"]
    rows.sort(key=lambda r: (not (r["ok_train"] and r["ok_signal"]), not r["ok_train"], -r["score"]))
    return choice, rows


def _selection_table(choice: str, rows: list[dict[str, Any]]) -> str:
    eligible = any(r["ok_train"] and r["ok_signal"] for r in rows)
    lines = [
        "| candidate | not worse than uniform in train (all cells) | signal prompts >= uniform (all cells) "
        "| geo-mean speed-up | mean Δ signal / B |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        mark = "**" if r["candidate"] == choice else ""
        lines.append(
            f"| {mark}{r['candidate'].removeprefix(KS)}{mark} | {'yes' if r['ok_train'] else 'no'} "
            f"| {'yes' if r['ok_signal'] else 'no'} | {r['score']:.3f} | {r['d_signal']:+.1f} |".replace("0.000", "n/a")
        )
    note = "" if eligible else "\nNo candidate keeps uniform's signal prompts in every cell: that test is dropped.\n"
    return "\n".join(lines) + f"\n\nSelected: `{choice.removeprefix(KS)}`: {CONFIGS[choice].to_dict()}\n" + note


CONFIGS: dict[str, KnapsackConfig] = {}
"""Every registered study candidate by rule name (``ks/<name>``)."""


def _register(name: str, config: KnapsackConfig) -> str:
    rule = KS + name
    if rule not in CONFIGS:
        register_knapsack(rule, config)
        CONFIGS[rule] = config
    return rule


def _overview(cells: Cells, metric: str) -> str:
    """Rules x cells, mean over paired seeds: ``speedup`` vs uniform ("(k/n)": reached on k of n seeds only)
    or ``d_signal`` (paired Δ prompts with signal per B rollouts)."""
    keys = [(w, r) for w, regs in cells.items() for r in regs]
    lines = ["| rule | " + " | ".join(f"{w}: {r}" for w, r in keys) + " |", "|---" * (1 + len(keys)) + "|"]
    for rule in next(iter(next(iter(cells.values())).values())):
        row = []
        for w, r in keys:
            st, seeds = _stats(cells[w][r], rule), len(cells[w][r][rule]["seed"])
            if metric == "d_signal":
                row.append(f"{st['d_signal'].mean:+.1f}")
                continue
            reached = "" if st["speedup"].n == seeds else f" ({st['speedup'].n}/{seeds})"
            row.append(("n/a" if st["speedup"].n == 0 else f"{st['speedup'].mean:.2f}") + reached)
        lines.append(f"| {rule.removeprefix(KS)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _render(cells: Cells, config: SimConfig, seeds: list[int]) -> str:
    text = [
        "### Overview: speed-up vs uniform (mean over paired seeds)\n\n" + _overview(cells, "speedup") + "\n",
        "### Overview: Δ prompts with signal per B rollouts vs uniform (paired mean)\n\n"
        + _overview(cells, "d_signal")
        + "\n",
    ]
    for world, regimes in cells.items():
        for regime, cell in regimes.items():
            cfg = REGIMES.get(regime).config(replace(config, init=world), steps=config.steps)
            text.append(
                f"### {world} world, {regime}: {cfg.num_prompts} training prompts, "
                f"{cfg.steps * cfg.prompts_per_step / cfg.num_prompts:.2f} epochs, {cfg.total_rollouts / 1e6:.3f}M "
                f"rollouts, seeds {seeds[0]}..{seeds[-1]}\n\n{_cell_table(cell)}\n"
            )
    return "\n".join(text)


def _world_profile(world: str, seed: int) -> str:
    """Initial shares of the training prompts of ``world`` (10k prompts, seed ``seed``)."""
    p = World(SimConfig(init=world), seed).success()[:10_000]
    blocks = {
        "p >= 0.85": p >= 0.85,
        "0.15 < p < 0.85": (p > 0.15) & (p < 0.85),
        "1e-6 < p <= 0.15": (p > 1e-6) & (p <= 0.15),
        "p <= 1e-6": p <= 1e-6,
    }
    shares = ", ".join(f"{k}: {m.mean():.1%}" for k, m in blocks.items())
    return (
        f"- `{world}` (seed {seed}): {shares}; mean p {p.mean():.3f}; a group of 8 all wrong "
        f"{np.mean((1 - p) ** 8):.1%}, all right {np.mean(p**8):.1%}"
    )


def allocator(config: SimConfig, seeds: list[int], out: Path, worlds: list[str], regimes: list[str]) -> str:
    """Candidates and peers in every (world, regime) cell; the selection; OUT/allocator.json."""
    cands = [_register(name, cfg) for name, cfg in CANDIDATES.items()]
    rules = ["uniform", *cands, *PEERS]
    cells = _run_cells(rules, worlds, regimes, seeds, config.steps, BUDGET_NORM_PEERS)
    choice, rows = select(cells, cands)
    record = {"seeds": seeds, "steps": config.steps, "candidates": {c: CONFIGS[c].to_dict() for c in cands}}
    (out / "allocator.json").write_text(json.dumps(record | {"cells": cells, "selection": rows}, indent=1))
    selection = "\n### Selection (training signals only)\n\n" + _selection_table(choice, rows)
    profiles = "Initial worlds:\n\n" + "\n".join(_world_profile(w, seeds[0]) for w in worlds) + "\n\n"
    return profiles + _render(cells, config, seeds) + selection


def calibration(config: SimConfig, seeds: list[int], out: Path) -> str:
    """The simulator against the trainer: the trainer's arms in the ``demo`` world, many epochs, under the
    simulator's token-mean update (``loss_norm=trained``) and under the trainer's per-prompt weighting
    (``loss_norm=group``, as ``loss_agg=group-mean``). Which one ranks the arms as the trainer did?"""
    arms = {"recipe": RECIPE, "point": PROJECT, "posterior": PROJECT.replace(posterior=True)}
    rules = ["uniform", *(_register(f"cal:{name}", cfg) for name, cfg in arms.items())]
    cells: Cells = {}
    for norm in ("trained", "group"):
        base = replace(SimConfig(init="demo"), loss_norm=norm)
        cfg, traces = run_regime("many-epochs", rules, seeds, base=base, steps=config.steps, progress=True)
        cells.setdefault(f"loss_norm={norm}", {})["many-epochs"] = _per_seed(traces, cfg)
    (out / "calibration.json").write_text(json.dumps({"seeds": seeds, "cells": cells}, indent=1))
    return _overview(cells, "speedup") + "\n\n" + _overview(cells, "d_signal")


def _versus(cells: Cells, rule: str, peers: tuple[str, ...]) -> str:
    """Per cell: paired differences ``rule - peer`` of the speed-up vs uniform and of training success."""
    head = " | ".join(f"Δ speed-up vs {p} | Δ train vs {p}" for p in peers)
    lines = [f"| cell | {head} |", "|---" * (1 + 2 * len(peers)) + "|"]
    for world, regs in cells.items():
        for regime, cell in regs.items():
            a = cell[rule]
            row = [f"{paired(a[k], cell[p][k]).fmt(d)}" for p in peers for k, d in (("speedup", 2), ("train", 3))]
            lines.append(f"| {world}: {regime} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def allocator_report(out: Path) -> str:
    """Re-render OUT/allocator.json (no new runs): the selection and the chosen rule against its peers, paired."""
    record = json.loads((out / "allocator.json").read_text())
    cells = record["cells"]
    choice = record["selection"][0]["candidate"]
    peers = ("pilot-commit", "pilot-commit [÷B]", "greso", "reinforce-ada-pos")
    return (
        f"### `{choice.removeprefix(KS)}` against the peers (paired over seeds {record['seeds']}; "
        f"Δ > 0: `{choice.removeprefix(KS)}` ahead)\n\n" + _versus(cells, choice, peers) + "\n"
    )


def allocator_sensitivity(config: SimConfig, seeds: list[int], out: Path) -> str:
    """Beta prior / forgetting variants of the best two posterior candidates of OUT/allocator.json; selection."""
    record = json.loads((out / "allocator.json").read_text())
    if record["seeds"] != seeds or record["steps"] != config.steps:
        raise ValueError(f"{out / 'allocator.json'} ran seeds {record['seeds']}, steps {record['steps']}; rerun it")
    cands = [_register(name, cfg) for name, cfg in CANDIDATES.items()]
    _, rows = select(record["cells"], cands)
    best = [r["candidate"] for r in rows if CONFIGS[r["candidate"]].posterior][:2]
    variants = [
        _register(f"{b.removeprefix(KS)} {label}", CONFIGS[b].replace(**change))
        for b in best
        for label, change in SENSITIVITY.items()
    ]
    worlds = list(record["cells"])
    regimes = list(record["cells"][worlds[0]])
    cells = _run_cells(["uniform", *best, *variants], worlds, regimes, seeds, config.steps, ())
    cands = [*cands, *variants]
    for world, regs in cells.items():  # the full candidate set for the final selection
        for regime, cell in regs.items():
            cell.update({c: v for c, v in record["cells"][world][regime].items() if c not in cell})
    choice, rows = select(cells, cands)
    (out / "allocator_sensitivity.json").write_text(json.dumps({"cells": cells, "selection": rows}, indent=1))
    keep = ("uniform", *best, *variants)
    shown = {w: {r: {k: c[k] for k in keep} for r, c in regs.items()} for w, regs in cells.items()}
    return _render(shown, config, seeds) + "\n### Selection over all candidates\n\n" + _selection_table(choice, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=["headline", "defaults", "robust", "sensitivity", "regimes", "all", *ALLOCATOR_PARTS],
        default="all",
        help="'all' runs the parts of sections 3-9; the allocator study (section 10) runs by its own parts",
    )
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed0", type=int, default=0, help="first seed (development runs: 100)")
    parser.add_argument("--worlds", default=",".join(WORLDS), help="allocator parts: initial distributions")
    parser.add_argument("--regimes", default="many-epochs,few-epochs,single-pass", help="allocator parts: regimes")
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--img", type=Path, default=None, help="also write the plots here (e.g. docs/img)")
    args = parser.parse_args()
    _register_variants()
    args.out.mkdir(parents=True, exist_ok=True)
    config = SimConfig(num_prompts=args.prompts, steps=args.steps)
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
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
    if args.part == "allocator":
        worlds, regimes = args.worlds.split(","), args.regimes.split(",")
        sections.append("## Allocator study\n\n" + allocator(config, seeds, args.out, worlds, regimes))
    if args.part == "allocator-sensitivity":
        text = allocator_sensitivity(config, seeds, args.out)
        sections.append("## Allocator study: Beta prior and forgetting\n\n" + text)
    if args.part == "allocator-report":
        sections.append("## Allocator study: report\n\n" + allocator_report(args.out))
    if args.part == "calibration":
        sections.append("## Calibration against the trainer\n\n" + calibration(config, seeds, args.out))
    load = os.getloadavg()
    sections.append(f"wall {time.perf_counter() - start:.0f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    text = "\n".join(sections)
    print(text)
    (args.out / f"study_{args.part}.md").write_text(text)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
