"""The largest load that meets the SLO: doubling, then bisection, a bounded number of probes.

`measure(load)` runs one load point (sync or async) and returns its figures; `meets(figures)` says
whether they meet the SLO (default: the `slo_met` and `slo_miss_reason` columns of
`metrics.serving_figures`). Latency is assumed to grow with the load: the search probes the start, doubles
while the load meets, then bisects between the last load that met and the first that missed, to
adjacent integers (concurrency, or positions in a given list of loads) or to a relative tolerance
(request rate). A load point the caller judged invalid (the client lagged) should not count as meeting.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    load: float
    meets: bool
    reason: str | None  # why it missed
    figures: Any


@dataclass(frozen=True)
class SloSearch:
    best: float | None  # the largest load probed that met (None: none did)
    missed: float | None  # the smallest load probed above `best` that missed (None: none did)
    probes: tuple[Probe, ...]
    reason: str


def slo_met(figures: dict) -> tuple[bool, str | None]:
    return bool(figures["slo_met"]), figures.get("slo_miss_reason")


def _identity(x):
    return x


async def _search(measure, meets, start, top, up, middle, max_probes: int, load=_identity) -> SloSearch:
    """Search positions x from `start` to `top` (`load(x)` the load at x: the identity, or a list's item)."""
    if max_probes < 1:
        raise ValueError("max_probes must be at least 1")
    probes: list[Probe] = []

    async def probe(x) -> bool:
        figures = measure(load(x))
        if inspect.isawaitable(figures):
            figures = await figures
        verdict = meets(figures)
        ok, reason = verdict if isinstance(verdict, tuple) else (verdict, None)
        probes.append(Probe(load(x), bool(ok), reason, figures))
        return bool(ok)

    def result(best, missed, reason):
        return SloSearch(
            None if best is None else load(best), None if missed is None else load(missed), tuple(probes), reason
        )

    if not await probe(start):
        return result(None, start, f"the smallest load, {load(start):g}, misses the SLO")
    low, high = start, None
    while high is None:
        if low >= top:
            return result(low, None, f"the largest load allowed, {load(top):g}, meets the SLO")
        if len(probes) >= max_probes:
            return result(low, None, f"probe budget of {max_probes} spent while doubling: {load(low):g} meets")
        candidate = min(up(low), top)
        if await probe(candidate):
            low = candidate
        else:
            high = candidate
    while (mid := middle(low, high)) is not None:
        if len(probes) >= max_probes:
            return result(
                low, high, f"probe budget of {max_probes} spent: the answer lies in [{load(low):g}, {load(high):g})"
            )
        if await probe(mid):
            low = mid
        else:
            high = mid
    return result(low, high, f"{load(low):g} meets the SLO, {load(high):g} misses it")


def _integer_middle(low: int, high: int) -> int | None:
    return (low + high) // 2 if high - low > 1 else None


async def search_concurrency(
    measure: Callable, meets: Callable = slo_met, start: int = 1, max_concurrency: int = 1024, max_probes: int = 16
) -> SloSearch:
    """The largest integer concurrency in [start, max_concurrency] that meets: start, 2 start, 4 start, ...,
    then bisection to adjacent integers (about 2 log2(answer / start) probes)."""
    if start < 1:
        raise ValueError(f"start must be at least 1, got {start}")
    return await _search(measure, meets, start, max_concurrency, lambda c: 2 * c, _integer_middle, max_probes)


async def search_rate(
    measure: Callable,
    meets: Callable = slo_met,
    start: float = 1.0,
    max_rate: float = 1024.0,
    rel_tol: float = 0.05,
    max_probes: int = 16,
) -> SloSearch:
    """The largest request rate (req/s) in [start, max_rate] that meets, to within rel_tol of the
    first rate that misses."""
    if start <= 0 or rel_tol <= 0:
        raise ValueError("start and rel_tol must be positive")
    return await _search(
        measure,
        meets,
        start,
        max_rate,
        lambda r: 2 * r,
        lambda lo, hi: (lo + hi) / 2 if hi - lo > rel_tol * hi else None,
        max_probes,
    )


async def search_loads(
    measure: Callable, loads: Sequence[float], meets: Callable = slo_met, max_probes: int = 16
) -> SloSearch:
    """The largest of `loads` (in increasing order) that meets, by doubling and bisecting positions."""
    if not loads or list(loads) != sorted(loads):
        raise ValueError("loads must be a non-empty increasing sequence")
    return await _search(
        measure, meets, 0, len(loads) - 1, lambda i: 2 * i + 1, _integer_middle, max_probes, load=loads.__getitem__
    )
