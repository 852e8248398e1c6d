"""Expected measurement failures: they become result rows; anything else is raised."""

from __future__ import annotations

import re

import torch

from deploybench.enums import FailureKind


class ContextTooLongError(ValueError):
    """context + gen exceeds the model's maximum positions."""


_UNSUPPORTED = re.compile(
    r"not implemented for '(Half|BFloat16|Float|ComplexHalf)'"
    r"|expected scalar type \w+ but found \w+"
    r"|does not support (bfloat16|float16|half)"
    r"|Unsupported dtype",
    re.IGNORECASE,
)


# Out of memory as torch says it on each device: CUDA and XPU ("... out of memory"), MPS ("MPS backend out of
# memory"), the CPU allocator ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ...").
_OUT_OF_MEMORY = re.compile(
    r"out of memory|can't allocate memory|cannot allocate memory|failed to allocate|OutOfMemory", re.IGNORECASE
)


def classify(exc: BaseException) -> FailureKind | None:
    """failure_kind for an expected failure, None for one that must propagate."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and _OUT_OF_MEMORY.search(str(exc))
    ):
        return FailureKind.OOM
    if isinstance(exc, ContextTooLongError):
        return FailureKind.CONTEXT_TOO_LONG
    if isinstance(exc, (RuntimeError, NotImplementedError, TypeError)) and _UNSUPPORTED.search(str(exc)):
        return FailureKind.UNSUPPORTED
    return None
