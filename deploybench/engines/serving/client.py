"""An asyncio streaming client for OpenAI-compatible `/v1/completions`, recording raw times.

Each request streams (`stream: true`) exactly `gen` tokens where the engine can be told to
(`ignore_eos`, `min_tokens`: flags per engine), asks for usage on every chunk
(`stream_options.continuous_usage_stats`) so each chunk's token count is the delta of the running
completion count, and records when it was due, when it was sent, each chunk's arrival and the final
usage. A 200 is not success: an `error` object inside the stream, a stream without tokens, a count
other than `gen` (by the server's usage), or a stream cut before `[DONE]` is a failure with its reason.
Every request has a timeout. The parsing (`StreamParser`) is separate from the HTTP so that tests can
feed it lines at exact times.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from deploybench.engines.serving.records import Chunk, RequestRecord

COMPLETIONS_PATH = "/v1/completions"


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


class CompletionClient:
    """`async with CompletionClient(url) as client: record = await client.complete(i, prompt, gen, due)`.

    One connection pool without a size limit (the load generator bounds the requests in flight), no
    proxies from the environment, `request_timeout_s` over each whole request (connect to last byte).
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
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            trust_env=False,
            transport=self._transport,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.aclose()
        self._http = None

    async def get_text(self, path: str, timeout_s: float = 10.0) -> tuple[int, str]:
        """(status, body) of a GET (`/metrics`, `/health`)."""
        response = await self._http.get(path, timeout=timeout_s)
        return response.status_code, response.text

    async def complete(
        self,
        index: int,
        prompt: Sequence[int] | str,
        gen: int,
        scheduled: float | None = None,
        expected_prompt_tokens: int | None = None,
    ) -> RequestRecord:
        """Send one streaming request and return its record (never raises for a failed request)."""
        body = request_body(prompt, gen, self.flags, self.model, self.extra_body)
        record = RequestRecord(
            index=index,
            gen=gen,
            scheduled=self.clock() if scheduled is None else scheduled,
            prompt_tokens_sent=None if isinstance(prompt, str) else len(prompt),
        )
        if expected_prompt_tokens is None:
            expected_prompt_tokens = record.prompt_tokens_sent
        parser = StreamParser(record)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                record.sent = self.clock()
                async with self._http.stream("POST", self.path, json=body) as response:
                    record.status = response.status_code
                    if response.status_code != 200:
                        text = (await response.aread()).decode(errors="replace")
                        parser.fail(f"HTTP {response.status_code}: {text[:300]}")
                    else:
                        async for line in response.aiter_lines():
                            parser.feed(line, self.clock())
                            if parser.finished:
                                break
        except TimeoutError:
            parser.fail(f"timed out after {self.request_timeout_s:g} s")
        except httpx.HTTPError as exc:
            parser.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            record.done = self.clock()
        judge(record, self.flags, expected_prompt_tokens)
        return record
