"""Supervised warm start of the tiny policy on a task's warm-start set, cached by what determines the weights.

The warm start trains a fresh character-level tiny Llama on ``task.warmstart`` (cross-entropy on the
answer and EOS tokens only) for a fixed number of steps; every step draws ``batch_size`` problems, each
from a level chosen with probability proportional to ``level_weights`` (default: equal per level) and
then uniformly within that level. It is meant to stop early: the RL training prompts should span the
whole range of success rates, like a real model on a real data set.

Caches, under ``root``:

* ``root/<weights key>/``: the model, the tokenizer and ``warmstart.json``. The key is
  ``sha256(warm-start config without profile_samples, model config, tokenizer characters,
  content hash of the warm-start set)[:12]``: exactly what determines the saved model. The training and
  held-out sets enter it only through the model's ``max_positions`` when it is sized from the task
  (:func:`fit_positions`: the longest sequence, rounded up to a multiple of 64), so changing them (or
  their sizes) reuses the weights unless their longest prompt crosses a multiple of 64. The directory is
  built under a temporary name (``root/.<weights key>.tmp``), fsynced and renamed into place: an
  interrupted build leaves no half-written cache.
* ``root/.<weights key>.lock``: the build's lock (:func:`knapsack_rl.io.lock_folder`). Processes that need
  the same missing cache at once (``compare`` arms, two ``train`` runs sharing ``warmstart_dir``) do not
  both build it: the first builds, the others log who is building and **wait, then reuse** the finished
  cache. Waiting rather than refusing, because the waiter wants exactly the directory being built and
  would otherwise have to be started again by hand; a builder that dies releases the lock (the kernel
  drops it) and the next waiter builds. The lock file stays (an empty file).
* ``root/<weights key>/profiles/<profile key>.json``: :func:`training_profile`, the success profile of
  a prompt set (the RL training set) under the cached weights, keyed by the set's content hash and the
  sampling settings; changing the training set adds a profile, never rebuilds the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.validate import check_int, check_real
from knapsack_rl.io import atomic_write_bytes, lock_folder
from knapsack_rl.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_model
from knapsack_rl.tasks.base import PromptSet, exact_match

logger = logging.getLogger(__name__)

ScoreFn = Callable[[PromptSet, NDArray[np.int64], Sequence[str]], NDArray[np.float64]]
"""``score(prompts, prompt_index, responses) -> (R,) rewards`` (as :meth:`knapsack_rl.tasks.Task.score`)."""


@dataclass(frozen=True)
class WarmStartConfig:
    """Settings of the supervised warm start."""

    steps: int = 1000
    """Optimizer steps of supervised training."""
    batch_size: int = 64
    """Problems per step."""
    lr: float = 1e-3
    """AdamW learning rate (linear warm-up over 5% of the steps, then constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    level_weights: Mapping[str, float] | None = None
    """Sampling weight per level of the warm-start set (levels not named weigh 1); None: equal per level."""
    seed: int = 0
    """Seed of the data stream and of the model's initial weights."""
    profile_samples: int = 16
    """Rollouts per training prompt when measuring the starting success rates (not part of the weights key)."""

    def __post_init__(self) -> None:
        check_int("steps", self.steps, low=0)
        check_int("batch_size", self.batch_size, low=1)
        check_real("lr", self.lr, low=0.0, open_low=True)
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_int("seed", self.seed, low=0)
        check_int("profile_samples", self.profile_samples, low=1)
        if self.level_weights is not None:
            if not isinstance(self.level_weights, Mapping):
                raise ValueError(f"level_weights must map level names to weights; got {self.level_weights!r}")
            for name, w in self.level_weights.items():
                check_real(f"level_weights[{name!r}]", w, low=0.0)


def weights_key(warm: WarmStartConfig, model: TinyModelConfig, chars: str, warmstart: PromptSet) -> str:
    """First 12 hex digits of sha256 over what determines the weights (see the module docstring)."""
    settings = {k: v for k, v in asdict(warm).items() if k != "profile_samples"}
    if settings["level_weights"] is not None:
        settings["level_weights"] = dict(sorted(settings["level_weights"].items()))
    blob = json.dumps(
        {"warm": settings, "model": asdict(model), "chars": chars, "data": warmstart.content_hash()}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def encode_sft_batch(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Right-padded ``<bos> prompt answer <eos>`` with labels -100 outside ``answer <eos>``; (B, L) each."""
    import torch

    rows, labels = [], []
    for prompt, answer in pairs:
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def sft_sampler(data: PromptSet, config: WarmStartConfig) -> Callable[[], list[tuple[str, str]]]:
    """A function drawing one batch of (prompt, answer): a level by weight, then a problem of it uniformly.

    Raises:
        ValueError: if ``data`` is empty or ``level_weights`` names a level ``data`` does not have, or
            gives every level weight 0.
    """
    if len(data) == 0:
        raise ValueError("the warm-start set is empty: the tiny model needs supervised warm-start data")
    levels = data.level_names()
    weights = dict(config.level_weights or {})
    unknown = sorted(set(weights) - set(levels))
    if unknown:
        raise ValueError(f"level_weights names levels {unknown} that the warm-start set lacks; it has {levels}")
    w = np.array([float(weights.get(lv, 1.0)) for lv in levels])
    if w.sum() <= 0:
        raise ValueError(f"level_weights gives every level weight 0: {weights}")
    members = [np.flatnonzero(np.asarray(data.levels) == lv) for lv in levels]
    rng = np.random.default_rng(config.seed)

    def batch() -> list[tuple[str, str]]:
        picks = rng.choice(len(levels), size=config.batch_size, p=w / w.sum())
        rows = [int(rng.choice(members[k])) for k in picks]
        return [(data.prompts[i], data.answers[i]) for i in rows]

    return batch


def train_supervised(model: Any, tokenizer: Any, config: WarmStartConfig, data: PromptSet) -> list[float]:
    """Run the supervised steps in place on batches from ``data``; returns the loss per step."""
    import torch

    from knapsack_rl.progress import Progress

    next_batch = sft_sampler(data, config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    device = next(model.parameters()).device
    losses = []
    model.train()
    progress = Progress(config.steps, "warm start (supervised)")
    for _ in range(config.steps):
        batch = {k: v.to(device) for k, v in encode_sft_batch(tokenizer, next_batch()).items()}
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        progress.update(f"loss {losses[-1]:.3f}")
    progress.close()
    model.eval()
    return losses


def _exact_score(prompts: PromptSet, prompt_index: NDArray[np.int64], responses: Sequence[str]) -> NDArray[np.float64]:
    return exact_match(responses, [prompts.answers[i] for i in prompt_index])


def success_profile(
    model: Any,
    tokenizer: Any,
    prompts: PromptSet,
    *,
    samples: int = 16,
    seed: int = 0,
    max_new_tokens: int = 8,
    score: ScoreFn | None = None,
) -> dict[str, Any]:
    """Per-prompt success rates with ``samples`` rollouts at temperature 1, and their spread.

    ``score`` rates the responses (default: exact match; pass :meth:`Task.score` for the task's reward).
    Returns a dict with ``success_rates`` (one per prompt), ``below_0.1``, ``above_0.9`` and ``between``
    (fractions of prompts), ``per_level`` mean success rate, and ``per_level_between`` (fraction of each
    level's prompts with 0.02 <= p <= 0.15, the learnable-hard band).
    """
    import torch

    from knapsack_rl.rollout.generate import generate

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    counts = np.full(len(prompts), samples, dtype=np.int64)
    out = generate(model, tokenizer, prompts.prompts, counts, max_new_tokens=max_new_tokens, generator=gen)
    idx = out.prompt_index.numpy().astype(np.int64)
    rewards = (score or _exact_score)(prompts, idx, out.texts)
    rates = np.bincount(idx, weights=rewards, minlength=len(prompts)) / samples
    levels = np.asarray(prompts.levels)
    band = (rates >= 0.02) & (rates <= 0.15)
    return {
        "samples": samples,
        "success_rates": [float(x) for x in rates],
        "below_0.1": float((rates < 0.1).mean()),
        "above_0.9": float((rates > 0.9).mean()),
        "between": float(((rates >= 0.1) & (rates <= 0.9)).mean()),
        "per_level": {lv: float(rates[levels == lv].mean()) for lv in prompts.level_names()},
        "per_level_between": {lv: float(band[levels == lv].mean()) for lv in prompts.level_names()},
    }


POSITIONS_STEP = 64
"""A tiny model sized from its task gets the positions it needs rounded up to a multiple of this: the
size is part of the weights key, and the rounding keeps the cached warm start when the data grow a little."""


def positions_needed(task: Any, max_new_tokens: int) -> tuple[int, str]:
    """The longest sequence the task puts through the tiny model, and which prompt needs it.

    A training or held-out prompt needs BOS + its characters + the longer of (its answer + EOS) and
    ``max_new_tokens``; a warm-start problem BOS + prompt + answer + EOS (one token per character).
    """
    check_int("max_new_tokens", max_new_tokens, low=0)
    need, where = 0, ""
    for name in ("train", "eval", "warmstart"):
        s: PromptSet | None = getattr(task, name)
        for prompt, answer in zip(s.prompts, s.answers, strict=True) if s is not None else ():
            response = len(answer) + 1 if name == "warmstart" else max(len(answer) + 1, max_new_tokens)
            if 1 + len(prompt) + response > need:
                need, where = 1 + len(prompt) + response, f"{name} prompt {prompt!r:.60}"
    return need, where


def fit_positions(model: TinyModelConfig, task: Any, max_new_tokens: int = 0) -> TinyModelConfig:
    """``model`` with ``max_positions`` set from ``task`` when it is None, else checked against it.

    Raises:
        ValueError: naming ``max_positions``, the positions needed and the prompt needing them, if an
            explicit ``max_positions`` is too small for the task.
    """
    need, where = positions_needed(task, max_new_tokens)
    if model.max_positions is None:
        return replace(model, max_positions=max(POSITIONS_STEP, -(-need // POSITIONS_STEP) * POSITIONS_STEP))
    if need > model.max_positions:
        raise ValueError(
            f"tiny_model.max_positions={model.max_positions} is too small: the {where} needs {need} positions "
            f"(with max_new_tokens={max_new_tokens}); raise it, leave it unset to size it from the task, or use "
            f"shorter prompts (e.g. prompt='compact')"
        )
    return model


def warm_start(
    root: str | Path,
    task: Any,
    *,
    warm: WarmStartConfig | None = None,
    model: TinyModelConfig | None = None,
    device: str = "cpu",
    max_new_tokens: int = 0,
) -> Path:
    """Directory of the tiny policy warm-started on ``task.warmstart`` (loadable by ``load_causal_lm``).

    Args:
        root: cache directory.
        task: a :class:`knapsack_rl.tasks.Task` (its ``warmstart`` set and ``chars``).
        model: shape of the tiny model; ``max_positions`` None is sized from the task (:func:`fit_positions`).
        max_new_tokens: longest response the policy will sample (the trainer's ``max_new_tokens``).

    Raises:
        ValueError: if the task has no warm-start set, or a prompt does not fit an explicit ``model.max_positions``.
    """
    sized = fit_positions(model or TinyModelConfig(), task, max_new_tokens)
    return _build(Path(root), task, warm or WarmStartConfig(), sized, device)


def _build(root: Path, task: Any, warm: WarmStartConfig, model: TinyModelConfig, device: str) -> Path:
    """The cached weights directory of (task.warmstart, task.chars, warm, model); trained when missing."""
    if task.warmstart is None or not len(task.warmstart):
        raise ValueError("the task has no warm-start set: set warmstart_data (file source) or a warm-start size")
    path = root / weights_key(warm, model, task.chars, task.warmstart)
    if (path / "warmstart.json").is_file():
        logger.info("warm start: using cache %s", path)
        return path
    with lock_folder(root, what="warmstart_dir", wait=True, name=f".{path.name}.lock"):
        if (path / "warmstart.json").is_file():  # another process built it while this one waited
            logger.info("warm start: using cache %s (built by another process)", path)
            return path
        start = time.perf_counter()
        tokenizer = build_char_tokenizer(task.chars)
        policy = build_tiny_model(tokenizer, model, seed=warm.seed).to(device)
        logger.info("warm start: training %d steps on %d problems -> %s", warm.steps, len(task.warmstart), path)
        losses = train_supervised(policy, tokenizer, warm, task.warmstart)
        report = {
            "config": {"warm": asdict(warm), "model": asdict(model), "chars": task.chars},
            "warmstart_data": {"size": len(task.warmstart), "sha256": task.warmstart.content_hash()},
            "parameters": sum(p.numel() for p in policy.parameters()),
            "final_loss": losses[-1] if losses else None,
            "seconds": time.perf_counter() - start,
        }
        _publish(path, policy.to("cpu"), tokenizer, report)
    logger.info("warm start: %.0f s, final loss %.3f", report["seconds"], report["final_loss"] or float("nan"))
    return path


def _publish(path: Path, policy: Any, tokenizer: Any, report: dict[str, Any]) -> None:
    """Write the cache folder ``path`` whole or not at all (the caller holds its build lock): build it
    as ``.<name>.tmp`` beside it, fsync every file and the folder, rename it into place.

    Raises:
        ValueError: naming the folder, if it cannot be written (a full disk, a read-only folder).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a builder that was killed (we hold the lock)
        tmp.mkdir()
        policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_bytes(tmp / "warmstart.json", json.dumps(report, indent=1).encode())
        _fsync_tree(tmp)
        shutil.rmtree(path, ignore_errors=True)  # a folder without warmstart.json: not a finished cache
        os.replace(tmp, path)
        _fsync_tree(path.parent, files=False)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"cannot write the warm start to {path} ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path, *, files: bool = True) -> None:
    """fsync the files directly in ``folder`` (when ``files``) and the folder itself."""
    names = sorted(p for p in folder.iterdir() if p.is_file()) if files else []
    for name in [*names, folder]:
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def training_profile(
    model_dir: str | Path,
    task: Any,
    *,
    prompts: PromptSet | None = None,
    samples: int = 16,
    seed: int = 0,
    max_new_tokens: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """The success profile (:func:`success_profile`, scored by ``task.score``) of ``prompts`` (default:
    ``task.train``) under the model in ``model_dir``; cached in ``model_dir/profiles/`` by the set's
    content hash, the reward's name and (samples, seed, max_new_tokens)."""
    from knapsack_rl.models.tiny import load_causal_lm

    prompts = task.train if prompts is None else prompts
    blob = json.dumps([prompts.content_hash(), task.scorer.name, samples, seed, max_new_tokens])
    path = Path(model_dir) / "profiles" / (hashlib.sha256(blob.encode()).hexdigest()[:12] + ".json")
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text())
        return cached
    policy, tokenizer = load_causal_lm(model_dir, device=device)
    policy.eval()
    profile = success_profile(
        policy, tokenizer, prompts, samples=samples, seed=seed, max_new_tokens=max_new_tokens, score=task.score
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(profile).encode())
    return profile
