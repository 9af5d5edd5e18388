"""``knapsack-rl train``, ``compare`` and ``demo``: flags generated from TrainConfig and KnapsackConfig.

Settings are applied in this order: the dataclass defaults, ``--config FILE``, ``--preset NAME`` (the
knapsack settings become that preset), then every flag given (``--max-n 64``, ``--lr 1e-4``,
``--no-progress``), then ``--set key.path=value`` for nested settings (``--set task.arithmetic.eval_per_level=32``).
Heavy imports (torch, transformers) stay inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from knapsack_rl.cli_args import add_flags, given, parse_assignment, parse_seeds, set_path
from knapsack_rl.core.validate import check_int
from knapsack_rl.io import atomic_write_text

SET_EXAMPLE = "task.arithmetic.eval_per_level=32"
"""The ``--set`` example of every ``--help`` (a test checks that it parses and sets what it names)."""
DEMO_HELP = (
    "uniform vs knapsack allocation on the embedded task, several paired seeds from the same warm start, "
    "data order and total rollouts; prints paired differences with 95% CIs and a verdict, and writes plots"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train``, ``compare`` and ``demo`` subcommands."""
    text = (
        "Train one run (one arm) in --out-dir. Ctrl-C stops it after the step in flight, with a checkpoint; the "
        "same command again resumes it (resume: true, the default)."
    )
    p = sub.add_parser("train", help="train one arm", description=text)
    _add_settings(p)
    p.set_defaults(func=_run_train)
    for name, help_text in (("compare", "several arms over paired seeds"), ("demo", DEMO_HELP)):
        where = (
            f". Results go to --out-dir (default runs/{name}, runs/{name}-quick with --quick); a folder holding the "
            "results of other settings is refused. Run again, the same command reuses the finished runs and "
            "resumes the others; Ctrl-C stops the runs in flight at a checkpoint."
        )
        q = sub.add_parser(
            name, help=help_text.replace("%", "%%"), description=help_text[0].upper() + help_text[1:] + where
        )
        _add_settings(q)
        seeds = "0..4" if name == "demo" else "0 1 2"
        q.add_argument("--seeds", default=seeds, help=f"seeds, e.g. '0 1 2' or '0..9' (default: {seeds!r})")
        q.add_argument(
            "--arms", default="uniform,knapsack",
            help="arms: rule names (knapsack-rl rules), e.g. uniform,knapsack,knapsack:recipe,coba; a knapsack arm "
            "may add settings: knapsack:project+posterior=false (default: uniform,knapsack)",
        )  # fmt: skip
        q.add_argument("--jobs", type=int, default=2, help="runs trained in parallel processes (default: 2)")
        quick = f"seconds-long smoke run (tiny task), under runs/{name}-quick unless --out-dir: not a result"
        q.add_argument("--quick", action="store_true", help=quick)
        q.set_defaults(func=_run_compare, command_name=name)
    preflight_help = (
        "Sample the starting model on the training prompts and predict, for uniform and each knapsack arm, "
        "the prompts with signal per step (true p and realistic estimates)."
    )
    r = sub.add_parser(
        "preflight", help="predict prompts with signal per step before training", description=preflight_help
    )
    _add_settings(r)
    r.add_argument("--samples", type=int, default=None, help="samples per prompt (default: 32)")
    r.add_argument(
        "--arms", default="uniform,knapsack,knapsack:recipe",
        help="arms to predict (default: uniform,knapsack,knapsack:recipe)",
    )  # fmt: skip
    r.add_argument("--json", type=Path, default=None, help="also write the predictions here")
    r.add_argument(
        "--checkpoint", type=Path, default=None,
        help="sample the policy of this trainer checkpoint (same model and task) instead of the starting model: "
        "that of a uniform run stopped after its uniform epochs predicts the first allocating epoch",
    )  # fmt: skip
    r.add_argument(
        "--state", type=Path, default=None,
        help="predict from this engine state instead, with no model and no sampling: TRL's knapsack_rule.bin (or "
        "its checkpoint folder), verl's global_step_<k>/knapsack/state.bin (or that folder), or a trainer "
        "checkpoint; its tracker's rewards stand in for the samples (arms: uniform, knapsack, knapsack:<preset>)",
    )  # fmt: skip
    r.set_defaults(func=_run_preflight)


def _add_settings(p: argparse.ArgumentParser) -> None:
    from knapsack_rl.core.config import AllocationConfig, KnapsackConfig, preset_names
    from knapsack_rl.core.tracker import TrackerConfig
    from knapsack_rl.train.config import TrainConfig

    p.add_argument("--config", type=Path, default=None, help="YAML or JSON TrainConfig file")
    p.add_argument("--preset", choices=preset_names(), default=None, help="knapsack settings preset")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help=f"nested setting, e.g. {SET_EXAMPLE} (repeatable)")  # fmt: skip
    defaults = TrainConfig()
    group = p.add_argument_group("run settings (TrainConfig)")
    names = add_flags(group, TrainConfig, defaults=defaults, skip=("knapsack",))
    method = p.add_argument_group("method settings (KnapsackConfig; default preset 'project')")
    names += add_flags(method, KnapsackConfig, defaults=defaults.knapsack)
    names += add_flags(method, AllocationConfig, defaults=defaults.knapsack.allocation)
    names += add_flags(method, TrackerConfig, defaults=defaults.knapsack.tracker)
    p.set_defaults(flag_names=names)


def quiet_third_party(progress: bool) -> None:
    """Without progress bars (``--no-progress``, or stderr not a terminal), third-party bars stay off too:
    Hugging Face reads this variable when it is first imported, here and in worker processes."""
    if not progress or not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def build_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of a command line (see the module docstring for the order)."""
    from knapsack_rl.core.config import KnapsackConfig
    from knapsack_rl.train.config import TrainConfig, load_config

    cfg = load_config(args.config) if args.config else TrainConfig()
    if args.preset:
        cfg = cfg.replace(knapsack=KnapsackConfig.preset(args.preset))
    cfg = cfg.replace(**given(args, args.flag_names))
    if args.assignments:
        cfg = _apply_sets(cfg, args.assignments)
    quiet_third_party(cfg.progress)
    return cfg


def _apply_sets(cfg: Any, assignments: list[str]) -> Any:
    """``cfg`` with the ``--set`` items applied. When they change the task, every warm-start setting they do not
    set and that is the old task's default becomes the new task's (:func:`~knapsack_rl.train.config.default_warmstart`):
    the demo's level weights never follow ``--set task.source=file``."""
    from knapsack_rl.core.config import to_plain
    from knapsack_rl.train.config import config_from_dict, default_warmstart

    values = cfg.to_dict()
    touched = set()
    for text in assignments:
        path, value = parse_assignment(text)
        set_path(values, path, value, text=text)
        touched.add(".".join(path[:2]))  # "warmstart" (the whole section), "warmstart.steps", "task.source", ...
    out = config_from_dict(values)
    if out.task == cfg.task or "warmstart" in touched:
        return out
    old, new = to_plain(default_warmstart(cfg.task)), to_plain(default_warmstart(out.task))
    warm = values["warmstart"]
    for key in warm:
        if f"warmstart.{key}" not in touched and warm[key] == old[key]:
            warm[key] = new[key]
    return config_from_dict(values)


def _run_train(args: argparse.Namespace) -> int:
    from knapsack_rl.progress import stop_on_sigint
    from knapsack_rl.train.trainer import Trainer

    cfg = build_config(args)
    start = time.perf_counter()
    trainer = Trainer(cfg)
    first = trainer.global_step
    with stop_on_sigint() as stopping:  # Ctrl-C: stop after the step in flight, with a checkpoint
        last = trainer.train(stop=stopping)
    if not trainer.finished:
        raise KeyboardInterrupt(_stopped_line(trainer.global_step, trainer.total_steps, cfg))
    wall = time.perf_counter() - start
    print(f"trained steps {first + 1}..{trainer.global_step} of {trainer.total_steps} "
          f"({trainer.rollouts_total} rollouts in all) in {wall:.0f} s")  # fmt: skip
    if trainer.global_step == first:
        print("nothing to train: the checkpoint in out_dir is already at the last step")
    for key in sorted(k for k in last if k.startswith(("train/effective", "eval/mean@"))):
        print(f"  {key} = {last[key]:.4f}")
    print(f"logs: {cfg.out_dir}/metrics.jsonl  config: {cfg.out_dir}/config.json")
    return 0


def _stopped_line(step: int, total: int, cfg: Any) -> str:
    """What a train stopped by Ctrl-C left, and how to go on."""
    checkpoint = Path(cfg.out_dir) / "checkpoint.pt"
    if not checkpoint.is_file():
        return f"stopped before its first step; nothing was saved in {cfg.out_dir}"
    how = "run the same command again" if cfg.resume else "run it again without --no-resume (resume: false)"
    return f"stopped after step {step} of {total}, checkpoint {checkpoint}; {how} to resume"


def compare_out_dir(args: argparse.Namespace) -> Path:
    """The folder of a ``compare`` or ``demo`` command line: ``--out-dir``, else ``runs/<command>``, or
    ``runs/<command>-quick`` with ``--quick`` (a smoke run never replaces a real run's results)."""
    return Path(args.out_dir or f"runs/{args.command_name}{'-quick' if args.quick else ''}")


def _run_compare(args: argparse.Namespace) -> int:
    from knapsack_rl.report.summary import comparison_table, verdict
    from knapsack_rl.train.compare import quick_config, run_compare

    seeds = parse_seeds(args.seeds)  # before any work
    check_int("--jobs", args.jobs, low=1)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    out_dir = compare_out_dir(args)
    base = build_config(args).replace(out_dir=str(out_dir))
    if args.quick:
        base = quick_config(base)
        print("SMOKE RUN (--quick): a tiny task for a few steps; its numbers are not a result\n")
    print(f"{len(arms)} arms x {len(seeds)} seeds, {args.jobs} at a time; logs under {out_dir}/", flush=True)
    result = run_compare(base, out_dir, seeds, arms, jobs=args.jobs)
    levels = sorted(
        {k.removeprefix("final/") for s in result.summaries["uniform"] for k in s if k.startswith("final/")}
    )
    table = comparison_table(result.comparisons, levels)
    lines = [
        *([_profile_line(result.profile)] if result.profile else []),
        f"{len(seeds)} paired seed(s) {seeds}; {base.prompts_per_step} prompts x n={base.n} per step; "
        f"mean ± 95% CI over seeds; 'arm - uniform' is the paired difference",
        "",
        table,
        "",
        *(verdict(c) for c in result.comparisons if c.arm != "uniform"),
        "",
        f"trained {len(result.trained)} run(s), reused {len(result.reused)} finished run(s) of an earlier command; "
        f"total wall time {result.wall_s:.0f} s; plots: " + ", ".join(str(p) for p in result.plots),
    ]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(out_dir / "table.txt", text + "\n")
    return 0


def _run_preflight(args: argparse.Namespace) -> int:
    from knapsack_rl.train.preflight import run_preflight, run_state_preflight

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.state is not None:
        print(run_state_preflight(args, arms))
        return 0
    cfg = build_config(args)
    samples = 32 if args.samples is None else args.samples
    text, _ = run_preflight(cfg, arms, samples, args.json, checkpoint=args.checkpoint)
    print(text)
    return 0


def _profile_line(profile: dict[str, Any]) -> str:
    per_level = ", ".join(f"{k} {v:.2f}" for k, v in profile.get("per_level", {}).items())
    return (
        f"warm start: {100 * profile['below_0.1']:.0f}% of training prompts below p=0.1, "
        f"{100 * profile['above_0.9']:.0f}% above 0.9 ({profile['samples']} samples each); "
        f"mean p per level: {per_level}"
    )
