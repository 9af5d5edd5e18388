"""Metric sinks of a run: JSONL (one object per step) and optionally TensorBoard."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from knapsack_rl.io import append_jsonl, truncate_jsonl

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Appends metric dicts to ``metrics.jsonl`` and, if enabled, to TensorBoard."""

    def __init__(self, out_dir: Path, *, tensorboard: bool, start_step: int) -> None:
        """``start_step`` is the step of the checkpoint resumed from (0 for a fresh run: old logs are cleared)."""
        self.path = out_dir / "metrics.jsonl"
        keep = start_step if start_step > 0 else -1
        truncate_jsonl(self.path, last_step=keep)
        truncate_jsonl(out_dir / "allocations.jsonl", last_step=keep)
        self._alloc_path = out_dir / "allocations.jsonl"
        self._tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Write one step's metrics (non-finite values become null in JSON)."""
        row = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in metrics.items()}}
        append_jsonl(self.path, row)
        if self._tb is not None:
            for k, v in metrics.items():
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def log_allocation(self, step: int, epoch: int, p_hat: list[float | None], budgets: list[int]) -> None:
        """Per-prompt estimate and budget of one step (for the budget-vs-p plot)."""
        append_jsonl(self._alloc_path, {"step": step, "epoch": epoch, "p_hat": p_hat, "budget": budgets})

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A progress bar on a terminal; periodic log lines (about every 10%) when stderr is not one.

    Piped to a file, the output stays readable: no carriage-return bars, one ``logging`` line per
    tenth of the work with the rate and the time left.
    """

    def __init__(self, total: int, desc: str, *, enabled: bool = True) -> None:
        self.total, self.desc, self.done = max(total, 0), desc, 0
        self._start = time.perf_counter()
        self._bar: Any = None
        self._every = max(1, self.total // 10)
        self._enabled = enabled and self.total > 0
        if self._enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, leave=False)

    def update(self, status: str = "") -> None:
        """One unit done; ``status`` is shown beside the bar (or in the log line)."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(status)
        elif self._enabled and (self.done % self._every == 0 or self.done == self.total):
            elapsed = time.perf_counter() - self._start
            left = elapsed / self.done * (self.total - self.done)
            logger.info("%s: %d/%d (%.0f s, %.0f s left) %s", self.desc, self.done, self.total, elapsed, left, status)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
