"""A tiny model directory a serving engine can load, built here without the hub.

A serving engine loads a model from a directory (config, tokenizer and, unless it has a dummy load
format, weights). For random-weight cells and tests this writes one locally:

- a Qwen3 config (2 layers by default) whose head_dim is at least 32: vLLM's CPU attention backend
  supports head_dim in {32, 64, 80, 96, 112, 128, ...}; at 16 its server reported healthy, answered
  HTTP 200 with no tokens and died;
- a byte-level BPE tokenizer trained with `tokenizers` on a seeded in-code corpus to exactly the
  config's vocabulary (so every id the random model emits decodes), wrapped in
  `PreTrainedTokenizerFast` with a ChatML template and saved with `save_pretrained`;
- no weights (vLLM: `--load-format dummy`), or random weights saved with `save_pretrained`
  (`transformers serve`, which has no dummy format; a few MB).

Random weights never stop on purpose, but they do emit EOS now and then. vLLM is told `ignore_eos`;
`transformers serve` rejects `ignore_eos` and `min_tokens`, and with `--continuous-batching` it also
ignores `min_new_tokens` (from the model's generation_config.json or the request's `generation_config`:
tried with a model whose every greedy token is EOS, 1 token came back either way; without continuous
batching both gave all 12). So by default the config and generation config written here name no
`eos_token_id` (`stop_at_eos=False`): the engine then stops at `max_tokens` only, and a reply is exactly
`max_tokens` long (the tokenizer keeps its EOS token for the chat template).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2: pad, chat, eos
PAD_ID, EOS_ID = 0, 2
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# vLLM 0.32 CPU attention: CPUAttentionBackend.get_supported_head_sizes() (vllm/v1/attention/backends/cpu_attn.py).
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


@dataclass(frozen=True)
class TinyArchitecture:
    """The Qwen3 shape written to config.json. The defaults make about 0.6 M parameters."""

    num_hidden_layers: int = 2
    hidden_size: int = 128
    intermediate_size: int = 256
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    vocab_size: int = 1024
    max_position_embeddings: int = 2048

    def config(self) -> dict:
        return {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            **asdict(self),
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": None,
            "pad_token_id": PAD_ID,
            "torch_dtype": "bfloat16",
        }


def _corpus(seed: int, words: int = 6000) -> list[str]:
    """Seeded pseudo-words from a small syllable set: plenty of distinct byte pairs, so BPE
    training reaches vocabularies of a few thousand."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + list("aeiou")
    lengths = rng.integers(1, 5, size=words)
    picks = rng.integers(0, len(syllables), size=int(lengths.sum()))
    out, i = [], 0
    for n in lengths:
        out.append("".join(syllables[j] for j in picks[i : i + n]))
        i += n
    lines = [" ".join(out[k : k + 12]) for k in range(0, len(out), 12)]
    return lines + ["The quick brown fox jumps over the lazy dog, 0 1 2 3 4 5 6 7 8 9."] * 10


def build_tokenizer(vocab_size: int = 1024, seed: int = 0):
    """A byte-level BPE `PreTrainedTokenizerFast` of exactly `vocab_size` tokens (ChatML specials
    at ids 0-2, every byte encodable), trained in-process; deterministic for a seed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = 256 + len(SPECIAL_TOKENS)
    if vocab_size < base:
        raise ValueError(f"vocab_size {vocab_size} is below the {base} byte and special tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"BPE training reached {tok.get_vocab_size()} tokens, not {vocab_size}: corpus too small")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=SPECIAL_TOKENS[EOS_ID], pad_token=SPECIAL_TOKENS[PAD_ID]
    )
    tokenizer.chat_template = CHAT_TEMPLATE  # set after construction so save_pretrained writes it
    tokenizer.model_max_length = 1 << 20
    return tokenizer


def write_tiny_model(
    path: str | Path,
    architecture: TinyArchitecture = TinyArchitecture(),
    *,
    weights: bool = False,
    seed: int = 0,
    stop_at_eos: bool = False,
) -> Path:
    """Write a servable model directory at `path` and return it: config.json, the tokenizer files,
    generation_config.json and, with `weights`, random bf16 weights (model.safetensors) seeded by
    `seed`. Without weights the directory is for a dummy load format (vLLM `--load-format dummy`).
    `stop_at_eos`: name EOS (id 2) in the configs, so an engine stops when the model samples it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = architecture.config()
    generation = {"pad_token_id": PAD_ID}
    if stop_at_eos:
        config["eos_token_id"] = generation["eos_token_id"] = EOS_ID
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    build_tokenizer(architecture.vocab_size, seed).save_pretrained(str(path))
    if weights:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)), dtype=torch.bfloat16)
        model.save_pretrained(str(path))
        # save_pretrained rewrites both configs from the model's (adding defaults): put ours back.
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return path
