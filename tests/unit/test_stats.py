import pytest

from deploybench.stats import coefficient_of_variation, median, percentile


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
