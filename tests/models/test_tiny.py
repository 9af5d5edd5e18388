import logging

import pytest
import torch

from knapsack_rl.models import TinyModelConfig, build_char_tokenizer, build_tiny_model, load_causal_lm

torch.set_num_threads(1)


def test_char_tokenizer_roundtrip_and_bos():
    tok = build_char_tokenizer()
    ids = tok("47+85=")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 7
    assert tok.decode(ids[1:]) == "47+85="
    assert (
        tok.decode(tok("132", add_special_tokens=False)["input_ids"] + [tok.eos_token_id], skip_special_tokens=True)
        == "132"
    )
    assert tok.padding_side == "left"


def test_default_tiny_model_size():
    model = build_tiny_model(build_char_tokenizer(), TinyModelConfig())
    params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 <= params <= 2e6


def test_save_and_load_local_directory(tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1), seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = load_causal_lm(tmp_path)
    x = torch.tensor([tok("12+3=")["input_ids"]])
    assert tok2("12+3=")["input_ids"] == x[0].tolist()
    assert torch.allclose(model(x).logits, loaded(x).logits)
    with pytest.raises(ValueError, match=r"local directory with config\.json"):
        load_causal_lm(tmp_path / "missing")


def _saved_tiny(path):
    tok = build_char_tokenizer()
    build_tiny_model(tok, TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1)).save_pretrained(path)
    tok.save_pretrained(path)
    return tok


def test_a_tokenizer_whose_eos_the_model_does_not_end_with_is_refused(tmp_path):
    tok = _saved_tiny(tmp_path)
    tok.eos_token = "<bos>"  # what transformers' GGUF reader gives SmolLM2: its eos set to the bos token
    tok.save_pretrained(tmp_path)
    refused = r"the tokenizer's eos token '<bos>' \(id 1\) is not one the model ends with \(generation config "
    with pytest.raises(ValueError, match=rf"^{tmp_path}: {refused}eos_token_id \[2\]: \['<eos>'\]\); responses would"):
        load_causal_lm(tmp_path)
    tok.eos_token = None
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="the tokenizer has no eos token, so a response could never end"):
        load_causal_lm(tmp_path)


def test_other_end_tokens_of_the_generation_config_are_named_in_a_warning(tmp_path, caplog):
    from transformers import GenerationConfig

    _saved_tiny(tmp_path)
    GenerationConfig(eos_token_id=[2, 3], pad_token_id=0).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="knapsack_rl.models.tiny"):
        _, tok = load_causal_lm(tmp_path)
    assert tok.eos_token == "<eos>"
    assert "responses stop at the tokenizer's eos token '<eos>' only, not at ['<unk>']" in caplog.text
