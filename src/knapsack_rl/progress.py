"""Progress of long work: a bar on a terminal, periodic ``logging`` lines otherwise (NumPy-free, no torch).

Piped to a file, the output stays readable: no carriage-return bars, one line per tenth of the work
with the rate and the time left.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)


class Progress:
    """A progress bar on a terminal; periodic log lines (about every 10%) when stderr is not one."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True) -> None:
        self.total, self.desc, self.done = max(total, 0), desc, 0
        self._start = time.perf_counter()
        self._bar: Any = None
        self._every = max(1, self.total // 10)
        self._enabled = enabled and self.total > 0
        if self._enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, leave=False)

    def update(self, status: str = "", count: int = 1) -> None:
        """``count`` units done; ``status`` is shown beside the bar (or in the log line)."""
        before = self.done
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            self._bar.set_postfix_str(status)
        elif self._enabled and (self.done // self._every > before // self._every or self.done >= self.total):
            elapsed = time.perf_counter() - self._start
            left = elapsed / self.done * (self.total - self.done)
            logger.info("%s: %d/%d (%.0f s, %.0f s left) %s", self.desc, self.done, self.total, elapsed, left, status)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
