"""Metric sinks of a run: JSONL (one object per step) and optionally TensorBoard."""

from __future__ import annotations

import logging
import math
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
