"""Per-request latencies and a load point's figures, exactly, from scripted chunk times."""

import pytest

from deploybench.engines.serving.metrics import SEVERAL_TOKENS, UNKNOWN_TOKENS, Slo, request_times, serving_figures
from deploybench.engines.serving.steady import SteadyWindow
from deploybench.stats import PERCENTILE_METHOD
from tests.fixtures.serving_records import record

# Four requests of 4 tokens, one token per chunk: (sent, chunk times) -> TTFT, E2E, TPOT in ms.
RUN = [
    record(0, 0.0, [0.25, 0.375, 0.5, 0.625]),  # 250, 625, 125
    record(1, 0.5, [1.0, 1.25, 1.5, 1.75]),  # 500, 1250, 250
    record(2, 1.0, [1.125, 1.25, 1.375, 1.5]),  # 125, 500, 125
    record(3, 1.5, [2.5, 2.625, 2.75, 2.875]),  # 1000, 1375, 125
]
WINDOW = SteadyWindow(0.0, 4.0, output_tokens=16, requests_completed=4, prompt_tokens=32, method="scripted")
SLO = Slo.from_config({"ttft_ms_p99": 600, "tpot_ms_p99": 200})


def test_per_request_ttft_tpot_e2e_itl():
    times = request_times(RUN[1])
    assert (times.ttft_ms, times.e2e_ms, times.tpot_ms, times.output_tokens) == (500.0, 1250.0, 250.0, 4)
    assert times.itl_ms == (250.0, 250.0, 250.0) and times.itl_null_reason is None
    one = request_times(record(9, 0.0, [0.5]))
    assert (one.ttft_ms, one.e2e_ms, one.tpot_ms, one.itl_ms) == (500.0, 500.0, None, ())
    assert request_times(record(9, 0.0, [0.5], failure="boom")) is None


def test_itl_is_null_where_a_chunk_carried_several_tokens_or_an_unknown_count():
    packed = record(0, 0.0, [0.25, 0.5, 0.75], tokens=[1, 2, 1])
    times = request_times(packed)
    assert times.itl_ms is None and times.itl_null_reason == SEVERAL_TOKENS
    assert (times.ttft_ms, times.e2e_ms, times.tpot_ms) == (250.0, 750.0, 500.0 / 3)  # n_out = 4: 3 gaps
    unknown = record(0, 0.0, [0.25, 0.5], tokens=[None, None])
    unknown.usage_completion_tokens = 2
    assert request_times(unknown).itl_null_reason == UNKNOWN_TOKENS


def test_load_point_figures_exactly():
    f = serving_figures(RUN, WINDOW, SLO)
    assert (f["requests_sent"], f["requests_ok"], f["requests_failed"], f["failure_reasons"]) == (4, 4, 0, [])
    assert f["latency_scope"] == "steady_window" and f["latency_requests"] == 4
    assert f["percentile_method"] == PERCENTILE_METHOD
    # TTFT in order of sending 250, 500, 125, 1000: type-7 median of 125 250 500 1000 = 375.
    assert f["ttft_ms_samples"] == [250.0, 500.0, 125.0, 1000.0]
    assert (f["ttft_ms_p50"], f["ttft_ms_mean"], f["ttft_ms_p95"], f["ttft_ms_p99"]) == (375.0, 468.75, None, None)
    assert (f["tpot_ms_p50"], f["tpot_ms_mean"]) == (125.0, 156.25)
    assert (f["e2e_ms_p50"], f["e2e_ms_mean"]) == (937.5, 937.5)
    assert "ttft_ms_p95, ttft_ms_p99: 4 requests (p95 needs 20, p99 needs 100)" in f["tail_null_reason"]
    assert f["ttft_ms_p50_ci95_low"] is None and "admit no 95% interval" in f["ci_null_reason"]
    # ITL: 9 gaps of 125 and 3 of 250, pooled.
    assert f["itl_ms_samples"] == [125.0] * 3 + [250.0] * 3 + [125.0] * 6
    assert (f["itl_ms_p50"], f["itl_ms_mean"], f["itl_null_reason"]) == (125.0, 156.25, None)
    assert "itl_ms_p95, itl_ms_p99: 12 gaps" in f["tail_null_reason"]
    assert f["chunks_multi_token_fraction"] == 0.0
    # Over the 4 s window: 4 requests, 16 output and 32 prompt tokens.
    assert (f["request_rps"], f["output_tps"], f["total_tps"]) == (1.0, 4.0, 12.0)
    assert f["steady_window_s"] == 4.0 and f["throughput_null_reason"] is None
    # Per request: 0 and 2 meet TTFT <= 600 and TPOT <= 200; 1 misses TPOT (250), 3 misses TTFT (1000).
    assert f["goodput_rps"] == 0.5 and f["slo_attained_fraction"] == 0.5
    # The p99s (type 7 at n = 4): TTFT 500 + 0.97 x 500 = 985, TPOT 125 + 0.97 x 125 = 246.25.
    assert f["slo_met"] is False
    assert f["slo_miss_reason"] == "ttft_ms_p99 985 > 600; tpot_ms_p99 246.3 > 200"
    assert f["slo_json"] == '{"tpot_ms_p99": 200.0, "ttft_ms_p99": 600.0}'
    loose = serving_figures(RUN, WINDOW, Slo.from_config({"ttft_ms_p99": 1000, "tpot_ms_p50": 125}))
    assert loose["slo_met"] is True and loose["slo_miss_reason"] is None and loose["goodput_rps"] == 0.75


def test_itl_of_the_load_point_is_null_when_any_request_had_a_packed_chunk():
    run = [*RUN[:2], record(2, 1.0, [1.125, 1.25, 1.5], tokens=[1, 2, 1]), RUN[3]]
    f = serving_figures(run, WINDOW)
    assert f["itl_ms_p50"] is None and f["itl_ms_samples"] == []
    assert f["itl_null_reason"] == f"{SEVERAL_TOKENS} in 1 of 4 requests"
    assert f["chunks_multi_token_fraction"] == 1 / 15
    assert f["tpot_ms_p50"] == 125.0  # TPOT needs no per-token gaps
    assert "goodput_rps" in f and f["goodput_rps"] is None and "slo_met" not in f  # no SLO given


def test_failures_and_no_steady_window():
    run = [*RUN, record(4, 2.0, [2.25], gen=4, failure="fewer completion tokens than asked: 1 of 4")]
    none = SteadyWindow(None, None, None, None, None, "scripted", "no steady window: too few")
    f = serving_figures(run, none, SLO)
    assert (f["requests_sent"], f["requests_ok"], f["requests_failed"]) == (5, 4, 1)
    assert f["failure_reasons"] == ["1 x fewer completion tokens than asked: 1 of 4"]
    assert f["latency_scope"] == "all_requests" and f["latency_requests"] == 4
    assert f["request_rps"] is None and f["throughput_null_reason"] == "no steady window: too few"
    assert f["slo_met"] is False and f["slo_miss_reason"].startswith("1 requests failed")
    assert f["slo_attained_fraction"] == pytest.approx(2 / 5)


def test_slo_config_names_the_percentile():
    slo = Slo.from_config({"ttft_ms_p99": 500, "e2e_ms_p50": 2000})
    assert [(t.metric, t.q, t.limit) for t in slo.targets] == [("ttft_ms", 99, 500.0), ("e2e_ms", 50, 2000.0)]
    with pytest.raises(ValueError):
        Slo.from_config({"ttft_p99": 500})
