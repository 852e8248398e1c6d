"""Per-request latencies and a load point's figures, from the client's raw records.

Per request (successes only): `ttft_ms` = first chunk carrying a token - sent; `e2e_ms` = last chunk
carrying a token - sent; `tpot_ms` = (e2e - ttft) / (n_out - 1), n_out the server's usage count
(vLLM's and MLPerf's TPOT; none for one token); `itl_ms` = the gaps between consecutive token chunks,
only where every chunk carried exactly one token (a chunk of several tokens hides the gaps inside it:
none, with the reason, rather than a gap divided among them).

A load point: percentiles of those over the requests that ran wholly inside the steady window (all
successful requests where there is none: `latency_scope` says which), with `stats.PERCENTILE_METHOD`
and the 95% interval of each median (`measure.uncertainty`, requests in order of sending); request,
output and total throughput and goodput over the steady window; the SLO verdict.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from deploybench.engines.serving.records import RequestRecord
from deploybench.engines.serving.steady import SteadyWindow, completion_t, in_window
from deploybench.measure.uncertainty import CI_METHOD, interval_figures
from deploybench.stats import PERCENTILE_METHOD, mean, percentile, supported_percentiles

QS = (50, 95, 99)
SEVERAL_TOKENS = "chunks carried several tokens"
UNKNOWN_TOKENS = "chunk token counts unknown"
SLO_METHOD = (
    "each target's percentile of the per-request values (type 7, at any n: below the n a tail percentile needs it "
    "lies between the largest values, which is conservative) at or under its limit, and no request failed"
)


@dataclass(frozen=True)
class RequestTimes:
    index: int
    sent: float
    output_tokens: int
    ttft_ms: float
    e2e_ms: float
    tpot_ms: float | None
    itl_ms: tuple[float, ...] | None
    itl_null_reason: str | None


def request_times(record: RequestRecord) -> RequestTimes | None:
    """A successful request's latencies; None for a failed one."""
    if not record.ok:
        return None
    chunks = record.token_chunks
    n = record.output_tokens
    ttft = (chunks[0].t - record.sent) * 1000
    e2e = (chunks[-1].t - record.sent) * 1000
    tpot = (e2e - ttft) / (n - 1) if n > 1 else None
    if any(c.tokens is None for c in chunks):
        itl, reason = None, UNKNOWN_TOKENS
    elif any(c.tokens > 1 for c in chunks):
        itl, reason = None, SEVERAL_TOKENS
    else:
        itl, reason = tuple((b.t - a.t) * 1000 for a, b in zip(chunks, chunks[1:])), None
    return RequestTimes(record.index, record.sent, n, ttft, e2e, tpot, itl, reason)


@dataclass(frozen=True)
class SloTarget:
    metric: str  # ttft_ms | tpot_ms | e2e_ms
    q: int  # the percentile the limit applies to
    limit: float

    @property
    def name(self) -> str:
        return f"{self.metric}_p{self.q}"


@dataclass(frozen=True)
class Slo:
    """Latency targets, e.g. from the config's `slo: {ttft_ms_p99: 500, tpot_ms_p99: 50}`. Each limit
    is also the per-request limit that goodput counts against."""

    targets: tuple[SloTarget, ...]

    @classmethod
    def from_config(cls, config: dict[str, float]) -> Slo:
        targets = []
        for key, limit in config.items():
            match = re.fullmatch(r"(ttft_ms|tpot_ms|e2e_ms)_p(\d{1,2})", key)
            if not match:
                raise ValueError(f"SLO target {key!r}: expected ttft_ms_pQ, tpot_ms_pQ or e2e_ms_pQ")
            targets.append(SloTarget(match[1], int(match[2]), float(limit)))
        return cls(tuple(targets))

    def request_meets(self, times: RequestTimes) -> bool:
        """Every target's metric at or under its limit (a request of one token has no TPOT to miss)."""
        for t in self.targets:
            value = getattr(times, t.metric)
            if value is not None and value > t.limit:
                return False
        return True

    def check(self, times: Sequence[RequestTimes], failed: int = 0) -> tuple[bool, str | None]:
        """Whether the load point meets every target (SLO_METHOD), and why not."""
        misses = [f"{failed} requests failed"] if failed else []
        if not times:
            misses.append("no successful request")
        for t in self.targets:
            values = [v for x in times if (v := getattr(x, t.metric)) is not None]
            value = percentile(values, t.q)
            if value is not None and value > t.limit:
                misses.append(f"{t.name} {value:.4g} > {t.limit:g}")
        return not misses, "; ".join(misses) or None

    def to_json(self) -> str:
        return json.dumps({t.name: t.limit for t in self.targets}, sort_keys=True)


def _latency_figures(times: Sequence[RequestTimes], metric: str, qs) -> tuple[dict, str | None, str | None]:
    """Percentiles, mean, raw samples (in order of sending) and the median's interval; why a tail
    percentile and why the interval is withheld."""
    samples = [v for t in times if (v := getattr(t, metric)) is not None]
    figures, tail_reason = supported_percentiles(samples, metric + "_p{q}", qs, "requests")
    interval, ci_reason = interval_figures(f"{metric}_p50", f"{metric}_n_eff", samples)
    return figures | interval | {f"{metric}_mean": mean(samples), f"{metric}_samples": samples}, tail_reason, ci_reason


def _itl_figures(times: Sequence[RequestTimes], qs) -> tuple[dict, str | None, str | None]:
    """Pooled gaps of all requests; why they are null (a request without per-token gaps) and why a
    tail percentile is withheld."""
    blocked = Counter(t.itl_null_reason for t in times if t.itl_ms is None)
    if blocked:
        figures = {f"itl_ms_p{q}": None for q in qs} | {"itl_ms_mean": None, "itl_ms_samples": []}
        reasons = ", ".join(f"{reason} in {n} of {len(times)} requests" for reason, n in sorted(blocked.items()))
        return figures, reasons, None
    gaps = [g for t in times for g in t.itl_ms]
    figures, tail_reason = supported_percentiles(gaps, "itl_ms_p{q}", qs, "gaps")
    return figures | {"itl_ms_mean": mean(gaps), "itl_ms_samples": gaps}, None, tail_reason


def _multi_token_fraction(records: Sequence[RequestRecord]) -> float | None:
    chunks = [c for r in records for c in r.token_chunks if c.tokens is not None]
    return sum(c.tokens > 1 for c in chunks) / len(chunks) if chunks else None


def _throughput(window: SteadyWindow, records: Sequence[RequestRecord], slo: Slo | None) -> tuple[dict, str | None]:
    names = ("request_rps", "output_tps", "total_tps", "goodput_rps")
    if window.start is None:
        return dict.fromkeys(names), window.reason
    seconds = window.duration_s
    figures = {
        "request_rps": window.requests_completed / seconds,
        "output_tps": None if window.output_tokens is None else window.output_tokens / seconds,
        "total_tps": None
        if window.output_tokens is None or window.prompt_tokens is None
        else (window.output_tokens + window.prompt_tokens) / seconds,
        "goodput_rps": None,
    }
    if slo is not None:
        good = [r for r in records if r.ok and window.contains(completion_t(r))]
        figures["goodput_rps"] = sum(slo.request_meets(request_times(r)) for r in good) / seconds
    return figures, window.reason


def serving_figures(records: Sequence[RequestRecord], window: SteadyWindow, slo: Slo | None = None, qs=QS) -> dict:
    """A load point's columns from all of its requests' records and its steady window."""
    records = sorted(records, key=lambda r: (r.sent is None, r.sent or 0.0, r.index))
    inside = in_window(records, window)
    scope, scope_name = (inside, "steady_window") if inside else (records, "all_requests")
    times = [t for r in scope if (t := request_times(r)) is not None]
    failures = Counter(r.failure for r in records if not r.ok)
    figures = {
        "requests_sent": len(records),
        "requests_ok": len(records) - sum(failures.values()),
        "requests_failed": sum(failures.values()),
        "failure_reasons": [f"{n} x {reason}" for reason, n in failures.most_common()],
        "latency_scope": scope_name,
        "latency_requests": len(times),
        "percentile_method": PERCENTILE_METHOD,
        "ci_method": CI_METHOD,
    }
    tail, ci = [], []
    for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
        part, tail_reason, ci_reason = _latency_figures(times, metric, qs)
        figures |= part
        tail += [tail_reason] if tail_reason else []
        ci += [ci_reason] if ci_reason else []
    itl, figures["itl_null_reason"], itl_tail = _itl_figures(times, qs)
    figures |= itl
    tail += [itl_tail] if itl_tail else []
    figures["tail_null_reason"] = "; ".join(tail) or None
    figures["ci_null_reason"] = "; ".join(ci) or None
    figures["chunks_multi_token_fraction"] = _multi_token_fraction(scope)
    sent = [r.sent for r in records if r.sent is not None]
    ends = [t for r in records if (t := completion_t(r)) is not None]
    cut = window.start is not None
    figures |= {
        "steady_window_s": window.duration_s,
        "steady_ramp_s": window.start - min(sent) if cut else None,
        "steady_drain_s": max(ends) - window.end if cut else None,
        "steady_output_tokens": window.output_tokens,
        "steady_prompt_tokens": window.prompt_tokens,
        "steady_requests": window.requests_completed,
        "steady_method": window.method,
        "steady_null_reason": window.reason,
    }
    throughput, figures["throughput_null_reason"] = _throughput(window, records, slo)
    figures |= throughput
    if slo is not None:
        met, why = slo.check(times, failed=sum(not r.ok for r in scope))
        attained = [slo.request_meets(t) for t in times]
        figures |= {
            "slo_json": slo.to_json(),
            "slo_met": met,
            "slo_miss_reason": why,
            "slo_attained_fraction": sum(attained) / len(scope) if scope else None,
        }
    return figures
