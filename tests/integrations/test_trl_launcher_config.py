"""The TRL launcher's ``--config`` YAML goes through the package's YAML reader (knapsack_rl.safe_yaml)."""

from __future__ import annotations

import os
import re
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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("max_rollouts: 64\n", r"c.yaml: Unknown arguments from config file: \['--max_rollouts', '64'\]"),
        (
            "rule: dapo\n",
            r"rule 'dapo' cannot run in trl: it generates in rounds within a step, .*: simulator, trainer$",
        ),
        ("knapsack_preset: two-phase\n", r"rule 'knapsack' cannot run in trl: .*\(probe_n=4: two-phase planning; se"),
        ("rule: nope\n", r"rule='nope' is not a registered rule; valid: \['coba', "),
        ("loss_agg: token-mean\n", r"loss_agg must be one of \['group-mean'\] or unset; got loss_agg='token-mean'$"),
        ("threads: -1\n", r"threads must be >= 0 \(0: torch's default\); got threads=-1$"),
        (
            "model_name_or_path: Qwen/Qwen2.5-0.5B\n",
            r"model_path=.* and model_name_or_path='Qwen/Qwen2.5-0.5B' name th",
        ),
        (
            "dataset_name: openai/gsm8k\n",
            r"dataset_path=.* and dataset_name='openai/gsm8k' name the same thing; set one",
        ),
    ],
)
def test_the_launchers_bad_configs_end_with_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    assert cli.main(["--config", _config(tmp_path, body)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("python -m knapsack_rl.integrations.trl: error: "), err
    assert re.search(message, err[0]), err[0]


@pytest.mark.parametrize(
    ("drop", "body", "message"),
    [
        (
            "model_path",
            "model_name_or_path: Qwen/Qwen2.5-0.5B\n",
            r"model_name_or_path='Qwen/Qwen2.5-0.5B' is not a loc",
        ),
        ("model_path", "", r"model_path \(or TRL's name for it, model_name_or_path\) is required: a local path$"),
        (
            "dataset_path",
            "dataset_name: openai/gsm8k\n",
            r"dataset_name='openai/gsm8k' must be a local .json/",
        ),
        ("reward_funcs", "reward_funcs: [no_such_module.reward]\n", r"cannot import 'no_such_module' \(No module"),
    ],
)
def test_trls_names_for_the_model_and_data_are_local_paths_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str, body: str, message: str
) -> None:
    (tmp_path / "data.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    (tmp_path / "model").mkdir()  # the paths are checked before anything is loaded
    head = "".join(line + "\n" for line in HEAD.format(root=tmp_path).splitlines() if not line.startswith(drop))
    path = tmp_path / "c.yaml"
    path.write_text(head + body)
    assert cli.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("python -m knapsack_rl.integrations.trl: error: "), err
    assert re.search(message, err[0]), err[0]


def test_the_launchers_help_lists_only_what_trl_runs() -> None:
    text = " ".join(cli.make_parser().format_help().split())
    assert "Preset the knapsack settings start from: project, recipe, signal; fields set override it." in text
    assert "two-phase" not in text  # a preset TRL refuses is not offered
    rules = (
        "coba, knapsack, knapsack:project, knapsack:recipe, knapsack:signal, uncertainty, uniform (the rules TRL runs)"
    )
    assert rules in text
    for flag in ("--model_name_or_path", "--dataset_name", "--threads", "--loss_agg"):
        assert flag in text, flag
