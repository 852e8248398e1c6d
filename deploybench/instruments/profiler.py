"""The profiled pass of boundness: kernels and kernel time per decode step, from torch.profiler.

A profiled pass outside every timed and energy window (CUPTI sees kernels inside CUDA graphs too) runs a
prefill-only generate and a full-length generate: their difference over the decode steps is each step's
kernel count and kernel time. deploybench.analytic.boundness turns that record into the verdict.
"""

from __future__ import annotations

import torch

from deploybench.analytic import step_kernels
from deploybench.analytic.boundness import StepProfile
from deploybench.instruments.device import is_cuda


def device_kernels(profile) -> list[tuple[str, float]]:
    """(name, device microseconds) of every kernel the profiler saw on the device."""
    out = []
    for event in profile.events():
        # Kernels are the events on the device; their time range is the kernel's own start and end.
        if str(event.device_type).endswith("CUDA"):
            out.append((event.name, float(event.time_range.elapsed_us())))
    return out


def profile_decode_steps(run, tokens: int, device: str) -> StepProfile | None:
    """Kernels and kernel time per decode step over a `tokens`-token generate and a one-token one, through
    `run(new_tokens, i, clock)` as an engine runs (deploybench.engines.base). None on a CPU device or below
    2 tokens."""
    if not is_cuda(device) or tokens < 2:
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
        totals[new_tokens] = step_kernels.totals(device_kernels(profile))
    steps = tokens - 1
    launches, us = ([sum(v[i] for v in totals[n].values()) for n in (tokens, 1)] for i in (0, 1))
    return StepProfile(
        profile_tokens=tokens,
        kernels_per_token=(launches[0] - launches[1]) / steps,
        gpu_kernel_ms_per_token=(us[0] - us[1]) / steps / 1000,
        kernels=step_kernels.per_step(totals[tokens], totals[1], steps),
    )
