"""The simulated world: latent skills, common random numbers, the prompt stream and the update rule.

Model. Every prompt i (training or held-out) has a success probability ``p_i = sigmoid(theta_i)`` with

    theta_i = base_i + a + s[topic(i)] + z_i

- ``base_i``: fixed initial difficulty (a registered initial distribution plus a per-topic offset);
- ``a``: shared ability, learned, moves every prompt;
- ``s[c]``: topic skill, learned, moves every prompt of topic c (held-out prompts included);
- ``z_i``: the prompt's own logit, learned only from its own rollouts (memorisation; held-out
  prompts have none, so they improve only through ``a`` and ``s``).

Update rule (one step, on the trained batch of R rollouts with rewards r_j in {0, 1}):

    A_j   = GRPO advantage of rollout j within its prompt's group (unbiased std, clip)
    g_i   = sum_{j in group i} A_j (r_j - p_i)                     (score of prompt i)
    a    += lr_shared * sum_i g_i / R
    s[c] += lr_topic  * sum_{i in topic c} g_i / R
    z_i  += lr_prompt * g_i / R

Justification: treat the outcome of a rollout as a Bernoulli "action" with logit theta_i; then
``d log P(r | theta) / d theta = r - p``, so ``g_i`` is exactly the REINFORCE/GRPO policy gradient of
the group with respect to its logit, and the chain rule through ``theta_i = base + a + s + z`` sends it
to the three parameter blocks. Dividing by R is the token-mean loss over the whole batch (prompts
with more rollouts weigh more, as in the recipe). A group with zero reward variance has ``A = 0``
and therefore ``g_i = 0``: it moves nothing. ``E[g_i] > 0`` whenever ``0 < p_i < 1``, so signal
always helps, with a magnitude growing like ``n_i * std``.

Common random numbers: the reward of rollout j of prompt i in its e-th epoch is
``1[U(seed, i, e, j) < p_i]`` with U a counter-based hash, and the epoch orders are a function of
(seed, epoch) only. Two rules that give the same prompt the same counts at the same skill see the
same rewards; a rule that gives more rollouts sees the same first ones plus new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knapsack_rl.core.groups import grpo_advantages
from knapsack_rl.sim.config import SimConfig, get_init

REWARD_STREAM, SKIP_STREAM = 1, 2
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser (a bijection on 64-bit words with good avalanche)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def keyed_uniform(seed: int, stream: int, prompt: ArrayLike, epoch: ArrayLike, index: ArrayLike) -> NDArray[np.float64]:
    """U(0, 1) draws that depend only on (seed, stream, prompt, epoch, index), broadcast together.

    ``h = mix(mix(mix(mix(seed ^ stream) + prompt) + epoch) + index)``, then ``(h >> 11) / 2^53``.
    """
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(((seed & 0xFFFFFFFF) << 8) ^ stream, dtype=np.uint64) + _GOLD)
        for part in (prompt, epoch, index):
            h = _mix(h + np.asarray(part, dtype=np.int64).astype(np.uint64) * _GOLD)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``1 / (1 + exp(-x))``, elementwise."""
    out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return out


class World:
    """Latent skills of P training and H held-out prompts (see the module docstring).

    Prompt ids ``0..P-1`` are training prompts, ``P..P+H-1`` held-out prompts.
    """

    def __init__(self, config: SimConfig, seed: int) -> None:
        self.config = config
        rng = np.random.default_rng([seed, 0x5EED])
        fn, topic_std = get_init(config.init)
        total = config.num_prompts + config.num_heldout
        self.topic = rng.integers(0, config.num_topics, total)  # (P+H,)
        topic_offset = rng.normal(0.0, topic_std, config.num_topics) if topic_std > 0 else np.zeros(config.num_topics)
        self.base = fn(rng, total) + topic_offset[self.topic]  # (P+H,)
        self.shared = 0.0
        self.topic_skill = np.zeros(config.num_topics)
        self.own = np.zeros(total)  # held-out rows stay 0

    def logits(self, prompts: NDArray[np.int64] | None = None) -> NDArray[np.float64]:
        """theta of the given prompts (all P+H when None)."""
        if prompts is None:
            return self.base + self.shared + self.topic_skill[self.topic] + self.own
        return self.base[prompts] + self.shared + self.topic_skill[self.topic[prompts]] + self.own[prompts]

    def success(self, prompts: NDArray[np.int64] | None = None) -> NDArray[np.float64]:
        """True success probability p = sigmoid(theta)."""
        return sigmoid(self.logits(prompts))

    def mean_success(self) -> tuple[float, float]:
        """Mean true success rate over the training prompts and over the held-out prompts."""
        p = self.success()
        num = self.config.num_prompts
        held = float(p[num:].mean()) if p.size > num else float("nan")
        return float(p[:num].mean()), held

    def update(self, batch: Rollouts) -> NDArray[np.float64]:
        """Apply one update from a trained batch; returns the per-group scores g (G,) in group order."""
        if batch.size == 0:
            return np.zeros(0, dtype=np.float64)
        gid, first = _dense_groups(batch.group)
        adv = grpo_advantages(batch.reward, gid, clip=self.config.adv_clip)  # (R,) A_j
        score = adv * (batch.reward - batch.p)  # (R,) A_j (r_j - p_i)
        g: NDArray[np.float64] = np.bincount(gid, weights=score).astype(np.float64)  # (G,) g_i
        prompts = batch.prompt[first]  # (G,)
        scale = 1.0 / batch.size  # token-mean over the batch
        cfg = self.config
        self.shared += cfg.lr_shared * scale * float(g.sum())
        self.topic_skill += cfg.lr_topic * scale * np.bincount(self.topic[prompts], weights=g, minlength=cfg.num_topics)
        np.add.at(self.own, prompts, cfg.lr_prompt * scale * g)
        return g


def _dense_groups(group: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Dense group index per rollout and the first rollout of each group (groups by first appearance)."""
    uniq, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    return rank[inverse.reshape(-1)], first[order]


@dataclass(frozen=True)
class Draw:
    """Prompts taken from the stream: ids (k,), the epoch of each (k,) and a group id unique in the step (k,)."""

    prompts: NDArray[np.int64]
    epochs: NDArray[np.int64]
    groups: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.prompts.size)

    def select(self, mask: NDArray[np.bool_] | NDArray[np.int64]) -> Draw:
        """The sub-draw at a boolean mask or index array."""
        return Draw(self.prompts[mask], self.epochs[mask], self.groups[mask])

    @staticmethod
    def concat(draws: list[Draw]) -> Draw:
        """Several draws as one."""
        if not draws:
            empty = np.zeros(0, dtype=np.int64)
            return Draw(empty, empty, empty)
        return Draw(*(np.concatenate([getattr(d, f) for d in draws]) for f in ("prompts", "epochs", "groups")))


@dataclass(frozen=True)
class Rollouts:
    """Flat rollouts: prompt id, group id, reward in {0, 1} and the true p at sampling time, each (R,)."""

    prompt: NDArray[np.int64]
    group: NDArray[np.int64]
    reward: NDArray[np.float64]
    p: NDArray[np.float64]

    @property
    def size(self) -> int:
        """Number of rollouts R."""
        return int(self.reward.size)

    def select(self, mask: NDArray[np.bool_]) -> Rollouts:
        """The rollouts at a boolean mask."""
        return Rollouts(self.prompt[mask], self.group[mask], self.reward[mask], self.p[mask])

    @staticmethod
    def concat(parts: list[Rollouts]) -> Rollouts:
        """Several batches as one."""
        if not parts:
            return Rollouts(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        return Rollouts(*(np.concatenate([getattr(r, f) for r in parts]) for f in ("prompt", "group", "reward", "p")))

    def varied_groups(self) -> NDArray[np.bool_]:
        """Per rollout: does its group have reward variance > 0 (some success and some failure)."""
        gid, _ = _dense_groups(self.group)
        size = np.bincount(gid)
        succ = np.bincount(gid, weights=self.reward)
        varied = (succ > 0) & (succ < size)  # (G,)
        out: NDArray[np.bool_] = varied[gid]
        return out
