"""Per-prompt success-rate state and estimators (the recipe's, and better ones; docs/method.md).

A :class:`Tracker` keeps, for every prompt id it has seen, the sufficient statistics of all its
estimators at once (so an estimator can be switched, compared or merged without replaying data):

- a ring of the ``window`` most recent rewards and the total count (recipe estimator);
- this epoch's reward sum and count (recipe estimator);
- an exponential moving average of per-step mean rewards (``"ema"``);
- discounted success / failure counts for a Beta posterior (``"beta"``, :meth:`Tracker.posterior`).

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

Prompt ids are ``int`` (64-bit) or ``str``, never ``bool`` or ``float``: ``1``, ``"1"``, ``1.0`` and
``True`` are not silently taken for one another; the last two are refused wherever ids enter.
Pass integer ids as an int64 array for speed: they are grouped and looked up without Python loops.

Every public method validates all of its input before it changes anything: a refused call leaves
the tracker exactly as it was (its :meth:`Tracker.to_bytes` is byte-identical).

File (:meth:`Tracker.to_bytes` / :meth:`Tracker.save`): the package's one state-file envelope
(:func:`knapsack_rl.io.encode_state_file`, kind ``"tracker"``, version 3), with ``config``, ``epoch``,
``step`` and ``ids`` as its JSON meta and one part per state array (:data:`STATE_FIELDS`, in that
order, little-endian, C order). The envelope's SHA-256 covers every byte, so a truncation or any
altered byte is detected before anything is parsed. It guards against accidents (torn writes, bit
rot, editing), not against a forger, as there is no key; a file that passes it is still validated
field by field before anything is built: types, ranges (``window <= MAX_WINDOW``, ``count <=
MAX_COUNT``) and the relations every update keeps between a prompt's arrays (:func:`_check_consistent`),
so a forged file cannot make an estimate leave [0, 1], a count wrap or an update allocate more than the
file's own size calls for. Nothing in it is unpickled or executed. Files of the tracker's own earlier
formats (``KNAPSACK-RL-TRACKER`` v1 and v2) are refused with a message saying so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import repeat
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.validate import check_choice, check_int, check_prompt_ids, check_real
from knapsack_rl.io import atomic_write_bytes, decode_state_file, encode_state_file, read_file_bytes

logger = logging.getLogger(__name__)

RewardFormat = Literal["auto", "binary", "signed", "continuous"]
PromptId = int | str
FILE_KIND = "tracker"
"""The state-file kind of a tracker file (:func:`knapsack_rl.io.encode_state_file`)."""
FILE_VERSION = 3
"""The tracker file's format version (1 and 2 were the tracker's own formats, before the envelope)."""
_OLD_MAGIC = b"KNAPSACK-RL-TRACKER\x00"  # the first bytes of a version 1 or 2 file
_META_KEYS = ("config", "epoch", "ids", "step")
_INT64 = np.iinfo(np.int64)
MAX_WINDOW = 1 << 16
"""The largest ``window`` a tracker takes (a ring of ``window`` floats per prompt; 512 KiB at this cap)."""
MAX_COUNT = 1 << 32
"""The most rewards a tracker records for one prompt (an update that would pass it is refused). Far above
any run (a prompt sampled 64 times a step for 10^7 steps), and low enough that a file cannot ask for
discounted counts so large that a posterior's value loses its precision."""

STATE_FIELDS: dict[str, str] = {
    "ring": "(K, window) float64: the prompt's most recent successes in [0, 1], a ring buffer",
    "ring_pos": "(K,) int64: slot of the ring that the next reward overwrites",
    "count": "(K,) int64: rewards recorded in total",
    "epoch_id": "(K,) int64: epoch of the last update (-1: none)",
    "epoch_sum": "(K,) float64: successes recorded in epoch ``epoch_id``",
    "epoch_count": "(K,) int64: rewards recorded in epoch ``epoch_id``",
    "ema": "(K,) float64: exponential moving average of per-step mean successes",
    "beta_s": "(K,) float64: discounted successes s of the Beta posterior",
    "beta_f": "(K,) float64: discounted failures f of the Beta posterior",
    "last_step": "(K,) int64: global step of the last update",
}
"""The state arrays a :class:`Tracker` keeps per prompt (K prompts, one row each), readable by
estimators through :meth:`Tracker.array`."""
_FIELDS = tuple(STATE_FIELDS)
_INT_FIELDS = frozenset({"ring_pos", "count", "epoch_id", "epoch_count", "last_step"})


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
    """Prior pseudo-counts (a0, b0) of the Beta estimator (a list is stored as a tuple of floats)."""
    forgetting: float = 0.8
    """Discount of old evidence per update in the Beta estimator (1 keeps everything)."""
    reward_format: RewardFormat = "auto"
    """How rewards map to successes: binary {0,1}, signed {-1,1}, continuous [0,1], or auto-detect."""
    success_threshold: float | None = None
    """If set, a reward counts as a success when ``reward >= success_threshold`` (binary view)."""

    def __post_init__(self) -> None:
        check_choice("estimator", self.estimator, estimator_names())
        check_int("window", self.window, low=1, high=MAX_WINDOW)
        check_int("min_count", self.min_count, low=0)
        check_real("ema_weight", self.ema_weight, low=0.0, high=1.0, open_low=True)
        prior = self.beta_prior
        if not isinstance(prior, tuple | list) or len(prior) != 2:
            raise ValueError(f"beta_prior must be a pair (a0, b0); got beta_prior={prior!r}")
        pair = tuple(check_real("beta_prior", v, low=0.0, open_low=True) for v in prior)
        object.__setattr__(self, "beta_prior", pair)
        check_real("forgetting", self.forgetting, low=0.0, high=1.0, open_low=True)
        check_choice("reward_format", self.reward_format, ("auto", "binary", "signed", "continuous"))
        if self.success_threshold is not None:
            check_real("success_threshold", self.success_threshold)

    @classmethod
    def from_dict(cls, data: object) -> TrackerConfig:
        """Rebuild from ``asdict(config)`` (e.g. parsed JSON); unknown or missing keys raise ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"tracker config must be a mapping; got {data!r:.80}")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"tracker config must have exactly the keys {sorted(names)}; got {sorted(map(str, data))}")
        return cls(**data)


class TrackerView:
    """What an estimator may read: ``config``, ``epoch`` (being planned), :meth:`array`, :meth:`counts_by_row`.

    :meth:`Tracker.estimate` hands one to every estimator. ``epoch`` is the epoch a plan is made for,
    which can be newer than the last update's (the first step of an epoch plans before it observes):
    the recipe estimator's "this epoch's rewards" are those recorded in that epoch.
    """

    def __init__(self, tracker: Tracker, epoch: int) -> None:
        self._tracker = tracker
        self.config = tracker.config
        self.epoch = epoch

    def array(self, name: str) -> NDArray[Any]:
        """Read-only view of one state array (:data:`STATE_FIELDS`)."""
        return self._tracker.array(name)

    def counts_by_row(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        """Total rewards per row index (-1 rows count 0)."""
        return self._tracker.counts_by_row(rows)


Estimator = Callable[[TrackerView, NDArray[np.int64]], NDArray[np.float64]]
_ESTIMATORS: Registry[Estimator] = Registry("estimator", "estimator")


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Register an estimator ``fn(tracker, rows) -> p`` under ``name``; a taken name raises.

    ``rows`` (K,) are row indices of prompts the tracker has seen; ``fn`` returns their estimates,
    (K,) floats in [0, 1]. It reads the state only through the public, read-only
    :meth:`Tracker.array` (``tracker.array("beta_s")[rows]``; :data:`STATE_FIELDS` lists the arrays),
    :meth:`Tracker.counts_by_row`, ``tracker.config`` and ``tracker.epoch``. :meth:`Tracker.estimate`
    then sets NaN where a prompt has fewer than ``min_count`` rewards. Example::

        @register_estimator("last")
        def last_reward(tracker, rows):
            ring, pos = tracker.array("ring"), tracker.array("ring_pos")
            return ring[rows, (pos[rows] - 1) % tracker.config.window]
    """
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
    r = _as_rewards(rewards).reshape(-1)
    if success_threshold is None and reward_format in ("auto", "binary") and np.all((r == 0.0) | (r == 1.0)):
        return r  # the usual rewards: finite, and nothing to map
    if not np.all(np.isfinite(r)):
        i = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"rewards must be finite; rewards[{i}]={float(r[i])!r}")
    if success_threshold is not None:
        return (r >= success_threshold).astype(np.float64)
    fmt = reward_format
    if fmt == "auto":  # not all in {0, 1}: signed if all in {-1, 1} (then some are -1)
        fmt = "signed" if np.all((r == -1.0) | (r == 1.0)) else "continuous"
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


def _as_rewards(rewards: ArrayLike) -> NDArray[np.float64]:
    """(N,) rewards as float64: a 1-D array or sequence of real numbers (bool counts as 0 / 1)."""
    try:
        arr = np.asarray(rewards)
    except ValueError as exc:  # ragged nesting
        raise ValueError(f"rewards must be a 1-D sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"rewards must be 1-D; got shape {arr.shape}")
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64, copy=False)
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, complex) or not isinstance(v, int | float):
            raise ValueError(f"rewards must be real numbers; rewards[{i}]={v!r}")
    return arr.astype(np.float64)


# ---------------------------------------------------------------------------------------- prompt ids
_Ids = NDArray[np.int64] | list[PromptId]
"""Validated ids of one call (:func:`check_prompt_ids`): an int64 array when every id is an int, else
a list of int and str."""


class _IdIndex:
    """Prompt id -> row of the state arrays; rows are numbered in order of first appearance.

    int ids live in a sorted int64 array (vectorised lookup with ``np.searchsorted``), str ids in a dict.
    """

    def __init__(self) -> None:
        self.ids: list[PromptId] = []
        self.int_keys = np.empty(0, dtype=np.int64)  # (K_int,) sorted
        self.int_rows = np.empty(0, dtype=np.int64)  # (K_int,) row of each key
        self.str_rows: dict[str, int] = {}
        self._dense: NDArray[np.int64] | None = None  # (D,) row of id i at [i] (-1: none); see _table

    def set_ints(self, keys: NDArray[np.int64], rows: NDArray[np.int64]) -> None:
        """Replace the int ids: ``keys`` (sorted) and the row of each."""
        self.int_keys, self.int_rows, self._dense = keys, rows, None

    def _table(self) -> NDArray[np.int64] | None:
        """A direct id -> row table when int ids are dense enough (dataset indices usually are).

        Kept while every int id is in ``[0, 16 K + 65536)`` for K int ids, so its size is O(K); a
        lookup is then one gather instead of a sort and a binary search. None otherwise.
        """
        if self._dense is None and self.int_keys.size and _dense_fits(self.int_keys, self.int_keys.size):
            table = np.full(int(self.int_keys[-1]) + 1, -1, dtype=np.int64)
            table[self.int_keys] = self.int_rows
            self._dense = table
        return self._dense

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: _Ids) -> NDArray[np.int64]:
        """(N,) row of each id; -1 for ids never seen."""
        if isinstance(ids, np.ndarray):
            return self._lookup_ints(ids)
        rows = np.fromiter(map(self.str_rows.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))  # type: ignore[arg-type]
        miss = np.flatnonzero(rows < 0).tolist()  # unknown str ids, and every int id (never a key of str_rows)
        at_int = [i for i in miss if type(ids[i]) is int]
        if at_int:
            rows[at_int] = self._lookup_ints(np.fromiter((ids[i] for i in at_int), dtype=np.int64, count=len(at_int)))
        return rows

    def _lookup_ints(self, keys: NDArray[np.int64]) -> NDArray[np.int64]:
        if self.int_keys.size == 0 or keys.size == 0:
            return np.full(keys.size, -1, dtype=np.int64)
        table = self._table()
        if table is not None:
            if keys.min() >= 0 and keys.max() < table.size:
                return table[keys]
            inside = (keys >= 0) & (keys < table.size)
            return np.where(inside, table[np.where(inside, keys, 0)], -1)
        if keys.size > 64:  # searchsorted is several times faster on sorted queries
            order = np.argsort(keys)
            pos = np.empty(keys.size, dtype=np.intp)
            pos[order] = np.searchsorted(self.int_keys, keys[order])
        else:
            pos = np.searchsorted(self.int_keys, keys)
        np.minimum(pos, self.int_keys.size - 1, out=pos)
        return np.where(self.int_keys[pos] == keys, self.int_rows[pos], -1)

    def add(self, new_ids: _Ids) -> None:
        """Append ids the index does not hold yet (the caller checked), as rows ``len(self)``, ..."""
        start = len(self.ids)
        rows = np.arange(start, start + len(new_ids), dtype=np.int64)
        if isinstance(new_ids, np.ndarray):
            ints, int_rows = new_ids, rows
            self.ids.extend(new_ids.tolist())
        else:
            is_str = np.fromiter(map(isinstance, new_ids, repeat(str)), dtype=bool, count=len(new_ids))
            int_rows = rows[~is_str]
            ints = np.fromiter((new_ids[i] for i in int_rows - start), dtype=np.int64, count=int_rows.size)
            self.str_rows.update((new_ids[i], start + i) for i in np.flatnonzero(is_str).tolist())  # type: ignore[misc]
            self.ids.extend(new_ids)
        if ints.size:
            order = np.argsort(ints)
            if self.int_keys.size == 0:
                self.set_ints(ints[order], int_rows[order])
                return
            pos = np.searchsorted(self.int_keys, ints[order])
            self.int_keys = np.insert(self.int_keys, pos, ints[order])
            self.int_rows = np.insert(self.int_rows, pos, int_rows[order])
            self._add_dense(ints, int_rows)

    def _add_dense(self, ints: NDArray[np.int64], rows: NDArray[np.int64]) -> None:
        """Enter new int ids in the direct table (growing it by doubling), or drop it if they do not fit."""
        table = self._dense
        if table is None:
            return
        if not _dense_fits(ints, self.int_keys.size):
            self._dense = None
            return
        top = int(ints.max()) + 1
        if top > table.size:
            grown = np.full(max(top, 2 * table.size), -1, dtype=np.int64)
            grown[: table.size] = table
            table = self._dense = grown
        table[ints] = rows


def _dense_fits(ints: NDArray[np.int64], n_ids: int) -> bool:
    """Whether ``ints`` may live in a direct table of an index with ``n_ids`` int ids (:meth:`_IdIndex._table`)."""
    return bool(ints.min() >= 0 and ints.max() < 16 * n_ids + (1 << 16))


@dataclass(frozen=True)
class _Groups:
    """Rollouts of one update grouped by prompt (P distinct prompts, N rollouts); nothing mutated yet.

    ``perm`` (N,) orders the rollouts by prompt, keeping their order within a prompt (None: already
    in that order); group g is ``perm[starts[g] : starts[g] + counts[g]]``; ``rows`` (P,) is each
    group's row, new prompts taking rows ``len(tracker)``, ... in order of first appearance; ``new_ids``
    are those new prompts' ids in row order.
    """

    rows: NDArray[np.int64]
    perm: NDArray[np.intp] | None
    starts: NDArray[np.intp]
    counts: NDArray[np.int64]
    new_ids: _Ids
    width: int | None
    """The size of every group when all are equal (n rollouts for each prompt: the usual step), else None."""


def _group(index: _IdIndex, ids: _Ids) -> _Groups:
    """Group rollouts by prompt id without changing ``index``.

    int ids (an array): grouped first, then each distinct id is looked up once. A list (str ids):
    each rollout's id is looked up in the dict (one C-level pass), then rollouts are grouped by row.
    """
    if isinstance(ids, np.ndarray):
        perm, starts, uniq, first = _group_keys(ids)
        rows = index.lookup(uniq)
        new = np.flatnonzero(rows < 0)
        new = new[np.argsort(first[new], kind="stable")]  # new prompts in order of first appearance
        rows[new] = len(index) + np.arange(new.size)
        new_ids: _Ids = uniq[new]
    else:
        row_of = index.lookup(ids)  # (N,)
        miss = np.flatnonzero(row_of < 0).tolist()
        new_ids = list(dict.fromkeys(ids[i] for i in miss))  # new prompts in order of first appearance
        new_row = {pid: len(index) + k for k, pid in enumerate(new_ids)}
        row_of[miss] = [new_row[ids[i]] for i in miss]
        perm, starts, rows, _ = _group_keys(row_of)
    counts = np.empty(starts.size, dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1] = len(ids) - starts[-1]
    width = int(counts[0]) if counts.min() == counts.max() else None
    return _Groups(rows, perm, starts, counts, new_ids, width)


def _group_keys(
    keys: NDArray[np.int64],
) -> tuple[NDArray[np.intp] | None, NDArray[np.intp], NDArray[np.int64], NDArray[np.intp]]:
    """Group (N,) int keys: ``(perm, starts, uniq, first)`` as in :class:`_Groups`, with ``uniq`` (P,)
    the key of each group and ``first`` (P,) the position of its first element.

    When each key forms one run of neighbours (rollouts listed prompt by prompt, the usual case) the
    runs are the groups and no sort of the N keys is needed (``perm`` is None); when the rollouts come
    round by round (``np.tile(u, c)``: rollout 0 of every prompt, then rollout 1, ...) the groups are
    read off the period, again without a sort. Otherwise the N keys are sorted once.
    """
    run_starts = _run_starts(keys)  # (R,)
    if 2 * run_starts.size <= keys.size:  # runs of two or more on average: are they the groups?
        run_keys = keys[run_starts]
        sorted_runs = np.sort(run_keys)
        if not np.any(sorted_runs[1:] == sorted_runs[:-1]):
            return None, run_starts, run_keys, run_starts
    elif run_starts.size == keys.size and (period := _tile_period(keys)) is not None:
        width = keys.size // period
        perm = np.arange(keys.size).reshape(width, period).T.reshape(-1)
        return perm, np.arange(0, keys.size, width), keys[:period].copy(), np.arange(period)
    perm, sorted_all = _stable_sort(keys)  # (N,) by key, then by position
    starts = np.flatnonzero(np.r_[True, sorted_all[1:] != sorted_all[:-1]])
    return perm, starts, sorted_all[starts], perm[starts]


def _tile_period(keys: NDArray[np.int64]) -> int | None:
    """The period p if ``keys`` (N,) is ``np.tile(u, N // p)`` with p < N distinct keys ``u``, else None."""
    again = np.flatnonzero(keys[1:] == keys[0])
    if not again.size:
        return None
    period = int(again[0]) + 1
    if keys.size % period or not np.array_equal(
        keys.reshape(-1, period), np.broadcast_to(keys[:period], (keys.size // period, period))
    ):
        return None
    head = np.sort(keys[:period])
    return None if np.any(head[1:] == head[:-1]) else period


def _run_starts(keys: NDArray[np.int64]) -> NDArray[np.intp]:
    """(R,) starts of the runs of equal neighbours in ``keys`` (N,), N >= 1.

    When the runs all have one length c (``np.repeat(u, c)``: what engines send) they are found by
    checking c, 2 c, ... instead of listing every change.
    """
    change = keys[1:] != keys[:-1]  # (N - 1,)
    c = int(np.argmax(change[:1024])) + 1 if change[:1024].any() else keys.size
    runs = keys.size // c
    if not keys.size % c and np.count_nonzero(change) == runs - 1 and change[c - 1 :: c].all():
        return np.arange(0, keys.size, c)  # runs - 1 changes, and all at c, 2 c, ...: no other
    return np.flatnonzero(np.r_[True, change])


# ------------------------------------------------------------------------------------------ tracker
class Tracker:
    """Success-rate state per prompt id, with save / load.

    Example:
        One id per rollout and its reward; an estimate needs ``min_count`` rewards (NaN until then):

        >>> from knapsack_rl import Tracker, TrackerConfig, allocate
        >>> tracker = Tracker(TrackerConfig(min_count=2))
        >>> tracker.update(["a", "a", "b", "b", "b", "c"], [1, 0, 1, 1, 1, 1], epoch=0)
        >>> tracker.estimate(["a", "b", "c", "unseen"]).tolist()
        [0.5, 1.0, nan, nan]
        >>> tracker.counts(["a", "b", "c", "unseen"]).tolist()
        [2, 3, 1, 0]
        >>> allocate(tracker.estimate(["a", "b", "c"]), n=4).budgets.tolist()
        [5, 3, 4]
        >>> Tracker.from_bytes(tracker.to_bytes()).estimate(["a", "b"]).tolist()  # a checkpoint round trip
        [0.5, 1.0]
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        if config is not None and not isinstance(config, TrackerConfig):
            raise ValueError(f"config must be a TrackerConfig; got {config!r:.80}")
        self.config = config or TrackerConfig()
        self._epoch = 0
        self._step = 0
        self._index = _IdIndex()
        self._state: dict[str, NDArray[Any]] = _empty_state(0, self.config.window)
        self._max_count = 0  # the largest count of any prompt (kept within MAX_COUNT)

    @property
    def epoch(self) -> int:
        """Current epoch (int >= 0); the recipe estimator compares each prompt's epoch with it."""
        return self._epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch = check_int("epoch", value, low=0, high=_INT64.max)

    @property
    def step(self) -> int:
        """Global step of the last update (int >= 0)."""
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        self._step = check_int("step", value, low=0, high=_INT64.max)

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, prompt_id: object) -> bool:
        """Whether the tracker has seen ``prompt_id``; False for anything that is not a valid id."""
        try:
            ids = check_prompt_ids("prompt_id", [prompt_id])
        except ValueError:
            return False
        return bool(self._index.lookup(ids)[0] >= 0)

    @property
    def ids(self) -> list[PromptId]:
        """Prompt ids known to the tracker, in order of first appearance (= row order)."""
        return list(self._index.ids)

    def rows(self, prompt_ids: Sequence[object] | NDArray[Any]) -> NDArray[np.int64]:
        """(M,) row of each prompt in the state arrays (-1 for unseen prompts); ids validated."""
        return self._index.lookup(check_prompt_ids("prompt_ids", prompt_ids))

    def _rows(self, ids: _Ids) -> NDArray[np.int64]:
        """:meth:`rows` of ids :func:`check_prompt_ids` returned (a caller that checked them once)."""
        return self._index.lookup(ids)

    def counts(self, prompt_ids: Sequence[object] | NDArray[Any]) -> NDArray[np.int64]:
        """(M,) total rewards recorded per prompt (0 for unseen prompts)."""
        return self.counts_by_row(self.rows(prompt_ids))

    def counts_by_row(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        """(K,) total rewards per row index (-1 rows count 0)."""
        count = self._state["count"]
        return np.where(rows >= 0, count[np.maximum(rows, 0)], 0) if count.size else np.zeros(rows.size, np.int64)

    def array(self, name: str) -> NDArray[Any]:
        """Read-only view of one state array (:data:`STATE_FIELDS`), one row per known prompt.

        The public read API for estimators: rows are those of :meth:`rows`. The view reflects the
        state at the time of the call; take a new one after an update.
        """
        check_choice("name", name, _FIELDS)
        arr = self._state[name][: len(self)].view()
        arr.flags.writeable = False
        return arr

    def estimate(
        self, prompt_ids: Sequence[object] | NDArray[Any], *, estimator: str | None = None, epoch: int | None = None
    ) -> NDArray[np.float64]:
        """(M,) estimated success rate per prompt with the configured (or given) estimator; NaN = none yet.

        ``epoch``: the epoch the estimate is for (default: the last update's); the recipe estimator
        prefers rewards recorded in that epoch, so a plan for a new epoch must say which.
        """
        name = check_choice("estimator", self.config.estimator if estimator is None else estimator, estimator_names())
        at = self.epoch if epoch is None else check_int("epoch", epoch, low=0)
        return self._estimate(self.rows(prompt_ids), name, at)

    def _estimate(self, rows: NDArray[np.int64], name: str, epoch: int) -> NDArray[np.float64]:
        """:meth:`estimate` at ``rows`` (of checked ids; -1: unseen) with the estimator ``name``, for ``epoch``."""
        view = TrackerView(self, epoch)
        seen = rows >= 0
        if rows.size and seen.all():  # the usual plan: every prompt seen before
            return self._estimate_rows(name, view, rows)
        out = np.full(rows.size, np.nan)
        if seen.any():
            out[seen] = self._estimate_rows(name, view, rows[seen])
        if name == "beta" and self.config.min_count == 0:
            a0, b0 = self.config.beta_prior
            out[~seen] = a0 / (a0 + b0)
        return out

    def _estimate_rows(self, name: str, view: TrackerView, rows: NDArray[np.int64]) -> NDArray[np.float64]:
        """Estimator ``name`` on known ``rows``, NaN where a row has fewer than ``min_count`` rewards."""
        got = np.array(_ESTIMATORS.get(name)(view, rows), dtype=np.float64)  # a copy: an estimator may return a view
        if got.shape != rows.shape:
            raise ValueError(f"estimator {name!r} returned shape {got.shape} for {rows.size} rows")
        got[self._state["count"][rows] < self.config.min_count] = np.nan
        return got

    def evidence(self, prompt_ids: Sequence[object] | NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Discounted success and failure counts ``(s, f)`` of each prompt, each (M,); 0 and 0 for an unseen
        prompt (``s <- forgetting * s + successes`` at every update, the same for ``f``)."""
        return self._evidence(self.rows(prompt_ids))

    def _evidence(self, rows: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`evidence` at ``rows`` (of checked ids; -1: unseen)."""
        if not len(self):
            return np.zeros(rows.size), np.zeros(rows.size)
        seen, safe = rows >= 0, np.maximum(rows, 0)
        s = np.where(seen, self._state["beta_s"][safe], 0.0)
        f = np.where(seen, self._state["beta_f"][safe], 0.0)
        return s, f

    def posterior(self, prompt_ids: Sequence[object] | NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Beta posterior of each prompt's success rate: ``(a, b)``, each (M,).

        ``a = a0 + s``, ``b = b0 + f`` with the discounted success / failure counts ``s``, ``f`` of
        the beta estimator (:meth:`evidence`) and the prior ``beta_prior = (a0, b0)``; an unseen
        prompt gets the prior. No ``min_count`` cut: the posterior itself carries the uncertainty
        (its mean ``a / (a + b)`` is the beta estimate).
        """
        a0, b0 = self.config.beta_prior
        s, f = self.evidence(prompt_ids)
        return a0 + s, b0 + f

    # ----------------------------------------------------------------- updates
    def update(
        self,
        prompt_ids: Sequence[object] | NDArray[Any],
        rewards: ArrayLike,
        *,
        epoch: int | None = None,
        step: int | None = None,
        mapped: bool = False,
    ) -> None:
        """Record the rewards of one step: ``prompt_ids[j]`` is the prompt of rollout j.

        Everything is validated before anything changes; a refused call leaves the tracker as it was.

        Args:
            prompt_ids: (N,) prompt id per rollout (int or str ids; an int64 array is fastest).
            rewards: (N,) reward per rollout; mapped by :func:`to_success`.
            epoch: the epoch of this step (default: the tracker's current epoch).
            step: the global step (default: previous step + 1); stored as the prompt's last update.
            mapped: the rewards are successes in [0, 1] already (an engine mapped them with
                :func:`to_success`): recorded as they are, not mapped again with ``reward_format`` and
                ``success_threshold`` (which would, e.g., refuse a 0 under ``signed``).
        """
        self._update(check_prompt_ids("prompt_ids", prompt_ids), rewards, epoch=epoch, step=step, mapped=mapped)

    def _update(
        self,
        ids: _Ids,
        rewards: ArrayLike,
        *,
        epoch: int | None,
        step: int | None,
        mapped: bool,
        name: str = "prompt_ids",
    ) -> None:
        """:meth:`update` with ids :func:`check_prompt_ids` returned (named ``name`` in messages)."""
        cfg = self.config
        new_epoch = self.epoch if epoch is None else check_int("epoch", epoch, low=0, high=_INT64.max)
        new_step = self.step + 1 if step is None else check_int("step", step, low=0, high=_INT64.max)
        r = _as_rewards(rewards)
        s = to_success(r, "continuous") if mapped else to_success(r, cfg.reward_format, cfg.success_threshold)
        if len(ids) != s.size:
            raise ValueError(f"{name} and rewards must have the same length; got {len(ids)} and {s.size}")
        if self._max_count + s.size > MAX_COUNT:
            raise ValueError(
                f"this update of {s.size} rewards could take a prompt past {MAX_COUNT} rewards (it has "
                f"{self._max_count}); a tracker records at most that many per prompt"
            )
        groups = _group(self._index, ids) if s.size else None
        # ---- nothing above changed the tracker; everything below cannot fail on bad input
        self._epoch, self._step = new_epoch, new_step
        if groups is not None:
            self._record(groups, s)

    def _record(self, g: _Groups, s: NDArray[np.float64]) -> None:
        """Apply one step's grouped successes ``s`` (N,) to the state."""
        cfg = self.config
        self._index.add(g.new_ids)
        self._grow(len(self))
        st = self._state
        s_sorted = s if g.perm is None else s[g.perm]  # (N,) by prompt
        rows, cnt = g.rows, g.counts  # (P,)
        if g.width is None:
            sums = np.add.reduceat(s_sorted, g.starts)  # (P,) successes per prompt this step
        else:
            sums = np.einsum("ij->i", s_sorted.reshape(rows.size, g.width))  # the same, several times faster
        self._update_ring(s_sorted, g)
        new_epoch = st["epoch_id"][rows] != self.epoch
        if new_epoch.all():  # the usual step: each prompt's first of this epoch
            st["epoch_sum"][rows], st["epoch_count"][rows] = sums, cnt
        else:
            st["epoch_sum"][rows] = np.where(new_epoch, 0.0, st["epoch_sum"][rows]) + sums
            st["epoch_count"][rows] = np.where(new_epoch, 0, st["epoch_count"][rows]) + cnt
        st["epoch_id"][rows] = self.epoch
        count = st["count"][rows]
        step_mean = sums / cnt
        ema = (1 - cfg.ema_weight) * st["ema"][rows] + cfg.ema_weight * step_mean  # e <- (1 - w) e + w m
        if not count.all():
            ema = np.where(count == 0, step_mean, ema)
        st["ema"][rows] = np.minimum(np.maximum(ema, 0.0), 1.0)  # rounding may pass 1
        st["beta_s"][rows] = cfg.forgetting * st["beta_s"][rows] + sums  # s <- gamma s + successes
        st["beta_f"][rows] = cfg.forgetting * st["beta_f"][rows] + (cnt - sums)  # f <- gamma f + failures
        count += cnt  # a copy (fancy indexing)
        st["count"][rows] = count
        self._max_count = max(self._max_count, int(count.max()))
        st["last_step"][rows] = self.step

    def _update_ring(self, s_sorted: NDArray[np.float64], g: _Groups) -> None:
        """Append each prompt's rewards (``s_sorted``, (N,) grouped by prompt) to its ring of ``window``.

        Reward j of group g (rank ``j - starts[g]``) goes to slot ``(ring_pos[g] + rank) % window`` of row
        ``rows[g]``; when a group brings more than ``window`` rewards only its last ``window`` are written.
        """
        w = self.config.window
        ring, pos = self._state["ring"].reshape(-1), self._state["ring_pos"]  # flat view of (capacity, w)
        rows, starts, cnt = g.rows, g.starts, g.counts
        skip = np.maximum(cnt - w, 0)  # (P,) rewards of each group that the later ones overwrite
        first = pos[rows] if not skip.any() else (pos[rows] + skip) % w  # (P,) slot of each group's first survivor
        end = first + cnt - skip  # (P,) in [1, 2 w]
        pos[rows] = np.where(end >= w, end - w, end)
        if g.width is not None and first.min() == first.max():
            # every prompt writes the same slots (the usual step: n rollouts each, rings in step)
            f, c = int(first[0]), min(g.width, w)
            block = s_sorted.reshape(rows.size, g.width)[:, g.width - c :]  # (P, c) the survivors
            head = min(c, w - f)
            self._state["ring"][:, f : f + head][rows] = block[:, :head]
            if head < c:
                self._state["ring"][:, : c - head][rows] = block[:, head:]
            return
        if skip.any():  # keep the last w of each group: from starts + skip on
            kept = cnt - skip
            kept_starts = np.cumsum(kept) - kept  # (P,) where each group starts among the N' kept
            src = np.repeat(starts + skip - kept_starts, kept)
            src += np.arange(src.size)  # (N',) position of each kept reward in s_sorted
            s_sorted, starts, cnt = s_sorted[src], kept_starts, kept
        slot = np.repeat(first - starts, cnt)  # (N',) then + rank: in [0, 2 w), so no % over N'
        slot += np.arange(s_sorted.size)
        np.subtract(slot, w, out=slot, where=slot >= w)
        slot += np.repeat(rows * w, cnt)
        ring[slot] = s_sorted

    def _grow(self, size: int) -> None:
        cap = self._state["count"].size
        if size <= cap:
            return
        new = _empty_state(max(size, 2 * cap, 64), self.config.window)
        for k in _FIELDS:
            new[k][:cap] = self._state[k]
        self._state = new

    # ------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """A plain-data snapshot (ids, config, epoch, step and copies of the state arrays)."""
        n = len(self)
        return {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "ids": self.ids,
            "arrays": {k: self._state[k][:n].copy() for k in _FIELDS},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Tracker:
        """Rebuild a tracker from :meth:`state_dict` output; anything malformed raises ``ValueError``."""
        if not isinstance(state, Mapping):
            raise ValueError(f"tracker state must be a mapping; got {state!r:.80}")
        missing = sorted({"config", "epoch", "step", "ids", "arrays"} - set(state))
        if missing:
            raise ValueError(f"tracker state lacks {missing}")
        tracker = cls(TrackerConfig.from_dict(state["config"]))
        tracker.epoch, tracker.step = state["epoch"], state["step"]
        ids = check_prompt_ids("ids", state["ids"])
        n = len(ids)
        distinct = len(dict.fromkeys(ids)) if isinstance(ids, list) else n - int(np.sum(np.diff(np.sort(ids)) == 0))
        if distinct != n:
            raise ValueError(f"tracker state has duplicate prompt ids ({n - distinct} repeats)")
        arrays = _check_arrays(state["arrays"], n, tracker.config.window)
        tracker._index.add(ids)
        tracker._grow(n)
        for k in _FIELDS:
            tracker._state[k][:n] = arrays[k]
        tracker._max_count = int(arrays["count"].max()) if n else 0
        return tracker

    def to_bytes(self) -> bytes:
        """The tracker as a state file (format in the module docstring)."""
        n = len(self)
        meta = {"config": asdict(self.config), "epoch": self.epoch, "step": self.step, "ids": self.ids}
        layout = _layout(n, self.config.window)
        parts = {name: self._state[name][:n].astype(dtype, copy=False).tobytes() for name, dtype, _ in layout}
        return encode_state_file(FILE_KIND, FILE_VERSION, meta, parts)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<bytes>") -> Tracker:
        """Rebuild a tracker from :meth:`to_bytes`; anything else raises ``ValueError`` naming ``source``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"{source}: tracker data must be bytes; got {type(data).__name__}")
        data = bytes(data)
        if data.startswith(_OLD_MAGIC):
            version = data[len(_OLD_MAGIC) : len(_OLD_MAGIC) + 3].strip().decode("ascii", "replace")
            raise ValueError(
                f"{source}: a tracker file of an earlier knapsack-rl (its own format {version!r}, before tracker "
                "files used the state-file envelope), which this version does not read; load it with the version "
                "that wrote it, or start a new tracker"
            )
        file = decode_state_file(
            data, source=source, kind=FILE_KIND, version=FILE_VERSION, parts=_FIELDS, what="tracker file"
        )
        try:
            return cls.from_state_dict(_state_of_file(file.meta, file.parts))
        except ValueError as exc:
            raise ValueError(f"{source}: malformed tracker file: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_bytes` to ``path`` atomically (:func:`knapsack_rl.io.atomic_write_bytes`)."""
        atomic_write_bytes(path, self.to_bytes())
        logger.debug("saved tracker with %d prompts to %s", len(self), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tracker:
        """Read a file written by :meth:`save`; a truncated, altered or foreign file raises ``ValueError``."""
        return cls.from_bytes(read_file_bytes(path, what="tracker file"), source=str(path))


def _stable_sort(keys: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """``(perm, keys[perm])`` with ``perm`` the permutation that sorts ``keys`` (N,) keeping equal keys in
    position order (a stable sort).

    One sort of the composite keys ``(key - min) << b | position`` (b bits hold a position) when they fit
    in 64 bits: NumPy sorts values several times faster than it argsorts them, and the composite keys are
    distinct, so their order is the stable one. Else NumPy's stable argsort.
    """
    n = keys.size
    lo, hi = int(keys.min()), int(keys.max())
    bits = max(n - 1, 1).bit_length()
    if (hi - lo) < 1 << (63 - bits):
        composite = ((keys - lo) << bits) | np.arange(n)
        composite.sort()
        return composite & ((1 << bits) - 1), (composite >> bits) + lo
    perm = np.argsort(keys, kind="stable")
    return perm, keys[perm]


# ----------------------------------------------------------------------------------- file helpers
def _layout(n: int, window: int) -> list[tuple[str, np.dtype[Any], tuple[int, ...]]]:
    """Name, little-endian dtype and shape of each state array in a file of ``n`` prompts."""
    out: list[tuple[str, np.dtype[Any], tuple[int, ...]]] = []
    for name in _FIELDS:
        dtype = np.dtype("<i8") if name in _INT_FIELDS else np.dtype("<f8")
        out.append((name, dtype, (n, window) if name == "ring" else (n,)))
    return out


def _state_of_file(meta: dict[str, Any], parts: dict[str, bytes]) -> dict[str, Any]:
    """The :meth:`Tracker.state_dict` a tracker file's meta and parts hold (each part's size checked)."""
    if sorted(meta) != list(_META_KEYS):
        raise ValueError(f"its meta must hold exactly {list(_META_KEYS)}; got {sorted(meta)}")
    config = TrackerConfig.from_dict(meta["config"])
    ids = meta["ids"]
    if not isinstance(ids, list):
        raise ValueError(f"'ids' must be a list; got {ids!r:.80}")
    arrays = {}
    for name, dtype, shape in _layout(len(ids), config.window):
        size = dtype.itemsize * int(np.prod(shape))
        if len(parts[name]) != size:
            raise ValueError(
                f"part {name!r} has {len(parts[name])} bytes; {len(ids)} prompts and window {config.window} need {size}"
            )
        arrays[name] = np.frombuffer(parts[name], dtype=dtype).reshape(shape)
    return {**meta, "arrays": arrays}


def _check_arrays(arrays: object, n: int, window: int) -> dict[str, NDArray[Any]]:
    """The state arrays of ``n`` prompts, checked for shape, type and the invariants an update keeps."""
    if not isinstance(arrays, Mapping):
        raise ValueError(f"tracker state 'arrays' must be a mapping; got {arrays!r:.80}")
    out: dict[str, NDArray[Any]] = {}
    for name, dtype, shape in _layout(n, window):
        if name not in arrays:
            raise ValueError(f"tracker state lacks array {name!r}")
        arr = np.asarray(arrays[name])
        kinds = "iu" if name in _INT_FIELDS else "f"
        if arr.dtype.kind not in kinds or arr.shape != shape:
            raise ValueError(
                f"tracker state array {name!r} must be {dtype.name} of shape {shape}; got {arr.dtype} {arr.shape}"
            )
        out[name] = arr
    limits = {
        "ring": (0.0, 1.0), "ring_pos": (0, window - 1), "count": (1, MAX_COUNT), "epoch_id": (0, None),
        "epoch_sum": (0.0, None), "epoch_count": (1, None), "ema": (0.0, 1.0), "beta_s": (0.0, None),
        "beta_f": (0.0, None), "last_step": (0, None),
    }  # fmt: skip
    for name, (low, high) in limits.items():
        arr = out[name]
        ok = (arr >= low) & (arr <= (np.inf if high is None else high)) & np.isfinite(arr)
        if not ok.all():
            i = np.unravel_index(int(np.flatnonzero(~ok.reshape(-1))[0]), arr.shape)
            where = tuple(map(int, i))
            raise ValueError(f"tracker state array {name!r} has {arr[i].item()!r} at {where}, outside [{low}, {high}]")
    _check_consistent(out, window)
    return out


def _check_consistent(arrays: dict[str, NDArray[Any]], window: int) -> None:
    """The relations every update keeps between a row's arrays (each row has had >= 1 reward):

    the epoch's counts within the total, the ring's next slot at ``count % window``, a ring that is not
    full yet holding nothing past its ``count`` rewards, and discounted counts within the total.
    """
    count = arrays["count"]
    filled = np.arange(window) < count[:, None]  # (K, window): slots written so far
    discounted = arrays["beta_s"] + arrays["beta_f"]
    rules = (
        ("epoch_count <= count", arrays["epoch_count"] <= count),
        ("epoch_sum <= epoch_count", arrays["epoch_sum"] <= arrays["epoch_count"]),
        ("ring_pos == count % window", arrays["ring_pos"] == count % window),
        ("ring is 0 past the rewards recorded", np.all(filled | (arrays["ring"] == 0.0), axis=1)),
        ("beta_s + beta_f <= count", discounted <= count * (1.0 + 1e-9)),
    )
    for what, ok in rules:
        bad = np.flatnonzero(~ok)
        if bad.size:
            raise ValueError(f"tracker state is inconsistent at row {int(bad[0])}: it breaks {what}")


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


# ------------------------------------------------------------------------------- built-in estimators
@register_estimator("recipe")
def _recipe_estimate(tracker: TrackerView, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Mean of this epoch's rewards if it has >= window of them, else of the window most recent."""
    w = tracker.config.window
    this_epoch = tracker.array("epoch_id")[rows] == tracker.epoch
    n_epoch = np.where(this_epoch, tracker.array("epoch_count")[rows], 0)
    short = n_epoch < w  # fewer than w rewards this epoch: the mean of the ring instead
    if short.all():  # the usual plan: a prompt comes once an epoch
        return _ring_mean(tracker, rows)
    out: NDArray[np.float64] = tracker.array("epoch_sum")[rows] / np.maximum(n_epoch, 1)
    if short.any():
        out[short] = _ring_mean(tracker, rows[short])
    return out


def _ring_mean(tracker: TrackerView, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Mean of the rewards in each row's ring (those of the last ``window``)."""
    w = tracker.config.window
    total: NDArray[np.float64] = np.einsum("ij->i", tracker.array("ring").take(rows, axis=0))  # a fast row sum
    count = tracker.array("count")[rows]
    if count.min() >= w:  # full rings (the usual case): one divisor
        total /= w
        return total
    mean: NDArray[np.float64] = total / np.maximum(np.minimum(count, w), 1)
    return mean


@register_estimator("ema")
def _ema_estimate(tracker: TrackerView, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Exponential moving average of per-step mean rewards."""
    out: NDArray[np.float64] = tracker.array("ema")[rows]
    return out


@register_estimator("beta")
def _beta_estimate(tracker: TrackerView, rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Posterior mean of Beta(a0 + s, b0 + f) with discounted counts."""
    a0, b0 = tracker.config.beta_prior
    s, f = tracker.array("beta_s")[rows], tracker.array("beta_f")[rows]
    mean: NDArray[np.float64] = (a0 + s) / (a0 + b0 + s + f)
    return mean
