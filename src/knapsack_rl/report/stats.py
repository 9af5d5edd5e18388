"""Statistics over seeds shared by the simulator and the trainer's comparisons (NumPy only).

- :func:`mean_ci`: mean and 95% confidence half-width (Student t) over seeds;
- :func:`paired`: the same of paired differences ``arm - baseline`` (same seed, same data order);
- :func:`first_crossing`, :func:`value_at`: reading curves (rollouts to a target, value at a budget);
- :func:`arm_stats`: every arm's means and paired differences against a baseline, from per-seed values;
- :func:`render_table`: one table as aligned text or Markdown.

The trainer's ``compare`` and the simulator's tables are built from these two: one aggregation of
per-seed values, one table layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# two-sided 95% Student t quantiles by degrees of freedom (1..30); 1.96 beyond
_T95 = (
    *(12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131),
    *(2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042),
)


@dataclass(frozen=True)
class Stat:
    """Mean and 95% CI half-width over seeds (NaN-valued seeds are left out; ``n`` counts the rest)."""

    mean: float
    half: float
    n: int

    def fmt(self, digits: int = 3, scale: float = 1.0) -> str:
        """``mean ± half`` (or ``n/a`` when no seed has a value)."""
        if self.n == 0:
            return "n/a"
        m, h = self.mean * scale, self.half * scale
        return f"{m:.{digits}f} ± {h:.{digits}f}" if self.n > 1 else f"{m:.{digits}f}"


def mean_ci(values: Sequence[float] | NDArray[np.float64]) -> Stat:
    """Mean and half-width ``t_{0.975, n-1} * sd / sqrt(n)`` of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Stat(math.nan, math.nan, 0)
    if v.size == 1:
        return Stat(float(v[0]), 0.0, 1)
    t = _T95[v.size - 2] if v.size - 1 <= len(_T95) else 1.96
    return Stat(float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(v.size)), int(v.size))


def first_crossing(x: NDArray[np.float64], y: NDArray[np.float64], level: float) -> float:
    """Smallest x at which y first reaches ``level`` (linear interpolation); NaN if never."""
    hit = np.flatnonzero(y >= level)
    if hit.size == 0:
        return math.nan
    k = int(hit[0])
    if k == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
    return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0))


def value_at(x: NDArray[np.float64], y: NDArray[np.float64], at: float) -> float:
    """y interpolated at x = ``at`` (x increasing); NaN beyond the last x."""
    if at > x[-1]:
        return math.nan
    return float(np.interp(at, x, y))


def paired(arm: Sequence[float], baseline: Sequence[float]) -> Stat:
    """Mean and 95% CI of the paired differences ``arm[i] - baseline[i]`` (pairs with a NaN are dropped)."""
    a, b = np.asarray(arm, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have equal length; got {a.size} and {b.size}")
    return mean_ci(a - b)


@dataclass(frozen=True)
class ArmStats:
    """One arm over paired seeds: ``means[key]`` over seeds and ``diffs[key]``, the paired differences
    ``arm - baseline`` (empty without a baseline)."""

    means: dict[str, Stat]
    diffs: dict[str, Stat]


def arm_stats(per_arm: Mapping[str, Sequence[Mapping[str, float]]], baseline: str | None = None) -> dict[str, ArmStats]:
    """:class:`ArmStats` of every arm from its per-seed values (``per_arm[arm][i]``: seed i's metrics, the same
    seed order in every arm); a key an arm lacks on a seed counts as NaN there (left out of the mean).

    Raises:
        ValueError: if ``baseline`` is not an arm, or an arm has another number of seeds than the baseline.
    """
    if baseline is not None and baseline not in per_arm:
        raise ValueError(f"baseline={baseline!r} is not an arm; arms: {sorted(per_arm)}")
    base = per_arm[baseline] if baseline is not None else None
    out = {}
    for arm, rows in per_arm.items():
        keys = sorted({k for r in rows for k in r})
        means = {k: mean_ci([r.get(k, math.nan) for r in rows]) for k in keys}
        diffs: dict[str, Stat] = {}
        if base is not None:
            if len(base) != len(rows):
                raise ValueError(f"arm {arm!r} has {len(rows)} seeds, the baseline {baseline!r} {len(base)}")
            diffs = {k: paired([r.get(k, math.nan) for r in rows], [b.get(k, math.nan) for b in base]) for k in keys}
        out[arm] = ArmStats(means, diffs)
    return out


def render_table(rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """``rows[0]`` is the header. Aligned text columns (two spaces apart), or a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join([lines[0], "|" + "---|" * len(rows[0]), *lines[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
