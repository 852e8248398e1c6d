"""A cell's figures from what its runs recorded: latency and its intervals, memory and KV, energy,
the roofline at its batch, boundness, and the validity verdict, each a record of deploybench.measure.records.
Arithmetic only: the phases that produce the records they read are in deploybench.measure.phases.

At batch B a decode step gives each of the B sequences one token: `decode_tps` is the aggregate over
the batch (B x steps per second), `decode_tps_per_seq` one sequence's, `tpot_ms` the time per step
(what each user waits between tokens), energy per token counts the tokens of every sequence.
"""

from __future__ import annotations

from deploybench.analytic import boundness, capacity, kvcache, roofline, step_kernels
from deploybench.analytic.capacity import BatchEstimate
from deploybench.engines import models
from deploybench.engines.base import LoadFigures
from deploybench.enums import Backend, ExpertsRead, Status, ThrottleReason
from deploybench.instruments import energy
from deploybench.instruments.coverage import Coverage
from deploybench.instruments.device import is_cuda
from deploybench.measure import uncertainty
from deploybench.measure.records import (
    BatchFit,
    Boundness,
    CellFigures,
    Compilation,
    EnergyFigures,
    Latency,
    MemoryFigures,
    Roofline,
    Verdict,
)
from deploybench.measure.runs import DecodeRuns, Idle, Measured, PrefillRuns
from deploybench.plan.spec import CellSpec
from deploybench.stats import coefficient_of_variation, median, supported_percentiles

ENERGY_DISAGREEMENT_LIMIT = 0.10  # counter vs sampler, relative
# Derived from the names the meter writes (enums.ThrottleReason), so the two cannot drift apart.
THROTTLE_REASONS_THAT_INVALIDATE = frozenset(reason for reason in ThrottleReason if reason.invalidates)


def figures(cell: CellSpec, config, counts: dict, split: dict, measured: Measured, device: str) -> CellFigures:
    """Every figure of a cell that ran, from its phases' records; `counts` and `split` as analytic.params
    gives them for the model."""
    load = measured.ready.load
    memory = memory_figures(cell, config, load.context_tokens_measured, measured.decode)
    latency = latency_figures(measured.prefill, measured.decode, cell.gen, cell.batch)
    compile_s = None
    if cell.backend.static_cache:  # the first full-shape warm-up compiled: its wall less a measured run's
        compile_s = max(0.0, measured.warmup_s[0] - latency.e2e_ms_p50 / 1000)
    cache = measured.compile_cache  # None for the eager backend
    compilation = Compilation(measured.compiled, compile_s, *((cache.hits, cache.misses) if cache else (None, None)))
    energy_record = energy_figures(measured.decode, measured.prefill, measured.idle, cell, load.context_tokens_measured)
    roof = roofline_figures(cell, config, load.context_tokens_measured, measured, latency.decode_tps, counts, split)
    ridge = measured.ceilings.ridge_flops_per_byte
    intensity = roof.decode_flops_per_step / roof.decode_bytes_per_step
    reasons = validity_reasons(cell, load, memory, latency, compilation, energy_record)
    return CellFigures(
        memory=memory,
        latency=latency,
        compilation=compilation,
        energy=energy_record,
        roofline=roof,
        boundness=boundness_figures(measured.after.step, latency.tpot_ms, intensity, ridge, device),
        batch_fit=batch_fit(
            measured.fits, cell.batch, max_batch_fit(measured.fits, memory, load.weights_bytes, cell.batch)
        ),
        verdict=Verdict(Status.OK, not reasons, tuple(reasons)),
    )


def memory_figures(cell: CellSpec, config, context: int, decode: DecodeRuns) -> MemoryFigures:
    dtype = models.TORCH_DTYPES[cell.dtype]
    analytic = kvcache.analytic_kv_bytes(config, context, cell.gen, dtype, cell.cache_implementation, batch=cell.batch)
    return MemoryFigures(decode.memory, decode.kv_cache_bytes, analytic)


def energy_figures(decode: DecodeRuns, prefill: PrefillRuns, idle: Idle, cell: CellSpec, context: int) -> EnergyFigures:
    if not decode.metered:
        return EnergyFigures(**energy.unavailable(decode.reading.source))
    tokens_per_run = cell.gen * cell.batch
    record = energy.summarize(decode.reading, idle.reading.power_w, decode.energy_runs * tokens_per_run)
    prefill_runs = len(prefill.ttft_ms)
    by_phase = energy.by_phase(
        prefill.reading, prefill_runs, decode.reading, decode.energy_runs, context, cell.gen, cell.batch
    )
    return EnergyFigures(**record, **by_phase, energy_runs=decode.energy_runs, prefill_energy_runs=prefill_runs)


def roofline_figures(
    cell: CellSpec, config, context: int, measured: Measured, decode_tps: float | None, counts: dict, split: dict
) -> Roofline:
    """Bytes and FLOPs of a decode step of the batch (the experts its B tokens touched, the KV of its B
    sequences), and decode speed against the copy-bandwidth, GEMV-bandwidth and compute ceilings."""
    dtype = models.TORCH_DTYPES[cell.dtype]
    reads = measured.ready.facts.implementations.experts_read_per_token
    recorded = measured.after.coverage
    params_read = roofline.params_read_per_token(counts["active_params"], counts["all_experts_params"], reads)
    touched = _experts_touched(reads, split, recorded)
    step = roofline.decode_step_figures(config, split, params_read, touched, dtype, context, cell.gen, cell.batch)
    bytes_per_step, flops_per_step = step["decode_bytes_per_step"], step["decode_flops_per_step"]
    ceilings = measured.ceilings
    return Roofline(
        params_read_per_token=params_read,
        experts_touched_per_layer=recorded.experts_touched_per_layer if recorded else None,
        experts_touched_uniform_prediction=recorded.uniform_prediction if recorded else None,
        decode_bytes_per_step=bytes_per_step,
        decode_flops_per_step=flops_per_step,
        decode_bytes_per_token=bytes_per_step / cell.batch,
        decode_flops_per_token=flops_per_step / cell.batch,
        **roofline.batch_roofline(
            decode_tps,
            ceilings.mem_bandwidth_bytes_per_s,
            ceilings.gemm_flops_per_s,
            bytes_per_step,
            flops_per_step,
            cell.batch,
        ),
        **roofline.roofline(decode_tps, ceilings.gemv_bandwidth_bytes_per_s, bytes_per_step / cell.batch, "_gemv"),
    )


def _experts_touched(reads: str, split: dict, recorded: Coverage | None) -> float:
    """Distinct experts per MoE layer a step reads: all of them (all_experts), the measured union of the
    step's routed experts, or top_k (batch 1, no recording); 0 for a dense model (no MoE layers)."""
    if reads == ExpertsRead.ALL:
        return split["n_experts"]
    if recorded is not None:
        return recorded.experts_touched_per_layer
    return split["top_k"]


def boundness_figures(
    step: boundness.StepProfile | None,
    tpot_ms: float | None,
    intensity_flops_per_byte: float,
    ridge_flops_per_byte: float | None,
    device: str,
) -> Boundness:
    """Kernel figures of a decode step, the GPU-busy fraction and what bounds the step."""
    if step is None:
        if not is_cuda(device):
            return Boundness(boundness_null_reason="no CUDA device: the kernel profile and the calibrations need CUDA")
        return Boundness(boundness_null_reason="gen below 2: no decode step to profile")
    busy = boundness.busy_fraction(step.gpu_kernel_ms_per_token, tpot_ms)
    verdict = boundness.bound_by(busy, intensity_flops_per_byte, ridge_flops_per_byte)
    null_reason = None
    if verdict is None and busy is not None:
        null_reason = "no ridge (measure_bandwidth off): compute and memory bandwidth not told apart"
    return Boundness(
        profile_tokens=step.profile_tokens,
        kernels_per_token=step.kernels_per_token,
        gpu_kernel_ms_per_token=step.gpu_kernel_ms_per_token,
        gpu_busy_fraction=busy,
        bound_by=verdict,
        boundness_null_reason=null_reason,
        step_kernels_json=step_kernels.to_json(step.kernels) if step.kernels else None,
    )


def latency_figures(prefill: PrefillRuns, decode: DecodeRuns, gen: int, batch: int = 1) -> Latency:
    """Medians, their 95% intervals, the percentiles n supports, run counts and stop reasons."""
    timings, ttft_ms = decode.timings, list(prefill.ttft_ms)
    e2e_ms = [t.e2e_s * 1000 for t in timings]
    per_seq = [t.decode_tps for t in timings if t.decode_tps]  # steps per second: one sequence's tok/s
    speeds = [batch * s for s in per_seq]  # the batch's
    itl_ms = [x * 1000 for t in timings for x in t.itl_s]
    decode_tps, decode_tps_per_seq = median(speeds), median(per_seq)
    e2e_p50 = median(e2e_ms)
    e2e, e2e_withheld = supported_percentiles(e2e_ms, "e2e_ms_p{q}", (50, 95, 99), "runs")
    itl, itl_withheld = supported_percentiles(itl_ms, "itl_ms_p{q}", (50, 95, 99), "pooled steps")
    tails = [r for r in (e2e_withheld, itl_withheld) if r]
    intervals, withheld = {}, []
    for column, n_eff, samples in (
        ("ttft_ms", "ttft_ms_n_eff", ttft_ms),
        ("decode_tps", "decode_tps_n_eff", speeds),
        ("e2e_ms_p50", "e2e_ms_n_eff", e2e_ms),
    ):
        interval, reason = uncertainty.interval_figures(column, n_eff, samples)
        intervals.update(interval)
        withheld += [reason] if reason else []
    return Latency(
        gen_tokens_measured=min(t.new_tokens for t in timings),
        ttft_ms=median(ttft_ms),
        ttft_ms_samples=tuple(ttft_ms),
        ttft_runs=len(ttft_ms),
        ttft_stop_reason=prefill.stop_reason,
        decode_runs=len(timings),
        decode_stop_reason=decode.stop_reason,
        e2e_ms_samples=tuple(e2e_ms),
        decode_tps=decode_tps,
        decode_tps_per_seq=decode_tps_per_seq,
        decode_tps_samples=tuple(speeds),
        decode_tps_cv=coefficient_of_variation(speeds),
        tpot_ms=1000 / decode_tps_per_seq if decode_tps_per_seq else None,
        itl_ms_samples=tuple(itl_ms),
        e2e_tps=batch * gen / (e2e_p50 / 1000) if e2e_p50 else None,
        **e2e,
        **itl,
        tail_null_reason="; ".join(tails) if tails else None,
        **intervals,
        ci_null_reason="; ".join(withheld) if withheld else None,
        ci_method=uncertainty.CI_METHOD,
    )


def max_batch_fit(
    fits: BatchEstimate | None, memory: MemoryFigures, weights_bytes: int | None, batch_size: int
) -> int | None:
    """The largest batch this cell's measured memory says fits the free memory it started with
    (capacity.measured_estimate: what a larger batch of the same cell is checked with before it loads)."""
    peak = memory.peak.peak_allocated_bytes
    if fits is None or peak is None or weights_bytes is None:
        return None
    return capacity.measured_estimate(fits.free_bytes, peak, weights_bytes, memory.kv_cache_bytes, batch_size).max_batch


def batch_fit(fits: BatchEstimate | None, batch: int, max_batch: int | None = None) -> BatchFit:
    """The pre-load estimate's columns at `batch` (empty where free memory was unknown), with `max_batch` as
    max_batch_fit: every row of a cell that got as far as the check, refused, failed or measured."""
    if fits is None:
        return BatchFit(None, None, None, None, max_batch)
    return BatchFit(
        free_bytes_before_load=fits.free_bytes,
        predicted_peak_bytes=int(fits.needed_bytes(batch)),
        predicted_activation_bytes_per_seq=fits.activation_bytes_per_seq,
        predicted_activation_source=fits.activation_source,
        max_batch_fit=max_batch,
    )


def validity_reasons(
    cell: CellSpec,
    load: LoadFigures,
    memory: MemoryFigures,
    latency: Latency,
    compilation: Compilation,
    energy_record: EnergyFigures,
) -> list[str]:
    reasons = []
    if cell.backend is Backend.COMPILED and not compilation.compiled:
        reasons.append("backend compiled requested but generate() did not compile (transformers compiles on GPU only)")
    if load.context_tokens_measured != cell.context:
        reasons.append(f"context_tokens_measured {load.context_tokens_measured} != requested {cell.context}")
    if latency.gen_tokens_measured != cell.gen:
        reasons.append(f"gen_tokens_measured {latency.gen_tokens_measured} != requested {cell.gen}")
    if memory.kv_cache_bytes != memory.kv_cache_bytes_analytic:
        reasons.append(f"kv_cache_bytes {memory.kv_cache_bytes} != analytic {memory.kv_cache_bytes_analytic}")
    return reasons + energy_reasons(energy_record, cell.measurement.min_energy_window_s)


def energy_reasons(record: EnergyFigures, min_window_s: float) -> list[str]:
    """Why a metered energy window is not valid: too short, counter and sampler apart, throttled, shared."""
    if record.energy_j is None:
        return []
    reasons = []
    if (record.energy_window_s or 0) < min_window_s:
        reasons.append(f"energy window {record.energy_window_s:.2f} s < min_energy_window_s")
    diff = record.energy_counter_sampler_rel_diff
    if diff is not None and diff > ENERGY_DISAGREEMENT_LIMIT:
        reasons.append(f"energy counter and sampler disagree by {diff:.1%}")
    throttled = [r for r in record.throttle_reasons or [] if r in THROTTLE_REASONS_THAT_INVALIDATE]
    if throttled:
        reasons.append(f"GPU throttled: {', '.join(throttled)}")
    if record.other_gpu_processes:
        reasons.append(f"{record.other_gpu_processes} other process(es) on the GPU")
    return reasons
