"""The server's own counters and gauges from its Prometheus `/metrics` text, sampled during a run.

vLLM renamed some metrics across versions: each quantity lists every spelling known, the first found
wins and the snapshot records which one was read. Across label sets (engines, models) counters and
request gauges add up; the KV-cache usage (a fraction, 0..1, despite "perc") is the largest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from deploybench.stats import mean

SPELLINGS: dict[str, tuple[str, ...]] = {
    "generation_tokens": ("vllm:generation_tokens_total", "vllm:generation_tokens"),
    "prompt_tokens": ("vllm:prompt_tokens_total", "vllm:prompt_tokens"),
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "preemptions": ("vllm:num_preemptions_total", "vllm:num_preemptions"),
}
LARGEST = {"kv_cache_usage"}  # one value per engine: the fullest cache, not a sum


@dataclass(frozen=True)
class MetricsSnapshot:
    t: float  # when it was read (the client's clock)
    values: dict[str, float]  # quantity -> value, for those found
    found: dict[str, str]  # quantity -> the metric name it was read from


def parse_metrics(text: str, t: float = 0.0) -> MetricsSnapshot:
    """The quantities of SPELLINGS found in Prometheus exposition `text`."""
    samples: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.value)
    values, found = {}, {}
    for quantity, names in SPELLINGS.items():
        name = next((n for n in names if n in samples), None)
        if name is not None:
            values[quantity] = (max if quantity in LARGEST else sum)(samples[name])
            found[quantity] = name
    return MetricsSnapshot(t, values, found)


class MetricsSampler:
    """`async with MetricsSampler(fetch, 0.5) as sampler:` reads `/metrics` every `interval_s` until the
    block ends. `fetch` returns the exposition text (e.g. from CompletionClient.get_text); a failed
    or slow read (over `timeout_s`) is recorded in `errors`, and sampling goes on."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[str]],
        interval_s: float = 0.5,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.fetch, self.interval_s, self.timeout_s, self.clock = fetch, interval_s, timeout_s, clock
        self.snapshots: list[MetricsSnapshot] = []
        self.errors: list[str] = []
        self._task: asyncio.Task | None = None

    async def read(self) -> MetricsSnapshot | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                text = await self.fetch()
            snapshot = parse_metrics(text, self.clock())
        except Exception as exc:  # a sampler must not end the run; the error is kept
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return None
        self.snapshots.append(snapshot)
        return snapshot

    async def _loop(self) -> None:
        while True:
            await self.read()
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> MetricsSampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def window_summary(snapshots: Sequence[MetricsSnapshot], start: float | None, end: float | None) -> dict:
    """Server columns over the steady window [start, end]: mean and max of running and waiting requests
    and KV-cache usage, preemptions (the counter's rise between the first and last sample inside), the
    samples taken and the metric names read."""
    inside = [s for s in snapshots if start is not None and start <= s.t <= end]
    figures: dict = {"server_metrics_samples": len(inside)}
    for quantity, column in (
        ("requests_running", "server_requests_running"),
        ("requests_waiting", "server_requests_waiting"),
        ("kv_cache_usage", "server_kv_cache_usage_fraction"),
    ):
        values = [s.values[quantity] for s in inside if quantity in s.values]
        figures[f"{column}_mean"] = mean(values)
        figures[f"{column}_max"] = max(values) if values else None
    counts = [s.values["preemptions"] for s in inside if "preemptions" in s.values]
    figures["server_preemptions_window"] = round(counts[-1] - counts[0]) if len(counts) >= 2 else None
    figures["server_metric_names"] = sorted({name for s in snapshots for name in s.found.values()})
    if not inside:
        figures["server_metrics_null_reason"] = (
            "no /metrics sample inside the steady window" if snapshots else "no /metrics sample"
        )
    else:
        figures["server_metrics_null_reason"] = None
    return figures
