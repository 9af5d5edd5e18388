"""A tiny character-level causal LM built locally (no hub): tokenizer and LlamaForCausalLM.

The tokenizer is a ``tokenizers`` WordLevel model over single characters, wrapped in
``PreTrainedTokenizerFast`` (so ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` work), with
``<pad>``, ``<bos>`` and ``<eos>``; left padding (for batched generation). A prompt is encoded as
``<bos> chars``; a training target is ``chars <eos>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knapsack_rl.core.validate import check_int

logger = logging.getLogger(__name__)

CHARS = "0123456789+-*=() "
"""Characters of the embedded task suite."""
SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")
UNSIZED_POSITIONS = 64
"""``max_position_embeddings`` of a tiny model built with ``max_positions=None`` outside a task (tests, examples):
the model's rotary positions are not bounded by it; :func:`~knapsack_rl.models.warmstart.warm_start` sizes
the model from its task instead."""


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Llama policy (about 0.66M parameters by default)."""

    hidden_size: int = 128
    """Width of the residual stream."""
    intermediate_size: int = 256
    """Width of the MLP."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (also key/value heads)."""
    max_positions: int | None = None
    """Longest sequence (prompt + response) the model sees. None (the default): sized from the task by
    :func:`knapsack_rl.models.warmstart.warm_start` (the longest prompt plus its response, rounded up to a
    multiple of 64); a number is checked against the task there (too small: a one-line error)."""

    def __post_init__(self) -> None:
        check_int("hidden_size", self.hidden_size, low=8)
        check_int("intermediate_size", self.intermediate_size, low=8)
        check_int("num_layers", self.num_layers, low=1)
        check_int("num_heads", self.num_heads, low=1)
        if self.max_positions is not None:
            check_int("max_positions", self.max_positions, low=8)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size must divide by num_heads; got {self.hidden_size} and {self.num_heads}")


def build_char_tokenizer(chars: str = CHARS) -> Any:
    """A character-level ``PreTrainedTokenizerFast`` over ``chars`` plus ``<pad> <bos> <eos> <unk>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if len(set(chars)) != len(chars):
        raise ValueError(f"chars must be distinct characters; got {chars!r}")
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    vocab.update({c: len(SPECIAL) + i for i, c in enumerate(chars)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.padding_side = "left"
    return tok


def build_tiny_model(tokenizer: Any, config: TinyModelConfig, *, seed: int = 0) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` for ``tokenizer`` (weights drawn under ``seed``).

    ``config.max_positions`` None gives :data:`UNSIZED_POSITIONS` (the weights do not depend on it).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=UNSIZED_POSITIONS if config.max_positions is None else config.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    logger.debug("tiny model: %d parameters", sum(p.numel() for p in model.parameters()))
    return model


def load_causal_lm(path: str | Path, *, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from a local Hugging Face causal-LM directory; never touches the hub.

    The tokenizer is set to left padding; a missing pad token falls back to the eos token. Responses
    end at the tokenizer's eos token (:func:`knapsack_rl.rollout.generate.generate`), so it must be one
    the model ends with (its generation config's ``eos_token_id``); when that lists other tokens too,
    a warning names them (responses do not stop at them).

    Raises:
        ValueError: if ``path`` is not a directory with a ``config.json``, or its tokenizer has no eos
            token or one the model's generation config does not end with.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"model must be a local directory with config.json; got model={str(path)!r}")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype))
    _check_eos(path, tok, model.generation_config.eos_token_id)
    return model.to(device), tok


def _check_eos(path: Path, tok: Any, ends: int | list[int] | None) -> None:
    """The tokenizer's eos token must be one the model ends with (``ends``: its generation config's ids)."""
    if tok.eos_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no eos token, so a response could never end; set eos_token")
    ids = [] if ends is None else [ends] if isinstance(ends, int) else [int(i) for i in ends]
    if ids and tok.eos_token_id not in ids:
        raise ValueError(
            f"{path}: the tokenizer's eos token {tok.eos_token!r} (id {tok.eos_token_id}) is not one the model "
            f"ends with (generation config eos_token_id {ids}: {tok.convert_ids_to_tokens(ids)}); responses would "
            f"not stop where the model ends them: set eos_token in its tokenizer_config.json"
        )
    others = [i for i in ids if i != tok.eos_token_id]
    if others:
        logger.warning(
            "%s: responses stop at the tokenizer's eos token %r only, not at %s (also in the generation config)",
            path, tok.eos_token, tok.convert_ids_to_tokens(others),
        )  # fmt: skip
