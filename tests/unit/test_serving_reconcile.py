"""Token reconciliation and the server's /metrics: parse, compare, sample."""

import asyncio

from deploybench.engines.serving.client import CompletionClient
from deploybench.engines.serving.reconcile import reconcile_tokens
from deploybench.engines.serving.server_metrics import MetricsSampler, MetricsSnapshot, parse_metrics, window_summary
from tests.fixtures.fake_openai_server import FakeOpenAIServer, tokens_script
from tests.fixtures.serving_records import record

NEW = """# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:generation_tokens_total{engine="1",model_name="m"} 28.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 512.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 4.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3.0
vllm:time_to_first_token_seconds_count{model_name="m"} 3.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.2
"""
OLD = """# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.75
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{model_name="m"} 1.0
"""


def test_parse_both_spellings_and_record_which_was_found():
    s = parse_metrics(NEW, t=5.0)
    assert s.t == 5.0
    assert s.values == {
        "generation_tokens": 128.0,  # summed over engines
        "prompt_tokens": 512.0,
        "requests_running": 4.0,
        "requests_waiting": 2.0,
        "kv_cache_usage": 0.5,  # the fullest engine's cache
        "preemptions": 4.0,
    }
    assert s.found["kv_cache_usage"] == "vllm:kv_cache_usage_perc"
    old = parse_metrics(OLD)
    assert old.values == {"kv_cache_usage": 0.75, "preemptions": 1.0}
    assert old.found == {"kv_cache_usage": "vllm:gpu_cache_usage_perc", "preemptions": "vllm:num_preemptions_total"}


def snapshot(generation, prompt, t=0.0):
    return MetricsSnapshot(t, {"generation_tokens": generation, "prompt_tokens": prompt, "preemptions": 0.0}, {})


RUN = [record(0, 0.0, [0.25, 0.5]), record(1, 0.0, [0.25, 0.5, 0.75], tokens=[1, 2, 1])]  # 2 + 4 tokens, 8 + 8


def test_token_counts_agree_three_ways():
    r = reconcile_tokens(RUN, snapshot(1000, 5000), snapshot(1006, 5016))
    assert r.agree and r.mismatches == () and r.unchecked == ()
    assert (r.client_output_tokens, r.usage_output_tokens, r.server_output_tokens) == (6, 6, 6)
    assert (r.sent_prompt_tokens, r.usage_prompt_tokens, r.server_prompt_tokens, r.server_preemptions) == (
        16,
        16,
        16,
        0,
    )
    assert r.figures()["tokens_reconciled"] is True and r.figures()["token_mismatch_reason"] is None


def test_a_mismatch_is_reported_with_the_numbers():
    r = reconcile_tokens(RUN, snapshot(1000, 5000), snapshot(1009, 5016))
    assert not r.agree and r.mismatches == ("output tokens disagree: client 6, usage 6, server 9",)
    short = record(2, 0.0, [0.25, 0.5])
    short.usage_completion_tokens = 3  # the response's usage says 3, the chunks carried 2
    r = reconcile_tokens([*RUN, short])
    assert r.mismatches == (
        "1 requests' chunk sums differ from their usage: request 2: client 2, usage 3",
        "output tokens disagree: client 8, usage 9",
    )
    assert r.unchecked == ("output tokens: server unknown", "prompt tokens: server unknown")
    assert r.figures()["token_mismatch_reason"].startswith("1 requests' chunk sums differ")


def test_window_summary_of_sampled_gauges():
    snapshots = [
        MetricsSnapshot(t, {"requests_running": run, "kv_cache_usage": kv, "preemptions": pre}, {"x": "vllm:x"})
        for t, run, kv, pre in [(0.0, 1.0, 0.1, 0.0), (1.0, 4.0, 0.5, 1.0), (2.0, 2.0, 0.25, 3.0), (3.0, 0.0, 0.0, 3.0)]
    ]
    f = window_summary(snapshots, 1.0, 2.0)
    assert f["server_metrics_samples"] == 2
    assert (f["server_requests_running_mean"], f["server_requests_running_max"]) == (3.0, 4.0)
    assert (f["server_kv_cache_usage_fraction_mean"], f["server_kv_cache_usage_fraction_max"]) == (0.375, 0.5)
    assert f["server_requests_waiting_mean"] is None and f["server_preemptions_window"] == 2.0
    assert f["server_metric_names"] == ["vllm:x"] and f["server_metrics_null_reason"] is None
    assert (
        window_summary(snapshots, None, None)["server_metrics_null_reason"]
        == "no /metrics sample inside the steady window"
    )


async def sample_the_fake_server(skew):
    async with FakeOpenAIServer(
        lambda i, body: tokens_script([1, 1, 1, 1]), skew=skew, old_metric_names=True
    ) as server:
        async with CompletionClient(server.url, model="fake") as client:
            status, _ = await client.get_text("/health")
            assert status == 200

            async def fetch():
                return (await client.get_text("/metrics"))[1]

            async with MetricsSampler(fetch, interval_s=0.01) as sampler:
                before = await sampler.read()
                records = [await client.complete(i, [5, 6, 7], 4) for i in range(3)]
                after = await sampler.read()
        return records, before, after, sampler


def test_against_the_fake_server_agree_and_disagree():
    records, before, after, sampler = asyncio.run(sample_the_fake_server(skew=0))
    assert all(r.ok for r in records) and reconcile_tokens(records, before, after).agree
    assert len(sampler.snapshots) >= 2 and sampler.errors == []
    assert after.found["kv_cache_usage"] == "vllm:gpu_cache_usage_perc"
    records, before, after, _ = asyncio.run(sample_the_fake_server(skew=5))
    r = reconcile_tokens(records, before, after)
    assert r.mismatches == ("output tokens disagree: client 12, usage 12, server 27",)  # 5 extra a request
