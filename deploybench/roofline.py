"""Batch-1 decode roofline: a decode step must read its weights and KV cache from memory once.

The ceilings it is measured against (copy and GEMV bandwidth) come from deploybench.calibration.
"""

from __future__ import annotations

import torch

from .experts import READS_ALL


def params_read_per_token(active_params: int, all_experts_params: int, experts_read: str) -> int:
    """The weights a decode step reads: the routed experts' (active), or every expert's."""
    return all_experts_params if experts_read == READS_ALL else active_params


def decode_bytes_per_token(params_read: int, dtype: torch.dtype, kv_read_bytes: float) -> float:
    """Weights a decode step multiplies plus the KV it attends over."""
    return params_read * dtype.itemsize + kv_read_bytes


def decode_flops_per_token(params_read: int, attention_flops: float) -> float:
    """2 FLOPs (multiply, add) per weight multiplied, plus attention's."""
    return 2 * params_read + attention_flops


def roofline(decode_tps: float | None, bandwidth: float | None, bytes_per_token: float, suffix: str = "") -> dict:
    """roofline_tps<suffix> (the bound) and roofline_fraction<suffix> (decode_tps against it)."""
    if not bandwidth or not bytes_per_token:
        return {f"roofline_tps{suffix}": None, f"roofline_fraction{suffix}": None}
    bound = bandwidth / bytes_per_token
    return {
        f"roofline_tps{suffix}": bound,
        f"roofline_fraction{suffix}": decode_tps / bound if decode_tps else None,
    }
