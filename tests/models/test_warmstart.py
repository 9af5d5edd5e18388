import dataclasses
import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import knapsack_rl.models.warmstart as ws
from knapsack_rl.models import TinyModelConfig, load_causal_lm
from knapsack_rl.models.warmstart import (
    WarmStartConfig,
    sft_sampler,
    training_profile,
    warm_start,
    weights_key,
)
from knapsack_rl.tasks import ArithmeticConfig, PromptSet, TaskConfig, load_task, write_verl

torch.set_num_threads(1)
MODEL = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, max_positions=64)
WARM = WarmStartConfig(steps=3, batch_size=8, profile_samples=2)


def _arith(**changes):
    values = {"train_per_level": (3,) * 8, "eval_per_level": 2, "warmstart_per_level": (4,) * 8, **changes}
    return load_task(TaskConfig(arithmetic=ArithmeticConfig(**values)))


def test_weights_key_ignores_train_and_eval_but_not_what_sets_the_weights():
    base = _arith()
    key = weights_key(WARM, MODEL, base.chars, base.warmstart)
    for other in (_arith(eval_per_level=5), _arith(train_per_level=(6,) * 8)):
        assert weights_key(WARM, MODEL, other.chars, other.warmstart) == key
    assert weights_key(WARM, MODEL, base.chars, _arith(warmstart_per_level=(5,) * 8).warmstart) != key
    assert weights_key(WARM, MODEL, base.chars + "x", base.warmstart) != key
    assert weights_key(WarmStartConfig(steps=4, batch_size=8), MODEL, base.chars, base.warmstart) != key
    assert (
        weights_key(WarmStartConfig(steps=3, batch_size=8, profile_samples=9), MODEL, base.chars, base.warmstart) == key
    )


def test_warm_start_builds_once_and_reuses_the_cache_across_eval_sizes(tmp_path):
    task = _arith()
    path = warm_start(tmp_path, task, warm=WARM, model=MODEL)
    report = json.loads((path / "warmstart.json").read_text())
    assert report["warmstart_data"]["size"] == 32 and report["config"]["chars"] == task.chars
    stamp = (path / "warmstart.json").stat().st_mtime_ns
    assert warm_start(tmp_path, _arith(eval_per_level=7), warm=WARM, model=MODEL) == path
    assert (path / "warmstart.json").stat().st_mtime_ns == stamp  # not rebuilt
    _, tok = load_causal_lm(path)
    assert tok.decode(tok("12+3=")["input_ids"][1:]) == "12+3="
    assert not list(tmp_path.glob("*.tmp"))


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    import knapsack_rl.models.warmstart as ws

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ws, "train_supervised", crash)
    task = _arith()
    with pytest.raises(KeyboardInterrupt):
        warm_start(tmp_path, task, warm=WARM, model=MODEL)
    key = weights_key(WARM, MODEL, task.chars, task.warmstart)
    assert [p.name for p in tmp_path.iterdir()] == [f".{key}.lock"]  # the (released) build lock, no cache
    assert (tmp_path / f".{key}.lock").read_bytes() == b""


# A builder that holds the build lock, stalled inside its training until another process waits for the lock
# (a blocked flock request shows in /proc/locks as "->" on the lock file's inode).
STALLED_BUILDER = textwrap.dedent(
    """
    import os, pathlib, sys, time
    import torch
    import knapsack_rl.models.warmstart as ws
    from tests.models.test_warmstart import MODEL, WARM, _arith

    torch.set_num_threads(1)
    real = ws.train_supervised

    def stalled(*args, **kwargs):
        print("TRAINING", flush=True)
        deadline = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < deadline:
            inodes = {p.stat().st_ino for p in pathlib.Path(sys.argv[1]).glob(".*.lock")}
            if any("->" in line and int(line.split()[-3].split(":")[-1]) in inodes for line in open("/proc/locks")):
                break
            time.sleep(0.05)
        return real(*args, **kwargs)

    ws.train_supervised = stalled
    print(ws.warm_start(sys.argv[1], _arith(), warm=WARM, model=MODEL), flush=True)
    """
)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="the stalled builder watches Linux /proc/locks")
def test_two_processes_building_one_fresh_cache_build_it_once(tmp_path, monkeypatch, caplog):
    import knapsack_rl.models.warmstart as ws

    root, src = Path(__file__).resolve().parents[2], Path(ws.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(root)]), "OMP_NUM_THREADS": "1"}
    other = subprocess.Popen([sys.executable, "-c", STALLED_BUILDER, str(tmp_path), "30"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=root)  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "TRAINING"
        trained_here = []
        monkeypatch.setattr(ws, "train_supervised", lambda *a, **k: trained_here.append(1) or [])
        with caplog.at_level(logging.INFO, logger="knapsack_rl"):
            path = warm_start(tmp_path, _arith(), warm=WARM, model=MODEL)  # waits for the other build
        out, err = other.communicate(timeout=120)
    finally:
        other.kill()
        other.wait()
    assert other.returncode == 0, err[-2000:]
    assert out.strip() == str(path) and trained_here == []  # built once, by the other process; reused here
    assert f"is in use by pid {other.pid} on host" in caplog.text and "built by another process" in caplog.text
    assert json.loads((path / "warmstart.json").read_text())["warmstart_data"]["size"] == 32
    load_causal_lm(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f".{path.name}.lock"])


def test_an_unwritable_or_full_cache_folder_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"^warmstart_dir /proc/knapsack-rl-ws is not writable \(.+\)$"):
        warm_start("/proc/knapsack-rl-ws", _arith(), warm=WARM, model=MODEL)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ValueError, match=r"^cannot write the warm start to .*/[0-9a-f]{12} \(No space left on dev"):
        warm_start(tmp_path, _arith(), warm=WARM, model=MODEL)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # no cache, no temp folder


def test_training_profile_is_cached_per_training_set(tmp_path):
    task = _arith()
    path = warm_start(tmp_path, task, warm=WARM, model=MODEL)
    first = training_profile(path, task, samples=2)
    assert len(first["success_rates"]) == len(task.train) and set(first["per_level"]) == set(task.train.level_names())
    assert len(list((path / "profiles").iterdir())) == 1
    assert training_profile(path, task, samples=2) == first
    other = _arith(train_per_level=(4,) * 8)
    assert len(training_profile(path, other, samples=2)["success_rates"]) == 32
    assert len(list((path / "profiles").iterdir())) == 2


def test_bring_your_own_task_from_files(tmp_path):
    def ps(ids, words):
        n = len(ids)
        return PromptSet(np.array(ids, dtype=np.int64), [f"r:{w}=" for w in words], [w[::-1] for w in words], ["a"] * n)

    write_verl(ps([1, 2, 3], ["abc", "bca", "cab"]), tmp_path / "train.jsonl")
    write_verl(ps([4], ["acb"]), tmp_path / "eval.jsonl")
    write_verl(ps([5, 6, 7, 8], ["aab", "bba", "cca", "abb"]), tmp_path / "warm.jsonl")
    task = load_task(
        TaskConfig(
            source="file",
            data=str(tmp_path / "train.jsonl"),
            eval_data=str(tmp_path / "eval.jsonl"),
            warmstart_data=str(tmp_path / "warm.jsonl"),
        )
    )
    assert task.chars == ":=abcr"
    path = warm_start(tmp_path / "cache", task, warm=WARM, model=MODEL)
    _, tok = load_causal_lm(path)
    assert len(tok) == 4 + len(task.chars)
    assert tok.decode(tok("r:cab=")["input_ids"][1:]) == "r:cab="


def test_errors():
    task = _arith()
    with pytest.raises(ValueError, match=r"level_weights names levels \['L9'\] that the warm-start set lacks"):
        sft_sampler(task.warmstart, WarmStartConfig(level_weights={"L9": 1.0}))
    with pytest.raises(ValueError, match=r"max_positions=8 is too small: the .* needs 1[0-9] positions"):
        warm_start("unused", task, warm=WARM, model=TinyModelConfig(hidden_size=32, num_heads=2, max_positions=8))
    with pytest.raises(ValueError, match=r"level_weights\['L1'\] must be >= 0.0"):
        WarmStartConfig(level_weights={"L1": -1.0})


def test_sampler_follows_level_weights():
    task = _arith()
    draw = sft_sampler(task.warmstart, WarmStartConfig(batch_size=2000, level_weights={"L1": 0.0, "L2": 7.0}))
    batch = draw()
    level_of = dict(zip(task.warmstart.prompts, task.warmstart.levels, strict=True))
    counts = {lv: sum(level_of[p] == lv for p, _ in batch) for lv in ("L1", "L2", "L3")}
    assert counts["L1"] == 0 and 900 < counts["L2"] < 1100 and 100 < counts["L3"] < 200  # 7/14 and 1/14


# ------------------------------------------------------------------ the tiny model sizes itself from the task
LONG_PROMPT = "r:" + "ab" * 45 + "="  # 93 characters: BOS + 93 + 8 new tokens = 102 positions


def _long_prompt_task(tmp_path):
    def ps(ids, prompts, answers):
        return PromptSet(np.array(ids, dtype=np.int64), prompts, answers, ["a"] * len(ids))

    write_verl(ps([1, 2], [LONG_PROMPT, "r:ab="], ["ba", "ba"]), tmp_path / "train.jsonl")
    write_verl(ps([3, 4], ["r:aab=", "r:bba="], ["baa", "abb"]), tmp_path / "warm.jsonl")
    config = TaskConfig(source="file", data=str(tmp_path / "train.jsonl"), warmstart_data=str(tmp_path / "warm.jsonl"))
    return config, load_task(config)


def test_tiny_model_positions_follow_the_task(tmp_path):
    _, task = _long_prompt_task(tmp_path)
    unsized = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2)
    path = warm_start(tmp_path / "cache", task, warm=WARM, model=unsized)  # BOS + 93 + "ba" + EOS: 97 positions
    assert json.loads((path / "config.json").read_text())["max_position_embeddings"] == 128  # rounded up
    assert unsized.max_positions is None
    assert json.loads((path / "warmstart.json").read_text())["config"]["model"]["max_positions"] == 128
    assert ws.fit_positions(unsized, task, 8).max_positions == 128
    assert ws.fit_positions(unsized, task, 200).max_positions == 320  # BOS + 93 + 200 = 294
    assert ws.fit_positions(unsized, _arith(), 8).max_positions == 64  # the embedded suite: the old default size
    base = _arith()
    assert weights_key(WARM, ws.fit_positions(unsized, base, 8), base.chars, base.warmstart) == weights_key(
        WARM, MODEL, base.chars, base.warmstart
    )  # same key as an explicit 64: the demo's cached warm start stays valid


def test_an_explicit_max_positions_too_small_for_the_task_is_a_one_line_error(tmp_path):
    _, task = _long_prompt_task(tmp_path)
    too_small = "tiny_model.max_positions=100 is too small: the train prompt 'r:abab"
    with pytest.raises(ValueError, match=rf"^{too_small}.* needs 102 positions \(with max_new_tokens=8\); raise it"):
        warm_start(tmp_path / "cache", task, warm=WARM, model=dataclasses.replace(MODEL, max_positions=100),
                   max_new_tokens=8)  # fmt: skip
    assert not (tmp_path / "cache").exists()  # refused before anything was written
    # the answers fit 100 (BOS + 93 + "ba" + EOS = 97): only the responses the trainer samples do not
    assert ws.fit_positions(dataclasses.replace(MODEL, max_positions=100), task, 0).max_positions == 100


def test_the_trainer_sizes_the_tiny_model_for_a_long_prompt(tmp_path):
    from knapsack_rl.train import TrainConfig
    from knapsack_rl.train.trainer import Trainer

    config, _ = _long_prompt_task(tmp_path)
    unsized = TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), warmstart_dir=str(tmp_path / "ws"), task=config,
                      tiny_model=unsized, warmstart=WARM, prompts_per_step=2, max_steps=1, max_new_tokens=8,
                      eval_every=0, tensorboard=False, progress=False, device="cpu")  # fmt: skip
    trainer = Trainer(cfg)
    try:
        assert trainer.model.config.max_position_embeddings == 128
        trainer.train()
    finally:
        trainer.close()
    explicit = cfg.replace(out_dir=str(tmp_path / "run2"), tiny_model=dataclasses.replace(unsized, max_positions=64))
    with pytest.raises(ValueError, match=r"tiny_model\.max_positions=64 is too small: the train prompt"):
        Trainer(explicit)


def test_the_tiny_models_weights_do_not_depend_on_its_positions():
    from knapsack_rl.models import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    a, b = (build_tiny_model(tok, dataclasses.replace(MODEL, max_positions=n), seed=3) for n in (64, 256))
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
