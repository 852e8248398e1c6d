"""Token counts reconciled three ways: the client's chunks, the responses' usage, the server's counters.

Output tokens: the client's sum of per-chunk counts (continuous usage deltas), the usage
`completion_tokens` of each response, and the rise of the server's generation-token counter between
a `/metrics` read before the run and one after it. Prompt tokens: the token ids sent, the usage
`prompt_tokens`, the prompt-token counter's rise. The counters see every request the server ran, so
the before/after reads must bracket this run's requests and nothing else (no warm-up in between).
Failed requests count too: the server generated their tokens. A quantity unknown on one side (text
prompts, no continuous usage, no `/metrics`) is left out of the comparison, and the row says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deploybench.engines.serving.records import RequestRecord
from deploybench.engines.serving.server_metrics import MetricsSnapshot

SHOW = 3  # requests named in a per-request mismatch


def _total(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(values)


def _delta(before: MetricsSnapshot | None, after: MetricsSnapshot | None, quantity: str) -> int | None:
    if before is None or after is None or quantity not in before.values or quantity not in after.values:
        return None
    return round(after.values[quantity] - before.values[quantity])


@dataclass(frozen=True)
class TokenReconciliation:
    client_output_tokens: int | None
    usage_output_tokens: int | None
    server_output_tokens: int | None
    sent_prompt_tokens: int | None
    usage_prompt_tokens: int | None
    server_prompt_tokens: int | None
    server_preemptions: int | None
    mismatches: tuple[str, ...]
    unchecked: tuple[str, ...]  # comparisons left out, and why

    @property
    def agree(self) -> bool:
        return not self.mismatches

    def figures(self) -> dict:
        return {
            "client_output_tokens": self.client_output_tokens,
            "usage_output_tokens": self.usage_output_tokens,
            "server_output_tokens": self.server_output_tokens,
            "sent_prompt_tokens": self.sent_prompt_tokens,
            "usage_prompt_tokens": self.usage_prompt_tokens,
            "server_prompt_tokens": self.server_prompt_tokens,
            "server_preemptions": self.server_preemptions,
            "tokens_reconciled": self.agree,
            "token_mismatch_reason": "; ".join(self.mismatches) or None,
            "token_unchecked_reason": "; ".join(self.unchecked) or None,
        }


def _compare(kind: str, counts: dict[str, int | None], mismatches: list, unchecked: list) -> None:
    known = {source: n for source, n in counts.items() if n is not None}
    missing = [source for source, n in counts.items() if n is None]
    if missing:
        unchecked.append(f"{kind} tokens: {', '.join(missing)} unknown")
    if len(set(known.values())) > 1:
        mismatches.append(f"{kind} tokens disagree: " + ", ".join(f"{s} {n}" for s, n in known.items()))


def reconcile_tokens(
    records: Sequence[RequestRecord], before: MetricsSnapshot | None = None, after: MetricsSnapshot | None = None
) -> TokenReconciliation:
    """Compare the three counts per request (client vs usage) and in total (all three)."""
    mismatches: list[str] = []
    unchecked: list[str] = []
    per_request = [
        f"request {r.index}: client {r.client_tokens}, usage {r.usage_completion_tokens}"
        for r in records
        if None not in (r.client_tokens, r.usage_completion_tokens) and r.client_tokens != r.usage_completion_tokens
    ]
    if per_request:
        more = f" (and {len(per_request) - SHOW} more)" if len(per_request) > SHOW else ""
        mismatches.append(
            f"{len(per_request)} requests' chunk sums differ from their usage: " + "; ".join(per_request[:SHOW]) + more
        )
    output = {
        "client": _total([r.client_tokens for r in records]),
        "usage": _total([r.usage_completion_tokens for r in records]),
        "server": _delta(before, after, "generation_tokens"),
    }
    prompt = {
        "sent": _total([r.prompt_tokens_sent for r in records]),
        "usage": _total([r.usage_prompt_tokens for r in records]),
        "server": _delta(before, after, "prompt_tokens"),
    }
    _compare("output", output, mismatches, unchecked)
    _compare("prompt", prompt, mismatches, unchecked)
    return TokenReconciliation(
        output["client"],
        output["usage"],
        output["server"],
        prompt["sent"],
        prompt["usage"],
        prompt["server"],
        _delta(before, after, "preemptions"),
        tuple(mismatches),
        tuple(unchecked),
    )
