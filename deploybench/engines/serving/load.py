"""Load generators: closed loop (N requests in flight) and open loop (seeded gamma arrivals).

Both stop by themselves: after `n_requests` or once `duration_s` has passed (no new request is sent
after it; those in flight finish, each bounded by the client's request timeout). Both record when each
request was due and the client's CPU time, so that a load point where the client, not the server,
set the pace is flagged (`client_figures`): in a closed loop a request is due the moment its slot
frees (the previous stream ended), in an open loop at its arrival time.

Building and encoding a request's body (a 2048-id prompt: a 13 KB JSON) is kept off the moment it is due
where the Send can (`Sender`): the bodies of the first requests are prepared before the load's clock
starts (a closed loop's first wave of N, all due at the start, went out one body after the other: the
last of 256 over 400 ms late), and the next ones while the event loop has nothing else to do.

Arrivals as vLLM's `bench serve` draws them: gaps from a gamma distribution of shape `burstiness` and
mean 1 / rate (burstiness 1 = exponential gaps = Poisson arrivals; below 1 burstier, above 1 more
regular), the first request at 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deploybench.engines.serving.client import PreparedRequest
from deploybench.engines.serving.records import RequestRecord
from deploybench.stats import percentile, supported_percentiles

Send = Callable[[int, float], Awaitable[RequestRecord]]  # (request index, when it was due) -> its record
MAX_ARRIVALS = 10_000_000
OPEN_LOOP_AHEAD_S = 1.0  # an open loop keeps ready the bodies of the requests due in its first second


@dataclass
class LoadRun:
    """One load point's requests (in index order) and what the client spent sending them."""

    mode: str  # "concurrency" | "request_rate"
    load: float  # N in flight, or requests per second
    records: list[RequestRecord]
    started: float
    ended: float
    process_cpu_s: float  # time.process_time of the whole process over the run
    loop_cpu_s: float  # CPU time of the event loop's thread: the client's one-core bottleneck
    stopped_by: str  # "requests" | "duration"

    @property
    def wall_s(self) -> float:
        return self.ended - self.started


class Sender:
    """A Send that streams `prompts[index]` for `gen` tokens through a CompletionClient, with the bodies of
    the next requests built and encoded before they are due.

    Both load generators take indices in order, so the next ones are known: `prepare_ahead(ahead, limit)`
    prepares requests 0 .. ahead - 1 at once (before the load's clock starts) and from then on keeps up to
    `ahead` ready, refilling one body per turn of the event loop after whatever else is ready (a stream's
    chunks wait behind one body's preparation at most, where before a whole wave's); `stop_preparing`
    ends that. A request whose body is not ready is prepared when it is sent, as without look-ahead. The
    bytes are those of `client.prepare`, the request goes out through `client.send`: what is sent and when
    `sent` is stamped do not change.
    """

    def __init__(self, client, prompts, gen: int):
        self.client, self.prompts, self.gen = client, prompts, gen
        self._ready: dict[int, PreparedRequest] = {}
        self._next = 0  # the next index to prepare
        self._ahead, self._limit = 0, None
        self._wanted: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def _prepare(self, index: int) -> PreparedRequest:
        return self.client.prepare(self.prompts[index], self.gen)

    def _fill_one(self) -> bool:
        """Prepare the next request, if fewer than `ahead` are ready and there is one."""
        if len(self._ready) >= self._ahead or (self._limit is not None and self._next >= self._limit):
            return False
        self._ready[self._next] = self._prepare(self._next)
        self._next += 1
        return True

    def prepare_ahead(self, ahead: int, limit: int | None = None) -> None:
        """Prepare the first `ahead` requests (of `limit`, where bounded) now, and the next ones as they go."""
        self._ahead, self._limit, self._next = ahead, limit, 0
        self._ready.clear()
        while self._fill_one():
            pass
        self._wanted = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._refill())

    async def _refill(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while True:
                await asyncio.sleep(0)  # what is ready (chunks, sends) goes first
                try:
                    if not self._fill_one():
                        break
                except Exception:  # no such prompt (past the prompts' capacity): its send will say so, if it comes
                    return

    async def stop_preparing(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task, self._wanted = None, None
        self._ready.clear()

    async def __call__(self, index: int, scheduled: float) -> RequestRecord:
        request = self._ready.pop(index, None)
        if request is None:
            request = self._prepare(index)
        self._next = max(self._next, index + 1)
        if self._wanted is not None:
            self._wanted.set()
        return await self.client.send(index, request, scheduled)


@contextlib.asynccontextmanager
async def _prepared_ahead(send: Send, ahead: int, limit: int | None) -> AsyncIterator[None]:
    """Where `send` can prepare requests ahead (a Sender), the first `ahead` now and the next while the load runs."""
    start = getattr(send, "prepare_ahead", None)
    if start is None:
        yield
        return
    start(ahead, limit)
    try:
        yield
    finally:
        await send.stop_preparing()


def _check_bounds(n_requests: int | None, duration_s: float | None) -> None:
    if n_requests is None and duration_s is None:
        raise ValueError("a load run needs n_requests or duration_s (it must stop by itself)")


async def closed_loop(
    send: Send,
    concurrency: int,
    n_requests: int | None = None,
    duration_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LoadRun:
    """`concurrency` slots, each sending its next request as soon as its previous one ended."""
    _check_bounds(n_requests, duration_s)
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    async with _prepared_ahead(send, concurrency, n_requests):
        return await _closed_loop(send, concurrency, n_requests, duration_s, clock)


async def _closed_loop(send: Send, concurrency: int, n_requests: int | None, duration_s: float | None, clock):
    records: list[RequestRecord] = []
    state = {"next": 0, "stopped_by": "requests"}
    cpu0, loop0, started = time.process_time(), time.thread_time(), clock()

    def take() -> int | None:
        if n_requests is not None and state["next"] >= n_requests:
            return None
        if duration_s is not None and clock() - started >= duration_s:
            state["stopped_by"] = "duration"
            return None
        state["next"] += 1
        return state["next"] - 1

    async def slot() -> None:
        due = started
        while (index := take()) is not None:
            record = await send(index, due)
            records.append(record)
            due = record.done if record.done is not None else clock()

    await asyncio.gather(*(slot() for _ in range(concurrency)))
    ended = clock()
    records.sort(key=lambda r: r.index)
    cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop0
    return LoadRun("concurrency", concurrency, records, started, ended, cpu, loop_cpu, state["stopped_by"])


def arrival_offsets(
    rate: float, burstiness: float = 1.0, seed: int = 0, n: int | None = None, duration_s: float | None = None
) -> list[float]:
    """Seconds from the start at which requests arrive: the first at 0, then gamma(burstiness, 1 /
    (rate x burstiness)) gaps; `n` of them, or those before `duration_s` (whichever is fewer). An
    infinite rate sends all `n` at once."""
    _check_bounds(n, duration_s)
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"rate and burstiness must be positive, got {rate} and {burstiness}")
    if rate == float("inf"):
        if n is None:
            raise ValueError("an infinite rate needs n")
        return [0.0] * n
    rng = np.random.default_rng(seed)
    offsets = [0.0]
    while (n is None or len(offsets) < n) and (duration_s is None or offsets[-1] < duration_s):
        if len(offsets) >= MAX_ARRIVALS:
            raise ValueError(f"more than {MAX_ARRIVALS} arrivals: lower the rate or the duration")
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=1024)
        offsets.extend((offsets[-1] + np.cumsum(gaps)).tolist())
    if n is not None:
        offsets = offsets[:n]
    return [t for t in offsets if duration_s is None or t < duration_s]


async def open_loop(
    send: Send,
    offsets: Sequence[float],
    rate: float,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable] = asyncio.sleep,
) -> LoadRun:
    """Send request i at start + offsets[i] (`arrival_offsets`), whatever is in flight; `rate` is recorded."""
    ahead = max(1, sum(1 for t in offsets if t < offsets[0] + OPEN_LOOP_AHEAD_S)) if len(offsets) else 0
    async with _prepared_ahead(send, ahead, len(offsets)):
        return await _open_loop(send, offsets, rate, clock, sleep)


async def _open_loop(send: Send, offsets: Sequence[float], rate: float, clock, sleep) -> LoadRun:
    tasks = []
    cpu0, loop0, started = time.process_time(), time.thread_time(), clock()
    for index, offset in enumerate(offsets):
        due = started + offset
        if (wait := due - clock()) > 0:
            await sleep(wait)
        tasks.append(asyncio.create_task(send(index, due)))
    records = list(await asyncio.gather(*tasks))
    ended = clock()
    cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop0
    return LoadRun("request_rate", rate, records, started, ended, cpu, loop_cpu, "requests")


@dataclass(frozen=True)
class LagLimits:
    """When the client, not the server, set the pace: the send lag's p99 (its maximum below the 100
    requests a p99 needs) above `send_lag_ms`, or the event loop's thread busy more than
    `loop_cpu_fraction` of the run's wall time."""

    send_lag_ms: float = 25.0
    loop_cpu_fraction: float = 0.8


DEFAULT_LAG_LIMITS = LagLimits()


def client_figures(run: LoadRun, limits: LagLimits = DEFAULT_LAG_LIMITS) -> tuple[dict, str | None]:
    """The client's own columns, and why the load point is invalid where the client lagged."""
    lags = [r.send_lag_s * 1000 for r in run.records if r.send_lag_s is not None]
    figures, _ = supported_percentiles(lags, "client_send_lag_ms_p{q}", (50, 99), "requests")
    wall = run.wall_s
    figures |= {
        "client_send_lag_ms_max": max(lags) if lags else None,
        "client_cpu_s": run.process_cpu_s,
        "client_cpu_fraction": run.process_cpu_s / wall if wall > 0 else None,
        "client_loop_cpu_fraction": run.loop_cpu_s / wall if wall > 0 else None,
        "load_wall_s": wall,
        "load_stopped_by": run.stopped_by,
    }
    reasons = []
    if lags:
        tail = figures["client_send_lag_ms_p99"]
        lag, which = (tail, "p99") if tail is not None else (percentile(lags, 100), "max")
        if lag > limits.send_lag_ms:
            reasons.append(f"client lagged: send lag {which} {lag:.1f} ms > {limits.send_lag_ms:g} ms")
    busy = figures["client_loop_cpu_fraction"]
    if busy is not None and busy > limits.loop_cpu_fraction:
        reasons.append(f"client event loop busy {busy:.0%} of the run (limit {limits.loop_cpu_fraction:.0%})")
    return figures, "; ".join(reasons) or None
