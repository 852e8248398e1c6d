"""The compiled_loop backend's options: which fusions, decode-attention kernel and decode experts path it builds.

They live in a model entry (`compiled_loop:`), not in the measurement settings or the backend name: a
variant is a property of how one model is deployed, the reference run switches it per model in its
config without code changes, and editing it reruns only that model's cells. Other backends ignore it
(their rows say no fusion ran and name no decode kernel). The defaults are today's behaviour: no fusion,
the grouped-query matmul for decode attention, and the model's own experts path.
"""

from __future__ import annotations

from pydantic import field_validator

from deploybench.enums import DecodeAttentionKernel, DecodeExperts, Fusion
from deploybench.plan.validation import Choice, Settings


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
