"""The planner's state in a TRL checkpoint folder: one self-checking file, ``knapsack_planner.bin``.

:meth:`knapsack_rl.Planner.state_dict` is plain data plus bytes (``{"version", "config", "tracker": bytes}``);
it is stored without pickle, so a planted file can be refused but never executes code::

    magic      b"KNAPSACK-RL-PLANNER\\x00v1\\n"
    length     8 bytes, little-endian: size of the header
    header     UTF-8 JSON: every entry of the state but the tracker, and ``tracker_bytes`` (its size)
    tracker    the tracker's bytes (:meth:`knapsack_rl.Tracker.to_bytes`, hashed by the tracker itself)
    digest     SHA-256 of everything above

The file is written atomically (a reader sees the old file or the new one). Reading checks the magic,
the sizes and the digest and raises ``ValueError`` naming the file; :meth:`Planner.load_state_dict` then
refuses a tracker saved under other tracker settings (another estimator or ``min_count``), naming them.
Other settings (allocation, rule, cold start) may change on resume: a warning lists what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from knapsack_rl.core.planner import Planner
from knapsack_rl.io import atomic_write_bytes

logger = logging.getLogger(__name__)

PLANNER_FILE = "knapsack_planner.bin"
_MAGIC = b"KNAPSACK-RL-PLANNER\x00v1\n"
_DIGEST = 32


def encode_state(state: dict[str, Any]) -> bytes:
    """:meth:`Planner.state_dict` output as file bytes (format in the module docstring)."""
    tracker = state["tracker"]
    if not isinstance(tracker, bytes):
        raise ValueError(f"state['tracker'] must be bytes; got {type(tracker).__name__}")
    header = {k: v for k, v in state.items() if k != "tracker"} | {"tracker_bytes": len(tracker)}
    head = json.dumps(header, allow_nan=False, sort_keys=True).encode("utf-8")
    body = _MAGIC + len(head).to_bytes(8, "little") + head + tracker
    return body + hashlib.sha256(body).digest()


def decode_state(data: bytes, *, source: str) -> dict[str, Any]:
    """Inverse of :func:`encode_state`; anything else raises ``ValueError`` naming ``source``."""
    if not data.startswith(_MAGIC):
        raise ValueError(f"{source}: not a knapsack-rl planner state file (bad magic)")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if len(data) < len(_MAGIC) + 8 + _DIGEST or hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{source}: planner state file is truncated or corrupt (SHA-256 mismatch)")
    start = len(_MAGIC) + 8
    size = int.from_bytes(body[len(_MAGIC) : start], "little")
    try:
        header = json.loads(body[start : start + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source}: malformed planner state header: {exc}") from None
    tracker = body[start + size :]
    if not isinstance(header, dict) or header.pop("tracker_bytes", None) != len(tracker):
        raise ValueError(f"{source}: malformed planner state header (tracker size does not match)")
    return header | {"tracker": tracker}


def save_planner(planner: Planner, folder: str | os.PathLike[str]) -> Path:
    """Write ``planner.state_dict()`` to ``folder/knapsack_planner.bin`` atomically; returns the path."""
    path = Path(folder) / PLANNER_FILE
    atomic_write_bytes(path, encode_state(planner.state_dict()))
    return path


def load_planner(planner: Planner, folder: str | os.PathLike[str]) -> Path:
    """Restore ``planner`` from ``folder/knapsack_planner.bin`` (:meth:`Planner.load_state_dict`); returns the path.

    Raises:
        ValueError: the file is missing, altered or foreign, or its tracker was saved under other tracker
            settings (the message names the file and every differing setting); ``planner`` is unchanged.
    """
    path = Path(folder) / PLANNER_FILE
    if not path.is_file():
        raise ValueError(
            f"checkpoint {str(folder)!r} has no {PLANNER_FILE}: it was not written by KnapsackGRPOTrainer "
            "(or by an older version), so the planner's state cannot be restored"
        )
    state = decode_state(path.read_bytes(), source=str(path))
    planner.load_state_dict(state, source=str(path))
    changed = config_changes(state.get("config", {}), planner.config.to_dict())
    if changed:  # allocation settings may change on resume (e.g. a larger max_n); say so
        logger.warning("%s: resuming with other knapsack settings than saved: %s", path, ", ".join(changed))
    return path


def config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``"allocation.max_n: 32 -> 64"`` for every leaf of two nested config dicts that differs."""
    out: list[str] = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out
