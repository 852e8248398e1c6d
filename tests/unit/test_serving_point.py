"""A load point end to end against the fake server: plumbing only (which columns, which verdicts),
no time asserted."""

import asyncio

import pytest

from deploybench.engines.serving.client import CompletionClient
from deploybench.engines.serving.metrics import Slo
from deploybench.engines.serving.point import LoadSpec, measure_load_point
from deploybench.engines.serving.token_prompts import TokenPrompts
from tests.fixtures.fake_openai_server import FakeOpenAIServer, tokens_script

PROMPTS = TokenPrompts(context=8, vocab_size=500, special_ids=[0, 1], seed=0)


async def point(spec, tokens=(1, 1, 1, 1), gen=4, server_metrics=True, min_window_s=0.0):
    async with FakeOpenAIServer(lambda i, body: tokens_script(list(tokens), delay_s=0.002)) as server:
        async with CompletionClient(server.url, model="fake", request_timeout_s=30) as client:
            slo = Slo.from_config({"ttft_ms_p99": 60_000, "tpot_ms_p99": 60_000})
            result = await measure_load_point(
                client,
                PROMPTS,
                gen,
                spec,
                slo,
                server_metrics=server_metrics,
                metrics_interval_s=0.01,
                min_window_s=min_window_s,
            )
        return result, server


@pytest.mark.parametrize(
    "spec",
    [LoadSpec("concurrency", 2, n_requests=12), LoadSpec("request_rate", 500.0, n_requests=10, seed=1)],
    ids=["closed", "open"],
)
def test_a_load_point_against_the_fake_server(spec):
    result, server = asyncio.run(point(spec))
    f = result.figures
    assert result.failure is None and len(result.records) == spec.n_requests
    assert f["load_mode"] == spec.mode and f["requests_ok"] == spec.n_requests
    assert f["tokens_reconciled"] is True and f["server_output_tokens"] == 4 * spec.n_requests
    assert f["server_prompt_tokens"] == 8 * spec.n_requests and f["server_metrics_errors"] == []
    assert not [r for r in result.invalid_reasons if "tokens" in r]
    for column in ("ttft_ms_p50", "tpot_ms_p50", "e2e_ms_p50", "itl_ms_p50", "client_send_lag_ms_max", "slo_met"):
        assert column in f
    assert f["ttft_ms_p50"] > 0 and f["itl_null_reason"] is None
    if spec.mode == "concurrency":
        assert server.max_running <= 2 and f["load_concurrency"] == 2
    else:
        assert f["load_request_rate_rps"] == 500.0 and f["load_burstiness"] == 1.0


def test_failed_requests_fail_the_point_and_a_too_short_window_invalidates_it():
    result, _ = asyncio.run(point(LoadSpec("concurrency", 2, n_requests=6), tokens=(1, 1, 1)))
    assert result.failure == "6 of 6 requests failed: 6 x fewer completion tokens than asked: 3 of 4"
    result, _ = asyncio.run(point(LoadSpec("concurrency", 2, n_requests=2), server_metrics=False))
    assert "server_metrics_samples" not in result.figures and result.figures["tokens_reconciled"] is True
    assert result.figures["token_unchecked_reason"] == "output tokens: server unknown; prompt tokens: server unknown"
    assert "no steady window: 2 requests at concurrency 2 (send well over 2N)" in result.invalid_reasons
    result, _ = asyncio.run(point(LoadSpec("concurrency", 1, n_requests=4), min_window_s=3600.0))
    assert any("shorter than the 3600 s needed" in r or "no steady window" in r for r in result.invalid_reasons)
    with pytest.raises(ValueError):
        asyncio.run(point(LoadSpec("bursts", 2, n_requests=3)))
