"""Formatting: numbers and text as the report prints them; never "nan" or "None".

A missing figure prints as an em dash; negative numbers use the minus sign (U+2212).
"""

from __future__ import annotations

import math

from deploybench.results.values import finite_or_none

DASH = "—"
MINUS = "−"


def num(x) -> float | None:
    """Any scalar -> finite float, else None (missing, text, inf: deploybench.results.values)."""
    return finite_or_none(x)


def to_int(x) -> int | None:
    return None if (v := num(x)) is None else int(round(v))


def fmt_num(x, sig: int = 4) -> str:
    """Significant digits without scientific notation for ordinary magnitudes; thousands commas."""
    v = num(x)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    decimals = max(0, sig - 1 - math.floor(math.log10(abs(v))))
    text = f"{v:.{sig - 1}e}" if decimals > 8 else f"{v:,.{decimals}f}"
    return text.replace("-", MINUS)


def fmt_int(x) -> str:
    return DASH if (v := to_int(x)) is None else f"{v:,d}".replace("-", MINUS)


def fmt_pct(p, decimals: int = 1, signed: bool = True) -> str:
    v = num(p)
    if v is None:
        return DASH
    if round(v, decimals) == 0:
        return f"{0:.{decimals}f}%"
    return (f"{v:+.{decimals}f}%" if signed else f"{v:.{decimals}f}%").replace("-", MINUS)


def fmt_ratio(r) -> str:
    return DASH if (v := num(r)) is None else f"{fmt_num(v, 3)}×"


def fmt_params(n) -> str:
    """A parameter count for prose: 3.61 B, 218 M, 2.56 k (B = 10^9, M = 10^6, k = 10^3)."""
    if (v := num(n)) is None:
        return DASH
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{fmt_num(v / div, 3)} {suffix}"
    return fmt_int(v)


def pct_change(new, old) -> float | None:
    """(new / old - 1) x 100, None when either is missing or old is zero."""
    return None if (r := ratio(new, old)) is None else (r - 1.0) * 100.0


def ratio(a, b) -> float | None:
    x, y = num(a), num(b)
    return None if x is None or not y else x / y  # not y: None or zero


def short(text, limit: int = 90) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def join(values, fmt=str) -> str | None:
    """'a, b, c' of the formatted values, None when there are none (or one that prints empty)."""
    return ", ".join(map(fmt, values)) or None


def span(values: list[float], unit: str) -> str | None:
    """'3.00 to 3.20 s', or one value when they all print alike."""
    if not values:
        return None
    lo, hi = fmt_num(min(values), 3), fmt_num(max(values), 3)
    return f"{lo} {unit}" if lo == hi else f"{lo} to {hi} {unit}"
