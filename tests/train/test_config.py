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
        ({"knapsack": {"max_nn": 3}}, r"unknown key\(s\) \['max_nn'\] in knapsack"),
        ({"nn": 4}, r"unknown config keys \['nn'\]"),
    ],
)
def test_nonsense_is_refused_with_the_name_and_value(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(values)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml: cannot be parsed"):
        load_config(bad)
    (tmp_path / "wrong.yaml").write_text("knapsack:\n  fallback: 'no'\n")
    with pytest.raises(ValueError, match=r"wrong.yaml: fallback must be true or false"):
        load_config(tmp_path / "wrong.yaml")
    with pytest.raises(ValueError, match=r"config file .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")
