"""One load point end to end: server counters before, the load with `/metrics` sampled, counters
after, the steady window, every figure, and the verdicts (failed requests, invalid point).

    async with CompletionClient(url, model=name) as client:
        point = await measure_load_point(client, TokenPrompts(context, vocab, special), gen,
                                         LoadSpec("concurrency", 16, n_requests=160), slo, min_window_s=5)

Warm-up is the caller's (run a small point first and drop it): the counters' before/after reads
bracket this point's requests alone. `measure_load_point` fits `slo.search_concurrency` as `measure`
through a closure that builds the LoadSpec.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deploybench.engines.serving.client import CompletionClient
from deploybench.engines.serving.load import (
    DEFAULT_LAG_LIMITS,
    LagLimits,
    LoadRun,
    Sender,
    arrival_offsets,
    client_figures,
    closed_loop,
    open_loop,
)
from deploybench.engines.serving.metrics import Slo, serving_figures
from deploybench.engines.serving.reconcile import reconcile_tokens
from deploybench.engines.serving.records import RequestRecord
from deploybench.engines.serving.server_metrics import MetricsSampler, MetricsSnapshot, parse_metrics, window_summary
from deploybench.engines.serving.steady import SteadyWindow, closed_loop_window, open_loop_window

METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class LoadSpec:
    mode: str  # "concurrency" (closed loop, `load` slots) | "request_rate" (open loop, `load` requests/s)
    load: float
    n_requests: int | None = None
    duration_s: float | None = None
    burstiness: float = 1.0  # open loop: gamma shape (1 = Poisson)
    seed: int = 0  # open loop arrivals
    ramp_fraction: float | None = None  # open loop: cut this fraction of sends as ramp-up instead

    def figures(self) -> dict:
        closed = self.mode == "concurrency"
        return {
            "load_mode": self.mode,
            "load_concurrency": int(self.load) if closed else None,
            "load_request_rate_rps": None if closed else float(self.load),
            "load_burstiness": None if closed else self.burstiness,
            "load_seed": None if closed else self.seed,
            "load_n_requests": self.n_requests,
            "load_duration_s": self.duration_s,
        }


@dataclass
class LoadPoint:
    spec: LoadSpec
    run: LoadRun
    window: SteadyWindow
    figures: dict
    failure: str | None  # some requests failed: the point is a failed row
    invalid_reasons: list[str] = field(default_factory=list)  # the figures cannot be trusted

    @property
    def records(self) -> list[RequestRecord]:
        return self.run.records


async def _read(client: CompletionClient, errors: list[str]) -> MetricsSnapshot | None:
    try:
        status, text = await client.get_text(METRICS_PATH)
        if status == 200:
            return parse_metrics(text)
        errors.append(f"GET {METRICS_PATH}: HTTP {status}")
    except Exception as exc:  # a server without /metrics still gets its other figures
        errors.append(f"GET {METRICS_PATH}: {type(exc).__name__}: {exc}")
    return None


async def _run(client: CompletionClient, prompts, gen: int, spec: LoadSpec) -> LoadRun:
    send = Sender(client, prompts, gen)
    if spec.mode == "concurrency":
        return await closed_loop(send, int(spec.load), spec.n_requests, spec.duration_s, client.clock)
    if spec.mode == "request_rate":
        offsets = arrival_offsets(spec.load, spec.burstiness, spec.seed, spec.n_requests, spec.duration_s)
        return await open_loop(send, offsets, spec.load, client.clock)
    raise ValueError(f"load mode {spec.mode!r}: expected concurrency or request_rate")


async def measure_load_point(
    client: CompletionClient,
    prompts,
    gen: int,
    spec: LoadSpec,
    slo: Slo | None = None,
    server_metrics: bool = True,
    metrics_interval_s: float = 0.5,
    min_window_s: float = 0.0,
    lag_limits: LagLimits = DEFAULT_LAG_LIMITS,
) -> LoadPoint:
    """Run `spec` through `client` (prompts[i] for request i, `gen` tokens each) and compute its figures."""
    errors: list[str] = []
    before = await _read(client, errors) if server_metrics else None
    if server_metrics:

        async def fetch() -> str:
            status, text = await client.get_text(METRICS_PATH)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            return text

        async with MetricsSampler(fetch, metrics_interval_s, clock=client.clock) as sampler:
            run = await _run(client, prompts, gen, spec)
        snapshots, errors = sampler.snapshots, errors + sampler.errors[:3]
        after = await _read(client, errors)
    else:
        run, snapshots, after = await _run(client, prompts, gen, spec), [], None
    if spec.mode == "concurrency":
        window = closed_loop_window(run.records, int(spec.load))
    else:
        window = open_loop_window(run.records, spec.ramp_fraction)
    figures = spec.figures() | serving_figures(run.records, window, slo)
    client_part, lagged = client_figures(run, lag_limits)
    reconciled = reconcile_tokens(run.records, before, after)
    figures |= client_part | reconciled.figures()
    if server_metrics:
        figures |= window_summary(snapshots, window.start, window.end)
        figures["server_metrics_errors"] = errors
    invalid = [r for r in (lagged, window.too_short(min_window_s)) if r]
    invalid += list(reconciled.mismatches)
    failed = figures["requests_failed"]
    failure = f"{failed} of {len(run.records)} requests failed: {figures['failure_reasons'][0]}" if failed else None
    return LoadPoint(spec, run, window, figures, failure, invalid)
