"""Progress of long work: a bar on a terminal, periodic ``logging`` lines otherwise (NumPy-free, no torch);
and stopping it at a clean point on Ctrl-C (:func:`stop_on_sigint`).

Piped to a file, the output stays readable: no carriage-return bars, one line per tenth of the work
with the rate and the time left.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

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


class _Flag(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class StopFlag:
    """A SIGINT handler that asks long work to stop at its next clean point instead of raising at once.

    The first SIGINT (Ctrl-C) of this process sets the flag (and ``shared``, an event other processes
    read, when given); a second one raises ``KeyboardInterrupt`` at once. :meth:`is_set` is also true
    once ``shared`` is set by another process: a compare's main process stops its workers through it.
    """

    def __init__(self, shared: _Flag | None = None) -> None:
        self._own = threading.Event()
        self._shared = shared

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._own.is_set():
            raise KeyboardInterrupt
        self._own.set()
        if self._shared is not None:
            self._shared.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for (by a SIGINT of this process, or through ``shared``)."""
        return self._own.is_set() or (self._shared is not None and self._shared.is_set())


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """While inside, Ctrl-C asks for a stop at the next clean point: the yielded callable turns true; a
    second Ctrl-C raises ``KeyboardInterrupt`` at once. The previous SIGINT handler comes back on exit.

    Where a :class:`StopFlag` already handles SIGINT (an outer ``stop_on_sigint``, a compare worker), that
    flag is yielded. Python runs signal handlers in the main thread only: elsewhere the callable is always
    false and Ctrl-C acts as it did before.
    """
    current = signal.getsignal(signal.SIGINT)
    if isinstance(current, StopFlag):
        yield current.is_set
        return
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    flag = StopFlag()
    signal.signal(signal.SIGINT, flag)
    try:
        yield flag.is_set
    finally:
        signal.signal(signal.SIGINT, current)
