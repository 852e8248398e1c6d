"""The compiled_loop backend's options: which fusions, decode-attention kernel and decode experts path it builds.

They live in a model entry (`compiled_loop:`), not in the measurement settings or the backend name: a
variant is a property of how one model is deployed, the reference run switches it per model in its
config without code changes, and editing it reruns only that model's cells. Other backends ignore it
(their rows say no fusion ran and name no decode kernel). The defaults are today's behaviour: no fusion,
the grouped-query matmul for decode attention, and the model's own experts path.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import field_validator

from deploybench.plan.validation import Choice, Settings


class Fusion(StrEnum):
    """Projections that read one input, fused into one weight after load (deploybench.engines.compiled_loop.fusion)."""

    QKV = "qkv"  # q_proj, k_proj and v_proj: one GEMV per layer instead of three
    GATE_UP = "gate_up"  # a dense MLP's gate_proj and up_proj


class DecodeAttentionKernel(StrEnum):
    """Attention of one decode step (one query per head) over the static cache (compiled_loop.attention)."""

    GQA_MATMUL = "gqa_matmul"  # two matmuls with each KV head's query group folded into the query length
    SDPA_GQA = "sdpa_gqa"  # torch's scaled_dot_product_attention with enable_gqa=True
    # SDPA as multi-head attention over the KV heads, each one's query heads folded into the query length:
    # CUDA's SDPA runs grouped-query attention only in its flash and math kernels, and flash takes no mask.
    SDPA_FOLDED = "sdpa_folded"
    FLEX_DECODING = "flex_decoding"  # FlexAttention; on a GPU its decoding kernel splits the KV length


class DecodeExperts(StrEnum):
    """Mixture-of-experts path of decode steps only; the prefill keeps the model's (compiled_loop.decode_experts)."""

    GROUPED_MM = "grouped_mm"  # transformers' grouped GEMM
    BATCHED_MM = "batched_mm"  # transformers' gather of the routed experts' weights, then bmm
    GATHERED_REDUCTION = "gathered_reduction"  # products and sums inductor fuses with the gather: no weight copy


class CompiledLoopOptions(Settings):
    """How compiled_loop builds its decode step for this model (other backends ignore it)."""

    fusions: list[Choice[Fusion]] = []
    """projections fused after load: qkv, gate_up (where the model has them; the row lists what ran)"""
    decode_attention: Choice[DecodeAttentionKernel] = DecodeAttentionKernel.GQA_MATMUL
    """decode-step attention kernel: gqa_matmul | sdpa_gqa | sdpa_folded | flex_decoding"""
    decode_experts: Choice[DecodeExperts] | None = None
    """mixture-of-experts path of the decode steps: grouped_mm | batched_mm | gathered_reduction; unset: the model's"""

    @field_validator("fusions")
    @classmethod
    def _canonical_order(cls, fusions: list[Fusion]) -> list[Fusion]:
        # One order, so equal settings give equal cell specs.
        members = [Fusion(f) for f in fusions]
        if len(set(members)) != len(members):
            raise ValueError("a fusion is listed twice")
        return sorted(members, key=list(Fusion).index)


DEFAULT = CompiledLoopOptions()
