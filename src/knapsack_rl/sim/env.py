"""The per-step environment a rule acts through: the epoch-ordered prompt stream and the sampler.

Every rollout a rule generates goes through :meth:`StepEnv.sample`, which counts it; a rule's spend
is therefore measured, not self-reported.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.sim.config import SimConfig
from knapsack_rl.sim.world import REWARD_STREAM, Draw, Rollouts, World, keyed_uniform


class StepEnv:
    """Prompt stream in epoch order (a permutation per epoch, a function of (seed, epoch) only) and a
    Bernoulli sampler with common random numbers (:func:`keyed_uniform`)."""

    def __init__(self, config: SimConfig, world: World, seed: int) -> None:
        self.config = config
        self.world = world
        self.seed = seed
        self.step = 0
        self.epoch = 0
        self._order = self._permutation(0)
        self._cursor = 0
        self._next_group = 0
        self.spent = 0  # rollouts generated in the current step
        self.drawn = 0  # prompts taken from the stream since the start
        self.budget_seen: dict[int, int] = {}  # rollouts per group (drawn prompt) in this step
        self._group_prompt: dict[int, int] = {}
        self.snapshot: tuple[NDArray[np.float64], NDArray[np.int64]] | None = None

    @property
    def n(self) -> int:
        """Uniform rollouts per prompt N."""
        return self.config.n

    @property
    def prompts_per_step(self) -> int:
        """Prompts per step M."""
        return self.config.prompts_per_step

    @property
    def budget(self) -> int:
        """Rollouts per step B = N x M."""
        return self.config.budget

    def _permutation(self, epoch: int) -> NDArray[np.int64]:
        return np.random.default_rng([self.seed, 0xE90C, epoch]).permutation(self.config.num_prompts)

    def draw(self, k: int) -> Draw:
        """The next k prompts of the stream (crossing into the next epoch when this one ends)."""
        prompts, epochs = [], []
        while k > 0:
            if self._cursor == self._order.size:
                self.epoch += 1
                self._order, self._cursor = self._permutation(self.epoch), 0
            take = min(k, self._order.size - self._cursor)
            prompts.append(self._order[self._cursor : self._cursor + take])
            epochs.append(np.full(take, self.epoch, dtype=np.int64))
            self._cursor += take
            k -= take
        p = np.concatenate(prompts) if prompts else np.zeros(0, dtype=np.int64)
        self.drawn += p.size
        groups = np.arange(self._next_group, self._next_group + p.size, dtype=np.int64)
        self._next_group += p.size
        return Draw(p, np.concatenate(epochs) if epochs else np.zeros(0, dtype=np.int64), groups)

    def coin(self, draw: Draw, stream: int) -> NDArray[np.float64]:
        """One U(0, 1) per drawn prompt from a named stream (same for every rule; e.g. skip decisions)."""
        return keyed_uniform(self.seed, stream, draw.prompts, draw.epochs, 0)

    def success(self, prompts: NDArray[np.int64]) -> NDArray[np.float64]:
        """True success probability of the prompts now (for oracle rules and tests)."""
        return self.world.success(prompts)

    def sample(self, draw: Draw, counts: ArrayLike, offset: ArrayLike = 0) -> Rollouts:
        """Generate ``counts[k]`` rollouts of each drawn prompt; rollout indices start at ``offset[k]``.

        Reward of rollout j: ``1[U(seed, prompt, epoch, j) < p]`` (common random numbers). Every
        rollout is added to the step's spend.
        """
        c = np.asarray(counts, dtype=np.int64).reshape(-1)
        if c.shape != (len(draw),):
            raise ValueError(f"counts must have shape ({len(draw)},); got {c.shape}")
        if np.any(c < 0):
            raise ValueError(f"counts must be >= 0; got min {int(c.min())}")
        off = np.broadcast_to(np.asarray(offset, dtype=np.int64), c.shape)
        p = self.world.success(draw.prompts)  # (k,)
        slot = np.repeat(np.arange(c.size), c)  # (R,) drawn prompt of each rollout
        index = np.arange(slot.size) - np.repeat(np.cumsum(c) - c, c) + off[slot]  # rollout index j
        u = keyed_uniform(self.seed, REWARD_STREAM, draw.prompts[slot], draw.epochs[slot], index)
        self.spent += int(c.sum())
        for gid, pid, cnt in zip(draw.groups.tolist(), draw.prompts.tolist(), c.tolist(), strict=True):
            self.budget_seen[gid] = self.budget_seen.get(gid, 0) + cnt
            self._group_prompt[gid] = pid
        return Rollouts(draw.prompts[slot], draw.groups[slot], (u < p[slot]).astype(np.float64), p[slot])

    def begin_step(self) -> None:
        """Reset the per-step counters."""
        self.spent = 0
        self.budget_seen = {}
        self._group_prompt = {}
        self._next_group = 0

    def end_step(self) -> None:
        """Close the step (call before the update): on snapshot steps keep (true p, rollouts) per prompt."""
        self.snapshot = None
        if self.step % self.config.snapshot_every == 0 and self.budget_seen:
            prompts = np.fromiter(
                (self._group_prompt[g] for g in self.budget_seen), dtype=np.int64, count=len(self.budget_seen)
            )
            counts = np.fromiter(self.budget_seen.values(), dtype=np.int64, count=len(self.budget_seen))
            self.snapshot = (self.world.success(prompts), counts)
        self.step += 1
