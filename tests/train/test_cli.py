"""knapsack-rl train / compare / demo / preflight: flags generated from the configs, paired output."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import torch

from knapsack_rl.cli import build_parser, main
from knapsack_rl.train.cli import build_config
from tests.train.tiny_run import tiny_settings

torch.set_num_threads(1)

TINY = tiny_settings()


def _config(tmp_path, **extra):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"warmstart_dir": str(tmp_path / "ws"), **TINY, **extra}))
    return path


def test_demo_quick_runs_paired_arms_and_prints_a_verdict(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "demo-quick"  # a smoke run never replaces the real demo's runs/demo
    args = ["demo", "--quick", "--config", str(_config(tmp_path)), "--seeds", "0..1"]
    assert main([*args, "--jobs", "1", "--no-progress"]) == 0
    assert not (tmp_path / "runs" / "demo").exists()
    text = capsys.readouterr().out
    assert text.startswith("SMOKE RUN (--quick)")
    for row in ("held-out AUC (%) [primary]", "prompts with signal per step", "paired: arm - uniform"):
        assert row in text
    assert re.search(r"^knapsack (vs|HELPED against|HURT against) uniform: .* 2 paired seeds$", text, re.M)  # verdict
    summary = json.loads((out / "summary.json").read_text())["summaries"]
    assert [s["rollouts"] for s in summary["uniform"]] == [s["rollouts"] for s in summary["knapsack"]] == [192] * 2
    for name in ("effective_prompts.png", "heldout_accuracy.png", "budget_vs_p_knapsack.png"):
        assert (out / name).stat().st_size > 1000
    saved = json.loads((out / "seed1" / "uniform" / "config.json").read_text())
    assert saved["seed"] == 1 and saved["rule"] == "uniform"


def test_an_out_dir_with_results_of_other_settings_is_refused_naming_what_differs(tmp_path, capsys):
    out = tmp_path / "cmp"
    base = ["compare", "--quick", "--config", str(_config(tmp_path)), "--out-dir", str(out), "--no-progress"]
    assert main([*base, "--seeds", "0", "--jobs", "1"]) == 0
    capsys.readouterr()
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    for extra, differ in [
        (["--seeds", "0..1"], "seeds: [0] -> [0, 1]"),
        (["--seeds", "0", "--arms", "uniform,coba"], 'arms: ["uniform", "knapsack"] -> ["uniform", "coba"]'),
        (["--seeds", "0", "--lr", "1e-3"], "config.lr: 0.0002 -> 0.001"),
    ]:
        assert main([*base, *extra]) == 2
        assert _one_error_line(capsys) == (
            f"out_dir {out} holds the results of other settings ({differ}); "
            "use another --out-dir, or delete that folder to start over"
        )
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before  # nothing written
    assert main([*base, "--seeds", "0", "--jobs", "1"]) == 0  # the same settings: its runs are reused
    assert "trained 0 run(s), reused 2 finished run(s) of an earlier command" in capsys.readouterr().out
    other = tmp_path / "other"
    (other / "seed0").mkdir(parents=True)
    assert main(["demo", "--quick", "--config", str(_config(tmp_path)), "--out-dir", str(other), "--seeds", "0"]) == 2
    assert _one_error_line(capsys) == (
        f"out_dir {other} holds files but no compare.json (not a compare's results, or of an older version); "
        "use another --out-dir, or delete that folder"
    )


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("5..1", "--seeds '5..1': the range 5..1 is empty (a range goes up: 1..5)"),
        ("1,a", "--seeds '1,a': 'a' is not a seed (a whole number >= 0)"),
        ("0 1 0", "--seeds '0 1 0': seed 0 is given twice"),
        (" ", "--seeds ' ': no seed given; e.g. --seeds '0 1 2' or --seeds 0..4"),
    ],
)
def test_bad_seeds_are_one_line_errors_naming_seeds(tmp_path, capsys, seeds, message):
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(_config(tmp_path)), "--out-dir", str(out), "--seeds", seeds]) == 2
    assert _one_error_line(capsys) == message
    assert not out.exists() and not (tmp_path / "ws").exists()  # refused before any work


def test_train_flags_override_the_file(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--config", str(_config(tmp_path)), "--rule", "uniform", "--n", "2", "--out-dir", str(out)]
    assert main([*argv, "--max-steps", "3", "--no-progress", "--set", "task.arithmetic.eval_per_level=2"]) == 0
    assert "trained steps 1..3 of 3 (48 rollouts in all)" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["rule"] == "uniform" and saved["knapsack"]["allocation"]["n"] == 2
    assert saved["task"]["arithmetic"]["eval_per_level"] == 2
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["train", "--config", str(_config(tmp_path)), "--set", "lr=-1"]) == 2


def test_every_generated_flag_shows_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("train", "compare", "demo", "preflight", "allocate"):
        generated = set(sub.choices[name].get_default("flag_names"))
        assert len(generated) > 10
        for action in sub.choices[name]._actions:
            if action.dest in generated:
                assert "(default: " in (action.help or ""), (name, action.dest)
    train_flags = {a.dest for a in sub.choices["train"]._actions}
    compare_flags = {a.dest for a in sub.choices["compare"]._actions}
    assert train_flags <= compare_flags and {"progress", "max_n", "estimator", "loss_agg"} <= train_flags


def test_preflight_samples_the_starting_model_and_predicts_each_arm(tmp_path, capsys):
    out = tmp_path / "pre.json"
    argv = [
        "preflight",
        "--config",
        str(_config(tmp_path)),
        "--samples",
        "10",
        "--arms",
        "uniform,knapsack,knapsack:recipe",
    ]
    assert main([*argv, "--json", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "training prompts x 10 samples of the starting model" in text
    assert "knapsack: " in text and "prompts with signal per step against uniform" in text
    saved = json.loads(out.read_text())
    assert len(saved["success_rates"]) == 16 and {p["arm"] for p in saved["predictions"]} == {
        "uniform",
        "knapsack",
        "knapsack:recipe",
    }


def test_preflight_of_a_checkpoint_samples_that_policy(tmp_path, capsys):
    run = tmp_path / "uniform"
    assert main(["train", "--config", str(_config(tmp_path)), "--rule", "uniform", "--out-dir", str(run),
                 "--max-steps", "2", "--no-progress"]) == 0  # fmt: skip
    out = tmp_path / "pre.json"
    argv = [
        "preflight",
        "--config",
        str(_config(tmp_path)),
        "--samples",
        "10",
        "--checkpoint",
        str(run / "checkpoint.pt"),
    ]
    assert main([*argv, "--json", str(out), "--no-progress"]) == 0
    assert f"samples of the policy of {run / 'checkpoint.pt'}" in capsys.readouterr().out
    assert json.loads(out.read_text())["checkpoint"] == str(run / "checkpoint.pt")
    other = _config(tmp_path, task={"arithmetic": {"train_per_level": [3] * 5, "eval_per_level": 1}})
    assert main(["preflight", "--config", str(other), "--checkpoint", str(run / "checkpoint.pt")]) == 2
    assert "written for another policy or task (task differ)" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("knapsack-rl: error: "), err  # one line, no traceback
    return err.removeprefix("knapsack-rl: error: ").rstrip("\n")


@pytest.mark.parametrize("command", ["train", "compare", "demo", "preflight"])
@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("seed.x=1", "--set 'seed.x=1': seed is a setting (seed=0), not a section with keys"),
        ("task.arithmetic.levels.x=1", "--set 'task.arithmetic.levels.x=1': task.arithmetic.levels is a setting"),
        ("lr=[1", "--set 'lr=[1': at column 3: while parsing a flow sequence"),
        ("a..b=1", "--set 'a..b=1': the key 'a..b' has an empty part"),
        ("knapsack.max_n=1e-4", "max_n must be an integer; got max_n=0.0001"),
    ],
)
def test_bad_set_items_are_one_line_errors_for_every_command(tmp_path, capsys, command, assignment, message):
    out = tmp_path / "out"
    assert main([command, "--config", str(_config(tmp_path)), "--out-dir", str(out), "--set", assignment]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_set_reads_exponent_numbers_as_floats(tmp_path):
    args = build_parser().parse_args(["train", "--set", "lr=1e-4", "--set", "knapsack.beta_prior=[5e-1, 2]"])
    cfg = build_config(args)
    assert cfg.lr == 1e-4 and cfg.knapsack.tracker.beta_prior == (0.5, 2.0)


def test_arm_changes_read_exponent_numbers_as_floats():
    from knapsack_rl.train import TrainConfig
    from knapsack_rl.train.compare import resolve_arm

    arm = resolve_arm(TrainConfig(), "knapsack:project+beta_prior=[5e-1, 2]+alpha=5e-1")
    assert arm.knapsack.tracker.beta_prior == (0.5, 2.0) and arm.knapsack.allocation.alpha == 0.5
    with pytest.raises(ValueError, match=r"arm 'knapsack:project\+alpha=0.5\+alpha=0.6': 'alpha' is set twice"):
        resolve_arm(TrainConfig(), "knapsack:project+alpha=0.5+alpha=0.6")


# `knapsack-rl train` whose training stalls once its Trainer is built (and holds out_dir's lock).
STALLED_TRAIN = """
import sys, time
from knapsack_rl.train.trainer import Trainer
from knapsack_rl.cli import main

def stalled(self, **kwargs):
    print("TRAINING", flush=True)
    time.sleep(120)

Trainer.train = stalled
main(sys.argv[1:])
"""


def test_a_second_run_on_one_out_dir_is_refused_naming_the_holder_and_a_killed_run_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--config", str(_config(tmp_path)), "--out-dir", str(out), "--max-steps", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", STALLED_TRAIN, *argv], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "TRAINING"
        assert main(argv) == 2
        message = _one_error_line(capsys)
        host = socket.gethostname()
        assert message.startswith(f"out_dir {out} is in use by pid {first.pid} on host {host} (started ")
        assert message.endswith(f"): -c {' '.join(argv)}; wait for it to finish or use another folder")
        assert not (out / "metrics.jsonl").exists()  # the refused run wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)  # a killed run never blocks the next: the kernel drops its lock
        first.wait()
    assert main(argv) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 2


def test_start_up_problems_are_one_line_errors_and_write_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    base = ["train", "--config", str(_config(tmp_path)), "--out-dir", str(out), "--max-steps", "1"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases = [
        (["--device", "cuda:0"], "device='cuda:0' but CUDA is not available on this machine; use device: cpu or auto"),
        (["--tracker-init", str(tmp_path / "none.bin")], f"tracker_init file {tmp_path / 'none.bin'} does not exist"),
        (["--tracker-init", str(tmp_path)], f"tracker_init file {tmp_path} is a folder"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        assert _one_error_line(capsys) == message
        assert not out.exists()
    for extra, message in [
        (["--out-dir", "/proc/knapsack-rl-run"], "out_dir /proc/knapsack-rl-run is not writable ("),
        (["--warmstart-dir", "/proc/knapsack-rl-ws"], "warmstart_dir /proc/knapsack-rl-ws is not writable ("),
    ]:
        assert main([*base, *extra]) == 2
        assert _one_error_line(capsys).startswith(message)
    assert main(base) == 0  # the run the refused one would have been: its out_dir lock was released
