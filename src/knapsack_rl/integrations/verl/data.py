"""A training and a validation file for verl that need no download: reasoning-gym problems in verl's layout.

``python -m knapsack_rl.integrations.verl.data --out-dir ~/data/knapsack_gym`` writes

- ``train.parquet``: the ``train`` split of a reasoning-gym mix (:data:`DATASETS`), 1024 prompts by default;
- ``test.parquet``: its held-out ``eval`` split (disjoint from the training prompts by construction), 128;

each row as :func:`knapsack_rl.tasks.verl_data.write_verl` writes it (chat prompt, ``reward_model.ground_truth``,
``extra_info.index`` = the prompt's stable id, ``extra_info.extras`` = the reasoning-gym record), and
``reasoning_gym.json``: the :class:`~knapsack_rl.tasks.gym.GymConfig` that drew them. Every prompt ends with
:data:`INSTRUCTION`, so the model's answer is the text inside its last ``<answer>...</answer>``.

verl scores the rows with :func:`knapsack_rl.tasks.gym.compute_score` (the data set's own ``score_answer``:
1.0 for a right answer, partial credit in [0, 1) for some near misses), set by the Hydra overrides that
``python -m knapsack_rl.integrations.verl.data --reward-overrides`` prints, one per line, for the same
``--train-size`` / ``--val-size`` / ``--seed`` (:func:`reward_overrides`; ``examples/verl/run_small_1gpu.sh``
passes them): the function's path and name, and the GymConfig as
``reward.custom_reward_function.reward_kwargs.reasoning_gym``, which verl passes to the function with every
row (so the scorer can regenerate an entry from the run's config instead of trusting the file's copy).
``python -m knapsack_rl.integrations.verl.check`` refuses a launch whose GymConfig differs from the
``reasoning_gym.json`` beside its training file.

reasoning-gym generates the problems locally (``pip install 'knapsack-rl[gym,parquet]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from knapsack_rl.io import atomic_write_bytes, read_file_bytes
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
REWARD_FUNCTION = (
    "reward.custom_reward_function.path=pkg://knapsack_rl.tasks.gym",
    "reward.custom_reward_function.name=compute_score",
)
"""The verl overrides naming the reward function (verl's default reward has no scorer for :data:`DATA_SOURCE`)."""
REWARD_KWARG = "+reward.custom_reward_function.reward_kwargs.reasoning_gym"
"""The override key under which the files' GymConfig reaches ``compute_score`` (keyword ``reasoning_gym``)."""
TRAIN_FILE = "train.parquet"
VAL_FILE = "test.parquet"
CONFIG_FILE = "reasoning_gym.json"
"""The GymConfig that drew the files, written beside them (JSON)."""


def with_instruction(prompts: PromptSet) -> PromptSet:
    """The same prompts (ids, answers, extras unchanged), each followed by :data:`INSTRUCTION`."""
    return replace(prompts, prompts=[p + INSTRUCTION for p in prompts.prompts])


def write_gym_files(
    out_dir: str | Path, *, train_size: int = 1024, val_size: int = 128, seed: int = 0
) -> dict[str, Path]:
    """Write :data:`TRAIN_FILE`, :data:`VAL_FILE` and :data:`CONFIG_FILE` into ``out_dir`` (each atomically).

    Returns their paths by name: ``train``, ``eval`` (the validation file) and ``config``.

    The two splits are disjoint (reasoning-gym's split partition by prompt text), so the validation
    prompts are held out; the same arguments write the same files.
    """
    config = gym_config(train_size=train_size, val_size=val_size, seed=seed)
    out = Path(out_dir).expanduser()
    files: tuple[tuple[Split, str], ...] = (("train", TRAIN_FILE), ("eval", VAL_FILE))
    paths: dict[str, Path] = {
        split: write_verl(with_instruction(build_gym_split(config, split)), out / name, data_source=DATA_SOURCE)
        for split, name in files
    }
    atomic_write_bytes(out / CONFIG_FILE, json.dumps(config_fields(config), sort_keys=True, indent=1).encode())
    return {**paths, "config": out / CONFIG_FILE}


def hydra_value(value: Any) -> str:
    """``value`` (JSON types) in Hydra's override grammar: bare keys, single-quoted strings, ``null``."""
    if isinstance(value, dict):
        for key in value:
            if not (isinstance(key, str) and key.isidentifier()):
                raise ValueError(f"a Hydra override key must be an identifier; got {key!r}")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    raise ValueError(f"cannot write {type(value).__name__} {value!r} as a Hydra override value")


def gym_config(*, train_size: int = 1024, val_size: int = 128, seed: int = 0) -> GymConfig:
    """The GymConfig of :data:`DATASETS` with these split sizes and seed (no warm-start split)."""
    if train_size < 1 or val_size < 1:
        raise ValueError(f"train_size and val_size must be >= 1; got train_size={train_size}, val_size={val_size}")
    return GymConfig(datasets=DATASETS, seed=seed, train_size=train_size, eval_size=val_size, warmstart_size=0)


def config_fields(config: GymConfig) -> dict[str, Any]:
    """``config`` as plain JSON values (what ``reasoning_gym.json`` and the reward override hold)."""
    out: dict[str, Any] = json.loads(json.dumps(asdict(config)))
    return out


def reward_overrides(config: GymConfig) -> tuple[str, ...]:
    """The verl overrides that score files written under ``config``: function path, name, and the config."""
    return (*REWARD_FUNCTION, f"{REWARD_KWARG}={hydra_value(config_fields(config))}")


def read_config_file(data_dir: str | Path) -> dict[str, Any]:
    """The GymConfig fields in ``data_dir/reasoning_gym.json`` (validated by building the GymConfig)."""
    path = Path(data_dir).expanduser() / CONFIG_FILE
    data = read_file_bytes(path, what="the data's GymConfig (python -m knapsack_rl.integrations.verl.data writes it)")
    try:
        values = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: must hold a JSON object of GymConfig fields; got {type(values).__name__}")
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        GymConfig(**fields)
    except TypeError as exc:
        raise ValueError(f"{path}: not GymConfig fields ({exc})") from None
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m knapsack_rl.integrations.verl.data --out-dir DIR [--train-size N] [--val-size N] [--seed S]``,
    or ``--reward-overrides`` with the same sizes and seed (one verl override per line)."""
    parser = argparse.ArgumentParser(
        prog="python -m knapsack_rl.integrations.verl.data",
        description="Write a reasoning-gym training set and its held-out validation set in verl's parquet layout.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out-dir", type=Path, help=f"write {TRAIN_FILE}, {VAL_FILE} and {CONFIG_FILE} here")
    action.add_argument(
        "--reward-overrides", action="store_true", help="print the verl overrides that score files of these sizes"
    )
    parser.add_argument("--train-size", type=int, default=1024, help="training prompts (default 1024)")
    parser.add_argument("--val-size", type=int, default=128, help="held-out validation prompts (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    args = parser.parse_args(argv)
    try:
        if args.reward_overrides:
            config = gym_config(train_size=args.train_size, val_size=args.val_size, seed=args.seed)
            sys.stdout.write("".join(f"{line}\n" for line in reward_overrides(config)))
            return 0
        paths = write_gym_files(args.out_dir, train_size=args.train_size, val_size=args.val_size, seed=args.seed)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write("".join(f"{name}: {path}\n" for name, path in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
