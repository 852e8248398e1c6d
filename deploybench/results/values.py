"""What counts as a missing value, and what counts as a number, declared once.

Missing: None, pandas' NA and NaT, and NaN (a Python, numpy or pandas float). Text is a value, never a
number: "", "nan" and "1.5" are not missing, and none of them is a figure (a column of numbers holds
numbers; text in it is a mistake to show, not a figure to parse). Infinity is a number, not missing;
`finite_or_none` is for the places that print or divide figures.
Every step that reads a result value (TPOT check, APE, importer, schema, report) asks these.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def is_missing(x) -> bool:
    """None, pd.NA, pd.NaT or a NaN float; False for everything else (text, lists and arrays included)."""
    if x is None or x is pd.NA or x is pd.NaT:
        return True
    return isinstance(x, (float, np.floating)) and math.isnan(x)


def number_or_none(x) -> float | None:
    """x as a float; None where it is missing, text (even text that parses), or not a scalar number."""
    if isinstance(x, (str, bytes)) or is_missing(x):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def finite_or_none(x) -> float | None:
    """number_or_none, with ±inf also None: a figure that can be printed or divided."""
    v = number_or_none(x)
    return v if v is not None and math.isfinite(v) else None


def numbers(values) -> np.ndarray:
    """Values -> float64 array, NaN wherever number_or_none gives None."""
    return np.array([np.nan if (v := number_or_none(x)) is None else v for x in values], dtype="float64")
