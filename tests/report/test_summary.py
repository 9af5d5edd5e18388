"""Run summaries and paired comparisons, on hand-written logs whose every number is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from knapsack_rl.report.stats import Stat
from knapsack_rl.report.summary import (
    ArmComparison,
    compare_arms,
    comparison_table,
    read_jsonl,
    summarize_run,
    verdict,
)

EVAL = "eval/mean@4"


def _train_row(step: int, epoch: int, *, prompts: float, length: float, generated: float, spent: float) -> dict:
    return {
        "step": step,
        "train/epoch": epoch,
        "train/effective_grad_ratio": prompts / 8,
        "train/effective_prompts": prompts,
        "actor/grad_clipped": float(step % 2),
        "alloc/budget_max": 8 + step,
        "rollout/response_len_mean": length,
        "train/rollouts_generated": generated,
        "train/rollouts_total": spent,
    }


def _write_run(run: Path, accuracies: list[float], *, per_step: float = 100.0) -> Path:
    """A run of len(accuracies) - 1 steps of ``per_step`` rollouts, evaluated before and after each step."""
    run.mkdir(parents=True)
    rows: list[dict] = [{"step": 0, EVAL: accuracies[0], f"{EVAL}/L1": accuracies[0]}]
    for step, acc in enumerate(accuracies[1:], start=1):
        row = _train_row(step, epoch=step - 1, prompts=2.0 * step, length=3.0, generated=per_step,
                         spent=per_step * step)  # fmt: skip
        rows.append({**row, EVAL: acc, f"{EVAL}/L1": acc})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"wall_s": 7.5}))
    return run


def test_summary_reads_auc_on_the_rollout_axis_and_counts_generated_tokens(tmp_path: Path) -> None:
    s = summarize_run(_write_run(tmp_path / "r", [0.2, 0.4, 0.6]), eval_key=EVAL, uniform_epochs=1)
    assert s["auc"] == pytest.approx((0.3 * 100 + 0.5 * 100) / 200)  # trapezoid over rollouts 0..200
    assert s["start"] == 0.2 and s["final"] == pytest.approx(0.4)  # final: mean of the last 3 evaluations
    assert s["final/L1"] == 0.6  # per level: the last evaluation
    assert s["effective_prompts"] == 4.0  # only the allocating epoch (epoch 1, step 2)
    assert s["effective_prompts_first"] == 4.0
    assert s["egr_all"] == pytest.approx((2 / 8 + 4 / 8) / 2)
    assert s["gen_tokens"] == 3.0 * 100 * 2
    assert (s["rollouts"], s["budget_max"], s["grad_clipped"], s["wall_s"]) == (200.0, 10.0, 0.5, 7.5)


def test_generated_tokens_are_unknown_when_a_step_did_not_log_lengths(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "r", [0.2, 0.4, 0.6])
    rows = read_jsonl(run / "metrics.jsonl")
    del rows[1]["rollout/response_len_mean"]  # a log written before lengths were recorded
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert math.isnan(summarize_run(run, eval_key=EVAL)["gen_tokens"])


def test_a_torn_last_line_is_skipped_and_a_bad_line_inside_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not JSON"):
        read_jsonl(path)


def test_compare_pairs_seeds_and_reports_a_censored_rollouts_ratio_as_a_lower_bound(tmp_path: Path) -> None:
    runs: dict[str, list[Path]] = {"uniform": [], "knapsack": []}
    for seed, lift in enumerate([0.01, 0.02, 0.03]):
        runs["uniform"].append(_write_run(tmp_path / f"u{seed}", [0.2, 0.3, 0.4, 0.5, 0.5, 0.5]))
        runs["knapsack"].append(_write_run(tmp_path / f"k{seed}", [0.2, 0.6 + lift, 0.6, 0.6, 0.6, 0.6]))
    summaries, comparisons = compare_arms(runs, eval_key=EVAL)
    knap = next(c for c in comparisons if c.arm == "knapsack")
    expected = [summaries["knapsack"][i]["auc"] - summaries["uniform"][i]["auc"] for i in range(3)]
    assert knap.diffs["auc"].mean == pytest.approx(sum(expected) / 3)
    assert knap.diffs["auc"].n == 3 and knap.diffs["auc"].half > 0  # the lifts differ, so the CI is not zero
    # knapsack's smoothed final (0.6) is above uniform's whole curve: censored, and the ratio is the run's
    # 500 rollouts over the 200-300 knapsack needed to reach its own final accuracy (a lower bound)
    assert knap.ratio_censored == 3 and 500 / 300 <= knap.rollouts_ratio.mean < 500 / 200
    uniform = next(c for c in comparisons if c.arm == "uniform")
    assert uniform.diffs["auc"].mean == 0.0 and uniform.rollouts_ratio.mean == pytest.approx(1.0)
    table = comparison_table(comparisons, levels=["L1"])
    assert "generated tokens per run (thousands)" in table and "1.5 ± 0.0" in table  # 5 steps x 100 x 3 tokens
    assert f">{knap.rollouts_ratio.mean:.2f}" in table and "(3/3)" in table


@pytest.mark.parametrize(
    ("mean", "half", "n", "words"),
    [
        (0.02, 0.01, 5, "knapsack HELPED against uniform: held-out AUC +2.0 points (95% CI +1.0 to +3.0) over 5"),
        (-0.02, 0.01, 5, "knapsack HURT against uniform: held-out AUC -2.0 points (95% CI -3.0 to -1.0)"),
        (0.002, 0.004, 5, "knapsack vs uniform: NO DETECTABLE DIFFERENCE: held-out AUC +0.2 points"),
        (0.05, 0.0, 1, "on 1 seed: an anecdote, not a result"),
        (0.0, 0.0, 5, "knapsack vs uniform: SAME held-out AUC on every one of 5 paired seeds"),
    ],
)
def test_the_verdict_follows_the_confidence_interval(mean: float, half: float, n: int, words: str) -> None:
    comparison = ArmComparison("knapsack", {}, {"auc": Stat(mean, half, n)}, Stat(math.nan, math.nan, 0), 0)
    assert words in verdict(comparison)
