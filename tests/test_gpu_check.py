"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end in its short mode on the CPU, as CI runs it;
on a GPU the same stages run with real settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_short_mode_runs_every_stage_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--short", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["tiny model", "larger model", "compare, 2 arms"]
    assert report["env"]["device"] == "cpu" and report["short"] is True
    assert all(s["steps_per_s"] > 0 for s in report["stages"][:2])
    larger = json.loads((out / "larger" / "config.json").read_text())["tiny_model"]
    assert (larger["hidden_size"], larger["num_layers"]) == (512, 8)
    assert {Path(f).name for f in report["figures"]} >= {"heldout_accuracy.png", "effective_prompts.png"}


def test_gpu_check_refuses_a_cuda_device_the_machine_lacks(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():  # on a GPU machine the check itself is the test
        return
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "torch sees no CUDA device (use --device cpu --short)" in done.stderr
