"""The rule's state in a TRL checkpoint folder: one self-checking file, ``knapsack_rule.bin``.

The file is the package's one state-file envelope (:func:`knapsack_rl.io.encode_state_file`, kind
``"rule-state"``), holding the rule's state in the one format every engine uses
(:func:`knapsack_rl.rules.state.pack_rule_state`: ``{"name", "state"}`` as JSON, its bytes values such as
a tracker image as parts ``rule/0``, ...) and the run's knapsack settings (``KnapsackConfig.to_dict()``),
under one SHA-256. Nothing is pickled, so a planted file can be refused but never executes code.

The file is written atomically (a reader sees the old file or the new one). Reading checks the size, the
envelope, the rule's name (a file of another rule is refused, naming both) and every field of the state:
:func:`check_rule_file` loads it into a *fresh* rule built like the run's, never into the run's rule, and
raises a one-line ``ValueError`` naming the file (a tracker saved under other tracker settings, another
estimator or ``min_count``, is refused by the rule, naming them). The checked rule is adopted by swapping
it in (:class:`RuleRestore`). Other knapsack settings (allocation, cold start) may change on resume: a
warning lists what changed (:func:`knapsack_rl.core.config.config_diff`).

Older files are refused, never misread, with one line saying what to do: ``knapsack_planner.bin`` (the
planner file of knapsack-rl before rules, and the ``KNAPSACK-RL-PLANNER v1`` format of 0.1.0).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from knapsack_rl.core.config import KnapsackConfig, config_diff
from knapsack_rl.io import STATE_MAGIC, read_state_file, write_state_file
from knapsack_rl.rules import Rule
from knapsack_rl.rules.state import PART_PREFIX, pack_rule_state, unpack_rule_state

logger = logging.getLogger(__name__)

RULE_FILE = "knapsack_rule.bin"
STATE_KIND = "rule-state"
STATE_VERSION = 1
"""The envelope kind and format version of :data:`RULE_FILE`."""
MAX_RULE_FILE_BYTES = 1 << 34
OLD_PLANNER_FILE = "knapsack_planner.bin"
"""The planner file earlier versions wrote instead of :data:`RULE_FILE`; refused (module docstring)."""
_WHAT_TO_DO = (
    "resume this checkpoint with the knapsack-rl version that wrote it, or start a new run from its weights "
    "(load the model from the folder, without resume_from_checkpoint)"
)
LEGACY: Mapping[bytes, str] = MappingProxyType(
    {
        b"KNAPSACK-RL-PLANNER\x00": "a planner state file of knapsack-rl 0.1.0 (KNAPSACK-RL-PLANNER v1), which this "
        f"version does not read; {_WHAT_TO_DO}",
        STATE_MAGIC + b"planner".ljust(32, b"\0"): "a planner state file of an earlier knapsack-rl (before rules), "
        f"which this version does not read; {_WHAT_TO_DO}",
    }
)
"""First bytes of the older formats, and what to tell their reader."""


@dataclass(frozen=True)
class RuleRestore:
    """A checked rule state, loaded into a fresh rule: nothing of the run has changed until it is swapped in."""

    path: Path
    rule: Rule
    """A fresh rule built like the run's, holding the checked state."""
    changes: list[str]
    """``"allocation.max_n: 32 -> 64"`` for every knapsack setting that differs from the saved one."""

    def warn(self) -> None:
        """Log the knapsack settings that changed since the save (they may, e.g. a larger max_n)."""
        if self.changes:
            logger.warning(
                "%s: resuming with other knapsack settings than saved: %s", self.path, ", ".join(self.changes)
            )


def save_rule_file(rule: Rule, knapsack: KnapsackConfig, folder: str | os.PathLike[str]) -> Path:
    """Write the rule's state and the run's knapsack settings to ``folder/knapsack_rule.bin`` atomically."""
    path = Path(folder) / RULE_FILE
    meta, parts = pack_rule_state(rule.name, rule.state_dict())
    write_state_file(path, STATE_KIND, STATE_VERSION, {"knapsack": knapsack.to_dict(), "rule": meta}, parts)
    return path


def check_rule_file(rule: Rule, knapsack: KnapsackConfig, folder: str | os.PathLike[str]) -> RuleRestore:
    """Read ``folder/knapsack_rule.bin`` and load it into a copy of ``rule`` (its settings, not its state);
    ``rule`` itself is never changed.

    Args:
        rule: the run's rule (named as the run's ``rule``).
        knapsack: the run's knapsack settings, compared with the saved ones for the warning.

    Raises:
        ValueError: the file is missing (or an older planner file is there), altered, foreign or malformed,
            holds another rule's state, or a state the rule refuses (one line naming the file).
    """
    path = Path(folder) / RULE_FILE
    if not path.exists():
        if (Path(folder) / OLD_PLANNER_FILE).exists():
            raise ValueError(
                f"checkpoint {str(folder)!r} holds {OLD_PLANNER_FILE}, the planner state of an earlier knapsack-rl, "
                f"not {RULE_FILE}; this version does not read it: {_WHAT_TO_DO}"
            )
        raise ValueError(
            f"checkpoint {str(folder)!r} has no {RULE_FILE}: it was not written by KnapsackGRPOTrainer, so the "
            "rule's state cannot be restored"
        )
    source = str(path)
    file = read_state_file(
        path, what="rule state file", kind=STATE_KIND, version=STATE_VERSION, parts=[], more_parts=PART_PREFIX,
        max_bytes=MAX_RULE_FILE_BYTES, legacy=LEGACY,
    )  # fmt: skip
    saved = _saved_knapsack(file.meta, source)
    name, state = unpack_rule_state(file.meta["rule"], file.parts, source=source)
    if name != rule.name:
        raise ValueError(f"{source}: holds the state of rule {name!r}, not of this run's rule {rule.name!r}")
    fresh = copy.deepcopy(rule)
    fresh.load_state_dict(state, source=source)  # the rule checks every field; it raises or holds the state
    return RuleRestore(path, fresh, config_diff(saved, knapsack.to_dict()))


def _saved_knapsack(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The saved knapsack settings of a rule file's meta (which must hold exactly ``knapsack`` and ``rule``)."""
    if sorted(meta) != ["knapsack", "rule"]:
        raise ValueError(f"{source}: a rule state file holds exactly ['knapsack', 'rule']; got {sorted(meta)}")
    saved = meta["knapsack"]
    if not isinstance(saved, dict):
        raise ValueError(f"{source}: the saved knapsack settings must be a mapping; got {type(saved).__name__}")
    return saved
