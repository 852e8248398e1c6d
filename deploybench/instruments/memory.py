"""Device and host memory figures."""

from __future__ import annotations

import resource
import sys

import torch

CPU_NULL_REASON = "no CUDA caching allocator on cpu: allocator fields are null; see host_peak_rss_bytes"


def host_peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def allocated_bytes(device: str) -> int | None:
    return int(torch.cuda.memory_allocated()) if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_figures(device: str) -> dict:
    """Peak allocated/reserved since the last reset_peak, or nulls with the reason on CPU."""
    if not device.startswith("cuda"):
        return {
            "peak_allocated_bytes": None,
            "peak_reserved_bytes": None,
            "memory_null_reason": CPU_NULL_REASON,
        }
    torch.cuda.synchronize()
    return {
        "peak_allocated_bytes": int(torch.cuda.max_memory_allocated()),
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
        "memory_null_reason": None,
    }
