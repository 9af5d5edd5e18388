"""A paired TRL study on CPU, ready for ``knapsack-rl report``: arms x seeds of KnapsackGRPOTrainer (docs/cluster.md).

It trains every arm (``--arms``, default ``uniform,knapsack``) for every seed (``--seeds``, default ``0,1``)
on the tiny Llama and the arithmetic prompts of ``train_arithmetic.py`` (same model builder, data and warm
start), holding everything but the rule fixed: the same seed gives every arm the same warm-started model and
the same data order. Each run evaluates on held-out prompts (every fifth problem, never trained on) with
TRL's own evaluation (``eval_strategy="steps"``: it logs ``eval_reward``, the mean exact-match reward of
``num_generations_eval`` samples per prompt), logs every step (``logging_steps=1``) and saves a checkpoint
after the uniform epoch (step 5: its ``knapsack_rule.bin`` is what ``knapsack-rl preflight --state`` reads)
and at the end (its ``trainer_state.json`` is what the report reads). Then it writes the study's manifest::

    python examples/trl/report_study.py --output-dir runs/trl-study
    knapsack-rl report runs/trl-study/manifest.yaml

The defaults take about 30 s on one CPU core: a smoke-sized study that shows the workflow, not a result.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_arithmetic import arithmetic_dataset, build_model, build_tokenizer, exact_match, warm_start

from knapsack_rl.integrations.trl import KnapsackGRPOConfig, KnapsackGRPOTrainer

warnings.filterwarnings(
    "ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated", category=FutureWarning
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="runs/trl-study", help="one folder per run, and manifest.yaml")
    p.add_argument("--arms", default="uniform,knapsack", help="rules, comma-separated; the first is the baseline")
    p.add_argument("--seeds", default="0,1", help="seeds, comma-separated (every arm runs every seed)")
    p.add_argument("--steps", type=int, default=10, help="GRPO optimizer steps per run")
    p.add_argument("--prompts-per-step", type=int, default=16, help="80 training prompts: 5 steps an epoch")
    p.add_argument("--num-generations", type=int, default=4, help="mean rollouts per prompt (the allocation's n)")
    p.add_argument("--eval-every", type=int, default=5, help="steps between held-out evaluations")
    p.add_argument("--eval-k", type=int, default=4, help="samples per held-out prompt (num_generations_eval)")
    p.add_argument("--save-every", type=int, default=5, help="steps between checkpoints (5: after the uniform epoch)")
    p.add_argument("--warmup-steps", type=int, default=60, help="supervised warm-start steps")
    return p.parse_args(argv)


def split(ds: Dataset) -> tuple[Dataset, Dataset]:
    """(training prompts, held-out prompts): every fifth problem is held out."""
    held = [i for i in range(len(ds)) if i % 5 == 0]
    train = [i for i in range(len(ds)) if i % 5 != 0]
    return ds.select(train), ds.select(held)


def run_one(args: argparse.Namespace, rule: str, seed: int, out: Path) -> Path:
    """Train one arm with one seed into ``out``; returns the run folder."""
    torch.manual_seed(seed)
    tok = build_tokenizer()
    model = build_model(tok, seed)
    train, held = split(arithmetic_dataset())
    warm_start(model, tok, train, args.warmup_steps, seed)
    config = KnapsackGRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        per_device_eval_batch_size=len(held) * args.eval_k,
        num_generations=args.num_generations,
        num_generations_eval=args.eval_k,
        max_completion_length=3,
        max_steps=args.steps,
        learning_rate=5e-4,
        logging_steps=1,  # every step in the log: the report's curves and sums need them all
        eval_strategy="steps",
        eval_on_start=True,  # held-out accuracy at step 0: the start of every curve
        eval_steps=args.eval_every,
        save_strategy="steps",
        save_steps=args.save_every,  # the last checkpoint's trainer_state.json holds the whole log
        report_to="none",
        seed=seed,
        disable_tqdm=True,
        rule=rule,
        min_n=2,
        max_n=16,
        min_count=args.num_generations,  # one epoch of uniform counts gives every prompt an estimate
        loss_agg="group-mean",
    )
    trainer = KnapsackGRPOTrainer(
        model=model, reward_funcs=exact_match, args=config, train_dataset=train, eval_dataset=held,
        processing_class=tok,
    )  # fmt: skip
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every step's metric dict (added with disable_tqdm=True)
    trainer.train()
    return out


def write_manifest(out: Path, arms: list[str], seeds: list[int], eval_k: int) -> Path:
    """The study's manifest (docs/cluster.md): arms -> runs by seed, TRL's eval k, the baseline."""
    lines = [f"baseline: {arms[0]}", f"eval_k: {eval_k}", "arms:"]
    for arm in arms:
        lines.append(f"  {arm}:")
        lines += [f"    - {{seed: {s}, path: {arm.replace(':', '-')}-{s}, engine: trl}}" for s in seeds]
    path = out / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny model: one thread is fastest, and runs are reproducible
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bar()
    arms = [a for a in args.arms.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    done: list[Any] = []
    for seed in seeds:
        for arm in arms:
            done.append(run_one(args, arm, seed, out / f"{arm.replace(':', '-')}-{seed}"))
            print(f"trained {arm} seed {seed} -> {done[-1]}")
    manifest = write_manifest(out, arms, seeds, args.eval_k)
    print(f"wrote {manifest}; next: knapsack-rl report {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
