"""Measure one cell: loading, prompting, timing, memory, KV and energy, in named phases.

`measure_cell(cell)` returns one result row (a dict in the schema of deploybench.schema).
Expected failures (out of memory, an unsupported dtype, a context over the model's limit) give a
row with status=failed; anything else raises, so a harness bug fails the job loudly.

The phases, in the order they run (each timed region synchronised, on a monotonic clock):
load (copy bandwidth, NVML device, model, prompt, backend runner, idle power) -> warm up ->
TTFT runs -> decode runs (inside the energy window) -> figures -> verdict.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import (
    HARNESS_VERSION,
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
from .decode_loop import CompiledDecodeLoop
from .energy_meter import EnergyMeter, measure_idle_power_w
from .enums import Backend, CacheImplementation, Status, ThrottleReason
from .schema import SCHEMA_VERSION
from .spec import CellSpec, ModelEntry
from .stats import PERCENTILE_METHOD, coefficient_of_variation, median, percentile
from .timing import RunTiming, generation_config, synchronize, timed_generate

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
    row.update(_param_counts(cell.model, config))
    try:
        _check_context_fits(cell, config)
        row.update(_measure_loaded(cell, device, config, row["active_params"]))
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


def _param_counts(model: ModelEntry, config) -> dict:
    counts = params.count_from_config(config)
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


def _measure_loaded(cell: CellSpec, device: str, config, active_params: int) -> dict:
    bandwidth = roofline.measure_copy_bandwidth(device) if cell.measurement.measure_bandwidth else None
    with nvml.open_device(device) as meter_device:  # NVML stays up until the energy window closed
        ready = _load(cell, device, config, meter_device)
        warmup_s = _warm_up(ready.run, cell)
        ttft_ms = _ttft_runs(ready.run, cell)
        decode = _decode_runs(ready.run, cell, device, meter_device)
    out = {"mem_bandwidth_bytes_per_s": bandwidth, **ready.figures}
    out.update(_figures(cell, config, ready, warmup_s, ttft_ms, decode))
    out.update(_roofline_figures(cell, config, ready.prompt, out["decode_tps"], bandwidth, active_params))
    out["status"] = Status.OK
    out.update(_verdict(cell, out))
    return out


# ---------------------------------------------------------------- phase: load


@dataclass
class Ready:
    """What the load phase hands on: the model, its prompt and runner, and the figures of loading."""

    loaded: models.LoadedModel
    prompt: prompts.Prompt
    run: Runner
    idle_power_w: float | None
    figures: dict  # load_s, weights_bytes, prompt facts, implementations


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
    run = backend_runner(cell, loaded, config, input_ids, device)
    figures.update(models.implementations(loaded.model))  # after the runner: compiled_loop sets its attention

    # Idle power with the weights resident, after a cool-down, before any generate of this cell.
    measurement = cell.measurement
    idle_w = measure_idle_power_w(meter_device, measurement.idle_cooldown_s, measurement.idle_window_s)
    return Ready(loaded, prompt, run, idle_w, figures)


def backend_runner(cell: CellSpec, loaded, config, input_ids, device: str) -> Runner:
    """run(new_tokens, i, clock) -> (RunTiming, output): one timed generation for this backend.

    Uses the cell's backend, decoding, context, gen and measurement seed (the benchmarks call it too).
    """
    seed = cell.measurement.seed
    if cell.backend is Backend.COMPILED_LOOP:
        loop = CompiledDecodeLoop(loaded.model, cell.decoding, cell.context, cell.gen, device)
        return lambda new_tokens, i, clock: loop.run(input_ids, new_tokens, seed + i, clock)

    pad_id = _pad_id(loaded, config)
    cache_impl = CacheImplementation.STATIC if cell.backend is Backend.COMPILED else None
    attention_mask = torch.ones_like(input_ids)

    def run(new_tokens, i, clock):
        gen_config = generation_config(cell.decoding, new_tokens, pad_id, cache_impl)
        return timed_generate(loaded.model, input_ids, attention_mask, gen_config, device, seed + i, clock)

    return run


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


def _ttft_runs(run: Runner, cell: CellSpec) -> list[float]:
    """Milliseconds of `n_runs` one-token generates, prefill included."""
    return [run(1, i, clock=False)[0].e2e_s * 1000 for i in range(cell.measurement.n_runs)]


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
    cell: CellSpec, config, ready: Ready, warmup_s: list[float], ttft_ms: list[float], decode: DecodeRuns
) -> dict:
    """Memory, KV, latency and energy figures from what the runs recorded (arithmetic only)."""
    dtype = models.TORCH_DTYPES[cell.dtype]
    out = dict(decode.memory_figures)
    out["kv_cache_bytes"] = decode.kv_cache_bytes
    out["kv_cache_bytes_analytic"] = kvcache.analytic_kv_bytes(
        config, ready.prompt.context_tokens_measured, cell.gen, dtype, cell.cache_implementation
    )
    out["gen_tokens_measured"] = min(t.new_tokens for t in decode.timings)
    out.update(_latency_figures(decode.timings, ttft_ms, cell.gen))
    # transformers compiles generate()'s decode step itself when the cache is static on a GPU.
    out["compiled"] = cell.backend is Backend.COMPILED_LOOP or hasattr(ready.loaded.model, "_compiled_call")
    if cell.backend.static_cache:
        out["compile_s"] = max(0.0, warmup_s[0] - out["e2e_ms_p50"] / 1000)
    out.update(_energy_figures(decode, ready.idle_power_w, cell.gen))
    return out


def _energy_figures(decode: DecodeRuns, idle_power_w: float | None, gen: int) -> dict:
    if not decode.metered:
        return energy.unavailable(decode.reading.source)
    record = energy.summarize(decode.reading, idle_power_w, decode.energy_runs * gen)
    return {**record, "energy_runs": decode.energy_runs}


def _roofline_figures(cell: CellSpec, config, prompt, decode_tps, bandwidth, active_params: int) -> dict:
    dtype = models.TORCH_DTYPES[cell.dtype]
    kv_read = kvcache.kv_bytes_read_per_token(config, prompt.context_tokens_measured, cell.gen, dtype)
    bytes_per_token = roofline.decode_bytes_per_token(active_params, dtype, kv_read)
    return {"decode_bytes_per_token": bytes_per_token, **roofline.roofline(decode_tps, bandwidth, bytes_per_token)}


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
