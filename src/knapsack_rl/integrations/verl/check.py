"""Check a verl launch offline, before Ray starts: verl's config as ``main_ppo`` composes it, read as the hooks do.

The adapter's own errors otherwise surface inside verl's Ray workers, minutes into a launch. This command
composes the same config ``python -m verl.trainer.main_ppo --config-path=... --config-name=knapsack_grpo
OVERRIDES`` composes (Hydra's compose API: verl's ``ppo_trainer`` + the shipped YAML + the overrides) and
checks, in order, naming the first real cause in one line:

1. verl's version (:func:`~knapsack_rl.integrations.verl.check_verl_version`) and that its code still
   consumes what the back-end sets (:func:`~.contract.check_verl_contract`);
2. the V1 trainer and the three knapsack hooks are in the config (or, with ``trainer.use_v1=false``, the
   legacy back-end's conditions, :func:`check_legacy_trainer`; ``--config-name=knapsack_grpo_legacy``), and
   ``actor_rollout_ref.rollout.n >= 2`` (verl's default is 1: one rollout per prompt is no GRPO group);
3. the ``knapsack:`` section, as the hooks read it (:meth:`KnapsackVerlConfig.from_verl`): the settings, and
   the rule (``knapsack.rule``) built and checked against what verl can run (rounds within a step, prompts
   beyond the batch, counts of 0 or 1 and dropped rollouts are refused with the reason, the engines that can
   run the rule, and the settings to change);
4. ``algorithm.adv_estimator`` is registered in verl (after :func:`~.algos.register_algorithms`), and the
   knapsack estimators' conditions (std scaling; the group mean's ``token-mean`` / ``vanilla`` loss);
5. verl's own config validation (``verl.utils.config.validate_config``);
6. the data files: every local ``data.train_files`` / ``data.val_files`` exists and its rows carry a unique
   ``extra_info.<id_key>`` (int or str), and a ``reward.custom_reward_function`` loads;
7. with ``--devices`` (the example scripts pass it), this machine's CUDA devices against
   ``trainer.n_gpus_per_node`` (:func:`check_devices`): without them verl's local Ray waits forever, silently.

It also warns (it cannot know whether verl will join a running Ray cluster) when a local Ray would have
fewer logical CPUs than verl's TaskRunner and TransferQueue's actors take: Ray then waits for them forever,
with no error (seen on a 2-core machine; ``ray_kwargs.ray_init.num_cpus=16`` gives Ray logical CPUs).

Usage (the example scripts run it before launching verl)::

    python -m knapsack_rl.integrations.verl.check [--config-dir DIR] [--config-name NAME] [OVERRIDE ...]

Exit status 0 with a one-line summary, or 1 with ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from knapsack_rl.integrations.verl import check_verl_version
from knapsack_rl.integrations.verl.algos import (
    ESTIMATORS,
    GROUP_MEAN_ADV_EST,
    GROUP_MEAN_LOSS_AGG,
    GROUP_MEAN_LOSS_MODE,
    register_algorithms,
)
from knapsack_rl.integrations.verl.config import YAML_NAME, KnapsackVerlConfig, yaml_dir
from knapsack_rl.integrations.verl.contract import LEGACY, V1, check_verl_contract

logger = logging.getLogger(__name__)

_HOOKS_MODULE = "knapsack_rl.integrations.verl.hooks"
HOOKS = {
    "actor_rollout_ref.rollout.agent.agent_loop_manager_class": f"{_HOOKS_MODULE}.KnapsackAgentLoopManager",
    "trainer.v1.sampler.custom_sampler.path": f"pkg://{_HOOKS_MODULE}",
    "trainer.checkpoint_callback_class": f"{_HOOKS_MODULE}.KnapsackCheckpointCallback",
}
"""Config keys that must name the knapsack hooks, and what they name in the shipped YAML."""
SAMPLERS = ("KnapsackReplayBuffer", "KnapsackReplayBufferAsync")


def compose(overrides: Sequence[str], config_dir: str | Path | None = None, config_name: str = YAML_NAME) -> Any:
    """verl's config as ``main_ppo`` composes it from ``config_dir`` / ``config_name`` (default: the shipped YAML)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    folder = Path(config_dir if config_dir is not None else yaml_dir()).resolve()
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ValueError(f"Hydra could not compose {config_name} from {folder}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=None)


def check_trainer(cfg: Any) -> None:
    """The V1 trainer, the three hooks, and groups of at least two rollouts."""
    if _select(cfg, "trainer.use_v1") is not True:
        raise ValueError(f"trainer.use_v1={_select(cfg, 'trainer.use_v1')}: the knapsack hooks need verl's V1 trainer")
    for key, value in HOOKS.items():
        if _select(cfg, key) != value:
            raise ValueError(
                f"{key}={_select(cfg, key)!r}: the knapsack adapter needs {value!r} (the shipped YAML sets it)"
            )
    name = _select(cfg, "trainer.v1.sampler.custom_sampler.name")
    if name not in SAMPLERS:
        raise ValueError(
            f"trainer.v1.sampler.custom_sampler.name={name!r}: the knapsack adapter needs one of {list(SAMPLERS)}"
        )
    _check_n(cfg)


def _check_n(cfg: Any) -> None:
    n = _select(cfg, "actor_rollout_ref.rollout.n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(
            f"actor_rollout_ref.rollout.n={n!r}: GRPO needs at least 2 rollouts per prompt (verl's default is 1); "
            f"set actor_rollout_ref.rollout.n=8 (it is also the knapsack's mean count per prompt)"
        )


def check_legacy_trainer(cfg: Any) -> None:
    """The legacy back-end (``trainer.use_v1=false``, run by ``python -m knapsack_rl.integrations.verl.legacy``):
    no V1 agent-loop manager, no critic warm-up, groups of at least two rollouts."""
    manager = _select(cfg, "actor_rollout_ref.rollout.agent.agent_loop_manager_class")
    if manager == HOOKS["actor_rollout_ref.rollout.agent.agent_loop_manager_class"]:
        raise ValueError(
            f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={manager!r} is the V1 back-end's; with "
            f"trainer.use_v1=false the legacy back-end plans the counts itself: set it to null"
        )
    warmup = _select(cfg, "trainer.critic_warmup")
    if warmup:
        raise ValueError(
            f"trainer.critic_warmup={warmup}: the knapsack legacy back-end reads the rewards where verl updates the "
            f"actor, which verl skips during critic warm-up; set trainer.critic_warmup=0"
        )
    _check_n(cfg)


def backend(cfg: Any) -> str:
    """``"v1"`` for ``trainer.use_v1=true`` (the hooks), ``"legacy"`` for false (verl's RayPPOTrainer)."""
    use_v1 = _select(cfg, "trainer.use_v1")
    if not isinstance(use_v1, bool):
        raise ValueError(f"trainer.use_v1 must be true (V1 trainer) or false (legacy trainer); got {use_v1!r}")
    return V1 if use_v1 else LEGACY


def check_estimator(cfg: Any) -> str:
    """``algorithm.adv_estimator`` is known to verl, and a knapsack estimator's conditions hold; returns its name."""
    from verl.trainer.ppo import core_algos

    register_algorithms()
    name = str(_select(cfg, "algorithm.adv_estimator"))
    if name not in core_algos.ADV_ESTIMATOR_REGISTRY:
        known = sorted(core_algos.ADV_ESTIMATOR_REGISTRY)
        raise ValueError(f"algorithm.adv_estimator={name!r} is not registered in verl; known: {known}")
    if name in ESTIMATORS and _select(cfg, "algorithm.norm_adv_by_std_in_grpo") is False:
        raise ValueError(f"algorithm.norm_adv_by_std_in_grpo=false: {name} divides by the group std (the recipe's)")
    if name == GROUP_MEAN_ADV_EST:
        for key, want in (
            ("actor_rollout_ref.actor.loss_agg_mode", GROUP_MEAN_LOSS_AGG),
            ("actor_rollout_ref.actor.policy_loss.loss_mode", GROUP_MEAN_LOSS_MODE),
        ):
            if _select(cfg, key) != want:
                raise ValueError(
                    f"{key}={_select(cfg, key)!r}: {name} gives every prompt equal weight only with {key}={want}"
                )
    return name


def check_verl_validation(cfg: Any) -> None:
    """verl's own ``validate_config`` (batch sizes, GPUs, micro-batches ...), its errors in one line."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"verl's config validation: {_one_line(exc)}") from None


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def check_data_file(path: str, key: str, id_key: str) -> int:
    """Rows of one local verl parquet file: each has a unique int or str ``extra_info[id_key]``; returns the count."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from knapsack_rl.io import read_file_bytes

    data = read_file_bytes(Path(path).expanduser(), what=f"{key}:")  # missing, a FIFO or a folder: one line
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        if "extra_info" not in parquet.schema_arrow.names:
            raise ValueError(f"{path}: no extra_info column; every row needs extra_info.{id_key} (a stable prompt id)")
        infos = parquet.read(columns=["extra_info"]).column("extra_info").to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{key}: {path} is not a parquet file ({_one_line(exc)})") from None
    seen: set[Any] = set()
    for row, info in enumerate(infos):
        pid = info.get(id_key) if isinstance(info, dict) else None
        if isinstance(pid, bool) or not isinstance(pid, int | str):
            raise ValueError(f"{path}: row {row} has extra_info.{id_key}={pid!r}; each row needs an int or str id")
        if pid in seen:
            raise ValueError(
                f"{path}: extra_info.{id_key}={pid!r} appears twice (row {row}); ids must be unique per prompt"
            )
        seen.add(pid)
    return len(infos)


def check_gym_reward(cfg: Any) -> None:
    """The reward's GymConfig (``reward_kwargs.reasoning_gym``) is the one that wrote the training files."""
    from omegaconf import OmegaConf

    from knapsack_rl.integrations.verl.data import CONFIG_FILE, read_config_file

    given = _select(cfg, "reward.custom_reward_function.reward_kwargs.reasoning_gym")
    local = [p for p in _files(_select(cfg, "data.train_files")) if "://" not in p]
    if given is None or not local:
        return
    folder = Path(local[0]).expanduser().parent
    if not (folder / CONFIG_FILE).is_file():
        logger.warning(
            "%s has no %s: the reward's reasoning_gym config cannot be compared with it", folder, CONFIG_FILE
        )
        return
    wrote = read_config_file(folder)
    if OmegaConf.to_container(given, resolve=True) != wrote:
        raise ValueError(
            f"reward.custom_reward_function.reward_kwargs.reasoning_gym differs from {folder / CONFIG_FILE}, the "
            f"GymConfig that wrote the training files: pass the same sizes and seed to --reward-overrides"
        )


def check_data(cfg: Any, id_key: str) -> dict[str, int]:
    """Local train / val files (remote ones are logged, not read) and the custom reward function."""
    counts: dict[str, int] = {}
    for key in ("data.train_files", "data.val_files"):
        files = _files(_select(cfg, key))
        if key == "data.train_files" and not files:
            raise ValueError("data.train_files is not set")
        for path in files:
            if "://" in path:
                logger.warning("%s: %s is not a local file; not checked", key, path)
                continue
            counts[key] = counts.get(key, 0) + check_data_file(path, key, id_key)
    check_gym_reward(cfg)
    reward = _select(cfg, "reward.custom_reward_function")
    if reward is not None and reward.get("path"):
        from verl.utils.import_utils import load_extern_object

        try:
            fn = load_extern_object(module_path=str(reward.path), object_name=str(reward.name))
        except (ImportError, AttributeError, FileNotFoundError, RuntimeError) as exc:
            raise ValueError(
                f"reward.custom_reward_function ({reward.path}, {reward.name}): {_one_line(exc)}"
            ) from None
        if not callable(fn):
            raise ValueError(f"reward.custom_reward_function: {reward.path}:{reward.name} is not callable")
    return counts


def warn_ray_cpus(cfg: Any) -> int:
    """Log a warning when a local Ray would lack the CPUs TransferQueue's actors need; returns the CPUs needed."""
    units = _select(cfg, "transfer_queue.backend.SimpleStorage.num_data_storage_units") or 1
    simple = _select(cfg, "transfer_queue.backend.storage_backend") == "SimpleStorage"
    needed = 2 + (int(units) if simple else 0)  # verl's TaskRunner, TransferQueue's controller, its storage units
    configured = _select(cfg, "ray_kwargs.ray_init.num_cpus")
    cpus = int(configured) if configured is not None else (os.cpu_count() or 1)
    if cpus < needed and not os.environ.get("RAY_ADDRESS"):
        logger.warning(
            "a local Ray gets %d logical CPUs (ray_kwargs.ray_init.num_cpus=%s) but verl's TaskRunner and "
            "TransferQueue's controller and %s storage units take 1 each (%d): Ray would wait for them forever; "
            "set ray_kwargs.ray_init.num_cpus=%d (logical CPUs) unless verl joins a running Ray cluster",
            cpus, configured, units, needed, max(needed, 16),
        )  # fmt: skip
    return needed


def check_devices(cfg: Any) -> int:
    """This machine has the CUDA devices ``trainer.n_gpus_per_node`` asks for (a local Ray gets only these: the V1
    trainer would wait for missing ones forever, the legacy one stop in ``init_workers``); skipped when verl joins
    a running Ray cluster (``RAY_ADDRESS``) or runs on another device type. Returns the devices found."""
    import torch

    want, device = _select(cfg, "trainer.n_gpus_per_node"), _select(cfg, "trainer.device")
    have = torch.cuda.device_count()
    if os.environ.get("RAY_ADDRESS") or device != "cuda" or not isinstance(want, int) or have >= want:
        return have
    raise ValueError(
        f"trainer.n_gpus_per_node={want} but this machine has {have} CUDA device(s) (torch.cuda.device_count()): "
        f"verl's local Ray would wait for them forever; run on a machine with {want} GPU(s), or set RAY_ADDRESS "
        f"to join a Ray cluster that has them"
    )


def check_config(cfg: Any, *, check_files: bool = True) -> str:
    """Run every check on a composed config (module docstring); returns the one-line summary."""
    version = check_verl_version()
    kind = backend(cfg)
    check_verl_contract(kind, version)
    if kind == V1:
        check_trainer(cfg)
    else:
        check_legacy_trainer(cfg)
    settings = KnapsackVerlConfig.from_verl(cfg)
    estimator = check_estimator(cfg)
    check_verl_validation(cfg)
    counts = check_data(cfg, settings.adapter.id_key) if check_files else {}
    if kind == V1:
        warn_ray_cpus(cfg)
    alloc = settings.knapsack.allocation
    rows = ", ".join(f"{k.split('.')[1]}: {v} rows" for k, v in counts.items())
    return (
        f"ok: verl {version}; rule {settings.rule}; rollout.n={settings.n}, "
        f"train_batch_size={settings.train_batch_size}, "
        f"knapsack allocate={settings.knapsack.allocate} counts in [{alloc.min_n}, {alloc.max_n}]; "
        f"adv_estimator={estimator}, loss_agg_mode={_select(cfg, 'actor_rollout_ref.actor.loss_agg_mode')}"
        + (f"; {rows}" if rows else "")
        + ("; back-end: legacy RayPPOTrainer (run it with python -m knapsack_rl.integrations.verl.legacy)"
           if kind == LEGACY else "")
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m knapsack_rl.integrations.verl.check [--config-dir DIR] [--config-name NAME] [OVERRIDE ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m knapsack_rl.integrations.verl.check",
        description="Compose verl's config as main_ppo would and check it as the knapsack hooks read it (no Ray).",
    )
    parser.add_argument("--config-dir", default=None, help="Hydra config folder (default: the shipped YAML's)")
    parser.add_argument("--config-name", default=YAML_NAME, help=f"Hydra config name (default: {YAML_NAME})")
    parser.add_argument("--no-files", action="store_true", help="skip reading the data files")
    parser.add_argument(
        "--devices", action="store_true", help="last, check that this machine has trainer.n_gpus_per_node CUDA devices"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as passed to verl.trainer.main_ppo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        cfg = compose(args.overrides, args.config_dir, args.config_name)
        summary = check_config(cfg, check_files=not args.no_files)
        if args.devices:
            summary += f"; {check_devices(cfg)} CUDA device(s)"
    except ValueError as exc:
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return 1
    sys.stdout.write(summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
