"""Measure one cell: the orchestration of loading, prompting, timing, memory, KV and energy.

`measure_cell(cell)` returns one result row (a dict in the schema of deploybench.schema).
Expected failures (out of memory, an unsupported dtype, a context over the model's limit) give a
row with status=failed; anything else raises, so a harness bug fails the job loudly.
"""

from __future__ import annotations

import gc
import time

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
from .timing import generation_config, synchronize, timed_generate

ENERGY_DISAGREEMENT_LIMIT = 0.10  # counter vs sampler, relative
# Derived from the names the meter writes (enums.ThrottleReason), so the two cannot drift apart.
THROTTLE_REASONS_THAT_INVALIDATE = frozenset(reason for reason in ThrottleReason if reason.invalidates)


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
    limit = getattr(config, "max_position_embeddings", None)
    try:
        if limit and cell.context + cell.gen > limit:
            raise failures.ContextTooLongError(
                f"context {cell.context} + gen {cell.gen} exceeds max_position_embeddings {limit}"
            )
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


def _measure_loaded(cell: CellSpec, device: str, config, active_params: int) -> dict:
    measurement = cell.measurement
    dtype = models.TORCH_DTYPES[cell.dtype]
    out: dict = {}

    bandwidth = roofline.measure_copy_bandwidth(device) if measurement.measure_bandwidth else None
    out["mem_bandwidth_bytes_per_s"] = bandwidth

    meter_device = nvml.open_device(device)
    load_start = time.perf_counter()
    loaded = models.load_model(cell.model, cell.dtype, device)
    synchronize(device)
    out["load_s"] = time.perf_counter() - load_start
    out["weights_bytes"] = memory.allocated_bytes(device)
    model = loaded.model

    prompt = _prompt(loaded, config, cell)
    out["prompt_mode"] = prompt.prompt_mode
    out["context_tokens_measured"] = prompt.context_tokens_measured
    input_ids = torch.tensor([prompt.input_ids], device=device)
    cache_impl = cell.cache_implementation if cell.backend.static_cache else None
    run = backend_runner(cell, loaded, config, input_ids, device)
    out.update(models.implementations(model))  # after the runner: compiled_loop sets its attention
    full, first = cell.gen, 1

    # Idle power with the weights resident, after a cool-down, before any generate of this cell.
    idle_w = measure_idle_power_w(meter_device, measurement.idle_cooldown_s, measurement.idle_window_s)

    # Warm-up at the full shape (compilation for the compiled backend happens here).
    warmup_s = []
    for i in range(max(measurement.warmup_runs, 2 if cache_impl else 0)):
        timing, _ = run(full, i, clock=False)
        warmup_s.append(timing.e2e_s)
    for i in range(max(1, measurement.warmup_runs // 2)):
        run(first, i, clock=False)

    ttft = [run(first, i, clock=False)[0].e2e_s * 1000 for i in range(measurement.n_runs)]

    memory.reset_peak(device)
    timings, output = [], None
    with EnergyMeter(meter_device) as meter:
        for i in range(measurement.n_runs):
            del output  # free the previous cache before the next run allocates its own
            timing, output = run(full, i, clock=True)
            timings.append(timing)
        energy_runs = len(timings)
        if meter_device.available:
            # The NVML counter updates about every 100 ms: extend the window until it is long enough.
            while meter.elapsed_s < measurement.min_energy_window_s:
                del output
                _, output = run(full, energy_runs, clock=True)
                energy_runs += 1
    out.update(memory.peak_figures(device))

    out["kv_cache_bytes"] = kvcache.measured_kv_bytes(output.past_key_values)
    out["kv_cache_bytes_analytic"] = kvcache.analytic_kv_bytes(
        config,
        prompt.context_tokens_measured,
        cell.gen,
        dtype,
        cell.cache_implementation,
    )
    out["gen_tokens_measured"] = min(t.new_tokens for t in timings)
    del output
    out.update(_latency_figures(timings, ttft, cell.gen))
    # transformers compiles generate()'s decode step itself when the cache is static on a GPU.
    out["compiled"] = cell.backend is Backend.COMPILED_LOOP or hasattr(model, "_compiled_call")
    if cache_impl:
        out["compile_s"] = max(0.0, warmup_s[0] - out["e2e_ms_p50"] / 1000)

    meter_device.close()  # the energy window is closed: NVML is not read again
    if not meter_device.available:
        out.update(energy.unavailable(meter_device.reason))
    else:
        out.update(energy.summarize(meter.reading, idle_w, energy_runs * cell.gen))
        out["energy_runs"] = energy_runs

    bytes_per_token = roofline.decode_bytes_per_token(
        active_params,
        dtype,
        kvcache.kv_bytes_read_per_token(config, prompt.context_tokens_measured, cell.gen, dtype),
    )
    out["decode_bytes_per_token"] = bytes_per_token
    out.update(roofline.roofline(out["decode_tps"], bandwidth, bytes_per_token))

    out["status"] = Status.OK
    reasons = validity_reasons(cell, out)
    out["valid"] = not reasons
    out["invalid_reasons"] = reasons
    return out


def backend_runner(cell: CellSpec, loaded, config, input_ids, device: str):
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


def _prompt(loaded, config, cell) -> prompts.Prompt:
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
