"""An asyncio streaming client for OpenAI-compatible `/v1/completions`, recording raw times.

Each request streams (`stream: true`) exactly `gen` tokens where the engine can be told to
(`ignore_eos`, `min_tokens`: flags per engine), asks for usage on every chunk
(`stream_options.continuous_usage_stats`) so each chunk's token count is the delta of the running
completion count, and records when it was due, when it was sent, each chunk's arrival and the final
usage. A 200 is not success: an `error` object inside the stream, a stream without tokens, a count
other than `gen` (by the server's usage), or a stream cut before `[DONE]` is a failure with its reason.
Every request has a timeout. The parsing (`StreamParser`) is separate from the HTTP so that tests can
feed it lines at exact times.

A request's body can be built and encoded ahead of its send (`CompletionClient.prepare`: the bytes and
headers httpx sent for `json=`), so that a load generator keeps that work off the moment a request is due.
Each request in flight has a connection of its own, taken from a free list (`ConnectionPerRequest`): as
many connections as requests in flight, no limit, and no pool-wide bookkeeping per request (httpcore's
pool scans every connection and queued request on each send and release and hands one idle connection
to several requests, retrying the losers: 256 requests sent at once took 120 ms to 2.7 s through it,
20 ms through the free list). A stream is read to its end after `[DONE]`, so that its connection is kept
for the next request (broken off at `[DONE]`, every request opened a new connection).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from deploybench.engines.serving.records import Chunk, RequestRecord

COMPLETIONS_PATH = "/v1/completions"
JSON_HEADERS = {"Content-Type": "application/json"}  # what httpx adds for json=, beside the Content-Length
END_AFTER_DONE_S = 0.1  # how long the body's end may follow its [DONE] for the connection to be kept
KEEPALIVE_EXPIRY_S = 2.0  # an idle connection older than this is not reused (uvicorn closes them after 5 s)


@dataclass(frozen=True)
class EngineFlags:
    """What an engine's completions endpoint accepts (an unknown field may be a 400 elsewhere)."""

    token_ids: bool = True  # `prompt` may be a list of token ids (vLLM, SGLang)
    ignore_eos: bool = True
    min_tokens: bool = True
    include_usage: bool = True  # stream_options.include_usage: a final usage chunk
    continuous_usage: bool = True  # stream_options.continuous_usage_stats: usage on every chunk (vLLM)
    expect_done: bool = True  # the stream ends with `data: [DONE]`


VLLM_FLAGS = EngineFlags()
# An endpoint that takes text and OpenAI's own fields only: output length by max_tokens and usage alone.
OPENAI_FLAGS = EngineFlags(token_ids=False, ignore_eos=False, min_tokens=False, continuous_usage=False)


def request_body(prompt: Sequence[int] | str, gen: int, flags: EngineFlags, model: str | None = None, extra=None):
    """The JSON body of one streaming completion of `gen` tokens (greedy: temperature 0)."""
    if isinstance(prompt, str):
        text_prompt = prompt
    elif flags.token_ids:
        text_prompt = [int(t) for t in prompt]
    else:
        raise ValueError("this engine takes text prompts, not token ids")
    body = {"prompt": text_prompt, "max_tokens": gen, "stream": True, "temperature": 0.0}
    if model is not None:
        body["model"] = model
    if flags.ignore_eos:
        body["ignore_eos"] = True
    if flags.min_tokens:
        body["min_tokens"] = gen
    if flags.include_usage or flags.continuous_usage:
        options = {"include_usage": True}
        if flags.continuous_usage:
            options["continuous_usage_stats"] = True
        body["stream_options"] = options
    body.update(extra or {})
    return body


def encode_body(body: dict) -> bytes:
    """`body` as httpx encodes `json=body` (compact separators, UTF-8, no NaN): a body encoded ahead of its
    request goes out byte for byte as it did when httpx encoded it at the send."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class PreparedRequest:
    """One completion request built ahead of its send, body encoded (`CompletionClient.prepare`)."""

    http: httpx.Request  # POST path, JSON_HEADERS, content encode_body(request_body(...)): the client's to send
    gen: int
    prompt_tokens: int | None  # token ids in the prompt; None for a text prompt


class StreamParser:
    """Turns server-sent-event lines, each with its arrival time, into the record's chunks and usage."""

    def __init__(self, record: RequestRecord):
        self.record = record
        self._completion_so_far = 0
        self.finished = False  # [DONE] or an error: read no further

    def fail(self, reason: str) -> None:
        if self.record.failure is None:
            self.record.failure = reason
        self.finished = True

    def feed(self, line: str, t: float) -> None:
        line = line.strip()
        if not line.startswith("data:"):
            return  # blank separators, comments (":"), event/id fields
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            self.record.done_marker = True
            self.finished = True
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            self.fail(f"malformed stream event: {data[:200]!r}")
            return
        if not isinstance(event, dict):
            self.fail(f"malformed stream event: {data[:200]!r}")
        elif "error" in event or event.get("object") == "error":
            error = event.get("error", event)
            message = error.get("message", error) if isinstance(error, dict) else error
            self.fail(f"error inside a {self.record.status} stream: {message}")
        else:
            self._event(event, t)

    def _event(self, event: dict, t: float) -> None:
        usage = event.get("usage") or None
        tokens = None
        if usage is not None:
            completion = usage.get("completion_tokens")
            if completion is not None:
                tokens = completion - self._completion_so_far
                self._completion_so_far = completion
                self.record.usage_completion_tokens = completion
            if usage.get("prompt_tokens") is not None:
                self.record.usage_prompt_tokens = usage["prompt_tokens"]
        choices = event.get("choices") or []
        if choices:  # a usage-only event (choices empty) is the final count, not a chunk of output
            text = choices[0].get("text") or ""
            self.record.chunks.append(Chunk(t=t, tokens=tokens, chars=len(text)))


def judge(record: RequestRecord, flags: EngineFlags, expected_prompt_tokens: int | None = None) -> str | None:
    """The first reason this request failed (set on the record), None for a success."""
    if record.failure is None:
        n = record.output_tokens
        if not record.token_chunks:
            record.failure = "stream ended without tokens"
        elif n is None:
            record.failure = "completion token count unknown: the stream gave no usage"
        elif n != record.gen:
            fewer = "fewer" if n < record.gen else "more"
            record.failure = f"{fewer} completion tokens than asked: {n} of {record.gen}"
        elif flags.expect_done and not record.done_marker:
            record.failure = "stream ended before [DONE]"
        elif expected_prompt_tokens is not None and record.usage_prompt_tokens not in (None, expected_prompt_tokens):
            record.failure = f"prompt_tokens {record.usage_prompt_tokens} != {expected_prompt_tokens} sent"
    return record.failure


async def _read_to_end(lines: AsyncIterator[str]) -> None:
    """Read a stream's end after its `[DONE]` (the chunked body's last, empty chunk, which follows at once):
    a response closed before its end closes its connection, and the next request would open a new one.
    A server that sends more, or does not end the body within `END_AFTER_DONE_S`, loses the connection,
    not the request."""
    try:
        async with asyncio.timeout(END_AFTER_DONE_S):
            async for line in lines:
                if line.strip():
                    return
    except (TimeoutError, httpx.HTTPError):
        pass


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that, once closed, hands its connection back: `release(True)` where it was read to its
    end and closed, `release(False)` where not (broken off, failed, or cancelled, the close included)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[bool], Awaitable[None]]):
        self._stream, self._release, self._complete = stream, release, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part
        self._complete = True

    async def aclose(self) -> None:
        closed = False
        try:
            await self._stream.aclose()
            closed = True
        finally:
            release, self._release = self._release, None
            if release is not None:
                await release(self._complete and closed)


class ConnectionPerRequest(httpx.AsyncBaseTransport):
    """Each request in flight on a connection of its own: an idle one from a free list (the most recently
    freed first, so the fewest go cold) or a new one; no limit on how many. Each connection is an
    httpx.AsyncHTTPTransport holding one keep-alive connection (httpx's keep-alive expiry, errors and
    timeouts), so sending never walks a pool of hundreds. Only a connection whose response was read to its
    end goes back to the free list; any other is closed and dropped (a request cancelled inside httpcore's
    pool can leave it marked busy, and a one-connection pool would then hold the next request until its
    pool timeout). A connection idle for `keepalive_expiry` is not reused (a new one is opened): well below
    the 5 s after which uvicorn (vLLM, transformers serve) by default closes an idle one, so that a request
    never goes out on a connection the server is closing."""

    def __init__(self, keepalive_expiry: float = KEEPALIVE_EXPIRY_S):
        self._limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_expiry)
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[httpx.AsyncHTTPTransport] = []
        self._open: set[httpx.AsyncHTTPTransport] = set()
        self.opened = 0  # connections (transports) made: the most requests in flight at once, where all ended well

    def _take(self) -> httpx.AsyncHTTPTransport:
        if self._idle:
            return self._idle.pop()
        if self._ssl is None:  # one context for all (building one reads the CA bundle: milliseconds)
            self._ssl = httpx.create_ssl_context(trust_env=False)
        transport = httpx.AsyncHTTPTransport(verify=self._ssl, trust_env=False, limits=self._limits)
        self._open.add(transport)
        self.opened += 1
        return transport

    async def _give_back(self, transport: httpx.AsyncHTTPTransport, reusable: bool) -> None:
        if reusable:
            self._idle.append(transport)
            return
        self._open.discard(transport)
        try:
            await transport.aclose()
        except BaseException:  # cancelled or failed while closing: dropped all the same
            pass

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._take()
        try:
            response = await transport.handle_async_request(request)
        except BaseException:
            await self._give_back(transport, False)
            raise
        response.stream = _ReleasingStream(response.stream, lambda complete: self._give_back(transport, complete))
        return response

    async def aclose(self) -> None:
        self._idle.clear()
        transports, self._open = self._open, set()
        for transport in transports:
            await transport.aclose()


class CompletionClient:
    """`async with CompletionClient(url) as client: record = await client.complete(i, prompt, gen, due)`,
    or `client.prepare(prompt, gen)` ahead and `await client.send(i, prepared, due)` when due.

    A connection per request in flight without a limit (`ConnectionPerRequest`: the load generator bounds
    the requests in flight), no proxies from the environment, `request_timeout_s` over each whole request
    (connect to last byte).
    """

    def __init__(
        self,
        base_url: str,
        flags: EngineFlags = VLLM_FLAGS,
        model: str | None = None,
        request_timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
        extra_body: dict | None = None,
        path: str = COMPLETIONS_PATH,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url, self.flags, self.model, self.path = base_url, flags, model, path
        self.request_timeout_s, self.clock, self.extra_body = request_timeout_s, clock, extra_body
        self._timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> CompletionClient:
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self._timeout,
            trust_env=False,
            transport=self._transport or ConnectionPerRequest(),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.aclose()
        self._http = None

    async def get_text(self, path: str, timeout_s: float = 10.0) -> tuple[int, str]:
        """(status, body) of a GET (`/metrics`, `/health`)."""
        response = await self._http.get(path, timeout=timeout_s)
        return response.status_code, response.text

    def prepare(self, prompt: Sequence[int] | str, gen: int) -> PreparedRequest:
        """The request for `prompt` and `gen` tokens, built (URL, headers, timeout) and its body encoded: what
        `send` sends, as `json=request_body(...)` would have (the same bytes and headers)."""
        body = encode_body(request_body(prompt, gen, self.flags, self.model, self.extra_body))
        http = self._http.build_request("POST", self.path, content=body, headers=JSON_HEADERS)
        return PreparedRequest(http, gen, None if isinstance(prompt, str) else len(prompt))

    async def complete(
        self,
        index: int,
        prompt: Sequence[int] | str,
        gen: int,
        scheduled: float | None = None,
        expected_prompt_tokens: int | None = None,
    ) -> RequestRecord:
        """Send one streaming request and return its record (never raises for a failed request)."""
        return await self.send(index, self.prepare(prompt, gen), scheduled, expected_prompt_tokens)

    async def send(
        self,
        index: int,
        request: PreparedRequest,
        scheduled: float | None = None,
        expected_prompt_tokens: int | None = None,
    ) -> RequestRecord:
        """Send one prepared streaming request and return its record (never raises for a failed request)."""
        record = RequestRecord(
            index=index,
            gen=request.gen,
            scheduled=self.clock() if scheduled is None else scheduled,
            prompt_tokens_sent=request.prompt_tokens,
        )
        if expected_prompt_tokens is None:
            expected_prompt_tokens = record.prompt_tokens_sent
        parser = StreamParser(record)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                record.sent = self.clock()
                response = await self._http.send(request.http, stream=True)
                try:
                    record.status = response.status_code
                    if response.status_code != 200:
                        text = (await response.aread()).decode(errors="replace")
                        parser.fail(f"HTTP {response.status_code}: {text[:300]}")
                    else:
                        lines = response.aiter_lines()
                        async for line in lines:
                            parser.feed(line, self.clock())
                            if parser.finished:
                                break
                        if record.done_marker:
                            await _read_to_end(lines)
                finally:
                    await response.aclose()
        except TimeoutError:
            parser.fail(f"timed out after {self.request_timeout_s:g} s")
        except httpx.HTTPError as exc:
            parser.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            record.done = self.clock()
        judge(record, self.flags, expected_prompt_tokens)
        return record
