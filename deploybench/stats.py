"""Summary statistics over raw samples, with the percentile method stated."""

from __future__ import annotations

import math
import statistics

# Linear interpolation between closest ranks (numpy's default 'linear', Hyndman & Fan type 7):
# with 10 samples p95 lies between the 9th and 10th, so it is not simply the maximum.
# A tail percentile (q > 50) is reported only from n >= 100 / (100 - q) samples: below that fewer
# than one sample is expected beyond it, and type 7 puts it between the two largest samples
# (for n <= (200 - q) / (100 - q)): an extrapolation of the maximum, not a measured tail.
PERCENTILE_METHOD = (
    "linear interpolation between closest ranks (Hyndman-Fan type 7, numpy 'linear'); a q-th percentile "
    "above the median only from n >= 100 / (100 - q) samples (p95: 20, p99: 100), else null"
)


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


def min_samples(q: int) -> int:
    """Fewest samples that support the q-th percentile (q an integer in [0, 100)): 1 up to the
    median, else ceil(100 / (100 - q)), the n at which one sample is expected beyond it."""
    if not 0 <= q < 100:
        raise ValueError(f"percentile q must be in [0, 100), got {q}")
    return 1 if q <= 50 else -(-100 // (100 - q))


def supported_percentiles(
    samples: list[float], name: str, qs: tuple[int, ...], counted: str
) -> tuple[dict, str | None]:
    """{name with {q} filled: percentile or None where n < min_samples(q)}, and why any are None.

    `counted` names what the samples are ("runs", "pooled steps") for the reason text.
    """
    n = len(samples)
    figures, withheld = {}, []
    for q in qs:
        column = name.format(q=q)
        figures[column] = percentile(samples, q) if n >= min_samples(q) else None
        if samples and figures[column] is None:
            withheld.append((column, q))
    if not withheld:
        return figures, None
    needs = ", ".join(f"p{q} needs {min_samples(q)}" for _, q in withheld)
    return figures, f"{', '.join(c for c, _ in withheld)}: {n} {counted} ({needs})"


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
