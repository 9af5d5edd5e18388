"""Where verl resumes from, and the run restored from there (or a new one).

verl's V1 trainer resumes from ``trainer.resume_from_path`` (``resume_mode=resume_path``) or from the
folder named by ``{trainer.default_local_dir}/latest_checkpointed_iteration.txt`` (``resume_mode=auto``,
the default); this module applies the same rules, so the tracker is restored from the very checkpoint
whose weights and dataloader state verl restores. Kept apart from :mod:`.hooks` so it imports without
verl's V1 stack.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from knapsack_rl.integrations.verl.config import KnapsackVerlConfig, _get
from knapsack_rl.integrations.verl.planner import VerlRun
from knapsack_rl.io import read_file_bytes

logger = logging.getLogger(__name__)

LATEST_FILE = "latest_checkpointed_iteration.txt"
"""verl's pointer to the latest complete checkpoint, inside ``trainer.default_local_dir``."""


def resume_folder(config: Any) -> Path | None:
    """The ``global_step_{k}`` folder verl resumes from under ``config.trainer``; None for a fresh start."""
    trainer = _get(config, "trainer")
    mode = str(_get(trainer, "resume_mode", "auto"))
    if mode == "disable":
        return None
    if mode == "resume_path":
        folder = Path(str(_get(trainer, "resume_from_path")))
    elif mode == "auto":
        root = Path(str(_get(trainer, "default_local_dir")))
        latest = root / LATEST_FILE
        if not latest.exists():
            return None
        folder = root / f"global_step_{_latest_step(latest)}"
        if not folder.is_dir():
            return None
    else:
        raise ValueError(f"trainer.resume_mode must be one of ['auto', 'disable', 'resume_path']; got {mode!r}")
    return folder if folder.is_absolute() else Path(os.getcwd()) / folder


def _latest_step(latest: Path) -> int:
    """The step verl's ``latest_checkpointed_iteration.txt`` names (a non-negative integer, nothing else)."""
    text = (
        read_file_bytes(latest, what="verl's latest-checkpoint file", max_bytes=64).decode("ascii", "replace").strip()
    )
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{latest}: expected the step of verl's latest checkpoint (an integer >= 0); got {text!r}")
    return int(text)


def restore_or_create(config: Any, settings: KnapsackVerlConfig | None = None) -> VerlRun:
    """A run restored from :func:`resume_folder`, or a new one when verl starts from scratch.

    ``settings`` defaults to ``KnapsackVerlConfig.from_verl(config)``. A resumed checkpoint without
    knapsack state raises unless ``knapsack.resume_without_state=true``.
    """
    if settings is None:
        settings = KnapsackVerlConfig.from_verl(config)
    folder = resume_folder(config)
    if folder is None:
        logger.info("knapsack: new run (%s)", settings)
        return VerlRun(settings)
    try:
        return VerlRun.load(folder, settings)
    except FileNotFoundError as exc:
        if not settings.adapter.resume_without_state:
            raise FileNotFoundError(
                f"{exc}; verl resumes from {folder}. Set knapsack.resume_without_state=true to start an "
                f"empty tracker there (allocation then restarts like a first epoch)"
            ) from exc
        logger.warning("knapsack: %s has no knapsack state; starting an empty tracker (resume_without_state)", folder)
        return VerlRun(settings)
