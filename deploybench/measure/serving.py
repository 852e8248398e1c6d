"""One serving load point measured, as one row: idle power, a warm-up at the measured shape, the load point under
the GPU monitor, its figures and its verdict.

deploybench.measure.serve_group runs the group's server and calls `measure_point` for each load point left to
measure; the load itself is deploybench.engines.serving.point (client, load generator, steady window, figures,
token reconciliation, client lag). In order:

1. idle power (GPU only), with the server up and idle, after a cool-down decided by temperature;
2. warm-up: a short discarded point at the measured shape (context, gen, decoding): concurrency N sends N
   requests N at a time, a request rate its rate rounded up (at most `MAX_WARMUP`), with prompts of their own;
3. the load point inside the energy meter (clocks, throttling, violations) and the GPU monitor (energy counter,
   power, utilisation, the server's memory), all on the client's clock;
4. its figures: energy gross and idle-subtracted over the steady window, per output token and per completed
   request; the server's GPU memory and the GPU utilisation; the engine's name, version, command and start-up.

A point where a request failed (an error inside a 200, fewer tokens than asked, a refused connection) is a failed
row: `requests_failed`, or `server_died` where the server is gone, with the tail of its log. Expected failures of
the whole group (the engine not found, a server that does not start) are rows too (`failed_point`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import platform
import shlex
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from deploybench.engines.base import GenerationSettings
from deploybench.engines.serving import deploy
from deploybench.engines.serving.client import CompletionClient
from deploybench.engines.serving.errors import EngineNotFoundError, ServingError, UnsupportedModelError
from deploybench.engines.serving.load import Sender, closed_loop
from deploybench.engines.serving.metrics import Slo
from deploybench.engines.serving.point import LoadSpec, measure_load_point
from deploybench.enums import Device, FailureKind, LoadMode, Status
from deploybench.instruments import energy, host, nvml
from deploybench.instruments.energy import SOURCE_COUNTER, ratio
from deploybench.instruments.energy_meter import EnergyMeter, measure_idle
from deploybench.instruments.server_gpu import GpuMonitor
from deploybench.plan.spec import CellSpec
from deploybench.results.archive import utc_now
from deploybench.results.identity import identity_columns
from deploybench.stats import PERCENTILE_METHOD

MAX_WARMUP = 64  # requests of a request-rate point's warm-up
LOG_TAIL_CHARS = 4000


def failure_kind(exc: BaseException) -> FailureKind:
    """The failure kind of a group's expected failure (a ServingError)."""
    if isinstance(exc, EngineNotFoundError):
        return FailureKind.ENGINE_NOT_FOUND
    if isinstance(exc, UnsupportedModelError):
        return FailureKind.UNSUPPORTED
    return FailureKind.SERVER_START


@dataclass
class Target:
    """The server a group's load points load, and what its rows say about it."""

    base_url: str
    model_name: str  # what every request names
    columns: dict  # the engine_* columns, torch_version and transformers_version
    metrics: bool  # it has a Prometheus /metrics
    alive: Callable[[], bool] = lambda: True
    pids: Callable[[], list[int]] = list
    log_tail: Callable[[], str] = str


def engine_columns(info, engine_args, started_by: str) -> dict:
    """A started server's columns, from its ServerInfo (deploybench.engines.serving.server)."""
    return {
        "engine_name": info.engine,
        "engine_distribution": info.distribution,
        "engine_version": info.version,
        "engine_interpreter": info.interpreter,
        "engine_command": shlex.join(info.command),
        "engine_flags": list(engine_args or ()),
        "engine_env_json": json.dumps(info.env, sort_keys=True),
        "engine_startup_s": info.startup_s,
        "engine_url": info.base_url,
        "engine_started_by": started_by,
        "torch_version": info.packages.get("torch"),
        "transformers_version": info.packages.get("transformers"),
    }


def environment_columns(dev, device: str) -> dict:
    """The machine and code record of the group's rows, without torch (the server, not this process, runs the
    model: torch_version and transformers_version are the engine's, in engine_columns)."""
    gpu = device == Device.CUDA
    return {
        "device": Device.CUDA if gpu else Device.CPU,
        "device_name": dev.name if dev.available else host.cpu_model(),
        "device_uuid": dev.uuid if dev.available else None,
        "driver_version": nvml.driver_version() if gpu else None,
        "cuda_version": None,
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
        "power_limit_w": nvml.try_read(dev.power_limit_w) if dev.available else None,
        **host.record(),
    }


def base_row(spec: CellSpec, environment: dict, target_columns: dict) -> dict:
    """A load point's row before it is measured: identity, machine and code, the engine, the settings."""
    return {
        **identity_columns(spec),
        "cache_implementation": None,  # the engine's own (paged, in vLLM)
        **environment,
        **target_columns,
        "started_at": utc_now(),
        "percentile_method": PERCENTILE_METHOD,
    }


def failed_point(row: dict, kind: FailureKind, error: BaseException | str, log_tail: str = "") -> dict:
    """The row of a load point that could not be measured (or whose requests failed), with the server log's tail."""
    from deploybench.measure.phases import failed_row

    if isinstance(error, ServingError):  # its tail goes to its own column, whole
        text, log_tail = f"{type(error).__name__}: {error.reason}", log_tail or error.log_tail
    else:
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    failed = failed_row(row, kind, RuntimeError(text))
    return failed | {"error": text[:2000], "server_log_tail": log_tail[-LOG_TAIL_CHARS:] or None}


def warmup_width(spec: CellSpec) -> int:
    load = spec.load
    if load.mode is LoadMode.CONCURRENCY:
        return int(load.value)
    return max(1, min(MAX_WARMUP, math.ceil(load.value), load.n_requests or MAX_WARMUP))


def load_spec(spec: CellSpec) -> LoadSpec:
    load = spec.load
    rate = load.mode is LoadMode.REQUEST_RATE
    return LoadSpec(
        str(load.mode),
        load.value,
        n_requests=load.n_requests,
        duration_s=load.duration_s,
        burstiness=load.burstiness if rate else 1.0,
        seed=spec.measurement.seed,
    )


async def _load(spec: CellSpec, served, target: Target, dev):
    flags = deploy.client_flags(spec)
    client = CompletionClient(
        target.base_url, flags, target.model_name, clock=time.monotonic, extra_body=deploy.sampling(spec) or None
    )
    async with client:
        width = warmup_width(spec)
        warm_prompts, _ = deploy.prompts(spec, served, flags, "warm-up")
        t0 = time.monotonic()
        warm = await closed_loop(Sender(client, warm_prompts, spec.gen), width, width, clock=client.clock)
        warm_s = time.monotonic() - t0
        prompts, mode = deploy.prompts(spec, served, flags, "measure")
        slo = Slo.from_config(spec.load.slo) if spec.load.slo else None
        with EnergyMeter(dev) as meter, GpuMonitor(dev, target.pids) as monitor:
            point = await measure_load_point(client, prompts, spec.gen, load_spec(spec), slo, target.metrics)
    return warm, warm_s, point, mode, meter.reading, monitor


def measure_point(spec: CellSpec, served, target: Target, dev, row: dict) -> dict:
    """Measure one load point on a running server; `row`: its base_row."""
    measurement = spec.measurement
    started = time.perf_counter()
    idle = measure_idle(dev, measurement.idle_cooldown_s, measurement.idle_cooldown_max_s, measurement.idle_window_s)
    warm, warm_s, point, mode, reading, monitor = asyncio.run(_load(spec, served, target, dev))
    window = point.window
    figures = dict(point.figures)
    flags = deploy.client_flags(spec)
    row = {
        **row,
        **figures,
        "prompt_mode": mode,
        "generation_settings_json": GenerationSettings(deploy.request_settings(spec, flags)).to_json(),
        "warmup_requests": len(warm.records),
        "warmup_s": warm_s,
        "idle_cooldown_s_measured": idle.cooldown_s,
        "idle_temp_c_start": idle.temp_c_start,
        "idle_temp_c_end": idle.temp_c_end,
        **_tokens_measured(point.records),
        **_energy(reading, monitor, window, idle.power_w, dev),
        **monitor.figures(window.start, window.end),
    }
    p50 = figures.get("e2e_ms_p50")
    row["e2e_tps"] = ratio(spec.gen * 1000.0, p50)
    warm_failed = [r.failure for r in warm.records if not r.ok]
    notes = (
        [f"{len(warm_failed)} of {len(warm.records)} warm-up requests failed: {warm_failed[0]}"] if warm_failed else []
    )
    row["notes"] = notes
    row["cell_wall_s"] = time.perf_counter() - started
    return _verdict(spec, row, point, target)


def _tokens_measured(records) -> dict:
    """The prompt length the server counted (its most common usage count) and the output length every successful
    request had (None where they differ)."""
    prompt = Counter(r.usage_prompt_tokens for r in records if r.usage_prompt_tokens is not None)
    outputs = {r.output_tokens for r in records if r.ok}
    return {
        "context_tokens_measured": prompt.most_common(1)[0][0] if prompt else None,
        "gen_tokens_measured": outputs.pop() if len(outputs) == 1 else None,
    }


def _energy(reading, monitor: GpuMonitor, window, idle_power_w: float | None, dev) -> dict:
    """The energy columns over the steady window, and per output token and per completed request."""
    if not dev.available:
        columns = energy.unavailable(dev.reason)
    elif window.start is None:
        columns = energy.unavailable(f"no steady window ({window.reason})")
    else:
        joules = monitor.energy_j(window.start, window.end)
        sampler_j, sampler_s, samples = monitor.power_integral(window.start, window.end)
        window_reading = dataclasses.replace(
            reading,
            source=SOURCE_COUNTER if joules is not None else "unavailable: the window lies outside the counter samples",
            window_s=window.duration_s if joules is not None else None,
            energy_j=joules,
            sampler_energy_j=sampler_j,
            sampler_window_s=sampler_s,
            sampler_n_samples=samples,
            other_gpu_processes=monitor.other_processes(),
        )
        columns = energy.summarize(window_reading, idle_power_w, window.output_tokens)
    gross, net = columns["energy_j"], columns["energy_j_net"]
    return columns | {
        "j_per_output_token": ratio(gross, window.output_tokens),
        "j_per_output_token_net": ratio(net, window.output_tokens),
        "j_per_request": ratio(gross, window.requests_completed),
        "j_per_request_net": ratio(net, window.requests_completed),
    }


def _verdict(spec: CellSpec, row: dict, point, target: Target) -> dict:
    from deploybench.measure.cell_figures import energy_reasons
    from deploybench.measure.records import EnergyFigures

    fields = {f.name for f in dataclasses.fields(EnergyFigures)}
    record = EnergyFigures(**{k: v for k, v in row.items() if k in fields})
    reasons = list(point.invalid_reasons) + energy_reasons(record, spec.measurement.min_energy_window_s)
    if row["context_tokens_measured"] not in (None, spec.context):
        reasons.append(f"context_tokens_measured {row['context_tokens_measured']} != requested {spec.context}")
    if point.failure is not None:
        kind = FailureKind.REQUESTS_FAILED if target.alive() else FailureKind.SERVER_DIED
        failed = failed_point(row, kind, point.failure, target.log_tail())
        return failed | {"invalid_reasons": failed["invalid_reasons"] + reasons}
    return row | {"status": Status.OK, "valid": not reasons, "invalid_reasons": reasons}
