"""Step time of the reference trainer (uniform and knapsack arms) against TRL's GRPOTrainer (CPU), matched.

All systems train the warm-started tiny policy (``runs/warmstart``; built when missing) on the
arithmetic suite with M prompts x n rollouts per step, responses up to ``max_new_tokens``, one
optimizer step per training step, the same learning rate and clip range.

What makes the rows comparable:

- **Matched settings.** TRL's GRPOConfig defaults differ from ours where it matters for time: it
  trains in bf16 and with gradient checkpointing by default (ours: fp32, none). Here TRL runs with
  ``bf16=False, fp16=False, gradient_checkpointing=False`` (fp32, as ours), ``beta=0`` (no KL
  reference model: ours has no KL term, and a reference model would add a forward pass per step),
  ``num_iterations=1, steps_per_generation=1, gradient_accumulation_steps=1`` (one optimizer step
  per step, no separate old-log-prob pass: ours does not run one either with one epoch and one
  mini-batch), ``loss_type="dapo"`` with ours on ``loss_agg="token-mean"`` (the same aggregation),
  no dual clip on either side (TRL's ``delta=None``), the same clip range, learning rate, gradient
  clip, torch's AdamW (``optim="adamw_torch"``; TRL's default with torch >= 2.8 is the fused one),
  constant schedule, temperature 1 without top-k / top-p, and the same max completion length
  and rollouts per prompt. The settings are read back from the live trainers and printed, a line each.
- **The knapsack arm really allocates.** Before timing, the starting policy samples n rollouts of
  every training prompt once (one epoch's worth of rewards, no update); that tracker is saved and the
  knapsack arm starts from it with ``uniform_epochs=0``. Every timed knapsack step is checked to have
  planned from estimates with unequal budgets (the script stops otherwise).
- **Interleaved.** Runs go through one process pool, one fresh process per run (so peak RSS is the
  run's own), in rounds: every round runs each system once, in a rotating order, so load drift on a
  shared machine hits all systems alike. Ratios are medians of the per-round ratios. A last run steps
  both arms alternately in one process (``--paired-steps``): the median of per-step ratios, the
  least noisy measure of knapsack/uniform.
- **CPU time and wall.** Each step is timed by the process's CPU time (``time.process_time``, less
  sensitive to other processes on a shared machine) and by the wall clock; both are reported.
- **Pinned threads.** Each run sets OMP / MKL / OpenBLAS threads and ``torch.set_num_threads`` to
  ``--threads`` before importing torch; the table states the count torch reports.

    python benchmarks/bench_trainer.py [--rounds 3] [--steps 8] [--warmup 2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars (pool processes inherit it)

OURS = ("ours-uniform", "ours-knapsack")
TRL = "trl-grpo"
LABELS = {
    "ours-uniform": "knapsack-rl, uniform arm",
    "ours-knapsack": "knapsack-rl, knapsack arm",
    TRL: "TRL GRPOTrainer (use_cpu)",
}


def _pin_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _train_config(args: dict[str, Any], out_dir: str, arm: str) -> Any:
    from knapsack_rl.train.config import TrainConfig

    cfg = TrainConfig(
        out_dir=out_dir, prompts_per_step=args["prompts"], seed=args["seed"], max_new_tokens=args["max_new_tokens"],
        eval_every=0, checkpoint_every=0, tensorboard=False, progress=False, device="cpu", resume=False,
        threads=args["threads"], warmstart_dir=args["warmstart_dir"], loss_agg="token-mean", dual_clip=None,
    )  # fmt: skip
    cfg = cfg.replace(n=args["n"], rule=arm)
    if arm == "knapsack":
        cfg = cfg.replace(uniform_epochs=0, tracker_init=args["tracker"])
    return cfg


def _fill_tracker(args: dict[str, Any]) -> dict[str, Any]:
    """One epoch of the starting policy's rewards (n per prompt, no update) saved as a tracker file."""
    _pin_threads(args["threads"])
    import numpy as np

    from knapsack_rl.train.trainer import StepBatch, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(_train_config(args, tmp, "uniform"))  # same tracker settings as the knapsack arm
        for start in range(0, len(trainer.train_set), args["prompts"]):
            index = np.arange(start, min(start + args["prompts"], len(trainer.train_set)))
            batch = StepBatch(index=index, prompts=trainer.train_set.subset(index))
            rollouts = trainer.generate(batch, np.full(len(index), args["n"]))
            rewards = trainer.score(batch, rollouts)
            trainer.planner.observe(batch.prompts.ids[rollouts.prompt_index.numpy()], rewards, epoch=0, step=0)
        trainer.planner.tracker.save(args["tracker"])
        return {"prompts": len(trainer.planner.tracker)}


def _ours(args: dict[str, Any]) -> dict[str, Any]:
    _pin_threads(args["threads"])
    import torch

    from knapsack_rl.train.trainer import Trainer

    arm = args["system"].removeprefix("ours-")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(_train_config(args, tmp, arm))
        times, cpu, tokens, phases, allocated = [], [], [], {"generate": [], "update": []}, []
        for i in range(args["warmup"] + args["steps"]):
            start, start_cpu = time.perf_counter(), time.process_time()
            metrics = trainer.step()
            if i >= args["warmup"]:
                cpu.append(time.process_time() - start_cpu)
                times.append(time.perf_counter() - start)
                tokens.append(metrics["rollout/response_len_mean"])
                for phase in phases:
                    phases[phase].append(metrics[f"timing_s/{phase}"])
                allocated.append(metrics["alloc/budget_max"] > metrics["alloc/budget_min"])
        if arm == "knapsack" and not all(allocated):
            raise RuntimeError(f"knapsack arm did not allocate in every timed step: {allocated}")
        settings = _ours_settings(trainer)
    return {
        "step_s": statistics.median(times),
        "step_cpu_s": statistics.median(cpu),
        "response_tokens_mean": statistics.median(tokens),
        "settings": settings,
        **{f"{p}_s": statistics.median(v) for p, v in phases.items()},
        "allocated_steps": sum(allocated),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _ours_settings(trainer: Any) -> dict[str, str]:
    """The settings that decide a step's cost, read from the live trainer (compared with TRL's in the printout)."""
    c = trainer.config
    return {
        "precision": f"{next(trainer.model.parameters()).dtype} weights, no autocast",
        "gradient checkpointing": "no (not implemented)",
        "KL reference model": "none (no KL term)",
        "optimizer steps per step": f"{c.ppo_epochs * c.ppo_mini_batches} (ppo_epochs={c.ppo_epochs}, "
        f"ppo_mini_batches={c.ppo_mini_batches})",
        "old log-prob pass": "no (one epoch, one mini-batch: the sampling policy is the current one)",
        "loss aggregation": f"loss_agg={c.loss_agg!r}",
        "clip": f"[1 - {c.clip_low}, 1 + {c.clip_high}], dual_clip={c.dual_clip}",
        "optimizer": f"torch.optim.AdamW lr={c.lr} weight_decay={c.weight_decay}, constant",
        "grad clip": f"{c.grad_clip}",
        "sampling": f"temperature={c.temperature}, no top-k / top-p",
        "max completion tokens": f"{c.max_new_tokens}",
        "rollouts per step": f"{c.prompts_per_step} prompts x {c.n}",
        "advantage": f"(r - group mean) / (group std + {c.advantage_eps})",
    }


def _name(option: Any) -> str:
    """An option of TrainingArguments as written in a config (its enum value)."""
    return str(getattr(option, "value", option))


def _trl_settings(trainer: Any, model: Any) -> dict[str, str]:
    """TRL's counterparts of :func:`_ours_settings`, read from the live GRPOTrainer and its args."""
    a = trainer.args
    old_pass = a.gradient_accumulation_steps % (a.steps_per_generation * a.num_iterations) != 0  # TRL's own test
    return {
        "precision": f"{next(model.parameters()).dtype} weights, bf16={a.bf16} fp16={a.fp16}",
        "gradient checkpointing": f"gradient_checkpointing={a.gradient_checkpointing} "
        f"(model: {getattr(model, 'is_gradient_checkpointing', False)})",
        "KL reference model": f"beta={a.beta}: {'none' if trainer.ref_model is None else 'loaded'}",
        "optimizer steps per step": f"1 (num_iterations={a.num_iterations}, steps_per_generation="
        f"{a.steps_per_generation}, gradient_accumulation_steps={a.gradient_accumulation_steps})",
        "old log-prob pass": "yes" if old_pass else "no",
        "loss aggregation": f"loss_type={a.loss_type!r} (token mean over the batch)",
        "clip": f"[1 - {a.epsilon}, 1 + {a.epsilon_high}], delta={a.delta}",
        "optimizer": f"{_name(a.optim)} lr={a.learning_rate} weight_decay={a.weight_decay}, "
        f"{_name(a.lr_scheduler_type)}",
        "grad clip": f"{a.max_grad_norm}",
        "sampling": f"temperature={a.temperature}, top_k={a.top_k}, top_p={a.top_p}",
        "max completion tokens": f"{a.max_completion_length}",
        "rollouts per step": f"{a.per_device_train_batch_size // a.num_generations} prompts x {a.num_generations}",
        "advantage": f"scale_rewards={a.scale_rewards!r}",
    }


def _paired(args: dict[str, Any]) -> dict[str, Any]:
    """Both arms in one process, stepped alternately (who goes first alternates): per-step paired ratios."""
    _pin_threads(args["threads"])
    from knapsack_rl.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        arms = {arm: Trainer(_train_config(args, f"{tmp}/{arm}", arm)) for arm in ("uniform", "knapsack")}
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for i in range(args["warmup"] + args["paired_steps"]):
            for arm in ("uniform", "knapsack") if i % 2 else ("knapsack", "uniform"):
                metrics = arms[arm].step()
                if i >= args["warmup"]:
                    times[arm].append(metrics["perf/step_s"])
                if arm == "knapsack" and not metrics["alloc/budget_max"] > metrics["alloc/budget_min"]:
                    raise RuntimeError(f"knapsack arm did not allocate in paired step {i}")
    ratios = [k / u for k, u in zip(times["knapsack"], times["uniform"], strict=True)]
    return {
        "knapsack/uniform": statistics.median(ratios),
        **{f"{arm}_step_s": statistics.median(t) for arm, t in times.items()},
    }


def _trl(args: dict[str, Any]) -> dict[str, Any]:
    _pin_threads(args["threads"])
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notes, per step
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from knapsack_rl.train.trainer import load_task_and_policy

    torch.set_num_threads(args["threads"])
    with tempfile.TemporaryDirectory() as tmp:  # the very task, policy and tokenizer our arms train
        task, model, tok = load_task_and_policy(_train_config(args, tmp, "uniform"), torch.device("cpu"))
    train = task.train
    data = Dataset.from_dict({"prompt": [tok.bos_token + p for p in train.prompts], "answer": train.answers})

    def exact(prompts: list[str], completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [float(c.strip() == a) for c, a in zip(completions, answer, strict=True)]

    times: list[float] = []
    cpu: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.start, self.start_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            cpu.append(time.process_time() - self.start_cpu)
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(
            output_dir=tmp, use_cpu=True, per_device_train_batch_size=args["prompts"] * args["n"],
            num_generations=args["n"], steps_per_generation=1, gradient_accumulation_steps=1,
            max_completion_length=args["max_new_tokens"], temperature=1.0, learning_rate=2e-4, beta=0.0,
            epsilon=0.2, epsilon_high=0.28, delta=None, loss_type="dapo", lr_scheduler_type="constant",
            max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch", bf16=False, fp16=False,
            gradient_checkpointing=False, num_iterations=1, scale_rewards="group", top_k=0, top_p=1.0, warmup_steps=0,
            max_steps=args["warmup"] + args["steps"],
            logging_steps=1, report_to="none", save_strategy="no", seed=args["seed"], dataloader_num_workers=0,
            disable_tqdm=True,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=model, reward_funcs=exact, args=cfg, train_dataset=data, processing_class=tok, callbacks=[Timer()]
        )
        trainer.remove_callback(PrinterCallback)  # its per-step log lines; the metrics are still computed
        trainer.train()
        settings = _trl_settings(trainer, trainer.model)
    w = args["warmup"]
    tokens = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {
        "step_s": statistics.median(times[w:]),
        "step_cpu_s": statistics.median(cpu[w:]),
        "response_tokens_mean": statistics.median(tokens[w:]),
        "settings": settings,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _job(args: dict[str, Any]) -> dict[str, Any]:
    """One run in a fresh pool process (maxtasksperchild=1)."""
    target = _trl if args["system"] == TRL else _ours
    out = target(args)
    return {**out, "system": args["system"], "round": args["round"]}


def _summary(runs: list[dict[str, Any]], systems: list[str], batch: int) -> dict[str, Any]:
    """Medians per system and medians of the per-round ratios."""
    by = {s: [r for r in runs if r["system"] == s] for s in systems}
    table = {
        s: {
            "step_s": statistics.median(r["step_s"] for r in rs),
            "step_cpu_s": statistics.median(r["step_cpu_s"] for r in rs),
            "rollouts_per_s": batch / statistics.median(r["step_s"] for r in rs),
            "response_tokens_mean": statistics.median(r["response_tokens_mean"] for r in rs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            "step_s_runs": [r["step_s"] for r in rs],
            "step_cpu_s_runs": [r["step_cpu_s"] for r in rs],
            **{k: statistics.median(r[k] for r in rs) for k in ("generate_s", "update_s") if k in rs[0]},
        }
        for s, rs in by.items()
    }
    rounds = sorted({r["round"] for r in runs})
    step = {(r["system"], r["round"], key): r[key] for r in runs for key in ("step_s", "step_cpu_s")}

    def ratio(a: str, b: str, key: str) -> float:
        return statistics.median(step[a, k, key] / step[b, k, key] for k in rounds)

    pairs = [("knapsack/uniform", "ours-knapsack", "ours-uniform")]
    if TRL in systems:
        pairs += [("trl/ours-uniform", TRL, "ours-uniform"), ("trl/ours-knapsack", TRL, "ours-knapsack")]
    ratios = {name: ratio(a, b, "step_s") for name, a, b in pairs}
    cpu_ratios = {name: ratio(a, b, "step_cpu_s") for name, a, b in pairs}
    return {"systems": table, "ratios": ratios, "cpu_ratios": cpu_ratios}


def _print(result: dict[str, Any], systems: list[str]) -> None:
    c = result["config"]
    threads = sorted({r["torch_threads"] for r in result["runs"]})
    print(f"M={c['prompts']} prompts x n={c['n']}, max_new_tokens={c['max_new_tokens']}; {c['rounds']} interleaved "
          f"rounds x {c['steps']} timed steps (+{c['warmup']} warm-up); BLAS/torch threads {c['threads']} (torch "
          f"reports {threads}); load {result['load_before']} -> {result['load_after']}")  # fmt: skip
    _print_settings(result["settings"])
    print(f"{'system':<28} {'cpu s':>7} {'wall s':>7} {'generate s':>11} {'update s':>9} {'rollouts/s':>11} "
          f"{'tokens/resp':>12} {'peak RSS MB':>12}")  # fmt: skip
    for s in systems:
        r = result["systems"][s]
        gen, upd = r.get("generate_s"), r.get("update_s")
        print(
            f"{LABELS[s]:<28} {r['step_cpu_s']:>7.3f} {r['step_s']:>7.3f} {'' if gen is None else f'{gen:.3f}':>11} "
            f"{'' if upd is None else f'{upd:.3f}':>9} {r['rollouts_per_s']:>11.0f} "
            f"{r['response_tokens_mean']:>12.2f} {r['peak_rss_mb']:>12.0f}"
        )
    print("(step medians over runs of per-run medians; cpu: process CPU time per step; wall: wall clock per step;"
          " generate / update: wall; rollouts/s: on wall)")  # fmt: skip
    for key, what in (("cpu_ratios", "CPU time"), ("ratios", "wall")):
        print(f"ratios, {what} (medians of per-round ratios): "
              + ", ".join(f"{k} {v:.2f}" for k, v in result[key].items()))  # fmt: skip
    paired = result["paired_steps"]
    if paired["steps"]:
        print(f"paired steps in one process ({paired['steps']} per arm, alternating): knapsack/uniform "
              f"{paired['knapsack/uniform']:.2f} (uniform {paired['uniform_step_s']:.3f} s, knapsack "
              f"{paired['knapsack_step_s']:.3f} s)")  # fmt: skip


def _print_settings(settings: dict[str, dict[str, str]]) -> None:
    """One line per setting that decides a step's cost: ours, then TRL's (read from the live trainers)."""
    if not settings:
        return
    print("matched settings (ours | TRL):")
    ours, trl = settings["ours"], settings.get("trl", {})
    for key, value in ours.items():
        print(f"  {key}: {value}" + (f" | {trl[key]}" if key in trl else ""))


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _settings_of(runs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The settings each side reported (the same in every run of a system: checked)."""
    out: dict[str, dict[str, str]] = {}
    for r in runs:
        side = "trl" if r["system"] == TRL else "ours"
        if out.setdefault(side, r["settings"]) != r["settings"]:
            raise RuntimeError(f"{r['system']} reported different settings in round {r['round']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts per step (M; the demo's 64)")
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt (the step's budget is M x n)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per system (one per round)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads of every run")
    parser.add_argument("--warmstart-dir", default="runs/warmstart")
    parser.add_argument("--paired-steps", type=int, default=20, help="also step both arms alternately in one "
                        "process for this many steps each and report the median paired ratio (0: skip)")  # fmt: skip
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the runs and summary here")
    a = parser.parse_args()
    base = {
        "prompts": a.prompts, "n": a.n, "max_new_tokens": a.max_new_tokens, "steps": a.steps, "warmup": a.warmup,
        "threads": a.threads, "warmstart_dir": a.warmstart_dir,
    }  # fmt: skip
    systems = [*OURS] if a.skip_trl else [*OURS, TRL]
    ctx = mp.get_context("spawn")
    load_before = _load()
    pool = ctx.Pool(processes=1, maxtasksperchild=1)  # one run at a time, each in a fresh process
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base["tracker"] = str(Path(tmp) / "epoch0.tracker")
            filled = pool.apply(_fill_tracker, ({**base, "seed": 0},))  # also builds the warm start, untimed
            jobs = []
            for k in range(a.rounds):
                order = systems[k % len(systems) :] + systems[: k % len(systems)]  # rotate who goes first
                jobs += [{**base, "system": s, "round": k, "seed": k} for s in order]
            runs = pool.map(_job, jobs, chunksize=1)
            paired = (
                pool.apply(_paired, ({**base, "seed": 0, "paired_steps": a.paired_steps},)) if a.paired_steps else {}
            )
    finally:
        pool.close()
        pool.join()
    result = {
        "config": {**{k: v for k, v in base.items() if k != "tracker"}, "rounds": a.rounds},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            **{pkg: metadata.version(pkg) for pkg in ("torch", "transformers", "trl")},
        },
        "load_before": load_before,
        "load_after": _load(),
        "tracker_prompts": filled["prompts"],
        "settings": _settings_of(runs),
        "runs": [{k: v for k, v in r.items() if k != "settings"} for r in runs],
        **_summary(runs, systems, a.prompts * a.n),
        "paired_steps": {"steps": a.paired_steps, **paired},
    }
    _print(result, systems)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
