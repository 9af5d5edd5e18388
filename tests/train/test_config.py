"""TrainConfig: the method's settings embedded (not retyped), nonsense refused, files read strictly."""

import json

import pytest

from knapsack_rl import KnapsackConfig
from knapsack_rl.train import TrainConfig, config_from_dict, load_config


def test_knapsack_settings_are_embedded_with_an_explicit_preset(tmp_path):
    assert TrainConfig().knapsack == KnapsackConfig.preset("project")
    (tmp_path / "c.yaml").write_text(
        "prompts_per_step: 16\nknapsack:\n  preset: recipe\n  max_n: 64\n  estimator: beta\n"
        "task:\n  arithmetic:\n    train_per_level: [1, 1, 1, 2, 2]\n"
    )
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.knapsack == KnapsackConfig.preset("recipe", max_n=64, estimator="beta")
    assert cfg.task.arithmetic.train_per_level == (1, 1, 1, 2, 2) and cfg.n == 8
    nested = config_from_dict({"knapsack": {"allocation": {"max_n": 32}, "tracker": {"min_count": 4}}})
    assert nested.knapsack == KnapsackConfig.preset("project", max_n=32, min_count=4)
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # config.json round trip
    assert TrainConfig().replace(max_n=64, lr=1e-3).knapsack.allocation.max_n == 64


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"advantage_clip": -5}, r"advantage_clip must be > 0.0; got advantage_clip=-5.0"),
        ({"clip_low": -3}, r"clip_low must be >= 0.0; got clip_low=-3.0"),
        ({"clip_low": 1.0}, r"clip_low must be < 1.0"),
        ({"dual_clip": 0.5}, r"dual_clip must be > 1.0; got dual_clip=0.5"),
        ({"weight_decay": -1}, r"weight_decay must be >= 0.0; got weight_decay=-1.0"),
        ({"device": "tpu:9"}, r"device must be auto, cpu, mps, cuda or cuda:<index>; got device='tpu:9'"),
        ({"resume": "no"}, r"resume must be true or false \(a bool\); got resume='no'"),
        ({"progress": 1}, r"progress must be true or false"),
        ({"loss_agg": "sum"}, r"loss_agg must be one of \['token-mean', 'seq-mean-token-mean', 'group-mean'\]"),
        ({"task": {"reward": "nope"}}, r"reward='nope' is not a registered reward function"),
        ({"knapsack": {"fallback": "false"}}, r"fallback must be true or false \(a bool\); got fallback='false'"),
        ({"knapsack": {"alpha": 2.0}}, r"alpha must be < 1.0; got alpha=2.0"),
        ({"knapsack": {"preset": "best"}}, r"preset='best' is not a registered preset"),
        ({"knapsack": {"max_nn": 3}}, r"unknown setting\(s\) \['max_nn'\] in knapsack"),
        ({"nn": 4}, r"unknown setting\(s\) \['nn'\] in config"),
        ({"allocation_rule": "dapo"}, r"^setting 'allocation_rule' in config was renamed 'rule'"),
        ({"rule": "knapsack:uniform"}, r"rule must be one of \['coba', 'dapo', 'greso', 'knapsack', "),
    ],
)
def test_nonsense_is_refused_with_the_name_and_value(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(values)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml:2: while parsing a flow sequence: expected ',' or '\]'"):
        load_config(bad)
    (tmp_path / "wrong.yaml").write_text("knapsack:\n  fallback: 'no'\n")
    with pytest.raises(ValueError, match=r"wrong.yaml: fallback must be true or false"):
        load_config(tmp_path / "wrong.yaml")
    with pytest.raises(ValueError, match=r"config file .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_numbers_in_exponent_form_are_floats(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-4\nweight_decay: 5E-3\nknapsack:\n  beta_prior: [5e-1, 2]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.lr == 1e-4 and cfg.weight_decay == 5e-3 and cfg.knapsack.tracker.beta_prior == (0.5, 2.0)


def test_yaml_1_1_booleans_are_not_taken_for_booleans(tmp_path):
    (tmp_path / "c.yaml").write_text("resume: no\n")  # YAML 1.1 (yaml.safe_load) reads False
    with pytest.raises(ValueError, match=r"c.yaml: resume must be true or false \(a bool\); got resume='no'"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: 1e-3\nseed: 1\nlr: 2e-3\n", r"^.*c.yaml:3: duplicate key 'lr' \(first on line 1\)$"),
        ("knapsack:\n  max_n: 32\n  max_n: 64\n", r"^.*c.yaml:3: duplicate key 'max_n' \(first on line 2\)$"),
        ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: [*a, *a, *a, *a, *a, *a, *a]\n", r"^.*c.yaml:1: anchors and aliases"),
        ("lr: [1e-3\n", r"^.*c.yaml:2: while parsing a flow sequence: expected ',' or '\]', but got '<stream end>'$"),
    ],
)
def test_yaml_configs_refuse_duplicates_and_aliases_in_one_line(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "c.yaml")


def test_billion_laughs_config_is_refused_at_once(tmp_path):
    # ten levels of nine aliases under a real key: about 10**9 strings once expanded (yaml.safe_load, then the
    # error message's repr of the value: over 4 GB and minutes)
    laughs = ["lr:", '  - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    laughs += [f"  - &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "laughs.yaml").write_text("\n".join(laughs) + "\n")
    with pytest.raises(ValueError, match=r"laughs.yaml:2: anchors and aliases \(&name, \*name\) are not allowed$"):
        load_config(tmp_path / "laughs.yaml")


def test_json_configs_refuse_duplicate_keys_and_config_paths_that_are_not_files(tmp_path):
    (tmp_path / "c.json").write_text('{"lr": 0.001, "lr": 0.002}')
    with pytest.raises(ValueError, match=r"c.json: duplicate key 'lr' in a JSON object$"):
        load_config(tmp_path / "c.json")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ValueError, match=r"^config file .*dir.yaml is a folder$"):
        load_config(tmp_path / "dir.yaml")
    (tmp_path / "big.json").write_text(" " * (1 << 20) + "{}")
    with pytest.raises(ValueError, match=r"big.json is 1048578 bytes, over the limit of 1048576$"):
        load_config(tmp_path / "big.json")


def test_values_of_the_wrong_kind_are_value_errors(tmp_path):
    for text, message in (
        ("task: {arithmetic: {levels: 5}}\n", r"c.yaml: a setting has a value of the wrong type"),
        ("model: 5\n", r"c.yaml: model must be a non-empty path; got model=5"),
        ("knapsack: {preset: [1]}\n", r"c.yaml: preset=\[1\] is not a registered preset; valid: \['project'"),
    ):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ValueError, match=message):
            load_config(tmp_path / "c.yaml")


def _file_task(root):
    """A small verl-layout file task whose levels are L1-L3 (none of the demo's L5, L6)."""
    from knapsack_rl.tasks import ArithmeticConfig, TaskConfig, load_task, write_task

    arithmetic = ArithmeticConfig(levels=("L1", "L2", "L3"), train_per_level=(4, 4, 4), eval_per_level=1,
                                  warmstart_per_level=(8, 8, 8))  # fmt: skip
    files = write_task(load_task(TaskConfig(arithmetic=arithmetic)), root / "data", suffix=".jsonl")
    return {"source": "file", "data": str(files["train"]), "eval_data": str(files["eval"]),
            "warmstart_data": str(files["warmstart"])}  # fmt: skip


TINY_RUN = (
    "tiny_model: {hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 2}\n"
    "prompts_per_step: 4\nmax_new_tokens: 4\neval_k: 2\ntensorboard: false\nprogress: false\n"
)


def test_warm_start_defaults_follow_the_task(tmp_path):
    from knapsack_rl.models.warmstart import WarmStartConfig
    from knapsack_rl.train.config import default_warmstart, demo_warmstart

    task = _file_task(tmp_path)
    assert TrainConfig().warmstart == demo_warmstart() == default_warmstart(TrainConfig().task)  # the demo's own
    assert config_from_dict({"task": task}).warmstart == WarmStartConfig(steps=1500)  # no warmstart section
    partial = config_from_dict({"task": task, "warmstart": {"steps": 2}})
    assert partial.warmstart == WarmStartConfig(steps=2)  # a partial section overlays the file task's default
    weighted = config_from_dict({"task": task, "warmstart": {"level_weights": {"L3": 0.1}}}).warmstart
    assert weighted.level_weights == {"L3": 0.1}  # given weights are kept
    arithmetic = config_from_dict({"task": {"arithmetic": {"levels": ["L1", "L2"], "train_per_level": [4, 4],
                                                           "warmstart_per_level": [8, 8]}}})  # fmt: skip
    assert arithmetic.warmstart.level_weights is None  # other arithmetic levels: not the demo task either


def test_a_file_task_without_a_warmstart_section_trains(tmp_path, capsys):
    """The demo's level weights (L5, L6) no longer leak into a file task whose levels are others."""
    from knapsack_rl.cli import main

    task = _file_task(tmp_path)
    config = tmp_path / "file_task.yaml"
    config.write_text(f"task: {json.dumps(task)}\n{TINY_RUN}warmstart_dir: {tmp_path / 'ws'}\n")
    run = ["train", "--config", str(config), "--max-steps", "1", "--set", "warmstart.steps=2"]
    assert main([*run, "--out-dir", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "a" / "config.json").read_text())["warmstart"]["level_weights"] is None

    demo = tmp_path / "demo_task.yaml"  # the demo task in the file, the file task given by --set
    demo.write_text(f"{TINY_RUN}warmstart_dir: {tmp_path / 'ws'}\n")
    sets = [x for key, value in task.items() for x in ("--set", f"task.{key}={value}")]
    run = ["train", "--config", str(demo), "--max-steps", "1", "--set", "warmstart.steps=2", *sets]
    assert main([*run, "--out-dir", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["warmstart"]["level_weights"] is None and saved["warmstart"]["steps"] == 2
