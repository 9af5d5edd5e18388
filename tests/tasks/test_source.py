import json

import numpy as np
import pytest

from knapsack_rl.tasks import ArithmeticConfig, TaskConfig, load_task, write_verl
from knapsack_rl.tasks.base import PromptSet
from knapsack_rl.tasks.source import ARITHMETIC_CHARS

SMALL = ArithmeticConfig(train_per_level=(4,) * 8, eval_per_level=2, warmstart_per_level=(5,) * 8)


def _set(ids, prompts, answers):
    return PromptSet(ids=np.array(ids, dtype=np.int64), prompts=prompts, answers=answers, levels=["all"] * len(ids))


def test_arithmetic_task_has_three_disjoint_sets_and_exact_scoring():
    task = load_task(TaskConfig(arithmetic=SMALL))
    assert (len(task.train), len(task.eval), len(task.warmstart)) == (32, 16, 40)
    assert task.chars == ARITHMETIC_CHARS
    rewards = task.score(task.eval, np.array([1, 0, 1]), [task.eval.answers[1], "x", " " + task.eval.answers[1]])
    assert rewards.tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"prompt_index must hold one position in \[0, 16\)"):
        task.score(task.eval, np.array([16]), ["1"])


def test_file_task_reads_three_files_and_builds_chars_over_all(tmp_path):
    write_verl(_set([1, 2], ["ab=", "ba="], ["ba", "ab"]), tmp_path / "train.jsonl")
    write_verl(_set([3], ["cd="], ["dc"]), tmp_path / "eval.jsonl")
    write_verl(_set([4, 5], ["xy=", "yz="], ["yx", "zy"]), tmp_path / "warm.parquet")
    cfg = TaskConfig(
        source="file",
        data=str(tmp_path / "train.jsonl"),
        eval_data=str(tmp_path / "eval.jsonl"),
        warmstart_data=str(tmp_path / "warm.parquet"),
    )
    task = load_task(cfg)
    assert task.train.prompts == ["ab=", "ba="] and task.warmstart.ids.tolist() == [4, 5]
    assert task.chars == "=abcdxyz"
    assert json.loads(json.dumps(__import__("dataclasses").asdict(cfg)))["source"] == "file"


def test_file_sets_must_be_disjoint(tmp_path):
    write_verl(_set([1, 2], ["a=", "b="], ["a", "b"]), tmp_path / "train.jsonl")
    write_verl(_set([2], ["b="], ["b"]), tmp_path / "warm.jsonl")
    cfg = TaskConfig(source="file", data=str(tmp_path / "train.jsonl"), warmstart_data=str(tmp_path / "warm.jsonl"))
    with pytest.raises(
        ValueError, match=r"data and warmstart_data must be disjoint; 1 extra_info.index values .*first: 2"
    ):
        load_task(cfg)


def test_config_validation_and_dict_sub_configs():
    with pytest.raises(ValueError, match="source='nope' is not a registered task source; valid:"):
        TaskConfig(source="nope")
    with pytest.raises(ValueError, match="source='file' needs data"):
        TaskConfig(source="file")
    with pytest.raises(ValueError, match=r"\['data'\] are read only with source='file'"):
        TaskConfig(data="x.jsonl")
    with pytest.raises(ValueError, match="reward='nope' is not a registered reward function"):
        TaskConfig(source="file", data="x.jsonl", reward="nope")
    cfg = TaskConfig(arithmetic={"eval_per_level": 3}, scoring={"on_failure": "raise"})
    assert cfg.arithmetic.eval_per_level == 3 and cfg.scoring.on_failure == "raise"
    assert cfg.reward_name() == "exact" and TaskConfig(source="reasoning_gym").reward_name() == "reasoning_gym"


def test_task_config_survives_json():
    from dataclasses import asdict

    from knapsack_rl.tasks import GymConfig, GymDataset, LevelSpec

    cfg = TaskConfig(
        source="reasoning_gym",
        arithmetic=ArithmeticConfig(
            levels=("L1", "X"),
            train_per_level=(2, 3),
            warmstart_per_level=(1, 1),
            custom_levels=(LevelSpec("X", "*", (10, 99), (10, 99), (0, 2)),),
        ),
        reasoning_gym=GymConfig(datasets=(GymDataset("gcd", {"max_value": 50}, 2.0, "small", ("num_terms",)),)),
    )
    assert TaskConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg
