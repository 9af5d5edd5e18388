"""The smallest real training run the trainer tests share: 16 arithmetic prompts, a 1-2 layer tiny Llama."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knapsack_rl import KnapsackConfig
from knapsack_rl.models import TinyModelConfig
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.tasks import ArithmeticConfig, TaskConfig, load_task, write_task
from knapsack_rl.train import TrainConfig

ARITHMETIC = ArithmeticConfig(train_per_level=(2,) * 8, eval_per_level=1, warmstart_per_level=(4,) * 8)


def tiny_config(
    root: Path, *, reward: str | None = None, layers: int = 1, warmstart_steps: int = 3, **settings: Any
) -> TrainConfig:
    """A TrainConfig writing under ``root``: 8 prompts x 4 rollouts per step, the ``project`` preset.

    ``reward``: the name of a registered reward; the arithmetic prompts are then written as files and
    scored by it (a reward the untrained model gets right part of the time gives mixed groups).
    ``settings``: any other TrainConfig field.
    """
    task = TaskConfig(arithmetic=ARITHMETIC)
    if reward is not None:
        files = write_task(load_task(task), root / "data", suffix=".jsonl")
        task = TaskConfig(source="file", data=str(files["train"]), eval_data=str(files["eval"]),
                          warmstart_data=str(files["warmstart"]), reward=reward)  # fmt: skip
    defaults: dict[str, Any] = {
        "out_dir": str(root / "run"),
        "warmstart_dir": str(root / "ws"),
        "task": task,
        "tiny_model": TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=layers, num_heads=2),
        "warmstart": WarmStartConfig(steps=warmstart_steps, batch_size=8, profile_samples=2),
        "knapsack": KnapsackConfig.preset("project", n=4, min_count=4),
        "prompts_per_step": 8,
        "epochs": 2,
        "max_new_tokens": 4,
        "eval_every": 0,
        "eval_k": 2,
        "lr": 1e-3,
        "checkpoint_every": 0,
        "tensorboard": False,
        "progress": False,
    }
    return TrainConfig(**{**defaults, **settings})


_WARM = {"warmstart_per_level": [4] * 5}


def tiny_settings(**settings: Any) -> dict[str, Any]:
    """The same kind of run as the settings of a config file (what the CLI tests write to ``--config``): 16
    arithmetic prompts of 5 levels, a 1-layer tiny Llama, 8 prompts per step; ``settings`` replace top-level keys."""
    defaults: dict[str, Any] = {
        "task": {
            "arithmetic": {"train_per_level": [4, 4, 4, 2, 2], "eval_per_level": 1, "warmstart_per_level": [4] * 5}
        },
        "warmstart": {"steps": 2, "batch_size": 4, "profile_samples": 2},
        "tiny_model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2},
        "prompts_per_step": 8,
        "eval_k": 2,
        "tensorboard": False,
        "progress": False,
        "threads": 1,
    }
    return {**defaults, **settings}
