"""The tiny serving model built locally: config, tokenizer of exactly the vocabulary, weights or none."""

from __future__ import annotations

import json

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from deploybench.engines.serving.tiny_model import (
    EOS_ID,
    PAD_ID,
    VLLM_CPU_HEAD_DIMS,
    TinyArchitecture,
    build_tokenizer,
    write_tiny_model,
)


def test_dummy_directory_has_config_and_tokenizer_but_no_weights(tmp_path):
    path = write_tiny_model(tmp_path / "m")
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".safetensors", ".bin")) for n in names)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["num_hidden_layers"] == 2
    assert config["head_dim"] in VLLM_CPU_HEAD_DIMS and config["head_dim"] >= 32
    # No EOS named: engines stop at max_tokens only (transformers serve ignores min_new_tokens in CB mode).
    assert "eos_token_id" not in config
    assert "eos_token_id" not in json.loads((path / "generation_config.json").read_text())
    assert AutoConfig.from_pretrained(path).vocab_size == 1024


def test_tokenizer_has_exactly_the_vocabulary_and_a_chat_template(tmp_path):
    path = write_tiny_model(tmp_path / "m", TinyArchitecture(vocab_size=2048))
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == 2048
    assert tok.eos_token_id == EOS_ID and tok.pad_token_id == PAD_ID
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok("The quick brown fox, 42!")["input_ids"]
    assert tok.decode(ids) == "The quick brown fox, 42!"
    # Every id the model can emit decodes (a random model emits any of them).
    assert all(isinstance(tok.decode([i]), str) for i in range(2048))
    assert build_tokenizer(1024).get_vocab() == build_tokenizer(1024).get_vocab()  # deterministic


def test_weights_load_and_generate_exactly_n_tokens(tmp_path):
    path = write_tiny_model(tmp_path / "m", weights=True, seed=3)
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size < 5_000_000
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.head_dim == 32 and model.dtype == torch.bfloat16
    out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=20, do_sample=False)
    assert out.shape[1] == 3 + 20
    # Same seed, same weights.
    again = AutoModelForCausalLM.from_pretrained(write_tiny_model(tmp_path / "n", weights=True, seed=3))
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)
