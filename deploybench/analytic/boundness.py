"""What bounds a cell's decode: the host that launches kernels, memory bandwidth, or compute. Arithmetic only.

The profiled pass (deploybench.instruments.profiler) gives each decode step's kernel count and kernel
time (a StepProfile). Against the measured (unprofiled) time per output token this gives the GPU-busy
fraction; with the step's arithmetic intensity against the machine's ridge point (measured GEMM rate /
GEMV bandwidth) it gives the verdict `bound_by`.
Thresholds are stated in the metric catalogue's definitions of these columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploybench.analytic.step_kernels import StepKernel
from deploybench.enums import BoundBy
from deploybench.results import metrics

# The verdict's thresholds are stated once, with its definition, in the metric catalogue: below
# HOST_BELOW the GPU idles most of each step waiting for the host; at or above GPU_AT_LEAST the GPU
# sets the pace; between the two, host and GPU share it (mixed).
HOST_BELOW = metrics.get("bound_by").parameter("host_below")
GPU_AT_LEAST = metrics.get("bound_by").parameter("gpu_at_least")
# Decode steps profiled: a step's kernels barely change over a few dozen positions, and an eager step's
# thousands of kernels make every profiled token costly to collect.
PROFILE_TOKENS = 16


def profile_tokens(gen: int, cache_sized_by_length: bool) -> int:
    """PROFILE_TOKENS, or the cell's gen where the cache is sized by the generate's length (generate() with
    a static cache): another length would compile the step again."""
    return gen if cache_sized_by_length else min(gen, PROFILE_TOKENS)


@dataclass(frozen=True)
class StepProfile:
    """Kernels and kernel time per decode step, as the profiled pass measured them."""

    profile_tokens: int
    kernels_per_token: float
    gpu_kernel_ms_per_token: float
    kernels: tuple[StepKernel, ...] = ()  # by name (analytic.step_kernels)


def busy_fraction(gpu_kernel_ms_per_token: float | None, tpot_ms: float | None) -> float | None:
    if gpu_kernel_ms_per_token is None or not tpot_ms:
        return None
    return gpu_kernel_ms_per_token / tpot_ms


def bound_by(busy: float | None, intensity_flops_per_byte: float | None, ridge_flops_per_byte: float | None):
    """host | memory_bandwidth | compute | mixed (None without a busy fraction, or GPU-busy without a ridge)."""
    if busy is None:
        return None
    if busy < HOST_BELOW:
        return BoundBy.HOST
    if busy < GPU_AT_LEAST:
        return BoundBy.MIXED
    if intensity_flops_per_byte is None or not ridge_flops_per_byte:
        return None  # the GPU is busy, but without the ridge compute and memory cannot be told apart
    return BoundBy.COMPUTE if intensity_flops_per_byte >= ridge_flops_per_byte else BoundBy.MEMORY_BANDWIDTH
