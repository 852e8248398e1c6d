"""Batch-1 decode roofline: a decode step must read its weights and KV cache from memory once."""

from __future__ import annotations

import torch


def measure_copy_bandwidth(device: str, size_bytes: int = 1 << 30, repeats: int = 10) -> float | None:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written.

    Median of `repeats` timed copies after one warm-up, timed with CUDA events. None on CPU.
    """
    if not device.startswith("cuda"):
        return None
    src = torch.empty(size_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = (
            torch.cuda.Event(enable_timing=True),
            torch.cuda.Event(enable_timing=True),
        )
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    times.sort()
    return 2 * size_bytes / times[len(times) // 2]


def decode_bytes_per_token(active_params: int, dtype: torch.dtype, kv_read_bytes: float) -> float:
    """Weights a decode step multiplies (routed experts only for MoE) plus the KV it attends over."""
    return active_params * dtype.itemsize + kv_read_bytes


def roofline(decode_tps: float | None, bandwidth: float | None, bytes_per_token: float) -> dict:
    if not bandwidth or not bytes_per_token:
        return {"roofline_tps": None, "roofline_fraction": None}
    bound = bandwidth / bytes_per_token
    return {
        "roofline_tps": bound,
        "roofline_fraction": decode_tps / bound if decode_tps else None,
    }
