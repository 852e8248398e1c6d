"""Device and host memory figures."""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

import torch

from deploybench.instruments.device import is_cuda

CPU_NULL_REASON = "no CUDA caching allocator on cpu: allocator fields are null; see host_peak_rss_bytes"


def host_peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def allocated_bytes(device: str) -> int | None:
    return int(torch.cuda.memory_allocated()) if is_cuda(device) else None


def reset_peak(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


@dataclass(frozen=True)
class PeakMemory:
    """Peak device memory since the last reset_peak, or nulls with the reason."""

    peak_allocated_bytes: int | None
    peak_reserved_bytes: int | None
    memory_null_reason: str | None


def peak(device: str) -> PeakMemory:
    """The caching allocator's peaks since the last reset_peak (none on CPU)."""
    if not is_cuda(device):
        return PeakMemory(None, None, CPU_NULL_REASON)
    torch.cuda.synchronize()
    return PeakMemory(int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved()), None)
