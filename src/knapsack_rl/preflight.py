"""Preflight: before spending compute, predict what reallocation would do on your data (NumPy only).

Input: for every training prompt, K sampled rewards of the *starting* model, or of a checkpoint's
policy (``knapsack-rl preflight`` draws them). Output, per arm (``uniform`` and each knapsack
configuration): the expected number of prompts per step whose group has reward variance
(:func:`expected_effective_prompts`), the expected effective gradient ratio, and how the budget is
spread, under two kinds of knowledge:

- ``true p``: the planner sees each prompt's success rate as estimated from all K samples (the best
  case: what allocation could do with perfect estimates);
- ``realistic``: what happens in training: epoch 0 gives every prompt ``n`` rollouts (the first n of
  its K samples), the planner's tracker estimates from them, and epoch 1 is planned from those
  estimates; the outcome is scored with p estimated from the *other* K - n samples (no reuse).

The expected number of prompts with signal of a step is ``sum_i E[P_nz(N_i, p_i)]`` with
``P_nz(N, p) = 1 - p^N - (1 - p)^N``. Where prompt i's scored samples are k binary rewards with s
successes and ``N_i <= k``, its term is estimated without bias by the share of the N_i-subsets of those
samples that hold both outcomes, ``1 - C(s, N)/C(k, N) - C(k - s, N)/C(k, N)`` (:func:`unbiased_nonzero`;
``C(s, N)/C(k, N)`` is the unbiased estimate of ``p^N``). No unbiased estimate exists for larger budgets
(or continuous rewards): there the term is the expectation under the prompt's posterior, from the
distribution of success rates over the whole set of prompts estimated without a parametric form
(:func:`population_grid`: weights on a grid of rates, the nonparametric maximum likelihood of the
binomial counts, empirical Bayes). A Beta prior cannot hold a set's many prompts that are hard but not
hopeless beside its always- and never-solved ones, and under-counts the signal of large budgets; plugging
in ``p = s / K`` says a prompt never solved in 24 samples can never give signal. Beyond about 4x the
samples scored, no number of samples tells a rate of 0 from one of 0.005, and predictions for such
budgets lean high (``tests/test_preflight.py``). The expected rollouts
in groups with signal is ``sum_i N_i E[P_nz(N_i, p_i)]``. Steps are the M-prompt batches of one seeded
pass over the prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.core.planner import Planner
from knapsack_rl.core.population import GridPosterior, PopulationPrior, grid_value
from knapsack_rl.core.tracker import Tracker
from knapsack_rl.core.value import get_value


@dataclass(frozen=True)
class Prediction:
    """Predicted per-step averages for one arm under one kind of knowledge."""

    arm: str
    knowledge: str
    effective_prompts: float
    effective_grad_ratio: float
    budget_max: float
    zero_share: float


def population_grid(
    successes: NDArray[np.float64], samples: int, *, size: int = 201, iterations: int = 1000, tol: float = 1e-8
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The prompts' distribution of success rates, and each prompt's posterior under it:
    ``(grid, weights, posterior)``, of shapes (G,), (G,) and (P, G).

    ``successes`` (P,) of ``samples`` each; the fit is :meth:`PopulationPrior.fit` (EM on a grid dense
    near 0 and 1, until no weight moves by more than ``tol``).
    """
    s = np.asarray(successes, dtype=np.float64)
    prior = PopulationPrior.fit(s, samples - s, size=size, iterations=iterations, tol=tol)
    return prior.grid, prior.weights, prior.posterior(s, samples - s).weights


def unbiased_nonzero(budgets: NDArray[np.int64], successes: NDArray[np.float64], samples: int) -> NDArray[np.float64]:
    """(M,) unbiased estimates of ``P_nz(N_i, p_i)`` from ``successes`` (M,) of ``samples`` binary rewards
    per prompt: ``1 - C(s, N)/C(k, N) - C(k - s, N)/C(k, N)``; NaN where ``N_i > samples`` (none exists)."""
    n = np.asarray(budgets, dtype=np.int64)
    s = np.asarray(successes, dtype=np.float64)
    out = np.full(n.size, np.nan)
    ok = (n <= samples) & (n >= 1)
    if ok.any():
        j = np.arange(int(n[ok].max()))  # C(x, N)/C(k, N) = prod_{j < N} (x - j)/(k - j), 0 once x < N
        left = np.maximum(s[ok, None] - j, 0) / (samples - j)
        right = np.maximum(samples - s[ok, None] - j, 0) / (samples - j)
        pick = (np.arange(int(ok.sum())), n[ok] - 1)
        out[ok] = 1.0 - np.cumprod(left, axis=1)[pick] - np.cumprod(right, axis=1)[pick]
    out[n <= 0] = 0.0
    return out


def expected_effective_prompts(
    budgets: NDArray[np.int64],
    grid: NDArray[np.float64],
    posterior: NDArray[np.float64],
    *,
    counts: tuple[NDArray[np.float64], int] | None = None,
) -> tuple[float, float]:
    """(expected prompts with signal, expected rollouts in groups with signal) of one step.

    Prompt i's success rate has the distribution ``posterior[i]`` (G,) over ``grid``; with
    ``counts = (successes, k)`` (NaN successes: rewards that are not binary), the unbiased estimate
    replaces the posterior expectation wherever ``N_i <= k``.
    """
    nonzero = grid_value(get_value("nonzero"), GridPosterior(grid, posterior))
    pnz = nonzero(budgets.astype(np.float64), np.arange(budgets.size, dtype=np.float64))  # (M,) E[P_nz(N_i, p_i)]
    if counts is not None:
        exact = unbiased_nonzero(budgets, *counts)
        pnz = np.where(np.isnan(exact), pnz, exact)
    return float(pnz.sum()), float((budgets * pnz).sum())


def predict(
    ids: list[int | str],
    rewards: NDArray[np.float64],
    arms: dict[str, KnapsackConfig],
    *,
    prompts_per_step: int,
    seed: int = 0,
) -> list[Prediction]:
    """Predictions for every arm from ``rewards`` (P, K): K sampled rewards in [0, 1] per prompt."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != len(ids):
        raise ValueError(f"rewards must be (prompts, samples) = ({len(ids)}, K); got shape {r.shape}")
    order = np.random.default_rng(seed).permutation(len(ids))
    steps = [order[i : i + prompts_per_step] for i in range(0, len(ids) - prompts_per_step + 1, prompts_per_step)]
    if not steps:
        raise ValueError(f"prompts_per_step={prompts_per_step} exceeds the {len(ids)} prompts")
    out = []
    scoring: dict[int, _Scoring] = {}  # by the first sample scored: one fit per distinct scored set
    for arm, cfg in arms.items():
        n = cfg.allocation.n
        if r.shape[1] <= n:
            raise ValueError(f"realistic predictions need more than n={n} samples per prompt; got K={r.shape[1]}")
        truth = _planner_with(ids, cfg, r.mean(axis=1)[:, None], exact=True)
        seen = _planner_with(ids, cfg, r[:, :n], exact=False)
        for knowledge, planner, first in (("true p", truth, 0), ("realistic", seen, n)):
            if first not in scoring:  # realistic: scored on the samples the planner never saw
                scoring[first] = _Scoring.of(r[:, first:])
            out.append(_score_steps(arm, knowledge, planner, ids, steps, scoring[first]))
    return out


@dataclass(frozen=True)
class _Scoring:
    """What a set of scored samples (P, k) says of each prompt: its posterior over ``grid`` and, where
    its rewards are binary, its successes (NaN elsewhere) for the unbiased estimate."""

    grid: NDArray[np.float64]
    posterior: NDArray[np.float64]
    successes: NDArray[np.float64]
    samples: int

    @classmethod
    def of(cls, scored: NDArray[np.float64]) -> _Scoring:
        s, k = scored.sum(axis=1), scored.shape[1]
        grid, _, posterior = population_grid(s, k)
        binary = np.all((scored == 0.0) | (scored == 1.0), axis=1)
        return cls(grid, posterior, np.where(binary, s, np.nan), k)


def _planner_with(ids: list[int | str], cfg: KnapsackConfig, rewards: NDArray[np.float64], *, exact: bool) -> Planner:
    """A planner whose tracker has seen ``rewards`` (P, k) in epoch 0 (``exact``: the rates themselves, as
    enough pseudo-rewards that every estimator returns them)."""
    if exact:
        cfg = cfg.replace(
            estimator="ema", ema_weight=1.0, min_count=0, reward_format="continuous", success_threshold=None,
            uniform_epochs=0, posterior=False, prior="beta",
        )  # fmt: skip
    planner = Planner(cfg)
    k = rewards.shape[1]
    rollout_ids = [pid for pid in ids for _ in range(k)]
    planner.tracker.update(rollout_ids, rewards.reshape(-1), epoch=0, step=1)
    return planner


def _score_steps(
    arm: str,
    knowledge: str,
    planner: Planner,
    ids: list[int | str],
    steps: list[NDArray[np.intp]],
    scoring: _Scoring,
) -> Prediction:
    eff, good, bmax, zero = [], [], [], []
    epoch = max(planner.config.uniform_epochs, 1)  # the first epoch whose plans use estimates
    grid, post = scoring.grid, scoring.posterior
    mean = post @ grid  # (P,) posterior mean success rates
    for rows in steps:
        alloc = planner.plan([ids[i] for i in rows], epoch=epoch)
        counts = (scoring.successes[rows], scoring.samples)
        e, g = expected_effective_prompts(alloc.budgets, grid, post[rows], counts=counts)
        eff.append(e)
        good.append(g / max(alloc.budgets.sum(), 1))
        bmax.append(float(alloc.budgets.max()))
        zero.append(float(np.mean(mean[rows] < 0.02)))
    return Prediction(
        arm, knowledge, float(np.mean(eff)), float(np.mean(good)), float(np.max(bmax)), float(np.mean(zero))
    )


def format_predictions(predictions: list[Prediction], prompts_per_step: int) -> str:
    """A text table and a one-line reading: how many more prompts with signal each arm predicts."""
    rows = [("arm", "knowledge", "prompts with signal / step", "effective grad ratio", "largest budget")]
    for p in predictions:
        rows.append((p.arm, p.knowledge, f"{p.effective_prompts:.1f} of {prompts_per_step}",
                     f"{100 * p.effective_grad_ratio:.1f}%", f"{p.budget_max:.0f}"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    base = {p.knowledge: p.effective_prompts for p in predictions if p.arm == "uniform"}
    labels = {"realistic": "with realistic estimates", "from state": "from the state's tracker"}
    for p in predictions:
        if p.arm != "uniform" and p.knowledge in labels and p.knowledge in base:
            gain = p.effective_prompts - base[p.knowledge]
            lines.append(
                f"{p.arm}: {gain:+.1f} prompts with signal per step against uniform {labels[p.knowledge]} "
                f"({100 * gain / max(base[p.knowledge], 1e-9):+.0f}%)"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------ preflight from an engine's state
ENGINE_STATES = {
    "rule-state": ("trl", 1, ()),
    "verl-run": ("verl", 3, ()),
    "trainer-checkpoint": ("knapsack-rl", 5, ("tensors",)),
}
"""The state files :func:`read_engine_state` reads, by envelope kind: (engine, format version, named parts):
TRL's ``<checkpoint>/knapsack_rule.bin``, verl's ``global_step_<k>/knapsack/state.bin``, and a checkpoint of
the reference trainer (its tensors are never loaded)."""
TRACKING_RULES = ("knapsack", "uniform")
"""Rules whose state holds the Planner's tracker (its config and bytes)."""


@dataclass(frozen=True)
class EngineState:
    """What a checkpoint's rule state says about the prompts: the tracker and the Planner settings."""

    path: str
    engine: str
    rule: str
    config: KnapsackConfig
    tracker: Tracker
    prompts_per_step: int | None
    """Where the state records it (the reference trainer's config, verl's planned batches); else None."""


def state_file_of(path: str | Path) -> Path:
    """The state file of ``path``: the file itself, a TRL checkpoint folder's ``knapsack_rule.bin``, or a verl
    ``global_step_<k>`` folder's ``knapsack/state.bin``.

    Raises:
        ValueError: a folder holding neither.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("knapsack_rule.bin", "knapsack/state.bin"):
        if (path / name).is_file():
            return path / name
    raise ValueError(
        f"--state {path}: a folder without knapsack_rule.bin (a TRL checkpoint) or knapsack/state.bin (a verl "
        "global_step folder); give the state file itself"
    )


def read_engine_state(path: str | Path) -> EngineState:
    """The tracker and Planner settings of a TRL, verl or reference-trainer checkpoint's rule state.

    The envelope is read with :func:`knapsack_rl.io.read_file_bytes` and checked by
    :func:`knapsack_rl.io.decode_state_file` (the kind picks the engine), the rule's state is unpacked with
    :func:`knapsack_rl.rules.state.unpack_rule_state`, and the Planner checks it in full
    (:meth:`Planner.load_state_dict`): nothing in the file is executed or unpickled.

    Raises:
        ValueError: one line naming the file: not a state file of those engines, a rule that keeps no
            tracker (e.g. coba), a malformed or foreign state.
    """
    from knapsack_rl.io import MAX_FILE_BYTES, STATE_MAGIC, decode_state_file, read_file_bytes
    from knapsack_rl.rules.state import PART_PREFIX, unpack_rule_state

    file_path = state_file_of(path)
    source = str(file_path)
    data = read_file_bytes(file_path, what="engine state", max_bytes=MAX_FILE_BYTES)
    kind = data[len(STATE_MAGIC) : len(STATE_MAGIC) + 32].rstrip(b"\0").decode("ascii", "replace")
    if not data.startswith(STATE_MAGIC) or kind not in ENGINE_STATES:
        what = f"a {kind!r} state" if data.startswith(STATE_MAGIC) else "not a knapsack-rl state file"
        raise ValueError(
            f"{source}: {what}; preflight --state reads TRL's knapsack_rule.bin, verl's knapsack/state.bin or a "
            "knapsack-rl trainer checkpoint"
        )
    engine, version, parts = ENGINE_STATES[kind]
    file = decode_state_file(data, source=source, kind=kind, version=version, parts=parts, more_parts=PART_PREFIX)
    if not isinstance(file.meta.get("rule"), dict):
        raise ValueError(f"{source}: the state holds no rule state ('rule')")
    name, state = unpack_rule_state(file.meta["rule"], file.parts, source=source)
    if name not in TRACKING_RULES and not name.startswith("knapsack:"):
        raise ValueError(
            f"{source}: holds the state of rule {name!r}, which keeps no tracker of per-prompt rewards; preflight "
            f"--state reads the state of a run of rule {' or '.join(TRACKING_RULES)} (or knapsack:<preset>)"
        )
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{source}: rule {name!r}'s state has no Planner config")
    try:
        config = KnapsackConfig.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: the saved Planner config is not valid ({exc})") from None
    planner = Planner(config)
    planner.load_state_dict(state, source=source)  # checks the tracker's bytes and settings, or raises
    return EngineState(source, engine, name, config, planner.tracker, _prompts_per_step(engine, file.meta))


def _prompts_per_step(engine: str, meta: dict[str, Any]) -> int | None:
    """The prompts of a step where the state records them (None elsewhere, e.g. TRL's rule file)."""
    if engine == "knapsack-rl":
        value = meta.get("config", {}).get("prompts_per_step") if isinstance(meta.get("config"), dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    if engine == "verl":
        batches = meta.get("batches")
        batches = batches if isinstance(batches, list) else []
        sizes = [len(b["prompt_ids"]) for b in batches if isinstance(b, dict) and isinstance(b.get("prompt_ids"), list)]
        return sizes[-1] if sizes and sizes[-1] > 0 else None
    return None


def tracked_rewards(tracker: Tracker) -> tuple[list[int | str], list[NDArray[np.float64]], int]:
    """Every tracked prompt's rewards as the tracker holds them (its ring, oldest first: all of them where the
    prompt has at most ``window``), and how many prompts have more rewards than the ring keeps."""
    ring, pos, count = tracker.array("ring"), tracker.array("ring_pos"), tracker.array("count")
    window = ring.shape[1] if ring.ndim == 2 else 0
    out = []
    for row in range(len(count)):
        c = int(count[row])
        kept = ring[row, :c] if c <= window else np.roll(ring[row], -int(pos[row]))
        out.append(np.asarray(kept, dtype=np.float64))
    ids = [i.item() if hasattr(i, "item") else i for i in tracker.ids]
    return ids, out, int(np.sum(count > window))


def state_arms(state: EngineState, names: list[str]) -> dict[str, KnapsackConfig]:
    """The Planner settings of each arm for :func:`predict_from_state`: ``uniform`` and ``knapsack`` are the
    saved settings with allocation off and on; ``knapsack:<preset>`` a preset at the saved ``n``.

    Raises:
        ValueError: an arm that is none of those, or one that probes within a step (two-phase planning: its
            probes are sampled, so no tracker can stand in for them).
    """
    from knapsack_rl.core.config import preset_names

    out = {}
    for name in names:
        if name in ("uniform", "knapsack"):
            cfg = state.config.replace(allocate=name == "knapsack", probe_n=0)
        elif name.startswith("knapsack:") and name.removeprefix("knapsack:") in preset_names():
            cfg = KnapsackConfig.preset(name.removeprefix("knapsack:"), n=state.config.allocation.n)
        else:
            valid = ["uniform", "knapsack", *(f"knapsack:{p}" for p in preset_names())]
            raise ValueError(f"--arms: {name!r} is not an arm preflight --state predicts; valid: {valid}")
        if cfg.probe_n > 0:
            raise ValueError(
                f"--arms: {name!r} probes within a step (probe_n={cfg.probe_n}): not predictable from a state"
            )
        out[name] = cfg
    return out


def predict_from_state(
    state: EngineState, arms: dict[str, KnapsackConfig], *, prompts_per_step: int, seed: int = 0
) -> list[Prediction]:
    """Prompts with signal per step of each arm in the epoch after the state, with no model and no sampling.

    The tracker's rewards stand in for the K samples of :func:`predict`: each arm's Planner sees them (replayed
    into its own tracker, epoch 0) and plans the next epoch's steps (M-prompt batches of one seeded pass over
    the tracked prompts); each plan is scored with the expected prompts with signal under each prompt's
    posterior success rate, given its rewards, under the distribution of rates fitted to all of them
    (:func:`population_grid`'s empirical Bayes). Meant for the state at the end of the uniform epoch(s),
    the tracker every arm allocates from first.

    Raises:
        ValueError: ``prompts_per_step`` out of range, or a tracker without rewards.
    """
    ids, rewards, _ = tracked_rewards(state.tracker)
    if not ids or any(r.size == 0 for r in rewards):
        raise ValueError(f"{state.path}: the tracker holds no rewards for some prompt; nothing to predict from")
    if not 1 <= prompts_per_step <= len(ids):
        raise ValueError(f"prompts_per_step must be in [1, {len(ids)}] (the tracked prompts); got {prompts_per_step}")
    s = np.array([r.sum() for r in rewards])
    f = np.array([r.size for r in rewards]) - s
    prior = PopulationPrior.fit(s, f)
    scoring = _Scoring(prior.grid, prior.posterior(s, f).weights, np.full(len(ids), np.nan), 0)
    order = np.random.default_rng(seed).permutation(len(ids))
    steps = [order[i : i + prompts_per_step] for i in range(0, len(ids) - prompts_per_step + 1, prompts_per_step)]
    rollout_ids = [pid for pid, r in zip(ids, rewards, strict=True) for _ in range(r.size)]
    flat = np.concatenate(rewards)
    out = []
    for arm, cfg in arms.items():
        planner = Planner(cfg)
        planner.tracker.update(rollout_ids, flat, epoch=0, step=1, mapped=True)
        out.append(_score_steps(arm, "from state", planner, ids, steps, scoring))
    return out


def format_state_predictions(state: EngineState, predictions: list[Prediction], prompts_per_step: int) -> str:
    """A heading on the tracker's prompts, then :func:`format_predictions`' table."""
    ids, rewards, beyond = tracked_rewards(state.tracker)
    p = np.array([r.mean() for r in rewards])
    counts = np.array([r.size for r in rewards])
    head = (
        f"{state.path} ({state.engine}, rule {state.rule}): {len(ids)} tracked prompts, {counts.min()}-{counts.max()} "
        f"rewards each; {100 * np.mean(p == 0):.0f}% never solved, {100 * np.mean(p == 1):.0f}% always solved, "
        f"mean success {p.mean():.3f}; {prompts_per_step} prompts per step"
    )
    if beyond:
        head += f"\n{beyond} prompt(s) have more rewards than the tracker's window keeps: their last window only"
    return head + "\n\n" + format_predictions(predictions, prompts_per_step)
