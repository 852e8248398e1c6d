"""Decode roofline: a decode step must read its weights and KV cache from memory once (batch 1, and batch B below).

The ceilings it is measured against (copy and GEMV bandwidth) come from deploybench.instruments.calibration.
"""

from __future__ import annotations

import torch

from deploybench.analytic import kvcache
from deploybench.enums import ExpertsRead


def params_read_per_token(active_params: int, all_experts_params: int, experts_read: str) -> int:
    """The weights a decode step reads: the routed experts' (active), or every expert's."""
    return all_experts_params if experts_read == ExpertsRead.ALL else active_params


def roofline(decode_tps: float | None, bandwidth: float | None, bytes_per_token: float, suffix: str = "") -> dict:
    """roofline_tps<suffix> (the bound) and roofline_fraction<suffix> (decode_tps against it)."""
    if not bandwidth or not bytes_per_token:
        return {f"roofline_tps{suffix}": None, f"roofline_fraction{suffix}": None}
    bound = bandwidth / bytes_per_token
    return {
        f"roofline_tps{suffix}": bound,
        f"roofline_fraction{suffix}": decode_tps / bound if decode_tps else None,
    }


# ---------------------------------------------------------------- batch B
# A decode step of B sequences reads the dense weights once, each expert that any of its B tokens was
# routed to once per MoE layer, and the KV cache of every sequence; it produces B tokens.


def weights_read_per_step(
    dense_params: int, params_per_expert: int, moe_layers: int, experts_touched_per_layer: float
) -> float:
    """Parameters a decode step reads: dense_params + experts touched per layer x one expert x MoE layers.

    experts_touched_per_layer: distinct experts the step's B tokens were routed to (deploybench.instruments.coverage),
    top_k at batch 1, n_experts when every expert is computed (all_experts); 0 MoE layers for a dense model.
    """
    return dense_params + experts_touched_per_layer * params_per_expert * moe_layers


def decode_bytes_per_step(weights_read: float, dtype: torch.dtype, kv_read_bytes: float) -> float:
    """Weights read once for the step + the KV of the B sequences (kvcache.kv_bytes_read_per_step)."""
    return weights_read * dtype.itemsize + kv_read_bytes


def decode_flops_per_step(params_multiplied_per_token: int, attention_flops: float, batch: int) -> float:
    """2 x parameters multiplied per token x B + attention FLOPs of the B sequences (kvcache.attention_flops_per_step).

    params_multiplied_per_token: active_params for routed experts, all_experts_params when every expert
    is computed (params_read_per_token)."""
    return 2 * params_multiplied_per_token * batch + attention_flops


def compute_roof_tps(flops_rate: float | None, flops_per_step: float, batch: int) -> float | None:
    """B x flops_rate / FLOPs per step: the decode speed (tok/s, all B sequences) at the GEMM rate."""
    return batch * flops_rate / flops_per_step if flops_rate and flops_per_step else None


def batch_roofline(
    decode_tps: float | None,
    bandwidth: float | None,
    flops_rate: float | None,
    bytes_per_step: float,
    flops_per_step: float,
    batch: int,
) -> dict:
    """roofline_tps = B x bandwidth / bytes per step, roofline_fraction = decode_tps (aggregate over the
    batch) / roofline_tps, roofline_compute_tps = B x flops_rate / FLOPs per step. At B = 1 these are
    roofline()'s figures."""
    return {
        **roofline(decode_tps, bandwidth, bytes_per_step / batch),
        "roofline_compute_tps": compute_roof_tps(flops_rate, flops_per_step, batch),
    }


def decode_step_figures(
    config,
    split: dict,
    params_multiplied_per_token: int,
    experts_touched_per_layer: float,
    dtype: torch.dtype,
    context: int,
    gen: int,
    batch: int,
) -> dict:
    """decode_bytes_per_step and decode_flops_per_step of a batch-B decode step at this context.

    split: params.expert_split of the model; experts_touched_per_layer as weights_read_per_step takes it."""
    weights = weights_read_per_step(
        split["dense_params"], split["params_per_expert"], split["moe_layers"], experts_touched_per_layer
    )
    kv_read = kvcache.kv_bytes_read_per_step(config, context, gen, dtype, batch)
    attention = kvcache.attention_flops_per_step(config, context, gen, batch)
    return {
        "weights_read_per_step": weights,
        "decode_bytes_per_step": decode_bytes_per_step(weights, dtype, kv_read),
        "decode_flops_per_step": decode_flops_per_step(params_multiplied_per_token, attention, batch),
    }
