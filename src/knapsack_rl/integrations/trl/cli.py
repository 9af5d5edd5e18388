"""YAML launcher for :class:`KnapsackGRPOTrainer`, parsed by TRL's own ``TrlParser``.

Usage (from the repository root)::

    python -m knapsack_rl.integrations.trl --config examples/trl/config.yaml
    python -m knapsack_rl.integrations.trl --config examples/trl/config.yaml --rule coba
    python -m knapsack_rl.integrations.trl --config examples/trl/config.yaml --max_n 16 --estimator beta
    python -m knapsack_rl.integrations.trl --help          # every field, with its default

The YAML file (or the command line, which overrides it) holds :class:`LaunchArguments` (what to train: a
local model, a local data set, reward functions, CPU threads) and every field of :class:`KnapsackGRPOConfig`
(TRL's GRPOConfig, the ``rule``, and the knapsack settings, flat: ``max_n: 32``, ``estimator: beta``). An
unknown key, a bad value or a rule TRL cannot run ends the launcher with one line,
``python -m knapsack_rl.integrations.trl: error: ...``, on stderr and exit status 2 (as TRL's parser does
for a malformed flag); so does a refused resume.

Local files only: the model (``model_path``, or TRL's own name for it, ``model_name_or_path``) must be a
directory written by ``save_pretrained`` (model and tokenizer) and is loaded with ``local_files_only=True``;
the data (``dataset_path``, or TRL's ``dataset_name``) is a json / jsonl / csv / parquet file or a
``Dataset.save_to_disk`` directory. Nothing is downloaded: a Hub name is refused, saying so. Reward
functions are named as code to import (``package.module.function`` or ``path/to/file.py:function``): the
YAML file is trusted like a script. When the data set has no (undotted) ``prompt_id_column``, stable ids are
derived from the prompt content (:func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids`) unless
``add_prompt_ids: false``. ``threads`` (default 1) pins torch's CPU threads as the reference trainer does:
on a small CPU one thread is many times faster for a tiny model than torch's default (``examples/trl/config.yaml``,
150 steps on a shared 2-core machine: 23 s against 2 min 14 s); 0 leaves torch's default.
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

import torch
from trl.scripts.utils import TrlParser

from knapsack_rl.integrations.prompt_ids import add_prompt_ids
from knapsack_rl.integrations.trl.config import KnapsackGRPOConfig
from knapsack_rl.integrations.trl.trainer import KnapsackGRPOTrainer

logger = logging.getLogger(__name__)

PROG = "python -m knapsack_rl.integrations.trl"
_DATA_KINDS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class LaunchArguments:
    """What the launcher trains: local model, local data, reward functions; and its CPU threads."""

    reward_funcs: list[str] = field(metadata={"help": "Reward functions: package.module.function or file.py:function."})
    """Reward functions to import, TRL's signature ``f(completions, **columns) -> list[float | None]``."""
    model_path: str | None = field(
        default=None, metadata={"help": "Local model directory (save_pretrained: model and tokenizer)."}
    )
    """Directory with the model and its tokenizer; loaded with ``local_files_only=True``."""
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "TRL's name for model_path: a local directory here (no Hub downloads)."}
    )
    """TRL's scripts' name for :attr:`model_path`; set one of the two."""
    dataset_path: str | None = field(
        default=None, metadata={"help": "Local json/jsonl/csv/parquet file or save_to_disk directory."}
    )
    """Training data with a ``prompt`` column (and the columns the reward functions read)."""
    dataset_name: str | None = field(
        default=None, metadata={"help": "TRL's name for dataset_path: a local file or folder here (no Hub)."}
    )
    """TRL's scripts' name for :attr:`dataset_path`; set one of the two."""
    dataset_split: str = field(default="train", metadata={"help": "Split to train on (save_to_disk DatasetDict)."})
    """Split of a ``DatasetDict`` directory; files are read as one ``train`` split."""
    add_prompt_ids: bool = field(
        default=True, metadata={"help": "Derive prompt_id_column from prompt content when the data lack it."}
    )
    """Add ``prompt_id_column`` with :func:`knapsack_rl.integrations.prompt_ids.add_prompt_ids` when absent."""
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads; 1 is fastest for a tiny model on a small CPU; 0: torch's."}
    )
    """torch CPU threads (``torch.set_num_threads``), as the reference trainer's ``threads``; 0 leaves torch's
    default (one per core, which makes a tiny model's many small ops many times slower on a busy CPU)."""

    def model(self) -> tuple[str, str]:
        """``(setting, path)``: the local model directory, from ``model_path`` or ``model_name_or_path``."""
        return _one_of("model_path", self.model_path, "model_name_or_path", self.model_name_or_path)

    def dataset(self) -> tuple[str, str]:
        """``(setting, path)``: the local data file or folder, from ``dataset_path`` or ``dataset_name``."""
        return _one_of("dataset_path", self.dataset_path, "dataset_name", self.dataset_name)


def _one_of(ours: str, value: str | None, trls: str, alias: str | None) -> tuple[str, str]:
    """``(name, value)`` of a setting with our name and TRL's; refused if neither or two different ones are set."""
    if value is not None and alias is not None and value != alias:
        raise ValueError(f"{ours}={value!r} and {trls}={alias!r} name the same thing; set one of them")
    if value is None and alias is None:
        raise ValueError(f"{ours} (or TRL's name for it, {trls}) is required: a local path")
    return (ours, value) if value is not None else (trls, str(alias))


def make_parser() -> TrlParser:
    """TRL's parser over :class:`LaunchArguments` and :class:`KnapsackGRPOConfig`."""
    return TrlParser((LaunchArguments, KnapsackGRPOConfig), prog=PROG)  # type: ignore[arg-type]


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
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"reward_funcs: {spec!r}: cannot import {module_name!r} ({exc})") from None
    else:
        raise ValueError(f"reward_funcs: {spec!r} must be package.module.function or path/to/file.py:function")
    func = getattr(module, name, None)
    if not callable(func):
        raise ValueError(f"reward_funcs: {spec!r}: no function {name!r} there")
    return func  # type: ignore[no-any-return]


def check_local_model(path: str, setting: str = "model_path") -> None:
    """Raise unless ``path`` is a local directory (a ``save_pretrained`` folder); nothing is downloaded."""
    if not Path(path).is_dir():
        raise ValueError(
            f"{setting}={path!r} is not a local directory; the launcher loads local models only (no Hub "
            "downloads): download the model first (e.g. `hf download NAME --local-dir DIR`) and pass DIR"
        )


def check_local_dataset(path: str, setting: str = "dataset_path") -> None:
    """Raise unless ``path`` is a local data file of a known kind or a ``save_to_disk`` folder."""
    p = Path(path)
    if not p.is_dir() and (not p.is_file() or p.suffix not in _DATA_KINDS):
        raise ValueError(
            f"{setting}={path!r} must be a local {'/'.join(_DATA_KINDS)} file or a save_to_disk folder (no Hub "
            "downloads: save a Hub data set locally first)"
        )


def load_local_model(path: str, setting: str = "model_path") -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local ``save_pretrained`` directory; never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_local_model(path, setting)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_local_dataset(path: str, split: str, setting: str = "dataset_path") -> Any:
    """A ``datasets.Dataset`` from a local file (by suffix) or a ``save_to_disk`` directory."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    check_local_dataset(path, setting)
    p = Path(path)
    if p.is_dir():
        data = load_from_disk(str(p))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise ValueError(f"{setting}={path!r} has no split {split!r} (splits: {list(data)})")
            data = data[split]
        return data
    return load_dataset(_DATA_KINDS[p.suffix], data_files=str(p), split="train")


def build_trainer(launch: LaunchArguments, args: KnapsackGRPOConfig) -> KnapsackGRPOTrainer:
    """The trainer the arguments describe (local model, data with prompt ids, imported rewards); every path and
    reward function is checked before anything is loaded."""
    (model_setting, model_dir), (data_setting, data) = launch.model(), launch.dataset()
    check_local_model(model_dir, model_setting)
    check_local_dataset(data, data_setting)
    rewards = [load_reward(spec) for spec in launch.reward_funcs]
    dataset = load_local_dataset(data, launch.dataset_split, data_setting)
    column = args.prompt_id_column
    if launch.add_prompt_ids and "." not in column and column not in dataset.column_names:
        dataset = add_prompt_ids(dataset, id_column=args.prompt_id_column)
        logger.info("added %r: content ids of the %d prompts", args.prompt_id_column, len(dataset))
    model, tokenizer = load_local_model(model_dir, model_setting)
    return KnapsackGRPOTrainer(
        model=model, reward_funcs=rewards, args=args, train_dataset=dataset, processing_class=tokenizer
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build, train, save the final model to ``output_dir``; bad input ends with one ``error:`` line, exit 2."""
    from knapsack_rl.cli import error_line

    try:
        launch, args = parse_args(argv)
        if launch.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: torch's default); got threads={launch.threads}")
        if launch.threads:
            torch.set_num_threads(launch.threads)
        trainer = build_trainer(launch, args)
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        trainer.save_model(args.output_dir)
    except (ValueError, OSError) as exc:
        logger.debug("the launcher failed", exc_info=True)
        print(f"{PROG}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    if trainer.accelerator.is_main_process:
        print(f"trained {trainer.state.global_step} steps; model saved to {args.output_dir}")
    return 0
