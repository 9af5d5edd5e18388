"""reasoning-gym source: real data sets (CI installs the gym extra), splits, scoring, verl layout."""

import json
from dataclasses import asdict
from types import MappingProxyType

import numpy as np
import pytest
import reasoning_gym

from knapsack_rl.tasks import (
    GymConfig,
    GymDataset,
    TaskConfig,
    compute_score,
    load_task,
    load_verl_dataset,
    write_task,
    write_verl,
)
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
    from knapsack_rl.tasks.gym import resolve_references

    cfg = _cfg()
    train = build_gym_split(cfg, "train")
    path = write_verl(train, tmp_path / f"train{suffix}", data_source="reasoning_gym")
    back = load_verl_dataset(path)
    assert back.prompts == train.prompts and back.answers == train.answers and back.levels == train.levels
    assert np.array_equal(back.ids, train.ids)
    refs = [{"reasoning_gym": {k: v for k, v in e["reasoning_gym"].items() if k != "entry"}} for e in train.extras]
    assert back.extras == refs  # the file carries references only
    assert resolve_references(back, cfg, str(path)).extras == train.extras  # the config regenerates the entries
    if suffix == ".jsonl":
        row = json.loads(path.read_text().splitlines()[0])
        info = row["extra_info"]
        mix = asdict(cfg)
        assert compute_score("reasoning_gym", train.answers[0], row["reward_model"]["ground_truth"], info, mix) == 1.0
        tagged = f"thinking... <answer>{train.answers[0]}</answer>"
        assert compute_score("reasoning_gym", tagged, train.answers[0], info, reasoning_gym=mix) == 1.0
        expected = gym_reward(["zz"], [train.answers[0]], [train.extras[0]])[0]
        assert compute_score("reasoning_gym", "zz", train.answers[0], info, reasoning_gym=mix) == expected
        assert compute_score("x", "4", "4", {"index": 1}) == 1.0  # no gym record: exact match
        with pytest.raises(ValueError, match=r"pass the run's task\.reasoning_gym config as reward\.custom_reward"):
            compute_score("reasoning_gym", train.answers[0], train.answers[0], info)


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
            reasoning_gym=_cfg(),  # the mix the files were written from: it regenerates their entries
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


# ------------------------------------------------- files carry references only
def _touch(marker):
    return f"__import__('os').system('touch {marker}')"


def _old_layout_rows(marker):
    """Rows in the old layout: the file embeds the entry that is scored against, with evaluated payloads."""
    entries = [
        ("number_sorting", {"answer": _touch(marker), "metadata": {"direction": "ascending"}}),
        ("simple_integration", {"answer": "x", "metadata": {"variable": "x", "integrand": _touch(marker)}}),
        ("polynomial_multiplication", {"answer": _touch(marker), "metadata": {}}),
    ]
    rows = []
    for i, (name, entry) in enumerate(entries):
        record = {"dataset": name, "config": {}, "entry": {"question": "q", **entry}}
        info = {"index": i, "extras": json.dumps({"reasoning_gym": record})}
        rows.append({"prompt": "sort=", "reward_model": {"ground_truth": "[1]"}, "extra_info": info})
    return rows


def test_a_file_in_the_old_layout_is_refused_and_its_payloads_never_run(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _old_layout_rows(marker)))
    mix = GymConfig(datasets=(GymDataset("number_sorting"),))
    cfg = TaskConfig(source="file", data=str(path), reward="reasoning_gym", reasoning_gym=mix)
    with pytest.raises(ValueError, match=r"old\.jsonl row 1: extra_info\.extras embeds the reasoning-gym entry") as err:
        load_task(cfg)
    assert "regenerate the file with knapsack_rl.tasks.write_task" in str(err.value) and "\n" not in str(err.value)
    for row in _old_layout_rows(marker):  # verl's reward function refuses them too
        for response in ("[1]", "x", _touch(marker)):
            with pytest.raises(ValueError, match="old layout"):
                compute_score("reasoning_gym", response, "[1]", row["extra_info"], reasoning_gym=asdict(mix))
    assert not marker.exists()


def _written(tmp_path, mix):
    task = load_task(TaskConfig(source="reasoning_gym", reasoning_gym=mix))
    try:
        return task, write_task(task, tmp_path / "data", suffix=".jsonl")
    finally:
        task.close()


SORT_MIX = GymConfig(
    datasets=(GymDataset("number_sorting", {"min_numbers": 3, "max_numbers": 4}), GymDataset("gcd", prompt="compact")),
    seed=4,
    train_size=12,
    eval_size=4,
    warmstart_size=4,
)


def _rewrite_first_row(path, change):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows[0])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _set_reference(**values):
    def change(row):
        extras = json.loads(row["extra_info"]["extras"])
        extras["reasoning_gym"].update(values)
        row["extra_info"]["extras"] = json.dumps(extras)

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set_reference(dataset="spell_backward"), "names data set 'spell_backward' with config .* not in the run"),
        (_set_reference(dataset="simple_integration"), "names data set 'simple_integration' .* not in the run"),
        (_set_reference(config={"min_numbers": 3, "max_numbers": 9}), "with config .* which is not in the run"),
        (_set_reference(split="test"), r"names split 'test'; valid: \['train', 'eval', 'warmstart'\]"),
        (_set_reference(index=-1), r"index must be an integer in \[0, \d+\) for the train split; got -1"),
        (_set_reference(index=10**9), r"index must be an integer in \[0, \d+\) for the train split"),
        (_set_reference(index="3"), r"index must be an integer .* got '3'"),
        (_set_reference(index=True), r"index must be an integer .* got True"),
        (_set_reference(note="x"), r"must have exactly the keys \['dataset', 'config', 'split', 'index'\]"),
        (lambda row: row["reward_model"].update(ground_truth="['1']"), r"ground_truth \"\['1'\]\" is not the answer"),
        (lambda row: row["extra_info"].pop("extras"), "no reasoning_gym reference in extra_info.extras"),
    ],
)
def test_a_bad_reference_is_one_line_naming_file_and_row(tmp_path, change, message):
    _, paths = _written(tmp_path, SORT_MIX)
    _rewrite_first_row(paths["train"], change)
    cfg = TaskConfig(
        source="file",
        data=str(paths["train"]),
        eval_data=str(paths["eval"]),
        reward="reasoning_gym",
        reasoning_gym=SORT_MIX,
    )
    with pytest.raises(ValueError, match=rf"train\.jsonl row 1 \(id -?\d+\): .*{message}") as err:
        load_task(cfg)
    assert "\n" not in str(err.value)


def test_files_and_verl_rows_score_against_the_entries_the_config_regenerates(tmp_path):
    gym, paths = _written(tmp_path, SORT_MIX)
    cfg = TaskConfig(source="file", data=str(paths["train"]), reward="reasoning_gym_binary", reasoning_gym=SORT_MIX)
    files = load_task(cfg)
    try:
        assert files.train.extras == gym.train.extras
        idx = np.arange(len(files.train), dtype=np.int64)
        assert files.score(files.train, idx, files.train.answers).tolist() == [1.0] * len(idx)
    finally:
        files.close()
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    mix = MappingProxyType(
        {**asdict(SORT_MIX), "datasets": tuple(MappingProxyType(d) for d in asdict(SORT_MIX)["datasets"])}
    )
    for row in rows:  # verl's reward function, with the mix from reward_kwargs (any mappings, e.g. OmegaConf's)
        truth = row["reward_model"]["ground_truth"]
        assert compute_score("reasoning_gym", f"<answer>{truth}</answer>", truth, row["extra_info"], mix) == 1.0
    with pytest.raises(ValueError, match=r"ground_truth '1' is not the answer of the entry the reference regenerates"):
        compute_score("reasoning_gym", "1", "1", rows[0]["extra_info"], reasoning_gym=mix)
    other = asdict(GymConfig(datasets=(GymDataset("gcd", prompt="compact"),)))
    with pytest.raises(ValueError, match=r"extra_info\.index=-?\d+: its reference names data set .* not in the run"):
        compute_score("reasoning_gym", "1", rows[0]["reward_model"]["ground_truth"], rows[0]["extra_info"], other)
    with pytest.raises(ValueError, match="holds a reference but no entry: load files through load_task"):
        gym_reward(["1"], ["1"], load_verl_dataset(paths["train"]).extras[:1])


def test_a_mix_may_not_repeat_a_data_set_with_the_same_config():
    with pytest.raises(
        ValueError, match="datasets must not repeat a data set with the same config; 'gcd' appears twice"
    ):
        GymConfig(datasets=(GymDataset("gcd", weight=1.0), GymDataset("gcd", weight=2.0, difficulty="x")))
    GymConfig(datasets=(GymDataset("gcd"), GymDataset("gcd", {"max_value": 50})))  # another config is fine
