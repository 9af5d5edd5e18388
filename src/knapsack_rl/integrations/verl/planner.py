"""The framework-free half of the verl adapter: ids -> estimates -> counts, and rewards -> tracker.

One :class:`RolloutPlanner` lives in verl's driver process (the ``TaskRunner``). Per training step:

1. :meth:`RolloutPlanner.plan` takes the step's prompt ids (``extra_info.index``, unique), their verl
   ``uid`` s and (optionally) the prompts themselves; it asks the tracker for ``p_hat``, calls
   :func:`knapsack_rl.allocate` with ``total_budget = M * n`` and returns the counts ``N_i``
   (``sum_i N_i = M * n`` exactly, so verl's ``ppo_mini_batch_size * n`` arithmetic is unchanged).
2. verl generates ``N_i`` rollouts of prompt i, all carrying its ``uid``; verl's GRPO groups advantages
   by ``uid``, so groups of any size are handled by verl itself.
3. :meth:`RolloutPlanner.observe` takes the ``uid`` and scalar reward of every rollout, updates the
   tracker (rewards of all rollouts of the prompt) and returns the step's metrics:
   ``train/...`` from :func:`knapsack_rl.core.groups.step_metrics` and ``alloc/...`` from
   :meth:`Allocation.metrics`.

The helpers below read and write verl's two batch containers: the V1 trainer's ``TensorDict`` (counts
go into the per-prompt ``__rollout_n__`` field the agent loop reads) and the legacy ``DataProto``
(rows are repeated with ``DataProto.sample_level_repeat``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.allocate import Allocation, allocate
from knapsack_rl.core.groups import step_metrics
from knapsack_rl.core.tracker import Tracker
from knapsack_rl.core.validate import check_unique_ids
from knapsack_rl.integrations.verl.config import KnapsackVerlConfig
from knapsack_rl.io import atomic_write_bytes

logger = logging.getLogger(__name__)

ROLLOUT_N_KEY = "__rollout_n__"
"""Per-prompt field that verl's V1 agent loop pops to decide how many sessions to run for the prompt."""
STATE_DIR = "knapsack"
"""Sub-folder of a verl ``global_step_{k}`` checkpoint folder that holds the planner's state."""
_TRACKER_FILE = "tracker.bin"
_PLANNER_FILE = "planner.json"


class RolloutPlanner:
    """Per-prompt rollout counts for verl, from a :class:`Tracker` and :func:`knapsack_rl.allocate`.

    Example (what the verl hooks do each step)::

        planner = RolloutPlanner(KnapsackVerlConfig(n=8, train_batch_size=256))
        counts = planner.plan(prompt_ids, uids, prompts)       # (M,) int64, sums to M * n
        ...  # verl generates counts[i] rollouts of prompt i with uid uids[i], scores them
        metrics = planner.observe(rollout_uids, rollout_rewards, step=global_step)
    """

    def __init__(self, config: KnapsackVerlConfig, tracker: Tracker | None = None) -> None:
        self.config = config
        self.tracker = tracker if tracker is not None else Tracker(config.tracker_config())
        self.epoch = 0
        self._epoch_seen: set[Hashable] = set()
        self._fingerprints: dict[Hashable, str] = {}
        self._pending: dict[str, Hashable] = {}  # uid -> prompt id, for prompts planned but not yet observed
        self._last_allocation: Allocation | None = None

    # ------------------------------------------------------------------ planning
    def plan(
        self, prompt_ids: Sequence[Hashable], uids: Sequence[str], prompts: Sequence[Any] | None = None
    ) -> NDArray[np.int64]:
        """Counts for the M prompts of one generation batch: ``N = allocate(p_hat, n=n).budgets``.

        Args:
            prompt_ids: (M,) stable data-set ids (``extra_info.index``); must be unique.
            uids: (M,) verl's per-prompt ``uid`` (the GRPO group key); must be unique.
            prompts: (M,) the prompts (any JSON-able value); with ``check_prompt_identity`` an id that
                comes back with a different prompt raises instead of sharing the other prompt's state.

        Returns:
            (M,) int64 rollouts per prompt, ``sum == M * n``.
        """
        ids = [_as_id(pid, i) for i, pid in enumerate(prompt_ids)]
        uid_list = [str(u) for u in uids]
        if len(uid_list) != len(ids):
            raise ValueError(f"prompt_ids and uids must have the same length; got {len(ids)} and {len(uid_list)}")
        if not ids:
            raise ValueError("plan() needs at least one prompt; got an empty batch")
        check_unique_ids("prompt_ids (extra_info.index)", ids)
        check_unique_ids("uids", uid_list)
        if prompts is not None and self.config.check_prompt_identity:
            self._check_fingerprints(ids, prompts)
        self._advance_epoch(ids)
        budgets = self._allocate(ids)
        self._pending.update(zip(uid_list, ids, strict=True))
        return budgets

    def _allocate(self, ids: list[Hashable]) -> NDArray[np.int64]:
        """Knapsack counts (or the uniform n when disabled); the total is checked to be M * n."""
        cfg = self.config
        p_hat = self.tracker.estimate(ids)  # (M,) NaN = no estimate yet
        if cfg.enable:
            self._last_allocation = allocate(p_hat, **cfg.allocate_kwargs())
            budgets = self._last_allocation.budgets.astype(np.int64)
        else:
            self._last_allocation = None
            budgets = np.full(len(ids), cfg.n, dtype=np.int64)
        expected = len(ids) * cfg.n
        if int(budgets.sum()) != expected:
            raise RuntimeError(f"allocation total {int(budgets.sum())} != prompts x n = {expected}")
        if len(ids) != cfg.train_batch_size:
            logger.info(
                "planned %d prompts (train_batch_size=%d), %d rollouts", len(ids), cfg.train_batch_size, expected
            )
        return budgets

    def _advance_epoch(self, ids: list[Hashable]) -> None:
        """A new epoch starts when a prompt of this batch was already planned in the current epoch.

        verl's sampler shows every prompt at most once per epoch, so the first repeated id marks the
        dataloader's restart; the recipe estimator uses the epoch to prefer this epoch's rewards.
        """
        if any(pid in self._epoch_seen for pid in ids):
            self.epoch += 1
            self._epoch_seen = set()
            logger.info("knapsack planner: epoch %d begins", self.epoch)
        self._epoch_seen.update(ids)

    def _check_fingerprints(self, ids: list[Hashable], prompts: Sequence[Any]) -> None:
        if len(prompts) != len(ids):
            raise ValueError(f"prompts and prompt_ids must have the same length; got {len(prompts)} and {len(ids)}")
        for pid, prompt in zip(ids, prompts, strict=True):
            fp = _fingerprint(prompt)
            old = self._fingerprints.setdefault(pid, fp)
            if old != fp:
                raise ValueError(
                    f"prompt id extra_info.index={pid!r} is shared by two different prompts; ids must be unique "
                    f"per prompt (re-run examples/verl/prepare_dapo_math.py or give each row its own index)"
                )

    # ----------------------------------------------------------------- observing
    def observe(self, rollout_uids: Sequence[str], rewards: ArrayLike, *, step: int | None = None) -> dict[str, float]:
        """Record one step's rewards and return its metrics.

        Args:
            rollout_uids: (R,) verl ``uid`` of every rollout (the prompt's uid, repeated per rollout).
            rewards: (R,) scalar reward per rollout (sum of verl's token-level scores).
            step: verl's global step (stored as the prompts' last update).

        Returns:
            ``train/...`` (:func:`step_metrics`, groups = uid), ``alloc/...`` of the last plan and
            ``knapsack/epoch``, ``knapsack/tracked_prompts``.
        """
        uid_list = [str(u) for u in rollout_uids]
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(uid_list) != r.size:
            raise ValueError(f"rollout_uids and rewards must have the same length; got {len(uid_list)} and {r.size}")
        unknown = sorted({u for u in uid_list if u not in self._pending})
        if unknown:
            raise ValueError(
                f"rollout_uids contain {len(unknown)} uid(s) that were never planned, e.g. {unknown[0]!r}; "
                f"every training prompt must pass through RolloutPlanner.plan before its rewards are observed"
            )
        pids = [self._pending[u] for u in uid_list]
        self.tracker.update(pids, r, epoch=self.epoch, step=step)
        _, group = np.unique(np.asarray(uid_list, dtype=object), return_inverse=True)
        metrics = step_metrics(r, group)
        if self._last_allocation is not None:
            metrics.update(self._last_allocation.metrics(self.config.n))
        metrics["knapsack/epoch"] = float(self.epoch)
        metrics["knapsack/tracked_prompts"] = float(len(self.tracker))
        for u in set(uid_list):
            del self._pending[u]
        return metrics

    # --------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Planner state besides the tracker (JSON-able): epoch, ids seen this epoch, fingerprints, pending."""
        return {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "epoch_seen": list(self._epoch_seen),
            "fingerprints": [[pid, fp] for pid, fp in self._fingerprints.items()],
            "pending": [[uid, pid] for uid, pid in self._pending.items()],
        }

    def save(self, checkpoint_dir: str | os.PathLike[str]) -> Path:
        """Write ``{checkpoint_dir}/knapsack/{tracker.bin, planner.json}`` atomically; returns the folder."""
        folder = Path(checkpoint_dir) / STATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.tracker.save(folder / _TRACKER_FILE)
        atomic_write_bytes(folder / _PLANNER_FILE, json.dumps(self.state_dict()).encode())
        logger.info("saved knapsack state (%d prompts, epoch %d) to %s", len(self.tracker), self.epoch, folder)
        return folder

    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike[str], config: KnapsackVerlConfig) -> RolloutPlanner:
        """Restore a planner saved by :meth:`save` into ``checkpoint_dir``; the settings come from ``config``.

        A tracker saved under different estimator settings raises (its estimates would mean something else).
        """
        folder = Path(checkpoint_dir) / STATE_DIR
        if not (folder / _TRACKER_FILE).is_file() or not (folder / _PLANNER_FILE).is_file():
            raise FileNotFoundError(f"no knapsack state in {checkpoint_dir} (expected {folder}/{_TRACKER_FILE})")
        tracker = Tracker.load(folder / _TRACKER_FILE)
        if tracker.config != config.tracker_config():
            raise ValueError(
                f"tracker in {folder} was saved with {tracker.config}, the run is configured with "
                f"{config.tracker_config()}; resume with the same knapsack.estimator/window/min_count"
            )
        state = json.loads((folder / _PLANNER_FILE).read_text())
        planner = cls(config, tracker)
        planner.epoch = int(state["epoch"])
        planner._epoch_seen = {_json_id(pid) for pid in state["epoch_seen"]}
        planner._fingerprints = {_json_id(pid): str(fp) for pid, fp in state["fingerprints"]}
        planner._pending = {str(uid): _json_id(pid) for uid, pid in state["pending"]}
        logger.info("restored knapsack state (%d prompts, epoch %d) from %s", len(tracker), planner.epoch, folder)
        return planner


# ---------------------------------------------------------------------- verl data
def read_prompt_ids(extra_infos: Sequence[Any], id_key: str = "index") -> list[Hashable]:
    """``extra_info[id_key]`` of every row; a missing id raises (verl itself would silently use 0)."""
    ids: list[Hashable] = []
    for i, info in enumerate(extra_infos):
        if not isinstance(info, Mapping) or info.get(id_key) is None:
            have = sorted(info) if isinstance(info, Mapping) else type(info).__name__
            raise ValueError(
                f"row {i} of the batch has no extra_info[{id_key!r}] (extra_info keys: {have}); knapsack allocation "
                f"needs a stable unique id per prompt: write it with examples/verl/prepare_dapo_math.py"
            )
        ids.append(_as_id(info[id_key], i))
    return ids


def batch_column(batch: Any, key: str) -> list[Any]:
    """Column ``key`` of a verl ``DataProto``, a ``TensorDict`` or a dict of lists, as a Python list."""
    non_tensor = getattr(batch, "non_tensor_batch", None)
    if non_tensor is not None:  # DataProto
        if key not in non_tensor:
            raise ValueError(f"batch has no non-tensor column {key!r}; columns: {sorted(non_tensor)}")
        return list(non_tensor[key])
    if key not in batch:
        raise ValueError(f"batch has no column {key!r}; columns: {sorted(batch.keys())}")
    value = batch.get(key)
    if hasattr(value, "tolist"):
        out = value.tolist()
        return out if isinstance(out, list) else [out]
    return list(value)


def plan_tensordict(planner: RolloutPlanner, batch: Any) -> NDArray[np.int64]:
    """V1 trainer: plan one generation batch (a ``TensorDict``) and stamp ``__rollout_n__`` into it.

    Reads ``extra_info``, ``uid`` and (if present) ``raw_prompt``; writes an int64 tensor (M,) under
    :data:`ROLLOUT_N_KEY`, which verl's agent loop pops per prompt as its number of sessions.
    """
    import torch

    ids = read_prompt_ids(batch_column(batch, "extra_info"), planner.config.id_key)
    prompts = batch_column(batch, "raw_prompt") if "raw_prompt" in batch else None
    budgets = planner.plan(ids, batch_column(batch, "uid"), prompts)
    batch.set(ROLLOUT_N_KEY, torch.as_tensor(budgets, dtype=torch.int64))
    return budgets


def is_validation_batch(batch: Any) -> bool:
    """True for the batches verl's ``_validate`` dispatches (non-tensor ``validate=True``); they keep val n."""
    value = batch.get("validate", False)
    return bool(getattr(value, "data", value))


def plan_dataproto(planner: RolloutPlanner, batch: Any) -> Any:
    """Legacy trainer: plan a ``DataProto`` of M prompts and return it expanded to ``M * n`` rows.

    Row i is repeated ``N_i`` times with ``DataProto.sample_level_repeat`` (rows of one prompt stay
    contiguous and keep its ``uid``); the counts are also kept per row under :data:`ROLLOUT_N_KEY`.
    """
    ids = read_prompt_ids(batch_column(batch, "extra_info"), planner.config.id_key)
    prompts = batch_column(batch, "raw_prompt") if "raw_prompt" in batch.non_tensor_batch else None
    budgets = planner.plan(ids, batch_column(batch, "uid"), prompts)
    batch.non_tensor_batch[ROLLOUT_N_KEY] = budgets.copy()
    return batch.sample_level_repeat(budgets)


def dataproto_rewards(batch: Any, score_key: str = "token_level_scores") -> tuple[list[str], NDArray[np.float64]]:
    """``(uids, rewards)`` of a scored ``DataProto``: reward = sum over tokens of ``score_key`` (B, T)."""
    scores = batch.batch[score_key]
    return [str(u) for u in batch.non_tensor_batch["uid"]], scores.sum(dim=-1).double().cpu().numpy()


def final_session_rows(keys: Sequence[str]) -> tuple[list[int], list[str]]:
    """Rows of the final output of every session and their uids, from V1 TransferQueue keys.

    V1 stores each agent-loop output under ``{uid}_{session_id}_{index}``; a session (one rollout) may
    have several outputs, and only the one with the largest index carries the reward used by GRPO.
    """
    final: dict[str, tuple[int, int]] = {}
    for row, key in enumerate(keys):
        parts = key.rsplit("_", 2)
        if len(parts) != 3:
            raise ValueError(f"unexpected TransferQueue key {key!r}; expected '{{uid}}_{{session_id}}_{{index}}'")
        session, index = f"{parts[0]}_{parts[1]}", int(parts[2])
        if session not in final or final[session][0] < index:
            final[session] = (index, row)
    rows = [row for _, row in final.values()]
    return rows, [keys[row].rsplit("_", 2)[0] for row in rows]


def _as_id(value: Any, i: int) -> Hashable:
    """Prompt ids are ints or strings (NumPy / torch scalars are converted)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"prompt id {i} must be an int or a str; got {value!r} ({type(value).__name__})")
    return value


def _json_id(value: Any) -> Hashable:
    """Ids come back from JSON as int or str; anything else means a corrupt file."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"corrupt knapsack state: prompt id {value!r} is neither int nor str")
    return value


def _fingerprint(prompt: Any) -> str:
    """Short content hash of a prompt (chat messages, text or token ids)."""
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    text = json.dumps(prompt, sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
