"""A training and a validation file for verl that need no download: reasoning-gym problems in verl's layout.

``python -m knapsack_rl.integrations.verl.data --out-dir ~/data/knapsack_gym`` writes

- ``train.parquet``: the ``train`` split of a reasoning-gym mix (:data:`DATASETS`), 1024 prompts by default;
- ``test.parquet``: its held-out ``eval`` split (disjoint from the training prompts by construction), 128;

each row as :func:`knapsack_rl.tasks.verl_data.write_verl` writes it (chat prompt, ``reward_model.ground_truth``,
``extra_info.index`` = the prompt's stable id, ``extra_info.extras`` = the reasoning-gym entry). Every prompt
ends with :data:`INSTRUCTION`, so the model's answer is the text inside its last ``<answer>...</answer>``.
verl scores the rows with :func:`knapsack_rl.tasks.gym.compute_score`, set by the overrides of
:data:`REWARD_OVERRIDES` (``examples/verl/run_small_1gpu.sh`` passes them): the data set's own
``score_answer``, 1.0 for a right answer, partial credit in [0, 1) for some near misses.

reasoning-gym generates the problems locally (``pip install 'knapsack-rl[gym,parquet]'``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from knapsack_rl.tasks.arithmetic import Split
from knapsack_rl.tasks.base import PromptSet
from knapsack_rl.tasks.gym import GymConfig, GymDataset, build_gym_split
from knapsack_rl.tasks.verl_data import write_verl

DATASETS = (
    GymDataset("chain_sum", {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 3}),
    GymDataset("basic_arithmetic", {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2}),
    GymDataset("gcd", {"min_numbers": 2, "max_numbers": 2, "min_value": 2, "max_value": 200}),
    GymDataset("count_bits", {"min_n": 1, "max_n": 4096}),
)
"""The default mix: short numeric answers of graded difficulty, scored exactly by reasoning-gym."""
INSTRUCTION = "\nGive only the final answer, inside <answer></answer>."
"""Appended to every question (``compute_score`` reads the text inside the last ``<answer>`` tag)."""
DATA_SOURCE = "knapsack_rl_gym"
"""The rows' ``data_source`` (verl's built-in scorers do not know it: the custom reward function scores them)."""
REWARD_OVERRIDES = (
    "reward.custom_reward_function.path=pkg://knapsack_rl.tasks.gym",
    "reward.custom_reward_function.name=compute_score",
)
"""The verl overrides that score these rows (verl's default reward has no scorer for :data:`DATA_SOURCE`)."""
TRAIN_FILE = "train.parquet"
VAL_FILE = "test.parquet"


def with_instruction(prompts: PromptSet) -> PromptSet:
    """The same prompts (ids, answers, extras unchanged), each followed by :data:`INSTRUCTION`."""
    return replace(prompts, prompts=[p + INSTRUCTION for p in prompts.prompts])


def write_gym_files(
    out_dir: str | Path, *, train_size: int = 1024, val_size: int = 128, seed: int = 0
) -> dict[str, Path]:
    """Write :data:`TRAIN_FILE` and :data:`VAL_FILE` into ``out_dir`` (atomically); returns them by split.

    The two splits are disjoint (reasoning-gym's split partition by prompt text), so the validation
    prompts are held out; the same arguments write the same files.
    """
    if train_size < 1 or val_size < 1:
        raise ValueError(f"train_size and val_size must be >= 1; got train_size={train_size}, val_size={val_size}")
    config = GymConfig(datasets=DATASETS, seed=seed, train_size=train_size, eval_size=val_size, warmstart_size=0)
    out = Path(out_dir).expanduser()
    files: tuple[tuple[Split, str], ...] = (("train", TRAIN_FILE), ("eval", VAL_FILE))
    return {
        split: write_verl(with_instruction(build_gym_split(config, split)), out / name, data_source=DATA_SOURCE)
        for split, name in files
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m knapsack_rl.integrations.verl.data --out-dir DIR [--train-size N] [--val-size N] [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m knapsack_rl.integrations.verl.data",
        description="Write a reasoning-gym training set and its held-out validation set in verl's parquet layout.",
    )
    parser.add_argument("--out-dir", type=Path, required=True, help=f"folder for {TRAIN_FILE} and {VAL_FILE}")
    parser.add_argument("--train-size", type=int, default=1024, help="training prompts (default 1024)")
    parser.add_argument("--val-size", type=int, default=128, help="held-out validation prompts (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    args = parser.parse_args(argv)
    try:
        paths = write_gym_files(args.out_dir, train_size=args.train_size, val_size=args.val_size, seed=args.seed)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    for split, path in paths.items():
        sys.stdout.write(f"{split}: {path}\n")
    sys.stdout.write("verl reward overrides: " + " ".join(REWARD_OVERRIDES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
