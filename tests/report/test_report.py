"""`knapsack-rl report` on real logs: TRL's GRPOTrainer on CPU, verl's own logger classes, the reference trainer's
`compare` folders (where its table, verdict and figures must equal compare's), own-loop JSONL; and bad inputs."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from knapsack_rl.cli import main
from knapsack_rl.report.build import build_report
from knapsack_rl.report.names import mapping_markdown
from knapsack_rl.report.runs import load_run
from knapsack_rl.report.study import load_study
from tests.train.tiny_run import tiny_settings

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]

COMPARE_CONFIG = tiny_settings(
    task={"arithmetic": {"train_per_level": [4, 4, 4, 2, 2], "eval_per_level": 2, "warmstart_per_level": [16] * 5}},
    warmstart={"steps": 60, "batch_size": 32, "profile_samples": 4},
    epochs=3,
    eval_every=1,
    checkpoint_every=0,
)


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _block(text: str) -> str:
    """From the first table to the verdict lines (what compare and report both print)."""
    found = re.search(r"^mean ± 95% CI over seeds {2,}uniform", text, re.M)
    assert found is not None, text
    start = found.start()
    end = text.index("\n\n", text.index("paired: arm - uniform"))
    verdicts = [line for line in text.splitlines() if re.match(r"^\S+ (vs|HELPED against|HURT against) ", line)]
    return text[start:end] + "\n" + "\n".join(verdicts)


# ------------------------------------------------------------------------------------- the reference trainer
@pytest.fixture(scope="module")
def compare_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real `knapsack-rl compare` (2 arms x 2 seeds, tiny model): its folder and what it printed."""
    tmp = tmp_path_factory.mktemp("compare")
    config = tmp / "cfg.json"
    config.write_text(json.dumps({"warmstart_dir": str(tmp / "ws"), **COMPARE_CONFIG}))
    out = tmp / "cmp"
    code, text, err = _run_cli(["compare", "--config", str(config), "--out-dir", str(out), "--seeds", "0..1",
                                "--jobs", "1", "--no-progress"])  # fmt: skip
    assert code == 0, err
    return out, text


def test_report_of_a_compare_folder_prints_compares_table_verdict_and_draws_its_figures(compare_folder):
    folder, compare_text = compare_folder
    code, text, err = _run_cli(["report", str(folder)])
    assert code == 0, err
    assert _block(text) == _block(compare_text)  # the same table and verdict, character for character
    assert re.search(r"^knapsack (vs|HELPED against|HURT against) uniform: .* 2 paired seeds$", text, re.M)
    result = build_report(load_study(folder), folder / "again", plots=False)
    recorded = json.loads((folder / "summary.json").read_text())["summaries"]
    for arm in ("uniform", "knapsack"):  # every number of every run, NaN where compare has NaN
        for mine, theirs in zip(result.summaries[arm], recorded[arm], strict=True):
            assert mine.keys() == theirs.keys()
            for key, value in mine.items():
                assert value == theirs[key] or (math.isnan(value) and math.isnan(theirs[key])), key
    assert max(s["auc"] for s in recorded["knapsack"] + recorded["uniform"]) > 0  # not an all-zero comparison
    for name in ("heldout_accuracy.png", "effective_prompts.png", "effective_grad_ratio.png",
                 "budget_vs_p_knapsack.png"):  # fmt: skip
        assert (folder / "report" / name).read_bytes() == (folder / name).read_bytes(), name
    for name in ("heldout_vs_rollouts.png", "heldout_vs_tokens.png", "heldout_vs_wall.png", "allocation.png"):
        assert (folder / "report" / name).stat().st_size > 5000, name
    assert (folder / "report" / "table.txt").read_text() == text


# ------------------------------------------------------------------------------------------------- TRL
def _study_module() -> Any:
    spec = importlib.util.spec_from_file_location("report_study", ROOT / "examples" / "trl" / "report_study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trl_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/cluster.md's worked example, run for real: TRL's GRPOTrainer, 2 arms x 2 seeds on CPU."""
    out = tmp_path_factory.mktemp("trl") / "runs" / "trl-study"
    with contextlib.redirect_stdout(io.StringIO()):
        assert _study_module().main(["--output-dir", str(out)]) == 0
    return out


def test_report_reads_trl_trainer_state_written_by_grpo_trainer(trl_study):
    manifest = trl_study / "manifest.yaml"
    result = build_report(load_study(manifest), trl_study / "report")
    assert result.eval_key == "eval/avg@4" and result.seeds == [0, 1]
    run = result.runs["knapsack"][1]
    state = json.loads((trl_study / "knapsack-1" / "checkpoint-10" / "trainer_state.json").read_text())
    history = state["log_history"]
    trained = [h for h in history if "train/rollouts_generated" in h]
    assert [r["step"] for r in run.train_rows] == [h["step"] for h in trained] == list(range(1, 11))
    assert run.train_rows[-1]["train/rollouts_total"] == sum(h["train/rollouts_generated"] for h in trained)
    assert run.wall_s == pytest.approx(sum(h["step_time"] for h in trained))  # the checkpoint has no train_runtime
    evals = {h["step"]: h["eval_reward"] for h in history if "eval_reward" in h}
    assert sorted(evals) == [0, 5, 10]  # eval_on_start and every 5 steps
    assert {r["step"]: r["eval/avg@4"] for r in run.rows if "eval/avg@4" in r} == evals
    summary = result.summaries["knapsack"][1]
    assert summary["rollouts"] == run.train_rows[-1]["train/rollouts_total"]
    assert summary["final"] == pytest.approx(sum(list(evals.values())[-3:]) / 3)  # smoothed over 3 evaluations
    assert summary["budget_max"] == max(h["alloc/budget_max"] for h in trained)
    assert "knapsack vs uniform: " in result.text and "MISSING" not in result.text
    assert all(p.stat().st_size > 5000 for p in result.plots) and len(result.plots) == 8


def test_the_worked_example_of_docs_cluster_md_prints_what_the_page_shows(trl_study):
    """The page's pasted output against a rerun: every line exactly (the runs are deterministic on CPU, one
    thread, fixed seeds) but the wall-time rows, checked by shape; the manifest and the mapping table too."""
    page = (ROOT / "docs" / "cluster.md").read_text()
    shown = page.split("<!-- report-output -->\n```text\n", 1)[1].split("```", 1)[0].splitlines()
    code, text, err = _run_cli(["report", str(trl_study / "manifest.yaml")])
    assert code == 0, err
    printed = text.replace(str(trl_study.parent.parent) + "/", "").splitlines()
    assert len(printed) == len(shown)
    for mine, theirs in zip(printed, shown, strict=True):
        if mine.startswith("wall time per run (s)"):
            number = r"[+-]?\d+\.\d ± \d+\.\d"
            assert re.fullmatch(rf"wall time per run \(s\) +{number}( +{number})?", mine), mine
            assert re.fullmatch(rf"wall time per run \(s\) +{number}( +{number})?", theirs), theirs
        else:
            assert mine == theirs
    manifest = (trl_study / "manifest.yaml").read_text()
    assert f"The manifest it wrote:\n\n```yaml\n{manifest}```" in page
    assert mapping_markdown() in page


def test_preflight_from_the_state_trl_saved_after_the_uniform_epoch(trl_study, capsys):
    """checkpoint-5 of each TRL run holds the tracker after the uniform epoch (80 prompts x 4 rewards): the
    rewards TRL logged, the same for both arms of a seed; preflight --state predicts from it, no model."""
    from knapsack_rl.preflight import predict_from_state, read_engine_state, state_arms, tracked_rewards

    for seed in (0, 1):
        states = [read_engine_state(trl_study / f"{arm}-{seed}" / "checkpoint-5") for arm in ("uniform", "knapsack")]
        (ids, rewards, beyond), (other_ids, other, _) = (tracked_rewards(s.tracker) for s in states)
        assert len(ids) == 80 and {r.size for r in rewards} == {4} and beyond == 0
        assert ids == other_ids and all((a == b).all() for a, b in zip(rewards, other, strict=True))
        history = json.loads((trl_study / f"uniform-{seed}" / "checkpoint-10" / "trainer_state.json").read_text())
        steps = [h for h in history["log_history"] if h["step"] <= 5 and "train/reward_mean" in h]
        assert len(steps) == 5
        logged = sum(h["train/reward_mean"] * h["train/rollouts"] for h in steps)
        assert sum(r.sum() for r in rewards) == pytest.approx(logged)
    predicted = {"uniform": [], "knapsack": []}
    for seed in (0, 1):
        state = read_engine_state(trl_study / f"uniform-{seed}" / "checkpoint-5")
        for p in predict_from_state(state, state_arms(state, list(predicted)), prompts_per_step=16, seed=seed):
            predicted[p.arm].append(p.effective_prompts)
    runs = [load_run(trl_study / f"uniform-{seed}", "trl", eval_k=4) for seed in (0, 1)]
    epoch0 = sum(r["train/effective_prompts"] for run in runs for r in run.train_rows[:5]) / 10
    u, k = (sum(v) / 2 for v in predicted.values())
    page = " ".join((ROOT / "docs" / "cluster.md").read_text().split())
    assert f"it predicts {u:.1f} (uniform) and {k:.1f} (knapsack) prompts with signal per step, as many as the " \
        f"uniform epoch had ({epoch0:.1f})" in page  # fmt: skip
    argv = ["preflight", "--state", str(trl_study / "uniform-0" / "checkpoint-5"), "--prompts-per-step", "16"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(trl, rule uniform): 80 tracked prompts, 4-4 rewards each;" in out
    assert re.search(r"^uniform +from state +\d+\.\d of 16 +\d+\.\d% +4 *$", out, re.M), out


# ------------------------------------------------------------------------------------------------- verl
def _verl_metrics(step: int, arm: str, seed: int) -> dict[str, float]:
    """What the knapsack verl adapter and verl's trainer log in a step (values exact in float32)."""
    rollouts = 64.0 if arm == "uniform" or step < 3 else 60.0 + 2 * (step % 2)
    acc = 0.25 + step * (0.0625 if arm == "knapsack" else 0.03125) + 0.125 * seed
    data = {
        "train/rollouts_generated": rollouts,
        "train/effective_prompts": 4.0 + (step >= 3 and arm == "knapsack"),
        "train/effective_grad_ratio": 0.5,
        "alloc/budget_max": 8.0 if arm == "uniform" else 16.0,
        "response_length/mean": 100.0,
        "timing_s/step": 2.0,
        "training/epoch": float(step > 2),
    }
    if step % 2 == 0:
        data["val-core/math/reward/mean@4"] = acc
        data["val-core/math/reward/best@4/mean"] = min(1.0, acc + 0.25)
    return data


def _write_verl_run(root: Path, arm: str, seed: int, steps: int = 6) -> tuple[Path, Path]:
    """A run logged through verl's own Tracking (file and tensorboard backends): its JSONL and event folder."""
    from verl.utils.tracking import Tracking

    jsonl, tb = root / f"{arm}-{seed}.jsonl", root / f"tb-{arm}-{seed}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VERL_FILE_LOGGER_PATH", str(jsonl))
        mp.setenv("TENSORBOARD_DIR", str(tb))
        with contextlib.redirect_stdout(io.StringIO()):
            tracker = Tracking("knapsack-study", f"{arm}-{seed}", default_backend=["file", "tensorboard"])
            tracker.log(
                {"val-core/math/reward/mean@4": _verl_metrics(0, arm, seed)["val-core/math/reward/mean@4"]}, step=0
            )  # verl validates before training, at step 0
            for step in range(1, steps + 1):
                tracker.log(_verl_metrics(step, arm, seed), step=step)
            del tracker  # Tracking closes its loggers when collected
    return jsonl, tb


def _manifest(path: Path, runs: dict[str, dict[int, Path]], extra: str = "") -> Path:
    lines = ["baseline: uniform", *([extra] if extra else []), "arms:"]
    for arm, by_seed in runs.items():
        lines.append(f"  {arm}:")
        lines += [f"    - {{seed: {s}, path: '{p}'}}" for s, p in by_seed.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_report_reads_verl_logs_written_by_verls_tracking_from_its_file_and_tensorboard_backends(tmp_path):
    files: dict[str, dict[int, Path]] = {"uniform": {}, "knapsack": {}}
    boards: dict[str, dict[int, Path]] = {"uniform": {}, "knapsack": {}}
    for arm in files:
        for seed in (0, 1):
            files[arm][seed], boards[arm][seed] = _write_verl_run(tmp_path, arm, seed)
    first = json.loads((files["knapsack"][0]).read_text().splitlines()[1])
    assert first["step"] == 1 and first["data"]["train/rollouts_generated"] == 64.0  # verl's own row format
    by_file = build_report(load_study(_manifest(tmp_path / "m1.yaml", files)), tmp_path / "r1", plots=False)
    by_board = build_report(load_study(_manifest(tmp_path / "m2.yaml", boards)), tmp_path / "r2", plots=False)
    assert {r.engine for rs in by_file.runs.values() for r in rs} == {"verl"}
    assert by_file.eval_key == "eval/avg@4"  # val-core/math/reward/mean@4, the run's one data source
    assert by_file.summaries == by_board.summaries
    s = by_file.summaries["knapsack"][0]
    assert s["rollouts"] == 64 * 2 + 62 + 60 + 62 + 60
    assert s["gen_tokens"] == 100.0 * s["rollouts"]
    assert s["effective_prompts"] == 5.0  # the allocating steps (training/epoch >= 1): 3..6
    xs = [0, 64, 128, 190, 250, 312, 372]
    acc = {0: 0.25, 2: 0.375, 4: 0.5, 6: 0.625}
    area = sum((acc[a] + acc[b]) / 2 * (xs[b] - xs[a]) for a, b in ((0, 2), (2, 4), (4, 6)))
    assert s["auc"] == pytest.approx(area / 372)
    assert s["final"] == pytest.approx((0.375 + 0.5 + 0.625) / 3)
    assert by_file.runs["knapsack"][0].rows[-1]["eval/pass@4/math"] == 0.875  # verl's best@4/mean
    assert "UNEQUAL COMPUTE: seed 0: knapsack generated 372 rollouts, uniform 384 (-3.1%" in by_file.text
    assert "knapsack HELPED against uniform: held-out AUC" in by_file.text


# -------------------------------------------------------------------------------------- own loops, bad inputs
def _own_run(path: Path, steps: int, *, acc0: float = 0.25, slope: float = 0.05, per_step: float = 32.0) -> Path:
    rows = []
    for step in range(steps + 1):
        row: dict[str, Any] = {"step": step, "eval/avg@4": acc0 + slope * step}
        if step:
            row.update({"train/rollouts_generated": per_step, "train/effective_prompts": 3.0, "train/epoch": 1})
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_arms_with_different_step_counts_and_a_missing_seed_are_flagged_rows(tmp_path):
    runs = {
        "uniform": {0: _own_run(tmp_path / "u0.jsonl", 4), 1: _own_run(tmp_path / "u1.jsonl", 4)},
        "knapsack": {0: _own_run(tmp_path / "k0.jsonl", 5, slope=0.06), 2: _own_run(tmp_path / "k2.jsonl", 4)},
    }
    result = build_report(load_study(_manifest(tmp_path / "m.yaml", runs)), tmp_path / "out", plots=False)
    assert result.seeds == [0]
    assert "UNPAIRED: seed 1 has no run in arm(s) ['knapsack']: left out of every paired number" in result.flags
    assert "UNPAIRED: seed 2 has no run in arm(s) ['uniform']: left out of every paired number" in result.flags
    assert "STEPS DIFFER: seed 0: uniform 4 steps, knapsack 5 (arms are compared on the axis of rollouts generated)" \
        in result.flags  # fmt: skip
    assert any(f.startswith("UNEQUAL COMPUTE: seed 0: knapsack generated 160 rollouts, uniform 128 (+25.0%")
               for f in result.flags)  # fmt: skip
    for flag in result.flags:
        assert flag in result.text.splitlines()  # each flag is one printed line


def test_a_run_missing_a_number_is_named_never_zero(tmp_path):
    runs = {"uniform": {0: _own_run(tmp_path / "u0.jsonl", 4), 1: _own_run(tmp_path / "u1.jsonl", 4)},
            "knapsack": {0: _own_run(tmp_path / "k0.jsonl", 4), 1: tmp_path / "k1.jsonl"}}  # fmt: skip
    rows = [{"step": s, "eval/avg@4": 0.3, **({"train/rollouts_generated": 32.0} if s else {})} for s in range(5)]
    (tmp_path / "k1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # no effective_prompts
    result = build_report(load_study(_manifest(tmp_path / "m.yaml", runs)), tmp_path / "out", plots=False)
    assert math.isnan(result.summaries["knapsack"][1]["effective_prompts"])
    assert any(f.startswith(f"MISSING: arm knapsack seed 1 ({tmp_path / 'k1.jsonl'}): no prompts with signal per step")
               for f in result.flags)  # fmt: skip


def test_a_run_of_the_wrong_kind_is_a_one_line_error_naming_arm_seed_and_path(tmp_path, capsys):
    wrong = tmp_path / "not-a-run"
    wrong.mkdir()
    (wrong / "notes.txt").write_text("hello")
    runs = {"uniform": {0: _own_run(tmp_path / "u0.jsonl", 4)}, "knapsack": {0: wrong}}
    manifest = _manifest(tmp_path / "m.yaml", runs)
    assert main(["report", str(manifest), "--no-plots"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"knapsack-rl: error: arm 'knapsack' seed 0: run {wrong}: not a run the report reads (")
    assert not (tmp_path / "report").exists()  # nothing written
    trl_as_verl = _manifest(tmp_path / "m2.yaml", {"uniform": {0: tmp_path / "u0.jsonl"},
                                                   "knapsack": {0: tmp_path / "u0.jsonl"}})  # fmt: skip
    text = trl_as_verl.read_text().replace("u0.jsonl'}", "u0.jsonl', engine: verl}")
    trl_as_verl.write_text(text)
    assert main(["report", str(trl_as_verl), "--no-plots"]) == 2
    assert capsys.readouterr().err == (
        f"knapsack-rl: error: arm 'uniform' seed 0: run {tmp_path / 'u0.jsonl'}: engine 'verl' was given but it is a "
        "jsonl run\n"
    )
    assert main(["report", str(wrong)]) == 2
    assert capsys.readouterr().err == (
        f"knapsack-rl: error: {wrong} is a folder without compare.json (not a knapsack-rl compare folder); for runs of "
        "other engines, write a manifest (docs/cluster.md) and pass it\n"
    )


def test_report_cli_end_to_end_on_own_loop_runs(tmp_path, capsys):
    runs = {arm: {s: _own_run(tmp_path / f"{arm}{s}.jsonl", 4, slope=0.05 + 0.02 * (arm == "knapsack") + 0.01 * s)
                  for s in (0, 1, 2)} for arm in ("uniform", "knapsack")}  # fmt: skip
    manifest = _manifest(tmp_path / "m.yaml", runs)
    assert main(["report", str(manifest), "--out-dir", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 paired seed(s) [0, 1, 2]; arms ['uniform', 'knapsack'] (jsonl); ")
    assert "knapsack HELPED against uniform: held-out AUC +4.0 points" in out
    assert (tmp_path / "rep" / "table.txt").read_text() == out
    for arm in runs:
        for s in (0, 1, 2):
            assert (tmp_path / "rep" / "runs" / arm / f"seed{s}" / "metrics.jsonl").is_file()
    assert (tmp_path / "rep" / "heldout_vs_rollouts.png").stat().st_size > 5000
    assert (
        load_run(tmp_path / "rep" / "runs" / "knapsack" / "seed0" / "metrics.jsonl").rows
        == load_run(runs["knapsack"][0]).rows
    )  # the written canonical rows read back the same
