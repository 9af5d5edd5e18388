"""Validation at the public boundary: every error names the argument and the offending value."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as int; it must be an integer (not bool, not float) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}; got {name}={v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}; got {name}={v}")
    return v


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """Return ``value`` as a finite float within the given (open or closed) bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {name}={v!r}")
    if low is not None and (v < low or (open_low and v == low)):
        raise ValueError(f"{name} must be {'>' if open_low else '>='} {low}; got {name}={v!r}")
    if high is not None and (v > high or (open_high and v == high)):
        raise ValueError(f"{name} must be {'<' if open_high else '<='} {high}; got {name}={v!r}")
    return v


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {name}={value!r}")
    return str(value)


def check_prob_array(name: str, values: ArrayLike, *, allow_nan: bool = True) -> NDArray[np.float64]:
    """A non-empty 1-D float array in [0, 1]; NaN allowed (as "no estimate") when ``allow_nan``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of floats; got {values!r:.80}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a step needs at least one prompt")
    nan = np.isnan(arr)
    bad = np.flatnonzero((nan & (not allow_nan)) | (~nan & ((arr < 0.0) | (arr > 1.0) | np.isinf(arr))))
    if bad.size:
        i = int(bad[0])
        what = "in [0, 1] or NaN (no estimate)" if allow_nan else "in [0, 1]"
        raise ValueError(f"{name} must be {what}; {name}[{i}]={float(arr[i])!r}")
    return arr


def check_unique_ids(name: str, ids: Sequence[object] | NDArray[np.generic]) -> None:
    """Prompt ids must be unique; the error names the first duplicate."""
    seen: set[object] = set()
    for i, pid in enumerate(ids):
        key = pid.item() if isinstance(pid, np.generic) else pid
        if key in seen:
            raise ValueError(f"{name} must be unique; {name}[{i}]={key!r} appears more than once")
        seen.add(key)
