import json

import torch

from knapsack_rl.cli import main

torch.set_num_threads(1)


def _config(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        f"warmstart_dir: {tmp_path / 'ws'}\n"
        "threads: 1\n"
        "tiny_model: {hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 2}\n"
    )
    return path


def test_demo_quick_runs_both_arms_with_equal_rollouts(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--config", str(_config(tmp_path)), "--out-dir", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "effective gradient ratio, epoch >= 2 (%)" in text and "uniform" in text and "knapsack" in text
    assert "warm start:" in text and "level L8 at end (%)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uniform"][0]["rollouts"] == summary["knapsack"][0]["rollouts"] == 3 * 4 * 8 * 4
    for name in ("effective_grad_ratio.png", "heldout_accuracy.png", "budget_vs_p.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "seed0" / "knapsack" / "config.json").exists()


def test_train_command_with_overrides(tmp_path, capsys):
    cfg = tmp_path / "train.json"
    cfg.write_text(
        json.dumps(
            {
                "warmstart_dir": str(tmp_path / "ws"),
                "task": {"train_per_level": [2] * 8, "eval_per_level": 1},
                "warmstart": {"steps": 2, "batch_size": 4, "profile_samples": 2},
                "tiny_model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2},
                "prompts_per_step": 8,
                "n": 2,
                "eval_k": 2,
                "tensorboard": False,
                "progress": False,
                "threads": 1,
            }
        )
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--arm", "uniform", "--out-dir", str(out), "--max-steps", "3"]) == 0
    assert "trained 3 steps (48 rollouts)" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["arm"] == "uniform"
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
