"""A real pretrained LLM through the trainer's local-model path: SmolLM2-135M-Instruct (134.5M parameters).

Its chat template, byte-level BPE tokenizer and eos / pad tokens (pad == eos, ``<|im_end|>``) are what the
character-level tiny model never exercises. These tests are the real-model lane (``make test-real-model``):
they are marked ``real_model``, which the ordinary suite deselects (pyproject's ``addopts``), so ``make test``
needs neither the 93 MB model nor the ``gguf`` package (the module itself imports neither).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from knapsack_rl.models import load_causal_lm
from knapsack_rl.rollout.generate import Rollouts, generate
from knapsack_rl.tasks import TaskConfig
from knapsack_rl.train import TrainConfig
from knapsack_rl.train.trainer import load_task_and_policy
from knapsack_rl.train.update import UpdateSettings, update_policy
from tests.models.real_model import DONE, smollm2_dir

pytestmark = pytest.mark.real_model
torch.set_num_threads(1)

PARAMETERS = 134_515_008
IM_START, IM_END = 1, 2  # <|im_start|> (bos), <|im_end|> (eos and pad)
QUESTIONS = [
    ("What is 2+3? Reply with the number only.", "5"),
    ("What is the capital of France? Reply with one word.", "Paris"),
    ("What is 4+1? Reply with the number only.", "5"),
    ("Say hello.", "hello"),
]
ROOT = Path(__file__).resolve().parents[2]


def write_chat_task(folder: Path) -> TaskConfig:
    """A verl-layout file task whose prompts are chat lists (the model's template formats them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"prompt": [{"role": "user", "content": q}], "reward_model": {"ground_truth": a}, "extra_info": {"index": i}}
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskConfig(source="file", data=str(folder / "train.jsonl"), reward="math_verify")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return smollm2_dir()


@pytest.fixture(scope="module")
def loaded(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """(task, model, tokenizer) exactly as the trainer loads them for ``model=<dir>``."""
    task_config = write_chat_task(tmp_path_factory.mktemp("data"))
    config = TrainConfig(model=str(model_dir), task=task_config, device="cpu")
    task, model, tok = load_task_and_policy(config, torch.device("cpu"))
    yield task, model, tok
    task.close()


def test_the_conversion_is_cached_and_keeps_the_files_eos_and_pad(model_dir: Path) -> None:
    report = json.loads((model_dir / DONE).read_text())
    assert report["special_tokens"] == {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|im_end|>"}
    stamp = (model_dir / DONE).stat().st_mtime_ns
    assert smollm2_dir() == model_dir and (model_dir / DONE).stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in model_dir.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder
    assert not (model_dir / "model.gguf").exists()


def test_the_local_model_loads_with_its_own_eos_and_left_padding(loaded: tuple[Any, Any, Any]) -> None:
    _, model, tok = loaded
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS and len(tok) == 49152
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (IM_START, IM_END, IM_END)
    assert model.generation_config.eos_token_id == tok.eos_token_id and tok.padding_side == "left"


def test_a_tokenizer_ending_at_another_token_than_the_model_is_refused(model_dir: Path, tmp_path: Path) -> None:
    # transformers' GGUF reader gives this model eos_token <|im_start|> (its bos): responses would run past
    # the <|im_end|> that ends the model's turn, and the loss would train on what follows it.
    for item in model_dir.iterdir():
        (tmp_path / item.name).symlink_to(item)
    (tmp_path / "tokenizer_config.json").unlink()
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<|im_start|>"}))
    refused = r"the tokenizer's eos token '<\|im_start\|>' \(id 1\) is not one the model ends with"
    with pytest.raises(ValueError, match=rf"^{tmp_path}: {refused} \(generation config eos_token_id \[2\]"):
        load_causal_lm(tmp_path)


def test_chat_prompts_use_the_template_and_tokenize_as_it_does(loaded: tuple[Any, Any, Any]) -> None:
    task, _, tok = loaded
    for (question, _), prompt in zip(QUESTIONS, task.train.prompts, strict=True):
        messages = [{"role": "user", "content": question}]
        assert prompt == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
        templated = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        assert tok(prompt)["input_ids"] == templated["input_ids"]  # no second BOS, special tokens whole
    enc = tok(list(task.train.prompts), padding=True)  # what generate() feeds the model
    ids, mask = torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])
    for row, m in zip(ids, mask, strict=True):
        real = row[m.bool()].tolist()
        assert real.count(IM_START) == 3 and real.count(IM_END) == 2  # system, user, assistant turns
        assert m.tolist() == sorted(m.tolist()) and set(row[~m.bool()].tolist()) <= {IM_END}  # left pads
    assert not mask.all()  # the prompts differ in length: some rows are padded
    words = tok.convert_ids_to_tokens(tok("a helpful assistant 12", add_special_tokens=False)["input_ids"])
    assert words == ["a", "Ġhelpful", "Ġassistant", "Ġ", "1", "2"]  # byte-level BPE, digits one by one


def _check_stops_at_eos(out: Rollouts, tok: Any, max_new_tokens: int) -> list[int]:
    """Every response is a prefix ending at its first EOS (or cut at max_new_tokens), pads after; lengths."""
    lengths = []
    for ids, mask, text in zip(out.response_ids.tolist(), out.response_mask.tolist(), out.texts, strict=True):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)
        ended = IM_END in ids[:n]
        assert ended == (ids[n - 1] == IM_END) and IM_END not in ids[: n - 1]  # the first EOS ends it
        assert ended or n == max_new_tokens
        assert all(t == tok.pad_token_id for t in ids[n:]) and "<|im_" not in text
        lengths.append(n)
    return lengths


def test_responses_stop_at_eos_and_are_padded_after_it(loaded: tuple[Any, Any, Any]) -> None:
    task, model, tok = loaded
    greedy = generate(model, tok, task.train.prompts, [1, 1, 1, 1], max_new_tokens=24, temperature=0.0)
    lengths = _check_stops_at_eos(greedy, tok, 24)
    assert greedy.texts[1] == "The capital of France is Paris." and lengths[1] == 8  # 7 tokens and its EOS
    assert lengths[3] == 24  # "Say hello." runs on: cut, not ended
    gen = torch.Generator().manual_seed(0)
    sampled = generate(model, tok, task.train.prompts, [2, 2, 2, 2], max_new_tokens=16, generator=gen)
    _check_stops_at_eos(sampled, tok, 16)


def test_padding_is_excluded_from_the_loss(loaded: tuple[Any, Any, Any]) -> None:
    task, model, tok = loaded
    prompts = [task.train.prompts[0], task.train.prompts[3]]  # an answer that ends at EOS, one cut at 12 tokens
    out = generate(model, tok, prompts, [1, 1], max_new_tokens=12, temperature=0.0)
    pads = out.attention_mask == 0
    assert pads[:, : out.prompt_len].any() and pads[:, out.prompt_len :].any()  # left pads and pads after EOS
    assert out.response_ids[0, out.response_mask[0].sum() - 1] == IM_END  # pad id == eos id, the EOS is in the loss
    settings = UpdateSettings(grad_clip=1e9, loss_agg="token-mean")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # gradients only: the weights stay

    def grads(rollouts: Rollouts) -> list[torch.Tensor]:
        stats = update_policy(model, optimizer, rollouts, torch.tensor([1.0, -1.0]), settings)
        assert math.isfinite(stats["actor/loss"]) and stats["actor/grad_norm"] > 0
        return [p.grad.clone() for p in model.parameters()]

    before = grads(out)
    other = Rollouts(out.prompt_index, out.input_ids.masked_fill(pads, 1000), out.attention_mask,
                     out.response_mask, out.prompt_len, out.texts)  # fmt: skip
    after = grads(other)  # every padded position holds another token: same loss, same gradient
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5) for a, b in zip(before, after, strict=True))
    for p in model.parameters():
        p.grad = None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "knapsack_rl.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)  # fmt: skip


def _task_flags(folder: Path) -> list[str]:
    config = write_chat_task(folder)
    return ["--set", "task.source=file", "--set", f"task.data={config.data}", "--set", "task.reward=math_verify"]


def test_two_training_steps_with_knapsack_rl_train(model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    steps = ["--prompts-per-step", "2", "--n", "4", "--max-steps", "2", "--max-new-tokens", "16", "--lr", "1e-5"]
    quiet = ["--eval-every", "0", "--checkpoint-every", "0", "--no-tensorboard", "--no-progress", "--device", "cpu"]
    done = _cli(
        "train", "--model", str(model_dir), *_task_flags(tmp_path / "data"), "--out-dir", str(run), *steps, *quiet
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained steps 1..2 of 2 (16 rollouts in all)" in done.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["train/rollouts"] == 8 for r in rows)
    assert all(math.isfinite(r["actor/loss"]) and r["rollout/response_len_max"] <= 16 for r in rows)
    assert any(r["rollout/truncated_ratio"] < 1 for r in rows)  # some responses ended at EOS
    assert any(r["train/effective_prompts"] > 0 for r in rows)  # a step with signal: a real update
    assert all((r["actor/grad_norm"] > 0) == (r["train/effective_prompts"] > 0) for r in rows)
    assert json.loads((run / "config.json").read_text())["model"] == str(model_dir)
    assert (run / "checkpoint.pt").is_file()


def test_preflight_samples_the_real_model(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "preflight.json"
    done = _cli("preflight", "--model", str(model_dir), *_task_flags(tmp_path / "data"), "--samples", "4",
                "--prompts-per-step", "2", "--n", "2", "--max-new-tokens", "16", "--device", "cpu", "--json", str(out),
                "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 training prompts x 4 samples of the starting model" in done.stdout
    data = json.loads(out.read_text())
    assert len(data["success_rates"]) == 4 and all(0 <= p <= 1 for p in data["success_rates"])
    assert 0 < sum(data["success_rates"]) < 4  # the model answers some questions, not all
    assert {p["arm"] for p in data["predictions"]} >= {"uniform", "knapsack"}
