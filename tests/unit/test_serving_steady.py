"""The steady-state window on known schedules."""

from deploybench.engines.serving.metrics import serving_figures
from deploybench.engines.serving.steady import closed_loop_window, in_window, open_loop_window
from tests.fixtures.serving_records import record

# Closed loop, N = 2 slots, R = 6 requests of 2 tokens: (sent, [first token, last token]).
CLOSED = [
    record(0, 0.0, [1.0, 2.0]),
    record(1, 0.0, [1.5, 3.0]),
    record(2, 2.0, [2.5, 4.0]),
    record(3, 3.0, [3.5, 5.0]),
    record(4, 4.0, [4.5, 6.0]),
    record(5, 5.0, [5.5, 7.0]),
]


def test_closed_loop_window_from_the_nth_first_token_to_the_r_minus_nth_completion():
    w = closed_loop_window(CLOSED, concurrency=2)
    # First tokens 1.0 1.5 ...: the 2nd at 1.5. Completions 2 3 4 5 6 7: the 4th (6 - 2) at 5.0.
    assert (w.start, w.end, w.duration_s, w.reason) == (1.5, 5.0, 3.5, None)
    # Chunks in (1.5, 5.0]: 2.0, 3.0, 2.5, 4.0, 3.5, 5.0, 4.5 (1.5 itself is the start: out).
    assert w.output_tokens == 7
    assert w.requests_completed == 4  # ended at 2, 3, 4, 5
    assert w.prompt_tokens == 3 * 8  # first tokens at 2.5, 3.5, 4.5
    assert [r.index for r in in_window(CLOSED, w)] == [2, 3]
    assert w.too_short(3.0) is None
    assert w.too_short(4.0) == "steady window 3.500 s is shorter than the 4 s needed"
    f = serving_figures(CLOSED, w)
    assert (f["request_rps"], f["output_tps"], f["total_tps"]) == (4 / 3.5, 7 / 3.5, 31 / 3.5)
    assert f["latency_scope"] == "steady_window" and f["ttft_ms_samples"] == [500.0, 500.0]
    assert (f["steady_ramp_s"], f["steady_drain_s"]) == (1.5, 2.0)  # sends from 0; the last ends at 7


def test_no_closed_loop_window_from_too_few_requests():
    w = closed_loop_window(CLOSED[:2], concurrency=2)
    assert w.start is None and w.reason == "no steady window: 2 requests at concurrency 2 (send well over 2N)"
    assert w.too_short(1.0) == w.reason
    w = closed_loop_window(CLOSED[:3], concurrency=2)  # the 1st completion (2.0) is after the 2nd first token (1.5)
    assert (w.start, w.end) == (1.5, 2.0)
    early = [record(0, 0.0, [0.25, 0.5]), record(1, 0.0, [1.0, 1.5]), record(2, 0.5, [1.75, 2.0])]
    w = closed_loop_window(early, concurrency=2)  # the 1st completion (0.5) precedes the 2nd first token (1.0)
    assert w.start is None and w.reason.startswith("no steady window: the 1th completion came before")
    failed = [record(i, 0.0, [], gen=2, failure="stream ended without tokens") for i in range(5)]
    assert "only 0 of 5 requests got a first token" in closed_loop_window(failed, 2).reason


def test_unknown_chunk_counts_leave_tokens_unknown_with_the_reason():
    run = [record(i, r.sent, [c.t for c in r.chunks], tokens=[None, None]) for i, r in enumerate(CLOSED)]
    for r in run:
        r.usage_completion_tokens = 2
    w = closed_loop_window(run, concurrency=2)
    assert w.start == 1.5 and w.output_tokens is None and w.requests_completed == 4
    assert w.reason == "output tokens unknown: 7 chunks in the window carry no token count"


# Open loop: one request a second, each 2.5 s long (first token after 0.5 s): 2 or 3 in flight.
OPEN = [record(i, float(i), [i + 0.5, i + 2.5]) for i in range(10)]


def test_open_loop_window_from_the_long_run_in_flight_level_to_the_last_send():
    w = open_loop_window(OPEN)
    # Over the second half of sending (4.5 .. 9) the mean in flight is 22 / 9 = 2.44: level 2, first
    # reached at the second send.
    assert (w.start, w.end) == (1.0, 9.0)
    assert w.requests_completed == 7  # ended at 2.5, 3.5, ..., 8.5: inside (1, 9]
    assert w.output_tokens == 8 + 7  # first tokens at 1.5 .. 8.5, last tokens at 2.5 .. 8.5
    w = open_loop_window(OPEN, ramp_fraction=0.3)
    assert (w.start, w.end) == (3.0, 9.0) and w.method.startswith("open loop: send after the first 0.3")
    assert open_loop_window(OPEN[:1]).reason == "no steady window: 1 requests sent (needs at least 2)"
