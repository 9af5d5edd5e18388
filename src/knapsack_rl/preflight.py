"""Preflight: before spending compute, predict what reallocation would do on your data (NumPy only).

Input: for every training prompt, K sampled rewards of the *starting* model (``knapsack-rl preflight``
draws them). Output, per arm (``uniform`` and each knapsack configuration): the expected number of
prompts per step whose group has reward variance (:func:`expected_effective_prompts`), the expected
effective gradient ratio, and how the budget is spread, under two kinds of knowledge:

- ``true p``: the planner sees each prompt's success rate as estimated from all K samples (the best
  case: what allocation could do with perfect estimates);
- ``realistic``: what happens in training: epoch 0 gives every prompt ``n`` rollouts (the first n of
  its K samples), the planner's tracker estimates from them, and epoch 1 is planned from those
  estimates; the outcome is scored with p estimated from the *other* K - n samples (no reuse).

The expected number of prompts with signal of a step is ``sum_i E[P_nz(N_i, p_i)]`` with
``P_nz(N, p) = 1 - p^N - (1 - p)^N``. Where prompt i's scored samples are k binary rewards with s
successes and ``N_i <= k``, its term is estimated without bias by the share of the N_i-subsets of those
samples that hold both outcomes, ``1 - C(s, N)/C(k, N) - C(k - s, N)/C(k, N)`` (:func:`unbiased_nonzero`;
``C(s, N)/C(k, N)`` is the unbiased estimate of ``p^N``). Elsewhere (larger budgets, continuous rewards)
it is the expectation under the prompt's Beta posterior given the samples, from a Beta prior fitted to
the whole set of prompts (:func:`population_prior`, empirical Bayes). Plugging in ``p = s / K`` instead
says a prompt never solved in 24 samples can never give signal, and under-counts. The expected rollouts
in groups with signal is ``sum_i N_i E[P_nz(N_i, p_i)]``. Steps are the M-prompt batches of one seeded
pass over the prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.config import KnapsackConfig
from knapsack_rl.core.planner import Planner
from knapsack_rl.core.value import get_posterior_value


@dataclass(frozen=True)
class Prediction:
    """Predicted per-step averages for one arm under one kind of knowledge."""

    arm: str
    knowledge: str
    effective_prompts: float
    effective_grad_ratio: float
    budget_max: float
    zero_share: float


def population_prior(successes: NDArray[np.float64], samples: int) -> tuple[float, float]:
    """Beta(a0, b0) prior of the prompts' success rates by the beta-binomial method of moments.

    With ``m`` and ``v`` the mean and variance of ``successes / samples`` over prompts, the over-dispersion
    ``rho = 1 / (a0 + b0 + 1) = (K v / (m (1 - m)) - 1) / (K - 1)`` (clipped to [0.001, 0.999]) and the
    mean ``m`` give ``a0 = m (1 / rho - 1)``, ``b0 = (1 - m)(1 / rho - 1)``.
    """
    rate = np.asarray(successes, dtype=np.float64) / samples
    m = float(np.clip(rate.mean(), 1e-3, 1 - 1e-3))
    rho = (samples * float(rate.var()) / (m * (1 - m)) - 1) / max(samples - 1, 1)
    total = 1 / float(np.clip(rho, 1e-3, 0.999)) - 1
    return m * total, (1 - m) * total


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
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    *,
    counts: tuple[NDArray[np.float64], int] | None = None,
) -> tuple[float, float]:
    """(expected prompts with signal, expected rollouts in groups with signal) of one step, each prompt's
    success rate distributed Beta(a_i, b_i); with ``counts = (successes, k)`` (NaN successes: rewards
    that are not binary), the unbiased estimate replaces the Beta expectation wherever ``N_i <= k``."""
    pnz = get_posterior_value("nonzero")(budgets.astype(np.float64), a, b)  # (M,) E[P_nz(N_i, p_i)]
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
    for arm, cfg in arms.items():
        n = cfg.allocation.n
        if r.shape[1] <= n:
            raise ValueError(f"realistic predictions need more than n={n} samples per prompt; got K={r.shape[1]}")
        p_all = r.mean(axis=1)
        rest = r[:, n:]  # scored on samples the planner never saw
        truth = _planner_with(ids, cfg, p_all[:, None], exact=True)
        seen = _planner_with(ids, cfg, r[:, :n], exact=False)
        for knowledge, planner, scored in (("true p", truth, r), ("realistic", seen, rest)):
            s, k = scored.sum(axis=1), scored.shape[1]
            a0, b0 = population_prior(s, k)
            binary = np.all((scored == 0.0) | (scored == 1.0), axis=1)
            counts = (np.where(binary, s, np.nan), k)
            out.append(_score_steps(arm, knowledge, planner, ids, steps, (a0 + s, b0 + k - s), counts))
    return out


def _planner_with(ids: list[int | str], cfg: KnapsackConfig, rewards: NDArray[np.float64], *, exact: bool) -> Planner:
    """A planner whose tracker has seen ``rewards`` (P, k) in epoch 0 (``exact``: the rates themselves, as
    enough pseudo-rewards that every estimator returns them)."""
    if exact:
        cfg = cfg.replace(
            estimator="ema", ema_weight=1.0, min_count=0, reward_format="continuous", success_threshold=None,
            uniform_epochs=0, posterior=False,
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
    posterior: tuple[NDArray[np.float64], NDArray[np.float64]],
    counts: tuple[NDArray[np.float64], int],
) -> Prediction:
    eff, good, bmax, zero = [], [], [], []
    epoch = max(planner.config.uniform_epochs, 1)  # the first epoch whose plans use estimates
    a, b = posterior
    successes, k = counts
    for rows in steps:
        alloc = planner.plan([ids[i] for i in rows], epoch=epoch)
        e, g = expected_effective_prompts(alloc.budgets, a[rows], b[rows], counts=(successes[rows], k))
        eff.append(e)
        good.append(g / max(alloc.budgets.sum(), 1))
        bmax.append(float(alloc.budgets.max()))
        zero.append(float(np.mean(a[rows] / (a[rows] + b[rows]) < 0.02)))
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
    for p in predictions:
        if p.arm != "uniform" and p.knowledge == "realistic" and "realistic" in base:
            gain = p.effective_prompts - base["realistic"]
            lines.append(
                f"{p.arm}: {gain:+.1f} prompts with signal per step against uniform with realistic estimates "
                f"({100 * gain / max(base['realistic'], 1e-9):+.0f}%)"
            )
    return "\n".join(lines)
