"""Resuming: a checkpoint cannot run code, and a run with other settings is refused."""

import json
import pathlib

import pytest
import torch

from knapsack_rl import KnapsackConfig
from knapsack_rl.models import TinyModelConfig
from knapsack_rl.models.warmstart import WarmStartConfig
from knapsack_rl.tasks import ArithmeticConfig, TaskConfig
from knapsack_rl.train import TrainConfig
from knapsack_rl.train.trainer import Trainer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return TrainConfig(
        out_dir=str(root / "run"),
        warmstart_dir=str(root / "ws"),
        task=TaskConfig(
            arithmetic=ArithmeticConfig(train_per_level=(2,) * 8, eval_per_level=1, warmstart_per_level=(4,) * 8)
        ),
        tiny_model=TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2),
        warmstart=WarmStartConfig(steps=2, batch_size=8, profile_samples=2),
        knapsack=KnapsackConfig.preset("project", n=4, min_count=4),
        prompts_per_step=8,
        epochs=2,
        max_new_tokens=4,
        eval_every=0,
        checkpoint_every=2,
        tensorboard=False,
        progress=False,
    )


class _Payload:
    """Unpickling this would create a file: the proof that a checkpoint executed code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_planted_pickle_payload_never_runs(base, tmp_path):
    out = tmp_path / "planted"
    out.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "model": _Payload(marker)}, out / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"planted/checkpoint.pt: not a loadable knapsack-rl checkpoint"):
        Trainer(base.replace(out_dir=str(out)))
    assert not marker.exists()


def test_resume_refuses_other_settings_and_allows_safe_ones(base, tmp_path):
    cfg = base.replace(out_dir=str(tmp_path / "r"))
    Trainer(cfg).train(stop_after=2)  # checkpoint at step 2
    for change, shown in (({"seed": 1}, "seed: 0 -> 1"), ({"lr": 1e-3}, "lr: 0.0002 -> 0.001"),
                          ({"estimator": "beta"}, "knapsack: ")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"checkpoint.pt was written by a run with other settings \({shown}"):
            Trainer(cfg.replace(**change))
    resumed = Trainer(cfg.replace(epochs=3, progress=True))  # more epochs: allowed
    assert resumed.global_step == 2
    assert json.loads((tmp_path / "r" / "config.json").read_text())["epochs"] == 3
    fresh = Trainer(cfg.replace(seed=1, resume=False))  # resume=false starts afresh in the same folder
    assert fresh.global_step == 0
