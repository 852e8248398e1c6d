"""Eager attention for grouped-query models without copying K and V once per query head.

transformers' eager attention calls repeat_kv, which materialises K and V for every query head:
at a 2048-token static cache, Qwen3-32B (64 query heads over 8 KV heads) writes and reads about
9 GB per decoded token that way, on top of 65 GB of weights. This function computes the same
softmax(QK^T * scale + mask) V by folding each KV head's group of query heads into the query-length
dimension, so K and V are read once, in place. gpt-oss's attention sinks are handled as in its
own eager path (an extra logit per head, dropped after the softmax, softmax in the logits' dtype).

Registered in transformers' attention and mask interfaces as GQA_EAGER. The compiled_loop backend
uses GQA_SDPA_PREFILL where the model supports SDPA: its prefill (several query positions) goes
through transformers' own SDPA path, as the eager-sdpa backend's does (flash attention on an empty
static cache), and only its decode steps (one query position, the compiled graph) through the
function above. Models without SDPA (gpt-oss: attention sinks) keep GQA_EAGER for both. Rows record
which in attn_implementation.
"""

from __future__ import annotations

import torch
from torch.nn import functional

GQA_EAGER = "deploybench_gqa_eager"
GQA_SDPA_PREFILL = "deploybench_gqa_sdpa_prefill"


def gqa_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    # Query head h uses KV head h // groups (the order repeat_kv produces).
    grouped = query.reshape(batch, kv_heads, groups * q_len, dim)
    logits = torch.matmul(grouped, key.transpose(2, 3)) * scaling
    logits = logits.view(batch, kv_heads, groups, q_len, -1)
    if attention_mask is not None:
        logits = logits + attention_mask[:, :, None, :, : logits.shape[-1]]
    sinks = getattr(module, "sinks", None)
    if sinks is not None:
        sink = sinks.reshape(1, kv_heads, groups, 1, 1).expand(batch, -1, -1, q_len, -1).to(logits.dtype)
        combined = torch.cat([logits, sink], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        probs = functional.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1]
    else:
        probs = functional.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = functional.dropout(probs, p=dropout, training=module.training).to(value.dtype)
    out = torch.matmul(probs.reshape(batch, kv_heads, groups * q_len, -1), value)
    out = out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous()
    return out, probs


def sdpa_prefill_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Several query positions (prefill): transformers' SDPA; one (a decode step): gqa_eager_attention."""
    if query.shape[2] > 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    return gqa_eager_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)


def _mask_by_phase(*, q_length: int, **kwargs):
    """SDPA's mask (None where is_causal does, so flash attention runs) for a prefill, eager's for a step."""
    from transformers.masking_utils import eager_mask, sdpa_mask

    return (sdpa_mask if q_length > 1 else eager_mask)(q_length=q_length, **kwargs)


def register(model=None) -> str:
    """Register both implementations (idempotent); returns the one for `model`: GQA_SDPA_PREFILL where
    its class supports SDPA, else (or without a model) GQA_EAGER."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(GQA_EAGER, gqa_eager_attention)
    AttentionMaskInterface.register(GQA_EAGER, eager_mask)
    AttentionInterface.register(GQA_SDPA_PREFILL, sdpa_prefill_attention)
    AttentionMaskInterface.register(GQA_SDPA_PREFILL, _mask_by_phase)
    return GQA_SDPA_PREFILL if model is not None and getattr(model, "_supports_sdpa", False) else GQA_EAGER
