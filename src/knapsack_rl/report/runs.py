"""Finished runs of any engine as per-step rows of the canonical names (:mod:`knapsack_rl.report.names`).

:func:`load_run` reads one run and returns a :class:`Run`: its rows (one per step, sorted, every engine's
evaluation names mapped to the canonical ones, the engine's own keys kept beside them), its wall time as
the engine records it, and its allocation log where one exists. What it reads, by kind
(:func:`detect_engine` tells them apart; a path of none of these kinds is refused in one line):

- ``knapsack-rl``: a run folder of the reference trainer (``metrics.jsonl``; ``allocations.jsonl`` and
  ``summary.json`` when present; ``config.json`` says its rule and seed);
- ``trl``: TRL's ``trainer_state.json`` (its ``log_history``), in the folder given or, when that is an
  ``output_dir`` without one, in its last ``checkpoint-<step>`` folder. TRL averages a metric over each
  logging interval, so a row's rollouts are its mean ``train/rollouts_generated`` times the steps since
  the previous row: one generation batch per optimizer step (TRL's default, ``steps_per_generation =
  gradient_accumulation_steps``); ``logging_steps: 1`` keeps every step;
- ``verl``: verl's file logger JSONL (``trainer.logger=['console','file']``: rows ``{"step": s, "data":
  {...}}`` in ``$VERL_FILE_LOGGER_PATH`` or ``<VERL_FILE_LOGGER_ROOT>/<project>/<experiment>.jsonl``), or a
  folder of its TensorBoard event files (``trainer.logger=['tensorboard']``; the scalars by tag);
- ``jsonl``: an own loop's JSONL of canonical rows (docs/cluster.md).

Every derived quantity says where it came from; nothing missing is filled with a zero: a run without
``train/rollouts_generated`` (or ``train/rollouts_total``) is refused, one without tokens or times simply
lacks those keys, and the report says so.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knapsack_rl.io import parse_json_object, read_file_bytes
from knapsack_rl.report.names import ENGINES, STEP_KEYS, canonical_eval, split_canonical

MAX_LOG_BYTES = 1 << 31
"""Largest log file read (2 GiB)."""
_TB_PREFIX = "events.out.tfevents."
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_PER_STEP = (
    ("train/rollouts_generated", "train/rollouts_total"),
    ("train/tokens_generated", "train/tokens_total"),
    ("train/step_s", "train/wall_s"),
)
"""Per-step quantities and their running sums: given either, the other is derived."""


@dataclass(frozen=True)
class Run:
    """One run as the report reads it."""

    path: Path
    engine: str
    rows: list[dict[str, Any]]
    """One row per step, sorted by step, with the canonical names (the engine's own names kept beside them)."""
    wall_s: float | None = None
    """The run's wall time as the engine records it, else the sum of its step times (``train/wall_s``) when
    every step logged one (TRL's checkpoints: their log ends before ``train_runtime``); None: neither."""
    allocations: list[dict[str, Any]] = field(default_factory=list)
    """The per-prompt counts of each step where the engine logs them (the reference trainer's allocations.jsonl)."""
    notes: tuple[str, ...] = ()
    """What the reader has to say about this run, one line each."""
    config: dict[str, Any] = field(default_factory=dict)
    """The run's saved settings where the engine writes them as JSON (the reference trainer's config.json)."""

    @property
    def train_rows(self) -> list[dict[str, Any]]:
        """The rows of steps that trained (those with ``train/rollouts_total``)."""
        return [r for r in self.rows if r.get("train/rollouts_total") is not None]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (empty list when missing); a torn last line (a killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    text = read_file_bytes(path, what="log file", max_bytes=MAX_LOG_BYTES).decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                continue
            raise ValueError(f"{path}:{i + 1}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i + 1}: a log row must be a JSON object; got {type(row).__name__}")
        rows.append(row)
    return rows


def detect_engine(path: Path) -> str:
    """Which kind of run ``path`` is (see the module docstring).

    Raises:
        ValueError: one line naming the path and what the report reads, when it is none of them.
    """
    if path.is_dir():
        if (path / "metrics.jsonl").is_file():
            return "knapsack-rl"
        if (path / "trainer_state.json").is_file() or _checkpoints(path):
            return "trl"
        if any(p.name.startswith(_TB_PREFIX) for p in path.iterdir()):
            return "verl"
    elif path.is_file() and path.name == "trainer_state.json":
        return "trl"
    elif path.is_file() and path.suffix == ".jsonl":
        first = next(iter(_first_rows(path, 1)), None)
        if first is not None and sorted(first) == ["data", "step"] and isinstance(first["data"], dict):
            return "verl"
        if first is not None and "step" in first:
            return "jsonl"
    elif not path.exists():
        raise ValueError(f"run {path} does not exist")
    raise ValueError(
        f"run {path}: not a run the report reads (a reference-trainer folder with metrics.jsonl, a TRL output or "
        "checkpoint folder with trainer_state.json, verl's file-logger JSONL or TensorBoard folder, or an own "
        "loop's JSONL of rows with 'step')"
    )


def load_run(path: str | Path, engine: str | None = None, *, eval_k: int | None = None) -> Run:
    """The run at ``path`` (``engine``: one of :data:`~knapsack_rl.report.names.ENGINES`, else detected);
    ``eval_k``: the samples per prompt of TRL's evaluation (TRL's log does not say it).

    Raises:
        ValueError: one line naming the path: not a run of that engine, a malformed log, a run that logged
            no rollouts (it did not go through a knapsack-rl rule), steps that are not integers.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"run {path} does not exist")
    kind = detect_engine(path) if engine is None else engine
    if kind not in ENGINES:
        raise ValueError(f"engine {kind!r} of run {path} is not one the report reads; valid: {list(ENGINES)}")
    found = _detect_or_none(path) if engine is not None else kind
    if found != kind:
        raise ValueError(f"run {path}: engine {kind!r} was given but it is {_kind_text(found)}")
    reader = {"knapsack-rl": _read_ours, "trl": _read_trl, "verl": _read_verl, "jsonl": _read_own}[kind]
    raw, wall, extra = reader(path, eval_k)
    if not raw:
        raise ValueError(f"run {path}: its log has no rows")
    rows = normalize(raw, kind, source=str(path), eval_k=eval_k)
    notes = list(extra.pop("notes", []))
    if wall is None:  # the engine recorded no run time: the sum of its step times, where every step has one
        trained = [r for r in rows if r.get("train/rollouts_total") is not None]
        if trained and all(r.get("train/wall_s") is not None for r in trained):
            wall = float(trained[-1]["train/wall_s"])
    return Run(path, kind, rows, wall, notes=tuple(notes), **extra)


def _detect_or_none(path: Path) -> str | None:
    try:
        return detect_engine(path)
    except ValueError:
        return None


def _kind_text(kind: str | None) -> str:
    return "not a run the report reads" if kind is None else f"a {kind} run"


# ------------------------------------------------------------------------------------------------ readers
Read = tuple[list[dict[str, Any]], float | None, dict[str, Any]]


def _read_ours(path: Path, eval_k: int | None) -> Read:
    """A reference-trainer run folder."""
    rows = read_jsonl(path / "metrics.jsonl")
    extra: dict[str, Any] = {"allocations": read_jsonl(path / "allocations.jsonl")}
    wall = None
    summary = path / "summary.json"
    if summary.is_file():
        data = parse_json_object(read_file_bytes(summary, what="run summary", max_bytes=1 << 26), str(summary))
        wall = _number(data.get("wall_s"), str(summary), "wall_s") if "wall_s" in data else None
    config = path / "config.json"
    if config.is_file():
        extra["config"] = parse_json_object(read_file_bytes(config, what="run config", max_bytes=1 << 26), str(config))
    length, seconds = STEP_KEYS["knapsack-rl"]["length"], STEP_KEYS["knapsack-rl"]["seconds"]
    for row in rows:
        _derive_tokens(row, length)
        if row.get(seconds) is not None and "train/rollouts_generated" in row:
            row["train/step_s"] = row[seconds]
    return rows, wall, extra


def _read_trl(path: Path, eval_k: int | None) -> Read:
    """TRL's trainer_state.json: its log history, merged by step; rollouts per row x the steps it covers."""
    state_path, notes = _trl_state_file(path)
    state = parse_json_object(read_file_bytes(state_path, what="TRL trainer state", max_bytes=MAX_LOG_BYTES),
                              str(state_path))  # fmt: skip
    history = state.get("log_history")
    if not isinstance(history, list) or not all(isinstance(r, dict) and "step" in r for r in history):
        raise ValueError(f"{state_path}: log_history must be a list of objects with 'step' (TRL's trainer state)")
    rows = _merge_by_step(history, str(state_path))
    trained = [r for r in rows if "loss" in r or "train/rollouts_generated" in r]
    lacking = [r["step"] for r in trained if r.get("train/rollouts_generated") is None]
    if trained and len(lacking) == len(trained):
        raise ValueError(
            f"{state_path}: no train/rollouts_generated in TRL's log history: not a run of KnapsackGRPOTrainer "
            "(run every arm, the baseline too, as KnapsackGRPOTrainer with rule: uniform, knapsack, ...)"
        )
    if lacking:
        raise ValueError(
            f"{state_path}: step {lacking[0]} logged TRL's loss but no train/rollouts_generated: the report needs one "
            "generation batch per optimizer step (TRL's default steps_per_generation = gradient_accumulation_steps)"
        )
    previous, length, seconds = 0, STEP_KEYS["trl"]["length"], STEP_KEYS["trl"]["seconds"]
    for row in trained:  # a row's metrics are means over the steps since the previous row
        steps = row["step"] - previous
        row["train/rollouts_generated"] = float(row["train/rollouts_generated"]) * steps
        if isinstance(row.get(seconds), int | float):
            row["train/step_s"] = float(row[seconds]) * steps
        previous = row["step"]
        _derive_tokens(row, length)
        epoch = row.get("epoch")
        if row.get("train/epoch") is None and isinstance(epoch, int | float):
            row["train/epoch"] = float(max(math.ceil(epoch) - 1, 0))  # TRL's epoch after the step: e + (i+1)/S
    wall = next((float(r["train_runtime"]) for r in reversed(rows) if isinstance(r.get("train_runtime"), int | float)),
                None)  # fmt: skip
    max_steps, last = state.get("max_steps"), state.get("global_step")
    if isinstance(max_steps, int) and isinstance(last, int) and 0 < last < max_steps:
        notes.append(f"{state_path}: the log ends at step {last} of max_steps {max_steps}")
    return rows, wall, {"notes": notes}


def _trl_state_file(path: Path) -> tuple[Path, list[str]]:
    """The trainer_state.json of a TRL path: the file, the folder's own, or its last checkpoint's."""
    if path.is_file():
        return path, []
    if (path / "trainer_state.json").is_file():
        return path / "trainer_state.json", []
    checkpoints = _checkpoints(path)
    if not checkpoints:
        raise ValueError(f"run {path}: no trainer_state.json in it or in a checkpoint-<step> folder (not a TRL run)")
    last = checkpoints[-1]
    return last / "trainer_state.json", [f"{path}: TRL's log history read from {last.name}/trainer_state.json"]


def _checkpoints(path: Path) -> list[Path]:
    """TRL's checkpoint-<step> folders with a trainer_state.json, by step."""
    found = [(int(m[1]), p) for p in path.iterdir() if (m := _CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").is_file()]


def _read_verl(path: Path, eval_k: int | None) -> Read:
    """verl's file-logger JSONL or a TensorBoard folder; eval names per data source, and overall with one."""
    if path.is_dir():
        rows = _read_tensorboard(path)
    else:
        rows = []
        for i, line in enumerate(read_jsonl(path)):
            if sorted(line) != ["data", "step"] or not isinstance(line["data"], dict):
                got = sorted(line)
                raise ValueError(f"{path}:{i + 1}: verl's file logger writes {{'step': s, 'data': {{...}}}}; got {got}")
            rows.append({"step": line["step"], **line["data"]})
        rows = _merge_by_step(rows, str(path))
    trained = [r for r in rows if r.get("train/rollouts_generated") is not None]
    if rows and not trained:
        raise ValueError(
            f"run {path}: no train/rollouts_generated in verl's log: not a run of the knapsack verl adapter (run every "
            "arm, the baseline too, with knapsack.rule=uniform, knapsack, ...)"
        )
    if trained and trained[0]["step"] > 1:
        raise ValueError(
            f"run {path}: verl's log starts at step {trained[0]['step']}: a resumed run (verl's file logger rewrites "
            "its file at each start): give each start its own VERL_FILE_LOGGER_PATH and join the files, oldest first"
        )
    length, seconds = STEP_KEYS["verl"]["length"], STEP_KEYS["verl"]["seconds"]
    for row in trained:
        _derive_tokens(row, length)
        if row.get(seconds) is not None:
            row["train/step_s"] = row[seconds]
        if row.get("train/epoch") is None and row.get("training/epoch") is not None:
            row["train/epoch"] = row["training/epoch"]
    return rows, None, {}


def _read_tensorboard(path: Path) -> list[dict[str, Any]]:
    """Scalars of the TensorBoard event files in ``path``, one row per step (tags as names)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # type: ignore[import-untyped]

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    by_step: dict[int, dict[str, Any]] = {}
    for tag in acc.Tags().get("scalars", []):
        for event in acc.Scalars(tag):
            by_step.setdefault(int(event.step), {"step": int(event.step)})[tag] = float(event.value)
    return [by_step[s] for s in sorted(by_step)]


def _read_own(path: Path, eval_k: int | None) -> Read:
    """An own loop's JSONL of canonical rows."""
    if not path.is_file():
        raise ValueError(f"run {path}: an own loop's log is a JSONL file of rows with 'step' (docs/cluster.md)")
    rows = _merge_by_step(read_jsonl(path), str(path))
    keys = ("train/rollouts_generated", "train/rollouts_total")
    if rows and not any(r.get(k) is not None for r in rows for k in keys):
        raise ValueError(
            f"run {path}: no train/rollouts_generated or train/rollouts_total in any row: the report compares arms on "
            "the axis of rollouts generated (docs/cluster.md, the own-loop schema)"
        )
    return rows, None, {}


# ------------------------------------------------------------------------------------------ normalization
def normalize(rows: Iterable[dict[str, Any]], engine: str, *, source: str, eval_k: int | None) -> list[dict[str, Any]]:
    """Rows sorted by step with canonical evaluation names and the running sums of :data:`_PER_STEP`.

    Raises:
        ValueError: one line naming ``source``: a step that is not an integer >= 0 or repeats, a canonical
            per-step value that is not a number, running sums that go down.
    """
    out = []
    for row in rows:
        step = row.get("step")
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"{source}: a step must be an integer >= 0; got step={step!r}")
        new = dict(row, step=step)
        for key, value in row.items():
            name = canonical_eval(engine, key, eval_k=eval_k) if isinstance(key, str) else None
            if name is not None and name != key:
                new.setdefault(name, value)
        out.append(new)
    out.sort(key=lambda r: r["step"])
    steps = [r["step"] for r in out]
    if len(set(steps)) != len(steps):
        dup = next(s for i, s in enumerate(steps) if s in steps[:i])
        raise ValueError(f"{source}: step {dup} appears twice")
    if engine == "verl":
        _overall_of_one_source(out)
    for per_step, total in _PER_STEP:
        _running_sum(out, per_step, total, source)
    return out


def _overall_of_one_source(rows: list[dict[str, Any]]) -> None:
    """verl logs evaluation per data source: with one source, its metrics are also the overall ones."""
    sources = {parts[3][1:] for r in rows for k in r if (parts := split_canonical(k)) and parts[3]}
    if len(sources) != 1:
        return
    for row in rows:
        for key in [k for k in row if (parts := split_canonical(k)) and parts[3]]:
            split, kind, k, _ = split_canonical(key) or ("", "", 0, "")
            row.setdefault(f"{split}/{kind}@{k}", row[key])


def _running_sum(rows: list[dict[str, Any]], per_step: str, total: str, source: str) -> None:
    """Fill ``total`` from ``per_step`` (or ``per_step`` from ``total``) on the rows that have either."""
    have = [r for r in rows if r.get(per_step) is not None or r.get(total) is not None]
    for r in have:
        for key in (per_step, total):
            if r.get(key) is not None:
                r[key] = _number(r[key], f"{source}: step {r['step']}", key)
    if all(r.get(total) is not None for r in have):
        previous = 0.0
        for r in have:
            if r[total] < previous:
                raise ValueError(f"{source}: step {r['step']}: {total}={r[total]} goes down (from {previous})")
            r.setdefault(per_step, r[total] - previous)
            previous = r[total]
    elif all(r.get(per_step) is not None for r in have):
        running = 0.0
        for r in have:
            running += r[per_step]
            r[total] = running


def _derive_tokens(row: dict[str, Any], length_key: str) -> None:
    """``train/tokens_generated`` = the step's mean response length x its rollouts, when both are logged."""
    length, rollouts = row.get(length_key), row.get("train/rollouts_generated")
    if isinstance(length, int | float) and isinstance(rollouts, int | float) and row.get("train/tokens_total") is None:
        row["train/tokens_generated"] = float(length) * float(rollouts)


def _merge_by_step(rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Rows of the same step as one (TRL and verl log a step's training and evaluation apart)."""
    merged: dict[Any, dict[str, Any]] = {}
    for row in rows:
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int | float):
            raise ValueError(f"{source}: a step must be an integer >= 0; got step={step!r}")
        merged.setdefault(step, {}).update(row)
    return list(merged.values())


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number; got {value!r:.40}")
    return float(value)


def _first_rows(path: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` JSON-object rows of a JSONL file (a line that is not one ends the look)."""
    out: list[dict[str, Any]] = []
    data = read_file_bytes(path, what="log file", max_bytes=MAX_LOG_BYTES)
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict):
            break
        out.append(row)
        if len(out) == count:
            break
    return out
