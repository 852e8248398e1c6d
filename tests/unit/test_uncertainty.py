"""The interval of the median, proved on series whose median is known, and the stopping rule.

Coverage is counted over seeded simulations, a withheld interval counting as a miss. The series are
what runs of one cell look like: independent (normal, and right-skewed like latencies), AR(1)
correlated, and a two-regime mixture whose slow spells span several consecutive runs.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from deploybench.engines.timing import RunTiming
from deploybench.enums import StopReason
from deploybench.instruments import nvml
from deploybench.measure import phases as measure
from deploybench.measure import uncertainty
from deploybench.measure.uncertainty import (
    MIN_RUNS_FOR_TARGET,
    Repetition,
    average_ranks,
    median_interval,
    variance_inflation,
)
from deploybench.results import metrics
from tests.fixtures.engines import ScriptedEngine
from tests.unit.test_measure import make_cell, random_model

SIMULATIONS = 300
RUNS = 60


def ar1(rng: np.random.Generator, rho: float, shape=(SIMULATIONS, RUNS)) -> np.ndarray:
    """Stationary Gaussian AR(1) series (median 0)."""
    noise = rng.standard_normal(shape)
    x = np.empty_like(noise)
    x[:, 0] = noise[:, 0]
    for t in range(1, shape[1]):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho * rho) * noise[:, t]
    return x


# Two regimes, as eager decode on a shared host: fast N(100, 2) tok/s, slow N(80, 2); a fast spell lasts
# 20 runs on average (stay 0.95), a slow one 5 (stay 0.8), so 20% of runs are slow.
FAST, SLOW, STAY_FAST, STAY_SLOW = (100.0, 2.0), (80.0, 2.0), 0.95, 0.8


def two_regimes(rng: np.random.Generator) -> np.ndarray:
    slow_share = (1 - STAY_FAST) / ((1 - STAY_FAST) + (1 - STAY_SLOW))
    slow = np.empty((SIMULATIONS, RUNS), dtype=bool)
    slow[:, 0] = rng.random(SIMULATIONS) < slow_share
    stay = rng.random((SIMULATIONS, RUNS))
    for t in range(1, RUNS):
        slow[:, t] = np.where(
            stay[:, t] < np.where(slow[:, t - 1], STAY_SLOW, STAY_FAST), slow[:, t - 1], ~slow[:, t - 1]
        )
    return np.where(slow, rng.normal(*SLOW, slow.shape), rng.normal(*FAST, slow.shape))


def two_regime_median() -> float:
    """The stationary mixture's median, by bisection on its CDF."""
    slow_share = (1 - STAY_FAST) / ((1 - STAY_FAST) + (1 - STAY_SLOW))

    def cdf(m):
        return (1 - slow_share) * NormalDist(*FAST).cdf(m) + slow_share * NormalDist(*SLOW).cdf(m)

    low, high = 50.0, 150.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < 0.5 else (low, mid)
    return (low + high) / 2


SERIES = {  # name -> (simulated series, their true median)
    "independent normal": (lambda rng: rng.standard_normal((SIMULATIONS, RUNS)), 0.0),
    "independent lognormal": (lambda rng: np.exp(rng.standard_normal((SIMULATIONS, RUNS))), 1.0),
    "AR(1) rho 0.6": (lambda rng: ar1(rng, 0.6), 0.0),
    "two regimes": (two_regimes, two_regime_median()),
}


def coverage(name: str, independent: bool = False) -> float:
    make, truth = SERIES[name]
    series = make(np.random.default_rng(2026))
    hits = 0
    for x in series:
        interval = median_interval(list(x), independent=independent)
        hits += interval.low is not None and interval.low <= truth <= interval.high
    return hits / SIMULATIONS


@pytest.mark.parametrize("name", sorted(SERIES))
def test_the_interval_covers_the_true_median_about_95_percent(name):
    assert 0.90 <= coverage(name) <= 0.99, coverage(name)


@pytest.mark.parametrize("name", ["AR(1) rho 0.6", "two regimes"])
def test_an_interval_that_assumes_independent_runs_undercovers_correlated_ones(name):
    naive, honest = coverage(name, independent=True), coverage(name)
    assert naive < 0.88 and honest - naive > 0.08, (naive, honest)


def test_independent_runs_need_no_correction():
    assert 0.90 <= coverage("independent normal", independent=True) <= 0.99


def test_small_samples_get_the_exact_ranks_or_no_interval():
    # Independent: min..max of 6 covers 1 - 2/64 = 96.9%; of 5 only 93.75%, so there is no 95% interval.
    six = median_interval([3.0, 1.0, 4.0, 6.0, 2.0, 5.0], independent=True)
    assert (six.low, six.high, six.median) == (1.0, 6.0, 3.5)
    five = median_interval([3.0, 1.0, 4.0, 5.0, 2.0], independent=True)
    assert five.low is None and five.high is None and five.median == 3.0
    assert "admit no 95% interval" in five.withheld_reason("ttft_ms")
    assert median_interval([]).withheld_reason("x") == "x: no samples"


def test_a_trend_is_worth_few_independent_runs():
    trend = [float(i) for i in range(40)]  # a slow drift across the runs: strongly autocorrelated
    shuffled = list(np.random.default_rng(0).permutation(trend))
    assert variance_inflation(trend) > 10 * variance_inflation(shuffled)
    assert median_interval(trend).low is None
    assert median_interval(shuffled).low is not None


def test_n_runs_are_worth_at_least_one():
    # The count below the median lies in [0, n]: its variance is at most n^2/4, so tau <= n. The
    # default run's 7 top_p decode runs (a drift upward) were once reported as worth 0.5 runs.
    drift = [214.1, 197.7, 208.8, 218.3, 233.2, 229.8, 230.3]
    assert variance_inflation(drift) == len(drift)
    for n in range(3, 40):
        series = [float(i) for i in range(n)]
        assert 1.0 <= variance_inflation(series) <= n
        assert median_interval(series).n_eff >= 1.0
    assert median_interval(drift).low is None  # as before: no 95% interval from these


def test_equal_samples_tie_and_give_a_zero_width_interval():
    assert list(average_ranks([2.0, 1.0, 2.0, 3.0])) == [2.5, 1.0, 2.5, 4.0]
    interval = median_interval([5.0] * 12)
    assert interval.low == interval.high == interval.median == 5.0
    assert interval.relative_half_width == 0.0


def test_the_interval_is_deterministic_and_brackets_the_median():
    x = list(np.random.default_rng(7).lognormal(size=50))
    first, again = median_interval(x), median_interval(x)
    assert first == again
    assert first.low <= first.median <= first.high


def test_the_stop_reasons_in_the_catalogue_are_the_rule_s():
    for column in ("ttft_stop_reason", "decode_stop_reason"):
        assert " | ".join(StopReason) in metrics.get(column).definition


# ---------------------------------------------------------------- the stopping rule


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rule(clock, min_runs=5, max_runs=200, max_s=60.0, target_rel=0.02) -> Repetition:
    return Repetition(min_runs, max_runs, max_s, target_rel, clock)


def test_never_fewer_than_the_minimum_even_past_the_time_cap():
    clock = FakeClock()
    repetition = rule(clock, min_runs=5, max_s=1.0)
    clock.now = 100.0
    assert repetition.stop_reason([1.0] * 4) is None
    assert repetition.stop_reason([1.0, 2.0, 3.0, 4.0, 5.0]) is StopReason.TIME_CAP


def test_the_target_is_judged_from_20_runs_on():
    repetition = rule(FakeClock(), min_runs=5)
    steady = [100.0] * 30  # an interval of zero width from 6 runs on
    assert [repetition.stop_reason(steady[:k]) for k in range(5, MIN_RUNS_FOR_TARGET)] == [None] * 15
    assert repetition.stop_reason(steady[:MIN_RUNS_FOR_TARGET]) is StopReason.CI_TARGET


def sequential_coverage(series: np.ndarray, truth: float) -> tuple[float, float]:
    """Coverage of the interval a phase ends with when the rule (n_runs 5, target 2%) stops it, and the
    median number of runs it took."""
    hits, runs = 0, []
    for x in series:
        repetition = rule(FakeClock(), min_runs=5, max_runs=len(x), target_rel=0.02)
        k = next(k for k in range(1, len(x) + 1) if repetition.stop_reason(list(x[:k])))
        interval = median_interval(list(x[:k]))
        hits += interval.low is not None and interval.low <= truth <= interval.high
        runs.append(k)
    return hits / len(series), float(np.median(runs))


def test_stopping_at_the_target_keeps_the_interval_honest(monkeypatch):
    """Stopping when the interval first looks narrow selects lucky spells: judged from 20 runs on, the
    final intervals of AR(1) series (rho 0.6, CV 3%) still cover about 95%; from 5 runs on they would not."""
    series = 100 + 3 * ar1(np.random.default_rng(11), 0.6, shape=(200, 200))
    honest, runs = sequential_coverage(series, 100.0)
    assert 0.90 <= honest <= 0.99 and runs >= MIN_RUNS_FOR_TARGET, (honest, runs)
    monkeypatch.setattr(uncertainty, "MIN_RUNS_FOR_TARGET", 5)
    hasty, hasty_runs = sequential_coverage(series, 100.0)
    assert hasty < honest - 0.05 and hasty_runs < runs, (hasty, honest)


def test_max_runs_stops_a_phase_that_never_narrows():
    repetition = rule(FakeClock(), min_runs=2, max_runs=4)
    assert repetition.stop_reason([1.0, 9.0, 1.0]) is None
    assert repetition.stop_reason([1.0, 9.0, 1.0, 9.0]) is StopReason.MAX_RUNS


# Per-run decode tok/s: ten noisy runs (80 and 100 alternating), then steady ones near 100.
NOISY = [80.0 if i % 2 else 100.0 for i in range(10)]
STEADY = [100.0 + 0.01 * ((i * 7) % 5 - 2) for i in range(190)]


class FakeRunner:
    """Runs whose measured ones have the decode tok/s of `speeds`, in order, and each take
    `run_s` of the fake clock; warm-up runs (clock=False) take no time and consume nothing."""

    def __init__(self, speeds, clock: FakeClock, run_s=1.0, gen=5):
        self.speeds, self.clock, self.run_s, self.gen, self.measured = list(speeds), clock, run_s, gen, 0

    def __call__(self, new_tokens, i, clock):
        cache = type("Out", (), {"past_key_values": type("Cache", (), {"layers": []})()})()
        if not clock:
            return RunTiming(e2e_s=self.speeds[0] / 1000, new_tokens=new_tokens), cache
        speed = self.speeds[self.measured]
        self.measured += 1
        self.clock.now += self.run_s
        times = [k / speed for k in range(new_tokens)]  # (gen - 1) / (t_last - t_first) = speed
        return RunTiming(e2e_s=self.run_s, token_times=times, new_tokens=new_tokens), cache


def first_within(speeds, target_rel, min_runs) -> int:
    """The first run count from min_runs at which the interval of the speeds so far is within target."""
    for k in range(min_runs, len(speeds) + 1):
        width = median_interval(speeds[:k]).relative_half_width
        if width is not None and width <= target_rel:
            return k
    raise AssertionError("never within target")


def decode_phase(speeds, **measurement):
    cell = make_cell(random_model("qwen3"), context=8, gen=5, **measurement)
    clock = FakeClock()
    engine = ScriptedEngine(FakeRunner(speeds, clock, gen=cell.gen), cell)
    return measure._decode_runs(engine, cell, nvml.open_device("cpu"), clock=clock)


def test_the_decode_phase_stops_exactly_when_the_interval_narrows_below_the_target():
    speeds = NOISY + STEADY
    expected = first_within(speeds, 0.02, min_runs=MIN_RUNS_FOR_TARGET)  # n_runs 5 < 20
    assert expected > len(NOISY)  # the noisy start alone never reaches 2%
    width_before = median_interval(speeds[: expected - 1]).relative_half_width
    assert width_before is None or width_before > 0.02
    decode = decode_phase(speeds, n_runs=5, ci_target_rel=0.02, max_measure_s=1000.0, max_runs=200)
    assert len(decode.timings) == expected and decode.stop_reason is StopReason.CI_TARGET
    assert [t.decode_tps for t in decode.timings] == pytest.approx(speeds[:expected])


def test_the_decode_phase_stops_at_the_time_cap_when_the_interval_stays_wide():
    speeds = NOISY * 20  # never narrows to 2%
    decode = decode_phase(speeds, n_runs=5, ci_target_rel=0.02, max_measure_s=7.5, max_runs=200)
    assert len(decode.timings) == 8 and decode.stop_reason is StopReason.TIME_CAP  # 8 fake seconds >= 7.5


def test_the_decode_phase_stops_at_max_runs():
    decode = decode_phase(NOISY * 20, n_runs=5, ci_target_rel=0.02, max_measure_s=1000.0, max_runs=12)
    assert len(decode.timings) == 12 and decode.stop_reason is StopReason.MAX_RUNS


def test_the_ttft_phase_stops_when_its_interval_narrows():
    cell = make_cell(random_model("qwen3"), context=8, gen=5, n_runs=5, max_measure_s=1000.0)
    fake = FakeClock()
    ttft_s = [0.010 if i % 2 else 0.012 for i in range(10)] + [0.011] * 50

    def run(new_tokens, i, clock):
        fake.now += ttft_s[i]
        return RunTiming(e2e_s=ttft_s[i], new_tokens=new_tokens), None

    prefill = measure._prefill_runs(ScriptedEngine(run, cell), cell, nvml.open_device("cpu"), clock=fake)
    expected = first_within([s * 1000 for s in ttft_s], 0.02, min_runs=MIN_RUNS_FOR_TARGET)
    assert len(prefill.ttft_ms) == expected and prefill.stop_reason is StopReason.CI_TARGET
