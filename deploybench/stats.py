"""Summary statistics over raw samples, with the percentile method stated."""

from __future__ import annotations

import math
import statistics

# Linear interpolation between closest ranks (numpy's default 'linear', Hyndman & Fan type 7):
# with 10 samples p95 lies between the 9th and 10th, so it is not simply the maximum.
PERCENTILE_METHOD = "linear interpolation between closest ranks (Hyndman-Fan type 7, numpy 'linear')"


def percentile(samples: list[float], q: float) -> float | None:
    """q in [0, 100]. None for no samples."""
    if not samples:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean(samples: list[float]) -> float | None:
    """Arithmetic mean; None for no samples."""
    return statistics.fmean(samples) if samples else None


def median(samples: list[float]) -> float | None:
    return percentile(samples, 50)


def coefficient_of_variation(samples: list[float]) -> float | None:
    """Sample standard deviation / mean; None below two samples."""
    if len(samples) < 2:
        return None
    mean = statistics.fmean(samples)
    return statistics.stdev(samples) / mean if mean else None
