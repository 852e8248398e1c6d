"""The SLO search on a synthetic latency curve: p99 TTFT = 100 + 10 x load ms, target 500 -> 40."""

import asyncio
import math

import pytest

from deploybench.engines.serving.slo import search_concurrency, search_loads, search_rate


def curve(target_ms=500.0):
    calls = []

    def measure(load):
        calls.append(load)
        ttft = 100.0 + 10.0 * load
        return {
            "ttft_ms_p99": ttft,
            "slo_met": ttft <= target_ms,
            "slo_miss_reason": None if ttft <= target_ms else "slow",
        }

    return measure, calls


def test_concurrency_search_doubles_then_bisects_to_the_largest_that_meets():
    measure, calls = curve()
    found = asyncio.run(search_concurrency(measure))
    assert (found.best, found.missed, found.reason) == (40, 41, "40 meets the SLO, 41 misses it")
    assert calls == [1, 2, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41]
    assert [p.meets for p in found.probes] == [c <= 40 for c in calls]
    assert found.probes[6].reason == "slow" and found.probes[6].figures["ttft_ms_p99"] == 740.0


def test_async_measure_and_a_bare_boolean_verdict():
    async def measure(load):
        await asyncio.sleep(0)
        return 100.0 + 10.0 * load

    found = asyncio.run(search_concurrency(measure, meets=lambda ttft: ttft <= 500.0))
    assert found.best == 40 and found.probes[-1].reason is None


def test_search_bounds_none_meets_the_top_meets_and_the_probe_budget():
    measure, calls = curve(target_ms=50.0)
    found = asyncio.run(search_concurrency(measure))
    assert found.best is None and found.missed == 1 and calls == [1]
    assert found.reason == "the smallest load, 1, misses the SLO"
    measure, calls = curve()
    found = asyncio.run(search_concurrency(measure, max_concurrency=30))
    assert (found.best, found.missed) == (30, None) and calls == [1, 2, 4, 8, 16, 30]
    measure, calls = curve()
    found = asyncio.run(search_concurrency(measure, max_probes=5))
    assert (found.best, len(calls)) == (16, 5) and "probe budget of 5 spent while doubling" in found.reason
    measure, calls = curve()
    found = asyncio.run(search_concurrency(measure, max_probes=9))
    assert (found.best, found.missed) == (40, 48) and found.reason.endswith("the answer lies in [40, 48)")
    with pytest.raises(ValueError):
        asyncio.run(search_concurrency(measure, start=0))


def test_rate_search_to_a_relative_tolerance():
    measure, calls = curve()
    found = asyncio.run(search_rate(measure, start=0.5, rel_tol=0.01, max_probes=30))
    assert found.best <= 40.0 < found.missed and found.missed - found.best <= 0.01 * found.missed
    assert len(calls) == len(set(calls)) <= 30


def test_search_over_a_list_of_loads():
    measure, calls = curve()
    loads = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    found = asyncio.run(search_loads(measure, loads))
    assert (found.best, found.missed) == (32, 64)
    assert len(calls) <= 2 * math.ceil(math.log2(len(loads))) + 1
    with pytest.raises(ValueError):
        asyncio.run(search_loads(measure, [4, 2]))
