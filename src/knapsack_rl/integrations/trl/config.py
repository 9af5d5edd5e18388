"""``KnapsackGRPOConfig``: TRL's ``GRPOConfig`` plus the allocation, tracker and advantage settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl.trainer.grpo_config import GRPOConfig

from knapsack_rl.core.allocate import allocate_options
from knapsack_rl.core.tracker import TrackerConfig, estimator_names
from knapsack_rl.core.validate import check_choice, check_int, check_real
from knapsack_rl.core.value import value_names


@dataclass
class KnapsackGRPOConfig(GRPOConfig):
    """GRPOConfig with knapsack allocation settings (SPEC sections 4 to 6).

    ``num_generations`` keeps its TRL meaning as the *mean* rollouts per prompt N: a generation batch of
    ``generation_batch_size`` rollouts holds ``M = generation_batch_size / num_generations`` prompts and the
    allocator spreads exactly ``B = N * M`` rollouts over them, between ``min_n`` and ``max_n`` each.
    """

    allocation: str = field(
        default="knapsack", metadata={"help": "'knapsack' (allocate() per batch) or 'uniform' (N per prompt)."}
    )
    """``knapsack`` redistributes the batch by estimated success rate; ``uniform`` keeps N per prompt."""
    prompt_id_column: str = field(
        default="prompt_id", metadata={"help": "Dataset column with a unique id per prompt (dots for nested keys)."}
    )
    """Column holding a stable unique id per prompt, e.g. ``prompt_id`` or ``extra_info.index``."""
    min_n: int = field(default=2, metadata={"help": "Fewest rollouts of an effective prompt (>= 2)."})
    """Lower bound of an effective prompt's count (a group of 1 has no baseline, so >= 2)."""
    max_n: int = field(default=128, metadata={"help": "Most rollouts of an effective prompt."})
    """Upper bound of an effective prompt's count."""
    negative_n: int = field(default=2, metadata={"help": "Rollouts of a prompt estimated at p = 0."})
    """Starting count of a prompt whose estimate is exactly 0."""
    positive_n: int = field(default=2, metadata={"help": "Rollouts of a prompt estimated at p = 1."})
    """Starting count of a prompt whose estimate is exactly 1."""
    fallback: bool = field(default=True, metadata={"help": "Enable the recipe's alpha-confidence fallback."})
    """Send budget the knapsack does not need (beyond the alpha-confidence cost) to the p = 0 prompts."""
    alpha: float = field(default=0.9, metadata={"help": "Target P(non-zero gradient) of the fallback."})
    """Probability of a non-zero gradient the fallback's cost estimate aims for."""
    objective: str = field(default="paper", metadata={"help": "'paper' (V(N, p)) or 'recipe' (authors' scoring)."})
    """Knapsack objective: ``paper`` scores V(N, p); ``recipe`` reproduces the authors' programme."""
    value_function: str = field(default="paper", metadata={"help": "Registered value function name."})
    """Name of the value function in :mod:`knapsack_rl.core.value`."""
    overflow: str = field(default="pool", metadata={"help": "Where unplaceable budget goes: 'pool' or 'recipe'."})
    """Budget the knapsack cannot place goes to the p = 0 pool (``pool``) or over max_n (``recipe``)."""
    estimator: str = field(default="recipe", metadata={"help": "Tracker estimator: recipe, ema or beta."})
    """Success-rate estimator of the tracker."""
    tracker_window: int = field(default=16, metadata={"help": "Recent rewards kept per prompt."})
    """Window of recent rewards per prompt (recipe estimator)."""
    tracker_min_count: int = field(default=8, metadata={"help": "Rewards needed before an estimate is valid."})
    """Rewards a prompt needs before it gets an estimate (unestimated prompts get N rollouts)."""
    ema_weight: float = field(default=0.5, metadata={"help": "Weight of the newest step in the EMA estimator."})
    """Weight of the newest step's mean reward in the EMA estimator."""
    beta_prior: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata={"help": "Beta prior (a0, b0)."})
    """Prior pseudo-counts (a0, b0) of the Beta estimator."""
    forgetting: float = field(default=0.8, metadata={"help": "Per-update discount of the Beta estimator."})
    """Discount of old evidence per update in the Beta estimator."""
    reward_format: str = field(default="auto", metadata={"help": "auto, binary, signed or continuous."})
    """How the tracker maps rewards to successes (see :func:`knapsack_rl.core.tracker.to_success`)."""
    success_threshold: float | None = field(
        default=None, metadata={"help": "A reward >= this counts as a success (for non-binary rewards)."}
    )
    """If set, the tracker and coverage metrics count ``reward >= success_threshold`` as a success."""
    advantage_eps: float = field(default=1e-4, metadata={"help": "Added to the group std (TRL: 1e-4, recipe: 1e-6)."})
    """``A = (r - mean_g) / (std_g + advantage_eps)``; 1e-4 matches TRL, the recipe uses 1e-6."""
    advantage_clip: float | None = field(default=None, metadata={"help": "Clip advantages to [-c, c] (recipe: 5)."})
    """Clip advantages to ``[-advantage_clip, advantage_clip]``; None keeps TRL's behaviour (no clip)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        check_choice("allocation", self.allocation, ("knapsack", "uniform"))
        if not self.prompt_id_column or not isinstance(self.prompt_id_column, str):
            raise ValueError(f"prompt_id_column must be a non-empty string; got {self.prompt_id_column!r}")
        check_int("min_n", self.min_n, low=2)
        check_int("max_n", self.max_n, low=self.min_n)
        check_int("negative_n", self.negative_n, low=0)
        check_int("positive_n", self.positive_n, low=0)
        if self.num_generations is None or not self.min_n <= self.num_generations <= self.max_n:
            raise ValueError(
                f"num_generations (the mean count N) must lie in [min_n, max_n]; got num_generations="
                f"{self.num_generations}, min_n={self.min_n}, max_n={self.max_n}"
            )
        check_real("alpha", self.alpha, low=0.0, high=1.0, open_low=True, open_high=True)
        check_choice("objective", self.objective, ("paper", "recipe"))
        check_choice("value_function", self.value_function, value_names())
        check_choice("overflow", self.overflow, ("pool", "recipe"))
        check_choice("estimator", self.estimator, estimator_names())
        check_real("advantage_eps", self.advantage_eps, low=0.0)
        if self.advantage_clip is not None:
            check_real("advantage_clip", self.advantage_clip, low=0.0, open_low=True)
        self.tracker_config()  # validates the tracker fields

    def tracker_config(self) -> TrackerConfig:
        """The :class:`TrackerConfig` these settings describe."""
        return TrackerConfig(
            estimator=self.estimator,
            window=self.tracker_window,
            min_count=self.tracker_min_count,
            ema_weight=self.ema_weight,
            beta_prior=tuple(float(v) for v in self.beta_prior),  # type: ignore[arg-type]
            forgetting=self.forgetting,
            reward_format=self.reward_format,  # type: ignore[arg-type]
            success_threshold=self.success_threshold,
        )

    def allocate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`knapsack_rl.allocate` (besides ``p_hat``) for one generation batch."""
        return allocate_options(self, n=self.num_generations, value=self.value_function)
