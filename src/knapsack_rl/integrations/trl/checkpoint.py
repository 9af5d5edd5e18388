"""The planner's state in a TRL checkpoint folder: one self-checking file, ``knapsack_planner.bin``.

The file is the package's one state-file envelope (:func:`knapsack_rl.io.encode_state_file`, kind
``"planner"``): :meth:`knapsack_rl.Planner.state_dict` without its tracker as the JSON meta (``version``
and ``config``), and the tracker's own bytes (:meth:`knapsack_rl.Tracker.to_bytes`) as the part
``"tracker"``, under one SHA-256. Nothing is pickled, so a planted file can be refused but never executes
code.

The file is written atomically (a reader sees the old file or the new one). Reading checks the size, the
envelope and every field (:meth:`Planner.check_state_dict`) before the planner changes, and raises a
one-line ``ValueError`` naming the file; a tracker saved under other tracker settings (another estimator
or ``min_count``) is refused, naming them. Other settings (allocation, rule, cold start) may change on
resume: a warning lists what changed. A planner file of the earlier format (``KNAPSACK-RL-PLANNER v1``,
knapsack-rl 0.1.0) is refused with a message saying so; it is never read as this one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from knapsack_rl.core.planner import Planner
from knapsack_rl.core.tracker import Tracker
from knapsack_rl.io import read_state_file, write_state_file

logger = logging.getLogger(__name__)

PLANNER_FILE = "knapsack_planner.bin"
STATE_KIND = "planner"
STATE_VERSION = 1
"""The envelope kind and format version of :data:`PLANNER_FILE`."""
MAX_PLANNER_FILE_BYTES = 1 << 34
LEGACY: Mapping[bytes, str] = MappingProxyType(
    {
        b"KNAPSACK-RL-PLANNER\x00": (
            "planner state file of the format of knapsack-rl 0.1.0 (KNAPSACK-RL-PLANNER v1), which this version does "
            "not read; resume this checkpoint with the knapsack-rl version that wrote it"
        )
    }
)


@dataclass(frozen=True)
class PlannerRestore:
    """A checked planner state, ready to be adopted: nothing has changed until :meth:`apply`."""

    path: Path
    planner: Planner
    tracker: Tracker
    changes: list[str]

    def apply(self) -> Path:
        """Adopt the checked state (cannot fail); warns when allocation settings changed since the save."""
        self.planner.adopt_tracker(self.tracker)
        if self.changes:  # allocation settings may change on resume (e.g. a larger max_n); say so
            logger.warning(
                "%s: resuming with other knapsack settings than saved: %s", self.path, ", ".join(self.changes)
            )
        return self.path


def save_planner(planner: Planner, folder: str | os.PathLike[str]) -> Path:
    """Write ``planner.state_dict()`` to ``folder/knapsack_planner.bin`` atomically; returns the path."""
    path = Path(folder) / PLANNER_FILE
    state = planner.state_dict()
    meta = {k: v for k, v in state.items() if k != "tracker"}
    write_state_file(path, STATE_KIND, STATE_VERSION, meta, {"tracker": state["tracker"]})
    return path


def check_planner(planner: Planner, folder: str | os.PathLike[str]) -> PlannerRestore:
    """Read and check ``folder/knapsack_planner.bin`` for ``planner`` without changing anything.

    Raises:
        ValueError: the file is missing, altered, foreign or malformed, or its tracker was saved under other
            tracker settings (one line naming the file and what is wrong).
    """
    path = Path(folder) / PLANNER_FILE
    if not path.exists():
        raise ValueError(
            f"checkpoint {str(folder)!r} has no {PLANNER_FILE}: it was not written by KnapsackGRPOTrainer "
            "(or by an older version), so the planner's state cannot be restored"
        )
    source = str(path)
    file = read_state_file(
        path, what="planner state file", kind=STATE_KIND, version=STATE_VERSION, parts=["tracker"],
        max_bytes=MAX_PLANNER_FILE_BYTES, legacy=LEGACY,
    )  # fmt: skip
    state = {**file.meta, "tracker": file.parts["tracker"]}
    tracker = planner.check_state_dict(state, source=source)
    return PlannerRestore(path, planner, tracker, config_changes(file.meta["config"], planner.config.to_dict()))


def load_planner(planner: Planner, folder: str | os.PathLike[str]) -> Path:
    """Restore ``planner`` from ``folder/knapsack_planner.bin`` (:func:`check_planner`, then adopt); returns the path.

    Raises:
        ValueError: as :func:`check_planner`; ``planner`` is then unchanged.
    """
    return check_planner(planner, folder).apply()


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
