"""Train a tiny causal LM on generated arithmetic through TRL with knapsack allocation (CPU, under a minute).

What it does:

1. builds a character tokenizer and a ~100k-parameter Llama from a config (no hub access), or loads a local
   model with ``--model PATH``;
2. generates the data set: every ``a+b=`` with ``0 <= a, b <= 9`` (100 prompts; stable content ids from
   :func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids`), or reads a local one with ``--dataset FILE``
   (json / jsonl / csv / parquet with ``prompt`` and ``answer``);
3. warm-starts the built model with a short supervised pass on half of the problems, so that success rates
   differ across prompts (a random model solves nothing, and GRPO has no signal then);
4. trains with :class:`knapsack_rl.integrations.trl.KnapsackGRPOTrainer` (exact-match reward) and prints one
   summary table: the effective gradient ratio beside the prompts with signal per step
   (``train/effective_prompts``: the prompts whose rewards vary, the ones that move the policy), the
   allocation range, the mean reward, greedy accuracy and wall times. ``--rule`` picks any rule TRL runs
   (``coba``, ``knapsack``, ``knapsack:<preset>``, ``uncertainty``, ``uniform``); ``--compare`` runs
   ``knapsack`` and ``uniform`` (TRL's fixed group size): both arms use the same seed, so the same
   warm-started model and the same data order (TRL's sampler is seeded by ``seed``; the table's
   ``same_data_order`` row checks it). The loss weighs every prompt the same whatever its count
   (``loss_agg="group-mean"``; ``--loss-agg trl`` keeps TRL's token mean, under which a prompt with 4x the
   rollouts weighs 4x: see examples/trl/README.md).

Output: a progress bar per arm on a terminal (periodic lines when piped or with ``--no-progress``), then the
table; no per-step metric dicts. The per-step metrics are in each arm's ``trainer_state.json`` checkpoints and
in ``summary.json``. Times are measured with ``time.perf_counter``: ``train_s`` is ``trainer.train()`` alone,
``total_s`` the whole arm (model, warm start, training, evaluation), and the last line the whole script.

Usage (from the repository root)::

    python examples/trl/train_arithmetic.py --compare            # knapsack vs uniform
    python examples/trl/train_arithmetic.py --rule coba          # any rule TRL runs
    python examples/trl/train_arithmetic.py --steps 60 --max-n 32 --estimator beta
    python examples/trl/train_arithmetic.py --model path/to/local/model --dataset data.jsonl --warmup-steps 0
    torchrun --nproc_per_node 2 examples/trl/train_arithmetic.py --prompts-per-step 4   # 2 processes (CPU: gloo)

    # the same run from YAML through TRL's parser (examples/trl/config.yaml):
    python examples/trl/train_arithmetic.py --export runs/trl-assets    # local model + data for the launcher
    python -m knapsack_rl.integrations.trl --config examples/trl/config.yaml

Outputs go to ``--output-dir`` (default ``runs/trl-arithmetic``): TRL's checkpoints per arm and ``summary.json``.
"""

# ruff: noqa: E402  (the clock starts before the heavy imports, so the wall time printed includes them)
from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import datasets
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
    TrainerCallback,
)
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from knapsack_rl.integrations.prompt_ids import add_prompt_ids
from knapsack_rl.integrations.trl import KnapsackGRPOConfig, KnapsackGRPOTrainer, trl_rule_names
from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model

# TRL 1.16 still calls transformers' old gradient-checkpointing names, deprecated for transformers v6
# (`gradient_checkpointing`, `is_gradient_checkpointing`, `gradient_checkpointing_enable/disable`): one
# FutureWarning per trainer and per training run, nothing we can act on. Only those messages are hidden.
warnings.filterwarnings(
    "ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated", category=FutureWarning
)

CHARS = "0123456789+="


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="local model directory (default: build a tiny Llama)")
    p.add_argument("--dataset", default=None, help="local json/jsonl/csv/parquet with prompt and answer columns")
    p.add_argument("--output-dir", default="runs/trl-arithmetic")
    p.add_argument("--rule", choices=trl_rule_names(), default="knapsack", help="allocation rule (one arm)")
    p.add_argument("--compare", action="store_true", help="run knapsack and uniform with the same seed and data")
    p.add_argument("--steps", type=int, default=150, help="GRPO optimizer steps")
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--num-generations", type=int, default=8, help="mean rollouts per prompt (the allocation's n)")
    p.add_argument("--preset", default="project", help="knapsack preset: project, recipe or signal")
    p.add_argument(
        "--loss-agg", choices=("group-mean", "trl"), default="group-mean", help="group-mean: every prompt weighs the "
        "same whatever its count; trl: TRL's token mean (a prompt weighs by its rollouts)"
    )  # fmt: skip
    p.add_argument("--min-n", type=int, default=2)
    p.add_argument("--max-n", type=int, default=32)
    p.add_argument("--estimator", default="recipe", help="tracker estimator: recipe, ema or beta")
    p.add_argument("--min-count", type=int, default=8, help="rewards a prompt needs before it has an estimate")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=None, help="supervised warm-start steps (150 built, 0 --model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="periodic lines instead of a progress bar")
    p.add_argument("--export", default=None, metavar="DIR", help="write the warm-started model and data, then stop")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- model and data
def build_tokenizer() -> PreTrainedTokenizerFast:
    """The project's character tokenizer over CHARS (knapsack_rl.models)."""
    return build_char_tokenizer(CHARS)


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A 2-layer Llama of about 100k parameters."""
    return build_tiny_model(tokenizer, TinyModelConfig(64, 128, 2, 4, 32), seed=seed)


def arithmetic_dataset() -> Dataset:
    """Every ``a+b=`` with digits a, b: 100 prompts with ``prompt``, ``answer`` and content-hash ``prompt_id``."""
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]
    return add_prompt_ids(Dataset.from_list(rows))


def load_local_dataset(path: str) -> Dataset:
    """A local file with ``prompt`` and ``answer`` columns; adds content-hash ``prompt_id`` if absent."""
    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[Path(path).suffix]
    ds = load_dataset(kind, data_files=path, split="train")
    return ds if "prompt_id" in ds.column_names else add_prompt_ids(ds)


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


def model_and_data(args: argparse.Namespace) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Dataset]:
    """The (warm-started) model, its tokenizer and the data set; the same for every arm (same seed)."""
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    else:
        tok = build_tokenizer()
        model = build_model(tok, args.seed)
    ds = load_local_dataset(args.dataset) if args.dataset else arithmetic_dataset()
    steps = args.warmup_steps if args.warmup_steps is not None else (0 if args.model else 150)
    warm_start(model, tok, ds, steps, args.seed)
    return model, tok, ds


# ------------------------------------------------------------------------------------------- progress
class QuietProgress(TrainerCallback):  # type: ignore[misc]
    """A progress bar per arm on a terminal, else a line every tenth of the run; records each batch's prompts."""

    def __init__(self, name: str, trainer: KnapsackGRPOTrainer, bar: bool) -> None:
        self.name, self.trainer, self.bar = name, trainer, bar
        self.pbar: Any = None
        self.prompt_order: list[list[int | str]] = []
        self._seen: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.bar and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.pbar = tqdm(total=state.max_steps, desc=self.name, unit="step", leave=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        plan = self.trainer.last_plan
        if plan is not None and plan is not self._seen:  # a new generation batch was planned
            self._seen = plan
            self.prompt_order.append(plan.prompt_ids)
        if self.pbar is not None:
            self.pbar.update(1)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
        logs = logs or {}
        due = state.global_step % max(state.max_steps // 10, 1) == 0 and "train/effective_prompts" in logs
        if self.pbar is None and state.is_world_process_zero and due:
            egr, signal = logs["train/effective_grad_ratio"], logs["train/effective_prompts"]
            step = f"{state.global_step}/{state.max_steps}"
            print(f"{self.name}: step {step}  egr {egr:.2f}  prompts with signal {signal:g}")

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.pbar is not None:
            self.pbar.close()


# ------------------------------------------------------------------------------------------- training
def run(args: argparse.Namespace, rule: str) -> dict[str, Any]:
    """One GRPO run; returns the measured figures."""
    start = time.perf_counter()
    model, tok, ds = model_and_data(args)
    acc_before = greedy_accuracy(model, tok, ds)
    config = KnapsackGRPOConfig(
        output_dir=str(Path(args.output_dir) / rule),
        use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
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
        knapsack_preset=args.preset,
        rule=rule,
        min_n=args.min_n,
        max_n=args.max_n,
        estimator=args.estimator,
        min_count=args.min_count,
        loss_agg=None if args.loss_agg == "trl" else args.loss_agg,
    )
    trainer = KnapsackGRPOTrainer(
        model=model, reward_funcs=exact_match, args=config, train_dataset=ds, processing_class=tok
    )
    trainer.remove_callback(PrinterCallback)  # it prints every step's metric dict (added with disable_tqdm=True)
    progress = QuietProgress(rule, trainer, bar=sys.stdout.isatty() and not args.no_progress)
    trainer.add_callback(progress)
    train_start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - train_start
    steps = [h for h in trainer.state.log_history if "alloc/budget_max" in h]
    late = steps[len(steps) // 2 :]  # second half: the allocator has estimates by then

    def mean(key: str, rows: list[dict[str, float]]) -> float:
        return sum(h[key] for h in rows) / max(len(rows), 1)

    return {
        "rule": rule,
        "steps": len(steps),
        "effective_grad_ratio": mean("train/effective_grad_ratio", steps),
        "effective_grad_ratio_2nd_half": mean("train/effective_grad_ratio", late),
        "prompts_with_signal_per_step": mean("train/effective_prompts", steps),
        "prompts_with_signal_2nd_half": mean("train/effective_prompts", late),
        "budget_max": max(h["alloc/budget_max"] for h in steps),
        "budget_min": min(h["alloc/budget_min"] for h in steps),
        "reward_mean": mean("reward", steps),
        "greedy_accuracy_before": acc_before,
        "greedy_accuracy_after": greedy_accuracy(trainer.model, tok, ds),
        "train_s": train_s,
        "total_s": time.perf_counter() - start,
        "prompt_order": progress.prompt_order,
        "log_history": steps,
    }


def export(args: argparse.Namespace) -> int:
    """Write the warm-started model (with tokenizer) and the data set for the YAML launcher."""
    model, tok, ds = model_and_data(args)
    out = Path(args.export)
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    ds.remove_columns("prompt_id").to_json(str(out / "arithmetic.jsonl"))  # the launcher derives the same ids
    print(f"wrote {out / 'model'} and {out / 'arithmetic.jsonl'} ({len(ds)} prompts)")
    return 0


def print_table(runs: list[dict[str, Any]]) -> None:
    """The summary: one row per figure, one column per arm."""
    hidden = {"rule", "prompt_order", "log_history"}
    print(f"{'':<32}" + "".join(f"{r['rule']:>12}" for r in runs))
    for key in (k for k in runs[0] if k not in hidden):
        print(f"{key:<32}" + "".join(f"{r[key]:>12.4g}" for r in runs))
    if len(runs) > 1:
        same = all(r["prompt_order"] == runs[0]["prompt_order"] for r in runs)
        print(f"{'same_data_order':<32}{'yes' if same else 'NO':>12}  ({len(runs[0]['prompt_order'])} batches)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1 if not torch.cuda.is_available() else torch.get_num_threads())  # tiny model: faster
    if args.no_progress or not sys.stdout.isatty():
        hf_logging.disable_progress_bar()  # transformers' weight-loading and shard-writing bars
        datasets.disable_progress_bars()  # datasets' map / to_json bars
    if args.export:
        return export(args)
    runs = [run(args, rule) for rule in (("knapsack", "uniform") if args.compare else (args.rule,))]
    if not PartialState().is_main_process:
        return 0
    print_table(runs)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1, default=str))
    print(f"wall time {time.perf_counter() - STARTED:.1f} s (imports included); summary in {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
