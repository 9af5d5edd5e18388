"""Per-prompt success-rate state and estimators (SPEC section 5, and better ones).

A :class:`Tracker` keeps, for every prompt id it has seen, the sufficient statistics of all its
estimators at once (so an estimator can be switched, compared or merged without replaying data):

- a ring of the ``window`` most recent rewards and the total count (recipe estimator);
- this epoch's reward sum and count (recipe estimator);
- an exponential moving average of per-step mean rewards (``"ema"``);
- discounted success / failure counts for a Beta posterior (``"beta"``).

Estimators (registered by name; :func:`register_estimator` adds more):

- ``"recipe"``: if the current epoch recorded fewer than ``window`` (16) rewards for the prompt, the
  mean of its ``window`` most recent rewards across epochs; otherwise the mean of this epoch's
  rewards. Valid once ``min_count`` (8) rewards were recorded; NaN before.
- ``"ema"``: ``e <- (1 - w) e + w * mean(step rewards)`` per step in which the prompt appears
  (``w = ema_weight``; the first step sets ``e``). Valid once ``min_count`` rewards were recorded.
- ``"beta"``: posterior mean ``(a0 + s) / (a0 + b0 + s + f)`` of a Beta(a0, b0) prior, where every
  update first discounts the old evidence, ``s <- gamma s + successes``, ``f <- gamma f + failures``
  (``gamma = forgetting``), so evidence from an older policy fades. Never exactly 0 or 1, so a prompt
  that failed 8 times is treated as "hard", not "impossible". Valid once ``min_count`` rewards were
  recorded (``min_count=0`` gives the prior mean even for unseen prompts).

Rewards: ``{0, 1}`` and ``{-1, 1}`` are binary (-1 maps to 0). Continuous rewards in [0, 1] count
as fractional successes: the estimate is the mean reward, which the value function then treats as
the success rate of a Bernoulli reward with that mean. ``success_threshold`` turns continuous
rewards into binary ones (``reward >= threshold``) instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.validate import check_choice, check_int, check_real

logger = logging.getLogger(__name__)

RewardFormat = Literal["auto", "binary", "signed", "continuous"]
_MAGIC = b"KNAPSACK-RL-TRACKER\x00v1\n"
_FIELDS = ("ring", "ring_pos", "count", "epoch_id", "epoch_sum", "epoch_count", "ema", "beta_s", "beta_f", "last_step")


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of a :class:`Tracker`."""

    estimator: str = "recipe"
    """Name of the estimator used by :meth:`Tracker.estimate` (``recipe``, ``ema``, ``beta``)."""
    window: int = 16
    """Recent rewards kept per prompt; the recipe's estimator averages over them."""
    min_count: int = 8
    """Rewards a prompt needs before its estimate is valid (NaN before)."""
    ema_weight: float = 0.5
    """Weight of the newest step's mean reward in the EMA estimator."""
    beta_prior: tuple[float, float] = (1.0, 1.0)
    """Prior pseudo-counts (a0, b0) of the Beta estimator."""
    forgetting: float = 0.8
    """Discount of old evidence per update in the Beta estimator (1 keeps everything)."""
    reward_format: RewardFormat = "auto"
    """How rewards map to successes: binary {0,1}, signed {-1,1}, continuous [0,1], or auto-detect."""
    success_threshold: float | None = None
    """If set, a reward counts as a success when ``reward >= success_threshold`` (binary view)."""

    def __post_init__(self) -> None:
        check_choice("estimator", self.estimator, estimator_names())
        check_int("window", self.window, low=1)
        check_int("min_count", self.min_count, low=0)
        check_real("ema_weight", self.ema_weight, low=0.0, high=1.0, open_low=True)
        if len(self.beta_prior) != 2:
            raise ValueError(f"beta_prior must be a pair (a0, b0); got {self.beta_prior!r}")
        for v in self.beta_prior:
            check_real("beta_prior", v, low=0.0, open_low=True)
        check_real("forgetting", self.forgetting, low=0.0, high=1.0, open_low=True)
        check_choice("reward_format", self.reward_format, ("auto", "binary", "signed", "continuous"))
        if self.success_threshold is not None:
            check_real("success_threshold", self.success_threshold)


Estimator = Callable[["Tracker", NDArray[np.int64]], NDArray[np.float64]]
_ESTIMATORS: Registry[Estimator] = Registry("estimator", "estimator")


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Register ``fn(tracker, rows) -> p`` (rows index the tracker's arrays); duplicates raise."""
    return _ESTIMATORS.register(name)


def estimator_names() -> list[str]:
    """Names of the registered estimators, sorted."""
    return _ESTIMATORS.names()


def to_success(
    rewards: ArrayLike, reward_format: RewardFormat = "auto", success_threshold: float | None = None
) -> NDArray[np.float64]:
    """Map rewards to successes in [0, 1] (see the module docstring).

    ``auto``: values in {-1, 1} (with at least one -1) are signed, values in {0, 1} binary, other
    values in [0, 1] continuous; a mix of -1 and other values below 1 is ambiguous and raises.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(r)):
        i = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"rewards must be finite; rewards[{i}]={float(r[i])!r}")
    if success_threshold is not None:
        return (r >= success_threshold).astype(np.float64)
    fmt = reward_format
    if fmt == "auto":
        if np.all((r == -1.0) | (r == 1.0)) and np.any(r == -1.0):
            fmt = "signed"
        elif np.all((r == 0.0) | (r == 1.0)):
            fmt = "binary"
        else:
            fmt = "continuous"
    if fmt == "signed":
        bad = np.flatnonzero((r != -1.0) & (r != 1.0))
        if bad.size:
            raise ValueError(f"signed rewards must be -1 or 1; rewards[{bad[0]}]={float(r[bad[0]])!r}")
        return (r + 1.0) / 2.0
    allowed = (r == 0.0) | (r == 1.0) if fmt == "binary" else (r >= 0.0) & (r <= 1.0)
    bad = np.flatnonzero(~allowed)
    if bad.size:
        what = "0 or 1" if fmt == "binary" else "in [0, 1] (set success_threshold for other scales)"
        raise ValueError(f"{fmt} rewards must be {what}; rewards[{bad[0]}]={float(r[bad[0]])!r}")
    return r


class Tracker:
    """Success-rate state per prompt id, with save / load / merge.

    Example::

        tracker = Tracker(TrackerConfig(estimator="recipe"))
        tracker.update(ids_per_rollout, rewards_per_rollout, epoch=0)
        p_hat = tracker.estimate(prompt_ids)          # NaN where no estimate yet
        budgets = allocate(p_hat).budgets
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.epoch = 0
        self.step = 0
        self._ids: list[Hashable] = []
        self._index: dict[Hashable, int] = {}
        self._state: dict[str, NDArray[Any]] = _empty_state(0, self.config.window)

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, prompt_id: object) -> bool:
        return _key(prompt_id) in self._index

    @property
    def ids(self) -> list[Hashable]:
        """Prompt ids known to the tracker, in order of first appearance."""
        return list(self._ids)

    def counts(self, prompt_ids: Iterable[object]) -> NDArray[np.int64]:
        """Total rewards recorded per prompt (0 for unseen prompts)."""
        rows = self._rows(prompt_ids, create=False)
        out = np.zeros(rows.size, dtype=np.int64)
        seen = rows >= 0
        out[seen] = self._state["count"][rows[seen]]
        return out

    def estimate(self, prompt_ids: Iterable[object], *, estimator: str | None = None) -> NDArray[np.float64]:
        """Estimated success rate per prompt with the configured (or given) estimator; NaN = none yet."""
        name = check_choice("estimator", estimator or self.config.estimator, estimator_names())
        rows = self._rows(prompt_ids, create=False)
        out = np.full(rows.size, np.nan)
        seen = rows >= 0
        if seen.any():
            out[seen] = _ESTIMATORS.get(name)(self, rows[seen])
            out[seen & (self.counts_by_row(rows) < self.config.min_count)] = np.nan
        if name == "beta" and self.config.min_count == 0:
            a0, b0 = self.config.beta_prior
            out[~seen] = a0 / (a0 + b0)
        return out

    def counts_by_row(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        """Total rewards per row index (-1 rows count 0)."""
        return np.where(rows >= 0, self._state["count"][np.maximum(rows, 0)], 0)

    def array(self, name: str) -> NDArray[Any]:
        """Read-only view of one state array (for estimators and tests)."""
        arr = self._state[name][: len(self._ids)].view()
        arr.flags.writeable = False
        return arr

    # ----------------------------------------------------------------- updates
    def update(
        self,
        prompt_ids: Sequence[object] | NDArray[Any],
        rewards: ArrayLike,
        *,
        epoch: int | None = None,
        step: int | None = None,
    ) -> None:
        """Record the rewards of one step: ``prompt_ids[j]`` is the prompt of rollout j.

        Args:
            prompt_ids: (N,) prompt id per rollout (int or str ids).
            rewards: (N,) reward per rollout; mapped by :func:`to_success`.
            epoch: the epoch of this step (default: the tracker's current epoch).
            step: the global step (default: previous step + 1); stored as the prompt's last update.
        """
        cfg = self.config
        s = to_success(rewards, cfg.reward_format, cfg.success_threshold)
        ids = _as_list(prompt_ids)
        if len(ids) != s.size:
            raise ValueError(f"prompt_ids and rewards must have the same length; got {len(ids)} and {s.size}")
        if epoch is not None:
            self.epoch = check_int("epoch", epoch, low=0)
        self.step = self.step + 1 if step is None else check_int("step", step, low=0)
        if s.size == 0:
            return
        rows = self._rows(ids, create=True)
        order = np.argsort(rows, kind="stable")
        rows_sorted, s_sorted = rows[order], s[order]  # (N,)
        uniq, starts, cnt = np.unique(rows_sorted, return_index=True, return_counts=True)  # (P,)
        sums = np.add.reduceat(s_sorted, starts)  # (P,) successes per prompt this step
        self._update_ring(rows_sorted, s_sorted, uniq, starts, cnt)
        st = self._state
        new_epoch = st["epoch_id"][uniq] != self.epoch
        st["epoch_sum"][uniq] = np.where(new_epoch, 0.0, st["epoch_sum"][uniq]) + sums
        st["epoch_count"][uniq] = np.where(new_epoch, 0, st["epoch_count"][uniq]) + cnt
        st["epoch_id"][uniq] = self.epoch
        first = st["count"][uniq] == 0
        step_mean = sums / cnt
        st["ema"][uniq] = np.where(
            first, step_mean, (1 - cfg.ema_weight) * st["ema"][uniq] + cfg.ema_weight * step_mean
        )
        st["beta_s"][uniq] = cfg.forgetting * st["beta_s"][uniq] + sums
        st["beta_f"][uniq] = cfg.forgetting * st["beta_f"][uniq] + (cnt - sums)
        st["count"][uniq] += cnt
        st["last_step"][uniq] = self.step

    def _update_ring(
        self,
        rows_sorted: NDArray[np.int64],
        s_sorted: NDArray[np.float64],
        uniq: NDArray[np.int64],
        starts: NDArray[np.int64],
        cnt: NDArray[np.int64],
    ) -> None:
        """Append each prompt's rewards to its ring of the ``window`` most recent."""
        w = self.config.window
        st = self._state
        rank = np.arange(rows_sorted.size) - np.repeat(starts, cnt)  # position within the prompt's rewards
        keep = rank >= np.repeat(cnt, cnt) - w  # only the last `window` can survive
        slot = (st["ring_pos"][rows_sorted] + rank) % w
        st["ring"][rows_sorted[keep], slot[keep]] = s_sorted[keep]
        st["ring_pos"][uniq] = (st["ring_pos"][uniq] + cnt) % w

    def _rows(self, prompt_ids: Iterable[object], *, create: bool) -> NDArray[np.int64]:
        ids = _as_list(prompt_ids)
        if create:
            for pid in ids:
                if pid not in self._index:
                    _check_id(pid)
                    self._index[pid] = len(self._ids)
                    self._ids.append(pid)
            self._grow(len(self._ids))
        return np.fromiter((self._index.get(pid, -1) for pid in ids), dtype=np.int64, count=len(ids))

    def _grow(self, size: int) -> None:
        cap = self._state["count"].size
        if size <= cap:
            return
        new = _empty_state(max(size, 2 * cap, 64), self.config.window)
        for k in _FIELDS:
            new[k][:cap] = self._state[k]
        self._state = new

    # ------------------------------------------------------- persistence & merge
    def state_dict(self) -> dict[str, Any]:
        """A plain-data snapshot (ids, config, epoch, step and the state arrays)."""
        n = len(self._ids)
        return {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "ids": list(self._ids),
            "arrays": {k: self._state[k][:n].copy() for k in _FIELDS},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Tracker:
        """Rebuild a tracker from :meth:`state_dict` output."""
        cfg = dict(state["config"])
        cfg["beta_prior"] = tuple(cfg["beta_prior"])
        tracker = cls(TrackerConfig(**cfg))
        tracker.epoch, tracker.step = int(state["epoch"]), int(state["step"])
        ids = [_key(i) for i in state["ids"]]
        tracker._rows(ids, create=True)
        if len(tracker._ids) != len(ids):
            raise ValueError("tracker state has duplicate prompt ids")
        for k in _FIELDS:
            arr = np.asarray(state["arrays"][k])
            if arr.shape[0] != len(ids):
                raise ValueError(f"tracker state array {k!r} has {arr.shape[0]} rows for {len(ids)} ids")
            tracker._state[k][: len(ids)] = arr
        return tracker

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state atomically (temp file, fsync, rename) with a checksum."""
        state = self.state_dict()
        buf = io.BytesIO()
        np.savez(buf, **state["arrays"])
        payload = buf.getvalue()
        header = {
            "config": state["config"],
            "epoch": state["epoch"],
            "step": state["step"],
            "ids": state["ids"],
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
        head = json.dumps(header).encode()
        atomic_write_bytes(path, _MAGIC + len(head).to_bytes(8, "little") + head + payload)
        logger.debug("saved tracker with %d prompts to %s", len(self), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tracker:
        """Read a file written by :meth:`save`; a truncated or altered file raises ``ValueError``."""
        data = Path(path).read_bytes()
        if not data.startswith(_MAGIC):
            raise ValueError(f"{path}: not a knapsack-rl tracker file (bad magic)")
        pos = len(_MAGIC)
        head_len = int.from_bytes(data[pos : pos + 8], "little")
        try:
            header = json.loads(data[pos + 8 : pos + 8 + head_len])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: corrupt tracker header ({exc})") from exc
        payload = data[pos + 8 + head_len :]
        if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise ValueError(
                f"{path}: tracker file is truncated or corrupt "
                f"(payload {len(payload)} bytes, expected {header['payload_bytes']}, checksum mismatch)"
            )
        with np.load(io.BytesIO(payload)) as npz:
            arrays = {k: npz[k] for k in _FIELDS}
        return cls.from_state_dict({**header, "arrays": arrays})

    @classmethod
    def merge(cls, trackers: Sequence[Tracker], *, on_conflict: Literal["error", "latest"] = "error") -> Tracker:
        """Union of the states of several trackers (e.g. one per data-parallel rank).

        A prompt known to several trackers must have identical state there (as when every rank
        updates from the gathered rewards), unless ``on_conflict="latest"``, which keeps the state
        with the latest update (then the most rewards). All trackers must share one config.
        """
        if not trackers:
            raise ValueError("trackers is empty: nothing to merge")
        check_choice("on_conflict", on_conflict, ("error", "latest"))
        cfg = trackers[0].config
        for i, t in enumerate(trackers):
            if t.config != cfg:
                raise ValueError(f"trackers[{i}] has a different config: {t.config} != {cfg}")
        out = cls(cfg)
        out.epoch = max(t.epoch for t in trackers)
        out.step = max(t.step for t in trackers)
        for ti, t in enumerate(trackers):
            for row, pid in enumerate(t._ids):
                src = {k: t._state[k][row] for k in _FIELDS}
                if pid in out._index:
                    dst_row = out._index[pid]
                    dst = {k: out._state[k][dst_row] for k in _FIELDS}
                    if all(np.array_equal(src[k], dst[k]) for k in _FIELDS):
                        continue
                    if on_conflict == "error":
                        raise ValueError(f"trackers[{ti}] disagrees with an earlier tracker on prompt id {pid!r}")
                    if (int(src["last_step"]), int(src["count"])) <= (int(dst["last_step"]), int(dst["count"])):
                        continue
                else:
                    dst_row = int(out._rows([pid], create=True)[0])
                for k in _FIELDS:
                    out._state[k][dst_row] = src[k]
        return out


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _empty_state(size: int, window: int) -> dict[str, NDArray[Any]]:
    return {
        "ring": np.zeros((size, window), dtype=np.float64),
        "ring_pos": np.zeros(size, dtype=np.int64),
        "count": np.zeros(size, dtype=np.int64),
        "epoch_id": np.full(size, -1, dtype=np.int64),
        "epoch_sum": np.zeros(size, dtype=np.float64),
        "epoch_count": np.zeros(size, dtype=np.int64),
        "ema": np.zeros(size, dtype=np.float64),
        "beta_s": np.zeros(size, dtype=np.float64),
        "beta_f": np.zeros(size, dtype=np.float64),
        "last_step": np.zeros(size, dtype=np.int64),
    }


def _key(pid: object) -> Hashable:
    return pid.item() if isinstance(pid, np.generic) else pid  # type: ignore[return-value]


def _as_list(prompt_ids: Iterable[object]) -> list[Hashable]:
    if isinstance(prompt_ids, np.ndarray):
        return list(prompt_ids.tolist())
    return [_key(p) for p in prompt_ids]


def _check_id(pid: object) -> None:
    if isinstance(pid, bool) or not isinstance(pid, int | str):
        raise ValueError(f"prompt ids must be int or str; got {pid!r} ({type(pid).__name__})")


@register_estimator("recipe")
def _recipe_estimate(tracker: Tracker, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Mean of this epoch's rewards if it has >= window of them, else of the window most recent."""
    st, w = tracker._state, tracker.config.window
    recent = st["ring"][rows].sum(axis=1) / np.maximum(np.minimum(st["count"][rows], w), 1)
    this_epoch = st["epoch_id"][rows] == tracker.epoch
    n_epoch = np.where(this_epoch, st["epoch_count"][rows], 0)
    epoch_mean = st["epoch_sum"][rows] / np.maximum(n_epoch, 1)
    return np.where(n_epoch >= w, epoch_mean, recent)


@register_estimator("ema")
def _ema_estimate(tracker: Tracker, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Exponential moving average of per-step mean rewards."""
    return tracker._state["ema"][rows].copy()


@register_estimator("beta")
def _beta_estimate(tracker: Tracker, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Posterior mean of Beta(a0 + s, b0 + f) with discounted counts."""
    a0, b0 = tracker.config.beta_prior
    s, f = tracker._state["beta_s"][rows], tracker._state["beta_f"][rows]
    mean: NDArray[np.float64] = (a0 + s) / (a0 + b0 + s + f)
    return mean
