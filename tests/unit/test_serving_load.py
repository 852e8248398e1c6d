"""Load generators, prompts and the client-lag verdict: fake clocks where a time is asserted; the
fake server only for plumbing (no timing asserted)."""

import asyncio
import json
import statistics

import numpy as np
import pytest

from deploybench.engines.serving.client import VLLM_FLAGS, CompletionClient, request_body
from deploybench.engines.serving.load import (
    LagLimits,
    LoadRun,
    Sender,
    arrival_offsets,
    client_figures,
    closed_loop,
    open_loop,
)
from deploybench.engines.serving.reconcile import reconcile_tokens
from deploybench.engines.serving.records import RequestRecord
from deploybench.engines.serving.server_metrics import parse_metrics
from deploybench.engines.serving.steady import closed_loop_window
from deploybench.engines.serving.token_prompts import TokenPrompts
from tests.fixtures.fake_openai_server import FakeOpenAIServer, tokens_script
from tests.fixtures.serving_records import record


def test_prompts_have_exactly_context_tokens_are_distinct_and_avoid_special_ids():
    prompts = TokenPrompts(context=16, vocab_size=100, special_ids=[0, 1, 2, 99], seed=3)
    drawn = [prompts[i] for i in range(3000)]
    assert all(len(p) == 16 for p in drawn)
    assert not {0, 1, 2, 99} & {t for p in drawn for t in p}
    assert len({tuple(p[:2]) for p in drawn}) == 3000  # the first cache block differs for every pair
    assert prompts[42] == TokenPrompts(16, 100, [0, 1, 2, 99], seed=3)[42]  # a function of (seed, index)
    assert prompts[42] != TokenPrompts(16, 100, [0, 1, 2, 99], seed=4)[42]
    short = TokenPrompts(context=1, vocab_size=10, special_ids=[0])
    assert short.capacity == 9 and len({tuple(short[i]) for i in range(9)}) == 9
    with pytest.raises(IndexError):
        short[9]
    with pytest.raises(ValueError):
        TokenPrompts(context=0, vocab_size=10)


def old_token_prompt(prompts: TokenPrompts, index: int) -> list[int]:
    """TokenPrompts.__getitem__ as it was when the recorded serving results were measured (a list of int()s)."""
    a = len(prompts.allowed)
    head = [(index + prompts._offsets[0]) % a, (index // a + prompts._offsets[1]) % a][: prompts.context]
    rest = np.random.default_rng([prompts.seed, 1, index]).integers(0, a, size=prompts.context - len(head))
    return [int(t) for t in prompts.allowed[np.concatenate([np.asarray(head, dtype=np.int64), rest])]]


def test_prompts_are_the_ids_recorded_runs_sent():
    """The same (seed, index) gives the same ids as before, as Python ints (what the JSON body holds)."""
    cases = [
        (TokenPrompts(context=16, vocab_size=100, special_ids=[0, 1, 2, 99], seed=3), range(0, 3000, 7)),
        (
            TokenPrompts(context=2048, vocab_size=201088, special_ids=[199998, 199999, 200002], seed=2**63 + 5),
            range(60),
        ),
        (TokenPrompts(context=2048, vocab_size=201088, seed=0), [0, 1, 255, 256, 4095, 201087, 201088, 10**9]),
        (TokenPrompts(context=1, vocab_size=10, special_ids=[0]), range(9)),
        (TokenPrompts(context=2, vocab_size=5, seed=7), range(25)),
    ]
    for prompts, indices in cases:
        for i in indices:
            ids = prompts[i]
            assert ids == old_token_prompt(prompts, i), (prompts.context, prompts.seed, i)
            assert all(type(t) is int for t in ids)


class PreparingClient:
    """A CompletionClient's prepare/send pair that logs when each request was prepared and which it sent."""

    def __init__(self, clock, hold_s=0.5):
        self.clock, self.hold_s, self.log = clock, hold_s, []

    def prepare(self, prompt, gen):
        self.log.append(("prepare", prompt[0]))
        return ("prepared", tuple(prompt), gen)

    async def send(self, index, request, scheduled):
        self.log.append(("send", index))
        assert request == ("prepared", (index, index + 1), 2)  # its own request, as prepare built it
        rec = RequestRecord(index=index, gen=2, scheduled=scheduled, sent=self.clock())
        for _ in range(5):
            await asyncio.sleep(0)
        self.clock.now += self.hold_s
        rec.done = self.clock()
        return rec


class Prompts:
    def __getitem__(self, index):
        return [index, index + 1]


def test_the_sender_prepares_each_request_once_the_first_wave_before_the_clock_starts():
    clock = FakeClock()
    client = PreparingClient(clock)
    send = Sender(client, Prompts(), 2)
    run = asyncio.run(closed_loop(send, 3, n_requests=10, clock=clock))
    assert [r.index for r in run.records] == list(range(10)) and [r.failure for r in run.records] == [None] * 10
    prepared = [i for what, i in client.log if what == "prepare"]
    assert sorted(prepared) == list(range(10))  # each once, none past n_requests
    assert client.log[:3] == [("prepare", 0), ("prepare", 1), ("prepare", 2)]  # the first wave, before any send
    assert [r.scheduled for r in run.records[:3]] == [100.0] * 3  # the clock started after them
    # With look-ahead, the later requests were prepared before they were sent (by the refill), not at the send.
    sends = {i: n for n, (what, i) in enumerate(client.log) if what == "send"}
    prepares = {i: n for n, (what, i) in enumerate(client.log) if what == "prepare"}
    assert all(prepares[i] < sends[i] for i in range(10))
    # Reused for another run (and an open loop), it starts over from request 0.
    client.log.clear()
    run = asyncio.run(open_loop(send, [0.0, 0.0, 0.0, 0.0], rate=float("inf"), clock=clock))
    assert [i for what, i in client.log if what == "prepare"] == [0, 1, 2, 3]
    assert client.log[:4] == [("prepare", i) for i in range(4)] and [r.ok for r in run.records] == [True] * 4


def test_arrivals_are_seeded_gamma_gaps_with_the_asked_mean_and_burstiness():
    offsets = arrival_offsets(rate=50.0, n=20000, seed=1)
    assert offsets == arrival_offsets(rate=50.0, n=20000, seed=1) and offsets[0] == 0.0
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert min(gaps) > 0 and statistics.fmean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.05)  # Poisson
    bursty = arrival_offsets(rate=50.0, burstiness=0.25, n=20000, seed=1)
    gaps = [b - a for a, b in zip(bursty, bursty[1:])]
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(2.0, rel=0.1)  # 1 / sqrt(0.25)
    timed = arrival_offsets(rate=10.0, duration_s=5.0, seed=2)
    assert 20 < len(timed) < 80 and max(timed) < 5.0
    assert len(arrival_offsets(rate=10.0, duration_s=5.0, n=7)) == 7
    assert arrival_offsets(rate=float("inf"), n=3) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        arrival_offsets(rate=10.0)  # unbounded


def fake_send(clock, hold_s, in_flight, peak):
    async def send(index, scheduled):
        in_flight.append(index)
        peak[0] = max(peak[0], len(in_flight))
        rec = RequestRecord(index=index, gen=1, scheduled=scheduled, sent=clock())
        for _ in range(3):
            await asyncio.sleep(0)
        clock.now += hold_s
        rec.done = clock()
        in_flight.remove(index)
        return rec

    return send


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_closed_loop_keeps_n_in_flight_and_stops_by_count_or_duration():
    clock, in_flight, peak = FakeClock(), [], [0]
    run = asyncio.run(closed_loop(fake_send(clock, 0.5, in_flight, peak), 3, n_requests=10, clock=clock))
    assert [r.index for r in run.records] == list(range(10)) and peak[0] == 3
    assert run.mode == "concurrency" and run.stopped_by == "requests" and run.started == 100.0
    assert [r.scheduled for r in run.records[:3]] == [100.0] * 3  # the first wave is due at the start
    assert all(r.scheduled in {s.done for s in run.records} for r in run.records[3:])  # then when a slot frees
    clock = FakeClock()
    run = asyncio.run(closed_loop(fake_send(clock, 0.5, [], [0]), 2, duration_s=2.0, clock=clock))
    assert run.stopped_by == "duration" and 4 <= len(run.records) <= 6
    with pytest.raises(ValueError):
        asyncio.run(closed_loop(fake_send(clock, 0.5, [], [0]), 2))


def test_open_loop_sends_each_request_when_due():
    clock = FakeClock()

    async def sleep(seconds):  # as asyncio.sleep: tasks already created run while it waits
        await asyncio.sleep(0)
        clock.now += seconds

    async def send(index, scheduled):
        return RequestRecord(index=index, gen=1, scheduled=scheduled, sent=clock(), done=clock() + 1)

    run = asyncio.run(open_loop(send, [0.0, 0.5, 1.25], rate=2.0, clock=clock, sleep=sleep))
    assert [r.scheduled for r in run.records] == [100.0, 100.5, 101.25]
    assert [r.send_lag_s for r in run.records] == [0.0, 0.0, 0.0]
    assert run.mode == "request_rate" and run.load == 2.0


def lagged_run(lags_ms, loop_cpu_s=0.1, wall_s=10.0):
    records = [record(i, i + lag / 1000, [i + 1.0], scheduled=float(i)) for i, lag in enumerate(lags_ms)]
    return LoadRun("concurrency", 4, records, 0.0, wall_s, 0.5, loop_cpu_s, "requests")


def test_a_load_point_where_the_client_lagged_is_invalid():
    figures, invalid = client_figures(lagged_run([1.0] * 198 + [100.0] * 2))
    assert invalid is None and figures["client_send_lag_ms_p99"] < 25  # 2 of 200 late: under the p99
    assert figures["client_send_lag_ms_max"] == pytest.approx(100.0)
    assert (figures["client_cpu_s"], figures["client_cpu_fraction"], figures["client_loop_cpu_fraction"]) == (
        0.5,
        0.05,
        0.01,
    )
    _, invalid = client_figures(lagged_run([1.0] * 195 + [100.0] * 5))
    assert invalid == "client lagged: send lag p99 100.0 ms > 25 ms"
    figures, invalid = client_figures(lagged_run([1.0] * 9 + [30.0]))  # below 100 requests: the maximum
    assert figures["client_send_lag_ms_p99"] is None and invalid == "client lagged: send lag max 30.0 ms > 25 ms"
    _, invalid = client_figures(lagged_run([1.0] * 10, loop_cpu_s=9.0))
    assert invalid == "client event loop busy 90% of the run (limit 80%)"
    _, invalid = client_figures(lagged_run([1.0] * 10), LagLimits(send_lag_ms=0.5))
    assert invalid == "client lagged: send lag max 1.0 ms > 0.5 ms"


async def closed_loop_against_the_fake_server(concurrency, n_requests):
    prompts = TokenPrompts(context=8, vocab_size=1000, special_ids=[0], seed=0)
    async with FakeOpenAIServer(lambda i, body: tokens_script([1, 1, 1], delay_s=0.002)) as server:
        async with CompletionClient(server.url, model="fake", request_timeout_s=30) as client:
            before = parse_metrics((await client.get_text("/metrics"))[1])
            run = await closed_loop(Sender(client, prompts, 3), concurrency, n_requests=n_requests)
            after = parse_metrics((await client.get_text("/metrics"))[1])
        return run, before, after, server


def test_closed_loop_through_the_client_against_the_fake_server():
    run, before, after, server = asyncio.run(closed_loop_against_the_fake_server(3, 12))
    assert [r.failure for r in run.records] == [None] * 12
    assert server.max_running <= 3
    assert len({tuple(b["prompt"]) for b in server.bodies}) == 12 and {len(b["prompt"]) for b in server.bodies} == {8}
    prompts = TokenPrompts(context=8, vocab_size=1000, special_ids=[0], seed=0)
    expected = [request_body(prompts[i], 3, VLLM_FLAGS, "fake") for i in range(12)]  # the bodies, prepared ahead
    assert sorted(map(json.dumps, server.bodies)) == sorted(map(json.dumps, expected))
    reconciled = reconcile_tokens(run.records, before, after)
    assert reconciled.agree and (reconciled.server_output_tokens, reconciled.server_prompt_tokens) == (36, 96)
    assert closed_loop_window(run.records, 3).start is not None
    figures, _ = client_figures(run)
    assert figures["client_send_lag_ms_max"] >= 0 and run.wall_s > 0
