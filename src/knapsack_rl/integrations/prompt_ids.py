"""Stable prompt ids from prompt content: :func:`add_prompt_ids` for HF datasets, lists of dicts and DataFrames.

The tracker keys each prompt's success statistics by an id that must be unique per prompt and must not
change between runs, restarts or re-shuffles (a row index changes when the data set is filtered or
re-ordered; the content does not). The id of a prompt is::

    prompt_id = sha256(canonical(prompt)).hexdigest()[:16]        # 16 hex digits = 64 bits, a str
    canonical(prompt) = json.dumps(prompt, sort_keys=True, ensure_ascii=False,
                                   separators=(",", ":")).encode("utf-8")

so a plain-text prompt and a conversational one (a list of ``{"role", "content"}`` messages) both hash
their exact content, key order in the messages does not matter, and NumPy values (what pandas holds
after ``Dataset.to_pandas()``) are read as the equivalent Python values: the same prompts give the same
ids in every container. With 64 bits two distinct prompts share an id with probability about
``K**2 / 2**65`` for K prompts (3e-8 for a million); that case is detected and raises.

Refused with a ``ValueError`` naming the rows: two rows with the same prompt (deduplicate first: the
tracker needs one id per row, and TRL's sampler would put both copies in one batch), a hash collision,
a prompt that is not JSON data (e.g. an image object), and an existing id column whose values differ
from the content ids (an existing equal column is accepted, so the call is idempotent).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np

D = TypeVar("D")

ID_HEX_DIGITS = 16


def prompt_id(prompt: object) -> str:
    """The content id of one prompt (module docstring); raises ``ValueError`` if it is not JSON data."""
    return _digest(prompt)[:ID_HEX_DIGITS]


def _digest(prompt: object) -> str:
    """Full SHA-256 hex digest of the canonical JSON of ``prompt``."""
    try:
        text = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"prompt is not JSON data ({type(prompt).__name__}): {exc}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(value: object) -> object:
    """NumPy scalars and arrays as the Python values they hold (for json.dumps)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def content_ids(prompts: Sequence[object], *, prompt_column: str = "prompt") -> list[str]:
    """Content ids of ``prompts``; duplicates and collisions raise ``ValueError`` naming both rows.

    Two prompts with equal ids are the same prompt when their full 256-bit digests agree as well, and a
    64-bit collision otherwise.
    """
    ids: list[str] = []
    first: dict[str, tuple[int, str]] = {}  # id -> (row, full digest)
    for row, prompt in enumerate(prompts):
        try:
            digest = _digest(prompt)
        except ValueError as exc:
            raise ValueError(f"{prompt_column}[{row}]: {exc}") from None
        pid = digest[:ID_HEX_DIGITS]
        if pid in first:
            other, other_digest = first[pid]
            if other_digest == digest:
                raise ValueError(
                    f"{prompt_column}[{other}] and {prompt_column}[{row}] are the same prompt; deduplicate the data "
                    "set first (the tracker needs one id per row), e.g. keep the first row of each prompt"
                )
            raise ValueError(f"{prompt_column}[{other}] and {prompt_column}[{row}] differ but share content id {pid!r}")
        first[pid] = (row, digest)
        ids.append(pid)
    return ids


def add_prompt_ids(data: D, *, prompt_column: str = "prompt", id_column: str = "prompt_id") -> D:
    """A copy of ``data`` with ``id_column`` = the content id of each row's ``prompt_column`` (module docstring).

    Args:
        data: a ``datasets.Dataset``, a list of dict rows, or a ``pandas.DataFrame``.
        prompt_column: the column holding each prompt (text or a list of messages).
        id_column: the column to add (``KnapsackGRPOConfig.prompt_id_column``; default ``prompt_id``).

    Returns:
        The same kind of object, not modified in place (a ``Dataset`` with the column added, a new list of
        new dicts, a new DataFrame). If ``id_column`` exists and equals the content ids, the data come back
        as they are.

    Raises:
        ValueError: ``data`` of another type, ``prompt_column`` missing, duplicate prompts, a collision, or an
            existing ``id_column`` with other values (the message names the first differing row).
    """
    prompts, existing = _columns(data, prompt_column, id_column)
    ids = content_ids(prompts, prompt_column=prompt_column)
    if existing is not None:
        for row, (old, new) in enumerate(zip(existing, ids, strict=True)):
            if old != new:
                raise ValueError(
                    f"{id_column}[{row}]={old!r} differs from the content id {new!r} of {prompt_column}[{row}]; the "
                    f"data set already has other ids in {id_column!r}: use them, or pass another id_column"
                )
        return data
    return _with_column(data, id_column, ids)


def _columns(data: object, prompt_column: str, id_column: str) -> tuple[list[Any], list[Any] | None]:
    """The prompts and the existing ids (None when the id column is absent) of a supported container."""
    kind = _kind(data)
    if kind == "rows":
        rows: list[Mapping[str, Any]] = data  # type: ignore[assignment]
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or prompt_column not in row:
                raise ValueError(f"data[{i}] has no {prompt_column!r} key; every row needs its prompt")
        present = [id_column in row for row in rows]
        if any(present) and not all(present):
            raise ValueError(f"data[{present.index(False)}] has no {id_column!r} key while other rows have one")
        return [row[prompt_column] for row in rows], ([row[id_column] for row in rows] if all(present) else None)
    columns = list(data.column_names if kind == "dataset" else data.columns)  # type: ignore[attr-defined]
    if prompt_column not in columns:
        raise ValueError(f"data has no column {prompt_column!r} (columns: {columns})")
    prompts = list(data[prompt_column])  # type: ignore[index]
    return prompts, (list(data[id_column]) if id_column in columns else None)  # type: ignore[index]


def _with_column(data: D, id_column: str, ids: list[str]) -> D:
    kind = _kind(data)
    if kind == "rows":
        rows = cast(list[Mapping[str, Any]], data)
        return cast(D, [{**row, id_column: pid} for row, pid in zip(rows, ids, strict=True)])
    if kind == "dataset":
        return data.add_column(id_column, ids)  # type: ignore[attr-defined,no-any-return]
    return data.assign(**{id_column: ids})  # type: ignore[attr-defined,no-any-return]


def _kind(data: object) -> str:
    """``dataset``, ``frame`` or ``rows``; other types raise (the libraries are looked up, never imported here)."""
    datasets = sys.modules.get("datasets")
    if datasets is not None and isinstance(data, datasets.Dataset):
        return "dataset"
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(data, pandas.DataFrame):
        return "frame"
    if isinstance(data, list):
        return "rows"
    raise ValueError(
        f"add_prompt_ids takes a datasets.Dataset, a list of dict rows or a pandas.DataFrame; got {type(data).__name__}"
        " (for a DatasetDict, call it per split)"
    )


__all__ = ["ID_HEX_DIGITS", "add_prompt_ids", "content_ids", "prompt_id"]
