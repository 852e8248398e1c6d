"""Which compiled_loop variant decodes fastest? A benchmark, not a test.

For one architecture card and cell, builds the compiled_loop backend once per variant (fused
projections, each decode-attention kernel, and for a mixture-of-experts model each decode experts
path; deploybench.plan.loop_options) on the same seeded random weights, exactly as the harness builds it
from a model entry's `compiled_loop:` options. For each it reports decode tok/s, TTFT, compile time and decode
speed against the copy-bandwidth and GEMV-bandwidth rooflines side by side, and whether its logits match the
baseline's (today's defaults) over --logit-steps teacher-forced decode steps (against_baseline says what
"match" means); the summary names the fastest variant that matches. The JSON is rewritten after every variant
(the baseline's logits beside it, OUT.baseline-logits.pt), so a run cut short keeps what it measured and
`--resume` carries on from it.

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
from dataclasses import dataclass
from pathlib import Path

import torch
from _cell import benchmark_cell, random_model_and_prompt, shape_arguments

from deploybench.analytic import kvcache, params, roofline
from deploybench.engines import experts, models
from deploybench.engines.compiled_loop import fusion
from deploybench.engines.compiled_loop.engine import CompiledLoopEngine
from deploybench.enums import Backend, DecodeAttentionKernel, DecodeExperts, Device
from deploybench.instruments import calibration, compile_cache
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


def decode_step_logits(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Logits of `steps` decode steps, eagerly through the model as it stands: the prompt but its last `steps`
    tokens prefilled, then each of those fed in turn (teacher forcing, so every model sees the same inputs and
    the steps run the decode path: one query position). (steps, vocab), float32."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1])
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    first = ids.shape[1] - steps
    logits = []
    with torch.inference_mode():
        prefill = {"input_ids": ids[:, :first], "position_ids": positions[:, :first], "past_key_values": cache}
        model(**prefill, use_cache=True, logits_to_keep=1)  # not the whole prompt's logits: 0.8 GB for gpt-oss
        for k in range(first, ids.shape[1]):
            step = model(
                input_ids=ids[:, k : k + 1], position_ids=positions[:, k : k + 1], past_key_values=cache, use_cache=True
            )
            logits.append(step.logits[0, -1].float())
    return torch.stack(logits)


def measure_variant(
    args, options: dict, ceilings: dict, bytes_per_token: float, baseline: Baseline | None
) -> tuple[dict, torch.Tensor]:
    """The variant's figures, and its decode steps' logits (the baseline's are what the others are judged by)."""
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


def _measure(
    args, options, engine, loaded, ids, ceilings, bytes_per_token: float, baseline: Baseline | None
) -> tuple[dict, torch.Tensor]:
    steps = min(args.logit_steps, ids.shape[1] - 1)
    stock = decode_step_logits(loaded.model, ids, steps) if baseline is None else None  # transformers' own model
    engine.attach(loaded, ids)  # fuses, picks the kernels
    run, built = engine.run, columns(engine.facts())
    logits = decode_step_logits(loaded.model, ids, steps)

    cache_before = compile_cache.snapshot()
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
    cache = compile_cache.since(cache_before)
    result = {
        "options": options,
        "built": built,
        "compile_s": max(0.0, first_run_s - median([t.e2e_s for t in timings])),
        "compile_cache_hits": cache.hits,  # graphs an earlier process on the machine compiled: compile_s is warm
        "compile_cache_misses": cache.misses,
        "ttft_ms": median(ttft_ms),
        "ttft_ms_samples": ttft_ms,
        "decode_tps": decode_tps,
        "decode_tps_samples": decode,
        "decode_tps_cv": coefficient_of_variation(decode),
        "tokens": tokens,
        **roofline.roofline(decode_tps, ceilings["copy_bandwidth_bytes_per_s"], bytes_per_token),
        **roofline.roofline(decode_tps, ceilings["gemv_bandwidth_bytes_per_s"], bytes_per_token, suffix="_gemv"),
    }
    if baseline is None:
        result["stock_logit_gap"] = (logits - stock).abs().max().item()
        result["logit_steps"] = steps
    else:
        result.update(against_baseline(result, logits, baseline))
    return result, logits.cpu()


@dataclass
class Baseline:
    """The baseline's figures and its decode steps' logits, which every variant is compared with."""

    result: dict
    logits: torch.Tensor

    @staticmethod
    def logits_path(out: Path) -> Path:
        return out.with_name(out.name + ".baseline-logits.pt")

    def save(self, out: Path) -> None:
        torch.save(self.logits, self.logits_path(out))

    @classmethod
    def load(cls, report: dict, out: Path) -> Baseline:
        path = cls.logits_path(out)
        if not path.exists():
            raise SystemExit(f"--resume: {path} (the baseline's logits) is missing; rerun without --resume")
        return cls(report["variants"][BASELINE], torch.load(path))


def against_baseline(result: dict, logits: torch.Tensor, baseline: Baseline) -> dict:
    """The variant beside the baseline. Random weights leave near-ties among the logits, so greedy tokens part at
    the first rounding difference and equal tokens prove little; the logits say more. A variant computes the
    baseline's function (the fp32 GPU tests prove it on small cards) when at every teacher-forced decode step its
    logits are no further from the baseline's than ROUNDING_FACTOR times the baseline's own distance from
    transformers' unmodified model (stock_logit_gap): a wrong mask, kernel or fusion is off by the logits' own
    size, orders of magnitude more."""
    reference = baseline.logits.to(logits.device)
    differing = [i for i, (a, b) in enumerate(zip(result["tokens"], baseline.result["tokens"])) if a != b]
    diff = (logits - reference).abs().max().item()
    gap = baseline.result["stock_logit_gap"]
    speedup = result["decode_tps"] / baseline.result["decode_tps"] if baseline.result["decode_tps"] else None
    return {
        "tokens_equal_baseline": not differing and len(result["tokens"]) == len(baseline.result["tokens"]),
        "first_differing_token": differing[0] if differing else None,
        "max_abs_logit_diff_vs_baseline": diff,
        "baseline_max_abs_logit": reference.abs().max().item(),
        "logits_match_baseline": diff <= ROUNDING_FACTOR * gap,
        "decode_speedup_vs_baseline": speedup,
    }


# A variant's logits may be this many times as far from the baseline's as the baseline's are from transformers'
# unmodified model: both distances are rounding of the same order, either may be the larger.
ROUNDING_FACTOR = 2.0


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
    parser.add_argument("--logit-steps", type=int, default=16, help="teacher-forced decode steps whose logits compare")
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
    baseline = Baseline.load(report, out) if BASELINE in report["variants"] else None
    for name in wanted:
        if name in report["variants"] and "error" not in report["variants"][name]:
            continue
        started = time.perf_counter()
        try:
            result, logits = measure_variant(
                args, grid[name], report["ceilings"], report["decode_bytes_per_token"], baseline
            )
        except Exception as exc:  # a variant this stack cannot build is a result, not a crash
            result = {"options": grid[name], "error": f"{type(exc).__name__}: {exc}"[:500]}
            if name == BASELINE:
                raise
        if "error" in result:  # outside the except: its traceback (and what its frames hold) is gone by now
            _release(report["environment"].get("device", "cpu"))
        if name == BASELINE:
            baseline = Baseline(result, logits)  # its logits beside the JSON, not in it
            baseline.save(out)
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
    "compile_cache_hits",
    "roofline_fraction",
    "roofline_fraction_gemv",
    "decode_speedup_vs_baseline",
    "tokens_equal_baseline",
    "max_abs_logit_diff_vs_baseline",
    "logits_match_baseline",
    "stock_logit_gap",
)


def summary(report: dict) -> dict:
    """Per variant, the figures side by side (or its error), and the fastest variant whose logits match the
    baseline's (`fastest_matching`; the baseline itself when none is faster)."""
    rows = {}
    for name, result in report["variants"].items():
        rows[name] = {"error": result["error"]} if "error" in result else {k: result.get(k) for k in SUMMARY_KEYS}
    matching = [n for n, r in rows.items() if n == BASELINE or r.get("logits_match_baseline")]
    fastest = max(matching, key=lambda n: rows[n]["decode_tps"] or 0.0, default=None)
    return {"ceilings": report["ceilings"], "variants": rows, "fastest_matching": fastest}


def _line(name: str, result: dict) -> str:
    if "error" in result:
        return f"{name:60s} error: {result['error'][:120]}"
    tokens = "same" if result.get("tokens_equal_baseline", True) else "differ"
    if "stock_logit_gap" in result:
        logits = f"logits {result['stock_logit_gap']:.3g} from transformers' own"
    else:
        match = "match" if result["logits_match_baseline"] else "DIFFER"
        logits = f"logits {match} (max {result['max_abs_logit_diff_vs_baseline']:.3g} from the baseline's)"
    return f"{name:60s} {result['decode_tps']:9.2f} tok/s  TTFT {result['ttft_ms']:8.2f} ms  tokens {tokens}  {logits}"


if __name__ == "__main__":
    main()
