"""A cell's figures from what its runs recorded: latency and its intervals, memory and KV, energy,
the roofline at its batch, boundness, and the validity verdict. Arithmetic only: the phases that
produce the records are in deploybench.measure.phases.

At batch B a decode step gives each of the B sequences one token: `decode_tps` is the aggregate over
the batch (B x steps per second), `decode_tps_per_seq` one sequence's, `tpot_ms` the time per step
(what each user waits between tokens), energy per token counts the tokens of every sequence.
"""

from __future__ import annotations

from deploybench.analytic import boundness, kvcache, roofline
from deploybench.engines import models
from deploybench.engines.experts import READS_ALL
from deploybench.enums import Backend, ThrottleReason
from deploybench.instruments import calibration, energy
from deploybench.measure import uncertainty
from deploybench.measure.runs import Afterwards, DecodeRuns, PrefillRuns, Ready
from deploybench.plan.spec import CellSpec
from deploybench.stats import coefficient_of_variation, median, supported_percentiles

ENERGY_DISAGREEMENT_LIMIT = 0.10  # counter vs sampler, relative
# Derived from the names the meter writes (enums.ThrottleReason), so the two cannot drift apart.
THROTTLE_REASONS_THAT_INVALIDATE = frozenset(reason for reason in ThrottleReason if reason.invalidates)


def figures(
    cell: CellSpec, config, ready: Ready, warmup_s: list[float], prefill: PrefillRuns, decode: DecodeRuns
) -> dict:
    """Memory, KV, latency and energy figures."""
    dtype = models.TORCH_DTYPES[cell.dtype]
    out = dict(decode.memory_figures)
    out["kv_cache_bytes"] = decode.kv_cache_bytes
    out["kv_cache_bytes_analytic"] = kvcache.analytic_kv_bytes(
        config, ready.prompts.context_tokens_measured, cell.gen, dtype, cell.cache_implementation, batch=cell.batch
    )
    out["gen_tokens_measured"] = min(t.new_tokens for t in decode.timings)
    out.update(latency_figures(prefill, decode, cell.gen, cell.batch))
    # transformers compiles generate()'s decode step itself when the cache is static on a GPU.
    out["compiled"] = cell.backend is Backend.COMPILED_LOOP or hasattr(ready.loaded.model, "_compiled_call")
    if cell.backend.static_cache:
        out["compile_s"] = max(0.0, warmup_s[0] - out["e2e_ms_p50"] / 1000)
    out.update(energy_figures(decode, prefill, ready, cell))
    return out


def energy_figures(decode: DecodeRuns, prefill: PrefillRuns, ready: Ready, cell: CellSpec) -> dict:
    if not decode.metered:
        return energy.unavailable(decode.reading.source)
    tokens_per_run = cell.gen * cell.batch
    record = energy.summarize(decode.reading, ready.idle.power_w, decode.energy_runs * tokens_per_run)
    prefill_runs = len(prefill.ttft_ms)
    by_phase = energy.by_phase(
        prefill.reading,
        prefill_runs,
        decode.reading,
        decode.energy_runs,
        ready.prompts.context_tokens_measured,
        cell.gen,
        cell.batch,
    )
    return {**record, **by_phase, "energy_runs": decode.energy_runs, "prefill_energy_runs": prefill_runs}


def roofline_figures(cell: CellSpec, config, ready: Ready, out: dict, counts: dict, split: dict, after) -> dict:
    """Bytes and FLOPs of a decode step of the batch (the experts its B tokens touched, the KV of its B
    sequences), and decode speed against the copy-bandwidth, GEMV-bandwidth and compute ceilings."""
    dtype = models.TORCH_DTYPES[cell.dtype]
    context = ready.prompts.context_tokens_measured
    reads = out["experts_read_per_token"]
    params_read = roofline.params_read_per_token(counts["active_params"], counts["all_experts_params"], reads)
    touched = _experts_touched(reads, split, after)
    step = roofline.decode_step_figures(config, split, params_read, touched, dtype, context, cell.gen, cell.batch)
    bytes_per_step, flops_per_step = step["decode_bytes_per_step"], step["decode_flops_per_step"]
    decode_tps = out["decode_tps"]
    return {
        "params_read_per_token": params_read,
        "experts_touched_per_layer": after.coverage.experts_touched_per_layer if after.coverage else None,
        "experts_touched_uniform_prediction": after.coverage.uniform_prediction if after.coverage else None,
        "decode_bytes_per_step": bytes_per_step,
        "decode_flops_per_step": flops_per_step,
        "decode_bytes_per_token": bytes_per_step / cell.batch,
        "decode_flops_per_token": flops_per_step / cell.batch,
        **roofline.batch_roofline(
            decode_tps,
            out.get("mem_bandwidth_bytes_per_s"),
            out.get("gemm_flops_per_s"),
            bytes_per_step,
            flops_per_step,
            cell.batch,
        ),
        **roofline.roofline(decode_tps, out.get("gemv_bandwidth_bytes_per_s"), bytes_per_step / cell.batch, "_gemv"),
    }


def _experts_touched(reads: str, split: dict, after: Afterwards) -> float:
    """Distinct experts per MoE layer a step reads: all of them (all_experts), the measured union of the
    step's routed experts, or top_k (batch 1, no recording); 0 for a dense model (no MoE layers)."""
    if reads == READS_ALL:
        return split["n_experts"]
    if after.coverage is not None:
        return after.coverage.experts_touched_per_layer
    return split["top_k"]


def boundness_figures(step: boundness.StepProfile | None, out: dict, device: str) -> dict:
    """Kernel figures of a decode step, the GPU-busy fraction and what bounds the step."""
    if step is None:
        if not calibration.is_cuda(device):
            return {"boundness_null_reason": "no CUDA device: the kernel profile and the calibrations need CUDA"}
        return {"boundness_null_reason": "gen below 2: no decode step to profile"}
    busy = boundness.busy_fraction(step.gpu_kernel_ms_per_token, out.get("tpot_ms"))
    bandwidth = out.get("gemv_bandwidth_bytes_per_s") or out.get("mem_bandwidth_bytes_per_s")
    ridge = out["gemm_flops_per_s"] / bandwidth if out.get("gemm_flops_per_s") and bandwidth else None
    intensity = out["decode_flops_per_step"] / out["decode_bytes_per_step"]
    verdict = boundness.bound_by(busy, intensity, ridge)
    figures = {
        "profile_tokens": step.profile_tokens,
        "kernels_per_token": step.kernels_per_token,
        "gpu_kernel_ms_per_token": step.gpu_kernel_ms_per_token,
        "gpu_busy_fraction": busy,
        "bound_by": verdict,
    }
    if verdict is None and busy is not None:
        figures["boundness_null_reason"] = (
            "no ridge (measure_bandwidth off): compute and memory bandwidth not told apart"
        )
    return figures


def latency_figures(prefill: PrefillRuns, decode: DecodeRuns, gen: int, batch: int = 1) -> dict:
    """Medians, their 95% intervals, the percentiles n supports, run counts and stop reasons."""
    timings, ttft_ms = decode.timings, prefill.ttft_ms
    e2e_ms = [t.e2e_s * 1000 for t in timings]
    per_seq = [t.decode_tps for t in timings if t.decode_tps]  # steps per second: one sequence's tok/s
    speeds = [batch * s for s in per_seq]  # the batch's
    itl_ms = [x * 1000 for t in timings for x in t.itl_s]
    decode_tps, decode_tps_per_seq = median(speeds), median(per_seq)
    e2e_p50 = median(e2e_ms)
    out = {
        "batch_size": batch,
        "ttft_ms": median(ttft_ms),
        "ttft_ms_samples": ttft_ms,
        "ttft_runs": len(ttft_ms),
        "ttft_stop_reason": prefill.stop_reason,
        "decode_runs": len(timings),
        "decode_stop_reason": decode.stop_reason,
        "e2e_ms_samples": e2e_ms,
        "decode_tps": decode_tps,
        "decode_tps_per_seq": decode_tps_per_seq,
        "decode_tps_samples": speeds,
        "decode_tps_cv": coefficient_of_variation(speeds),
        "tpot_ms": 1000 / decode_tps_per_seq if decode_tps_per_seq else None,
        "itl_ms_samples": itl_ms,
        "e2e_tps": batch * gen / (e2e_p50 / 1000) if e2e_p50 else None,
    }
    e2e, e2e_withheld = supported_percentiles(e2e_ms, "e2e_ms_p{q}", (50, 95, 99), "runs")
    itl, itl_withheld = supported_percentiles(itl_ms, "itl_ms_p{q}", (50, 95, 99), "pooled steps")
    out.update(e2e, **itl)
    tails = [r for r in (e2e_withheld, itl_withheld) if r]
    out["tail_null_reason"] = "; ".join(tails) if tails else None
    withheld = []
    for column, n_eff, samples in (
        ("ttft_ms", "ttft_ms_n_eff", ttft_ms),
        ("decode_tps", "decode_tps_n_eff", speeds),
        ("e2e_ms_p50", "e2e_ms_n_eff", e2e_ms),
    ):
        interval, reason = uncertainty.interval_figures(column, n_eff, samples)
        out.update(interval)
        withheld += [reason] if reason else []
    out["ci_null_reason"] = "; ".join(withheld) if withheld else None
    out["ci_method"] = uncertainty.CI_METHOD
    return out


def verdict(cell: CellSpec, out: dict) -> dict:
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
