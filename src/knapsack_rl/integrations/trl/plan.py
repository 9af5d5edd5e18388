"""Framework-free pieces of the TRL adapter: prompt ids, the per-batch plan and NaN-aware grouped advantages.

A *generation batch* as TRL's ``RepeatSampler`` yields it is ``B = N * M`` rows: each of M prompts repeated
N (``num_generations``) times, consecutively, split over the processes in order. The adapter turns it into a
:class:`GenerationPlan`: the M unique prompts in order of first appearance, their counts ``budgets`` (the
rule's one round, :meth:`knapsack_rl.rules.OneRound.plan`, summing to B) and, per rollout of the rebuilt
batch, the index of its prompt (``rollout_group``). :func:`group_mean_scale` gives the per-rollout factors
that turn a token-sum loss into one where every prompt weighs the same.

Ids are checked *collectively*: each process validates its own rows without raising
(:func:`local_prompt_ids`), the results travel in the one gather that exchanges the ids anyway, and every
process raises the same error (:func:`merge_gathered_ids`). A process that raised before the gather would
leave the others waiting in it forever.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from knapsack_rl.core.validate import check_unique_ids
from knapsack_rl.grpo.advantages import grouped_advantages
from knapsack_rl.rules import StepSpec


@dataclass(frozen=True)
class GenerationPlan:
    """Counts for one generation batch, identical on every process.

    Attributes:
        prompt_ids: the M unique prompt ids, in order of first appearance in the batch.
        budgets: int64 (M,), rollouts per prompt; ``budgets.sum() == B``.
        rollout_group: int64 (B,), index into ``prompt_ids`` of every rollout of the rebuilt batch
            (prompt i's ``budgets[i]`` rollouts are consecutive).
        spec: the :class:`~knapsack_rl.rules.StepSpec` the rule planned the batch with (and observes it with).
    """

    prompt_ids: list[int | str]
    budgets: NDArray[np.int64]
    rollout_group: NDArray[np.int64]
    spec: StepSpec

    @property
    def epoch(self) -> int:
        """The 0-based pass over the training prompts the batch was planned (and observed) in."""
        return self.spec.epoch

    def rollout_prompt_ids(self) -> list[int | str]:
        """(B,) prompt id of every rollout."""
        return [self.prompt_ids[g] for g in self.rollout_group]


def prompt_id_of(row: Mapping[str, Any], column: str) -> int | str:
    """The prompt id of a data-set row; ``column`` may be dotted (``extra_info.index``) for nested dicts.

    Ids must be ints or strings (NumPy integers are converted); a missing key raises a ValueError that
    names the column and the keys that exist.
    """
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            keys = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise ValueError(
                f"prompt_id_column={column!r}: key {part!r} not found in a training row (available: {keys}); "
                "every row needs a unique, stable prompt id: add one with "
                "knapsack_rl.integrations.prompt_ids.add_prompt_ids(dataset)"
            )
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | str):
        raise ValueError(f"prompt_id_column={column!r}: ids must be int or str; got {value!r} ({type(value).__name__})")
    return int(value) if isinstance(value, numbers.Integral) else value


def dataset_prompt_ids(rows: Sequence[Mapping[str, Any]], column: str) -> list[int | str]:
    """Ids of every row, checked unique (the error names the first duplicate)."""
    ids = [prompt_id_of(row, column) for row in rows]
    check_unique_ids(f"dataset column {column!r}", ids)
    return ids


def local_prompt_ids(rows: Sequence[Mapping[str, Any]], column: str) -> tuple[list[int | str], str | None]:
    """This process's ids and ``None``, or ``[]`` and the error message: never raises (module docstring)."""
    try:
        return [prompt_id_of(row, column) for row in rows], None
    except ValueError as exc:
        return [], str(exc)


def merge_gathered_ids(gathered: Sequence[tuple[int, str | None, list[int | str]]]) -> list[int | str]:
    """The batch's ids from every process's ``(rank, error, ids)``, in rank order; raises the first error.

    Every process gets the same ``gathered`` list, so every process raises the same ``ValueError``.
    """
    failed = [(rank, error) for rank, error, _ in gathered if error is not None]
    if failed:
        ranks = [rank for rank, _ in failed]
        raise ValueError(f"prompt ids of this generation batch were refused on process(es) {ranks}: {failed[0][1]}")
    return [pid for _, _, ids in sorted(gathered, key=lambda item: item[0]) for pid in ids]


def unique_in_order(ids: Sequence[int | str], num_generations: int) -> tuple[list[int | str], NDArray[np.int64]]:
    """Unique ids of a generation batch in order of first appearance, and the position of each first row.

    Every id must occur exactly ``num_generations`` times (TRL's sampler repeats each row that often);
    more means two rows share an id, which raises.
    """
    first: dict[int | str, int] = {}
    seen: dict[int | str, int] = {}
    for pos, pid in enumerate(ids):
        first.setdefault(pid, pos)
        seen[pid] = seen.get(pid, 0) + 1
    bad = [pid for pid, c in seen.items() if c != num_generations]
    if bad:
        raise ValueError(
            f"prompt id {bad[0]!r} occurs {seen[bad[0]]} times in a generation batch built with "
            f"num_generations={num_generations}; prompt ids must be unique per data-set row"
        )
    return list(first), np.fromiter(first.values(), dtype=np.int64, count=len(first))


def rollout_groups(budgets: NDArray[np.int64]) -> NDArray[np.int64]:
    """(B,) prompt index per rollout when prompt i's ``budgets[i]`` rollouts are consecutive."""
    return np.repeat(np.arange(budgets.size, dtype=np.int64), budgets)


def expand_rows(rows: Sequence[Mapping[str, Any]], budgets: NDArray[np.int64]) -> list[dict[str, Any]]:
    """Row i repeated ``budgets[i]`` times (shallow copies, so per-rollout edits never alias)."""
    if len(rows) != budgets.size:
        raise ValueError(f"rows and budgets must have the same length; got {len(rows)} and {budgets.size}")
    return [dict(row) for row, k in zip(rows, budgets.tolist(), strict=True) for _ in range(k)]


def batch_advantages(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    *,
    scale_rewards: str = "group",
    eps: float = 1e-4,
    clip: float | None = None,
) -> torch.Tensor:
    """GRPO advantages grouped by prompt index, NaN-aware (TRL's semantics, any group sizes).

    Rows with a NaN reward (unscorable) are left out of their group's statistics and get advantage 0.
    With ``scale_rewards``:

    - ``"group"``: ``A = (r - mean_g) / (std_g + eps)`` (unbiased std; a group of one scorable row gets 0);
    - ``"none"``: ``A = r - mean_g``;
    - ``"batch"``: ``A = (r - mean_g) / (std_batch + eps)`` (std over all scorable rows).

    Args:
        rewards: (B,) float rewards, NaN for unscorable rows.
        groups: (B,) int64 prompt index per row.

    Returns:
        (B,) float32 advantages, clipped to [-clip, clip] when ``clip`` is set.
    """
    ok = ~torch.isnan(rewards)  # (B,) scorable rows
    out = torch.zeros(rewards.shape, dtype=torch.float32, device=rewards.device)
    if not bool(ok.any()):
        return out
    r, g = rewards[ok], groups[ok]
    if scale_rewards == "group":
        adv = grouped_advantages(r, g, eps=eps, clip=clip, scale=True)
    else:
        adv = grouped_advantages(r, g, eps=eps, clip=None, scale=False)
        if scale_rewards == "batch":
            std = r.double().std() if r.numel() > 1 else torch.zeros((), dtype=torch.float64, device=r.device)
            adv = (adv.double() / (std + eps)).to(adv.dtype)
        elif scale_rewards != "none":
            raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none'; got {scale_rewards!r}")
        if clip is not None:
            adv = adv.clamp(-clip, clip)
    out[ok] = adv.to(torch.float32)
    return out


def group_mean_scale(tokens: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(B,) factors ``T / (G * T_g)`` that turn a token-sum loss over the batch into a group mean.

    A loss ``sum_{r,t} l_{r,t} / T`` (T: the batch's loss tokens; TRL's ``dapo``) whose rollout r is scaled
    by ``T / (G * T_{g(r)})`` (``T_g``: the tokens of the rollouts of r's prompt, G: the prompts with
    rollouts) is ``sum_g (1/G) sum_{r in g, t} l_{r,t} / T_g``: every prompt weighs 1/G whatever its
    count, its rollouts' tokens equally within it (:func:`knapsack_rl.grpo.loss.aggregation_weights`,
    ``group-mean``). A prompt whose rollouts have no loss token gets factor 1 (it adds nothing).

    Args:
        tokens: (B,) loss tokens of each rollout.
        groups: (B,) int64 prompt index of each rollout.
    """
    _, g = torch.unique(groups, return_inverse=True)  # (B,) dense prompt index
    t = tokens.to(torch.float64)
    num = int(g.max()) + 1 if g.numel() else 0
    per_group = torch.zeros(num, dtype=torch.float64, device=t.device).index_add_(0, g, t)  # (G,)
    scale = torch.where(per_group[g] > 0, t.sum() / (num * per_group[g].clamp(min=1.0)), torch.ones_like(t))
    return scale.to(torch.float32)
