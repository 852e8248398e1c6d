"""Which compiled_loop variant decodes fastest? A benchmark, not a test.

For one architecture card and cell, builds the compiled_loop backend once per variant (fused
projections, each decode-attention kernel, and for a mixture-of-experts model each decode experts
path; deploybench.plan.loop_options) on the same seeded random weights, exactly as the harness builds it
from a model entry's `compiled_loop:` options. For each it checks the tokens against the baseline's
(today's defaults) and how far its first decode step's logits are from the baseline's, and reports
decode tok/s, TTFT, compile time and decode speed against the copy-bandwidth and GEMV-bandwidth
rooflines side by side. The JSON is rewritten after every variant, so a run cut short keeps what it
measured and `--resume` carries on from it.

    python benchmarks/compiled_loop_variants.py --architecture workflow/architectures/qwen3-32b.json \
        --context 2048 --gen 64 --out variants_qwen3.json
    python benchmarks/compiled_loop_variants.py --architecture workflow/architectures/tiny-gpt-oss.json \
        --context 40 --gen 12 --dtype float32 --out variants_tiny.json      # runs on CPU too

`--grid axes` (the default) changes one option at a time from the baseline; `--grid full` runs every
combination; `--only NAME ...` picks variants by name (`--list` prints them).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time
from pathlib import Path

import torch
from _cell import benchmark_cell, random_model_and_prompt, shape_arguments

from deploybench.analytic import kvcache, params, roofline
from deploybench.engines import experts, models
from deploybench.engines.compiled_loop import fusion
from deploybench.engines.compiled_loop.engine import CompiledLoopEngine
from deploybench.enums import Backend, DecodeAttentionKernel, DecodeExperts, Device
from deploybench.instruments import calibration
from deploybench.instruments.device import is_cuda
from deploybench.instruments.environment import capture, resolve_device
from deploybench.measure.records import columns
from deploybench.stats import coefficient_of_variation, median

BASELINE = "baseline"


def variant_name(options: dict) -> str:
    parts = []
    if options.get("fusions"):
        parts.append("fusions=" + "+".join(options["fusions"]))
    if options.get("decode_attention", DecodeAttentionKernel.GQA_MATMUL) != DecodeAttentionKernel.GQA_MATMUL:
        parts.append(f"attention={options['decode_attention']}")
    if options.get("decode_experts"):
        parts.append(f"experts={options['decode_experts']}")
    return ",".join(parts) or BASELINE


def variants(meta_model, model_experts: str | None, grid: str) -> dict[str, dict]:
    """{name: compiled_loop options}: the baseline first, then one change at a time or every combination."""
    applicable = fusion.applicable(meta_model)
    fusion_sets = [[f] for f in applicable] + ([applicable] if len(applicable) > 1 else [])
    kernels = [k.value for k in DecodeAttentionKernel if k is not DecodeAttentionKernel.GQA_MATMUL]
    experts_paths = []
    if models.is_moe(meta_model.config):
        experts_paths = [e.value for e in DecodeExperts if e.value != (model_experts or "grouped_mm")]
    if grid == "axes":
        chosen = [{}]
        chosen += [{"fusions": f} for f in fusion_sets]
        chosen += [{"decode_attention": k} for k in kernels]
        chosen += [{"decode_experts": e} for e in experts_paths]
    else:
        chosen = [
            {k: v for k, v in (("fusions", f), ("decode_attention", a), ("decode_experts", e)) if v}
            for f, a, e in itertools.product([[], *fusion_sets], [None, *kernels], [None, *experts_paths])
        ]
    return {variant_name(options): options for options in chosen}


def first_step_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits of one decode step after a prefill of all but the last token, eagerly, through what the loop built."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1])
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    with torch.inference_mode():
        model(input_ids=ids[:, :-1], position_ids=positions[:, :-1], past_key_values=cache, use_cache=True)
        step = model(input_ids=ids[:, -1:], position_ids=positions[:, -1:], past_key_values=cache, use_cache=True)
    return step.logits[0, -1].float()


def measure_variant(args, options: dict, ceilings: dict, bytes_per_token: float, baseline: dict | None) -> dict:
    cell = benchmark_cell(
        args.architecture,
        args.context,
        args.gen,
        args.dtype,
        Backend.COMPILED_LOOP,
        args.experts_implementation,
        options,
    )
    loaded, ids, device = random_model_and_prompt(cell, seed=args.seed)  # every variant: the same random weights
    engine = CompiledLoopEngine(cell, device, loaded.model.config)
    try:
        return _measure(args, options, engine, loaded, ids, ceilings, bytes_per_token, baseline)
    finally:
        # Also when the variant fails: an exception's traceback keeps this frame, and the frame the model
        # (on the H100 every variant after a failed one ran out of memory, the failed one's 40 GB still held).
        engine.close()
        del engine, loaded, ids
        _release(device)


def _measure(args, options, engine, loaded, ids, ceilings, bytes_per_token: float, baseline: dict | None) -> dict:
    engine.attach(loaded, ids)  # fuses, picks the kernels
    run, built = engine.run, columns(engine.facts())
    logits = first_step_logits(loaded.model, ids)

    first_run_s = run(args.gen, 0, False)[0].e2e_s  # compiles
    run(args.gen, 1, False)  # records the CUDA graphs
    run(1, 0, False)
    run(args.gen, 0, False)  # the full shape again after the one-token shape, as the harness does
    ttft_ms = [run(1, i, False)[0].e2e_s * 1000 for i in range(args.ttft_runs)]
    timings, tokens = [], None
    for i in range(args.runs):
        timing, output = run(args.gen, i, True)
        timings.append(timing)
        tokens = output.sequences[0, args.context :].tolist() if tokens is None else tokens
    decode = [t.decode_tps for t in timings if t.decode_tps]
    decode_tps = median(decode)
    result = {
        "options": options,
        "built": built,
        "compile_s": max(0.0, first_run_s - median([t.e2e_s for t in timings])),
        "ttft_ms": median(ttft_ms),
        "ttft_ms_samples": ttft_ms,
        "decode_tps": decode_tps,
        "decode_tps_samples": decode,
        "decode_tps_cv": coefficient_of_variation(decode),
        "tokens": tokens,
        **roofline.roofline(decode_tps, ceilings["copy_bandwidth_bytes_per_s"], bytes_per_token),
        **roofline.roofline(decode_tps, ceilings["gemv_bandwidth_bytes_per_s"], bytes_per_token, suffix="_gemv"),
    }
    if baseline is not None:
        result.update(_against_baseline(result, logits, baseline))
    else:
        result["logits"] = logits.tolist()
    return result


def _against_baseline(result: dict, logits: torch.Tensor, baseline: dict) -> dict:
    reference = torch.tensor(baseline["logits"], device=logits.device)  # stored as a list; logits sit on the GPU
    differing = [i for i, (a, b) in enumerate(zip(result["tokens"], baseline["tokens"])) if a != b]
    return {
        "tokens_equal_baseline": not differing and len(result["tokens"]) == len(baseline["tokens"]),
        "first_differing_token": differing[0] if differing else None,
        "max_abs_logit_diff_vs_baseline": (logits - reference).abs().max().item(),
        "baseline_max_abs_logit": reference.abs().max().item(),
        "decode_speedup_vs_baseline": result["decode_tps"] / baseline["decode_tps"] if baseline["decode_tps"] else None,
    }


def _release(device: str) -> None:
    gc.collect()
    torch._dynamo.reset()  # each variant compiles its own step; drop the previous one's graphs
    if is_cuda(device):
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shape_arguments(parser, experts="the prefill's")
    parser.add_argument("--grid", choices=("axes", "full"), default="axes")
    parser.add_argument("--only", nargs="*", help="variant names (the baseline always runs)")
    parser.add_argument("--runs", type=int, default=3, help="measured full generates per variant")
    parser.add_argument("--ttft-runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="weights seed, the same for every variant")
    parser.add_argument("--list", action="store_true", help="print the variant names and exit")
    parser.add_argument("--resume", action="store_true", help="keep the variants already in --out")
    parser.add_argument("--out", help="the JSON report (required unless --list)")
    args = parser.parse_args()

    config = models.load_card(args.architecture)
    meta = params.build_meta_model(config)
    grid = variants(meta, args.experts_implementation, args.grid)
    if args.list:
        print("\n".join(grid))
        return
    if not args.out:
        parser.error("--out is required")
    wanted = [BASELINE, *(n for n in grid if n != BASELINE and (not args.only or n in args.only))]
    unknown = set(args.only or []) - set(grid)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; --list prints them")

    out = Path(args.out)
    report = json.loads(out.read_text()) if args.resume and out.exists() else None
    if report is None:
        report = _header(args, config, meta)
    for name in wanted:
        if name in report["variants"] and "error" not in report["variants"][name]:
            continue
        started = time.perf_counter()
        try:
            baseline = None if name == BASELINE else report["variants"][BASELINE]
            result = measure_variant(args, grid[name], report["ceilings"], report["decode_bytes_per_token"], baseline)
        except Exception as exc:  # a variant this stack cannot build is a result, not a crash
            result = {"options": grid[name], "error": f"{type(exc).__name__}: {exc}"[:500]}
            if name == BASELINE:
                raise
        if "error" in result:  # outside the except: its traceback (and what its frames hold) is gone by now
            _release(report["environment"].get("device", "cpu"))
        result["wall_s"] = time.perf_counter() - started
        report["variants"][name] = result
        out.write_text(json.dumps(report, indent=1, default=str))
        print(_line(name, result), flush=True)
    print(json.dumps(summary(report), indent=1))


def _header(args, config, meta) -> dict:
    dtype = models.TORCH_DTYPES[args.dtype]
    device = resolve_device(Device.AUTO)
    counts = params.count_params(meta)
    experts_read = experts.experts_read_per_token(models.is_moe(config), args.experts_implementation)
    params_read = roofline.params_read_per_token(counts["active_params"], counts["all_experts_params"], experts_read)
    kv_read = kvcache.kv_bytes_read_per_token(config, args.context, args.gen, dtype)
    copy_bw = calibration.copy_bandwidth(device)
    gemv_bw = calibration.gemv_bandwidth(calibration.dominant_weight_shape(meta), dtype, device)
    _release(device)
    return {
        "architecture": args.architecture,
        "context": args.context,
        "gen": args.gen,
        "dtype": args.dtype,
        "experts_implementation": args.experts_implementation,
        "grid": args.grid,
        "runs": args.runs,
        "ttft_runs": args.ttft_runs,
        "params_read_per_token": params_read,
        "kv_bytes_read_per_token": kv_read,
        "decode_bytes_per_token": roofline.decode_bytes_per_step(params_read, dtype, kv_read),
        "ceilings": {"copy_bandwidth_bytes_per_s": copy_bw, "gemv_bandwidth_bytes_per_s": gemv_bw},
        "environment": {"device": device, **capture(device)},
        "variants": {},
    }


SUMMARY_KEYS = (
    "decode_tps",
    "ttft_ms",
    "compile_s",
    "roofline_fraction",
    "roofline_fraction_gemv",
    "decode_speedup_vs_baseline",
    "tokens_equal_baseline",
    "max_abs_logit_diff_vs_baseline",
)


def summary(report: dict) -> dict:
    """Per variant, the figures side by side (or its error)."""
    rows = {}
    for name, result in report["variants"].items():
        rows[name] = {"error": result["error"]} if "error" in result else {k: result.get(k) for k in SUMMARY_KEYS}
    return {"ceilings": report["ceilings"], "variants": rows}


def _line(name: str, result: dict) -> str:
    if "error" in result:
        return f"{name:60s} error: {result['error'][:120]}"
    tokens = "same" if result.get("tokens_equal_baseline", True) else "DIFFER"
    return f"{name:60s} {result['decode_tps']:9.2f} tok/s  TTFT {result['ttft_ms']:8.2f} ms  tokens {tokens}"


if __name__ == "__main__":
    main()
