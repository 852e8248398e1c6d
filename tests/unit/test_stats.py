import pytest

from deploybench.stats import coefficient_of_variation, median, min_samples, percentile, supported_percentiles


def test_percentiles_against_hand_computed_values():
    samples = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    # type 7: position (n-1)*q = 9*0.95 = 8.55 -> 90 + 0.55*(100-90) = 95.5, not the maximum
    assert percentile(samples, 95) == pytest.approx(95.5)
    assert percentile(samples, 99) == pytest.approx(99.1)
    assert median(samples) == pytest.approx(55.0)
    assert percentile(samples, 0) == 10.0 and percentile(samples, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order does not matter
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(samples, 101)


def test_coefficient_of_variation():
    assert coefficient_of_variation([1.0]) is None
    assert coefficient_of_variation([2.0, 4.0]) == pytest.approx(1.4142135623730951 / 3)


def test_a_tail_percentile_needs_one_expected_sample_beyond_it():
    assert (min_samples(50), min_samples(90), min_samples(95), min_samples(99)) == (1, 10, 20, 100)
    for q in (95, 99):
        # One sample short of the rule, type 7 puts the q-th percentile between the two largest samples.
        n = min_samples(q) - 1
        assert (n - 1) * q / 100 >= n - 2
    with pytest.raises(ValueError):
        min_samples(100)


def test_percentiles_n_does_not_support_are_null_with_the_reason():
    runs = [float(i) for i in range(19)]
    figures, reason = supported_percentiles(runs, "e2e_ms_p{q}", (50, 95, 99), "runs")
    assert figures == {"e2e_ms_p50": 9.0, "e2e_ms_p95": None, "e2e_ms_p99": None}
    assert reason == "e2e_ms_p95, e2e_ms_p99: 19 runs (p95 needs 20, p99 needs 100)"
    figures, reason = supported_percentiles([*runs, 19.0], "e2e_ms_p{q}", (50, 95, 99), "runs")
    assert figures["e2e_ms_p95"] == pytest.approx(percentile([*runs, 19.0], 95)) and figures["e2e_ms_p99"] is None
    assert reason == "e2e_ms_p99: 20 runs (p99 needs 100)"
    steps = [1.0] * 100
    assert supported_percentiles(steps, "itl_ms_p{q}", (50, 95, 99), "pooled steps") == (
        {"itl_ms_p50": 1.0, "itl_ms_p95": 1.0, "itl_ms_p99": 1.0},
        None,
    )
    assert supported_percentiles([], "x_p{q}", (50, 95), "runs") == ({"x_p50": None, "x_p95": None}, None)
