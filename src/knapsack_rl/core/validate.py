"""Validation at the public boundary: every error names the argument and the offending value."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

INT64_MAX = int(np.iinfo(np.int64).max)


def check_bool(name: str, value: object) -> bool:
    """``value`` must be a real bool (``True`` / ``False``); strings such as ``"false"`` are refused."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be true or false (a bool); got {name}={value!r} ({type(value).__name__})")
    return bool(value)


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = INT64_MAX) -> int:
    """Return ``value`` as int; it must be an integer (not bool, not float) within [low, high].

    ``high`` defaults to the int64 maximum, so an integer that does not fit the arrays it ends up in is
    refused here with a ValueError rather than an OverflowError later.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {name}={value!r}")
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
    raw = np.asarray(values)
    if raw.dtype.kind not in "fiu":  # bool, complex, strings and objects are refused, not converted
        raise ValueError(f"{name} must be an array of real numbers; got dtype {raw.dtype} ({values!r:.80})")
    arr = raw.astype(np.float64)
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


def check_real_array(name: str, values: ArrayLike, size: int) -> NDArray[np.float64]:
    """A 1-D array of ``size`` finite real numbers (bool, complex, strings refused)."""
    raw = np.asarray(values)
    if raw.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be an array of real numbers; got dtype {raw.dtype} ({values!r:.80})")
    arr = raw.astype(np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},); got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} must be finite; {name}[{bad[0]}]={float(arr[bad[0]])!r}")
    return arr


def check_prompt_ids(name: str, ids: Sequence[object] | NDArray[np.generic]) -> list[int | str]:
    """Prompt ids as a list of unique ints or strs; NumPy integers and strings are converted.

    Floats and bools are refused (``1.0`` and ``True`` would otherwise merge with the int id ``1``),
    and the error names the position and the value.
    """
    out: list[int | str] = []
    for i, pid in enumerate(ids.tolist() if isinstance(ids, np.ndarray) else ids):
        key = pid.item() if isinstance(pid, np.generic) else pid
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise ValueError(f"{name} must be ints or strs; {name}[{i}]={pid!r} ({type(pid).__name__})")
        out.append(key)
    check_unique_ids(name, out)
    return out


def check_unique_ids(name: str, ids: Sequence[object] | NDArray[np.generic]) -> None:
    """Prompt ids must be unique; the error names the first duplicate."""
    seen: set[object] = set()
    for i, pid in enumerate(ids):
        key = pid.item() if isinstance(pid, np.generic) else pid
        if key in seen:
            raise ValueError(f"{name} must be unique; {name}[{i}]={key!r} appears more than once")
        seen.add(key)
