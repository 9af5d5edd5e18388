"""The TRL launcher's ``--config`` YAML goes through the package's YAML reader (knapsack_rl.safe_yaml)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from knapsack_rl.integrations.trl import cli

HEAD = """\
model_path: {root}/model
dataset_path: {root}/data.jsonl
reward_funcs: [tests.integrations.test_trl.parity_reward]
output_dir: {root}/out
use_cpu: true
per_device_train_batch_size: 12
num_generations: 4
report_to: none
"""


def _config(tmp_path: Path, body: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(HEAD.format(root=tmp_path) + body)
    return str(path)


def test_exponent_numbers_are_floats_in_lists_too(tmp_path: Path) -> None:
    launch, args = cli.parse_args(["--config", _config(tmp_path, "learning_rate: 5e-4\nbeta_prior: [5e-1, 2]\n")])
    assert args.learning_rate == 5e-4 and args.knapsack.tracker.beta_prior == (0.5, 2.0)
    assert launch.reward_funcs == ["tests.integrations.test_trl.parity_reward"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("learning_rate: 1e-3\nlearning_rate: 2e-3\n", r"c.yaml:10: duplicate key 'learning_rate' \(first on line 9\)"),
        ("x: &a [1, 2]\nbeta_prior: *a\n", r"c.yaml:9: anchors and aliases \(&name, \*name\) are not allowed$"),
        ("env: {KNAPSACK_TEST_ENV: 1}\nmax_rollouts: 64\n", r"c.yaml: Unknown arguments from config file"),
    ],
)
def test_bad_launcher_configs_are_one_line_errors_and_change_nothing(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        cli.parse_args(["--config", _config(tmp_path, body)])
    assert "\n" not in str(info.value)
    assert "KNAPSACK_TEST_ENV" not in os.environ  # a refused config exports nothing
