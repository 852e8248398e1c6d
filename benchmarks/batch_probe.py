"""What changes when B sequences decode together? A benchmark, not a test.

For one architecture card (random weights, eager generate, greedy) at one context and gen, runs every
batch size in --batches on B distinct seeded prompts and reports, per B: aggregate and per-sequence
decode tok/s (median of --runs), KV bytes of the returned cache against B x the analytic size of one
sequence, for a mixture-of-experts card the distinct experts per layer per decode step beside what
uniform routing predicts, bytes and FLOPs per decode step with the bandwidth and compute roofs, and on
a GPU the peak memory, activations per sequence and the largest batch estimated to fit. A batch the
estimate (from the smallest batch that ran) says will not fit is refused before it runs; a batch that
runs out of memory is reported with failure_kind oom, as the harness would write its row.

    python benchmarks/batch_probe.py --architecture workflow/architectures/gpt-oss-20b.json \
        --context 2048 --gen 64 --batches 1,8,32,64 --out batch.json
    python benchmarks/batch_probe.py --architecture workflow/architectures/tiny-gpt-oss.json \
        --context 64 --gen 16 --batches 1,2,4,8,16 --dtype float32 --out batch-cpu.json

On CPU there are no calibrated ceilings: pass --bandwidth and --flops-rate to get roofs (labelled as given).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from pathlib import Path

import torch
from _cell import benchmark_cell, shape_arguments

from deploybench.analytic import capacity, kvcache, params, roofline
from deploybench.engines import batch as batching
from deploybench.engines import models
from deploybench.engines.timing import generation_config, synchronize
from deploybench.enums import ExpertsRead
from deploybench.instruments import calibration, coverage, memory
from deploybench.instruments.device import is_cuda
from deploybench.instruments.environment import capture, resolve_device
from deploybench.measure import failures
from deploybench.plan.spec import standard_decoding
from deploybench.stats import median

GREEDY = standard_decoding("greedy")


def ceilings(args, device: str, dtype: torch.dtype) -> dict:
    """Copy bandwidth and GEMM rate: calibrated on a GPU (before the model loads), else as given."""
    if is_cuda(device):
        return {
            "bandwidth_bytes_per_s": calibration.copy_bandwidth(device),
            "gemm_flops_per_s": calibration.gemm_flops(dtype, device),
            "source": "calibrated on this device (deploybench.instruments.calibration)",
        }
    return {
        "bandwidth_bytes_per_s": args.bandwidth,
        "gemm_flops_per_s": args.flops_rate,
        "source": "given on the command line" if args.bandwidth or args.flops_rate else "none (no CUDA device)",
    }


def run_batch(loaded, config, args, device, batch: int, dtype: torch.dtype) -> dict:
    """Timed eager generates at batch B, then an untimed one with the routers recorded."""
    model = loaded.model
    ids, mask = batching.batch_tensors(batching.prompt_batch(loaded, config, args.context, batch, args.seed), device)
    gen_config = generation_config(GREEDY, args.gen, 0)
    run = lambda i, clock: batching.timed_generate_batch(model, ids, mask, gen_config, device, args.seed + i, clock)  # noqa: E731
    run(0, False)  # warm-up at the full shape
    memory.reset_peak(device)
    timings, output = [], None
    for i in range(args.runs):
        del output
        timing, output = run(i, True)
        timings.append(timing)
    peak = memory.peak(device)
    kv_measured = kvcache.measured_kv_bytes(output.past_key_values)
    del output
    per_seq = median([t.decode_tps for t in timings if t.decode_tps])
    out = {
        "status": "ok",
        "decode_tps_per_seq": per_seq,
        "decode_tps": batch * per_seq if per_seq else None,
        "decode_tps_per_seq_samples": [t.decode_tps for t in timings],
        "e2e_ms_p50": median([t.e2e_s * 1000 for t in timings]),
        "gen_tokens_measured": min(t.new_tokens for t in timings),
        "kv_cache_bytes": kv_measured,
        "kv_cache_bytes_analytic": kvcache.analytic_kv_bytes(config, args.context, args.gen, dtype, batch=batch),
        "peak_allocated_bytes": peak.peak_allocated_bytes,
    }
    if models.is_moe(config):
        recorded = coverage.record_generate(model, ids, mask, gen_config)
        out["experts_touched_per_layer"] = recorded.experts_touched_per_layer
        out["experts_touched_uniform_prediction"] = recorded.uniform_prediction
        out["experts_touched_per_layer_by_layer"] = list(recorded.per_layer)
    return out


def figures_at(out: dict, batch: int, config, split, counts, reads_all: bool, ceiling: dict, dtype, args) -> dict:
    """Bytes and FLOPs per decode step and the two roofs, from the experts the step actually read."""
    touched = split["n_experts"] if reads_all else out.get("experts_touched_per_layer", 0)
    multiplied = counts["all_experts_params"] if reads_all else counts["active_params"]
    step = roofline.decode_step_figures(config, split, multiplied, touched, dtype, args.context, args.gen, batch)
    bandwidth, rate = ceiling["bandwidth_bytes_per_s"], ceiling["gemm_flops_per_s"]
    roofs = roofline.batch_roofline(
        out.get("decode_tps"), bandwidth, rate, step["decode_bytes_per_step"], step["decode_flops_per_step"], batch
    )
    figures = {**step, **roofs}
    if split["moe_layers"] and not reads_all:  # the bytes had routing been uniform
        uniform = coverage.uniform_coverage(split["n_experts"], split["top_k"], batch)
        bytes_uniform = roofline.decode_step_figures(
            config, split, multiplied, uniform, dtype, args.context, args.gen, batch
        )["decode_bytes_per_step"]
        figures["decode_bytes_per_step_if_uniform"] = bytes_uniform
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shape_arguments(parser)
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes, run in this order")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--headroom", type=float, default=capacity.DEFAULT_HEADROOM)
    parser.add_argument("--bandwidth", type=float, help="bytes/s for the roof where nothing is calibrated (CPU)")
    parser.add_argument("--flops-rate", type=float, help="FLOP/s for the compute roof where nothing is calibrated")
    parser.add_argument("--attn-implementation", help="default: what transformers chooses (eager for gpt-oss)")
    parser.add_argument(
        "--attempt-all", action="store_true", help="run batches the estimate says will not fit (to test the estimate)"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    cell = benchmark_cell(args.architecture, args.context, args.gen, args.dtype, "eager", args.experts_implementation)
    cell = cell.model_copy(
        update={"model": cell.model.model_copy(update={"attn_implementation": args.attn_implementation})}
    )
    device = resolve_device("auto")
    dtype = models.TORCH_DTYPES[cell.dtype]
    config = models.model_config(cell.model)
    meta = params.build_meta_model(config)
    counts, split = params.count_params(meta), params.expert_split(meta)
    ceiling = ceilings(args, device, dtype)
    on_gpu = is_cuda(device)
    if on_gpu:
        torch.cuda.empty_cache()
    free_before_load = torch.cuda.mem_get_info()[0] if on_gpu else None

    # the same random weights (and so the same routing) on every run of the probe
    loaded = models.load_model(cell.model, cell.dtype, device, seed=args.seed)
    synchronize(device)
    weights = memory.allocated_bytes(device)
    implementations = models.implementations(loaded.model)
    reads_all = implementations.experts_read_per_token == ExpertsRead.ALL
    kv_per_seq = kvcache.analytic_kv_bytes(config, args.context, args.gen, dtype)
    estimate = None  # from the smallest batch that ran, once one has (GPU)
    results = []
    for batch in batches:
        started = time.perf_counter()
        entry = {"batch_size": batch}
        try:
            if estimate is not None:
                entry["max_batch_fit"] = estimate.max_batch
                entry["predicted_oom"] = estimate.exceeds(batch)
                if not args.attempt_all:
                    capacity.check_batch_fits(batch, estimate)
            out = run_batch(loaded, config, args, device, batch, dtype)
            out.update(figures_at(out, batch, config, split, counts, reads_all, ceiling, dtype, args))
            if out["peak_allocated_bytes"] is not None:
                activation = capacity.activation_bytes_per_seq(out["peak_allocated_bytes"], weights, kv_per_seq, batch)
                out["activation_bytes_per_seq"] = activation
                fit = capacity.BatchEstimate(free_before_load, weights, kv_per_seq, activation, args.headroom)
                out["max_batch_fit_from_this_batch"] = fit.max_batch
                estimate = estimate or fit
            entry.update(out)
        except Exception as exc:  # the harness's rule: an expected failure is a row, anything else propagates
            kind = failures.classify(exc)
            if kind is None:
                raise
            entry.update(status="failed", failure_kind=kind, error=f"{type(exc).__name__}: {exc}"[:2000])
            gc.collect()
            if on_gpu:
                torch.cuda.empty_cache()
        entry["wall_s"] = time.perf_counter() - started
        results.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if not isinstance(v, list)}))

    report = {
        "architecture": args.architecture,
        "context": args.context,
        "gen": args.gen,
        "dtype": cell.dtype,
        "decoding": "greedy",
        "backend": "eager generate()",
        "weights_source": "random",
        **dataclasses.asdict(implementations),
        "runs_per_batch": args.runs,
        "ceilings": ceiling,
        "headroom": args.headroom,
        "free_bytes_before_load": free_before_load,
        "weights_bytes": weights,
        "kv_bytes_per_seq_analytic": kv_per_seq,
        **counts,
        **split,
        "environment": capture(device),
        "batches": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
