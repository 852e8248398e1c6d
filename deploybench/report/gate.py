"""The gate every stated difference goes through: two cells' figures, each with its 95% interval.

A difference is claimed only where both figures have a 95% interval, neither comes from a host-paced cell (for a
figure the decode pace moves: pacing.py) and the two intervals do not overlap; it is then stated as the range the
interval ends bound. Findings (findings.py) and the change columns of the tables (builder.py) both read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploybench.report import captions, pacing
from deploybench.report import quantities as Q
from deploybench.report.data import machine
from deploybench.report.fmt import fmt_num, fmt_pct, fmt_ratio, pct_change


@dataclass(frozen=True)
class Estimate:
    """One cell's figure with its 95% interval (low and high None where it has none; `why` says why)."""

    value: float
    low: float | None = None
    high: float | None = None
    machine: str = ""
    why: str | None = None
    runs: tuple[float, float, int] | None = None  # (lowest, highest, n) over the runs, where no interval exists
    paced: bool = False  # a figure the decode pace moves, from a host-paced cell (pacing.py)


def estimate(r: dict | None, name: str) -> Estimate | None:
    m = Q.get(name)
    if (v := Q.figure(m, r)) is None:
        return None
    ends = Q.interval(m, r)
    why, runs = (None, None) if ends else (Q.no_interval(m, r), Q.run_range(m, r))
    paced = name in pacing.PACED and pacing.host_paced(r)
    return Estimate(v, *(ends or (None, None)), machine=machine(r), why=why, runs=runs, paced=paced)


@dataclass(frozen=True)
class Verdict:
    claimed: bool
    words: str  # "between 38.0% and 41.0% lower", or why no difference is claimed
    low: float | None = None  # the bounds of a / b that the interval ends give
    high: float | None = None
    reason: str = "resolved"  # resolved | host | no_interval | overlap | single | deterministic


def _pct(p: float) -> str:
    return fmt_pct(p, decimals=2 if p < 1 else 1, signed=False)


def _pm(e: Estimate) -> str:
    return "±" + _pct((e.high - e.low) / 2 / abs(e.value) * 100)


def resolved(a: Estimate, b: Estimate) -> Verdict:
    """Does a differ from b? Only where both have a 95% interval, neither is host-paced and the two intervals do
    not overlap; the difference is then a_low / b_high to a_high / b_low. Otherwise no difference is claimed,
    saying why (host-paced runs, no interval, or the precision at which none was resolved). Cells from different
    machines are marked so either way."""
    across = f"; measured on different machines ({a.machine}, {b.machine})" if a.machine != b.machine else ""
    if a.paced or b.paced:
        return Verdict(False, f"not compared: host-paced runs (their figures measure the host){across}", reason="host")
    if a.low is None or b.low is None:
        words = f"no difference claimed ({a.why if a.low is None else b.why}){_runs_apart(a, b)}{across}"
        return Verdict(False, words, reason="no_interval")
    if a.low <= b.high and b.low <= a.high:
        return Verdict(False, f"no difference resolved at {_pm(a)} and {_pm(b)}{across}", reason="overlap")
    lo, hi = a.low / b.high, a.high / b.low
    if hi < 1:
        words = f"between {_pct(100 - hi * 100)} and {_pct(100 - lo * 100)} lower"
    elif hi < 2:
        words = f"between {_pct(lo * 100 - 100)} and {_pct(hi * 100 - 100)} higher"
    else:
        words = f"between {fmt_ratio(lo)} and {fmt_ratio(hi)} as high"
    return Verdict(True, words + across, lo, hi)


def _runs_apart(a: Estimate, b: Estimate) -> str:
    """Where an interval is missing but every run of one cell lies beyond every run of the other (or beyond the
    other's interval), say so with the ratio those ranges bound: an observation beside 'no difference claimed'."""
    ra, rb = _spread(a), _spread(b)
    if ra is None or rb is None or (ra[0] <= rb[1] and rb[0] <= ra[1]):
        return ""
    lo, hi = ra[0] / rb[1], ra[1] / rb[0]
    if hi >= 2 or lo <= 0.5:
        ratio = f"{fmt_ratio(lo)} to {fmt_ratio(hi)} as high as"
    elif lo > 1:
        ratio = f"{_pct(lo * 100 - 100)} to {_pct(hi * 100 - 100)} higher than"
    else:
        ratio = f"{_pct(100 - hi * 100)} to {_pct(100 - lo * 100)} lower than"
    subject = "its 95% interval" if ra[2] else "every run"
    other = "the other's 95% interval" if rb[2] else "every run of the other"
    return captions.text("findings", "runs_apart", subject=subject, ratio=ratio, object=other)


def _spread(e: Estimate) -> tuple[float, float, bool] | None:
    """(low, high, is an interval): the figure's 95% interval where it has one, else its runs' range."""
    if e.low is not None:
        return e.low, e.high, True
    return None if e.runs is None else (e.runs[0], e.runs[1], False)


# Figures that are one deterministic measurement (the same bytes every run): compared as they are.
DETERMINISTIC = ("peak_allocated_bytes", "kv_cache_bytes")


def deterministic(a: float, b: float, m) -> Verdict:
    """'+2.54 GB (+3.8%)': a byte count against another, no interval needed."""
    gap, unit = a - b, Q.unit(m)
    pct = fmt_pct(pct_change(a, b))
    words = "the same" if abs(gap) < 0.005 * abs(b) else f"{'+' if gap >= 0 else ''}{fmt_num(gap, 3)} {unit} ({pct})"
    return Verdict(True, words.replace("-", "−"), reason="deterministic")


def change(a: Estimate | None, b: Estimate | None, name: str) -> tuple[str, float | None, str | None]:
    """A change column's cell, (text, value, note), through the gate: the range the intervals bound where they
    resolve it, 'n.r.' (not resolved, ‡ where host-paced) where they do not; a deterministic figure, or one
    measurement per cell that no host paced, as it is."""
    if a is None or b is None:
        return "—", None, None
    p = pct_change(a.value, b.value)
    if name in DETERMINISTIC or (name not in Q.INTERVAL_OF and not (a.paced or b.paced)):
        return fmt_pct(p), p, None if name in DETERMINISTIC else "one measurement per cell, without an interval"
    if name not in Q.INTERVAL_OF:
        return "n.r. ‡", p, "not compared: host-paced runs (their figures measure the host)"
    v = resolved(a, b)
    if not v.claimed:
        return "n.r. ‡" if a.paced or b.paced else "n.r.", p, v.words
    return f"{fmt_pct((v.low - 1) * 100)} to {fmt_pct((v.high - 1) * 100)}", p, v.words
