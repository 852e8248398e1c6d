"""Measure one cell: loading, prompting, timing, memory, KV and energy, in named phases.

`measure_cell(cell)` returns one result row (a dict in the schema of deploybench.schema).
Expected failures (out of memory, an unsupported dtype, a context over the model's limit) give a
row with status=failed; anything else raises, so a harness bug fails the job loudly.

The phases, in the order they run (each timed region synchronised, on a monotonic clock):
calibrate (copy and GEMV bandwidth, GEMM rate, launch cost) -> load (NVML device, model, prompt,
backend runner, idle power after a cool-down) -> warm up -> TTFT runs (inside the prefill energy
window) -> decode runs (the full shape warmed again, then inside the decode energy window) ->
profile (kernels per decode step, outside every window) -> figures -> verdict.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import (
    HARNESS_VERSION,
    boundness,
    calibration,
    energy,
    environment,
    failures,
    kvcache,
    memory,
    models,
    nvml,
    params,
    prompts,
    roofline,
)
from .decode_loop import CompiledDecodeLoop, variant_facts
from .energy_meter import EnergyMeter, IdleReading, measure_idle
from .enums import Backend, CacheImplementation, Status, ThrottleReason
from .loop_options import DEFAULT as DEFAULT_LOOP_OPTIONS
from .schema import SCHEMA_VERSION
from .spec import CellSpec, ModelEntry, canonical_json
from .stats import PERCENTILE_METHOD, coefficient_of_variation, median, percentile
from .timing import (
    RunTiming,
    effective_settings,
    generation_config,
    isolate_generation_config,
    synchronize,
    timed_generate,
)

ENERGY_DISAGREEMENT_LIMIT = 0.10  # counter vs sampler, relative
# Derived from the names the meter writes (enums.ThrottleReason), so the two cannot drift apart.
THROTTLE_REASONS_THAT_INVALIDATE = frozenset(reason for reason in ThrottleReason if reason.invalidates)

# run(new_tokens, i, clock) -> (RunTiming, output): one timed generation of the cell's backend.
Runner = Callable[[int, int, bool], tuple[RunTiming, object]]


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
    meta = params.build_meta_model(config)  # shapes without memory: counts and the GEMV shape
    row.update(_param_counts(cell.model, meta))
    try:
        _check_context_fits(cell, config)
        row.update(_measure_loaded(cell, device, config, row, calibration.dominant_weight_shape(meta)))
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
    counts = params.count_params(meta_model)
    if model.active_params:
        counts["active_params"] = int(model.active_params)
        counts["active_params_source"] = "config override"
    else:
        counts["active_params_source"] = "counted"
    return counts


def _check_context_fits(cell: CellSpec, config) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit and cell.context + cell.gen > limit:
        raise failures.ContextTooLongError(
            f"context {cell.context} + gen {cell.gen} exceeds max_position_embeddings {limit}"
        )


def _measure_loaded(cell: CellSpec, device: str, config, counts: dict, weight_shape) -> dict:
    ceilings = _calibrate(cell, device, weight_shape)  # before the model takes the memory
    with nvml.open_device(device) as meter_device:  # NVML stays up until the energy windows closed
        power_limit_w = nvml.try_read(meter_device.power_limit_w) if meter_device.available else None
        ready = _load(cell, device, config, meter_device)
        warmup_s = _warm_up(ready.run, cell)
        prefill = _prefill_runs(ready.run, cell, meter_device)
        decode = _decode_runs(ready.run, cell, device, meter_device)
    tokens = boundness.profile_tokens(cell.gen, cache_sized_by_length=cell.backend is Backend.COMPILED)
    step = boundness.profile_decode_steps(ready.run, tokens, device)
    out = {**ceilings, "power_limit_w": power_limit_w, **ready.figures}
    out.update(_figures(cell, config, ready, warmup_s, prefill, decode))
    out.update(_roofline_figures(cell, config, ready.prompt, out, counts))
    out.update(_boundness_figures(step, out))
    out["status"] = Status.OK
    out.update(_verdict(cell, out))
    return out


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


# ---------------------------------------------------------------- phase: load


@dataclass
class Ready:
    """What the load phase hands on: the model, its prompt and runner, and the figures of loading."""

    loaded: models.LoadedModel
    prompt: prompts.Prompt
    run: Runner
    idle: IdleReading
    figures: dict  # load_s, weights_bytes, prompt facts, implementations, generation settings


def _load(cell: CellSpec, device: str, config, meter_device: nvml.NvmlDevice | nvml.UnavailableDevice) -> Ready:
    """Build or load the model (timed), its prompt and backend runner, then the idle power."""
    figures = {}
    load_start = time.perf_counter()
    loaded = models.load_model(cell.model, cell.dtype, device)
    synchronize(device)
    figures["load_s"] = time.perf_counter() - load_start
    figures["weights_bytes"] = memory.allocated_bytes(device)

    prompt = _prompt(loaded, config, cell)
    figures["prompt_mode"] = prompt.prompt_mode
    figures["context_tokens_measured"] = prompt.context_tokens_measured
    input_ids = torch.tensor([prompt.input_ids], device=device)
    run, settings = backend_runner(cell, loaded, config, input_ids, device, with_settings=True)
    figures["generation_settings_json"] = canonical_json(settings)
    figures.update(models.implementations(loaded.model))  # after the runner: compiled_loop sets its attention
    figures.update(variant_facts(loaded.model))  # compiled_loop's fusions, decode kernel and decode experts path

    # Idle power with the weights resident, after a cool-down, before any generate of this cell.
    measurement = cell.measurement
    idle = measure_idle(
        meter_device, measurement.idle_cooldown_s, measurement.idle_cooldown_max_s, measurement.idle_window_s
    )
    figures.update(
        idle_cooldown_s_measured=idle.cooldown_s, idle_temp_c_start=idle.temp_c_start, idle_temp_c_end=idle.temp_c_end
    )
    return Ready(loaded, prompt, run, idle, figures)


def backend_runner(cell: CellSpec, loaded, config, input_ids, device: str, with_settings: bool = False):
    """run(new_tokens, i, clock) -> (RunTiming, output): one timed generation for this backend.

    Uses the cell's backend, decoding, context, gen and measurement seed (the benchmarks call it too).
    With `with_settings`, also the generation settings a full-length run applies.
    """
    seed = cell.measurement.seed
    if cell.backend is Backend.COMPILED_LOOP:
        options = cell.model.compiled_loop or DEFAULT_LOOP_OPTIONS
        loop = CompiledDecodeLoop(loaded.model, cell.decoding, cell.context, cell.gen, device, options)
        temperature, top_k, top_p = cell.decoding.filters  # what its own sampler applies
        settings = {"do_sample": cell.decoding.do_sample, "max_new_tokens": cell.gen, "min_new_tokens": cell.gen}
        if cell.decoding.do_sample:
            settings |= {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        run = lambda new_tokens, i, clock: loop.run(input_ids, new_tokens, seed + i, clock)  # noqa: E731
        return (run, settings) if with_settings else run

    isolate_generation_config(loaded.model)
    pad_id = _pad_id(loaded, config)
    cache_impl = CacheImplementation.STATIC if cell.backend is Backend.COMPILED else None
    attention_mask = torch.ones_like(input_ids)

    def run(new_tokens, i, clock):
        gen_config = generation_config(cell.decoding, new_tokens, pad_id, cache_impl)
        return timed_generate(loaded.model, input_ids, attention_mask, gen_config, device, seed + i, clock)

    if not with_settings:
        return run
    return run, effective_settings(loaded.model, generation_config(cell.decoding, cell.gen, pad_id, cache_impl))


def _prompt(loaded, config, cell: CellSpec) -> prompts.Prompt:
    seed = cell.measurement.seed
    if loaded.tokenizer is not None:
        return prompts.build_prompt(loaded.tokenizer, cell.context, seed=seed)
    special = [getattr(config, k, None) for k in ("eos_token_id", "pad_token_id", "bos_token_id")]
    flat = [i for s in special for i in (s if isinstance(s, list) else [s]) if isinstance(i, int)]
    return prompts.random_prompt(config.vocab_size, cell.context, seed=seed, exclude_ids=flat)


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


@dataclass
class PrefillRuns:
    """One-token generates (TTFT samples) and the energy window over them."""

    ttft_ms: list[float]
    reading: energy.EnergyReading


def _prefill_runs(run: Runner, cell: CellSpec, meter_device) -> PrefillRuns:
    """`n_runs` one-token generates, prefill included; on a GPU more, until the prefill energy window
    is `min_energy_window_s` long. Every one is a TTFT sample."""
    measurement = cell.measurement
    ttft_ms = []
    with EnergyMeter(meter_device) as meter:
        while len(ttft_ms) < measurement.n_runs or (
            meter_device.available and meter.elapsed_s < measurement.min_energy_window_s
        ):
            ttft_ms.append(run(1, len(ttft_ms), clock=False)[0].e2e_s * 1000)
    return PrefillRuns(ttft_ms, meter.reading)


@dataclass
class DecodeRuns:
    """The measured full generates: timings, the energy window over them, memory and KV with the cache alive."""

    timings: list[RunTiming]
    metered: bool  # an NVML device was there to read
    energy_runs: int  # runs inside the energy window (n_runs, plus any that extended it)
    reading: energy.EnergyReading
    memory_figures: dict
    kv_cache_bytes: int


def _decode_runs(run: Runner, cell: CellSpec, device: str, meter_device) -> DecodeRuns:
    """`n_runs` full generates with per-step stamps, peak memory reset before; the energy window
    around them is extended with more runs until it is `min_energy_window_s` long."""
    measurement = cell.measurement
    # The TTFT runs ran another shape since the warm-up: the compiled backend's first full run after
    # them re-warmed inside the measurement (86 against 27 ms for its first decode step), so warm again.
    run(cell.gen, 0, clock=False)
    memory.reset_peak(device)
    timings, output = [], None
    with EnergyMeter(meter_device) as meter:
        for i in range(measurement.n_runs):
            del output  # free the previous cache before the next run allocates its own
            timing, output = run(cell.gen, i, clock=True)
            timings.append(timing)
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
    return DecodeRuns(timings, meter_device.available, energy_runs, meter.reading, memory_figures, kv_cache_bytes)


# ---------------------------------------------------------------- phases: figures, verdict


def _figures(
    cell: CellSpec, config, ready: Ready, warmup_s: list[float], prefill: PrefillRuns, decode: DecodeRuns
) -> dict:
    """Memory, KV, latency and energy figures from what the runs recorded (arithmetic only)."""
    dtype = models.TORCH_DTYPES[cell.dtype]
    out = dict(decode.memory_figures)
    out["kv_cache_bytes"] = decode.kv_cache_bytes
    out["kv_cache_bytes_analytic"] = kvcache.analytic_kv_bytes(
        config, ready.prompt.context_tokens_measured, cell.gen, dtype, cell.cache_implementation
    )
    out["gen_tokens_measured"] = min(t.new_tokens for t in decode.timings)
    out.update(_latency_figures(decode.timings, prefill.ttft_ms, cell.gen))
    # transformers compiles generate()'s decode step itself when the cache is static on a GPU.
    out["compiled"] = cell.backend is Backend.COMPILED_LOOP or hasattr(ready.loaded.model, "_compiled_call")
    if cell.backend.static_cache:
        out["compile_s"] = max(0.0, warmup_s[0] - out["e2e_ms_p50"] / 1000)
    out.update(_energy_figures(decode, prefill, ready, cell.gen))
    return out


def _energy_figures(decode: DecodeRuns, prefill: PrefillRuns, ready: Ready, gen: int) -> dict:
    if not decode.metered:
        return energy.unavailable(decode.reading.source)
    record = energy.summarize(decode.reading, ready.idle.power_w, decode.energy_runs * gen)
    prefill_runs = len(prefill.ttft_ms)
    by_phase = energy.by_phase(
        prefill.reading, prefill_runs, decode.reading, decode.energy_runs, ready.prompt.context_tokens_measured, gen
    )
    return {**record, **by_phase, "energy_runs": decode.energy_runs, "prefill_energy_runs": prefill_runs}


def _roofline_figures(cell: CellSpec, config, prompt, out: dict, counts: dict) -> dict:
    """Bytes and FLOPs a decode step reads and does, and decode speed against both bandwidth ceilings."""
    dtype = models.TORCH_DTYPES[cell.dtype]
    context = prompt.context_tokens_measured
    params_read = roofline.params_read_per_token(
        counts["active_params"], counts["all_experts_params"], out["experts_read_per_token"]
    )
    kv_read = kvcache.kv_bytes_read_per_token(config, context, cell.gen, dtype)
    bytes_per_token = roofline.decode_bytes_per_token(params_read, dtype, kv_read)
    flops = roofline.decode_flops_per_token(params_read, kvcache.attention_flops_per_token(config, context, cell.gen))
    decode_tps = out["decode_tps"]
    return {
        "params_read_per_token": params_read,
        "decode_bytes_per_token": bytes_per_token,
        "decode_flops_per_token": flops,
        **roofline.roofline(decode_tps, out.get("mem_bandwidth_bytes_per_s"), bytes_per_token),
        **roofline.roofline(decode_tps, out.get("gemv_bandwidth_bytes_per_s"), bytes_per_token, suffix="_gemv"),
    }


def _boundness_figures(step: boundness.StepProfile | None, out: dict) -> dict:
    """Kernel figures of a decode step, the GPU-busy fraction and what bounds the step."""
    if step is None:
        return {"boundness_null_reason": "no CUDA device: the kernel profile and the calibrations need CUDA"}
    busy = boundness.busy_fraction(step.gpu_kernel_ms_per_token, out.get("tpot_ms"))
    bandwidth = out.get("gemv_bandwidth_bytes_per_s") or out.get("mem_bandwidth_bytes_per_s")
    ridge = out["gemm_flops_per_s"] / bandwidth if out.get("gemm_flops_per_s") and bandwidth else None
    intensity = out["decode_flops_per_token"] / out["decode_bytes_per_token"]
    return {
        "profile_tokens": step.profile_tokens,
        "kernels_per_token": step.kernels_per_token,
        "gpu_kernel_ms_per_token": step.gpu_kernel_ms_per_token,
        "gpu_busy_fraction": busy,
        "bound_by": boundness.bound_by(busy, intensity, ridge),
    }


def _latency_figures(timings, ttft_ms: list[float], gen: int) -> dict:
    e2e_ms = [t.e2e_s * 1000 for t in timings]
    decode = [t.decode_tps for t in timings if t.decode_tps]
    itl_ms = [x * 1000 for t in timings for x in t.itl_s]
    decode_tps = median(decode)
    e2e_p50 = median(e2e_ms)
    return {
        "ttft_ms": median(ttft_ms),
        "ttft_ms_samples": ttft_ms,
        "e2e_ms_p50": e2e_p50,
        "e2e_ms_p95": percentile(e2e_ms, 95),
        "e2e_ms_p99": percentile(e2e_ms, 99),
        "e2e_ms_samples": e2e_ms,
        "decode_tps": decode_tps,
        "decode_tps_samples": decode,
        "decode_tps_cv": coefficient_of_variation(decode),
        "tpot_ms": 1000 / decode_tps if decode_tps else None,
        "itl_ms_p50": median(itl_ms),
        "itl_ms_p95": percentile(itl_ms, 95),
        "itl_ms_p99": percentile(itl_ms, 99),
        "itl_ms_samples": itl_ms,
        "e2e_tps": gen / (e2e_p50 / 1000) if e2e_p50 else None,
    }


def _verdict(cell: CellSpec, out: dict) -> dict:
    reasons = validity_reasons(cell, out)
    return {"valid": not reasons, "invalid_reasons": reasons}


def validity_reasons(cell: CellSpec, out: dict) -> list[str]:
    reasons = []
    if cell.backend is Backend.COMPILED and not out.get("compiled"):
        reasons.append("backend compiled requested but generate() did not compile (transformers compiles on GPU only)")
    if out.get("context_tokens_measured") != cell.context:
        reasons.append(f"context_tokens_measured {out.get('context_tokens_measured')} != requested {cell.context}")
    if out.get("gen_tokens_measured") != cell.gen:
        reasons.append(f"gen_tokens_measured {out.get('gen_tokens_measured')} != requested {cell.gen}")
    if out.get("kv_cache_bytes") != out.get("kv_cache_bytes_analytic"):
        reasons.append(f"kv_cache_bytes {out.get('kv_cache_bytes')} != analytic {out.get('kv_cache_bytes_analytic')}")
    if out.get("energy_j") is not None:
        if (out.get("energy_window_s") or 0) < cell.measurement.min_energy_window_s:
            reasons.append(f"energy window {out.get('energy_window_s'):.2f} s < min_energy_window_s")
        diff = out.get("energy_counter_sampler_rel_diff")
        if diff is not None and diff > ENERGY_DISAGREEMENT_LIMIT:
            reasons.append(f"energy counter and sampler disagree by {diff:.1%}")
        throttled = [r for r in out.get("throttle_reasons") or [] if r in THROTTLE_REASONS_THAT_INVALIDATE]
        if throttled:
            reasons.append(f"GPU throttled: {', '.join(throttled)}")
        if out.get("other_gpu_processes"):
            reasons.append(f"{out['other_gpu_processes']} other process(es) on the GPU")
    return reasons
