"""Plots and tables from run logs."""

from knapsack_rl.report.plots import plot_comparison, read_jsonl, series, summarize_run

__all__ = ["plot_comparison", "read_jsonl", "series", "summarize_run"]
