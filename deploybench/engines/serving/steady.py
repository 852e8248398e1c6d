"""The steady-state window of a load run: ramp-up and drain cut off, for throughput and energy.

Closed loop, N slots, R requests (as ML.ENERGY cuts it): from the moment the N-th request got its
first token (every slot busy, every prefill of the first wave done) to the (R - N)-th completion
(after it fewer than N requests remain: the drain). It exists only where R - N completions come after
N first tokens: R well above 2N.

Open loop: from when the number of requests in flight first reaches its long-run level (the
time-weighted mean over the second half of the sending period, rounded down), or, given
`ramp_fraction`, from the send of the first request after that fraction of them; to the last send
(after it the load only drains).

Counts inside the window (start, end], half-open so that back-to-back windows add up: output tokens
of every chunk that arrived in it (the server made them, failed requests included), requests that
completed in it successfully (their last token), prompt tokens of the requests whose first token
arrived in it (their prefill finished there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from deploybench.engines.serving.records import RequestRecord

CLOSED_METHOD = "closed loop: N-th first token to the (R - N)-th completion"
OPEN_METHOD = "open loop: in-flight count first at its long-run level to the last send"
OPEN_FRACTION_METHOD = "open loop: send after the first {fraction:g} of requests to the last send"


@dataclass(frozen=True)
class SteadyWindow:
    start: float | None  # None: no steady window (reason says why)
    end: float | None
    output_tokens: int | None  # None where a chunk in the window has no token count
    requests_completed: int | None
    prompt_tokens: int | None
    method: str
    reason: str | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.start is None else self.end - self.start

    def contains(self, t: float | None) -> bool:
        return t is not None and self.start is not None and self.start < t <= self.end

    def too_short(self, min_s: float) -> str | None:
        """Why the window cannot serve (none, or shorter than `min_s`, e.g. the energy counter's minimum)."""
        if self.start is None:
            return self.reason
        if self.duration_s < min_s:
            return f"steady window {self.duration_s:.3f} s is shorter than the {min_s:g} s needed"
        return None


def completion_t(record: RequestRecord) -> float | None:
    """When a request finished: its last token for a success, the end of its stream otherwise."""
    return record.last_token_t if record.ok else record.done


def _none(method: str, reason: str) -> SteadyWindow:
    return SteadyWindow(None, None, None, None, None, method, reason)


def _counted(records: Sequence[RequestRecord], start: float, end: float, method: str) -> SteadyWindow:
    window = SteadyWindow(start, end, None, None, None, method)
    chunks = [c for r in records for c in r.chunks if window.contains(c.t)]
    unknown = sum(c.tokens is None for c in chunks)
    tokens = None if unknown else sum(c.tokens for c in chunks)
    completed = sum(r.ok and window.contains(completion_t(r)) for r in records)
    prefilled = [r for r in records if window.contains(r.first_token_t)]
    prompt = [r.usage_prompt_tokens if r.usage_prompt_tokens is not None else r.prompt_tokens_sent for r in prefilled]
    reasons = []
    if unknown:
        reasons.append(f"output tokens unknown: {unknown} chunks in the window carry no token count")
    if any(p is None for p in prompt):
        reasons.append("prompt tokens unknown: a text prompt without usage")
    prompt_tokens = None if any(p is None for p in prompt) else sum(prompt)
    return SteadyWindow(start, end, tokens, completed, prompt_tokens, method, "; ".join(reasons) or None)


def closed_loop_window(records: Sequence[RequestRecord], concurrency: int) -> SteadyWindow:
    """The window of a closed loop of `concurrency` slots over `records` (all of the run's requests)."""
    n, r = concurrency, len(records)
    firsts = sorted(t for rec in records if (t := rec.first_token_t) is not None)
    ends = sorted(t for rec in records if (t := completion_t(rec)) is not None)
    if r - n < 1:
        return _none(CLOSED_METHOD, f"no steady window: {r} requests at concurrency {n} (send well over 2N)")
    if len(firsts) < n:
        return _none(CLOSED_METHOD, f"no steady window: only {len(firsts)} of {r} requests got a first token")
    if len(ends) < r - n:
        return _none(CLOSED_METHOD, f"no steady window: only {len(ends)} of {r} requests ended")
    start, end = firsts[n - 1], ends[r - n - 1]
    if end <= start:
        return _none(
            CLOSED_METHOD,
            f"no steady window: the {r - n}th completion came before the {n}th first token "
            f"({r} requests at concurrency {n}: send more than 2N)",
        )
    return _counted(records, start, end, CLOSED_METHOD)


def _in_flight_level(records: Sequence[RequestRecord], first: float, last: float) -> float:
    """Time-weighted mean number of requests in flight over [first, last]."""
    events = sorted([(r.sent, 1) for r in records] + [(t, -1) for r in records if (t := completion_t(r)) is not None])
    area, level, previous = 0.0, 0, first
    for t, step in events:
        clipped = min(max(t, first), last)
        area += level * (clipped - previous)
        previous, level = clipped, level + step
    area += level * (last - previous)
    return area / (last - first) if last > first else 0.0


def open_loop_window(records: Sequence[RequestRecord], ramp_fraction: float | None = None) -> SteadyWindow:
    """The window of an open loop over `records` (all of the run's requests)."""
    sent = sorted((r for r in records if r.sent is not None), key=lambda r: r.sent)
    method = OPEN_METHOD if ramp_fraction is None else OPEN_FRACTION_METHOD.format(fraction=ramp_fraction)
    if len(sent) < 2:
        return _none(method, f"no steady window: {len(sent)} requests sent (needs at least 2)")
    first, last = sent[0].sent, sent[-1].sent
    if ramp_fraction is not None:
        start = sent[min(math.floor(ramp_fraction * len(sent)), len(sent) - 1)].sent
    else:
        target = math.floor(_in_flight_level(records, (first + last) / 2, last))
        start, in_flight = first, 0
        events = sorted([(r.sent, 1) for r in sent] + [(t, -1) for r in sent if (t := completion_t(r)) is not None])
        for t, step in events:
            in_flight += step
            if in_flight >= target:
                start = t
                break
    if last <= start:
        return _none(method, f"no steady window: the ramp-up lasted until the last send ({len(sent)} requests)")
    return _counted(records, start, last, method)


def in_window(records: Sequence[RequestRecord], window: SteadyWindow) -> list[RequestRecord]:
    """The requests that ran wholly inside the window: sent at or after its start, ended by its end."""
    if window.start is None:
        return []
    return [
        r
        for r in records
        if r.sent is not None and r.sent >= window.start and (t := completion_t(r)) is not None and t <= window.end
    ]
