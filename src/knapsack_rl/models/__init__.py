"""Building the tiny local policy, loading local HF checkpoints, and the supervised warm start."""

from knapsack_rl.models.tiny import CHARS, TinyModelConfig, build_char_tokenizer, build_tiny_model, load_causal_lm

__all__ = ["CHARS", "TinyModelConfig", "build_char_tokenizer", "build_tiny_model", "load_causal_lm"]
