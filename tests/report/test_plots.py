"""Comparison plots: every PNG is rendered in memory and written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from knapsack_rl.report.plots import CURVES, plot_comparison

matplotlib.use("Agg")


def _runs(tmp_path: Path) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = {}
    for arm in ("uniform", "knapsack"):
        folder = tmp_path / arm
        folder.mkdir()
        rows = [{"step": s, "eval/mean@2": 0.1 * s, "train/effective_prompts": s, "train/effective_grad_ratio": 0.5}
                for s in range(6)]  # fmt: skip
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        alloc = {"step": 1, "epoch": 0, "p_hat": [0.2, None], "budget": [4, 8]}
        (folder / "allocations.jsonl").write_text(json.dumps(alloc) + "\n")
        runs[arm] = [folder]
    return runs


def test_plots_are_written_whole(tmp_path: Path) -> None:
    written = plot_comparison(_runs(tmp_path), tmp_path / "out", eval_key="eval/mean@2", alloc_start=2, title="t")
    assert [p.name for p in written] == [name for name, *_ in CURVES] + ["budget_vs_p_knapsack.png"]
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 1000
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_a_crash_while_rendering_keeps_the_old_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _runs(tmp_path)
    out = tmp_path / "out"
    plot_comparison(runs, out, eval_key="eval/mean@2", alloc_start=None)
    first = out / CURVES[0][0]
    old = first.read_bytes()

    def crash(self: object, fname: object, *args: object, **kwargs: object) -> None:
        if hasattr(fname, "write"):
            fname.write(b"\x89PNG half a plot")
        else:
            Path(str(fname)).write_bytes(b"\x89PNG half a plot")
        raise RuntimeError("renderer died")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", crash)
    with pytest.raises(RuntimeError, match="renderer died"):
        plot_comparison(runs, out, eval_key="eval/mean@2", alloc_start=None)
    assert first.read_bytes() == old  # a reader sees the old plot, never half a new one
