"""A 95% interval of the median from runs in temporal order, and when a phase has run enough.

Runs of one cell are not independent: a slow spell from outside the process (another tenant, a
clock change, the host) spans several consecutive runs, and an interval that treats n such runs as
n independent samples is too narrow. The interval here is the order-statistic (sign-test) interval
of the median with the sample size replaced by an effective sample size:

- The number of samples below the true median is Binomial(n, 1/2) for independent runs, variance
  n/4; for a stationary series it is n/4 x tau, tau = 1 + 2 sum_k rho_k (the indicator series'
  autocorrelations). tau is estimated from the autocorrelations of the samples' ranks (robust to
  the outliers a slow spell makes) as the larger of (a) (1 + r) / (1 - r), r the lag-1 rank
  autocorrelation bias-corrected (E[r] ~ rho - (1 + 3 rho) / n, Kendall 1954; the AR(1) form,
  which reacts in short series) and (b) Geyer's initial monotone sequence estimate (the sum of
  paired autocorrelations while positive, as MCMC effective sample sizes are computed; it sees
  slow spells that last longer than lag 1 suggests), clamped to [1, min(39, n)]: never narrower
  than the independent interval, and never above n, since the count below the median lies in
  [0, n] and so varies by at most n^2/4 (n samples are worth at least one).
- n_eff = n / tau. The interval is [x_(l), x_(n+1-l)] with
  l = floor(n/2 + 1/2 - z_0.975 sqrt(n tau) / 2), the normal approximation with continuity
  correction (for tau = 1 it gives the exact binomial ranks at small n: min..max at n = 6, 96.9%).
  Where l < 1 no 95% interval exists from these samples: it is withheld (None), never widened to
  min..max and passed off as 95%.

Arithmetic on the ranks, no resampling: deterministic, and cheap enough to check after every run.
tests/unit/test_uncertainty.py checks its coverage on simulated series with a known median
(independent, AR(1), a two-regime Markov mixture) and that the independent interval under-covers
the correlated ones. Known limit: spells that last a sizeable fraction of the series (slow spells of
10 runs among fast ones of 30, at 30-60 runs) are not seen well by any estimate from so few
spells: coverage there falls short of 95%. A moving-block bootstrap (blocks of n^(1/3) and
1.75 n^(1/3) runs) was tried and rejected: its percentile interval of the median under-covered the
AR(1) and two-regime series that this interval covers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from deploybench.enums import StopReason

CONFIDENCE = 0.95
Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
MAX_LAG1 = 0.95
# The interval may stop a phase (ci_target) only from this many runs on. Stopping at the first narrow
# interval selects the moments when a few look-alike runs hide the correlation: on simulated AR(1)
# series, stopping from 5 runs gives final intervals that under-cover, stopping from 20 keeps them near
# 95% (tests/unit/test_uncertainty.py measures both). On a GPU the energy windows take about as many
# runs anyway.
MIN_RUNS_FOR_TARGET = 20
MAX_VARIANCE_INFLATION = (1 + MAX_LAG1) / (1 - MAX_LAG1)  # 39
CI_METHOD = (
    "95% order-statistic (sign-test) interval of the median with an effective sample size n_eff = n / tau, "
    "tau from the rank autocorrelations of the runs in temporal order (the larger of the AR(1) form of the "
    "bias-corrected lag-1 and Geyer's initial monotone sequence, in [1, min(39, n)]); withheld where n_eff admits "
    "no 95% interval"
)


@dataclass(frozen=True)
class MedianInterval:
    """The interval of the median of `n` samples (low and high None where it is withheld)."""

    median: float | None
    low: float | None
    high: float | None
    n: int
    n_eff: float | None  # n / tau: the independent samples these are worth

    @property
    def relative_half_width(self) -> float | None:
        """(high - low) / 2 / median; None where there is no interval or the median is 0."""
        if self.low is None or not self.median:
            return None
        return (self.high - self.low) / 2 / abs(self.median)

    def withheld_reason(self, name: str) -> str | None:
        if self.low is not None:
            return None
        if self.n == 0:
            return f"{name}: no samples"
        return f"{name}: {self.n} samples, worth {self.n_eff:.1f} independent ones, admit no 95% interval"


def average_ranks(samples: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (so equal samples carry no spurious order)."""
    values = np.asarray(samples, dtype=float)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse]


def rank_autocorrelations(samples: Sequence[float]) -> np.ndarray:
    """Autocorrelations of the samples' ranks at lags 0..n-1, in the order given (all 0 past lag 0
    when every sample is equal)."""
    ranks = average_ranks(samples)
    centred = ranks - ranks.mean()
    n = len(centred)
    spectrum = np.fft.rfft(centred, 2 * n)
    autocovariance = np.fft.irfft(spectrum * np.conj(spectrum), 2 * n)[:n]
    if autocovariance[0] <= 1e-12 * n:
        return np.eye(1, n).ravel()
    return autocovariance / autocovariance[0]


def variance_inflation(samples: Sequence[float]) -> float:
    """tau: how many times the variance of the count below the median exceeds its independent n/4.

    The larger of the AR(1) form of the bias-corrected lag-1 rank autocorrelation and Geyer's
    initial monotone sequence sum, clamped to [1, min(MAX_VARIANCE_INFLATION, n)]: the count below the
    median lies in [0, n], so its variance is at most n^2/4, n times the independent n/4.
    """
    n = len(samples)
    if n < 3:
        return 1.0
    rho = rank_autocorrelations(samples)
    lag1 = min(max(rho[1] + (1 + 3 * rho[1]) / n, 0.0), MAX_LAG1)
    ar1 = (1 + lag1) / (1 - lag1)
    pairs = rho[0 : 2 * (n // 2) : 2] + rho[1 : 2 * (n // 2) : 2]  # rho_2m + rho_2m+1
    positive = np.flatnonzero(pairs <= 0)
    pairs = np.minimum.accumulate(pairs[: positive[0] if len(positive) else len(pairs)])  # monotone
    geyer = 2 * float(pairs.sum()) - 1
    return float(min(max(ar1, geyer, 1.0), MAX_VARIANCE_INFLATION, n))


def median_interval(samples: Sequence[float], independent: bool = False) -> MedianInterval:
    """The 95% interval of the median of `samples` (in temporal order).

    `independent` treats the samples as independent (tau = 1): the textbook interval, kept to show
    what ignoring the correlation costs.
    """
    n = len(samples)
    if n == 0:
        return MedianInterval(None, None, None, 0, None)
    values = np.asarray(samples, dtype=float)
    ordered = np.sort(values)
    median = float(ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    tau = 1.0 if independent else variance_inflation(values)
    low_rank = math.floor(n / 2 + 0.5 - Z * math.sqrt(n * tau) / 2)  # 1-based
    if low_rank < 1:
        return MedianInterval(median, None, None, n, n / tau)
    return MedianInterval(median, float(ordered[low_rank - 1]), float(ordered[n - low_rank]), n, n / tau)


def interval_figures(column: str, n_eff_column: str, samples: Sequence[float]) -> tuple[dict, str | None]:
    """The row's `<column>_ci95_low/_high` and `n_eff_column` for `samples`, and why it is withheld."""
    interval = median_interval(samples)
    figures = {f"{column}_ci95_low": interval.low, f"{column}_ci95_high": interval.high, n_eff_column: interval.n_eff}
    return figures, interval.withheld_reason(column)


# ---------------------------------------------------------------- when a phase has run enough


@dataclass
class Repetition:
    """Decides after each run whether a phase stops: never before `min_runs`; then at the first of
    the interval's relative half-width <= `target_rel` (from MIN_RUNS_FOR_TARGET runs on), `max_s`
    seconds since the phase began (on `clock`), or `max_runs` runs. Checked after every run: the
    interval costs a sort and an FFT of the ranks."""

    min_runs: int
    max_runs: int
    max_s: float
    target_rel: float
    clock: Callable[[], float] = time.perf_counter

    def __post_init__(self):
        self.started = self.clock()

    @classmethod
    def of(cls, measurement, clock: Callable[[], float] = time.perf_counter) -> Repetition:
        """The rule a cell's MeasurementSettings set, its clock started now."""
        m = measurement
        return cls(m.n_runs, m.max_runs, m.max_measure_s, m.ci_target_rel, clock)

    def stop_reason(self, samples: Sequence[float], runs: int | None = None) -> StopReason | None:
        """None to go on. `runs` counts the runs made when some gave no sample (default len(samples))."""
        runs = len(samples) if runs is None else runs
        if runs < self.min_runs:
            return None
        if runs >= MIN_RUNS_FOR_TARGET:
            width = median_interval(samples).relative_half_width
            if width is not None and width <= self.target_rel:
                return StopReason.CI_TARGET
        if self.clock() - self.started >= self.max_s:
            return StopReason.TIME_CAP
        if runs >= self.max_runs:
            return StopReason.MAX_RUNS
        return None
