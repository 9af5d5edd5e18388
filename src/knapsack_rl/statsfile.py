"""Reading per-prompt stats files for ``knapsack-rl allocate``.

A stats file has one row per prompt with an ``id`` and either ``p_hat`` (a float in [0, 1]; empty or
null means "no estimate") or ``successes`` and ``count``. Formats, by suffix: ``.jsonl`` (one JSON
object per line), ``.csv`` (header row), ``.parquet`` (needs pyarrow). Every error names the file
and the line (1-based; the CSV header is line 1, parquet rows are numbered from 1).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def read_stats(path: str | Path, *, min_count: int = 1) -> tuple[list[object], NDArray[np.float64]]:
    """Prompt ids and ``p_hat`` (NaN = no estimate) from a stats file.

    Rows given as ``successes`` / ``count`` yield ``successes / count``, or NaN when
    ``count < min_count``.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"stats file {path} does not exist")
    rows = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}.get(path.suffix)
    if rows is None:
        raise ValueError(f"stats file {path}: unknown format {path.suffix!r}; use .jsonl, .csv or .parquet")
    ids: list[object] = []
    p_hat: list[float] = []
    seen: dict[object, int] = {}
    for line, row in rows(path):
        where = f"{path}:{line}"
        pid = _parse_id(row, where)
        if pid in seen:
            raise ValueError(f"{where}: duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = line
        ids.append(pid)
        p_hat.append(_parse_p(row, where, min_count))
    if not ids:
        raise ValueError(f"stats file {path} has no rows")
    return ids, np.asarray(p_hat, dtype=np.float64)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open() as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
            yield line, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "id" not in reader.fieldnames:
            raise ValueError(f"{path}:1: CSV header must contain 'id'; got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise ValueError(f"{path}:{line}: more fields than the header has")
            yield line, {k: (v if v != "" else None) for k, v in row.items()}


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is in the train extra
        raise ValueError(f"reading {path} needs pyarrow (pip install 'knapsack-rl[train]')") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from exc
    yield from enumerate(table.to_pylist(), start=1)


def _parse_id(row: dict[str, Any], where: str) -> object:
    pid = row.get("id")
    if pid is None or pid == "":
        raise ValueError(f"{where}: missing 'id'")
    if isinstance(pid, float) and pid.is_integer():
        pid = int(pid)
    if isinstance(pid, str) and pid.lstrip("-").isdigit():
        pid = int(pid)
    if isinstance(pid, bool) or not isinstance(pid, int | str):
        raise ValueError(f"{where}: id must be an integer or a string; got {pid!r}")
    return pid


def _parse_p(row: dict[str, Any], where: str, min_count: int) -> float:
    if "p_hat" in row:
        raw = row["p_hat"]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("nan", "null", "none")):
            return math.nan
        p = _number(raw, "p_hat", where)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{where}: p_hat must be in [0, 1] or empty; got p_hat={raw!r}")
        return p
    if "successes" in row and "count" in row:
        s = _number(row["successes"], "successes", where)
        c = _number(row["count"], "count", where)
        if not (c >= 0 and float(c).is_integer()):
            raise ValueError(f"{where}: count must be a non-negative integer; got count={row['count']!r}")
        if not 0 <= s <= c:
            raise ValueError(
                f"{where}: successes must be in [0, count]; got successes={row['successes']!r}, count={c:g}"
            )
        return math.nan if c < min_count or c == 0 else s / c
    raise ValueError(f"{where}: row needs 'p_hat', or 'successes' and 'count'; got keys {sorted(row)}")


def _number(raw: object, name: str, where: str) -> float:
    try:
        v = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a number; got {name}={raw!r}") from None
    if math.isinf(v) or math.isnan(v):
        raise ValueError(f"{where}: {name} must be finite; got {name}={raw!r}")
    return v
