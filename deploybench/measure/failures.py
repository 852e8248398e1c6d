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


def classify(exc: BaseException) -> FailureKind | None:
    """failure_kind for an expected failure, None for one that must propagate."""
    if isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    ):
        return FailureKind.OOM
    if isinstance(exc, ContextTooLongError):
        return FailureKind.CONTEXT_TOO_LONG
    if isinstance(exc, (RuntimeError, NotImplementedError, TypeError)) and _UNSUPPORTED.search(str(exc)):
        return FailureKind.UNSUPPORTED
    return None
