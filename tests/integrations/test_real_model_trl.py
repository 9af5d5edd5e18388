"""One KnapsackGRPOTrainer step on a real pretrained LLM, SmolLM2-135M-Instruct, with chat prompts.

The real-model lane (``make test-real-model``; marked ``real_model``, deselected by the ordinary suite).
The adapter is used through its public API only (KnapsackGRPOConfig, KnapsackGRPOTrainer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset

from knapsack_rl.integrations.trl import KnapsackGRPOConfig, KnapsackGRPOTrainer
from knapsack_rl.models import load_causal_lm
from tests.models.real_model import smollm2_dir

pytestmark = pytest.mark.real_model
torch.set_num_threads(1)

IM_END = 2  # <|im_end|>: eos and pad
MAX_TOKENS = 16
QUESTIONS = [
    "What is 2+3? Reply with the number only.",
    "What is the capital of France? Reply with one word.",
    "What is 4+1? Reply with the number only.",
]


class FirstRolloutWins:
    """Reward 1 for each prompt's first rollout of a batch, 0 for the others: every group has signal.

    Records what TRL hands the reward: the completions (chat messages) and their token ids.
    """

    __name__ = "first_rollout_wins"

    def __init__(self) -> None:
        self.completions: list[Any] = []
        self.completion_ids: list[list[int]] = []

    def __call__(
        self, completions: list[Any], completion_ids: list[list[int]], prompt_id: list[int], **_: Any
    ) -> list[float]:
        self.completions += completions
        self.completion_ids += completion_ids
        return [float(pid not in prompt_id[:i]) for i, pid in enumerate(prompt_id)]


def test_one_knapsack_grpo_step_on_the_real_model(tmp_path: Path) -> None:
    model, tok = load_causal_lm(smollm2_dir())
    dataset = Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS], "prompt_id": [10, 11, 12]}
    )
    args = KnapsackGRPOConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=6, num_generations=2,
        max_completion_length=MAX_TOKENS, max_steps=1, learning_rate=1e-5, logging_steps=1, save_strategy="no",
        report_to="none", seed=0, disable_tqdm=True, temperature=0.5, min_n=2, max_n=4, min_count=2,
    )  # fmt: skip
    reward = FirstRolloutWins()
    trainer = KnapsackGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                                  processing_class=tok)  # fmt: skip
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True))
    step = next(h for h in trainer.state.log_history if "loss" in h)
    assert step["alloc/budget_total"] == 6 and step["train/effective_prompts"] == 3 and step["tracker/prompts"] == 3
    assert len(reward.completions) == 6
    for messages, ids in zip(reward.completions, reward.completion_ids, strict=True):
        assert [m["role"] for m in messages] == ["assistant"] and "<|im_" not in messages[0]["content"]
        assert IM_END not in ids[:-1] and (ids[-1] == IM_END or len(ids) == MAX_TOKENS)  # ends at EOS, no pads
    assert any(ids[-1] == IM_END for ids in reward.completion_ids)  # some completion ended at <|im_end|>
