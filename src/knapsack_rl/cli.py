"""The ``knapsack-rl`` command.

Subcommands live with the code they drive; each module named in ``_COMMAND_MODULES`` exposes
``register(subparsers)`` and keeps its heavy imports (torch, transformers) inside the handlers, so
``knapsack-rl allocate`` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, cast

import numpy as np

from knapsack_rl.cli_args import add_flags, given
from knapsack_rl.core.allocate import allocate
from knapsack_rl.core.config import AllocationConfig, KnapsackConfig, preset_names
from knapsack_rl.core.validate import check_int
from knapsack_rl.statsfile import check_output_path, read_stats, write_budgets

_COMMAND_MODULES = ("knapsack_rl.train.cli", "knapsack_rl.sim.cli", "knapsack_rl.report.cli")


def _add_allocate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "allocate",
        help="per-prompt rollout budgets from a stats file",
        description="Read per-prompt stats (JSONL, CSV or parquet: id plus p_hat, or id plus successes "
        "and count), write budgets (JSON or CSV) and print a summary. Settings are allocate()'s "
        "(AllocationConfig); --preset starts from a named preset's.",
    )
    p.add_argument("stats", type=Path, help="stats file (.jsonl, .csv or .parquet)")
    p.add_argument("--out", type=Path, default=None, help="write budgets here (.json or .csv; in an existing folder)")
    p.add_argument("--preset", choices=preset_names(), default=None, help="start from a preset's allocation settings")
    p.add_argument("--total-budget", type=int, default=None, help="rollouts for the step (default n x prompts)")
    p.add_argument(
        "--min-count", type=int, default=1, help="rows with count below this (>= 0) have no estimate (default: 1)"
    )
    names = add_flags(p.add_argument_group("allocation settings (AllocationConfig)"), AllocationConfig)
    p.set_defaults(func=_run_allocate, flag_names=names)


def _run_allocate(args: argparse.Namespace) -> int:
    check_int("--min-count", args.min_count, low=0)
    base = KnapsackConfig.preset(args.preset).allocation if args.preset else AllocationConfig()
    config = dataclasses.replace(base, **given(args, args.flag_names))
    if args.out is not None:
        if not args.out.parent.is_dir():  # no surprise folders: the folder of --out must exist
            raise ValueError(f"--out {args.out}: {args.out.parent} is not an existing folder; create it first")
        check_output_path(args.out)  # before any work: a bad --out is a one-line error, not a traceback
    ids, p_hat = read_stats(args.stats, min_count=args.min_count)
    result = allocate(p_hat, config, total_budget=args.total_budget)
    if args.out is not None:
        write_budgets(args.out, ids, p_hat, result.budgets, result.buckets)
    print(_summary(result, config.n))
    if args.out is not None:
        print(f"wrote {len(ids)} budgets to {args.out}")
    return 0


def _summary(result: object, n: int) -> str:
    from knapsack_rl.core.allocate import Allocation

    assert isinstance(result, Allocation)
    b = result.budgets
    counts = result.bucket_counts()
    fallback = "did not fire"
    if result.fallback_fired:
        fallback = f"fired, moved {result.fallback_surplus:g} to the zero pool"
    lines = [
        f"prompts {b.size}  total {int(b.sum())} (budget {result.total_budget:g})  "
        f"min {b.min()}  mean {b.mean():.2f}  max {b.max()}  above n={n}: {(b > n).sum()}",
        "buckets  " + "  ".join(f"{k} {v}" for k, v in counts.items()),
        f"fallback {fallback}  overflow {result.overflow:g}  objective {result.objective:.6g}  "
        f"solve {result.solve_time_s * 1e3:.2f} ms",
        "budget histogram:",
    ]
    edges = [0, 1, 2, 3, 5, 9, 17, 33, 65, 129, max(int(b.max()) + 1, 130)]
    hist, _ = np.histogram(b, bins=edges)
    width = max(hist.max(), 1)
    for lo, hi, c in zip(edges[:-1], edges[1:], hist, strict=True):
        if c:
            label = f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}"
            lines.append(f"  {label:>9} | {'#' * max(1, round(40 * c / width)) if c else ''} {c}")
    return "\n".join(lines)


def _add_rules(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "every allocation rule by the name every engine and command uses, what it needs, and where it runs"
    p = sub.add_parser("rules", help=text, description=text.capitalize() + ".")
    p.set_defaults(func=_run_rules)


def _run_rules(args: argparse.Namespace) -> int:
    from knapsack_rl.rules import ENGINES, RuleSetup, engines_for, make_rule, rule_names
    from knapsack_rl.rules.engines import NEEDS_TEXT

    rows = [("rule", "needs of an engine", "runs in")]
    for name in rule_names():
        rule = make_rule(name, RuleSetup())
        needs = [key for key in NEEDS_TEXT if getattr(rule.needs(), key)]
        rows.append((name, ", ".join(needs) or "-", ", ".join(engines_for(rule))))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
    print(f"\nengines: {', '.join(ENGINES.names())}; needs: " + "; ".join(f"{k}: {v}" for k, v in NEEDS_TEXT.items()))
    print("a knapsack rule's needs follow its settings (e.g. negative_n=1 gives single rollouts, which verl refuses)")
    return 0


class Parser(argparse.ArgumentParser):
    """The parser of ``knapsack-rl`` and of each subcommand (subparsers are of the same class): a usage error
    is the error line and a short usage with a pointer to ``--help``, not the usage of every flag."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and a short usage on stderr; exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n{self.short_usage()}; '{self.prog} --help' lists the options\n")

    def short_usage(self) -> str:
        """``usage: <prog> [options] <positionals>`` (a subcommand's place lists the subcommands)."""
        words = []
        for action in self._get_positional_actions():
            if isinstance(action, argparse._SubParsersAction):
                words.append("{" + ",".join(action.choices) + "} ...")
            else:
                words.append(str(action.metavar or action.dest))
        return " ".join(["usage:", self.prog, "[options]", *words])


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered subcommand."""
    parser = Parser(prog="knapsack-rl", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # subparsers are Parsers too (short usage errors); the commands' register() take any ArgumentParser's
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]", parser.add_subparsers(dest="command", required=True)
    )
    _add_allocate(sub)
    _add_rules(sub)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue  # that part of the package is not present in this build
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``knapsack-rl``.

    Bad input (a ``ValueError``) and a failed file operation (an ``OSError``: a full disk, a read-only
    folder) end every subcommand with one line, ``knapsack-rl: error: ...``, on stderr and exit
    status 2; ``-v`` also logs the traceback. Ctrl-C ends it with one line, ``knapsack-rl <command>:
    interrupted[: what was saved and how to resume]``, and exit status 130 (``train``, ``compare`` and
    ``demo`` first stop their runs at a checkpoint; a second Ctrl-C stops at once).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        logging.getLogger(__name__).debug("%s failed", args.command, exc_info=True)
        print(f"knapsack-rl: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        logging.getLogger(__name__).debug("%s interrupted", args.command, exc_info=True)
        detail = f": {error_line(exc)}" if str(exc) else ""
        print(f"knapsack-rl {args.command}: interrupted{detail}", file=sys.stderr)
        return 130


def error_line(exc: BaseException) -> str:
    """``exc`` as one line: an ``OSError`` as ``file: reason``, line breaks of a message joined by spaces."""
    if isinstance(exc, OSError) and exc.filename is not None:
        files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        text = f"{files}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    raise SystemExit(main())
