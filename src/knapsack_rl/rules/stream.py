"""What every engine that owns its data shares: the prompt stream and the equal-rollouts budget (NumPy only).

The reference trainer (:mod:`knapsack_rl.train`) and the simulator (:mod:`knapsack_rl.sim`) both read
their prompts through one :class:`PromptStream` (a seeded permutation per epoch, read by a cursor; a
step's batch never straddles two epochs; rules that draw more prompts read on from the same cursor) and
end a run through one :class:`RolloutBudget`: every rule may generate the uniform arm's total rollouts,
so rules are compared at equal compute (:data:`MAX_STEPS_FACTOR` caps the steps of a rule that spends
less per step; a step that generates nothing ends the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.validate import check_int

MAX_STEPS_FACTOR = 4
"""A run stops after ``MAX_STEPS_FACTOR x`` its planned steps even if it generated fewer rollouts than its
budget (a rule that spends less than B per step; logged)."""
MAX_EPOCH = 1 << 40
"""The largest epoch a saved stream may be in (a run reads at least one prompt per epoch)."""


class PromptStream:
    """The training prompts in a seeded order per epoch, read through a cursor ``(epoch, position)``.

    Epoch e's order is ``default_rng([seed, *salt, e]).permutation(size)``: a function of the seed (and
    the engine's ``salt``) and the epoch only, so every arm of a seed reads the same order. :meth:`batch`
    takes a step's M prompts and never straddles two epochs (as a data loader with ``drop_last``: with
    fewer than M left the next epoch begins); :meth:`draw` takes the prompts a rule asks for beyond the
    batch and crosses into the next epoch when one ends. ``epoch`` is the pass the cursor is in (0-based).
    """

    def __init__(self, size: int, seed: int, *, salt: tuple[int, ...] = ()) -> None:
        self.size = check_int("size", size, low=1)
        self.seed = check_int("seed", seed, low=0)
        self.salt = tuple(check_int("salt", v, low=0) for v in salt)
        self.epoch = 0
        self.position = 0
        self._cached: tuple[int, NDArray[np.int64]] | None = None

    def order(self, epoch: int) -> NDArray[np.int64]:
        """(size,) the permutation of epoch ``epoch`` (cached for the latest epoch asked)."""
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, *self.salt, epoch]).permutation(self.size))
        return self._cached[1]

    def _batch_start(self, m: int) -> tuple[int, int]:
        """Where a batch of m prompts starts: this epoch's position, or the next epoch's start."""
        check_int("m", m, low=1, high=self.size)
        if self.size - self.position < m:
            return self.epoch + 1, 0
        return self.epoch, self.position

    def peek(self, m: int) -> tuple[NDArray[np.int64], int]:
        """The positions (m,) and epoch of the batch :meth:`batch` would take, without moving."""
        epoch, pos = self._batch_start(m)
        return self.order(epoch)[pos : pos + m].copy(), epoch

    def batch(self, m: int) -> tuple[NDArray[np.int64], int]:
        """A step's batch: positions (m,) in the training set, all of one epoch, and that epoch."""
        index, epoch = self.peek(m)
        self.epoch, self.position = epoch, self._batch_start(m)[1] + m
        return index, epoch

    def draw(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The next k prompts (positions (k,)) and the epoch each was drawn in (k,), crossing epochs."""
        check_int("k", k, low=0)
        index, epochs = [], []
        while k > 0:
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
            take = min(k, self.size - self.position)
            index.append(self.order(self.epoch)[self.position : self.position + take])
            epochs.append(np.full(take, self.epoch, dtype=np.int64))
            self.position += take
            k -= take
        if not index:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(index), np.concatenate(epochs)

    def state_dict(self) -> dict[str, int]:
        """The cursor as plain data."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "<state>") -> None:
        """Restore :meth:`state_dict` output (:meth:`check_state`); a refused state changes nothing."""
        self.epoch, self.position = self.check_state(state, source=source)

    def check_state(self, state: object, *, source: str = "<state>") -> tuple[int, int]:
        """The cursor ``(epoch, position)`` of a :meth:`state_dict` output, checked against this stream.

        Raises:
            ValueError: naming ``source``: other keys, a non-integer, a negative epoch, a position outside
                ``[0, size]``, or an epoch past :data:`MAX_EPOCH`.
        """
        if not isinstance(state, dict) or sorted(map(str, state)) != ["epoch", "position"]:
            got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{source}: not a prompt stream state (keys 'epoch', 'position'); got {got}")
        try:
            epoch = check_int("epoch", state["epoch"], low=0, high=MAX_EPOCH)
            position = check_int("position", state["position"], low=0, high=self.size)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return epoch, position


MAX_EPOCH = 1 << 40
"""The largest epoch a saved stream may be in (a run reads at least one prompt per epoch)."""


@dataclass
class RolloutBudget:
    """The equal-compute end of a run: ``total`` rollouts (the uniform arm's ``steps x B``), at most
    ``MAX_STEPS_FACTOR x steps`` steps, and no further once a step generated nothing.

    Attributes:
        total: rollouts the run may generate.
        steps: the run's planned steps (the uniform arm's).
        spent: rollouts generated so far; ``step``: steps taken; ``exhausted``: a step generated nothing.
    """

    total: int
    steps: int
    spent: int = 0
    step: int = 0
    exhausted: bool = False

    def __post_init__(self) -> None:
        check_int("total", self.total, low=0)
        check_int("steps", self.steps, low=0)

    @property
    def left(self) -> int:
        """Rollouts the run may still generate (0 once spent)."""
        return max(self.total - self.spent, 0)

    @property
    def finished(self) -> bool:
        """The run has generated its rollouts, hit the step cap, or its rule had nothing left to sample."""
        return self.spent >= self.total or self.step >= MAX_STEPS_FACTOR * self.steps or self.exhausted

    def add(self, spent: int) -> None:
        """Count a step that generated ``spent`` rollouts."""
        self.spent += check_int("spent", spent, low=0)
        self.step += 1


__all__ = ["MAX_EPOCH", "MAX_STEPS_FACTOR", "PromptStream", "RolloutBudget"]
