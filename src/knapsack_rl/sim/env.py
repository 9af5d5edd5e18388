"""The simulator's engine: the prompt stream (shared with the trainer) and the Bernoulli sampler.

:class:`StepEnv` implements :class:`~knapsack_rl.rules.interface.Engine`: rules ask it for prompts
(``draw``) and rollouts (``generate``) through :func:`~knapsack_rl.rules.interface.run_step`. Every
rollout goes through :meth:`StepEnv.sample`, which counts it; a rule's spend is therefore measured
by the engine, not self-reported.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.rules.interface import Selection, StepLog, StepSpec
from knapsack_rl.rules.keyed import REWARD_STREAM, keyed_uniform
from knapsack_rl.rules.stream import PromptStream
from knapsack_rl.sim.config import SimConfig
from knapsack_rl.sim.world import Rollouts, World

STREAM_SALT = (0xE90C,)
"""The simulator's key in its prompt stream's permutations (``default_rng([seed, 0xE90C, epoch])``)."""


class StepEnv:
    """The prompt stream of the trainer (:class:`~knapsack_rl.rules.stream.PromptStream`: a permutation
    per epoch, a function of (seed, epoch) only) and a Bernoulli sampler with common random numbers
    (:func:`~knapsack_rl.rules.keyed.keyed_uniform`).

    Attributes:
        epoch: the pass over the training prompts the stream is in (0-based).
        step: steps begun so far.
        spent: rollouts generated since :meth:`begin_step`; ``drawn``: prompts taken from the stream
            since the start.
    """

    def __init__(self, config: SimConfig, world: World, seed: int) -> None:
        self.config = config
        self.world = world
        self.seed = seed
        self.step = 0
        self.stream = PromptStream(config.num_prompts, seed, salt=STREAM_SALT)
        self.spent = 0
        self.drawn = 0
        self._p: list[NDArray[np.float64]] = []  # true p of each rollout of the step, per generate call

    @property
    def epoch(self) -> int:
        """The pass over the training prompts the stream is in (0-based)."""
        return self.stream.epoch

    def draw(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The next k prompts of the stream and their epochs (crossing into the next epoch when one ends)."""
        prompts, epochs = self.stream.draw(k)
        self.drawn += prompts.size
        return prompts, epochs

    def sample(
        self, prompts: NDArray[np.int64], epochs: NDArray[np.int64], counts: ArrayLike, offset: ArrayLike = 0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Generate ``counts[k]`` rollouts of each prompt; rollout indices start at ``offset[k]``.

        Reward of rollout j: ``1[U(seed, prompt, epoch, j) < p]`` (common random numbers), rollouts
        listed prompt by prompt. Every rollout is added to the step's spend. Returns (rewards, true p),
        each (sum(counts),).
        """
        c = np.asarray(counts, dtype=np.int64).reshape(-1)
        if c.shape != prompts.shape:
            raise ValueError(f"counts must have shape {prompts.shape}; got {c.shape}")
        if np.any(c < 0):
            raise ValueError(f"counts must be >= 0; got min {int(c.min())}")
        off = np.broadcast_to(np.asarray(offset, dtype=np.int64), c.shape)
        p = self.world.success(prompts)  # (k,)
        slot = np.repeat(np.arange(c.size), c)  # (R,) prompt of each rollout
        index = np.arange(slot.size) - np.repeat(np.cumsum(c) - c, c) + off[slot]  # rollout index j
        u = keyed_uniform(self.seed, REWARD_STREAM, prompts[slot], epochs[slot], index)
        self.spent += int(c.sum())
        return (u < p[slot]).astype(np.float64), p[slot]

    # ------------------------------------------------------------ Engine protocol
    def generate(self, log: StepLog, counts: NDArray[np.int64]) -> NDArray[np.float64]:
        """``counts[k]`` more rollouts of candidate k (indices continue after its earlier ones)."""
        rewards, p = self.sample(log.ids, log.epochs, counts, offset=log.counts)
        self._p.append(p)
        return rewards

    # ----------------------------------------------------------------- the step
    def begin_step(self) -> StepSpec:
        """Reset the per-step counters and draw the step's batch of M prompts.

        A batch never straddles two epochs (as a data loader with ``drop_last``): when fewer than M
        prompts are left in this epoch's order they are skipped and the next epoch begins, so the
        batch's prompts are distinct and the step has one epoch.
        """
        self.spent = 0
        self._p = []
        prompts, epoch = self.stream.batch(self.config.prompts_per_step)
        self.drawn += prompts.size
        return StepSpec(prompts, epoch=epoch, step=self.step, n=self.config.n, total_budget=self.config.budget)

    def end_step(self, log: StepLog, selection: Selection) -> Rollouts:
        """Close the step: the trained batch (group = candidate index) for :meth:`World.update`."""
        p = np.concatenate(self._p) if self._p else np.zeros(0)
        if p.size != log.rewards.size or self.spent != log.spent:
            raise RuntimeError(
                f"the log holds {log.spent} rollouts of step {log.spec.step}; the engine sampled {self.spent}"
            )
        keep = selection.train
        cand = log.rollout_candidate[keep]
        self.step += 1
        return Rollouts(log.ids[cand].astype(np.int64), cand, log.rewards[keep], p[keep])
