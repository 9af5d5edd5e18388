"""The framework-free half of the verl adapter: verl batches to and from the run's rule.

One :class:`VerlRun` per training run lives in verl's driver process (the ``TaskRunner``). It reaches the
method through one door: the run's rule (:meth:`KnapsackVerlConfig.make_rule`, a registered rule that
verl can run) driven by :class:`knapsack_rl.rules.OneRound` with the ``verl`` engine. Per step:

1. :meth:`VerlRun.plan` takes the step's prompt ids (``extra_info.index``, unique), their verl ``uid`` s
   and (optionally) the prompts; the epoch is counted by :class:`~knapsack_rl.core.planner.EpochCounter` (a
   new pass starts at the first id seen again; in verl's sync trainer this is verl's own
   ``training/epoch``); the batch becomes a :class:`~knapsack_rl.rules.StepSpec` and ``OneRound.plan``
   returns the counts ``N_i`` (``sum_i N_i = M * n`` for every built-in rule verl runs, so verl's
   ``ppo_mini_batch_size * n`` arithmetic is unchanged).
2. verl generates ``N_i`` rollouts of prompt i, all carrying its ``uid``; verl's GRPO groups advantages
   by ``uid``, so groups of any size are handled by verl itself.
3. :meth:`VerlRun.observe` maps each rollout's ``uid`` back to its batch and position, maps verl's rewards
   to successes in [0, 1] (:func:`knapsack_rl.core.tracker.to_success` with the run's ``reward_format`` and
   ``success_threshold``) and hands them to ``OneRound.observe`` with the spec the batch was planned with,
   which ends the rule's step and returns its metrics.

The helpers below read and write verl's two batch containers: the V1 trainer's ``TensorDict`` (counts
go into the per-prompt ``__rollout_n__`` field the agent loop reads) and the legacy ``DataProto``
(rows are repeated with ``DataProto.sample_level_repeat``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.config import config_diff
from knapsack_rl.core.groups import step_metrics
from knapsack_rl.core.planner import EpochCounter, Planner
from knapsack_rl.core.tracker import to_success
from knapsack_rl.core.validate import check_prompt_ids, check_unique_ids
from knapsack_rl.integrations.verl.config import ENGINE, KnapsackVerlConfig
from knapsack_rl.io import read_state_file, write_state_file
from knapsack_rl.rules import KnapsackRule, OneRound, Rule, StepSpec
from knapsack_rl.rules.state import PART_PREFIX, pack_rule_state, unpack_rule_state

logger = logging.getLogger(__name__)

PromptId = int | str
ROLLOUT_N_KEY = "__rollout_n__"
"""Per-prompt field that verl's V1 agent loop pops to decide how many sessions to run for the prompt."""
V1_COUNTS_HINT = (
    "is actor_rollout_ref.rollout.agent.agent_loop_manager_class "
    f"knapsack_rl.integrations.verl.hooks.KnapsackAgentLoopManager, and does the agent loop read {ROLLOUT_N_KEY}?"
)
"""What :meth:`VerlRun.observe` asks to check when counts were not run (the V1 back-end's hooks)."""
STATE_DIR = "knapsack"
"""Sub-folder of a verl ``global_step_{k}`` checkpoint folder that holds the run's state."""
STATE_FILE = "state.bin"
"""The run's state in :data:`STATE_DIR`: one state-file envelope (:func:`knapsack_rl.io.encode_state_file`)."""
STATE_KIND = "verl-run"
STATE_VERSION = 3
"""Version 3 holds the rule's state (:func:`knapsack_rl.rules.state.pack_rule_state`); version 2 held the
Planner's only, version 1 was the pair ``run.json`` + ``tracker.bin`` of knapsack-rl 0.1.0 (both refused)."""
LEGACY_FILES = ("run.json", "tracker.bin")
_META_KEYS = ("batches", "epoch_counter", "fingerprints", "observed", "rewards", "rule")
_BATCH_KEYS = ("counts", "epoch", "n", "prompt_epochs", "prompt_ids", "step", "total_budget", "uids")


@dataclass
class _Batch:
    """One planned generation batch: its spec, the counts, and the uid at each position (None once observed)."""

    spec: StepSpec
    counts: list[int]
    uids: list[str | None]


class VerlRun:
    """What the three verl hooks of one run share: the rule (through :class:`OneRound`), the epoch count and
    the uid map.

    Example (what the hooks do each step)::

        run = VerlRun(KnapsackVerlConfig.from_section({"negative_n": 2, "positive_n": 2}, n=8, train_batch_size=256))
        counts = run.plan(prompt_ids, uids, prompts, step=global_step)    # (M,) int64, sums to M * n
        ...  # verl generates counts[i] rollouts of prompt i with uid uids[i], scores them
        metrics = run.observe(rollout_uids, rollout_rewards, step=global_step)

    Args:
        settings: the run's settings; the rule is ``settings.make_rule()`` (refused if verl cannot run it).
    """

    def __init__(self, settings: KnapsackVerlConfig) -> None:
        if not isinstance(settings, KnapsackVerlConfig):
            raise ValueError(f"settings must be a KnapsackVerlConfig; got {type(settings).__name__}")
        self.settings = settings
        self._driver = OneRound(settings.make_rule(), ENGINE)
        self.epochs = EpochCounter()
        self._fingerprints: dict[PromptId, str] = {}
        self._batches: dict[int, _Batch] = {}  # planned batches with rollouts not observed yet, by plan number
        self._pending: dict[str, tuple[int, int]] = {}  # uid -> (plan number, position), not yet observed
        self._plans = 0
        self._observed = (0, 0)  # (epoch, step) of the latest observation: later ones never go below
        self._plan_s = 0.0

    @property
    def rule(self) -> Rule:
        """The run's rule (its name is ``settings.rule``)."""
        return self._driver.rule

    @property
    def planner(self) -> Planner | None:
        """The :class:`Planner` of a knapsack rule (``knapsack``, ``uniform``, ``knapsack:<preset>``); None for
        a rule that does not plan through one. Read-only: the rule is reached through :class:`OneRound`."""
        rule = self._driver.rule
        return rule.planner if isinstance(rule, KnapsackRule) else None

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
        self,
        prompt_ids: Sequence[Any],
        uids: Sequence[str],
        prompts: Sequence[Any] | None = None,
        *,
        step: int | None = None,
    ) -> NDArray[np.int64]:
        """Counts for the M prompts of one generation batch (``OneRound.plan`` at the counted epoch).

        Args:
            prompt_ids: (M,) stable data-set ids (``extra_info.index``); unique ints or strs.
            uids: (M,) verl's per-prompt ``uid`` (the GRPO group key); unique. A uid still pending is
                planned again without starting an epoch (verl re-issues in-flight prompts after an
                async resume); its earlier plan is dropped.
            prompts: (M,) the prompts (any JSON-able value); with ``check_prompt_identity`` an id that
                comes back with a different prompt raises instead of sharing the other prompt's state.
            step: verl's global step the batch is generated for (1-based, as verl counts; default: one
                after the previous plan's).

        Returns:
            (M,) int64 rollouts per prompt (``sum == M * n`` for every built-in rule verl runs). A rejected
            call changes nothing.
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
        step0 = self._plans if step is None else _check_step(step) - 1
        new_fps = self._new_fingerprints(ids, prompts)
        saved = self.epochs.state_dict()
        try:
            spec = self._spec(ids, uid_list, step0)
            counts = self._driver.plan(spec)
        except BaseException:
            self.epochs.load_state_dict(saved)
            raise
        for uid in uid_list:  # a re-issued uid leaves its earlier batch
            if uid in self._pending:
                self._forget(uid)
        self._fingerprints.update(new_fps)
        self._batches[self._plans] = _Batch(spec, counts.tolist(), list(uid_list))
        self._pending.update((u, (self._plans, i)) for i, u in enumerate(uid_list))
        self._plans += 1
        self._plan_s = time.perf_counter() - start
        return counts

    def _spec(self, ids: list[PromptId], uids: list[str], step0: int) -> StepSpec:
        """The batch as a StepSpec: fresh prompts in the counted epoch, re-issued ones in their own."""
        fresh = [pid for u, pid in zip(uids, ids, strict=True) if u not in self._pending]
        reissued = [self._planned_epoch(u) for u in uids if u in self._pending]
        epoch = self.epochs.advance(fresh) if fresh else max(reissued)  # a re-issue stays in its epoch
        epochs = [self._planned_epoch(u) if u in self._pending else epoch for u in uids]
        n = self.settings.n
        return StepSpec(_id_array(ids), epoch=epoch, step=step0, n=n, total_budget=n * len(ids),
                        prompt_epochs=np.asarray(epochs, dtype=np.int64))  # fmt: skip

    def _planned_epoch(self, uid: str) -> int:
        batch, pos = self._pending[uid]
        epochs = self._batches[batch].spec.prompt_epochs
        assert epochs is not None
        return int(epochs[pos])

    def _forget(self, uid: str) -> None:
        """Drop a pending uid from its batch (and the batch once nothing of it is pending)."""
        batch, pos = self._pending.pop(uid)
        self._batches[batch].uids[pos] = None
        if not any(u is not None for u in self._batches[batch].uids):
            del self._batches[batch]

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
    def observe(
        self, rollout_uids: Sequence[str], rewards: ArrayLike, *, step: int | None = None, hint: str = V1_COUNTS_HINT
    ) -> dict[str, float]:
        """Hand the rewards of planned prompts to the rule and return the step's metrics.

        Args:
            rollout_uids: (R,) verl ``uid`` of every rollout (the prompt's uid, repeated per rollout).
            rewards: (R,) scalar reward per rollout (sum of verl's token-level scores), mapped to successes
                with the run's ``reward_format`` and ``success_threshold``.
            step: verl's global step (1-based; the rule's step ``step - 1``; default: the batch's planned step).
            hint: what to check when a prompt came back with other than its planned rollouts (the back-end's).

        Returns:
            ``OneRound.observe``'s metrics (:func:`knapsack_rl.rules.step_log_metrics`: ``train/*`` grouped by
            prompt, ``alloc/*``, ``tracker/prompts``) plus ``train/epoch`` and ``timing_s/plan``. Each planned
            batch is observed with the spec it was planned with, its epoch and step raised to the latest
            observation's: in verl's async modes a batch of older prompts can finish after a newer one, and
            a rule's tracker refuses an epoch or step that goes backwards. A sample that holds rollouts of
            several planned batches observes each in plan order; its ``train/*`` coverage metrics are then
            those of all its rollouts.
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
        tracker = self.settings.knapsack.tracker
        successes = to_success(r, tracker.reward_format, tracker.success_threshold)
        obs_step = None if step is None else _check_step(step) - 1
        where = [self._pending[u] for u in uid_list]
        self._check_counts(uid_list, where, hint)
        metrics: dict[str, float] = {}
        for b in sorted({batch for batch, _ in where}):
            rows = [j for j, (batch, _) in enumerate(where) if batch == b]
            spec = self._observed_spec(self._batches[b].spec, obs_step)
            metrics = self._driver.observe(spec, [where[j][1] for j in rows], successes[rows])
            self._observed = (spec.epoch, spec.step)
        if len({batch for batch, _ in where}) > 1:
            metrics.update(step_metrics(successes, uid_list))
            metrics["train/rollouts_generated"] = float(r.size)
        metrics["train/epoch"] = float(self._observed[0])
        metrics["timing_s/plan"] = self._plan_s
        for u in set(uid_list):
            self._forget(u)
        return metrics

    def _check_counts(self, uids: list[str], where: list[tuple[int, int]], hint: str) -> None:
        """Every observed prompt came back with the rollouts it was planned: else verl did not run the counts."""
        got: dict[str, int] = {}
        for u in uids:
            got[u] = got.get(u, 0) + 1
        for u, (b, i) in zip(uids, where, strict=True):
            planned = self._batches[b].counts[i]
            if got[u] != planned:
                pid = self._batches[b].spec.prompt_ids.tolist()[i]
                raise ValueError(
                    f"prompt {pid!r} (uid {u!r}) was planned {planned} rollouts but {got[u]} came back: verl did not "
                    f"run the knapsack counts ({hint})"
                )

    def _observed_spec(self, spec: StepSpec, step: int | None) -> StepSpec:
        """``spec`` with its epoch and step never below the latest observation's (and the step verl's, if given)."""
        epoch, last = self._observed
        return dataclasses.replace(
            spec, epoch=max(spec.epoch, epoch), step=max(spec.step if step is None else step, last)
        )

    def owns(self, uid: str) -> bool:
        """Whether ``uid`` was planned by this run and not observed yet."""
        return uid in self._pending

    # --------------------------------------------------------------- persistence
    def save(self, checkpoint_dir: str | os.PathLike[str]) -> Path:
        """Write ``{checkpoint_dir}/knapsack/state.bin`` atomically; returns the folder.

        One state-file envelope (kind ``"verl-run"``, one SHA-256; never a pickle): the rule's state as every
        engine stores it (:func:`~knapsack_rl.rules.state.pack_rule_state`: JSON in the meta, its bytes, e.g.
        a tracker, as parts ``rule/k``), and the adapter's own fields: the epoch count, the prompt
        fingerprints, the planned batches with rollouts still in flight, the latest observation's epoch and
        step, and the reward mapping (``reward_format``, ``success_threshold``).
        """
        rule_meta, parts = pack_rule_state(self.settings.rule, self._driver.state_dict())
        meta = {
            "rule": rule_meta,
            "epoch_counter": self.epochs.state_dict(),
            "fingerprints": [[pid, fp] for pid, fp in self._fingerprints.items()],
            "batches": [_batch_state(b) for _, b in sorted(self._batches.items())],
            "observed": {"epoch": self._observed[0], "step": self._observed[1]},
            "rewards": _reward_mapping(self.settings),
        }
        folder = Path(checkpoint_dir) / STATE_DIR
        write_state_file(folder / STATE_FILE, STATE_KIND, STATE_VERSION, meta, parts)
        logger.info("saved knapsack state (rule %s, epoch %d) to %s", self.settings.rule, self.epoch, folder)
        return folder

    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike[str], settings: KnapsackVerlConfig) -> VerlRun:
        """Restore a run saved by :meth:`save` into ``checkpoint_dir``; the settings come from ``settings``.

        Every field is checked before anything is adopted (the adapter's fields: types, ranges, ids, each
        batch a valid spec; then the rule's state, which the rule checks in full), so a malformed file
        raises one line and builds nothing.

        Raises:
            FileNotFoundError: no knapsack state in ``checkpoint_dir``.
            ValueError: a corrupt, foreign, malformed or old-format state, another rule's state (naming
                both), rewards mapped under other settings, or a state the rule refuses (e.g. a tracker saved
                under other tracker settings, every setting that differs named).
        """
        folder = Path(checkpoint_dir) / STATE_DIR
        path = folder / STATE_FILE
        if not path.exists():
            if any((folder / name).exists() for name in LEGACY_FILES):
                raise ValueError(
                    f"{folder}: knapsack state in the layout of knapsack-rl 0.1.0 ({' + '.join(LEGACY_FILES)}), which "
                    f"this version does not read; resume with the version that wrote it, or remove {folder} and set "
                    "knapsack.resume_without_state=true to restart the rule's state"
                )
            raise FileNotFoundError(f"no knapsack state in {checkpoint_dir} (expected {path})")
        file = read_state_file(
            path, what="knapsack verl run state", kind=STATE_KIND, version=STATE_VERSION, parts=[],
            more_parts=PART_PREFIX,
        )  # fmt: skip
        out = cls(settings)
        out._restore(file.meta, file.parts, str(path))
        logger.info("restored knapsack state (rule %s, epoch %d) from %s", settings.rule, out.epoch, folder)
        return out

    def _restore(self, meta: dict[str, Any], parts: Mapping[str, bytes], source: str) -> None:
        """Check every field of a saved run's ``meta``, then adopt it (the run is new: nothing to keep)."""
        if sorted(meta) != list(_META_KEYS):
            raise ValueError(f"{source}: a verl run state holds exactly {list(_META_KEYS)}; got {sorted(meta)}")
        name, rule_state = unpack_rule_state(meta["rule"], parts, source=source)
        if name != self.settings.rule:
            raise ValueError(
                f"{source}: holds the state of rule {name!r}, not of this run's rule {self.settings.rule!r} "
                f"(knapsack.rule); resume with knapsack.rule={name} or start the run from scratch"
            )
        diff = config_diff(_as_dict(meta["rewards"], "rewards", source), _reward_mapping(self.settings))
        if diff:
            raise ValueError(f"{source}: the rewards were mapped to successes with other settings ({', '.join(diff)})")
        epochs = EpochCounter()
        epochs.load_state_dict(meta["epoch_counter"], source=source)
        fingerprints = _pairs(meta["fingerprints"], "fingerprints", 2, source)
        fps = {_json_id(pid, f"fingerprints[{i}]", source): _fp(fp, i, source)
               for i, (pid, fp) in enumerate(fingerprints)}  # fmt: skip
        if len(fps) != len(fingerprints):
            raise ValueError(f"{source}: 'fingerprints' lists an id twice")
        batches = _batches_from_state(meta["batches"], epochs.epoch, source)
        observed = _observed_from_state(meta["observed"], epochs.epoch, source)
        self._driver.load_state_dict(rule_state, source=source)  # the rule checks all of it, then adopts it
        self.epochs, self._fingerprints, self._observed = epochs, fps, observed
        self._batches = dict(enumerate(batches))
        self._pending = {u: (b, i) for b, batch in self._batches.items() for i, u in enumerate(batch.uids) if u}
        self._plans = len(batches)


def _check_step(step: object) -> int:
    """verl's 1-based global step."""
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"step must be verl's global step, an integer >= 1; got {step!r}")
    return int(step)


def _id_array(ids: list[PromptId]) -> NDArray[Any]:
    """Prompt ids as a 1-D array for a StepSpec: int64 if every id is an int, else objects."""
    if all(isinstance(pid, int) for pid in ids):
        return np.asarray(ids, dtype=np.int64)
    out = np.empty(len(ids), dtype=object)
    out[:] = ids
    return out


def _reward_mapping(settings: KnapsackVerlConfig) -> dict[str, Any]:
    """How the adapter maps verl's rewards to successes (the run's settings)."""
    tracker = settings.knapsack.tracker
    return {"reward_format": tracker.reward_format, "success_threshold": tracker.success_threshold}


def _batch_state(batch: _Batch) -> dict[str, Any]:
    """A planned batch as plain data (its spec, and the uids still pending; null for observed positions)."""
    spec = batch.spec
    assert spec.prompt_epochs is not None
    return {
        "prompt_ids": spec.prompt_ids.tolist(),
        "prompt_epochs": spec.prompt_epochs.tolist(),
        "epoch": spec.epoch,
        "step": spec.step,
        "n": spec.n,
        "total_budget": spec.total_budget,
        "counts": list(batch.counts),
        "uids": list(batch.uids),
    }


def _batches_from_state(value: object, latest: int, source: str) -> list[_Batch]:
    """The planned batches of a saved run; each a valid spec with its pending uids (unique across batches)."""
    if not isinstance(value, list):
        raise ValueError(f"{source}: 'batches' must be a list; got {type(value).__name__}")
    out: list[_Batch] = []
    for b, entry in enumerate(value):
        out.append(_batch_from_state(_as_dict(entry, f"batches[{b}]", source), f"batches[{b}]", latest, source))
    uids = [u for batch in out for u in batch.uids if u is not None]
    if len(set(uids)) != len(uids):
        raise ValueError(f"{source}: 'batches' lists a pending uid twice")
    return out


def _batch_from_state(item: dict[str, Any], where: str, latest: int, source: str) -> _Batch:
    """One planned batch of a saved run (:func:`_batch_state`)."""
    if sorted(item) != list(_BATCH_KEYS):
        raise ValueError(f"{source}: {where} holds exactly {list(_BATCH_KEYS)}; got {sorted(item)}")
    ids, epochs, counts, uids = item["prompt_ids"], item["prompt_epochs"], item["counts"], item["uids"]
    if not all(isinstance(v, list) for v in (ids, epochs, counts, uids)):
        raise ValueError(f"{source}: {where}: prompt_ids, prompt_epochs, counts and uids must be lists")
    if not len(ids) == len(epochs) == len(counts) == len(uids):
        raise ValueError(f"{source}: {where}: prompt_ids, prompt_epochs, counts and uids need one entry per prompt")
    for i, c in enumerate(counts):
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"{source}: {where}.counts[{i}]: {c!r:.80} is not a count (an integer >= 0)")
    pids = [_json_id(pid, f"{where}.prompt_ids[{i}]", source) for i, pid in enumerate(ids)]
    for i, e in enumerate([item["epoch"], *epochs]):
        _epoch(e, latest, f"{where}.epoch" if i == 0 else f"{where}.prompt_epochs[{i - 1}]", source)
    for i, uid in enumerate(uids):
        if uid is not None and not isinstance(uid, str):
            raise ValueError(f"{source}: {where}.uids[{i}]: uid {uid!r:.80} is not a str or null")
    try:
        check_unique_ids("prompt_ids", pids)
        spec = StepSpec(
            _id_array(pids), epoch=item["epoch"], step=item["step"], n=item["n"], total_budget=item["total_budget"],
            prompt_epochs=np.asarray(epochs, dtype=np.int64),
        )  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: {where} is not a planned step: {exc}") from None
    return _Batch(spec, list(counts), list(uids))


def _observed_from_state(value: object, latest: int, source: str) -> tuple[int, int]:
    """The latest observation's (epoch, step) of a saved run."""
    item = _as_dict(value, "observed", source)
    if sorted(item) != ["epoch", "step"]:
        raise ValueError(f"{source}: 'observed' holds exactly ['epoch', 'step']; got {sorted(item)}")
    step = item["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{source}: observed.step {step!r:.80} is not an integer >= 0")
    return _epoch(item["epoch"], latest, "observed.epoch", source), step


def _as_dict(value: object, where: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{source}: {where!r} must be an object; got {type(value).__name__}")
    return value


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

    Reads ``extra_info``, ``uid`` and (if present) ``raw_prompt`` and verl's ``global_steps``; writes an int64
    tensor (M,) under :data:`ROLLOUT_N_KEY`, which verl's agent loop pops per prompt as its number of sessions.
    """
    import torch

    ids = read_prompt_ids(batch_column(batch, "extra_info"), run.settings.adapter.id_key)
    prompts = batch_column(batch, "raw_prompt") if "raw_prompt" in batch else None
    step = batch.get("global_steps", None) if "global_steps" in batch else None
    step = getattr(step, "data", step)
    budgets = run.plan(ids, batch_column(batch, "uid"), prompts, step=None if step is None else int(step))
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
    """``value`` as a list of lists of ``width`` entries (a saved run's ``fingerprints``)."""
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


def _epoch(value: Any, latest: int, where: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= latest:
        raise ValueError(f"{source}: {where}: epoch {value!r:.80} is not an integer in [0, {latest}]")
    return value


def _fingerprint(prompt: Any) -> str:
    """Short content hash of a prompt (chat messages, text or token ids)."""
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    text = json.dumps(prompt, sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
