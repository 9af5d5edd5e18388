"""YAML launcher for :class:`KnapsackGRPOTrainer`, parsed by TRL's own ``TrlParser``.

Usage (from the repository root)::

    python -m knapsack_rl.integrations.trl --config examples/trl/config.yaml
    python -m knapsack_rl.integrations.trl --config examples/trl/config.yaml --max_n 16 --estimator beta
    python -m knapsack_rl.integrations.trl --help          # every field, with its default

The YAML file (or the command line, which overrides it) holds :class:`LaunchArguments` (what to train: a
local model, a local data set, reward functions) and every field of :class:`KnapsackGRPOConfig` (TRL's
GRPOConfig plus the knapsack settings, flat: ``max_n: 32``, ``estimator: beta``). An unknown key raises
TRL's ``ValueError`` ("Unknown arguments from config file: ..."), a bad knapsack value ours, naming it.

Local files only: ``model_path`` must be a directory written by ``save_pretrained`` (model and tokenizer)
and is loaded with ``local_files_only=True``; ``dataset_path`` is a json / jsonl / csv / parquet file or a
``Dataset.save_to_disk`` directory. Nothing is downloaded. Reward functions are named as code to import
(``package.module.function`` or ``path/to/file.py:function``): the YAML file is trusted like a script.
When the data set has no (undotted) ``prompt_id_column``, stable ids are derived from the prompt content
(:func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids`) unless ``add_prompt_ids: false``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl.scripts.utils import TrlParser

from knapsack_rl.integrations.prompt_ids import add_prompt_ids
from knapsack_rl.integrations.trl.config import KnapsackGRPOConfig
from knapsack_rl.integrations.trl.trainer import KnapsackGRPOTrainer

logger = logging.getLogger(__name__)

_DATA_KINDS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class LaunchArguments:
    """What the launcher trains: local model, local data, reward functions."""

    model_path: str = field(metadata={"help": "Local model directory (save_pretrained: model and tokenizer)."})
    """Directory with the model and its tokenizer; loaded with ``local_files_only=True``."""
    dataset_path: str = field(metadata={"help": "Local json/jsonl/csv/parquet file or save_to_disk directory."})
    """Training data with a ``prompt`` column (and the columns the reward functions read)."""
    reward_funcs: list[str] = field(metadata={"help": "Reward functions: package.module.function or file.py:function."})
    """Reward functions to import, TRL's signature ``f(completions, **columns) -> list[float | None]``."""
    dataset_split: str = field(default="train", metadata={"help": "Split to train on (save_to_disk DatasetDict)."})
    """Split of a ``DatasetDict`` directory; files are read as one ``train`` split."""
    add_prompt_ids: bool = field(
        default=True, metadata={"help": "Derive prompt_id_column from prompt content when the data lack it."}
    )
    """Add ``prompt_id_column`` with :func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids` when absent."""


def make_parser() -> TrlParser:
    """TRL's parser over :class:`LaunchArguments` and :class:`KnapsackGRPOConfig`."""
    prog = "python -m knapsack_rl.integrations.trl"
    return TrlParser((LaunchArguments, KnapsackGRPOConfig), prog=prog)  # type: ignore[arg-type]


def parse_args(argv: Sequence[str] | None = None) -> tuple[LaunchArguments, KnapsackGRPOConfig]:
    """Parse ``--config FILE`` (YAML) and command-line overrides; unknown keys raise ``ValueError``.

    The file is read by the package's YAML reader (:func:`knapsack_rl.safe_yaml.load_yaml_file`: YAML 1.2
    scalars, so ``learning_rate: 5e-4`` is a float; anchors, aliases and duplicate keys refused, naming
    the line; 1 MiB at most), then applied as TRL's ``TrlParser.parse_args_and_config`` would: its
    ``env:`` section is exported, every other key becomes a default that the command line overrides.
    """
    from knapsack_rl.safe_yaml import load_yaml_file

    args = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            raise ValueError("--config needs a YAML file")
        path = args[at + 1]
        del args[at : at + 2]
        values = load_yaml_file(path, what="config file")
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping; got {type(values).__name__}")
        env = values.pop("env", {})
        if not isinstance(env, dict):
            raise ValueError(f"{path}: env must be a mapping of variable names to values; got {env!r}")
        unknown = parser.set_defaults_with_config(**values)
        if unknown:
            raise ValueError(f"{path}: Unknown arguments from config file: {unknown}")
        for key, value in env.items():
            os.environ[str(key)] = str(value)
    launch, config = parser.parse_args_into_dataclasses(args=args)
    return launch, config


def load_reward(spec: str) -> Callable[..., Any]:
    """The function named by ``package.module.function`` or ``path/to/file.py:function``."""
    if ":" in spec:
        file, name = spec.rsplit(":", 1)
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"reward_funcs: {spec!r}: {file!r} is not a file")
        module_spec = importlib.util.spec_from_file_location(f"knapsack_rl_reward_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"reward_funcs: {spec!r}: cannot load {file!r} as Python")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    elif "." in spec:
        module_name, name = spec.rsplit(".", 1)
        module = importlib.import_module(module_name)
    else:
        raise ValueError(f"reward_funcs: {spec!r} must be package.module.function or path/to/file.py:function")
    func = getattr(module, name, None)
    if not callable(func):
        raise ValueError(f"reward_funcs: {spec!r}: no function {name!r} there")
    return func  # type: ignore[no-any-return]


def load_local_model(path: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local ``save_pretrained`` directory; never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(path).is_dir():
        raise ValueError(f"model_path={path!r} is not a local directory; the launcher loads local models only")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_local_dataset(path: str, split: str) -> Any:
    """A ``datasets.Dataset`` from a local file (by suffix) or a ``save_to_disk`` directory."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    p = Path(path)
    if p.is_dir():
        data = load_from_disk(str(p))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise ValueError(f"dataset_path={path!r} has no split {split!r} (splits: {list(data)})")
            data = data[split]
        return data
    if not p.is_file() or p.suffix not in _DATA_KINDS:
        raise ValueError(f"dataset_path={path!r} must be a local {'/'.join(_DATA_KINDS)} file or a save_to_disk folder")
    return load_dataset(_DATA_KINDS[p.suffix], data_files=str(p), split="train")


def build_trainer(launch: LaunchArguments, args: KnapsackGRPOConfig) -> KnapsackGRPOTrainer:
    """The trainer the arguments describe (local model, data with prompt ids, imported rewards)."""
    model, tokenizer = load_local_model(launch.model_path)
    dataset = load_local_dataset(launch.dataset_path, launch.dataset_split)
    column = args.prompt_id_column
    if launch.add_prompt_ids and "." not in column and column not in dataset.column_names:
        dataset = add_prompt_ids(dataset, id_column=args.prompt_id_column)
        logger.info("added %r: content ids of the %d prompts", args.prompt_id_column, len(dataset))
    rewards = [load_reward(spec) for spec in launch.reward_funcs]
    return KnapsackGRPOTrainer(
        model=model, reward_funcs=rewards, args=args, train_dataset=dataset, processing_class=tokenizer
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build, train, save the final model to ``output_dir``."""
    launch, args = parse_args(argv)
    trainer = build_trainer(launch, args)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    if trainer.accelerator.is_main_process:
        print(f"trained {trainer.state.global_step} steps; model saved to {args.output_dir}")
    return 0
