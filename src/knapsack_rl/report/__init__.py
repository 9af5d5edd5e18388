"""Tables, statistics and plots from run logs."""

from knapsack_rl.report.plots import plot_comparison
from knapsack_rl.report.stats import Stat, first_crossing, mean_ci, paired, value_at
from knapsack_rl.report.summary import (
    ArmComparison,
    compare_arms,
    comparison_table,
    read_jsonl,
    series,
    summarize_run,
    verdict,
)

__all__ = [
    "ArmComparison",
    "Stat",
    "compare_arms",
    "comparison_table",
    "first_crossing",
    "mean_ci",
    "paired",
    "plot_comparison",
    "read_jsonl",
    "series",
    "summarize_run",
    "value_at",
    "verdict",
]
