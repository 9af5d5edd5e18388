"""Two advantage estimators for verl, registered through verl's public ``register_adv_est``.

verl's ``algorithm.adv_estimator`` selects one by name (``core_algos.get_adv_estimator_fn``); importing
:mod:`knapsack_rl.integrations.verl.hooks` registers both in verl's driver, where the V1 trainer computes
advantages, so any config that loads the knapsack hooks (the shipped YAML does) can name them:

``knapsack_recipe_grpo`` (:data:`RECIPE_ADV_EST`): the Knapsack RL recipe's advantage.
    GRPO grouped by ``uid`` (every rollout of a prompt shares its uid, whatever the prompt's count):
    ``A = clip((r - mean_g) / (std_g + 1e-6), -5, 5)`` with the unbiased std, as
    :func:`knapsack_rl.grpo.advantages.grouped_advantages` computes it (this estimator calls it). verl's
    own ``grpo`` does not clip, and gives a lone rollout ``r / (1 + 1e-6)`` where this gives 0.

``knapsack_grpo_group_mean`` (:data:`GROUP_MEAN_ADV_EST`): the same advantages, each prompt's scaled so
    that under verl's ``loss_agg_mode=token-mean`` every prompt weighs the same in the loss whatever its
    count: the project trainer's ``group-mean`` aggregation (:func:`knapsack_rl.grpo.loss.aggregation_weights`).
    verl 0.9.1 has no public extension point for the aggregation itself: ``loss_agg_mode`` is checked
    against a fixed list (``ActorConfig.__post_init__``) and a registered policy loss
    (``register_policy_loss``) is handed no group ids. The advantage estimator sees the ``uid`` s, and
    verl's PPO-clip loss (``loss_mode=vanilla``, dual clip included) is positively homogeneous in the
    advantage (``l(c A) = c l(A)`` for ``c > 0``), so scaling prompt g's advantages by
    ``c_g = T / (G * T_g)`` (T response tokens of the step, ``T_g`` those of prompt g, G prompts) turns
    verl's token mean ``sum_t l_t / T`` into ``sum_t l_t / (G * T_g)``: the group mean, exactly, when the
    step is one PPO mini-batch. With several mini-batches verl divides each by its own token count, so
    the prompts weigh the same up to the ratio of a mini-batch's tokens to ``T / num_mini_batches``.
    Side effects, by construction: verl's ``critic/advantages/*`` metrics show the scaled values, and the
    entropy and KL losses (aggregated by verl apart from the advantages) keep the token mean.
    ``python -m knapsack_rl.integrations.verl.check`` refuses it unless ``loss_agg_mode=token-mean`` and
    ``loss_mode=vanilla``.

Both refuse ``algorithm.norm_adv_by_std_in_grpo=false`` (the recipe divides by the std). In verl's V1
trainer an estimator other than ``grpo`` sees every output of every session; with the single-turn agent
loop (the default; one output per session) that is one row per rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from knapsack_rl.grpo.advantages import grouped_advantages

RECIPE_ADV_EST = "knapsack_recipe_grpo"
"""verl ``algorithm.adv_estimator`` name of the recipe's GRPO advantage (clip 5)."""
GROUP_MEAN_ADV_EST = "knapsack_grpo_group_mean"
"""verl ``algorithm.adv_estimator`` name of the recipe's advantage weighted for a per-prompt (group) mean loss."""
RECIPE_EPS = 1e-6
"""Added to the group's std (verl's and the recipe's epsilon)."""
RECIPE_CLIP = 5.0
"""The recipe clips advantages to ``[-5, 5]``."""
GROUP_MEAN_LOSS_AGG = "token-mean"
"""The ``actor_rollout_ref.actor.loss_agg_mode`` under which :data:`GROUP_MEAN_ADV_EST` gives the group mean."""
GROUP_MEAN_LOSS_MODE = "vanilla"
"""The ``actor_rollout_ref.actor.policy_loss.loss_mode`` it needs (PPO-clip: homogeneous in the advantage)."""


def _group_ids(index: Any, rows: int) -> torch.Tensor:
    """Dense int64 group id per row from verl's ``index`` (the rollouts' ``uid`` s)."""
    if index is None:
        raise ValueError("index (verl's uid per rollout) is required: the knapsack estimators group rollouts by uid")
    uids = np.asarray(index, dtype=object).reshape(-1)
    if uids.size != rows:
        raise ValueError(f"index must have one uid per rollout; got {uids.size} uids for {rows} rollouts")
    _, dense = np.unique(uids.astype(str), return_inverse=True)
    return torch.as_tensor(dense.reshape(-1), dtype=torch.int64)


def _check_std_scaling(config: Any) -> None:
    """The recipe divides by the group std; a config asking otherwise is refused, not ignored."""
    getter = getattr(config, "get", None)
    if callable(getter) and getter("norm_adv_by_std_in_grpo", True) is False:
        raise ValueError(
            "algorithm.norm_adv_by_std_in_grpo=false: the knapsack advantage estimators divide by the group std "
            "(the recipe's); set it to true or use verl's grpo"
        )


def recipe_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's advantage (module docstring) in verl's estimator signature.

    Args:
        token_level_rewards: (R, T) token rewards; a rollout's reward is their sum.
        response_mask: (R, T) 1 on response tokens.
        index: (R,) verl's ``uid`` per rollout (the group key).
        config: verl's ``algorithm`` config (read for ``norm_adv_by_std_in_grpo`` only).
        **_: verl passes ``reward_baselines`` when its batch has them; they play no part here.

    Returns:
        ``(advantages, returns)``, both (R, T): the rollout's advantage on each of its response tokens.
    """
    _check_std_scaling(config)
    rewards = token_level_rewards.sum(dim=-1)
    adv = grouped_advantages(rewards, _group_ids(index, rewards.shape[0]), eps=RECIPE_EPS, clip=RECIPE_CLIP)
    scores = adv.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask.to(token_level_rewards.dtype)
    return scores, scores


def group_mean_scale(response_mask: torch.Tensor, index: Any) -> torch.Tensor:
    """(R,) factor ``c_g = T / (G * T_g)`` of each rollout (module docstring), float64.

    T: response tokens of the batch, ``T_g``: those of the rollout's group, G: groups. Under a token mean
    over the batch, a rollout's tokens then weigh ``1 / (G * T_g)``: every group's weights sum to ``1 / G``.
    """
    mask = response_mask.to(torch.float64)
    groups = _group_ids(index, mask.shape[0])
    count = int(groups.max().item()) + 1 if groups.numel() else 0
    tokens = torch.zeros(count, dtype=torch.float64).index_add_(0, groups, mask.sum(dim=-1))  # (G,)
    total = tokens.sum()
    return total / (count * tokens[groups].clamp(min=1.0))


def recipe_grpo_group_mean_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`recipe_grpo_advantage` times :func:`group_mean_scale` (use with ``loss_agg_mode=token-mean``)."""
    scores, _returns = recipe_grpo_advantage(token_level_rewards, response_mask, index=index, config=config)
    scale = group_mean_scale(response_mask, index).to(scores.dtype)
    weighted = scores * scale.unsqueeze(-1)
    return weighted, weighted


ESTIMATORS: Mapping[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = MappingProxyType(
    {RECIPE_ADV_EST: recipe_grpo_advantage, GROUP_MEAN_ADV_EST: recipe_grpo_group_mean_advantage}
)
"""The estimators :func:`register_algorithms` registers, by verl name (read-only)."""


def register_algorithms() -> tuple[str, ...]:
    """Register :data:`ESTIMATORS` with verl's ``register_adv_est`` (idempotent); returns their names.

    Raises:
        ValueError: verl already has another function under one of the names.
    """
    from verl.trainer.ppo import core_algos

    for name, fn in ESTIMATORS.items():
        current = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
        if current is fn:
            continue
        if current is not None:
            raise ValueError(f"verl already has an advantage estimator named {name!r} ({current!r}); not replacing it")
        core_algos.register_adv_est(name)(fn)
    return tuple(ESTIMATORS)


__all__ = [
    "ESTIMATORS",
    "GROUP_MEAN_ADV_EST",
    "GROUP_MEAN_LOSS_AGG",
    "GROUP_MEAN_LOSS_MODE",
    "RECIPE_ADV_EST",
    "RECIPE_CLIP",
    "RECIPE_EPS",
    "group_mean_scale",
    "recipe_grpo_advantage",
    "recipe_grpo_group_mean_advantage",
    "register_algorithms",
]
