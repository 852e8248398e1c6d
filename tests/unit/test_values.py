"""The one missing-value rule (deploybench.results.values) on every kind of value a table holds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from deploybench.results.values import finite_or_none, is_missing, number_or_none, numbers

MISSING = [None, float("nan"), math.nan, np.nan, np.float64("nan"), np.float32("nan"), pd.NA, pd.NaT]
TEXT = ["", "nan", "NaN", "None", "1.5", "0", " 2 ", b"3", "inf"]
NUMBERS = [(0, 0.0), (3, 3.0), (-2.5, -2.5), (np.int64(7), 7.0), (np.float32(0.5), 0.5), (True, 1.0)]


@pytest.mark.parametrize("x", MISSING, ids=repr)
def test_missing_values_are_missing_and_no_number(x):
    assert is_missing(x)
    assert number_or_none(x) is None and finite_or_none(x) is None


@pytest.mark.parametrize("x", TEXT, ids=repr)
def test_text_is_a_value_but_never_a_number_even_when_it_parses(x):
    assert not is_missing(x)
    assert number_or_none(x) is None and finite_or_none(x) is None


@pytest.mark.parametrize(("x", "expected"), NUMBERS, ids=repr)
def test_numbers_are_floats(x, expected):
    assert not is_missing(x)
    assert number_or_none(x) == expected and type(number_or_none(x)) is float
    assert finite_or_none(x) == expected


@pytest.mark.parametrize("x", [math.inf, -math.inf, np.float64("inf")], ids=repr)
def test_infinity_is_a_number_but_not_a_finite_figure(x):
    assert not is_missing(x)
    assert number_or_none(x) == x
    assert finite_or_none(x) is None


@pytest.mark.parametrize("x", [[1.0, 2.0], np.array([1.0, np.nan]), (), {"a": 1}, object()], ids=repr)
def test_containers_and_objects_are_neither_missing_nor_numbers(x):
    assert not is_missing(x)
    assert number_or_none(x) is None


def test_a_column_reads_as_floats_with_nan_where_no_number():
    column = pd.Series([1, None, "2", np.nan, pd.NA, 3.5, math.inf], dtype="object")
    np.testing.assert_array_equal(numbers(column), [1.0, np.nan, np.nan, np.nan, np.nan, 3.5, math.inf])
    np.testing.assert_array_equal(numbers(pd.Series([1, None], dtype="Int64")), [1.0, np.nan])
    assert numbers([]).dtype == np.float64
