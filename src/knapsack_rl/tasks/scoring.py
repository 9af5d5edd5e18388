"""Contained reward calls: worker processes with a per-response timeout, resource limits and a failure policy.

A reward function is user code (or a library such as math_verify) that can raise, return NaN, hang on a
pathological 100k-character answer, allocate without bound, start processes, or need a process's main
thread for its own ``signal.alarm``. A :class:`Scorer` runs it so that none of that can stop or corrupt a
training run:

* **Where it runs.** A reward registered with ``in_process=True`` (the built-in ``exact`` match: a string
  comparison that cannot hang) is called in the caller's process, once per batch. Every other reward runs
  in ``workers`` worker processes (``spawn`` start method, each in its own main thread, so math_verify's
  alarm works). Responses go to a worker in chunks of ``chunk_size``; the worker scores them one at a time
  and streams each result back, so a slow response costs one timeout, not a chunk.
* **Confinement.** Each worker leads its own process group, so that a process it starts can be
  killed with it; it dies with the process that started it (``PR_SET_PDEATHSIG``); its address space may
  grow by at most ``memory_mb`` after the reward is loaded (``RLIMIT_AS``), and each response may use
  ``cpu_s`` CPU seconds (``RLIMIT_CPU``, the kernel kills the worker past it); it writes no core files.
  The death signal and the memory cap need Linux (elsewhere a warning says they are not applied). A
  process the reward starts in a new session (``setsid``) leaves the group and is not followed.
* **Timeout.** Each response has ``timeout_s`` seconds (measured in the parent from the previous result
  of that worker). A worker that overruns is killed with its whole process group and restarted; the
  response counts as a timeout and the rest of its chunk is re-sent. A reward that raises
  :class:`~knapsack_rl.tasks.base.RewardTimeoutError` (its own time limit ran out) also counts as a timeout.
* **Killed.** A worker that dies while scoring (a signal, the memory or CPU limit, ``os._exit``) or runs
  out of memory (``MemoryError``, after which it exits) counts the response as killed; a fresh worker
  takes over the rest of its chunk.
* **Failure.** A reward that raises, returns a value that is not a finite number in [0, 1] (NaN, 1.5,
  the string ``"1.0"``) or the wrong number of values is a failure.
* **Policy** (``on_failure``): ``"zero"`` scores the response 0.0, counts it (``reward/failures``,
  ``reward/timeouts``, ``reward/killed``: see :meth:`Scorer.counts`) and logs a warning; ``"raise"`` raises
  :class:`RewardError` naming the reward, the prompt id, the response's position and the reason.

Scripts that score with worker processes need Python's usual ``if __name__ == "__main__":`` guard
(the spawn start method imports the main module in every worker). A worker dies when the thread that
started it ends (``PR_SET_PDEATHSIG`` follows the thread, not the process): call a Scorer from one
long-lived thread, such as the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.validate import check_choice, check_int, check_real
from knapsack_rl.tasks.base import Extra, Reward, RewardTimeoutError, RewardValueError, get_reward

logger = logging.getLogger(__name__)

FailurePolicy = Literal["zero", "raise"]
_STARTUP_TIMEOUT_S = 120.0
_PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")


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
    memory_mb: int | None = 2048
    """MiB by which a worker's address space may grow once its reward is loaded (``RLIMIT_AS``); an
    allocation past it fails, the worker exits and the response counts as killed. None: no limit."""
    cpu_s: int | None = 60
    """CPU seconds (all threads) one response may use in a worker (``RLIMIT_CPU``); past it the kernel
    kills the worker and the response counts as killed. None: no limit."""

    def __post_init__(self) -> None:
        check_real("timeout_s", self.timeout_s, low=0.0, open_low=True)
        check_choice("on_failure", self.on_failure, ["zero", "raise"])
        check_int("workers", self.workers, low=1)
        check_int("chunk_size", self.chunk_size, low=1)
        if self.memory_mb is not None:
            check_int("memory_mb", self.memory_mb, low=16)
        if self.cpu_s is not None:
            check_int("cpu_s", self.cpu_s, low=1)


@dataclass(frozen=True)
class Failed:
    """A response that got no valid reward: why, and which counter it goes to."""

    kind: Literal["failure", "timeout", "killed"]
    reason: str


Outcome = float | Failed


def _one(reward: Reward, response: str, answer: str, extra: Extra | None) -> Outcome:
    """The reward of one response, or why there is none."""
    try:
        return float(reward([response], [answer], [extra] if reward.uses_extras else None)[0])
    except RewardTimeoutError as exc:
        return Failed("timeout", f"the reward's own time limit ran out ({exc})"[:500])
    except RewardValueError as exc:
        return Failed("failure", str(exc)[:500])
    except MemoryError:
        return Failed("killed", "ran out of memory (MemoryError)")
    except Exception as exc:  # a user reward may raise anything: contain it
        return Failed("failure", f"{type(exc).__name__}: {exc}"[:500])


def _confine(parent: int, memory_mb: int | None) -> None:
    """In a worker: lead a new process group, die with ``parent``, no core files, cap the address space
    (the last two and the death signal on Linux only: see :meth:`Scorer.__init__`)."""
    os.setpgid(0, 0)
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not _LINUX:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    if memory_mb is not None:
        with open(f"/proc/{os.getpid()}/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = size + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _cpu_budget(cpu_s: int | None) -> None:
    """Let the next response use ``cpu_s`` more CPU seconds than this worker has used so far."""
    if cpu_s is None:
        return
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime) + cpu_s
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _worker_main(conn: Connection, reward: Reward, parent: int, memory_mb: int | None, cpu_s: int | None) -> None:
    """Worker loop: receive chunks of (response, answer, extra), send back one result per response.

    After a response ran out of memory the worker exits (its heap may be in any state).
    """
    _confine(parent, memory_mb)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for response, answer, extra in chunk:
            _cpu_budget(cpu_s)
            outcome = _one(reward, response, answer, extra)
            conn.send(("result", outcome))
            if isinstance(outcome, Failed) and outcome.kind == "killed":
                return


class _Worker:
    """One worker process (leader of its own process group) and its end of the pipe."""

    def __init__(self, ctx: Any, reward: Reward, config: ScoringConfig) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        args = (child, reward, os.getpid(), config.memory_mb, config.cpu_s)
        self.process = ctx.Process(target=_worker_main, args=args, daemon=True)
        self.process.start()
        self.grouped = False
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
        self.grouped = True
        self.positions: deque[int] = deque()
        self.deadline = math.inf

    def death(self) -> str:
        """How the worker process ended (waits for it briefly)."""
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"the worker process was killed by {signal.Signals(-code).name}"
        return f"the worker process died (exit code {code})"

    def kill(self) -> None:
        """SIGKILL the worker and every process of its group, reap it, close the pipe."""
        if self.grouped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to finish, then kill what is left of its process group."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=1)
        self.kill()


class Scorer:
    """Runs one registered reward under a :class:`ScoringConfig`; counts failures, timeouts and kills.

    ``scorer(responses, answers, prompt_ids, extras)`` -> (N,) float64 rewards in [0, 1].
    Use as a context manager, or call :meth:`close`, to stop the worker processes.
    """

    def __init__(self, reward: str, config: ScoringConfig | None = None) -> None:
        self.name = reward
        self.reward = get_reward(reward)
        self.config = config or ScoringConfig()
        self.failures = 0
        self.timeouts = 0
        self.killed = 0
        self._workers: list[_Worker] = []
        if not _LINUX and not self.reward.in_process:
            logger.warning(
                "reward workers die with their parent and obey memory_mb only on Linux; on %s they run without "
                "the death signal and the address-space cap (process groups and cpu_s still apply)",
                sys.platform,
            )

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
        """Cumulative ``reward/failures``, ``reward/timeouts`` and ``reward/killed`` of this scorer."""
        return {"reward/failures": self.failures, "reward/timeouts": self.timeouts, "reward/killed": self.killed}

    def close(self) -> None:
        """Stop the worker processes and what they started (a later call starts new ones)."""
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            for worker in self._workers:
                worker.kill()
        except Exception:  # interpreter shutdown: nothing left to clean
            pass

    # ---------------------------------------------------------------- running
    def _in_process(self, items: list[tuple[str, str, Extra | None]]) -> list[Outcome]:
        """Batched call; on an exception or a bad return value, one call per item to attribute the failure."""
        responses, answers, extras = [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]
        try:
            out = self.reward(responses, answers, extras if self.reward.uses_extras else None)
            return [float(x) for x in out]
        except Exception:  # located below, item by item
            logger.debug("reward %r raised on a batch; scoring item by item", self.name)
        return [_one(self.reward, r, a, e) for r, a, e in items]

    def _in_workers(self, items: list[tuple[str, str, Extra | None]]) -> list[Outcome]:
        """Stream items through the workers; a response past ``timeout_s`` kills its worker.

        An exception here (e.g. KeyboardInterrupt) stops every worker, so that no stale result can reach
        a later call.
        """
        cfg = self.config
        ctx = mp.get_context("spawn")
        try:
            while len(self._workers) < cfg.workers:
                self._workers.append(_Worker(ctx, self.reward, cfg))
            outcomes: list[Outcome | None] = [None] * len(items)
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
        return [o if o is not None else Failed("failure", "no result") for o in outcomes]

    def _collect(self, outcomes: list[Outcome | None], pending: deque[int], ctx: Any) -> None:
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
                    outcomes[worker.positions.popleft()] = Failed("killed", worker.death())
                    self._replace(i, ctx, pending)
                    continue
                outcomes[worker.positions.popleft()] = value
                worker.deadline = time.monotonic() + self.config.timeout_s
                if isinstance(value, Failed) and value.kind == "killed":  # the worker exits after it
                    self._replace(i, ctx, pending)
            elif time.monotonic() >= worker.deadline:
                outcomes[worker.positions.popleft()] = Failed(
                    "timeout", f"no result within timeout_s={self.config.timeout_s:g} s"
                )
                self._replace(i, ctx, pending)

    def _replace(self, i: int, ctx: Any, pending: deque[int]) -> None:
        """Kill worker i and its process group, put its unscored items back in front of the queue, start a
        fresh worker.

        The other workers' deadlines move by the time the restart took (it is not theirs).
        """
        start = time.monotonic()
        worker = self._workers[i]
        pending.extendleft(reversed(worker.positions))
        worker.kill()
        self._workers[i] = _Worker(ctx, self.reward, self.config)
        spent = time.monotonic() - start
        for other in self._workers:
            other.deadline += spent if other is not self._workers[i] else 0.0

    # ----------------------------------------------------------------- policy
    def _apply_policy(
        self, outcomes: Sequence[Outcome], prompt_ids: Sequence[int] | NDArray[np.int64]
    ) -> NDArray[np.float64]:
        out = np.zeros(len(outcomes))
        for j, outcome in enumerate(outcomes):
            failed = _problem(outcome)
            if failed is None:
                out[j] = float(outcome)  # type: ignore[arg-type]
                continue
            if self.config.on_failure == "raise":
                self.close()
                verb = {"failure": "failed", "timeout": "timed out", "killed": "was killed"}[failed.kind]
                raise RewardError(
                    f"reward {self.name!r} {verb} on prompt id {int(prompt_ids[j])} (response {j}): {failed.reason}"
                )
            if failed.kind == "timeout":
                self.timeouts += 1
            elif failed.kind == "killed":
                self.killed += 1
            else:
                self.failures += 1
            logger.warning(
                "reward %r scored 0 for prompt id %d (response %d): %s", self.name, prompt_ids[j], j, failed.reason
            )
        return out


def _problem(outcome: Outcome) -> Failed | None:
    """None when ``outcome`` is a valid reward, else why it is not."""
    if isinstance(outcome, Failed):
        return outcome
    if not math.isfinite(outcome) or not 0.0 <= outcome <= 1.0:
        return Failed("failure", f"returned {outcome!r}, not a finite number in [0, 1]")
    return None
