"""reasoning-gym source: real data sets (CI installs the gym extra), splits, scoring, verl layout."""

import json

import numpy as np
import pytest
import reasoning_gym

from knapsack_rl.tasks import GymConfig, GymDataset, TaskConfig, compute_score, load_task, load_verl_dataset, write_verl
from knapsack_rl.tasks.arithmetic import split_of
from knapsack_rl.tasks.gym import TEMPLATES, build_gym_split, gym_binary_reward, gym_reward, split_counts

MIX = (
    GymDataset(
        "chain_sum", {"min_terms": 2, "max_terms": 3, "max_digits": 2}, prompt="compact", level_by=("num_terms",)
    ),
    GymDataset(
        "spell_backward", {"min_word_len": 3, "max_word_len": 5}, weight=2.0, difficulty="short", prompt="compact"
    ),
)


def _cfg(**sizes):
    return GymConfig(datasets=MIX, seed=3, **{"train_size": 30, "eval_size": 12, "warmstart_size": 40, **sizes})


def test_splits_are_disjoint_labelled_and_follow_the_weights():
    cfg = _cfg()
    train, held, warm = (build_gym_split(cfg, s) for s in ("train", "eval", "warmstart"))
    assert (len(train), len(held), len(warm)) == (30, 12, 40)
    ids = [set(s.ids.tolist()) for s in (train, held, warm)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    prompts = [set(s.prompts) for s in (train, held, warm)]
    assert not prompts[0] & prompts[1] and not prompts[0] & prompts[2] and not prompts[1] & prompts[2]
    assert all(split_of(p, cfg.split_weights) == "train" for p in train.prompts)
    levels = set(train.levels)
    assert levels <= {"chain_sum/num_terms=2", "chain_sum/num_terms=3", "spell_backward/short"}
    assert sum(lv.startswith("spell_backward") for lv in train.levels) == 20  # weight 2 of 3
    spell = [p for p in train.prompts if p.startswith("rev:")]
    assert all(p.endswith("=") and 3 <= len(p) - 5 <= 5 for p in spell)


def test_changing_one_split_size_leaves_the_others_identical():
    base = _cfg()
    for change in ({"train_size": 45}, {"eval_size": 3}, {"warmstart_size": 80}):
        other = _cfg(**change)
        for split in ("train", "eval", "warmstart"):
            if f"{split}_size" not in change:
                assert build_gym_split(base, split).prompts == build_gym_split(other, split).prompts, (change, split)


def test_scoring_equals_the_data_sets_own_score_answer():
    cfg = _cfg()
    train = build_gym_split(cfg, "train")
    for j in range(len(train)):
        record = train.extras[j]["reasoning_gym"]
        dataset = reasoning_gym.create_dataset(record["dataset"], **record["config"], seed=1, size=1)
        entry = record["entry"]
        for response in (train.answers[j], train.answers[j][::-1], "x", train.answers[j][:-1]):
            ours = gym_reward([response], [train.answers[j]], [train.extras[j]])[0]
            assert ours == dataset.score_answer(response, entry)
        assert gym_reward([train.answers[j]], [train.answers[j]], [train.extras[j]])[0] == 1.0


def test_load_task_scores_through_the_contained_scorer():
    task = load_task(TaskConfig(source="reasoning_gym", reasoning_gym=_cfg()))
    try:
        assert task.eval is not None and task.warmstart is not None
        assert set(task.chars) >= set("rev:=+0123456789") and task.chars == "".join(sorted(task.chars))
        idx = np.array([0, 0, 1, 2], dtype=np.int64)
        responses = [task.train.answers[0], "nonsense", task.train.answers[1], task.train.answers[2]]
        rewards = task.score(task.train, idx, responses)
        assert rewards[0] == 1.0 and rewards[2] == 1.0 and rewards[3] == 1.0 and rewards[1] < 1.0
        assert task.reward_counts() == {"reward/failures": 0, "reward/timeouts": 0, "reward/killed": 0}
    finally:
        task.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_verl_round_trip_and_compute_score(tmp_path, suffix):
    train = build_gym_split(_cfg(), "train")
    path = write_verl(train, tmp_path / f"train{suffix}", data_source="reasoning_gym")
    back = load_verl_dataset(path)
    assert back.prompts == train.prompts and back.answers == train.answers and back.levels == train.levels
    assert np.array_equal(back.ids, train.ids) and back.extras == train.extras
    if suffix == ".jsonl":
        row = json.loads(path.read_text().splitlines()[0])
        info = row["extra_info"]
        assert compute_score("reasoning_gym", train.answers[0], row["reward_model"]["ground_truth"], info) == 1.0
        tagged = f"thinking... <answer>{train.answers[0]}</answer>"
        assert compute_score("reasoning_gym", tagged, train.answers[0], info) == 1.0
        expected = gym_reward(["zz"], [train.answers[0]], [train.extras[0]])[0]
        assert compute_score("reasoning_gym", "zz", train.answers[0], info) == expected
        assert compute_score("x", "4", "4", {"index": 1}) == 1.0  # no gym record: exact match


def test_split_counts_largest_remainder():
    assert split_counts(10, [1, 1, 1]) == [4, 3, 3]
    assert split_counts(7, [1, 2]) == [2, 5]
    assert sum(split_counts(1001, [0.3, 0.3, 0.4])) == 1001


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="prompt='compact' needs a template; data sets with one:"):
        GymDataset("sudoku", prompt="compact")
    with pytest.raises(ValueError, match="config must be a mapping without seed / size"):
        GymDataset("chain_sum", {"seed": 3})
    tiny = GymConfig(datasets=(GymDataset("spell_backward", {"min_word_len": 3, "max_word_len": 3}, prompt="compact"),))
    with pytest.raises(ValueError, match=r"'spell_backward' gave \d+ distinct prompts in the eval split"):
        build_gym_split(GymConfig(datasets=tiny.datasets, eval_size=5000), "eval")
    with pytest.raises(ValueError, match="rejected config"):
        build_gym_split(GymConfig(datasets=(GymDataset("chain_sum", {"min_terms": 5, "max_terms": 2}),)), "train")
    assert (
        "chain_sum" in TEMPLATES
        and GymConfig(datasets=({"name": "gcd", "prompt": "compact"},)).datasets[0].name == "gcd"
    )


def test_binary_reward_keeps_only_full_marks():
    train = build_gym_split(_cfg(), "train")
    j = next(i for i, p in enumerate(train.prompts) if p.startswith("rev:"))
    near = train.answers[j][:-1] + ("a" if train.answers[j][-1] != "a" else "b")  # last letter wrong
    partial = gym_reward([near], [train.answers[j]], [train.extras[j]])[0]
    assert 0.0 < partial < 1.0  # spell_backward gives partial credit
    assert gym_binary_reward([near, train.answers[j]], [train.answers[j]] * 2, [train.extras[j]] * 2).tolist() == [0, 1]
    cfg = TaskConfig(source="reasoning_gym", reasoning_gym=GymConfig(datasets=MIX, binary=True))
    assert cfg.reward_name() == "reasoning_gym_binary"


def test_gym_task_written_as_files_loads_the_same_sets_and_scores(tmp_path):
    from knapsack_rl.tasks import write_task

    gym = load_task(TaskConfig(source="reasoning_gym", reasoning_gym=_cfg()))
    paths = write_task(gym, tmp_path, suffix=".jsonl")
    files = load_task(
        TaskConfig(
            source="file",
            data=str(paths["train"]),
            eval_data=str(paths["eval"]),
            warmstart_data=str(paths["warmstart"]),
            reward="reasoning_gym",
        )
    )
    try:
        for name in ("train", "eval", "warmstart"):
            a, b = getattr(gym, name), getattr(files, name)
            assert a.prompts == b.prompts and a.extras == b.extras and np.array_equal(a.ids, b.ids)
        assert files.chars == gym.chars
        idx = np.arange(len(gym.train), dtype=np.int64)
        responses = [a[::-1] for a in gym.train.answers]
        assert np.array_equal(gym.score(gym.train, idx, responses), files.score(files.train, idx, responses))
    finally:
        gym.close()
        files.close()
