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
