"""Eager attention for grouped-query models without copying K and V once per query head.

transformers' eager attention calls repeat_kv, which materialises K and V for every query head:
at a 2048-token static cache, Qwen3-32B (64 query heads over 8 KV heads) writes and reads about
9 GB per decoded token that way, on top of 65 GB of weights. This function computes the same
softmax(QK^T * scale + mask) V by folding each KV head's group of query heads into the query-length
dimension, so K and V are read once, in place. gpt-oss's attention sinks are handled as in its
own eager path (an extra logit per head, dropped after the softmax, softmax in the logits' dtype).

Registered in transformers' attention and mask interfaces as GQA_EAGER; the compiled_loop
backend uses it for every model (rows record it in attn_implementation).
"""

from __future__ import annotations

import torch
from torch.nn import functional

GQA_EAGER = "deploybench_gqa_eager"


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


def register() -> str:
    """Make GQA_EAGER a valid attn_implementation (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(GQA_EAGER, gqa_eager_attention)
    AttentionMaskInterface.register(GQA_EAGER, eager_mask)
    return GQA_EAGER
