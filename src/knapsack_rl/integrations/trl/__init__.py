"""Rollout allocation for Hugging Face TRL: ``KnapsackGRPOTrainer`` and ``KnapsackGRPOConfig``.

TRL's ``GRPOTrainer`` gives every prompt the same ``num_generations`` rollouts and computes advantages by
reshaping the rewards to ``(-1, num_generations)``. ``KnapsackGRPOTrainer`` keeps TRL's loop, sampler, loss
and logging; per training generation batch it asks the run's allocation rule (``rule``: ``knapsack`` by
default, or any rule TRL can run, through :class:`knapsack_rl.rules.OneRound`) for each prompt's count (the
batch's total unchanged), rebuilds the rows handed to generation, groups the advantages by prompt id when
counts differ, and hands the successes back to the rule (:mod:`.trainer` gives the details, the epoch rule
and the map from our metric names to TRL's). The rule's state is saved in every checkpoint.

Usage::

    from knapsack_rl.integrations.trl import KnapsackGRPOConfig, KnapsackGRPOTrainer, add_prompt_ids

    args = KnapsackGRPOConfig(output_dir="runs/trl", num_generations=8, per_device_train_batch_size=64,
                              rule="knapsack", knapsack_preset="project", max_n=64, loss_agg="group-mean")
    trainer = KnapsackGRPOTrainer(model=model, reward_funcs=reward_fn, args=args,
                                  train_dataset=add_prompt_ids(dataset), processing_class=tokenizer)
    trainer.train()

or from a YAML file through TRL's own parser (local model and data only)::

    python -m knapsack_rl.integrations.trl --config examples/trl/config.yaml [--rule coba --max_n 32 ...]

The rules TRL runs (:func:`~knapsack_rl.integrations.trl.config.trl_rule_names`; ``knapsack-rl rules``
prints every rule with its engines): ``uniform``, ``knapsack``, ``knapsack:<preset>`` without a probe,
``uncertainty``, ``coba``. A rule that needs rounds within a step, prompts beyond the batch or dropped
rollouts is refused when the config is read. The knapsack settings are :class:`knapsack_rl.KnapsackConfig`'s
flat fields, generated into ``KnapsackGRPOConfig`` (:mod:`.config`); ``args.knapsack`` is the resolved
config, with ``n`` taken from ``num_generations``.

Supported TRL: ``>=1.16,<1.17`` (checked at import; set ``KNAPSACK_RL_TRL_ANY_VERSION=1`` to try another
version at your own risk). TRL internals relied on (all in ``trl/trainer/grpo_trainer.py`` of 1.16):

- ``GRPOTrainer._generate_and_score_completions(inputs)``: called once per training generation batch with
  this process's rows (RepeatSampler order: each prompt's ``num_generations`` copies consecutive, processes
  holding consecutive slices of the global batch); it returns a dict whose ``"advantages"`` entry is this
  process's slice (``process_index * len(inputs)`` onwards) of the advantages over the gathered batch;
- ``self._logs["rewards"][name]``: per reward function, a deque of the latest ``generation_batch_size``
  gathered rewards (process order, NaN where the function returned None), filled on every batch;
  ``self.reward_weights``, ``self.reward_func_names``;
- ``GRPOTrainer._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, ...)``: the
  transformers and vLLM-colocate paths generate one completion per row; the vLLM-server path dedupes rows
  with a stride of ``num_generations``, so the trainer passes 1 (one n=1 request per row) in training;
- ``self._metrics["train"]`` (dict of lists averaged at each log), ``self._logs["advantages"]`` (the
  completions table, written only with ``log_completions``), ``self.scale_rewards``, ``self.num_generations``,
  ``self.rollout_func``, ``self.multi_objective_aggregation``, ``self.use_vllm`` / ``self.vllm_mode``;
- ``output["completion_mask"]`` / ``output["tool_mask"]`` and the ``dapo`` loss's normaliser
  (``num_items_in_batch``: the generation batch's loss tokens) for ``loss_agg="group-mean"``;
- ``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` (transformers ``Trainer``) to save and restore the
  rule, and ``_set_signature_columns_if_needed`` to keep the prompt id column.

Generation backends: plain transformers generation is tested on CPU. vLLM colocate mode generates one
completion per row already, and server mode is driven with n = 1 per row; both follow TRL's code but are
untested here (vLLM is not installed in CI). Not supported (clear error at construction): ``rollout_func``,
``multi_objective_aggregation="normalize_then_sum"``, reward functions sharing a name, and rules TRL
cannot run (refused by the config, e.g. two-phase planning, ``probe_n > 0``: it needs two generation rounds
per batch).
"""

from __future__ import annotations

import os

import trl
from packaging.specifiers import SpecifierSet
from packaging.version import Version

SUPPORTED_TRL = SpecifierSet(">=1.16,<1.17")

if Version(trl.__version__) not in SUPPORTED_TRL and os.environ.get("KNAPSACK_RL_TRL_ANY_VERSION") != "1":
    raise ImportError(
        f"knapsack_rl.integrations.trl supports trl{SUPPORTED_TRL} but trl=={trl.__version__} is installed; "
        f"install a supported version (pip install 'trl{SUPPORTED_TRL}') or set KNAPSACK_RL_TRL_ANY_VERSION=1 "
        "to try anyway (it overrides TRL internals listed in this module's docstring)"
    )

from knapsack_rl.integrations.prompt_ids import add_prompt_ids  # noqa: E402
from knapsack_rl.integrations.trl.checkpoint import RULE_FILE  # noqa: E402
from knapsack_rl.integrations.trl.config import (  # noqa: E402
    KNAPSACK_FIELDS,
    KnapsackGRPOConfig,
    trl_rule_names,
)
from knapsack_rl.integrations.trl.plan import GenerationPlan, batch_advantages  # noqa: E402
from knapsack_rl.integrations.trl.trainer import KnapsackGRPOTrainer  # noqa: E402

__all__ = [
    "KNAPSACK_FIELDS",
    "RULE_FILE",
    "SUPPORTED_TRL",
    "GenerationPlan",
    "KnapsackGRPOConfig",
    "KnapsackGRPOTrainer",
    "add_prompt_ids",
    "batch_advantages",
    "trl_rule_names",
]
