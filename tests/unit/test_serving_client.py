"""The serving client: request bodies, stream parsing at exact times, failure judgement, and the HTTP
plumbing against a scripted fake server on 127.0.0.1 (no timing asserted there, only order)."""

import asyncio
import json
import socket
import subprocess
import sys

from deploybench.engines.serving.client import (
    OPENAI_FLAGS,
    VLLM_FLAGS,
    CompletionClient,
    StreamParser,
    judge,
    request_body,
)
from deploybench.engines.serving.metrics import SEVERAL_TOKENS, request_times
from deploybench.engines.serving.records import RequestRecord
from tests.fixtures.fake_openai_server import FakeOpenAIServer, Script, Step, tokens_script


def test_request_body_asks_for_exactly_gen_tokens_where_the_engine_accepts_it():
    body = request_body([5, 6, 7], 64, VLLM_FLAGS, model="m")
    assert body == {
        "prompt": [5, 6, 7],
        "max_tokens": 64,
        "stream": True,
        "temperature": 0.0,
        "model": "m",
        "ignore_eos": True,
        "min_tokens": 64,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    plain = request_body("hello", 8, OPENAI_FLAGS)
    assert "ignore_eos" not in plain and "min_tokens" not in plain
    assert plain["stream_options"] == {"include_usage": True}
    try:
        request_body([1, 2], 8, OPENAI_FLAGS)
    except ValueError:
        pass
    else:
        raise AssertionError("token ids sent to an engine that takes text")


def usage_event(completion, text=" t", prompt=3):
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return "data: " + json.dumps({"choices": [{"index": 0, "text": text}], "usage": usage})


def test_stream_parser_counts_tokens_from_usage_deltas_at_the_times_given():
    rec = RequestRecord(index=0, gen=4, scheduled=0.5, prompt_tokens_sent=3, sent=1.0, status=200)
    parser = StreamParser(rec)
    lines = [
        (usage_event(1), 1.25),
        ("", 1.25),
        (": keep-alive comment", 1.3),
        (usage_event(3, " t t"), 1.5),  # two tokens in one chunk
        (usage_event(4), 1.625),
        (usage_event(4, ""), 1.75),  # finish_reason chunk: no token
        ('data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}', 1.75),
        ("data: [DONE]", 1.875),
    ]
    for line, t in lines:
        parser.feed(line, t)
    assert parser.finished and rec.done_marker
    assert [(c.t, c.tokens) for c in rec.chunks] == [(1.25, 1), (1.5, 2), (1.625, 1), (1.75, 0)]
    assert (rec.usage_prompt_tokens, rec.usage_completion_tokens, rec.client_tokens) == (3, 4, 4)
    assert judge(rec, VLLM_FLAGS, expected_prompt_tokens=3) is None
    times = request_times(rec)
    assert times.ttft_ms == 250.0 and times.e2e_ms == 625.0 and times.tpot_ms == 125.0
    assert times.itl_ms is None and times.itl_null_reason == SEVERAL_TOKENS
    assert rec.send_lag_s == 0.5


def test_an_error_inside_a_200_stream_is_a_failure_with_its_message():
    rec = RequestRecord(index=0, gen=4, scheduled=0.0, sent=0.0, status=200)
    parser = StreamParser(rec)
    parser.feed(usage_event(1), 0.5)
    parser.feed('data: {"error": {"message": "engine died", "code": 500}}', 0.75)
    assert parser.finished
    assert judge(rec, VLLM_FLAGS) == "error inside a 200 stream: engine died"
    rec = RequestRecord(index=1, gen=4, scheduled=0.0, sent=0.0, status=200)
    StreamParser(rec).feed('data: {"object": "error", "message": "bad request"}', 0.5)
    assert rec.failure == "error inside a 200 stream: bad request"
    rec = RequestRecord(index=2, gen=4, scheduled=0.0, sent=0.0, status=200)
    StreamParser(rec).feed("data: {not json", 0.5)
    assert rec.failure.startswith("malformed stream event")


def finished(events, gen=4, flags=VLLM_FLAGS, prompt=None):
    rec = RequestRecord(index=0, gen=gen, scheduled=0.0, sent=0.0, status=200)
    parser = StreamParser(rec)
    for i, line in enumerate(events):
        parser.feed(line, 0.125 * (i + 1))
    return judge(rec, flags, prompt)


def test_a_200_is_not_success_count_the_tokens():
    done = "data: [DONE]"
    assert finished([done]) == "stream ended without tokens"
    assert finished([usage_event(1), usage_event(3), done]) == "fewer completion tokens than asked: 3 of 4"
    assert finished([usage_event(5), done]) == "more completion tokens than asked: 5 of 4"
    no_usage = 'data: {"choices": [{"index": 0, "text": " t"}]}'
    assert finished([no_usage, done]) == "completion token count unknown: the stream gave no usage"
    assert finished([usage_event(4)]) == "stream ended before [DONE]"
    assert finished([usage_event(4), done], prompt=5) == "prompt_tokens 3 != 5 sent"
    assert finished([usage_event(4), done], prompt=3) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one(script, gen=4, prompt=(11, 12, 13, 14, 15, 16, 17, 18), timeout_s=30.0, url=None):
    async with FakeOpenAIServer(lambda i, body: script) as server:
        async with CompletionClient(url or server.url, model="fake", request_timeout_s=timeout_s) as client:
            rec = await client.complete(7, list(prompt), gen, scheduled=123.0)
        return rec, server.bodies


def test_a_streamed_request_against_the_fake_server():
    rec, bodies = asyncio.run(one(tokens_script([1, 1, 1, 1])))
    assert rec.ok, rec.failure
    assert (rec.index, rec.scheduled, rec.status, rec.done_marker) == (7, 123.0, 200, True)
    assert [c.tokens for c in rec.chunks] == [1, 1, 1, 1]
    assert (rec.usage_prompt_tokens, rec.usage_completion_tokens, rec.prompt_tokens_sent) == (8, 4, 8)
    times = [rec.sent, *(c.t for c in rec.chunks), rec.done]
    assert times == sorted(times)
    assert bodies[0]["prompt"] == [11, 12, 13, 14, 15, 16, 17, 18] and bodies[0]["min_tokens"] == 4
    assert bodies[0]["ignore_eos"] is True and bodies[0]["stream_options"]["continuous_usage_stats"] is True


def test_server_failures_become_failed_records():
    cases = {
        "error inside a 200 stream: scripted boom": tokens_script([1], error="scripted boom"),
        "fewer completion tokens than asked: 3 of 4": tokens_script([1, 1, 1]),
        "stream ended before [DONE]": tokens_script([1, 1, 1, 1], end="no_done"),
        "stream ended without tokens": Script([]),
    }
    for expected, script in cases.items():
        rec, _ = asyncio.run(one(script))
        assert rec.failure == expected
    rec, _ = asyncio.run(one(Script(status=500)))
    assert rec.status == 500 and rec.failure.startswith("HTTP 500")
    rec, _ = asyncio.run(one(tokens_script([1, 1], end="cut")))
    assert rec.failure.startswith("RemoteProtocolError"), rec.failure


def test_connection_refused_and_timeout_are_failures_not_exceptions():
    rec, _ = asyncio.run(one(Script(), url=f"http://127.0.0.1:{free_port()}"))
    assert rec.failure.startswith("ConnectError") and rec.sent is not None and rec.done is not None
    rec, _ = asyncio.run(one(Script([Step(30.0, 1)]), timeout_s=0.25))
    assert rec.failure == "timed out after 0.25 s"


def test_the_serving_client_imports_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'transformers'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import deploybench.engines.serving.client, deploybench.engines.serving.load\n"
        "import deploybench.engines.serving.metrics, deploybench.engines.serving.steady\n"
        "import deploybench.engines.serving.slo, deploybench.engines.serving.reconcile\n"
        "import deploybench.engines.serving.token_prompts, deploybench.engines.serving.point\n"
        "assert not [m for m in sys.modules if m.partition('.')[0] in ('torch', 'transformers')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_prepared_request_goes_out_as_json_body_did_byte_for_byte():
    """What `complete` sends (a body encoded ahead, `content=`) is what httpx sent for `json=request_body(...)`."""
    cases = [
        ([5, 6, 7] * 700, 64, VLLM_FLAGS, "gpt-oss-20b", None),
        ([0, 201087], 1, VLLM_FLAGS, None, {"temperature": 0.7, "top_p": 0.9, "top_k": 20}),
        ('héllo wörld ✓ "quoted" \\ tab\t', 8, OPENAI_FLAGS, "m", None),  # non-ASCII kept, as httpx did
    ]

    async def prepared():
        out = []
        for prompt, gen, flags, model, extra in cases:
            async with CompletionClient("http://127.0.0.1:1", flags, model, extra_body=extra) as client:
                request = client.prepare(prompt, gen)
                before = client._http.build_request(
                    "POST", client.path, json=request_body(prompt, gen, flags, model, extra)
                )
                out.append((request, before, prompt, gen))
        return out

    for request, before, prompt, gen in asyncio.run(prepared()):
        assert request.http.content == before.content
        assert dict(request.http.headers) == dict(before.headers)  # Content-Type and Content-Length included
        assert (request.http.method, request.http.url) == (before.method, before.url)
        assert request.http.extensions == before.extensions  # the client's timeout
        assert request.gen == gen and request.prompt_tokens == (None if isinstance(prompt, str) else len(prompt))


def test_as_many_connections_as_requests_in_flight_and_kept_alive():
    """Above httpx's default limit of 100 connections, every request is in flight at once (none waits for a
    connection inside the client), and the next wave reuses the connections."""
    from deploybench.engines.serving.load import Sender, closed_loop
    from deploybench.engines.serving.token_prompts import TokenPrompts

    n = 120

    async def run():
        prompts = TokenPrompts(context=4, vocab_size=1000, seed=0)
        async with FakeOpenAIServer(lambda i, body: tokens_script([1, 1], delay_s=0.25)) as server:
            async with CompletionClient(server.url, model="fake", request_timeout_s=30) as client:
                loop = await closed_loop(Sender(client, prompts, 2), n, n_requests=2 * n)
                opened = client._http._transport.opened
            return loop, server, opened

    loop, server, opened = asyncio.run(run())
    assert [r.failure for r in loop.records] == [None] * 2 * n
    assert server.max_running == n  # all n streams at once
    # The second wave on the first wave's connections (a connection whose end came late is replaced: not asserted).
    assert n <= server.connections < 2 * n and opened == server.connections


def test_a_stream_is_read_to_its_end_so_its_connection_is_reused():
    async def run(script, requests=3):
        async with FakeOpenAIServer(lambda i, body: script) as server:
            async with CompletionClient(server.url, model="fake", request_timeout_s=5) as client:
                records = [await client.complete(i, [11, 12, 13], 4) for i in range(requests)]
            return records, server.connections

    records, connections = asyncio.run(run(tokens_script([1, 1, 1, 1])))
    assert all(r.ok for r in records) and connections < 3  # reused (every time, unless a body's end came late)
    # A body that does not end after [DONE]: the request stands (well within its timeout), the connection goes.
    records, connections = asyncio.run(run(tokens_script([1, 1, 1, 1], end="hold"), requests=2))
    assert [r.failure for r in records] == [None, None] and all(r.done_marker for r in records)
    assert connections == 2
    # Failures still end the connection's use as before, and the next request opens another.
    records, connections = asyncio.run(run(tokens_script([1, 1], end="cut"), requests=2))
    assert all(r.failure.startswith("RemoteProtocolError") for r in records) and connections == 2


def test_sniffio_is_installed():
    """httpcore imports sniffio each time it sets up a lock or an event (several per request); where it is not
    installed (anyio 4 no longer brings it), every one of those imports searches sys.path again, slower than the
    rest of a request's send. requirements.txt pins it; this says so where an environment lacks it."""
    import sniffio

    async def library() -> str:
        return sniffio.current_async_library()

    assert asyncio.run(library()) == "asyncio"


def test_a_connection_cancelled_in_its_close_is_not_reused(monkeypatch):
    """The read of a body's end after [DONE] has a deadline; where it passes (forced here: at once), the
    cancellation can land in httpcore's close and leave the connection's pool busy. Such a connection must
    be dropped, not handed to the next request (which would wait for it until its timeout)."""
    import deploybench.engines.serving.client as client_module
    from deploybench.engines.serving.point import LoadSpec, measure_load_point
    from deploybench.engines.serving.token_prompts import TokenPrompts

    monkeypatch.setattr(client_module, "END_AFTER_DONE_S", 1e-6)
    prompts = TokenPrompts(context=8, vocab_size=500, special_ids=[0, 1], seed=0)

    async def run():
        async with FakeOpenAIServer(lambda i, body: tokens_script([1, 1, 1, 1], delay_s=0.002)) as server:
            async with CompletionClient(server.url, model="fake", request_timeout_s=5) as client:
                spec = LoadSpec("concurrency", 2, n_requests=12)
                return await measure_load_point(client, prompts, 4, spec, metrics_interval_s=0.01)

    for _ in range(3):
        point = asyncio.run(run())
        assert point.failure is None and point.figures["server_metrics_errors"] == []
