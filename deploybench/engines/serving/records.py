"""What the serving client records per request: raw times and token counts, no arithmetic.

Times are `time.perf_counter()` seconds (any monotonic clock works: every figure is a difference of
two of them). A request is a success only when the stream delivered exactly `gen` completion tokens
by the server's usage count, with no error; anything else carries its failure reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Chunk:
    """One streamed event that carried a choice: when it arrived and how many completion tokens it
    carried (the delta of the continuous usage count; None where the stream gives no per-chunk usage)."""

    t: float
    tokens: int | None
    chars: int = 0  # length of the text it carried

    @property
    def carries_output(self) -> bool:
        """At least one token (by usage), or text where the token count is unknown."""
        return self.tokens > 0 if self.tokens is not None else self.chars > 0


@dataclass
class RequestRecord:
    """One request as the client saw it. `scheduled`: when the load generator wanted it sent;
    `sent`: just before the HTTP request went out; `done`: when the stream ended (or failed)."""

    index: int
    gen: int
    scheduled: float
    prompt_tokens_sent: int | None = None  # len(token ids) for a token-id prompt, None for text
    sent: float | None = None
    done: float | None = None
    status: int | None = None
    chunks: list[Chunk] = field(default_factory=list)
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    done_marker: bool = False  # the stream's `data: [DONE]` arrived
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def send_lag_s(self) -> float | None:
        return None if self.sent is None else self.sent - self.scheduled

    @property
    def token_chunks(self) -> list[Chunk]:
        return [c for c in self.chunks if c.carries_output]

    @property
    def first_token_t(self) -> float | None:
        chunks = self.token_chunks
        return chunks[0].t if chunks else None

    @property
    def last_token_t(self) -> float | None:
        chunks = self.token_chunks
        return chunks[-1].t if chunks else None

    @property
    def client_tokens(self) -> int | None:
        """Completion tokens summed over the chunks; None where any chunk's count is unknown."""
        if any(c.tokens is None for c in self.chunks):
            return None
        return sum(c.tokens for c in self.chunks)

    @property
    def output_tokens(self) -> int | None:
        """The server's usage count where it gave one, else the client's sum."""
        return self.usage_completion_tokens if self.usage_completion_tokens is not None else self.client_tokens

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RequestRecord:
        data = dict(data)
        data["chunks"] = [Chunk(**c) for c in data.get("chunks", [])]
        return cls(**data)
