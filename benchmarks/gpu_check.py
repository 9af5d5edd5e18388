"""The prepared GPU check: the reference trainer on CUDA with the tiny model and a larger locally built one,
then a two-arm ``compare`` that writes its figures. One script, one JSON of what it measured.

    python benchmarks/gpu_check.py                       # on a GPU machine: under 10 minutes on one H100
    python benchmarks/gpu_check.py --short --device cpu  # the smoke version CI runs (tests/test_gpu_check.py)

Every stage runs the real ``knapsack-rl`` command in a subprocess (the same code a user runs), with its wall
time; a stage that fails stops the script with its error line. Written to ``--out`` (default
``runs/gpu-check``): ``gpu_check.json`` (device, torch and CUDA versions, each stage's command, wall seconds,
steps per second and the final metrics) and the compare's plots. Nothing here picks settings on results:
the stages are fixed, only ``--short`` makes them tiny.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LARGER_MODEL = {"hidden_size": 512, "intermediate_size": 1536, "num_layers": 8, "num_heads": 8}
"""The larger locally built policy (about 25M parameters): what a GPU should train much faster than a CPU."""


def stages(device: str, out: Path, short: bool) -> list[tuple[str, list[str]]]:
    """The commands of the check, in order (name, argv after ``knapsack-rl``)."""
    steps, seeds = ("4", "0..1") if short else ("60", "0..2")
    common = ["--device", device, "--no-progress", "--no-tensorboard", "--warmstart-dir", str(out / "warmstart")]
    tiny = ["train", *common, "--max-steps", steps, "--out-dir", str(out / "tiny")]
    larger = ["train", *common, "--max-steps", steps, "--out-dir", str(out / "larger")]
    larger += [f"--set=tiny_model.{k}={v}" for k, v in LARGER_MODEL.items()]
    compare = ["compare", *common, "--arms", "uniform,knapsack", "--seeds", seeds, "--jobs", "1"]
    compare += ["--out-dir", str(out / "compare"), "--max-steps", steps]
    if short:
        small = ["--set=warmstart.steps=4", "--set=task.arithmetic.train_per_level=[4, 4, 4, 4, 4]",
                 "--set=task.arithmetic.eval_per_level=2", "--set=task.arithmetic.warmstart_per_level=[8, 8, 8, 8, 8]",
                 "--prompts-per-step", "8", "--eval-every", "2", "--eval-k", "2"]  # fmt: skip
        tiny, larger, compare = tiny + small, larger + small, compare + small
    return [("tiny model", tiny), ("larger model", larger), ("compare, 2 arms", compare)]


def run_stage(name: str, argv: list[str]) -> dict[str, Any]:
    """Run one ``knapsack-rl`` command; its wall time and last output lines (exits on failure)."""
    cmd = [sys.executable, "-m", "knapsack_rl.cli", *argv]
    print(f"== {name}: knapsack-rl {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
    print("\n".join(f"   {line}" for line in tail), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu_check: stage {name!r} failed (exit {done.returncode}) after {wall:.0f} s")
    return {"stage": name, "argv": argv, "wall_s": round(wall, 2), "tail": tail}


def steps_per_second(out_dir: Path, wall_s: float) -> float:
    """Training steps logged by a run over the stage's wall time (warm start and evaluation included)."""
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = sum(1 for r in rows if "train/effective_grad_ratio" in r)
    return steps / wall_s if wall_s > 0 else float("nan")


def environment(device: str) -> dict[str, Any]:
    """What ran the check: torch, CUDA and the device's name."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"gpu_check: --device {device} but torch sees no CUDA device (use --device cpu --short)")
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    parser.add_argument("--short", action="store_true", help="tiny settings: the CI smoke version")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"), help="output folder")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"env": environment(args.device), "short": args.short, "stages": []}
    for name, cmd in stages(args.device, args.out, args.short):
        report["stages"].append(run_stage(name, cmd))
    for stage, folder in zip(report["stages"][:2], ("tiny", "larger"), strict=True):
        stage["steps_per_s"] = round(steps_per_second(args.out / folder, stage["wall_s"]), 3)
    report["figures"] = sorted(str(p) for p in (args.out / "compare").glob("*.png"))
    args.out.mkdir(parents=True, exist_ok=True)
    from knapsack_rl.io import atomic_write_text

    atomic_write_text(args.out / "gpu_check.json", json.dumps(report, indent=1))
    total = sum(s["wall_s"] for s in report["stages"])
    print(f"gpu_check: {len(report['stages'])} stages in {total:.0f} s on {report['env']}; {args.out}/gpu_check.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
