"""Per-prompt stats files in, per-prompt budgets out (``knapsack-rl allocate``).

A stats file has one row per prompt with an ``id`` and either ``p_hat`` (a float in [0, 1]; empty or
null means "no estimate") or ``successes`` and ``count``. Formats, by suffix: ``.jsonl`` (one JSON
object per line, UTF-8), ``.csv`` (header row, UTF-8, an optional byte-order mark is skipped),
``.parquet`` (needs pyarrow). Every error names the file and the line (1-based; the CSV header is
line 1 and a row is numbered by the line it starts on; parquet rows are numbered from 1). The file is
read with :func:`knapsack_rl.io.read_file_bytes`: a folder, FIFO or device is refused without blocking,
and so is a file over :data:`MAX_STATS_BYTES`. A CSV cell over :data:`csv.field_size_limit` (131,072
characters) is refused naming its line.

Ids keep the type the file gives them: a JSON number is an int and a JSON string a str; a parquet
int column gives ints and a string column strs; a CSV cell is always a str, exactly as written
(``"007"`` stays ``"007"``, ``"١٢"`` is not 12). Float and bool ids are refused, as everywhere in the
package, so ``1``, ``"1"`` and ``1.0`` are never taken for one another, and so are integer ids outside
the signed 64-bit range (the trackers keep ids in int64 arrays).

Budgets are written by :func:`write_budgets` (``.json`` or ``.csv``, atomically); check the output
path with :func:`check_output_path` before spending time on the solve.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.allocate import BUCKET_NAMES
from knapsack_rl.core.validate import INT64_MAX, check_int, check_prompt_ids
from knapsack_rl.io import atomic_write_text, read_file_bytes

PromptId = int | str
OUTPUT_SUFFIXES = (".json", ".csv")
FORMULA_PREFIXES = ("=", "+", "-", "@")
"""A CSV cell starting with one of these, after any leading whitespace or control characters (a tab and a
carriage return among them), is read as a formula by spreadsheet programs (OWASP, "CSV Injection");
:func:`csv_id` prefixes such id cells with an apostrophe."""
MAX_STATS_BYTES = 1 << 32
"""Largest stats file read (4 GiB: tens of millions of prompts)."""
_INT64_MIN = -INT64_MAX - 1


def read_stats(path: str | Path, *, min_count: int = 1) -> tuple[list[PromptId], NDArray[np.float64]]:
    """Prompt ids and ``p_hat`` (NaN = no estimate) from a stats file.

    Rows given as ``successes`` / ``count`` yield ``successes / count``, or NaN when
    ``count < min_count`` (an integer >= 0).
    """
    path = Path(path)
    check_int("min_count", min_count, low=0)
    rows = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}.get(path.suffix)
    if rows is None:
        raise ValueError(f"stats file {path}: unknown format {path.suffix!r}; use .jsonl, .csv or .parquet")
    data = read_file_bytes(path, what="stats file", max_bytes=MAX_STATS_BYTES)
    ids: list[PromptId] = []
    p_hat: list[float] = []
    seen: dict[PromptId, int] = {}
    for line, row in rows(path, data):
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


def _jsonl_rows(path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from None
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{line}: malformed JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}:{line}: malformed JSON (nested too deeply)") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
        yield line, row


def _csv_rows(path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = _next_csv_row(reader, path)
    if header is None or "id" not in header:
        raise ValueError(f"{path}:1: CSV header must contain 'id'; got {header}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}:1: CSV header repeats {repeated}")
    start = reader.line_num + 1
    while (values := _next_csv_row(reader, path)) is not None:
        line, start = start, reader.line_num + 1  # a quoted cell can span lines: number rows by their first
        if not values:
            continue  # a blank line
        if len(values) != len(header):
            what = "fewer" if len(values) < len(header) else "more"
            raise ValueError(f"{path}:{line}: row has {len(values)} fields, {what} than the header's {len(header)}")
        yield line, {k: (v if v != "" else None) for k, v in zip(header, values, strict=True)}


def _next_csv_row(reader: Any, path: Path) -> list[str] | None:
    """The next row of ``reader`` (None at the end); a cell over the field size limit, a NUL byte or
    another CSV error raises ``ValueError`` naming the file and the line."""
    try:
        return next(reader, None)  # type: ignore[no-any-return]
    except csv.Error as exc:
        raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def _parquet_rows(path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is in the train extra
        raise ValueError(f"reading {path} needs pyarrow (pip install 'knapsack-rl[train]')") from exc
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from exc
    yield from enumerate(table.to_pylist(), start=1)


def _parse_id(row: dict[str, Any], where: str) -> PromptId:
    """The row's id with the type the file gave it (CSV: always the cell's text)."""
    pid = row.get("id")
    if pid is None or pid == "":
        raise ValueError(f"{where}: missing 'id'")
    if isinstance(pid, bool) or not isinstance(pid, int | str):
        raise ValueError(f"{where}: id must be an integer or a string; got {pid!r} ({type(pid).__name__})")
    if isinstance(pid, int) and not _INT64_MIN <= pid <= INT64_MAX:
        raise ValueError(f"{where}: id {pid} does not fit in 64 bits (integer ids must be in [-2**63, 2**63 - 1])")
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
    if isinstance(raw, bool):
        raise ValueError(f"{where}: {name} must be a number; got {name}={raw!r}")
    try:
        v = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: {name} must be a number; got {name}={raw!r}") from None
    if math.isinf(v) or math.isnan(v):
        raise ValueError(f"{where}: {name} must be finite; got {name}={raw!r}")
    return v


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Check before solving that budgets can be written to ``path``; returns it as a ``Path``.

    Raises ``ValueError`` with a one-line message if the suffix is not ``.json`` or ``.csv``, if
    ``path`` is a folder, or if the folder that would hold it (or, when that folder does not exist
    yet, its nearest existing ancestor) is not a writable folder. Writability is probed by creating
    and removing a temp file there, which also catches read-only mounts and permission systems that
    mode bits do not show.
    """
    target = Path(path)
    if target.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"cannot write {target}: budgets are written as .json or .csv, not {target.suffix!r}")
    if target.is_dir():
        raise ValueError(f"cannot write {target}: it is a folder")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {target}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".knapsack-rl-probe-", dir=folder)
    except OSError as exc:
        raise ValueError(f"cannot write {target}: folder {folder} is not writable ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return target


def write_budgets(
    path: str | os.PathLike[str],
    ids: Sequence[PromptId],
    p_hat: ArrayLike,
    budgets: ArrayLike,
    buckets: ArrayLike,
) -> None:
    """Write one row per prompt (``id``, ``p_hat``, ``budget``, ``bucket``) to ``path``, atomically.

    The format follows the suffix (:func:`check_output_path` rules):

    - ``.json``: a list of objects; ids keep their type, ``p_hat`` is null where there is no
      estimate, ``bucket`` is the bucket's name (:data:`knapsack_rl.core.allocate.BUCKET_NAMES`).
      This is the lossless format.
    - ``.csv``: the same columns through the :mod:`csv` module, every cell quoted
      (:data:`csv.QUOTE_ALL`), ``p_hat`` empty where there is no estimate. A str id is written as
      :func:`csv_id` gives it: control characters (line breaks and tabs included) escaped, so every
      row is one line, and a leading apostrophe where a spreadsheet would run the cell as a formula.
      Such ids therefore differ from the input in the CSV (use ``.json`` to get them back exactly).

    Args:
        ids: (M,) prompt ids (int or str).
        p_hat: (M,) estimates, NaN = no estimate.
        budgets: (M,) rollouts per prompt.
        buckets: (M,) bucket codes (indices into ``BUCKET_NAMES``), as in ``Allocation.buckets``.
    """
    target = Path(path)
    if target.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"cannot write {target}: budgets are written as .json or .csv, not {target.suffix!r}")
    checked = check_prompt_ids("ids", ids)
    id_list: list[PromptId] = checked.tolist() if isinstance(checked, np.ndarray) else checked
    p = np.asarray(p_hat, dtype=np.float64)
    b, k = np.asarray(budgets), np.asarray(buckets)
    if not (len(id_list) == p.size == b.size == k.size) or max(p.ndim, b.ndim, k.ndim) != 1:
        raise ValueError(f"ids, p_hat, budgets and buckets must be 1-D of one length; got {len(id_list)}, {p.shape}, "
                         f"{b.shape}, {k.shape}")  # fmt: skip
    if b.dtype.kind not in "iu" or k.dtype.kind not in "iu" or k.min(initial=0) < 0 or k.max(initial=0) >= 4:
        raise ValueError("budgets must be integers and buckets integer codes in [0, 4)")
    rows = [
        (pid, None if math.isnan(pv) else pv, bv, BUCKET_NAMES[kv])
        for pid, pv, bv, kv in zip(id_list, p.tolist(), b.tolist(), k.tolist(), strict=True)
    ]
    if target.suffix == ".json":
        keys = ("id", "p_hat", "budget", "bucket")
        text = json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=1)
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(("id", "p_hat", "budget", "bucket"))
        writer.writerows((csv_id(pid), "" if pv is None else pv, bv, name) for pid, pv, bv, name in rows)
        text = out.getvalue()
    try:
        atomic_write_text(target, text)
    except OSError as exc:  # a full disk, a read-only folder: one line naming the file
        raise ValueError(f"cannot write {target}: {exc.strerror or exc}") from None


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_INVISIBLE = ("Cc", "Cf", "Zl", "Zp")


def csv_id(pid: PromptId) -> str:
    r"""The CSV text of a prompt id: an int as its digits; a str made safe for spreadsheets.

    1. Escaping: a backslash becomes two backslashes (``\\``); a line feed, carriage return and tab
       become ``\n``, ``\r`` and ``\t`` (a backslash and a letter); every other control character
       (Unicode categories Cc, Zl and Zp: C0 and C1 controls, DEL, U+2028, U+2029) becomes ``\xNN``
       or ``\uNNNN``. The escaped text has no line break, so a row is one line in every reader, and
       it maps back to the id unambiguously.
    2. Formula guard: if the id, after any leading whitespace, control or invisible format characters
       (``str.isspace`` or Unicode categories Cc, Cf, Zl, Zp: ``" =2+2"``, ``"\r=2+2"``,
       ``"\u200b=2+2"``), starts with ``=``, ``+``, ``-`` or ``@``, the escaped text gets a leading
       apostrophe (``' =2+2``), so a spreadsheet shows the cell as text.
    """
    if not isinstance(pid, str):
        return str(pid)
    text = "".join(_ESCAPES.get(ch) or _escape_control(ch) for ch in pid)
    start = 0
    while start < len(pid) and (pid[start].isspace() or unicodedata.category(pid[start]) in _INVISIBLE):
        start += 1
    return "'" + text if pid.startswith(FORMULA_PREFIXES, start) else text


def _escape_control(ch: str) -> str:
    if unicodedata.category(ch) not in ("Cc", "Zl", "Zp"):
        return ch
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
