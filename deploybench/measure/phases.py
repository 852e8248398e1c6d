"""Measure one cell: loading, prompting, timing, memory, KV and energy, in named phases.

`measure_cell(cell)` returns one result row (a dict in the schema of deploybench.results.schema).
Expected failures (out of memory, an unsupported dtype, a context over the model's limit) give a
row with status=failed; anything else raises, so a harness bug fails the job loudly.

The phases, in the order they run (each timed region synchronised, on a monotonic clock):
calibrate (copy and GEMV bandwidth, GEMM rate, launch cost; a batch that cannot fit becomes an
out-of-memory row here) -> load (the cell's engine: deploybench.engines.factory) -> idle power (after a
cool-down decided by temperature) -> warm up -> TTFT runs (inside the prefill energy window) -> decode runs (the
full shape warmed again, then inside the decode energy window) -> afterwards (outside every window:
the kernels of a decode step; the experts a step's tokens touch) -> the engine closed, on every exit
path -> figures and verdict (deploybench.measure.cell_figures) -> the row (deploybench.measure.row).
Each phase returns a record (deploybench.measure.runs); the phases drive the engine only through its
interface (deploybench.engines.base).
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import contextmanager

import torch

from deploybench.analytic import capacity, params
from deploybench.engines import models
from deploybench.engines.base import Engine
from deploybench.engines.factory import engine_for
from deploybench.engines.timing import RunTiming
from deploybench.enums import Status
from deploybench.instruments import calibration, compile_cache, environment, memory, nvml
from deploybench.instruments.device import is_cuda
from deploybench.instruments.energy_meter import EnergyMeter, IdleReading, measure_idle
from deploybench.measure import batch_fit, cell_figures, failures, row, uncertainty
from deploybench.measure.records import columns
from deploybench.measure.runs import Afterwards, Ceilings, Clock, DecodeRuns, Idle, Measured, PrefillRuns, Ready
from deploybench.plan.spec import CellSpec, ModelEntry
from deploybench.results.identity import identity_columns
from deploybench.stats import PERCENTILE_METHOD

log = logging.getLogger(__name__)


def failed_row(row: dict, kind: str, exc: BaseException) -> dict:
    return {
        **row,
        "status": Status.FAILED,
        "failure_kind": kind,
        "error": f"{type(exc).__name__}: {exc}"[:2000],
        "valid": False,
        "invalid_reasons": [f"failed: {kind}"],
    }


def measure_cell(cell: CellSpec) -> dict:
    """Measure one cell (validated when its spec was parsed) and return its row."""
    started = time.perf_counter()
    measurement = cell.measurement
    device = environment.resolve_device(measurement.device)
    result = {
        **identity_columns(cell),
        **environment.capture(device),
        "started_at": environment.utc_now(),
        "warmup_runs": measurement.warmup_runs,
        "n_runs": measurement.n_runs,
        "percentile_method": PERCENTILE_METHOD,
    }
    config = models.model_config(cell.model)
    meta = params.build_meta_model(config)  # shapes without memory: counts, the experts, the GEMV shape
    counts = _param_counts(cell.model, meta)
    result |= {"model_type": config.model_type, **counts}
    try:
        _check_context_fits(cell, config)
        result |= _measure_loaded(cell, device, config, counts, meta, result)
    except Exception as exc:  # expected failures become rows; the rest propagates
        kind = failures.classify(exc)
        if kind is None:
            raise
        result = failed_row(result, kind, exc)
        gc.collect()
        if is_cuda(device):
            torch.cuda.empty_cache()
    result["host_peak_rss_bytes"] = memory.host_peak_rss_bytes()
    result["cell_wall_s"] = time.perf_counter() - started
    return result


def _param_counts(model: ModelEntry, meta_model) -> dict:
    counts = params.count_params(meta_model, model.active_params or None)
    return counts | {"active_params_source": "config override" if model.active_params else "counted"}


def _check_context_fits(cell: CellSpec, config) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit and cell.context + cell.gen > limit:
        raise failures.ContextTooLongError(
            f"context {cell.context} + gen {cell.gen} exceeds max_position_embeddings {limit}"
        )


def _measure_loaded(cell: CellSpec, device: str, config, counts: dict, meta, result: dict) -> dict:
    """The phases of a cell whose context fits, then its figures: the measured columns of its row. The batch
    estimate's columns go into `result` before the check, so a failed row (refused or out of memory) keeps them."""
    walls: dict[str, float] = {}
    with _phase(walls, "calibrate"):
        ceilings = _calibrate(cell, device, calibration.dominant_weight_shape(meta))  # before the model loads
    fits = _batch_estimate(cell, device, config, counts, meta, result.get("device_name"))
    result |= columns(cell_figures.batch_fit(fits, cell.batch))
    if fits is not None:
        capacity.check_batch_fits(cell.batch, fits)  # an oom row naming the estimate, before any weights load
    engine = engine_for(cell, device, config)
    cache_before = compile_cache.snapshot() if cell.backend.static_cache else None  # eager compiles nothing
    try:
        with nvml.open_device(device) as meter_device:  # NVML stays up until the energy windows closed
            power_limit_w = nvml.try_read(meter_device.power_limit_w) if meter_device.available else None
            with _phase(walls, "load"):
                ready = Ready(engine.load(), engine.settings(), engine.facts())
            with _phase(walls, "idle_power"):
                idle = Idle(power_limit_w, _idle_reading(cell, meter_device))
            with _phase(walls, "warm_up"):
                warmup_s = _warm_up(engine, cell)
            with _phase(walls, "ttft_runs"):
                prefill = _prefill_runs(engine, cell, meter_device)
            with _phase(walls, "decode_runs"):
                decode = _decode_runs(engine, cell, meter_device)
        with _phase(walls, "afterwards"):
            after = _afterwards(engine)
        compiled = engine.compiled()
    finally:
        engine.close()  # on every exit path: what it holds goes (a server engine is stopped)
    cache = compile_cache.since(cache_before) if cache_before is not None else None
    log.info("%s: phase wall s %s; Inductor cache %s", cell.cell_id, walls, cache)
    measured = Measured(ceilings, fits, ready, idle, warmup_s, prefill, decode, after, compiled, walls, cache)
    split = params.expert_split(meta, cell.model.active_params or None)
    return row.measured_columns(measured, cell_figures.figures(cell, config, counts, split, measured, device))


@contextmanager
def _phase(phases: dict[str, float], name: str):
    """Record a phase's wall time (s) under its name: where a cell's time goes besides its timed runs."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(time.perf_counter() - start, 3)


# ---------------------------------------------------------------- phase: calibrate


def _calibrate(cell: CellSpec, device: str, weight_shape) -> Ceilings:
    """The ceilings this GPU reaches in this process: copy and GEMV bandwidth, GEMM rate, launch cost."""
    shape = "x".join(map(str, weight_shape)) if weight_shape else None
    if not cell.measurement.measure_bandwidth:
        return Ceilings(shape)
    dtype = models.TORCH_DTYPES[cell.dtype]
    ceilings = Ceilings(  # measured in this order
        shape,
        mem_bandwidth_bytes_per_s=calibration.copy_bandwidth(device),
        gemv_bandwidth_bytes_per_s=calibration.gemv_bandwidth(weight_shape, dtype, device),
        gemm_flops_per_s=calibration.gemm_flops(dtype, device),
        launch_us=calibration.launch_us(device),
    )
    if is_cuda(device):
        torch.cuda.empty_cache()  # give the calibration buffers back before the model loads
    return ceilings


def _batch_estimate(
    cell: CellSpec, device: str, config, counts: dict, meta, device_name: str | None
) -> capacity.BatchEstimate | None:
    """Before loading: free device memory and what the batch needs, weights + B x (KV + prefill activations)
    (deploybench.measure.batch_fit: the activations a smaller batch of this cell measured on this machine, else
    analytic). On CPU the free memory is the host's (capacity.free_bytes); None where it cannot be read."""
    free_bytes = capacity.free_bytes(device)
    if free_bytes is None:
        return None
    return batch_fit.estimate(cell, config, meta, counts, free_bytes, device_name)


# ---------------------------------------------------------------- phase: idle power


def _idle_reading(cell: CellSpec, meter_device) -> IdleReading:
    """Idle power with the weights resident, after a cool-down, before any generate of this cell."""
    measurement = cell.measurement
    return measure_idle(
        meter_device, measurement.idle_cooldown_s, measurement.idle_cooldown_max_s, measurement.idle_window_s
    )


# ---------------------------------------------------------------- phases: warm up, TTFT, decode


def _warm_up(engine: Engine, cell: CellSpec) -> tuple[float, ...]:
    """Discarded runs at the full shape (the compiled backends compile here), then one-token runs.

    Returns the full-shape runs' wall seconds (the first holds the compile time).
    """
    warmup_runs = cell.measurement.warmup_runs
    full_shape_s = []
    for i in range(max(warmup_runs, 2 if cell.backend.static_cache else 0)):
        timing, _ = engine.run(cell.gen, i, clock=False)
        full_shape_s.append(timing.e2e_s)
    for i in range(max(1, warmup_runs // 2)):
        engine.run(1, i, clock=False)
    return tuple(full_shape_s)


def _prefill_runs(engine: Engine, cell: CellSpec, meter_device, clock: Clock = time.perf_counter) -> PrefillRuns:
    """One-token generates, prefill included, every one a TTFT sample: at least `n_runs`, then until the
    TTFT interval is within `ci_target_rel` of the median, `max_measure_s` or `max_runs`
    (uncertainty.Repetition, on `clock`); on a GPU more while the prefill energy window is shorter
    than `min_energy_window_s`."""
    measurement = cell.measurement
    repetition = uncertainty.Repetition.of(measurement, clock)
    ttft_ms, stop = [], None
    with EnergyMeter(meter_device) as meter:
        while stop is None or (meter_device.available and meter.elapsed_s < measurement.min_energy_window_s):
            ttft_ms.append(engine.run(1, len(ttft_ms), clock=False)[0].e2e_s * 1000)
            stop = stop or repetition.stop_reason(ttft_ms)
    return PrefillRuns(tuple(ttft_ms), meter.reading, stop)


def _decode_runs(engine: Engine, cell: CellSpec, meter_device, clock: Clock = time.perf_counter) -> DecodeRuns:
    """Full generates with per-step stamps, peak memory reset before: at least `n_runs`, then until the
    decode tok/s interval is within `ci_target_rel` of the median, `max_measure_s` or `max_runs`
    (uncertainty.Repetition, on `clock`); the energy window around them is extended with more runs
    until it is `min_energy_window_s` long."""
    measurement = cell.measurement
    # The TTFT runs ran another shape since the warm-up: the compiled backend's first full run after
    # them re-warmed inside the measurement (its first decode step ran much slower), so warm again.
    engine.run(cell.gen, 0, clock=False)
    engine.reset_peak_memory()
    repetition = uncertainty.Repetition.of(measurement, clock)
    timings, output, stop = [], None, None
    with EnergyMeter(meter_device) as meter:
        while stop is None:
            del output  # free the previous cache before the next run allocates its own
            timing, output = engine.run(cell.gen, len(timings), clock=True)
            timings.append(timing)
            stop = repetition.stop_reason(_stopping_samples(timings, cell.gen), runs=len(timings))
        energy_runs = len(timings)
        if meter_device.available:
            # The NVML counter updates about every 100 ms: extend the window until it is long enough.
            while meter.elapsed_s < measurement.min_energy_window_s:
                del output
                _, output = engine.run(cell.gen, energy_runs, clock=True)
                energy_runs += 1
    peak = engine.peak_memory()
    kv_cache_bytes = engine.kv_cache_bytes(output)
    del output
    return DecodeRuns(tuple(timings), stop, meter_device.available, energy_runs, meter.reading, peak, kv_cache_bytes)


def _stopping_samples(timings: list[RunTiming], gen: int) -> list[float]:
    """What the decode phase's stopping rule reads: decode tok/s per run (wall time where gen is 1)."""
    if gen == 1:
        return [t.e2e_s for t in timings]
    return [t.decode_tps for t in timings if t.decode_tps]


# ---------------------------------------------------------------- afterwards


def _afterwards(engine: Engine) -> Afterwards:
    """Passes outside every timed and energy window, in this order: the kernels of a decode step (GPU),
    and for a routed-experts MoE the distinct experts each step's tokens were routed to."""
    step = engine.decode_step_profile()
    return Afterwards(step, engine.expert_coverage())
