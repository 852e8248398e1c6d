"""Measure one cell: loading, prompting, timing, memory, KV and energy, in named phases.

`measure_cell(cell)` returns one result row (a dict in the schema of deploybench.results.schema).
Expected failures (out of memory, an unsupported dtype, a context over the model's limit) give a
row with status=failed; anything else raises, so a harness bug fails the job loudly.

The phases, in the order they run (each timed region synchronised, on a monotonic clock):
calibrate (copy and GEMV bandwidth, GEMM rate, launch cost; a batch that cannot fit becomes an
out-of-memory row here) -> load (model, the batch's prompts, backend runner) -> idle power (after a
cool-down decided by temperature) -> warm up -> TTFT runs (inside the prefill energy window) -> decode runs (the
full shape warmed again, then inside the decode energy window) -> afterwards (outside every window:
the kernels of a decode step; the experts a step's tokens touch) -> figures and verdict
(deploybench.measure.cell_figures). The records the phases hand on are in deploybench.measure.runs.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from contextlib import contextmanager

import torch

from deploybench import HARNESS_VERSION
from deploybench.analytic import boundness, capacity, kvcache, params
from deploybench.engines import batch, models
from deploybench.engines.compiled_loop.decode_loop import CompiledDecodeLoop, variant_facts
from deploybench.engines.experts import READS_ROUTED
from deploybench.engines.timing import (
    RunTiming,
    effective_settings,
    generation_config,
    isolate_generation_config,
    synchronize,
)
from deploybench.enums import Backend, CacheImplementation, Status
from deploybench.instruments import calibration, coverage, environment, memory, nvml
from deploybench.instruments.energy_meter import EnergyMeter, IdleReading, measure_idle
from deploybench.measure import cell_figures, failures, uncertainty
from deploybench.measure.runs import Afterwards, Clock, DecodeRuns, PrefillRuns, Ready, Runner
from deploybench.plan.loop_options import DEFAULT as DEFAULT_LOOP_OPTIONS
from deploybench.plan.spec import CellSpec, ModelEntry, canonical_json
from deploybench.results.schema import SCHEMA_VERSION
from deploybench.stats import PERCENTILE_METHOD

log = logging.getLogger(__name__)


def identity(cell: CellSpec) -> dict:
    decoding = cell.decoding
    return {
        "cell_id": cell.cell_id,
        "model": cell.model_name,
        "backend": cell.backend,
        "dtype": cell.dtype,
        "context_tokens": cell.context,
        "gen_tokens": cell.gen,
        "decoding": cell.decoding_name,
        "spec_json": cell.spec_json(),
        "harness_version": HARNESS_VERSION,
        "schema_version": SCHEMA_VERSION,
        "source": "deploybench",
        "do_sample": decoding.do_sample,
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "top_k": decoding.top_k,
        "seed": cell.measurement.seed,
        "weights_source": cell.model.source,
        "model_ref": cell.model.ref,
        "cache_implementation": cell.cache_implementation,
        "batch_size": cell.batch,
    }


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
    row = {
        **identity(cell),
        **environment.capture(device),
        "started_at": environment.utc_now(),
    }
    row["warmup_runs"] = measurement.warmup_runs
    row["n_runs"] = measurement.n_runs
    row["percentile_method"] = PERCENTILE_METHOD

    config = models.model_config(cell.model)
    row["model_type"] = config.model_type
    meta = params.build_meta_model(config)  # shapes without memory: counts, the experts, the GEMV shape
    row.update(_param_counts(cell.model, meta))
    try:
        _check_context_fits(cell, config)
        row.update(_measure_loaded(cell, device, config, row, meta))
    except Exception as exc:  # expected failures become rows; the rest propagates
        kind = failures.classify(exc)
        if kind is None:
            raise
        row = failed_row(row, kind, exc)
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    row["host_peak_rss_bytes"] = memory.host_peak_rss_bytes()
    row["cell_wall_s"] = time.perf_counter() - started
    return row


def _param_counts(model: ModelEntry, meta_model) -> dict:
    counts = params.count_params(meta_model, model.active_params or None)
    return counts | {"active_params_source": "config override" if model.active_params else "counted"}


def _check_context_fits(cell: CellSpec, config) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit and cell.context + cell.gen > limit:
        raise failures.ContextTooLongError(
            f"context {cell.context} + gen {cell.gen} exceeds max_position_embeddings {limit}"
        )


def _measure_loaded(cell: CellSpec, device: str, config, counts: dict, meta) -> dict:
    phases: dict[str, float] = {}
    with _phase(phases, "calibrate"):
        ceilings = _calibrate(cell, device, calibration.dominant_weight_shape(meta))  # before the model loads
    fits = _check_batch_fits(cell, device, config, counts)
    with nvml.open_device(device) as meter_device:  # NVML stays up until the energy windows closed
        power_limit_w = nvml.try_read(meter_device.power_limit_w) if meter_device.available else None
        with _phase(phases, "load"):
            ready = _load(cell, device, config)
        with _phase(phases, "idle_power"):
            ready = _idle_power(cell, ready, meter_device)
        with _phase(phases, "warm_up"):
            warmup_s = _warm_up(ready.run, cell)
        with _phase(phases, "ttft_runs"):
            prefill = _prefill_runs(ready.run, cell, meter_device)
        with _phase(phases, "decode_runs"):
            decode = _decode_runs(ready.run, cell, device, meter_device)
    with _phase(phases, "afterwards"):
        after = _afterwards(cell, device, config, ready)
    log.info("%s: phase wall s %s", cell.cell_id, phases)
    out = {
        **ceilings,
        "power_limit_w": power_limit_w,
        **ready.figures,
        "phase_wall_s_json": json.dumps(phases),
    }  # in phase order
    out.update(cell_figures.figures(cell, config, ready, warmup_s, prefill, decode))
    out.update(
        cell_figures.roofline_figures(
            cell, config, ready, out, counts, params.expert_split(meta, cell.model.active_params or None), after
        )
    )
    out.update(cell_figures.boundness_figures(after.step, out, device))
    out["max_batch_fit"] = _max_batch_fit(fits, out, cell.batch)
    out["status"] = Status.OK
    out.update(cell_figures.verdict(cell, out))
    return out


@contextmanager
def _phase(phases: dict[str, float], name: str):
    """Record a phase's wall time (s) under its name: where a cell's time goes besides its timed runs."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(time.perf_counter() - start, 3)


# ---------------------------------------------------------------- phase: calibrate


def _calibrate(cell: CellSpec, device: str, weight_shape) -> dict:
    """The ceilings this GPU reaches in this process: copy and GEMV bandwidth, GEMM rate, launch cost."""
    figures = {"gemv_shape": "x".join(map(str, weight_shape)) if weight_shape else None}
    if not cell.measurement.measure_bandwidth:
        return figures
    dtype = models.TORCH_DTYPES[cell.dtype]
    figures["mem_bandwidth_bytes_per_s"] = calibration.copy_bandwidth(device)
    figures["gemv_bandwidth_bytes_per_s"] = calibration.gemv_bandwidth(weight_shape, dtype, device)
    figures["gemm_flops_per_s"] = calibration.gemm_flops(dtype, device)
    figures["launch_us"] = calibration.launch_us(device)
    if calibration.is_cuda(device):
        torch.cuda.empty_cache()  # give the calibration buffers back before the model loads
    return figures


def _check_batch_fits(cell: CellSpec, device: str, config, counts: dict) -> capacity.BatchEstimate | None:
    """Before loading: free device memory, and an out-of-memory row when even the weights and the batch's
    KV cannot fit (activations come on top: measured after the runs, in max_batch_fit). None on CPU."""
    if not calibration.is_cuda(device):
        return None
    dtype = models.TORCH_DTYPES[cell.dtype]
    estimate = capacity.BatchEstimate(
        free_bytes=torch.cuda.mem_get_info()[0],
        weights_bytes=capacity.weights_bytes_estimate(counts["total_params"], dtype),
        kv_bytes_per_seq=kvcache.analytic_kv_bytes(config, cell.context, cell.gen, dtype, cell.cache_implementation),
        activation_bytes_per_seq=0.0,
    )
    capacity.check_batch_fits(cell.batch, estimate)
    return estimate


def _max_batch_fit(fits: capacity.BatchEstimate | None, out: dict, batch_size: int) -> int | None:
    """The largest batch this cell's measured memory says fits the free memory it started with."""
    if fits is None or out.get("peak_allocated_bytes") is None:
        return None
    kv_per_seq = out["kv_cache_bytes"] // batch_size
    activations = capacity.activation_bytes_per_seq(
        out["peak_allocated_bytes"], out["weights_bytes"], kv_per_seq, batch_size
    )
    return capacity.max_batch_fit(fits.free_bytes, out["weights_bytes"], kv_per_seq, activations)


# ---------------------------------------------------------------- phase: load


def _load(cell: CellSpec, device: str, config) -> Ready:
    """Build or load the model (timed), the batch's prompts and the backend runner."""
    figures = {}
    load_start = time.perf_counter()
    loaded = models.load_model(cell.model, cell.dtype, device, seed=cell.measurement.seed)
    synchronize(device)
    figures["load_s"] = time.perf_counter() - load_start
    figures["weights_bytes"] = memory.allocated_bytes(device)

    prompts = batch.prompt_batch(loaded, config, cell.context, cell.batch, cell.measurement.seed)
    figures["prompt_mode"] = prompts.prompt_mode
    figures["context_tokens_measured"] = prompts.context_tokens_measured
    input_ids, _ = batch.batch_tensors(prompts, device)
    run, settings = backend_runner(cell, loaded, config, input_ids, device, with_settings=True)
    figures["generation_settings_json"] = canonical_json(settings)
    figures.update(models.implementations(loaded.model))  # after the runner: compiled_loop sets its attention
    figures.update(variant_facts(loaded.model))  # compiled_loop's fusions, decode kernel and decode experts path
    return Ready(loaded, prompts, input_ids, run, IdleReading(), figures)


def _idle_power(cell: CellSpec, ready: Ready, meter_device) -> Ready:
    """Idle power with the weights resident, after a cool-down, before any generate of this cell."""
    measurement = cell.measurement
    idle = measure_idle(
        meter_device, measurement.idle_cooldown_s, measurement.idle_cooldown_max_s, measurement.idle_window_s
    )
    figures = ready.figures | {
        "idle_cooldown_s_measured": idle.cooldown_s,
        "idle_temp_c_start": idle.temp_c_start,
        "idle_temp_c_end": idle.temp_c_end,
    }
    return dataclasses.replace(ready, idle=idle, figures=figures)


def backend_runner(cell: CellSpec, loaded, config, input_ids, device: str, with_settings: bool = False):
    """run(new_tokens, i, clock) -> (RunTiming, output): one timed generation of the (batch, context)
    `input_ids` for this backend, every row checked to get exactly `new_tokens` tokens.

    Uses the cell's backend, decoding, context, gen and measurement seed (the benchmarks call it too).
    With `with_settings`, also the generation settings a full-length run applies.
    """
    seed = cell.measurement.seed
    isolate_generation_config(loaded.model)  # every backend: the afterwards pass runs generate() on this model
    if cell.backend is Backend.COMPILED_LOOP:
        options = cell.model.compiled_loop or DEFAULT_LOOP_OPTIONS
        loop = CompiledDecodeLoop(
            loaded.model, cell.decoding, cell.context, cell.gen, device, options, batch=input_ids.shape[0]
        )
        temperature, top_k, top_p = cell.decoding.filters  # what its own sampler applies
        settings = {"do_sample": cell.decoding.do_sample, "max_new_tokens": cell.gen, "min_new_tokens": cell.gen}
        if cell.decoding.do_sample:
            settings |= {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        run = lambda new_tokens, i, clock: loop.run(input_ids, new_tokens, seed + i, clock)  # noqa: E731
        return (run, settings) if with_settings else run

    pad_id = _pad_id(loaded, config)
    cache_impl = CacheImplementation.STATIC if cell.backend is Backend.COMPILED else None
    attention_mask = batch.attention_mask(input_ids)
    full_length = generation_config(cell.decoding, cell.gen, pad_id, cache_impl)
    eos_ids = batch.effective_eos_ids(loaded.model, full_length)  # once: the same for every run's length

    def run(new_tokens, i, clock):
        gen_config = generation_config(cell.decoding, new_tokens, pad_id, cache_impl)
        return batch.timed_generate_batch(
            loaded.model, input_ids, attention_mask, gen_config, device, seed + i, clock, eos_ids
        )

    if not with_settings:
        return run
    return run, effective_settings(loaded.model, full_length)


def _pad_id(loaded, config) -> int:
    tokenizer = loaded.tokenizer
    for candidate in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
        getattr(config, "pad_token_id", None),
        getattr(config, "eos_token_id", None),
    ):
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if isinstance(candidate, int):
            return candidate
    return 0


# ---------------------------------------------------------------- phases: warm up, TTFT, decode


def _warm_up(run: Runner, cell: CellSpec) -> list[float]:
    """Discarded runs at the full shape (the compiled backends compile here), then one-token runs.

    Returns the full-shape runs' wall seconds (the first holds the compile time).
    """
    warmup_runs = cell.measurement.warmup_runs
    full_shape_s = []
    for i in range(max(warmup_runs, 2 if cell.backend.static_cache else 0)):
        timing, _ = run(cell.gen, i, clock=False)
        full_shape_s.append(timing.e2e_s)
    for i in range(max(1, warmup_runs // 2)):
        run(1, i, clock=False)
    return full_shape_s


def _prefill_runs(run: Runner, cell: CellSpec, meter_device, clock: Clock = time.perf_counter) -> PrefillRuns:
    """One-token generates, prefill included, every one a TTFT sample: at least `n_runs`, then until the
    TTFT interval is within `ci_target_rel` of the median, `max_measure_s` or `max_runs`
    (uncertainty.Repetition, on `clock`); on a GPU more while the prefill energy window is shorter
    than `min_energy_window_s`."""
    measurement = cell.measurement
    repetition = uncertainty.Repetition.of(measurement, clock)
    ttft_ms, stop = [], None
    with EnergyMeter(meter_device) as meter:
        while stop is None or (meter_device.available and meter.elapsed_s < measurement.min_energy_window_s):
            ttft_ms.append(run(1, len(ttft_ms), clock=False)[0].e2e_s * 1000)
            stop = stop or repetition.stop_reason(ttft_ms)
    return PrefillRuns(ttft_ms, meter.reading, stop)


def _decode_runs(run: Runner, cell: CellSpec, device: str, meter_device, clock: Clock = time.perf_counter):
    """Full generates with per-step stamps, peak memory reset before: at least `n_runs`, then until the
    decode tok/s interval is within `ci_target_rel` of the median, `max_measure_s` or `max_runs`
    (uncertainty.Repetition, on `clock`); the energy window around them is extended with more runs
    until it is `min_energy_window_s` long."""
    measurement = cell.measurement
    # The TTFT runs ran another shape since the warm-up: the compiled backend's first full run after
    # them re-warmed inside the measurement (86 against 27 ms for its first decode step), so warm again.
    run(cell.gen, 0, clock=False)
    memory.reset_peak(device)
    repetition = uncertainty.Repetition.of(measurement, clock)
    timings, output, stop = [], None, None
    with EnergyMeter(meter_device) as meter:
        while stop is None:
            del output  # free the previous cache before the next run allocates its own
            timing, output = run(cell.gen, len(timings), clock=True)
            timings.append(timing)
            stop = repetition.stop_reason(_stopping_samples(timings, cell.gen), runs=len(timings))
        energy_runs = len(timings)
        if meter_device.available:
            # The NVML counter updates about every 100 ms: extend the window until it is long enough.
            while meter.elapsed_s < measurement.min_energy_window_s:
                del output
                _, output = run(cell.gen, energy_runs, clock=True)
                energy_runs += 1
    memory_figures = memory.peak_figures(device)
    kv_cache_bytes = kvcache.measured_kv_bytes(output.past_key_values)
    del output
    return DecodeRuns(timings, stop, meter_device.available, energy_runs, meter.reading, memory_figures, kv_cache_bytes)


def _stopping_samples(timings: list[RunTiming], gen: int) -> list[float]:
    """What the decode phase's stopping rule reads: decode tok/s per run (wall time where gen is 1)."""
    if gen == 1:
        return [t.e2e_s for t in timings]
    return [t.decode_tps for t in timings if t.decode_tps]


# ---------------------------------------------------------------- afterwards


def _afterwards(cell: CellSpec, device: str, config, ready: Ready) -> Afterwards:
    """Passes outside every timed and energy window: the kernels of a decode step (GPU), and for a
    routed-experts MoE the distinct experts each step's tokens were routed to (an eager generate with
    the routers recorded: hooks do not run inside compiled graphs)."""
    tokens = boundness.profile_tokens(cell.gen, cache_sized_by_length=cell.backend is Backend.COMPILED)
    step = boundness.profile_decode_steps(ready.run, tokens, device)
    routed = ready.figures["experts_read_per_token"] == READS_ROUTED
    if not routed or cell.gen < 2:
        return Afterwards(step, None)
    gen_config = generation_config(cell.decoding, cell.gen, _pad_id(ready.loaded, config))
    torch.manual_seed(cell.measurement.seed)
    mask = batch.attention_mask(ready.input_ids)
    return Afterwards(step, coverage.record_generate(ready.loaded.model, ready.input_ids, mask, gen_config))
