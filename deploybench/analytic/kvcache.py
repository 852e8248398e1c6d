"""KV cache size: measured from the returned cache tensors, and predicted from the architecture.

The two must agree exactly; a mismatch means the analytic model (or the cache) is not what we
think it is, and the row is marked invalid.
"""

from __future__ import annotations

import torch

from deploybench.enums import CacheImplementation


def measured_kv_bytes(cache) -> int:
    """Bytes of the key and value tensors a generate call returned."""
    total = 0
    for layer in cache.layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def _layer_types(config) -> list[str]:
    types = getattr(config, "layer_types", None)
    if types:
        return list(types)
    return ["full_attention"] * config.num_hidden_layers


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def cached_tokens(config, layer_type: str, seen_tokens: int, cache_implementation: CacheImplementation) -> int:
    """Tokens a layer's cache holds after `seen_tokens` tokens went through the model."""
    window = getattr(config, "sliding_window", None)
    sliding = layer_type == "sliding_attention" and window
    if cache_implementation == CacheImplementation.STATIC:
        # generate() allocates a static cache up front for max_length - 1 = the tokens it will see;
        # sliding layers for at most their window.
        return min(window, seen_tokens) if sliding else seen_tokens
    # A dynamic sliding layer keeps the last window - 1 tokens (the new one makes the window).
    return min(seen_tokens, window - 1) if sliding else seen_tokens


def analytic_kv_bytes(
    config,
    context: int,
    gen: int,
    dtype: torch.dtype,
    cache_implementation: CacheImplementation = CacheImplementation.DYNAMIC,
    batch: int = 1,
) -> int:
    """KV bytes after generating `gen` tokens from a `context`-token prompt.

    The last generated token is never fed back, so the cache has seen context + gen - 1 tokens.
    """
    seen = context + gen - 1
    per_token_per_layer = 2 * batch * config.num_key_value_heads * head_dim(config) * dtype.itemsize
    return sum(
        per_token_per_layer * cached_tokens(config, kind, seen, cache_implementation) for kind in _layer_types(config)
    )


def positions_attended_per_token(config, context: int, gen: int) -> float:
    """KV positions a decode step attends to, summed over layers, mean over the gen - 1 decode steps."""
    window = getattr(config, "sliding_window", None)
    total = 0.0
    for kind in _layer_types(config):
        # Step i (0-based) attends over context + i tokens; average over the gen - 1 decode steps.
        attended = [context + i for i in range(1, gen)] or [context]
        if kind == "sliding_attention" and window:
            attended = [min(a, window) for a in attended]
        total += sum(attended) / len(attended)
    return total


def kv_bytes_read_per_token(config, context: int, gen: int, dtype: torch.dtype) -> float:
    """Mean KV bytes a decode step reads over the generation (attention reads the whole cache)."""
    per_position = 2 * config.num_key_value_heads * head_dim(config) * dtype.itemsize
    return per_position * positions_attended_per_token(config, context, gen)


def attention_flops_per_token(config, context: int, gen: int) -> float:
    """Multiply-adds of a decode step's attention, x2: q.k and p.v per query head and attended position."""
    return 4 * config.num_attention_heads * head_dim(config) * positions_attended_per_token(config, context, gen)


def kv_bytes_read_per_step(config, context: int, gen: int, dtype: torch.dtype, batch: int = 1) -> float:
    """Mean KV bytes a decode step of `batch` sequences reads: each sequence attends over its own cache."""
    return batch * kv_bytes_read_per_token(config, context, gen, dtype)


def attention_flops_per_step(config, context: int, gen: int, batch: int = 1) -> float:
    """Attention FLOPs of a decode step of `batch` sequences (attention_flops_per_token each)."""
    return batch * attention_flops_per_token(config, context, gen)
