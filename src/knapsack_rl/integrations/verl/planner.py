"""The framework-free half of the verl adapter: verl batches to and from :class:`knapsack_rl.Planner`.

One :class:`VerlRun` per training run lives in verl's driver process (the ``TaskRunner``). Per step:

1. :meth:`VerlRun.plan` takes the step's prompt ids (``extra_info.index``, unique), their verl
   ``uid`` s and (optionally) the prompts; the epoch is counted by :class:`~knapsack_rl.core.planner.EpochCounter`
   (a new pass starts at the first id seen again; in verl's sync trainer this is verl's own
   ``training/epoch``) and :meth:`Planner.plan` returns the counts ``N_i`` (``sum_i N_i = M * n``, so
   verl's ``ppo_mini_batch_size * n`` arithmetic is unchanged).
2. verl generates ``N_i`` rollouts of prompt i, all carrying its ``uid``; verl's GRPO groups advantages
   by ``uid``, so groups of any size are handled by verl itself.
3. :meth:`VerlRun.observe` maps each rollout's ``uid`` back to its prompt id and hands the rewards to
   :meth:`Planner.observe`, which updates the tracker and returns the step's metrics.

The helpers below read and write verl's two batch containers: the V1 trainer's ``TensorDict`` (counts
go into the per-prompt ``__rollout_n__`` field the agent loop reads) and the legacy ``DataProto``
(rows are repeated with ``DataProto.sample_level_repeat``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.planner import EpochCounter, Planner
from knapsack_rl.core.validate import check_prompt_ids, check_unique_ids
from knapsack_rl.integrations.verl.config import KnapsackVerlConfig
from knapsack_rl.io import read_state_file, write_state_file

logger = logging.getLogger(__name__)

PromptId = int | str
ROLLOUT_N_KEY = "__rollout_n__"
"""Per-prompt field that verl's V1 agent loop pops to decide how many sessions to run for the prompt."""
STATE_DIR = "knapsack"
"""Sub-folder of a verl ``global_step_{k}`` checkpoint folder that holds the run's state."""
STATE_FILE = "state.bin"
"""The run's state in :data:`STATE_DIR`: one state-file envelope (:func:`knapsack_rl.io.encode_state_file`)."""
STATE_KIND = "verl-run"
STATE_VERSION = 2
"""Version 1 was the pair ``run.json`` + ``tracker.bin`` of knapsack-rl 0.1.0 (refused, with a message)."""
LEGACY_FILES = ("run.json", "tracker.bin")
_META_KEYS = ("epoch_counter", "fingerprints", "pending", "planner")


class VerlRun:
    """What the three verl hooks of one run share: a :class:`Planner`, the epoch count and the uid map.

    Example (what the hooks do each step)::

        run = VerlRun(KnapsackVerlConfig.from_section({}, n=8, train_batch_size=256))
        counts = run.plan(prompt_ids, uids, prompts)      # (M,) int64, sums to M * n
        ...  # verl generates counts[i] rollouts of prompt i with uid uids[i], scores them
        metrics = run.observe(rollout_uids, rollout_rewards, step=global_step)

    Args:
        settings: the run's settings.
        planner: an existing planner (default: ``Planner(settings.knapsack)``).
    """

    def __init__(self, settings: KnapsackVerlConfig, planner: Planner | None = None) -> None:
        if not isinstance(settings, KnapsackVerlConfig):
            raise ValueError(f"settings must be a KnapsackVerlConfig; got {type(settings).__name__}")
        self.settings = settings
        self.planner = planner if planner is not None else Planner(settings.knapsack)
        if self.planner.config != settings.knapsack:
            raise ValueError("planner.config must equal settings.knapsack")
        self.epochs = EpochCounter()
        self._fingerprints: dict[PromptId, str] = {}
        self._pending: dict[str, tuple[PromptId, int]] = {}  # uid -> (prompt id, epoch) planned, not yet observed
        self._plan_s = 0.0

    @property
    def epoch(self) -> int:
        """The 0-based pass over the training prompts of the latest plan."""
        return self.epochs.epoch

    @property
    def pending(self) -> int:
        """Prompts planned whose rewards were not observed yet (in flight, or evicted by verl's sampler)."""
        return len(self._pending)

    # ------------------------------------------------------------------ planning
    def plan(
        self, prompt_ids: Sequence[Any], uids: Sequence[str], prompts: Sequence[Any] | None = None
    ) -> NDArray[np.int64]:
        """Counts for the M prompts of one generation batch (:meth:`Planner.plan` at the counted epoch).

        Args:
            prompt_ids: (M,) stable data-set ids (``extra_info.index``); unique ints or strs.
            uids: (M,) verl's per-prompt ``uid`` (the GRPO group key); unique. A uid still pending is
                planned again without starting an epoch (verl re-issues in-flight prompts after an
                async resume).
            prompts: (M,) the prompts (any JSON-able value); with ``check_prompt_identity`` an id that
                comes back with a different prompt raises instead of sharing the other prompt's state.

        Returns:
            (M,) int64 rollouts per prompt, ``sum == M * n``. A rejected call changes nothing.
        """
        start = time.perf_counter()
        name = "prompt_ids (extra_info.index)"
        checked = check_prompt_ids(name, prompt_ids)
        ids: list[PromptId] = checked.tolist() if isinstance(checked, np.ndarray) else list(checked)
        check_unique_ids(name, ids)
        uid_list = [str(u) for u in uids]
        if len(uid_list) != len(ids):
            raise ValueError(f"prompt_ids and uids must have the same length; got {len(ids)} and {len(uid_list)}")
        if not ids:
            raise ValueError("plan() needs at least one prompt; got an empty batch")
        check_unique_ids("uids", uid_list)
        new_fps = self._new_fingerprints(ids, prompts)
        saved = self.epochs.state_dict()
        try:
            fresh = [pid for u, pid in zip(uid_list, ids, strict=True) if u not in self._pending]
            reissued = [self._pending[u][1] for u in uid_list if u in self._pending]
            epoch = self.epochs.advance(fresh) if fresh else max(reissued)  # a re-issue stays in its epoch
            budgets = self.planner.plan(ids, epoch=epoch).budgets.astype(np.int64)
        except BaseException:
            self.epochs.load_state_dict(saved)
            raise
        if int(budgets.sum()) != len(ids) * self.settings.n:
            raise RuntimeError(f"allocation total {int(budgets.sum())} != prompts x n = {len(ids) * self.settings.n}")
        self._fingerprints.update(new_fps)
        self._pending.update((u, (pid, epoch)) for u, pid in zip(uid_list, ids, strict=True))
        if len(ids) != self.settings.train_batch_size:
            logger.debug("planned %d prompts (train_batch_size=%d)", len(ids), self.settings.train_batch_size)
        self._plan_s = time.perf_counter() - start
        return budgets

    def _new_fingerprints(self, ids: list[PromptId], prompts: Sequence[Any] | None) -> dict[PromptId, str]:
        """Fingerprints of prompts not seen before; an id seen with another prompt raises."""
        if prompts is None or not self.settings.adapter.check_prompt_identity:
            return {}
        if len(prompts) != len(ids):
            raise ValueError(f"prompts and prompt_ids must have the same length; got {len(prompts)} and {len(ids)}")
        new: dict[PromptId, str] = {}
        for pid, prompt in zip(ids, prompts, strict=True):
            fp = _fingerprint(prompt)
            if self._fingerprints.get(pid, fp) != fp:
                raise ValueError(
                    f"prompt id extra_info.{self.settings.adapter.id_key}={pid!r} is shared by two different prompts; "
                    f"ids must be unique per prompt (re-run examples/verl/prepare_dapo_math.py or give each row its "
                    f"own index)"
                )
            new[pid] = fp
        return new

    # ----------------------------------------------------------------- observing
    def observe(self, rollout_uids: Sequence[str], rewards: ArrayLike, *, step: int | None = None) -> dict[str, float]:
        """Record the rewards of planned prompts and return the step's metrics (:meth:`Planner.observe`).

        Args:
            rollout_uids: (R,) verl ``uid`` of every rollout (the prompt's uid, repeated per rollout).
            rewards: (R,) scalar reward per rollout (sum of verl's token-level scores).
            step: verl's global step (stored as the prompts' last update).

        Returns:
            :meth:`Planner.observe`'s metrics (``train/*`` grouped by prompt, ``alloc/*`` of the latest
            plan, ``tracker/prompts``) plus ``train/epoch`` and ``timing_s/plan``. The rollouts' epoch is
            the latest one their prompts were planned in (they differ only across an epoch boundary in
            verl's async and refill modes), and never below an earlier observation's: in the async modes
            a batch of older prompts can finish after a newer one, and the Planner refuses an epoch that
            goes backwards.
        """
        uid_list = [str(u) for u in rollout_uids]
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(uid_list) != r.size:
            raise ValueError(f"rollout_uids and rewards must have the same length; got {len(uid_list)} and {r.size}")
        unknown = sorted({u for u in uid_list if u not in self._pending})
        if unknown:
            raise ValueError(
                f"rollout_uids contain {len(unknown)} uid(s) that were never planned or were already observed, e.g. "
                f"{unknown[0]!r}; every training prompt must pass through VerlRun.plan before its rewards are observed"
            )
        planned = [self._pending[u] for u in uid_list]
        epoch = max([e for _, e in planned] + [self.planner.tracker.epoch]) if planned else self.epoch
        metrics = self.planner.observe([pid for pid, _ in planned], r, epoch=epoch, step=step)
        metrics["train/epoch"] = float(epoch)
        metrics["timing_s/plan"] = self._plan_s
        for u in set(uid_list):
            del self._pending[u]
        return metrics

    def owns(self, uid: str) -> bool:
        """Whether ``uid`` was planned by this run and not observed yet."""
        return uid in self._pending

    # --------------------------------------------------------------- persistence
    def save(self, checkpoint_dir: str | os.PathLike[str]) -> Path:
        """Write ``{checkpoint_dir}/knapsack/state.bin`` atomically; returns the folder.

        One state-file envelope (kind ``"verl-run"``): the planner's settings, the epoch count, the prompt
        fingerprints and the prompts in flight as JSON meta, and the tracker's own bytes
        (:meth:`knapsack_rl.Tracker.to_bytes`) as the part ``"tracker"``, under one SHA-256; never a pickle.
        """
        state = self.planner.state_dict()
        folder = Path(checkpoint_dir) / STATE_DIR
        meta = {
            "planner": {k: v for k, v in state.items() if k != "tracker"},
            "epoch_counter": self.epochs.state_dict(),
            "fingerprints": [[pid, fp] for pid, fp in self._fingerprints.items()],
            "pending": [[uid, pid, epoch] for uid, (pid, epoch) in self._pending.items()],
        }
        write_state_file(folder / STATE_FILE, STATE_KIND, STATE_VERSION, meta, {"tracker": state["tracker"]})
        logger.info("saved knapsack state (%d prompts, epoch %d) to %s", len(self.planner.tracker), self.epoch, folder)
        return folder

    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike[str], settings: KnapsackVerlConfig) -> VerlRun:
        """Restore a run saved by :meth:`save` into ``checkpoint_dir``; the settings come from ``settings``.

        Every field is checked before the run is built (types, ranges, each id an int or str, each in-flight
        prompt's epoch within the count), so a malformed file raises one line and builds nothing.

        Raises:
            FileNotFoundError: no knapsack state in ``checkpoint_dir``.
            ValueError: a corrupt, foreign, malformed or old-format state, or a tracker saved under other
                tracker settings (:meth:`Planner.check_state_dict` names every setting that differs).
        """
        folder = Path(checkpoint_dir) / STATE_DIR
        path = folder / STATE_FILE
        if not path.exists():
            if any((folder / name).exists() for name in LEGACY_FILES):
                raise ValueError(
                    f"{folder}: knapsack state in the layout of knapsack-rl 0.1.0 ({' + '.join(LEGACY_FILES)}), which "
                    f"this version does not read; resume with the version that wrote it, or remove {folder} and set "
                    "knapsack.resume_without_state=true to restart the estimates"
                )
            raise FileNotFoundError(f"no knapsack state in {checkpoint_dir} (expected {path})")
        file = read_state_file(
            path, what="knapsack verl run state", kind=STATE_KIND, version=STATE_VERSION, parts=["tracker"]
        )
        out = cls(settings)
        out._restore(file.meta, file.parts["tracker"], str(path))
        logger.info(
            "restored knapsack state (%d prompts, epoch %d) from %s", len(out.planner.tracker), out.epoch, folder
        )
        return out

    def _restore(self, meta: dict[str, Any], tracker: bytes, source: str) -> None:
        """Check every field of a saved run's ``meta`` and adopt it (the run is new: nothing to keep)."""
        if sorted(meta) != list(_META_KEYS):
            raise ValueError(f"{source}: a verl run state holds exactly {list(_META_KEYS)}; got {sorted(meta)}")
        planner = meta["planner"]
        if not isinstance(planner, dict):
            raise ValueError(f"{source}: 'planner' must be an object; got {type(planner).__name__}")
        checked = self.planner.check_state_dict({**planner, "tracker": tracker}, source=source)
        self.epochs.load_state_dict(meta["epoch_counter"], source=source)
        fingerprints = _pairs(meta["fingerprints"], "fingerprints", 2, source)
        pending = _pairs(meta["pending"], "pending", 3, source)
        self._fingerprints = {_json_id(pid, f"fingerprints[{i}]", source): _fp(fp, i, source)
                              for i, (pid, fp) in enumerate(fingerprints)}  # fmt: skip
        self._pending = {
            _uid(uid, i, source): (_json_id(pid, f"pending[{i}]", source), _epoch(e, self.epoch, i, source))
            for i, (uid, pid, e) in enumerate(pending)
        }
        if len(self._fingerprints) != len(fingerprints) or len(self._pending) != len(pending):
            raise ValueError(f"{source}: 'fingerprints' or 'pending' lists an id or uid twice")
        self.planner.adopt_tracker(checked)


# ---------------------------------------------------------------------- verl data
def read_prompt_ids(extra_infos: Sequence[Any], id_key: str = "index") -> list[PromptId]:
    """``extra_info[id_key]`` of every row; a missing id raises (verl itself would silently use 0)."""
    ids: list[Any] = []
    for i, info in enumerate(extra_infos):
        if not isinstance(info, Mapping) or info.get(id_key) is None:
            have = sorted(info) if isinstance(info, Mapping) else type(info).__name__
            raise ValueError(
                f"row {i} of the batch has no extra_info[{id_key!r}] (extra_info keys: {have}); knapsack allocation "
                f"needs a stable unique id per prompt: write it with examples/verl/prepare_dapo_math.py"
            )
        value = info[id_key]
        ids.append(value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value)
    for i, pid in enumerate(ids):
        if isinstance(pid, bool) or not isinstance(pid, int | str):
            raise ValueError(f"prompt id {i} must be an int or a str; got {pid!r} ({type(pid).__name__})")
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


def plan_tensordict(run: VerlRun, batch: Any) -> NDArray[np.int64]:
    """V1 trainer: plan one generation batch (a ``TensorDict``) and stamp ``__rollout_n__`` into it.

    Reads ``extra_info``, ``uid`` and (if present) ``raw_prompt``; writes an int64 tensor (M,) under
    :data:`ROLLOUT_N_KEY`, which verl's agent loop pops per prompt as its number of sessions.
    """
    import torch

    ids = read_prompt_ids(batch_column(batch, "extra_info"), run.settings.adapter.id_key)
    prompts = batch_column(batch, "raw_prompt") if "raw_prompt" in batch else None
    budgets = run.plan(ids, batch_column(batch, "uid"), prompts)
    batch.set(ROLLOUT_N_KEY, torch.as_tensor(budgets, dtype=torch.int64))
    return budgets


def is_validation_batch(batch: Any) -> bool:
    """True for the batches verl's ``_validate`` dispatches (non-tensor ``validate=True``); they keep val n."""
    value = batch.get("validate", False)
    return bool(getattr(value, "data", value))


def plan_dataproto(run: VerlRun, batch: Any) -> Any:
    """Legacy trainer: plan a ``DataProto`` of M prompts and return it expanded to ``M * n`` rows.

    Row i is repeated ``N_i`` times with ``DataProto.sample_level_repeat`` (rows of one prompt stay
    contiguous and keep its ``uid``); the counts are also kept per row under :data:`ROLLOUT_N_KEY`.
    """
    ids = read_prompt_ids(batch_column(batch, "extra_info"), run.settings.adapter.id_key)
    prompts = batch_column(batch, "raw_prompt") if "raw_prompt" in batch.non_tensor_batch else None
    budgets = run.plan(ids, batch_column(batch, "uid"), prompts)
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
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"unexpected TransferQueue key {key!r}; expected '{{uid}}_{{session_id}}_{{index}}'")
        session, index = f"{parts[0]}_{parts[1]}", int(parts[2])
        if session not in final or final[session][0] < index:
            final[session] = (index, row)
    rows = [row for _, row in final.values()]
    return rows, [keys[row].rsplit("_", 2)[0] for row in rows]


def _pairs(value: object, name: str, width: int, source: str) -> list[list[Any]]:
    """``value`` as a list of lists of ``width`` entries (a saved run's ``fingerprints`` or ``pending``)."""
    if not isinstance(value, list):
        raise ValueError(f"{source}: {name!r} must be a list; got {type(value).__name__}")
    for i, entry in enumerate(value):
        if not isinstance(entry, list) or len(entry) != width:
            raise ValueError(f"{source}: {name}[{i}] must be a list of {width} entries; got {entry!r:.80}")
    return value


def _json_id(value: Any, where: str, source: str) -> PromptId:
    """Ids come back from JSON as int or str; anything else means a corrupt file."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | str)
        or (isinstance(value, int) and not _fits_int64(value))
    ):
        raise ValueError(f"{source}: {where}: prompt id {value!r:.80} is not an int64 or a str")
    return value


def _fits_int64(value: int) -> bool:
    return -(1 << 63) <= value < 1 << 63


def _fp(value: Any, i: int, source: str) -> str:
    if not isinstance(value, str) or len(value) != 16 or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"{source}: fingerprints[{i}]: {value!r:.80} is not a fingerprint (16 hex digits)")
    return value


def _uid(value: Any, i: int, source: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{source}: pending[{i}]: uid {value!r:.80} is not a str")
    return value


def _epoch(value: Any, latest: int, i: int, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= latest:
        raise ValueError(f"{source}: pending[{i}]: epoch {value!r:.80} is not an integer in [0, {latest}]")
    return value


def _fingerprint(prompt: Any) -> str:
    """Short content hash of a prompt (chat messages, text or token ids)."""
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    text = json.dumps(prompt, sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
