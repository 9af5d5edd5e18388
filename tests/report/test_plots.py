"""Comparison plots: every PNG is rendered in memory and written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
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


# ------------------------------------------------------------------ what the curves say (issue 23 item 7)
T95_2 = 4.303  # two-sided 95% Student t quantile, 2 degrees of freedom (3 seeds)


def _write_run(folder: Path, spend: list[int], heldout: list[float], egr: list[float]) -> None:
    """A run's metrics.jsonl: an evaluation before training (step 0), then one row per step that spent
    ``spend[i]`` rollouts, with its effective gradient ratio and an evaluation (``heldout[i + 1]``)."""
    folder.mkdir(parents=True)
    rows: list[dict[str, float]] = [{"step": 0, "eval/mean@2": heldout[0]}]
    total = 0
    for i, spent in enumerate(spend):
        total += spent
        rows.append({"step": i + 1, "train/rollouts_total": total, "train/effective_prompts": 3.0 + i,
                     "train/effective_grad_ratio": egr[i], "eval/mean@2": heldout[i + 1]})  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _figures(runs: dict[str, list[Path]], out: Path, monkeypatch: pytest.MonkeyPatch, alloc_start: int | None = None
             ) -> dict[str, Any]:  # fmt: skip
    """The figures plot_comparison writes, by file name (caught at save_figure, then written as usual)."""
    import knapsack_rl.report.plots as plots

    caught: dict[str, Any] = {}
    real = plots.save_figure

    def catch(fig: Any, path: Path, *, dpi: int) -> Path:
        caught[path.name] = fig
        return real(fig, path, dpi=dpi)

    monkeypatch.setattr(plots, "save_figure", catch)
    plot_comparison(runs, out, eval_key="eval/mean@2", alloc_start=alloc_start)
    return caught


def _arm_line(ax: Any, arm: str) -> Any:
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(f"{arm} (")]
    return line


def _band_at(ax: Any, x: float) -> tuple[float, float]:
    """(lowest, highest) y of the filled band at ``x`` (the vertices of the fill_between polygon)."""
    (poly,) = ax.collections
    vertices = poly.get_paths()[0].vertices
    ys = vertices[np.isclose(vertices[:, 0], x), 1]
    return float(ys.min()), float(ys.max())


def test_the_band_is_the_95_ci_over_seeds_in_the_tables_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heldout = {0: [0.10, 0.30, 0.50, 0.60], 1: [0.20, 0.35, 0.40, 0.70], 2: [0.30, 0.25, 0.60, 0.80]}
    egr = {0: [0.2, 0.4, 0.6], 1: [0.3, 0.3, 0.3], 2: [0.1, 0.5, 0.9]}
    dirs = []
    for seed in range(3):
        _write_run(tmp_path / f"s{seed}", [8, 8, 8], heldout[seed], egr[seed])
        dirs.append(tmp_path / f"s{seed}")
    figures = _figures({"uniform": dirs}, tmp_path / "out", monkeypatch)
    ax = figures["heldout_accuracy.png"].axes[0]
    assert ax.get_ylabel() == "held-out accuracy, eval/mean@2 (%)"  # the table's unit: %
    assert ax.get_xlabel() == "rollouts generated"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["uniform (3 seeds)", "band: 95% CI of the mean over seeds (Student t)"]
    line = _arm_line(ax, "uniform")
    values = np.asarray([heldout[s] for s in range(3)])  # (seeds, evaluations)
    mean, half = values.mean(axis=0), T95_2 * values.std(axis=0, ddof=1) / np.sqrt(3)  # by hand
    np.testing.assert_allclose(line.get_xdata(), [0, 8, 16, 24])
    np.testing.assert_allclose(line.get_ydata(), 100 * mean)
    for k, x in enumerate([0, 8, 16, 24]):
        np.testing.assert_allclose(_band_at(ax, x), (100 * (mean[k] - half[k]), 100 * (mean[k] + half[k])), rtol=1e-3)
    ax = figures["effective_grad_ratio.png"].axes[0]  # per-step metric: % too, each seed smoothed first
    assert ax.get_ylabel() == "effective gradient ratio (%, 5-step mean)"
    smoothed = np.asarray([np.cumsum(egr[s]) / np.arange(1, 4) for s in range(3)])  # a running mean of <= 5 steps
    np.testing.assert_allclose(_arm_line(ax, "uniform").get_ydata(), 100 * smoothed.mean(axis=0))
    half = T95_2 * smoothed.std(axis=0, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(_band_at(ax, 16), 100 * (smoothed.mean(axis=0)[1] + np.array([-1, 1]) * half[1]),
                               rtol=1e-3)  # fmt: skip
    ax = figures["effective_prompts.png"].axes[0]  # a count in the table: not scaled
    assert ax.get_ylabel() == "prompts with signal per step (5-step mean)"
    np.testing.assert_allclose(_arm_line(ax, "uniform").get_ydata(), [3.0, 3.5, 4.0])


def test_every_arm_is_drawn_against_rollouts_generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # uniform: 6 steps of 8 rollouts; dapo: 3 larger steps, the same 48 rollouts in all
    _write_run(tmp_path / "uniform", [8] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0.5] * 6)
    _write_run(tmp_path / "dapo", [16, 24, 8], [0.1, 0.3, 0.5, 0.6], [0.9] * 3)
    runs = {"uniform": [tmp_path / "uniform"], "dapo": [tmp_path / "dapo"]}
    figures = _figures(runs, tmp_path / "out", monkeypatch, alloc_start=2)
    for name in ("heldout_accuracy.png", "effective_prompts.png", "effective_grad_ratio.png"):
        ax = figures[name].axes[0]
        assert ax.get_xlabel() == "rollouts generated"
        start = 0 if name == "heldout_accuracy.png" else 1  # the evaluation before training is at 0 rollouts
        np.testing.assert_allclose(_arm_line(ax, "uniform").get_xdata(), [0, 8, 16, 24, 32, 40, 48][start:])
        np.testing.assert_allclose(_arm_line(ax, "dapo").get_xdata(), [0, 16, 40, 48][start:])
        (marker,) = [ln for ln in ax.get_lines() if ln.get_label() == "allocation starts (step 2)"]
        assert list(marker.get_xdata()) == [16, 16]  # uniform's rollouts by the end of step 2
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["uniform (1 seed: no band)", "dapo (1 seed: no band)", "allocation starts (step 2)"]
        assert not ax.collections  # one seed: no band drawn, none claimed


def test_seeds_that_spent_differently_are_compared_at_the_same_rollouts() -> None:
    from knapsack_rl.report.plots import band

    seed_a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    seed_b = (np.array([0.0, 5.0, 15.0, 25.0]), np.array([0.0, 1.0, 3.0, 5.0]))
    b = band([seed_a, seed_b])
    np.testing.assert_allclose(b.x, [0, 5, 10, 15, 20])  # the union of their x, within the range both cover
    a_at, b_at = np.interp(b.x, *seed_a), np.interp(b.x, *seed_b)  # [0, .5, 1, 1.5, 2], [0, 1, 2, 3, 4]
    np.testing.assert_allclose(b.mean, (a_at + b_at) / 2)
    half = 12.706 * np.abs(a_at - b_at) / 2  # t(0.975, 1 df) * sd / sqrt(2), sd of two values = |a - b| / sqrt(2)
    np.testing.assert_allclose(b.hi - b.mean, half)
    np.testing.assert_allclose(b.mean - b.lo, half)
    assert b.seeds == 2


def test_an_arm_with_a_single_point_shows_its_ci_as_an_error_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:  # fmt: skip
    egr = [0.2, 0.5, 0.8]
    dirs = []
    for seed, value in enumerate(egr):  # one step of 24 rollouts per seed
        _write_run(tmp_path / f"s{seed}", [24], [0.1, 0.2], [value])
        dirs.append(tmp_path / f"s{seed}")
    ax = _figures({"dapo": dirs}, tmp_path / "out", monkeypatch)["effective_grad_ratio.png"].axes[0]
    line = _arm_line(ax, "dapo")
    assert line.get_marker() == "o" and list(line.get_xdata()) == [24]  # visible: a line of one point is not
    (bar,) = [c for c in ax.collections if c.get_segments()]
    half = 100 * T95_2 * np.std(egr, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(bar.get_segments()[0], [[24, 50 - half], [24, 50 + half]], rtol=1e-3)
