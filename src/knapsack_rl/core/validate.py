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


def check_step_ids(name: str, ids: object) -> list[int | str]:
    """The prompt ids of one step as a list of unique ints / strs (see :func:`check_prompt_ids`)."""
    checked = check_prompt_ids(name, ids)
    out: list[int | str] = checked.tolist() if isinstance(checked, np.ndarray) else list(checked)
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


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def check_prompt_ids(name: str, ids: object) -> NDArray[np.int64] | list[int | str]:
    """Validate a 1-D collection of prompt ids: each an int that fits in 64 bits, or a str.

    ``bool``, ``float`` (even ``1.0``), ``bytes`` and anything else are refused with a ``ValueError``
    naming the position and the value, so ``1``, ``1.0`` and ``True`` are never taken for one
    another. Returns an int64 array (N,) when every id is an integer (NumPy integers included),
    else a list of plain ``int`` and ``str`` (NumPy scalars converted). Ids need not be unique.
    """
    if isinstance(ids, np.ndarray):
        return _check_id_array(name, ids)
    if isinstance(ids, str | bytes | dict | set | frozenset) or not hasattr(ids, "__iter__"):
        raise ValueError(f"{name} must be a sequence of prompt ids (int or str); got {ids!r:.80}")
    items: list[object] = list(ids)
    types = set(map(type, items))
    is_int = {t: issubclass(t, int | np.integer) and not issubclass(t, bool | np.bool_) for t in types}
    bad = {t for t in types if not is_int[t] and not issubclass(t, str)}
    if bad:
        i = next(i for i, x in enumerate(items) if type(x) in bad)
        raise _id_error(name, i, items[i])
    if all(is_int.values()):
        return _int_id_array(name, items)
    if types == {str}:
        return items  # type: ignore[return-value]  # every item is a str
    out: list[int | str] = []
    for i, x in enumerate(items):
        if isinstance(x, str):
            out.append(str(x))  # NumPy str scalars become str
        elif isinstance(x, numbers.Integral):
            if not _INT64_MIN <= int(x) <= _INT64_MAX:
                raise _id_error(name, i, x, "integer prompt ids must fit in 64 bits")
            out.append(int(x))
    return out


def _check_id_array(name: str, arr: NDArray[np.generic]) -> NDArray[np.int64] | list[int | str]:
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    kind = arr.dtype.kind
    if kind == "i":
        return arr.astype(np.int64, copy=False)
    if kind == "u":
        big = np.flatnonzero(arr.astype(np.uint64) > _INT64_MAX)
        if big.size:
            raise _id_error(name, int(big[0]), arr[big[0]].item(), "integer prompt ids must fit in 64 bits")
        return arr.astype(np.int64)
    if kind in "UO":
        return check_prompt_ids(name, arr.tolist())
    raise _id_error(name, 0, arr[0].item())


def _int_id_array(name: str, items: list[object]) -> NDArray[np.int64]:
    try:
        return np.fromiter(items, dtype=np.int64, count=len(items))
    except OverflowError:
        i = next(i for i, x in enumerate(items) if not _INT64_MIN <= int(x) <= _INT64_MAX)  # type: ignore[call-overload]
        raise _id_error(name, i, items[i], "integer prompt ids must fit in 64 bits") from None


def _id_error(name: str, i: int, value: object, why: str | None = None) -> ValueError:
    why = why or f"prompt ids must be int or str, not {type(value).__name__}"
    return ValueError(f"{name}[{i}]={value!r} is not a valid prompt id: {why}")
