"""The trainer's one config: a typed dataclass, every field documented; read from YAML or JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from knapsack_rl.core.tracker import estimator_names
from knapsack_rl.core.validate import check_choice, check_int, check_real
from knapsack_rl.models.tiny import TinyModelConfig
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.tasks.arithmetic import ArithmeticConfig

Arm = Literal["uniform", "knapsack"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one GRPO training run (one arm)."""

    # --- run
    out_dir: str = "runs/train"
    """Directory of this run: metrics.jsonl, allocations.jsonl, config.json, checkpoint.pt, tb/."""
    arm: Arm = "knapsack"
    """Rollout allocation: ``uniform`` (n per prompt) or ``knapsack`` (``allocate()`` from the tracker)."""
    seed: int = 0
    """Seed of the data order, of sampling and of evaluation."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:1`` ...; ``auto`` picks CUDA when available."""
    threads: int = 1
    """torch CPU threads; 1 is fastest for the tiny model on a small shared CPU (0 leaves torch's default)."""
    resume: bool = True
    """Resume from ``out_dir/checkpoint.pt`` when it exists."""
    # --- model and data
    model: str | None = None
    """Local Hugging Face causal-LM directory; None uses the embedded tiny model after its warm start."""
    data: str | None = None
    """Training prompts: a verl-layout .jsonl / .parquet file; None uses the embedded arithmetic suite."""
    eval_data: str | None = None
    """Held-out prompts in the same layout (None: the suite's held-out split, or no evaluation)."""
    reward: str = "exact"
    """Registered reward function: ``exact`` or ``math_verify``."""
    task: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    """The embedded task suite (used when ``data`` is None)."""
    tiny_model: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the embedded tiny model (used when ``model`` is None)."""
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    """Supervised warm start of the tiny model (used when ``model`` is None)."""
    warmstart_dir: str = "runs/warmstart"
    """Cache directory of warm starts (keyed by the hash of their config)."""
    # --- step shape
    prompts_per_step: int = 64
    """M, prompts per step; every prompt is visited once per epoch (incomplete last batch dropped)."""
    n: int = 8
    """Uniform rollouts per prompt; the step's budget is B = M x n for both arms."""
    epochs: int = 16
    """Passes over the training prompts."""
    max_steps: int | None = None
    """Stop after this many steps (None: epochs x steps per epoch)."""
    max_new_tokens: int = 8
    """Longest response in tokens."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts."""
    # --- allocation and tracking (knapsack arm)
    min_n: int = 2
    """Fewest rollouts of an effective prompt (>= 2: a group of one has no baseline)."""
    max_n: int = 128
    """Most rollouts of an effective prompt."""
    negative_n: int = 2
    """Rollouts of a prompt estimated at p = 0."""
    positive_n: int = 2
    """Rollouts of a prompt estimated at p = 1."""
    fallback: bool = True
    """The recipe's alpha-confidence fallback (surplus to the p = 0 pool)."""
    alpha: float = 0.9
    """Fallback's target probability of a non-zero gradient."""
    objective: Literal["paper", "recipe"] = "paper"
    """Knapsack scoring: ``paper`` = sum V(N, p); ``recipe`` = the authors' code's scoring."""
    estimator: str = "recipe"
    """Tracker estimator: ``recipe`` (window 16, this epoch), ``ema`` or ``beta``."""
    min_count: int = 8
    """Rewards a prompt needs before its estimate is used."""
    alloc_from_epoch: int = 2
    """First epoch (1-based) whose allocation uses estimates; before it every prompt gets n (recipe: 2)."""
    tracker_init: str | None = None
    """Cold-start option: a saved Tracker file whose estimates are used from the first step."""
    # --- optimisation
    lr: float = 2e-4
    """Adam learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip of the global gradient norm."""
    ppo_mini_batches: int = 1
    """Optimizer steps per training step; prompts are split into this many mini-batches."""
    ppo_epochs: int = 1
    """Passes over the step's rollouts."""
    clip_low: float = 0.2
    """PPO ratio clip below 1."""
    clip_high: float = 0.28
    """PPO ratio clip above 1 (clip-higher)."""
    dual_clip: float | None = 10.0
    """Dual-clip bound for negative advantages (None disables)."""
    adv_clip: float | None = 5.0
    """Clip of the advantages to [-adv_clip, adv_clip] (recipe: 5; None disables)."""
    adv_eps: float = 1e-6
    """Added to the group std in the advantage."""
    # --- evaluation, logging, checkpoints
    eval_every: int = 10
    """Evaluate on the held-out prompts every this many steps (and at the start and end; 0 disables)."""
    eval_k: int = 8
    """Samples per held-out prompt (mean@k, best@k, maj@k)."""
    eval_temperature: float = 0.6
    """Sampling temperature of evaluation (recipe: 0.6)."""
    checkpoint_every: int = 40
    """Write the checkpoint every this many steps (and at the end; 0: only at the end)."""
    tensorboard: bool = True
    """Also log the metrics to TensorBoard under out_dir/tb."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        check_choice("arm", self.arm, ["uniform", "knapsack"])
        check_choice("objective", self.objective, ["paper", "recipe"])
        check_choice("estimator", self.estimator, estimator_names())
        for name in ("prompts_per_step", "n", "epochs", "max_new_tokens", "ppo_mini_batches", "ppo_epochs", "eval_k"):
            check_int(name, getattr(self, name), low=1)
        for name in ("seed", "threads", "eval_every", "checkpoint_every", "min_count"):
            check_int(name, getattr(self, name), low=0)
        check_int("min_n", self.min_n, low=2)
        check_int("max_n", self.max_n, low=self.min_n)
        check_int("alloc_from_epoch", self.alloc_from_epoch, low=1)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, low=0)
        check_real("lr", self.lr, low=0.0, open_low=True)
        check_real("temperature", self.temperature, low=0.0, open_low=True)
        check_real("eval_temperature", self.eval_temperature, low=0.0)
        check_real("grad_clip", self.grad_clip, low=0.0, open_low=True)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable)."""
        return asdict(self)


_NESTED = {"task": ArithmeticConfig, "tiny_model": TinyModelConfig, "warmstart": WarmStartConfig}


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """JSON / YAML lists become tuples (the nested configs are frozen)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a (nested) dict; unknown keys raise, naming them and the valid ones."""
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(valid)}")
    kwargs = dict(values)
    for name, cls in _NESTED.items():
        if name in kwargs and isinstance(kwargs[name], dict):
            sub_valid = {f.name for f in fields(cls)}
            bad = sorted(set(kwargs[name]) - sub_valid)
            if bad:
                raise ValueError(f"unknown keys {bad} in {name}; valid keys: {sorted(sub_valid)}")
            kwargs[name] = cls(**_tuples(kwargs[name]))
    return TrainConfig(**kwargs)


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML (.yaml / .yml) or JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        raise ValueError(f"config must end in .yaml, .yml or .json; got {path}")
    if not isinstance(values, dict):
        raise ValueError(f"config {path} must hold a mapping; got {type(values).__name__}")
    return config_from_dict(values)
