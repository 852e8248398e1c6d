"""What bounds a cell's decode: the host that launches kernels, memory bandwidth, or compute.

A profiled pass outside every timed and energy window (torch.profiler; CUPTI sees kernels inside CUDA
graphs too) runs a prefill-only generate and a full-length generate: their difference over the
decode steps is each step's kernel count and kernel time. Against the measured (unprofiled) time per
output token this gives the GPU-busy fraction; with the step's arithmetic intensity against the
machine's ridge point (measured GEMM rate / GEMV bandwidth) it gives the verdict `bound_by`.
Thresholds are stated in the metric catalogue's definitions of these columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    profile_tokens: int
    kernels_per_token: float
    gpu_kernel_ms_per_token: float


def device_kernels(profile) -> list[tuple[str, float]]:
    """(name, device microseconds) of every kernel the profiler saw on the device."""
    out = []
    for event in profile.events():
        # Kernels are the events on the device; their time range is the kernel's own start and end.
        if str(event.device_type).endswith("CUDA"):
            out.append((event.name, float(event.time_range.elapsed_us())))
    return out


def profile_decode_steps(run, tokens: int, device: str) -> StepProfile | None:
    """Kernels and kernel time per decode step over a `tokens`-token generate and a one-token one;
    `run(new_tokens, i, clock)` as measure.backend_runner gives. None on a CPU device or below 2 tokens."""
    if not str(device).startswith("cuda") or tokens < 2:
        return None
    totals = {}
    # Each shape warm when profiled: the full one first, straight after the decode runs at that shape (the
    # compiled backend re-warmed in a full generate that followed one-token ones: measure._decode_runs),
    # then the one-token one after an unprofiled one-token run (a prefill: cheap).
    for new_tokens in (tokens, 1):
        if new_tokens == 1:
            run(1, 0, False)
        # Device activity only: the kernels are all we read, and host-op events would cost seconds to collect.
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
            _, output = run(new_tokens, 0, False)
            del output
        kernels = device_kernels(profile)
        totals[new_tokens] = (len(kernels), sum(us for _, us in kernels))
    steps = tokens - 1
    return StepProfile(
        profile_tokens=tokens,
        kernels_per_token=(totals[tokens][0] - totals[1][0]) / steps,
        gpu_kernel_ms_per_token=(totals[tokens][1] - totals[1][1]) / steps / 1000,
    )


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
