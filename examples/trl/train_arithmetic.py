"""Train a tiny causal LM on generated arithmetic through TRL with knapsack allocation (CPU, well under a minute).

What it does:

1. builds a character tokenizer and a ~100k-parameter Llama from a config (no hub access), or loads a local
   model with ``--model PATH``;
2. generates the data set: every ``a+b=`` with ``0 <= a, b <= 9`` (100 prompts, ``prompt_id`` column), or
   reads a local one with ``--dataset FILE`` (json / jsonl / csv / parquet with ``prompt`` and ``answer``);
3. warm-starts the built model with a short supervised pass on part of the problems, so that success rates
   differ across prompts (a random model solves nothing, and GRPO has no signal then);
4. trains with :class:`knapsack_rl.integrations.trl.KnapsackGRPOTrainer` (exact-match reward) and reports
   the effective gradient ratio, allocation range, greedy accuracy and wall time. ``--compare`` also runs
   ``allocation="uniform"`` (TRL's fixed group size, same seed and settings) for a side-by-side table.

Usage (from the repository root)::

    python examples/trl/train_arithmetic.py --compare            # knapsack vs uniform, ~30 s on 2 CPU cores
    python examples/trl/train_arithmetic.py --steps 60 --max-n 32
    python examples/trl/train_arithmetic.py --model path/to/local/model --dataset data.jsonl --warmup-steps 0
    torchrun --nproc_per_node 2 examples/trl/train_arithmetic.py --prompts-per-step 4   # 2 processes (CPU: gloo)

Outputs go to ``--output-dir`` (default ``runs/trl-arithmetic``): TRL's checkpoints and logs and a
``summary.json`` with the measured figures.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, load_dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from knapsack_rl.integrations.trl import KnapsackGRPOConfig, KnapsackGRPOTrainer
from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model

CHARS = "0123456789+="


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="local model directory (default: build a tiny Llama)")
    p.add_argument("--dataset", default=None, help="local json/jsonl/csv/parquet with prompt and answer columns")
    p.add_argument("--output-dir", default="runs/trl-arithmetic")
    p.add_argument("--allocation", choices=("knapsack", "uniform"), default="knapsack")
    p.add_argument("--compare", action="store_true", help="run knapsack and uniform and print both")
    p.add_argument("--steps", type=int, default=150, help="GRPO optimizer steps")
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--num-generations", type=int, default=8, help="mean rollouts per prompt N")
    p.add_argument("--min-n", type=int, default=2)
    p.add_argument("--max-n", type=int, default=32)
    p.add_argument("--estimator", default="recipe", help="tracker estimator: recipe, ema or beta")
    p.add_argument("--tracker-min-count", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="supervised warm-start steps (default 150 for the built model, 0 otherwise)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- model and data
def build_tokenizer() -> PreTrainedTokenizerFast:
    """The project's character tokenizer over CHARS (knapsack_rl.models)."""
    return build_char_tokenizer(CHARS)


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A 2-layer Llama of about 100k parameters."""
    return build_tiny_model(tokenizer, TinyModelConfig(64, 128, 2, 4, 32), seed=seed)


def arithmetic_dataset() -> Dataset:
    """Every ``a+b=`` with digits a, b: 100 prompts with ``prompt``, ``answer`` and ``prompt_id``."""
    rows = [(f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10)]
    return Dataset.from_dict(
        {"prompt": [r[0] for r in rows], "answer": [r[1] for r in rows], "prompt_id": list(range(len(rows)))}
    )


def load_local_dataset(path: str) -> Dataset:
    """A local file with ``prompt`` and ``answer`` columns; adds ``prompt_id`` (row index) if absent."""
    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[Path(path).suffix]
    ds = load_dataset(kind, data_files=path, split="train")
    if "prompt_id" not in ds.column_names:
        ds = ds.map(lambda _, i: {"prompt_id": i}, with_indices=True)
    return ds


def exact_match(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """1.0 if the completion's leading number equals the answer, else 0.0."""
    out = []
    for c, a in zip(completions, answer, strict=True):
        m = re.match(r"\s*(-?\d+)", c)
        out.append(float(m is not None and m.group(1) == str(a)))
    return out


def warm_start(model: PreTrainedModel, tok: PreTrainedTokenizerBase, ds: Dataset, steps: int, seed: int) -> None:
    """Supervised pass on the even-numbered rows (the others stay harder); loss on all tokens."""
    if steps <= 0:
        return
    gen = torch.Generator().manual_seed(seed)
    texts = [f"{r['prompt']}{r['answer']}{tok.eos_token}" for i, r in enumerate(ds) if i % 2 == 0]
    tok.padding_side = "right"  # positions start at 0 for every training text
    enc = tok(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)  # (S, T)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(texts), (32,), generator=gen)
        loss = model(
            input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=labels[idx]
        ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def greedy_accuracy(model: PreTrainedModel, tok: PreTrainedTokenizerBase, ds: Dataset) -> float:
    """Fraction of prompts whose greedy completion is exactly right."""
    model.eval()
    tok.padding_side = "left"
    enc = tok(list(ds["prompt"]), padding=True, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    completions = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train()
    return sum(exact_match(completions, list(ds["answer"]))) / len(ds)


# ------------------------------------------------------------------------------------------- training
def run(args: argparse.Namespace, allocation: str) -> dict[str, Any]:
    """One GRPO run; returns the measured figures."""
    start = time.perf_counter()
    if args.model:
        model, tok = AutoModelForCausalLM.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.model)
    else:
        tok = build_tokenizer()
        model = build_model(tok, args.seed)
    ds = load_local_dataset(args.dataset) if args.dataset else arithmetic_dataset()
    warm_start(
        model, tok, ds, args.warmup_steps if args.warmup_steps is not None else (0 if args.model else 150), args.seed
    )
    acc_before = greedy_accuracy(model, tok, ds)
    batch = args.prompts_per_step * args.num_generations
    config = KnapsackGRPOConfig(
        output_dir=str(Path(args.output_dir) / allocation),
        use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=batch,
        num_generations=args.num_generations,
        max_completion_length=3,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        logging_steps=1,
        save_strategy="steps",
        save_steps=max(args.steps // 2, 1),
        report_to="none",
        seed=args.seed,
        disable_tqdm=True,
        allocation=allocation,
        min_n=args.min_n,
        max_n=args.max_n,
        estimator=args.estimator,
        tracker_min_count=args.tracker_min_count,
    )
    trainer = KnapsackGRPOTrainer(
        model=model, reward_funcs=exact_match, args=config, train_dataset=ds, processing_class=tok
    )
    train_start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - train_start
    steps = [h for h in trainer.state.log_history if "alloc/budget_max" in h]
    late = steps[len(steps) // 2 :]  # second half: the allocator has estimates by then

    def mean(key: str, rows: list[dict[str, float]]) -> float:
        return sum(h[key] for h in rows) / max(len(rows), 1)

    return {
        "allocation": allocation,
        "steps": len(steps),
        "effective_grad_ratio": mean("train/effective_grad_ratio", steps),
        "effective_grad_ratio_2nd_half": mean("train/effective_grad_ratio", late),
        "budget_max": max(h["alloc/budget_max"] for h in steps),
        "budget_min": min(h["alloc/budget_min"] for h in steps),
        "reward_mean": mean("reward", steps),
        "greedy_accuracy_before": acc_before,
        "greedy_accuracy_after": greedy_accuracy(trainer.model, tok, ds),
        "train_s": train_s,
        "total_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1 if not torch.cuda.is_available() else torch.get_num_threads())
    runs = [run(args, a) for a in (("knapsack", "uniform") if args.compare else (args.allocation,))]
    if not PartialState().is_main_process:
        return 0
    print(f"{'':<30}" + "".join(f"{r['allocation']:>12}" for r in runs))
    for key in list(runs[0])[1:]:
        print(f"{key:<30}" + "".join(f"{r[key]:>12.4g}" for r in runs))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
