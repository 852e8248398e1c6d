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

The decode step's kernel is selectable (enums.DecodeAttentionKernel): the matmuls above
(the default), torch's SDPA with enable_gqa, SDPA over the KV heads with the query groups folded
into the query length, or FlexAttention, whose GPU decoding kernel splits the KV length across
thread blocks. All but SDPA's own GQA path read each KV head once, and all take the same additive
mask (unwritten static-cache slots, sliding windows). A sink (gpt-oss) is an extra logit s per head whose value row is
zero: with Z = sum_j exp(l_j) = exp(lse) over the keys, softmax over [l, s] weights key j by
exp(l_j) / (Z + exp(s)), so the output is the sink-free output times Z / (Z + exp(s)) = sigmoid(lse - s).
FlexAttention returns the lse; SDPA does not, so for SDPA the lse comes from one more pass over K
(logsumexp_by_matmul).
"""

from __future__ import annotations

import torch
from torch.nn import functional

from deploybench.enums import DecodeAttentionKernel
from deploybench.instruments.device import is_cuda

GQA_EAGER = "deploybench_gqa_eager"
GQA_SDPA_PREFILL = "deploybench_gqa_sdpa_prefill"


def gqa_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    logits = _grouped_logits(query, key, attention_mask, scaling)
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


def _sdpa_prefill(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def sdpa_gqa_decode(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """One decode step through torch's SDPA with enable_gqa.

    On CUDA, SDPA runs grouped-query attention only in its flash and math kernels, and flash takes no
    mask, so this may well be the math kernel, which copies K and V per query head; sdpa_folded avoids it.
    """
    mask = _mask_for(attention_mask, key)
    out = functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True)
    sinks = getattr(module, "sinks", None)
    if sinks is not None:
        out = with_sinks(out, logsumexp_by_matmul(query, key, mask, scaling), sinks)
    return out.transpose(1, 2).contiguous(), None


def sdpa_folded_decode(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """One decode step through SDPA as multi-head attention over the KV heads: each KV head's query heads folded
    into the query length (as gqa_eager_attention folds them), so every backend reads K and V once, in place."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    mask = _mask_for(attention_mask, key)
    folded_mask = None
    if mask is not None:  # folded row g * q_len + t is query position t
        folded_mask = mask[:, :, None].expand(-1, -1, groups, -1, -1).reshape(mask.shape[0], 1, groups * q_len, -1)
    folded = query.reshape(batch, kv_heads, groups * q_len, dim)
    out = functional.scaled_dot_product_attention(folded, key, value, attn_mask=folded_mask, scale=scaling)
    out = out.reshape(batch, heads, q_len, value.shape[-1])
    sinks = getattr(module, "sinks", None)
    if sinks is not None:
        out = with_sinks(out, logsumexp_by_matmul(query, key, mask, scaling), sinks)
    return out.transpose(1, 2).contiguous(), None


def flex_decode(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """One decode step through FlexAttention, the mask added as a score modification."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    if query.device.type == "cpu" and torch.compiler.is_compiling():
        return _flex_outside_the_graph(module, query, key, value, attention_mask, scaling)
    mask = _mask_for(attention_mask, key)
    score_mod = None
    if mask is not None:
        mask = opaque_copy(mask.expand(query.shape[0], -1, -1, -1))

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + mask[b, 0, q_idx, kv_idx]

    sinks = getattr(module, "sinks", None)
    if sinks is None:
        out = flex_attention(query, key, value, score_mod=score_mod, scale=scaling, enable_gqa=True)
    else:
        out, aux = flex_attention(
            query, key, value, score_mod=score_mod, scale=scaling, enable_gqa=True, return_aux=AuxRequest(lse=True)
        )
        out = with_sinks(out, aux.lse, sinks)
    return out.transpose(1, 2).contiguous(), None


@torch.library.custom_op("deploybench::opaque_copy", mutates_args=())
def opaque_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy Inductor cannot see through, so the mask FlexAttention's score modification reads is a buffer.

    Otherwise Inductor inlines the mask's computation from the cache positions into the FlexAttention kernel;
    for gpt-oss-20b's sliding-window layers that generated Triton code that did not compile (torch 2.11,
    H100: reference-run/serving-2026-12-07/variants/variants_gpt-oss-20b.log)."""
    return tensor.clone()


@opaque_copy.register_fake
def _(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(tensor)


# torch 2.13's compiled FlexAttention on CPU (a C++ template) cannot return the log-sum-exp, refuses a
# score modification over an intermediate buffer such as the mask, and its code generation failed
# depending on what the process compiled before. On CPU the decode step therefore calls FlexAttention
# eagerly, between two compiled graphs (breaks_graph); on a GPU it is compiled into the step.
_flex_outside_the_graph = torch.compiler.disable(flex_decode)


def breaks_graph(kernel, device: str) -> bool:
    """Whether the decode step cannot be one graph with this kernel on this device (FlexAttention on CPU)."""
    return DecodeAttentionKernel(kernel) is DecodeAttentionKernel.FLEX_DECODING and not is_cuda(device)


def with_sinks(out: torch.Tensor, lse: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """Sink-free attention output (batch, heads, q, dim) and its log-sum-exp (batch, heads, q) -> the
    output of a softmax that also had one extra logit per head, `sinks`, with a zero value row."""
    kept = torch.sigmoid(lse.float() - sinks.float().view(1, -1, 1))  # Z / (Z + exp(sink))
    return (out.float() * kept.unsqueeze(-1)).to(out.dtype)


def logsumexp_by_matmul(query, key, mask, scaling) -> torch.Tensor:
    """log sum_j exp(q.k_j * scaling + mask_j) per query head and position: (batch, heads, q)."""
    batch, heads, q_len, _ = query.shape
    return torch.logsumexp(_grouped_logits(query, key, mask, scaling, torch.float32), dim=-1).reshape(
        batch, heads, q_len
    )


def _grouped_logits(query, key, mask, scaling, dtype=None) -> torch.Tensor:
    """q.k_j * scaling + mask_j as (batch, kv_heads, groups, q, keys), in `dtype` (default the matmul's): each
    KV head's query heads folded into the query length, so K is read once, in place. Query head h uses KV
    head h // groups, the order repeat_kv produces."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    logits = torch.matmul(query.reshape(batch, kv_heads, heads // kv_heads * q_len, dim), key.transpose(2, 3))
    logits = (logits if dtype is None else logits.to(dtype)) * scaling
    logits = logits.view(batch, kv_heads, heads // kv_heads, q_len, -1)
    return logits if mask is None else logits + mask[:, :, None, :, : logits.shape[-1]]


def _mask_for(attention_mask, key):
    """The additive mask over this layer's cache slots (transformers may hand a longer one)."""
    return None if attention_mask is None else attention_mask[..., : key.shape[-2]]


DECODE_KERNELS = {
    DecodeAttentionKernel.GQA_MATMUL: gqa_eager_attention,
    DecodeAttentionKernel.SDPA_GQA: sdpa_gqa_decode,
    DecodeAttentionKernel.SDPA_FOLDED: sdpa_folded_decode,
    DecodeAttentionKernel.FLEX_DECODING: flex_decode,
}


def _by_phase(prefill, decode):
    """An attention function: `prefill` for several query positions, `decode` for one."""

    def attend(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        chosen = prefill if query.shape[2] > 1 else decode
        return chosen(module, query, key, value, attention_mask, scaling, dropout, **kwargs)

    return attend


def _mask_by_phase(*, q_length: int, **kwargs):
    """SDPA's mask (None where is_causal does, so flash attention runs) for a prefill, eager's for a step."""
    from transformers.masking_utils import eager_mask, sdpa_mask

    return (sdpa_mask if q_length > 1 else eager_mask)(q_length=q_length, **kwargs)


def implementation_name(prefill_sdpa: bool, kernel=DecodeAttentionKernel.GQA_MATMUL) -> str:
    """The attention implementation registered for a prefill path and a decode kernel."""
    kernel = DecodeAttentionKernel(kernel)
    if kernel is DecodeAttentionKernel.GQA_MATMUL:
        return GQA_SDPA_PREFILL if prefill_sdpa else GQA_EAGER
    return f"deploybench_{'sdpa' if prefill_sdpa else 'gqa_eager'}_prefill_{_NAME_TAGS[kernel]}_decode"


# transformers checks a model's support for an implementation by substring ("sdpa", "flex_attention"):
# the decode kernel's part of the name avoids both, so gpt-oss (no SDPA: sinks) can take any kernel.
_NAME_TAGS = {
    DecodeAttentionKernel.SDPA_GQA: "scaled_dot_product_gqa",
    DecodeAttentionKernel.SDPA_FOLDED: "scaled_dot_product_folded",
    DecodeAttentionKernel.FLEX_DECODING: "flex_decoding",
}


def register(model=None, kernel=DecodeAttentionKernel.GQA_MATMUL) -> str:
    """Register the implementations (idempotent); returns the one for `model` and `kernel`: SDPA prefill where
    its class supports SDPA, else (or without a model) the grouped-query eager prefill; `kernel` for decode steps."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(GQA_EAGER, gqa_eager_attention)
    AttentionMaskInterface.register(GQA_EAGER, eager_mask)
    # several query positions (prefill): transformers' SDPA; one (a decode step): gqa_eager_attention
    AttentionInterface.register(GQA_SDPA_PREFILL, _by_phase(_sdpa_prefill, gqa_eager_attention))
    AttentionMaskInterface.register(GQA_SDPA_PREFILL, _mask_by_phase)
    prefill_sdpa = model is not None and getattr(model, "_supports_sdpa", False)
    name = implementation_name(prefill_sdpa, kernel)
    if name not in (GQA_EAGER, GQA_SDPA_PREFILL):
        prefill = _sdpa_prefill if prefill_sdpa else gqa_eager_attention
        AttentionInterface.register(name, _by_phase(prefill, DECODE_KERNELS[DecodeAttentionKernel(kernel)]))
        AttentionMaskInterface.register(name, _mask_by_phase if prefill_sdpa else eager_mask)
    return name
