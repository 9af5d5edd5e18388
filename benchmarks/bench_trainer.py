"""Throughput of the reference trainer against TRL's GRPOTrainer on the same tiny model and batch (CPU).

Both systems train the warm-started tiny policy (``runs/warmstart``; built when missing) on the
arithmetic suite with M prompts x n rollouts per step, responses up to ``max_new_tokens``, one
optimizer step per training step. Each (system, repeat) runs in a fresh subprocess, so its peak RSS
is its own; the table reports medians over repeats of the per-run median step time.

    python benchmarks/bench_trainer.py [--steps 8] [--warmup 2] [--repeats 3] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _ours(args: dict[str, Any], queue: Any) -> None:
    import torch

    from knapsack_rl.train.config import TrainConfig
    from knapsack_rl.train.trainer import Trainer

    torch.set_num_threads(args["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            out_dir=tmp, arm=args["arm"], prompts_per_step=args["prompts"], n=args["n"], seed=args["seed"],
            max_new_tokens=args["max_new_tokens"], eval_every=0, checkpoint_every=0, tensorboard=False,
            progress=False, device="cpu", max_steps=args["warmup"] + args["steps"], resume=False,
        )  # fmt: skip
        trainer = Trainer(cfg)
        times = []
        for i in range(args["warmup"] + args["steps"]):
            start = time.perf_counter()
            trainer.step()
            if i >= args["warmup"]:
                times.append(time.perf_counter() - start)
    queue.put(
        {"step_s": statistics.median(times), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    )


def _trl(args: dict[str, Any], queue: Any) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from knapsack_rl.models.tiny import load_causal_lm
    from knapsack_rl.models.warmstart import warm_start
    from knapsack_rl.tasks.arithmetic import ArithmeticConfig, build_splits

    torch.set_num_threads(args["threads"])
    model, tok = load_causal_lm(warm_start("runs/warmstart"))
    train, _ = build_splits(ArithmeticConfig())
    data = Dataset.from_dict({"prompt": [tok.bos_token + p for p in train.prompts], "answer": train.answers})

    def exact(prompts: list[str], completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [float(c.strip() == a) for c, a in zip(completions, answer, strict=True)]

    times: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.start)

    batch = args["prompts"] * args["n"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(
            output_dir=tmp, use_cpu=True, per_device_train_batch_size=batch, num_generations=args["n"],
            steps_per_generation=1, gradient_accumulation_steps=1, max_completion_length=args["max_new_tokens"],
            temperature=1.0, learning_rate=2e-4, beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="dapo",
            max_steps=args["warmup"] + args["steps"], logging_steps=1, report_to="none", save_strategy="no",
            seed=args["seed"], dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=model, reward_funcs=exact, args=cfg, train_dataset=data, processing_class=tok, callbacks=[Timer()]
        )
        trainer.train()
    queue.put(
        {
            "step_s": statistics.median(times[args["warmup"] :]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _run(target: Any, args: dict[str, Any]) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step (M)")
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per system")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = parser.parse_args()
    base = {
        "prompts": a.prompts, "n": a.n, "max_new_tokens": a.max_new_tokens, "steps": a.steps, "warmup": a.warmup,
        "threads": a.threads,
    }  # fmt: skip
    from knapsack_rl.models.warmstart import warm_start

    warm_start("runs/warmstart")  # build the cache once, outside the timings
    systems = {
        "knapsack-rl (uniform arm)": (_ours, {"arm": "uniform"}),
        "knapsack-rl (knapsack arm)": (_ours, {"arm": "knapsack"}),
    }
    if not a.skip_trl:
        systems["TRL GRPOTrainer (use_cpu)"] = (_trl, {})
    results: dict[str, dict[str, float]] = {}
    for name, (target, extra) in systems.items():
        runs = [_run(target, {**base, **extra, "seed": r}) for r in range(a.repeats)]
        step = statistics.median(r["step_s"] for r in runs)
        results[name] = {
            "step_s": step,
            "rollouts_per_s": a.prompts * a.n / step,
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "step_s_runs": [r["step_s"] for r in runs],
        }
    rows = [f"{'system':<28} {'step s':>8} {'rollouts/s':>11} {'peak RSS MB':>12}"]
    for name, r in results.items():
        rows.append(f"{name:<28} {r['step_s']:>8.3f} {r['rollouts_per_s']:>11.0f} {r['peak_rss_mb']:>12.0f}")
    trl = results.get("TRL GRPOTrainer (use_cpu)")
    if trl:
        ours = results["knapsack-rl (uniform arm)"]
        rows.append(
            f"speed-up over TRL (uniform arm, rollouts/s): {ours['rollouts_per_s'] / trl['rollouts_per_s']:.1f}x"
        )
    print(f"M={a.prompts} prompts x n={a.n}, max_new_tokens={a.max_new_tokens}, threads={a.threads}, "
          f"median of {a.repeats} runs x {a.steps} steps")  # fmt: skip
    print("\n".join(rows))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
