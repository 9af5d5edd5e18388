"""``knapsack-rl train``, ``compare`` and ``demo`` (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_HELP = (
    "uniform vs knapsack allocation on the embedded arithmetic suite, from the same warm start, seeds and total "
    "rollouts; prints a side-by-side table and writes plots under runs/"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train``, ``compare`` and ``demo`` subcommands."""
    p = sub.add_parser("train", help="train one arm from a YAML / JSON config", description="Train one arm.")
    p.add_argument("--config", type=Path, default=None, help="YAML or JSON TrainConfig (default: all defaults)")
    p.add_argument("--arm", choices=["uniform", "knapsack"], default=None, help="override the config's arm")
    p.add_argument("--out-dir", default=None, help="override the config's out_dir")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--max-steps", type=int, default=None, help="override the config's max_steps")
    p.set_defaults(func=_run_train)
    for name, help_text in (("compare", "both arms, same warm start and budget"), ("demo", DEMO_HELP)):
        q = sub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("--config", type=Path, default=None, help="base TrainConfig (YAML / JSON); arm is ignored")
        q.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (one run per arm and seed)")
        q.add_argument("--out-dir", type=Path, default=Path("runs/demo" if name == "demo" else "runs/compare"))
        q.add_argument("--quick", action="store_true", help="seconds-long smoke version (for tests)")
        q.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        q.add_argument("--no-progress", action="store_true", help="hide progress bars")
        q.set_defaults(func=_run_compare)


def _run_train(args: argparse.Namespace) -> int:
    from knapsack_rl.train.config import TrainConfig, load_config
    from knapsack_rl.train.trainer import Trainer

    cfg = load_config(args.config) if args.config else TrainConfig()
    overrides = {"arm": args.arm, "out_dir": args.out_dir, "seed": args.seed, "max_steps": args.max_steps}
    cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    start = time.perf_counter()
    trainer = Trainer(cfg)
    last = trainer.train()
    wall = time.perf_counter() - start
    print(f"trained {trainer.global_step} steps ({trainer.rollouts_total} rollouts) in {wall:.0f} s")
    for key in sorted(k for k in last if k.startswith(("train/effective", "eval/mean@"))):
        print(f"  {key} = {last[key]:.4f}")
    print(f"logs: {cfg.out_dir}/metrics.jsonl  config: {cfg.out_dir}/config.json")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    import json

    from knapsack_rl.train.compare import comparison_table, quick_config, run_compare
    from knapsack_rl.train.config import TrainConfig, load_config

    base = load_config(args.config) if args.config else TrainConfig()
    if args.quick:
        base = quick_config(base)
    changes: dict[str, object] = {"resume": False}
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.no_progress:
        changes["progress"] = False
    base = base.replace(**changes)
    start = time.perf_counter()
    result = run_compare(base, args.out_dir, list(args.seeds))
    wall = time.perf_counter() - start
    ws = _warmstart_profile(base)
    if ws is not None:
        print(
            f"warm start: {100 * ws['below_0.1']:.0f}% of training prompts below p=0.1, {100 * ws['above_0.9']:.0f}% "
            f"above 0.9, {100 * ws['between']:.0f}% in between ({ws['samples']} samples per prompt)"
        )
    levels = list(dict.fromkeys(base.task.levels)) if base.data is None else []
    print(f"\n{len(args.seeds)} seed(s) {args.seeds}; {base.prompts_per_step} prompts x n={base.n} per step\n")
    print(comparison_table(result, base.eval_k, levels))
    print(f"\ntotal wall time {wall:.0f} s; plots: " + ", ".join(str(p) for p in result.plots))
    (args.out_dir / "table.txt").write_text(comparison_table(result, base.eval_k, levels) + "\n")
    (args.out_dir / "wall_s.json").write_text(json.dumps({"wall_s": wall}))
    return 0


def _warmstart_profile(cfg: object) -> dict[str, float] | None:
    import json

    from knapsack_rl.models.warmstart import cache_key
    from knapsack_rl.train.config import TrainConfig

    assert isinstance(cfg, TrainConfig)
    if cfg.model is not None:
        return None
    path = Path(cfg.warmstart_dir) / cache_key(cfg.warmstart, cfg.tiny_model, cfg.task) / "warmstart.json"
    return json.loads(path.read_text())["profile"] if path.exists() else None
