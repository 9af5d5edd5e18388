"""Resuming: a checkpoint cannot run code, and a run with other settings is refused."""

import json
import pathlib

import pytest
import torch

from knapsack_rl.train.trainer import Trainer
from tests.train.tiny_run import tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("resume"), warmstart_steps=2, checkpoint_every=2, lr=2e-4)


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
    resumed.close()  # releases out_dir's lock: one open Trainer per run directory
    fresh = Trainer(cfg.replace(seed=1, resume=False))  # resume=false starts afresh in the same folder
    assert fresh.global_step == 0


def test_preflight_loads_a_checkpoints_policy_and_refuses_another_tasks(base, tmp_path):
    from knapsack_rl.tasks import ArithmeticConfig, TaskConfig
    from knapsack_rl.train.trainer import load_policy_weights, load_task_and_policy

    cfg = base.replace(out_dir=str(tmp_path / "u"), knapsack=base.knapsack.replace(rule="uniform"))
    trainer = Trainer(cfg)
    trainer.train(stop_after=2)
    with torch.no_grad():
        next(trainer.model.parameters()).add_(0.5)  # a policy surely unlike the start (tiny groups may give no signal)
    path = trainer.save_checkpoint()
    _, model, _ = load_task_and_policy(cfg, torch.device("cpu"))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_policy_weights(path, cfg, model, torch.device("cpu")) == 2
    trained = trainer.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items())
    other = cfg.replace(task=TaskConfig(arithmetic=ArithmeticConfig(train_per_level=(3,) * 8, eval_per_level=1)))
    with pytest.raises(ValueError, match=r"checkpoint.pt was written for another policy or task \(task differ\)"):
        load_policy_weights(path, other, model, torch.device("cpu"))
