"""The simulated world: latent skills and the update rule (random numbers: :mod:`knapsack_rl.rules.keyed`).

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
    z_i  += lr_prompt * g_i / R          (R: rollouts trained on; B instead with loss_norm="budget";
                                          with loss_norm="group", g_i / (G n_i): every prompt's mean over its
                                          n_i rollouts, averaged over the G groups, as the trainer's group-mean)

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
same rewards; a rule that gives more rollouts sees the same first ones plus new ones
(:mod:`knapsack_rl.rules.keyed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.groups import grpo_advantages
from knapsack_rl.sim.config import SimConfig, get_init


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
        """Apply one update from a trained batch; returns the per-group scores g (G,), G = max group + 1."""
        if batch.size == 0:
            return np.zeros(0, dtype=np.float64)
        adv = grpo_advantages(batch.reward, batch.group, clip=self.config.adv_clip)  # (R,) A_j
        score = adv * (batch.reward - batch.p)  # (R,) A_j (r_j - p_i)
        g: NDArray[np.float64] = np.bincount(batch.group, weights=score).astype(np.float64)  # (G,) g_i
        prompts = np.zeros(g.size, dtype=np.int64)
        prompts[batch.group] = batch.prompt  # (G,) the prompt of each group (groups without rollouts: g = 0)
        if self.config.loss_norm == "group":  # each prompt weighs the same: its mean score, over G groups
            sizes = np.bincount(batch.group, minlength=g.size)
            g = np.divide(g, sizes, out=np.zeros_like(g), where=sizes > 0)
            scale = 1.0 / max(int((sizes > 0).sum()), 1)
        else:
            scale = 1.0 / (batch.size if self.config.loss_norm == "trained" else self.config.budget)  # 1/R or 1/B
        cfg = self.config
        self.shared += cfg.lr_shared * scale * float(g.sum())
        self.topic_skill += cfg.lr_topic * scale * np.bincount(self.topic[prompts], weights=g, minlength=cfg.num_topics)
        np.add.at(self.own, prompts, cfg.lr_prompt * scale * g)
        return g


@dataclass(frozen=True)
class Rollouts:
    """Flat rollouts: prompt id, group id, reward in {0, 1} and the true p at sampling time, each (R,).

    Group ids are small non-negative ints (the candidate index within the step), so per-group sums are
    ``np.bincount`` over them."""

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

    def group_variance(self) -> NDArray[np.bool_]:
        """Per group id 0..G-1: does the group have reward variance > 0 (some success and some failure)."""
        size = np.bincount(self.group)
        succ = np.bincount(self.group, weights=self.reward)
        out: NDArray[np.bool_] = (succ > 0) & (succ < size)  # (G,)
        return out
