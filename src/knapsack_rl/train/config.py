"""The trainer's one config: a typed dataclass, every field documented; read from YAML or JSON.

The method's settings are not redeclared here: :attr:`TrainConfig.knapsack` embeds a
:class:`~knapsack_rl.KnapsackConfig` (rule, allocation, tracker, cold start). In a file::

    prompts_per_step: 64
    knapsack:
      preset: project          # optional: start from a named preset (default: the project's)
      max_n: 64                # then any KnapsackConfig field, by its flat name
      estimator: beta
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from knapsack_rl.core.config import (
    DEFAULT_PRESET,
    KnapsackConfig,
    check_known,
    knapsack_from_mapping,
    overlay,
    to_plain,
)
from knapsack_rl.core.validate import check_bool, check_choice, check_int, check_real
from knapsack_rl.models.tiny import TinyModelConfig
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.tasks.arithmetic import ArithmeticConfig
from knapsack_rl.tasks.source import TaskConfig

LossAgg = Literal["token-mean", "seq-mean-token-mean", "group-mean"]
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "group-mean")


def _default_knapsack() -> KnapsackConfig:
    return KnapsackConfig.preset(DEFAULT_PRESET)


DEMO_LEVELS = ("L2", "L3", "L4", "L5", "L6")


def demo_task() -> TaskConfig:
    """The embedded default task: arithmetic L2..L6 (see :mod:`knapsack_rl.tasks.arithmetic`).

    Three easy levels the warm start nearly solves (they saturate early and free budget) and two
    learnable hard ones (two-digit addition with a carry, subtraction with a borrow) that the warm start
    barely covers, with more training prompts; 64 held-out prompts per level. L1 (100 facts: held-out
    facts cannot be learned from others) and L7/L8 (unreachable for the tiny model) are left out.
    """
    arithmetic = ArithmeticConfig(
        levels=DEMO_LEVELS,
        train_per_level=(64, 64, 64, 96, 96),
        eval_per_level=64,
        warmstart_per_level=(120, 100, 500, 1500, 400),
    )
    return TaskConfig(arithmetic=arithmetic)


def demo_warmstart() -> WarmStartConfig:
    """The demo's warm start: 1500 supervised steps, the hard levels drawn 20x less often than the easy ones."""
    return WarmStartConfig(steps=1500, level_weights={"L5": 0.05, "L6": 0.05})


def default_warmstart(task: TaskConfig) -> WarmStartConfig:
    """The warm start a config gets when it does not set one, which follows its task: the demo's
    (:func:`demo_warmstart`) for the embedded arithmetic suite with the demo's levels (:data:`DEMO_LEVELS`),
    whose hard levels L5 and L6 it draws 20x less often; for any other task (a file, a reasoning-gym mix,
    other arithmetic levels) the same 1500 steps with every level drawn equally often (``level_weights``
    None), since the demo's level names mean nothing there."""
    if task.source == "arithmetic" and tuple(task.arithmetic.levels) == DEMO_LEVELS:
        return demo_warmstart()
    return WarmStartConfig(steps=1500)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one GRPO training run (one arm)."""

    # --- run
    out_dir: str = "runs/train"
    """Directory of this run: metrics.jsonl, allocations.jsonl, config.json, checkpoint.pt, tb/."""
    seed: int = 0
    """Seed of the data order, of sampling and of evaluation."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:1``, ``mps``; ``auto`` picks CUDA when available."""
    threads: int = 1
    """torch CPU threads; 1 is fastest for the tiny model on a small shared CPU (0 leaves torch's default)."""
    resume: bool = True
    """Resume from ``out_dir/checkpoint.pt`` when it exists (refused if a setting that changes results differs)."""
    # --- the method
    rule: str = "knapsack"
    """The allocation rule, by its name in every engine and command (``knapsack-rl rules`` lists them):
    ``knapsack`` (the ``knapsack`` settings below), ``uniform`` (the baseline), ``knapsack:<preset>``,
    ``coba``, ``uncertainty``, ``reinforce-ada``, ``pilot-commit``, ``dapo``, ``greso``, ... Every rule's step
    budget is ``prompts_per_step x knapsack.n``."""
    knapsack: KnapsackConfig = field(default_factory=_default_knapsack)
    """Knapsack settings (:class:`knapsack_rl.KnapsackConfig`): what the ``knapsack`` and ``uniform`` rules
    plan with, ``n`` for every rule, and how rewards map to successes."""
    tracker_init: str | None = None
    """Cold-start option: a saved Tracker file whose estimates are used from the first step."""
    # --- model and data
    model: str | None = None
    """Local Hugging Face causal-LM directory; None uses the embedded tiny model after its warm start."""
    task: TaskConfig = field(default_factory=demo_task)
    """Where prompts come from and how responses are scored: the embedded arithmetic suite (default), a
    reasoning-gym mix, or verl-layout files (:class:`knapsack_rl.tasks.TaskConfig`)."""
    tiny_model: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the embedded tiny model (used when ``model`` is None)."""
    warmstart: WarmStartConfig = field(default_factory=demo_warmstart)
    """Supervised warm start of the tiny model (used when ``model`` is None). Unset in a config file or on
    the command line, it follows the task (:func:`default_warmstart`: the demo's level weights for the demo
    task only); a ``TrainConfig(...)`` built in Python with another task should pass
    ``warmstart=default_warmstart(task)`` (the dataclass default is the demo's)."""
    warmstart_dir: str = "runs/warmstart"
    """Cache directory of warm starts (keyed by the hash of what determines the weights)."""
    # --- step shape (the step's budget is B = prompts_per_step x knapsack n, for every arm)
    prompts_per_step: int = 64
    """M, prompts per step; every prompt is visited once per epoch (incomplete last batch dropped)."""
    epochs: int = 20
    """Passes over the training prompts."""
    max_steps: int | None = None
    """Stop after this many steps (None: epochs x steps per epoch)."""
    max_new_tokens: int = 8
    """Longest response in tokens."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts."""
    # --- optimisation
    lr: float = 2e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay (>= 0)."""
    grad_clip: float = 1.0
    """Clip of the global gradient norm (> 0)."""
    ppo_mini_batches: int = 1
    """Optimizer steps per training step; prompts are split into this many mini-batches."""
    ppo_epochs: int = 1
    """Passes over the step's rollouts."""
    clip_low: float = 0.2
    """PPO ratio clip below 1, in [0, 1)."""
    clip_high: float = 0.28
    """PPO ratio clip above 1 (clip-higher), >= 0."""
    dual_clip: float | None = 10.0
    """Dual-clip bound c > 1 for negative advantages (None disables)."""
    advantage_clip: float | None = None
    """Clip of the advantages to [-c, c], c > 0 (recipe: 5; None, the default, keeps every group's
    advantages summing to 0: with a clip, a 70-rollout group with one success sums to -3.25)."""
    advantage_eps: float = 1e-6
    """Added to the group std in the advantage (>= 0)."""
    loss_agg: LossAgg = "group-mean"
    """How per-token losses become the step's loss (:func:`knapsack_rl.grpo.loss.aggregation_weights`):
    ``token-mean`` (the recipe: every token of the batch weighs the same, so a prompt with 16x the
    rollouts weighs 16x), ``seq-mean-token-mean`` (every rollout weighs the same), ``group-mean`` (every
    prompt weighs the same, whatever its number of rollouts)."""
    # --- evaluation, logging, checkpoints
    eval_every: int = 10
    """Evaluate on the held-out prompts every this many steps (and at the start and end; 0 disables)."""
    eval_k: int = 4
    """Samples per held-out prompt (mean@k, best@k, maj@k; the recipe uses 16)."""
    eval_temperature: float = 0.6
    """Sampling temperature of evaluation (recipe: 0.6)."""
    eval_train_prompts: int = 0
    """Also evaluate (as ``train_eval/...``) on this many training prompts (a seeded subset), at the same
    times: an unbiased training accuracy, the signal to choose settings on without looking at held-out data."""
    checkpoint_every: int = 40
    """Write the checkpoint every this many steps (and at the end; 0: only at the end)."""
    tensorboard: bool = True
    """Also log the metrics to TensorBoard under out_dir/tb."""
    progress: bool = True
    """Show a progress bar (periodic log lines when stderr is not a terminal)."""

    def __post_init__(self) -> None:
        check_train(self)

    @property
    def n(self) -> int:
        """Uniform rollouts per prompt (the step's budget is ``prompts_per_step * n``)."""
        return self.knapsack.allocation.n

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with fields changed (validated again); KnapsackConfig fields by flat name also work."""
        own = {k: v for k, v in changes.items() if k in TrainConfig.__dataclass_fields__}
        method = {k: v for k, v in changes.items() if k not in own}
        if method:
            own["knapsack"] = own.get("knapsack", self.knapsack).replace(**method)
        return dataclasses.replace(self, **own)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable)."""
        return to_plain(self)


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_train(cfg: TrainConfig) -> None:
    """Validate every field once; the error names the field and the value."""
    if not isinstance(cfg.knapsack, KnapsackConfig):
        raise ValueError(f"knapsack must be a KnapsackConfig; got {type(cfg.knapsack).__name__}")
    for name in ("prompts_per_step", "epochs", "max_new_tokens", "ppo_mini_batches", "ppo_epochs", "eval_k"):
        check_int(name, getattr(cfg, name), low=1)
    for name in ("seed", "threads", "eval_every", "checkpoint_every", "eval_train_prompts"):
        check_int(name, getattr(cfg, name), low=0)
    for name in ("resume", "tensorboard", "progress"):
        check_bool(name, getattr(cfg, name))
    if cfg.max_steps is not None:
        check_int("max_steps", cfg.max_steps, low=0)
    if not isinstance(cfg.device, str) or not _DEVICE.match(cfg.device):
        raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:<index>; got device={cfg.device!r}")
    check_real("lr", cfg.lr, low=0.0, open_low=True)
    check_real("weight_decay", cfg.weight_decay, low=0.0)
    check_real("grad_clip", cfg.grad_clip, low=0.0, open_low=True)
    check_real("clip_low", cfg.clip_low, low=0.0, high=1.0, open_high=True)
    check_real("clip_high", cfg.clip_high, low=0.0)
    if cfg.dual_clip is not None:
        check_real("dual_clip", cfg.dual_clip, low=1.0, open_low=True)
    if cfg.advantage_clip is not None:
        check_real("advantage_clip", cfg.advantage_clip, low=0.0, open_low=True)
    check_real("advantage_eps", cfg.advantage_eps, low=0.0)
    check_choice("loss_agg", cfg.loss_agg, LOSS_AGGS)
    check_real("temperature", cfg.temperature, low=0.0, open_low=True)
    check_real("eval_temperature", cfg.eval_temperature, low=0.0)
    from knapsack_rl.rules import rule_names

    check_choice("rule", cfg.rule, rule_names())
    if not isinstance(cfg.task, TaskConfig):
        raise ValueError(f"task must be a TaskConfig; got {type(cfg.task).__name__}")
    for name in ("out_dir", "warmstart_dir", "model", "tracker_init"):
        value = getattr(cfg, name)
        if (value is not None or name in ("out_dir", "warmstart_dir")) and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be a non-empty path; got {name}={value!r}")


RESUMABLE_CHANGES = frozenset(
    {"out_dir", "resume", "epochs", "max_steps", "progress", "tensorboard", "checkpoint_every", "threads", "device"}
)
"""Fields that may differ between a checkpoint's run and the run resuming it (they do not change what a
step computes); any other difference refuses the resume."""


# ----------------------------------------------------------------------------- files
def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a (nested) dict; unknown keys raise, naming them and the valid ones."""
    if not isinstance(values, Mapping):
        raise ValueError(f"a config must be a mapping; got {type(values).__name__}")
    check_known(values, [f.name for f in fields(TrainConfig)], where="config")
    rest = {k: v for k, v in values.items() if k != "knapsack"}
    base = TrainConfig()
    try:
        if "knapsack" in values:
            base = dataclasses.replace(base, knapsack=knapsack_from_mapping(values["knapsack"]))
        if isinstance(rest.get("task"), Mapping):  # the task first: the warm start's defaults follow it
            task = overlay(base.task, rest.pop("task"), where="config.task")
            base = dataclasses.replace(base, task=task, warmstart=default_warmstart(task))
        return overlay(base, rest, where="config")
    except TypeError as exc:  # a value of the wrong kind (levels: 5) met a nested config's own check
        raise ValueError(f"a setting has a value of the wrong type ({exc})") from None


MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB)."""


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML (.yaml / .yml) or JSON config file; every error is one line naming the file.

    YAML is read by :func:`knapsack_rl.safe_yaml.load_yaml_file` (YAML 1.2 scalars: ``lr: 1e-4`` is a
    float; anchors, aliases and duplicate keys refused, naming the line); JSON refuses duplicate keys
    too. Both are read with :func:`knapsack_rl.io.read_file_bytes` (regular files of at most
    :data:`MAX_CONFIG_BYTES`).
    """
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        from knapsack_rl.safe_yaml import load_yaml_file

        values = load_yaml_file(path, what="config file", max_bytes=MAX_CONFIG_BYTES)
    elif path.suffix == ".json":
        values = _load_json(path)
    else:
        raise ValueError(f"config must end in .yaml, .yml or .json; got {path}")
    try:
        return config_from_dict({} if values is None else values)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _load_json(path: Path) -> Any:
    from knapsack_rl.io import read_file_bytes

    data = read_file_bytes(path, what="config file", max_bytes=MAX_CONFIG_BYTES)
    try:
        return json.loads(data.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    except _DuplicateKeyError as exc:
        raise ValueError(f"{path}: duplicate key {exc.args[0]!r} in a JSON object") from None


class _DuplicateKeyError(Exception):
    """A JSON object repeats a key (raised inside json.loads, reported with the file name)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out
