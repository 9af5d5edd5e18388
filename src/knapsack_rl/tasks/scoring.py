"""Contained reward calls: worker processes with a per-response timeout, and a failure policy.

A reward function is user code (or a library such as math_verify) that can raise, return NaN, hang on a
pathological 100k-character answer, or need a process's main thread for its own ``signal.alarm``. A
:class:`Scorer` runs it so that none of that can stop or corrupt a training run:

* **Where it runs.** A reward registered with ``in_process=True`` (the built-in ``exact`` match: a string
  comparison that cannot hang) is called in the caller's process, once per batch. Every other reward runs
  in ``workers`` worker processes (``spawn`` start method, each in its own main thread, so math_verify's
  alarm works). Responses go to a worker in chunks of ``chunk_size``; the worker scores them one at a time
  and streams each result back, so a slow response costs one timeout, not a chunk.
* **Timeout.** Each response has ``timeout_s`` seconds (measured in the parent from the previous result
  of that worker). A worker that overruns is killed and restarted; the response counts as a timeout and the
  rest of its chunk is re-sent. A worker that dies counts as a failure for the response it was scoring.
* **Failure.** A reward that raises, returns a value that is not a finite number in [0, 1] (NaN, 1.5,
  a string) or the wrong number of values is a failure.
* **Policy** (``on_failure``): ``"zero"`` scores the response 0.0, counts it (``reward/failures``,
  ``reward/timeouts``: see :meth:`Scorer.counts`) and logs a warning; ``"raise"`` raises
  :class:`RewardError` naming the reward, the prompt id, the response's position and the reason.

Scripts that score with worker processes need Python's usual ``if __name__ == "__main__":`` guard
(the spawn start method imports the main module in every worker).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.validate import check_choice, check_int, check_real
from knapsack_rl.tasks.base import Extra, Reward, get_reward

logger = logging.getLogger(__name__)

FailurePolicy = Literal["zero", "raise"]
_STARTUP_TIMEOUT_S = 120.0


class RewardError(RuntimeError):
    """A reward call failed or timed out under ``on_failure="raise"``."""


@dataclass(frozen=True)
class ScoringConfig:
    """How reward functions are run (see the module docstring for the rules)."""

    timeout_s: float = 10.0
    """Seconds one response may take in a worker process before it is killed and counted as a timeout."""
    on_failure: FailurePolicy = "zero"
    """``zero``: a failed or timed-out response scores 0 and is counted; ``raise``: stop with a RewardError."""
    workers: int = 1
    """Worker processes for rewards not registered in-process."""
    chunk_size: int = 32
    """Responses sent to a worker at once (results still come back one at a time)."""

    def __post_init__(self) -> None:
        check_real("timeout_s", self.timeout_s, low=0.0, open_low=True)
        check_choice("on_failure", self.on_failure, ["zero", "raise"])
        check_int("workers", self.workers, low=1)
        check_int("chunk_size", self.chunk_size, low=1)


def _one(reward: Reward, response: str, answer: str, extra: Extra | None) -> float | str:
    """The reward of one response, or an error text ("TypeError: ...") when it raises or is not a number."""
    try:
        out = np.asarray(reward([response], [answer], [extra] if reward.uses_extras else None))
    except Exception as exc:  # a user reward may raise anything: contain it
        return f"{type(exc).__name__}: {exc}"[:500]
    if out.shape not in ((1,), ()):
        return f"returned shape {out.shape} for one response (expected (1,))"
    try:
        return float(out.reshape(-1)[0])
    except (TypeError, ValueError) as exc:
        return f"returned {out.reshape(-1)[0]!r:.80}, not a number ({exc})"


def _worker_main(conn: Connection, reward: Reward) -> None:
    """Worker loop: receive chunks of (response, answer, extra), send back one result per response."""
    conn.send(("ready", None))
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for response, answer, extra in chunk:
            conn.send(("result", _one(reward, response, answer, extra)))


class _Worker:
    """One worker process and its end of the pipe."""

    def __init__(self, ctx: Any, reward: Reward) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, reward), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(_STARTUP_TIMEOUT_S):
            self.kill()
            raise RewardError(f"reward worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")
        try:
            self.conn.recv()
        except EOFError:
            self.kill()
            raise RewardError(
                "reward worker died while starting (is the reward defined at a module's top level, and does the "
                "script guard its entry point with `if __name__ == '__main__':`?)"
            ) from None
        self.positions: deque[int] = deque()
        self.deadline = math.inf

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class Scorer:
    """Runs one registered reward under a :class:`ScoringConfig`; counts failures and timeouts.

    ``scorer(responses, answers, prompt_ids, extras)`` -> (N,) float64 rewards in [0, 1].
    Use as a context manager, or call :meth:`close`, to stop the worker processes.
    """

    def __init__(self, reward: str, config: ScoringConfig | None = None) -> None:
        self.name = reward
        self.reward = get_reward(reward)
        self.config = config or ScoringConfig()
        self.failures = 0
        self.timeouts = 0
        self._workers: list[_Worker] = []

    # ----------------------------------------------------------------- public
    def __call__(
        self,
        responses: Sequence[str],
        answers: Sequence[str],
        prompt_ids: Sequence[int] | NDArray[np.int64],
        extras: Sequence[Extra | None] | None = None,
    ) -> NDArray[np.float64]:
        """(N,) rewards of ``responses[j]`` against ``answers[j]``; ``prompt_ids[j]`` names it in errors."""
        n = len(responses)
        if not (len(answers) == len(prompt_ids) == n) or (extras is not None and len(extras) != n):
            raise ValueError(
                f"responses, answers, prompt_ids and extras must have equal length; got {n}, {len(answers)}, "
                f"{len(prompt_ids)}, {None if extras is None else len(extras)}"
            )
        rows = zip(responses, answers, strict=True)
        items = [(r, a, None if extras is None else extras[j]) for j, (r, a) in enumerate(rows)]
        outcomes = self._in_process(items) if self.reward.in_process else self._in_workers(items)
        return self._apply_policy(outcomes, prompt_ids)

    def counts(self) -> dict[str, int]:
        """Cumulative ``reward/failures`` and ``reward/timeouts`` of this scorer."""
        return {"reward/failures": self.failures, "reward/timeouts": self.timeouts}

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.conn.close()
        self._workers = []

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            for worker in self._workers:
                worker.process.kill()
        except Exception:  # interpreter shutdown: nothing left to clean
            pass

    # ---------------------------------------------------------------- running
    def _in_process(self, items: list[tuple[str, str, Extra | None]]) -> list[float | str]:
        """Batched call; on an exception or a wrong shape, one call per item to attribute the failure."""
        responses, answers, extras = [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]
        try:
            out = np.asarray(self.reward(responses, answers, extras if self.reward.uses_extras else None))
            if out.shape == (len(items),) and out.dtype.kind in "fiub":
                return [float(x) for x in out]
        except Exception:  # located below, item by item
            logger.debug("reward %r raised on a batch; scoring item by item", self.name)
        return [_one(self.reward, r, a, e) for r, a, e in items]

    def _in_workers(self, items: list[tuple[str, str, Extra | None]]) -> list[float | str]:
        """Stream items through the workers; a response past ``timeout_s`` kills its worker.

        An exception here (e.g. KeyboardInterrupt) stops every worker, so that no stale result can reach
        a later call.
        """
        cfg = self.config
        ctx = mp.get_context("spawn")
        try:
            while len(self._workers) < cfg.workers:
                self._workers.append(_Worker(ctx, self.reward))
            outcomes: list[float | str | None] = [None] * len(items)
            pending = deque(range(len(items)))
            while pending or any(w.positions for w in self._workers):
                for worker in self._workers:
                    if not worker.positions and pending:
                        take = [pending.popleft() for _ in range(min(cfg.chunk_size, len(pending)))]
                        worker.positions.extend(take)
                        worker.conn.send([items[j] for j in take])
                        worker.deadline = time.monotonic() + cfg.timeout_s
                self._collect(outcomes, pending, ctx)
        except BaseException:
            self.close()
            raise
        return [o if o is not None else "no result" for o in outcomes]

    def _collect(self, outcomes: list[float | str | None], pending: deque[int], ctx: Any) -> None:
        """Wait for the next result or deadline; record results, timeouts and dead workers."""
        busy = [w for w in self._workers if w.positions]
        wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
        ready = wait([w.conn for w in busy], timeout=wait_s)
        for i, worker in enumerate(self._workers):
            if not worker.positions:
                continue
            if worker.conn in ready:
                try:
                    _, value = worker.conn.recv()
                except (EOFError, OSError):
                    outcomes[worker.positions.popleft()] = "the worker process died"
                    self._replace(i, ctx, pending)
                    continue
                outcomes[worker.positions.popleft()] = value
                worker.deadline = time.monotonic() + self.config.timeout_s
            elif time.monotonic() >= worker.deadline:
                outcomes[worker.positions.popleft()] = _Timeout(self.config.timeout_s)
                self._replace(i, ctx, pending)

    def _replace(self, i: int, ctx: Any, pending: deque[int]) -> None:
        """Kill worker i, put its unscored items back in front of the queue, start a fresh worker.

        The other workers' deadlines move by the time the restart took (it is not theirs).
        """
        start = time.monotonic()
        worker = self._workers[i]
        pending.extendleft(reversed(worker.positions))
        worker.kill()
        self._workers[i] = _Worker(ctx, self.reward)
        spent = time.monotonic() - start
        for other in self._workers:
            other.deadline += spent if other is not self._workers[i] else 0.0

    # ----------------------------------------------------------------- policy
    def _apply_policy(
        self, outcomes: Sequence[float | str], prompt_ids: Sequence[int] | NDArray[np.int64]
    ) -> NDArray[np.float64]:
        out = np.zeros(len(outcomes))
        for j, outcome in enumerate(outcomes):
            reason = _problem(outcome)
            if reason is None:
                out[j] = float(outcome)
                continue
            timed_out = isinstance(outcome, _Timeout)
            if self.config.on_failure == "raise":
                self.close()
                raise RewardError(
                    f"reward {self.name!r} {'timed out' if timed_out else 'failed'} on prompt id "
                    f"{int(prompt_ids[j])} (response {j}): {reason}"
                )
            if timed_out:
                self.timeouts += 1
            else:
                self.failures += 1
            logger.warning("reward %r scored 0 for prompt id %d (response %d): %s", self.name, prompt_ids[j], j, reason)
        return out


class _Timeout(str):
    """Outcome of a response whose worker overran ``timeout_s``."""

    def __new__(cls, seconds: float) -> _Timeout:
        return super().__new__(cls, f"no result within timeout_s={seconds:g} s")


def _problem(outcome: float | str) -> str | None:
    """None when ``outcome`` is a valid reward, else the reason it is not."""
    if isinstance(outcome, str):
        return str(outcome)
    if not math.isfinite(outcome) or not 0.0 <= outcome <= 1.0:
        return f"returned {outcome!r}, not a finite number in [0, 1]"
    return None
