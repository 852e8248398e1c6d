"""A serving cell deployed: the model directory its engine loads, the server's settings, the client's, the prompts.

random weights: written into a fresh directory per serve job (`prepare_model`): the architecture card as
config.json (with the `architectures` entry transformers maps its model_type to, where the card has none: vLLM
builds the model from it) and a word-level tokenizer of exactly the card's vocabulary (`word_tokenizer`): token i
is the word "t<i>" (the card's special ids keep special names), so every id the random model emits decodes and a
text of k such words is exactly k tokens, which is how the engines that take text (transformers serve, an openai
endpoint without token ids) get prompts of exactly `context` tokens. vLLM loads no weights (--load-format dummy);
transformers serve, which has no dummy format, loads random weights saved here (seeded by measurement.seed) from
configs that name no EOS, so its outputs run to max_tokens (deploybench.engines.serving.tiny_model says why).
pretrained: the hub id or local directory itself (with its revision); its tokenizer's special ids are never sent.

Prompts are token ids where the engine takes them (vLLM), each request's distinct (TokenPrompts), seeded per
load point and purpose (`prompt_seed`): no two load points of one server share a prompt, so no prefix cache helps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from deploybench.engines.serving.capabilities import TRANSFORMERS_SERVE_DEFAULT_ARGS
from deploybench.engines.serving.client import EngineFlags, request_body
from deploybench.engines.serving.server import CAPABILITIES, ServerConfig
from deploybench.engines.serving.token_prompts import TokenPrompts
from deploybench.enums import Backend, Device, PromptMode, WeightsSource
from deploybench.plan.spec import CellSpec

# The started backends as deploybench.engines.serving.server names their engines.
ENGINES = {Backend.VLLM: "vllm", Backend.TRANSFORMERS_SERVE: "transformers-serve"}
WORD = "t{}"
SPECIAL = "<|special_{}|>"


@dataclass(frozen=True)
class ServedModel:
    """What the engine loads and what its prompts may hold."""

    model: str  # a directory or a hub id
    revision: str | None
    dummy_weights: bool
    vocab_size: int
    special_ids: tuple[int, ...]
    words: bool  # the word-level tokenizer written here: text of k words is k tokens
    model_type: str
    max_positions: int | None


def prepare_model(spec: CellSpec, root: Path) -> ServedModel:
    """The model the cell's engine loads; for random weights, its directory written under `root`."""
    from deploybench.engines import models, prompts

    config = models.model_config(spec.model)
    special = tuple(sorted(set(prompts.special_token_ids(config))))
    positions = getattr(config, "max_position_embeddings", None)
    if spec.model.source is WeightsSource.PRETRAINED:
        vocab, special = _pretrained_vocabulary(spec, config.vocab_size, special)
        return ServedModel(
            spec.model.id, spec.model.revision, False, vocab, special, False, config.model_type, positions
        )
    directory = root / spec.model_name
    directory.mkdir(parents=True, exist_ok=True)
    card = json.loads(Path(spec.model.architecture).read_text())
    if spec.model.max_position_embeddings:
        card["max_position_embeddings"] = spec.model.max_position_embeddings
    card.setdefault("architectures", [_causal_lm_class(card["model_type"])])
    dummy = CAPABILITIES[ENGINES[spec.backend]].dummy_weights if spec.backend in ENGINES else False
    eos = _first(card.get("eos_token_id"))
    if not dummy:  # no EOS named: outputs run to max_tokens on an engine without ignore_eos
        card.pop("eos_token_id", None)
    (directory / "config.json").write_text(json.dumps(card, indent=2) + "\n")
    (directory / "generation_config.json").write_text(json.dumps({"pad_token_id": card.get("pad_token_id")}) + "\n")
    word_tokenizer(config.vocab_size, special, eos, _first(card.get("pad_token_id"))).save_pretrained(str(directory))
    if not dummy:
        _save_random_weights(directory, spec)
    return ServedModel(str(directory), None, dummy, config.vocab_size, special, True, config.model_type, positions)


def _first(ids) -> int | None:
    return ids[0] if isinstance(ids, list) and ids else ids if isinstance(ids, int) else None


def _causal_lm_class(model_type: str) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]


def _pretrained_vocabulary(spec: CellSpec, vocab_size: int, special: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Ids the tokenizer can decode (a config's vocabulary may be padded beyond it) and its special ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        spec.model.id, revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
    )
    return min(vocab_size, len(tokenizer)), tuple(sorted({*special, *tokenizer.all_special_ids}))


def word_tokenizer(vocab_size: int, special_ids, eos_id: int | None = None, pad_id: int | None = None):
    """A `PreTrainedTokenizerFast` of exactly `vocab_size` tokens: id i is the word "t<i>", a special id the
    special token "<|special_<i>|>"; words split on whitespace and decode joined by spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = {int(i): SPECIAL.format(i) for i in special_ids if 0 <= int(i) < vocab_size}
    vocab = {names.get(i, WORD.format(i)): i for i in range(vocab_size)}
    unk = names[min(names)] if names else WORD.format(0)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(names.values()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=unk, eos_token=names.get(eos_id), pad_token=names.get(pad_id)
    )
    tokenizer.model_max_length = 1 << 30
    return tokenizer


def _save_random_weights(directory: Path, spec: CellSpec) -> None:
    """Random weights for an engine without a dummy load format; the configs as written above are kept."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from deploybench.engines.models import TORCH_DTYPES

    kept = {name: (directory / name).read_text() for name in ("config.json", "generation_config.json")}
    torch.manual_seed(spec.measurement.seed)
    config = AutoConfig.from_pretrained(str(directory))
    AutoModelForCausalLM.from_config(config, dtype=TORCH_DTYPES[spec.dtype]).save_pretrained(str(directory))
    for name, text in kept.items():
        (directory / name).write_text(text)


# ---------------------------------------------------------------- prompts


def prompt_seed(spec: CellSpec, purpose: str) -> int:
    """A load point's own prompt seed (measurement.seed, its cell id, `purpose`): distinct across the points and
    the warm-ups one server sees."""
    text = f"{spec.measurement.seed}:{spec.cell_id}:{purpose}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class SpelledPrompts:
    """Text prompts: TokenPrompts' ids spelled as the word-level tokenizer's words (exactly as many tokens), or
    decoded by a pretrained tokenizer (about as many: the row's context_tokens_measured says how many)."""

    def __init__(self, ids: TokenPrompts, spell):
        self.ids, self.spell = ids, spell

    def __getitem__(self, index: int) -> str:
        return self.spell(self.ids[index])


def prompts(spec: CellSpec, served: ServedModel, flags: EngineFlags, purpose: str):
    """Request i's prompt, and the prompt mode of the row."""
    ids = TokenPrompts(spec.context, served.vocab_size, served.special_ids, prompt_seed(spec, purpose))
    if flags.token_ids:
        return ids, PromptMode.RANDOM_IDS
    if served.words:
        return SpelledPrompts(ids, lambda row: " ".join(WORD.format(i) for i in row)), PromptMode.RANDOM_WORDS
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(served.model, revision=served.revision)
    return SpelledPrompts(ids, tokenizer.decode), PromptMode.RAW_TEXT


# ---------------------------------------------------------------- the client and the server


def client_flags(spec: CellSpec) -> EngineFlags:
    """What the engine's completions endpoint accepts (deploybench.engines.serving.capabilities.CAPABILITIES)."""
    if spec.backend is Backend.OPENAI:
        eos = bool(spec.engine.ignore_eos)
        return EngineFlags(bool(spec.engine.token_id_prompts), eos, eos, True, False, True)
    c = CAPABILITIES[ENGINES[spec.backend]]
    return EngineFlags(
        c.token_id_prompts, c.ignore_eos, c.min_tokens, c.include_usage, c.continuous_usage, c.stream_done_marker
    )


def sampling(spec: CellSpec) -> dict:
    """The request fields of the cell's decoding mode beyond greedy (temperature 0, the client's default)."""
    decoding = spec.decoding
    if not decoding.do_sample:
        return {}
    temperature, top_k, top_p = decoding.filters
    extra = {"temperature": temperature, "top_p": top_p}
    if top_k and spec.backend is not Backend.TRANSFORMERS_SERVE:  # its request model has no top_k
        extra["top_k"] = top_k
    return extra


def request_settings(spec: CellSpec, flags: EngineFlags) -> dict:
    """What every request of the cell asks for, as its body holds it (the prompt and the model name left out)."""
    body = request_body([0] if flags.token_ids else "", spec.gen, flags, None, sampling(spec))
    return {key: value for key, value in body.items() if key != "prompt"}


def server_config(spec: CellSpec, served: ServedModel, log_path: str, startup_timeout_s: float) -> ServerConfig:
    """How the serve job starts the cell's engine (vllm, transformers_serve)."""
    engine = ENGINES[spec.backend]
    args = list(spec.engine.args or [])
    if spec.backend is Backend.TRANSFORMERS_SERVE:
        args = [*TRANSFORMERS_SERVE_DEFAULT_ARGS, *args]
    elif spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    env = dict(spec.engine.env or {})
    if spec.measurement.device == Device.CPU:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")  # keeps the server off the GPU the job may hold
    return ServerConfig(
        engine,
        served.model,
        python=spec.engine.python,
        revision=served.revision,
        dummy_weights=served.dummy_weights,
        dtype=str(spec.dtype),
        max_model_len=spec.context + spec.gen if spec.backend is Backend.VLLM else None,
        served_model_name=spec.model_name,
        kv_cache_gib=spec.engine.kv_cache_gib,
        engine_args=tuple(args),
        env=env,
        startup_timeout_s=startup_timeout_s,
        log_path=log_path,
    )
