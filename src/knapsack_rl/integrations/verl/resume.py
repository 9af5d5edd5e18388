"""Where verl resumes from, and the run restored from there (or a new one).

verl's V1 trainer resumes from ``trainer.resume_from_path`` (``resume_mode=resume_path``) or from the
folder named by ``{trainer.default_local_dir}/latest_checkpointed_iteration.txt`` (``resume_mode=auto``,
the default); this module applies the same rules, so the rule's state is restored from the very
checkpoint whose weights and dataloader state verl restores. Kept apart from :mod:`.hooks` so it imports
without verl's V1 stack.

**Save order.** verl 0.9.1's ``PPOTrainer._save_checkpoint`` writes, in this order: the actor (and critic)
through the worker groups, ``data.pt`` (the dataloader), TransferQueue's state (async modes), then
``latest_checkpointed_iteration.txt``, and only then calls the checkpoint callback's ``on_save``, which
writes ``global_step_k/knapsack/state.bin``. No hook verl offers runs between the dataloader's state and
the marker, so the knapsack state cannot be written first. A crash between the two leaves a checkpoint that
verl resumes from (the marker names it) without knapsack state. :func:`restore_or_create` never starts
the rule from scratch there unasked: it refuses in one line, naming the folder, the newest checkpoint
that has both verl's actor state and the knapsack state (resume from it with ``trainer.resume_mode=
resume_path``), and the explicit opt-out ``knapsack.resume_without_state=true``. (With the actor's
``async_save`` verl calls ``on_save`` and writes no marker, so the state is there before any marker.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from knapsack_rl.integrations.verl.config import KnapsackVerlConfig, _get
from knapsack_rl.integrations.verl.planner import STATE_DIR, STATE_FILE, VerlRun
from knapsack_rl.io import read_file_bytes

logger = logging.getLogger(__name__)

LATEST_FILE = "latest_checkpointed_iteration.txt"
"""verl's pointer to the latest complete checkpoint, inside ``trainer.default_local_dir``."""
STEP_PREFIX = "global_step_"
"""verl's checkpoint folders: ``{default_local_dir}/global_step_{k}``."""


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
    knapsack state raises (FileNotFoundError, one line: the folder, the newest checkpoint with both states,
    the opt-out) unless ``knapsack.resume_without_state=true``, which starts the rule from scratch there.
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
            raise FileNotFoundError(f"{exc}; verl resumes from {folder}. {_remedy(folder)}") from exc
        logger.warning(
            "knapsack: %s has no knapsack state; the rule %s starts from scratch (resume_without_state)",
            folder, settings.rule,
        )  # fmt: skip
        return VerlRun(settings)


def _remedy(folder: Path) -> str:
    """What to do about a verl checkpoint without knapsack state: the newest earlier one that has both."""
    complete = newest_complete_checkpoint(folder.parent, before=_step_of(folder))
    back = (
        f"The newest checkpoint with knapsack state is {complete}: resume from it with "
        f"trainer.resume_mode=resume_path trainer.resume_from_path={complete}, or set"
        if complete is not None
        else "No earlier checkpoint has knapsack state; set"
    )
    return (
        f"(verl writes its latest-checkpoint marker before the knapsack state, so a crash between the two leaves "
        f"this.) {back} knapsack.resume_without_state=true to start the rule's state from scratch at this checkpoint"
    )


def newest_complete_checkpoint(root: Path, *, before: int | None = None) -> Path | None:
    """The ``global_step_{k}`` folder under ``root`` with the largest k (below ``before``) that holds both verl's
    actor state (``actor/``) and the knapsack state (``knapsack/state.bin``); None if there is none."""
    best: tuple[int, Path] | None = None
    if not root.is_dir():
        return None
    for path in root.iterdir():
        step = _step_of(path)
        if step is None or (before is not None and step >= before):
            continue
        if (path / "actor").is_dir() and (path / STATE_DIR / STATE_FILE).is_file() and (best is None or step > best[0]):
            best = (step, path)
    return None if best is None else best[1]


def _step_of(folder: Path) -> int | None:
    """k of a ``global_step_{k}`` folder name (None for any other name)."""
    tail = folder.name.removeprefix(STEP_PREFIX)
    return int(tail) if folder.name.startswith(STEP_PREFIX) and tail.isascii() and tail.isdigit() else None
