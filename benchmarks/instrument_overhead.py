"""How much do the harness's instruments slow decoding down? A benchmark, not a test.

In one process, on one model and cell, interleaves full runs of one backend in four modes:
  plain            no timestamps, no sampler (a bare generate() or loop)
  steps            the per-step timestamps the harness takes (a streamer for generate(); a CUDA event
                   per token for compiled_loop)
  steps+sampler    timestamps + NVML power sampler at 100 Hz (what the harness runs)
  steps+sampler10  timestamps + sampler at 10 Hz
Decode tok/s is (gen - 1) / (e2e(gen) - median TTFT) for every mode, so all four are measured the
same way; the instrumented modes also report the harness's own per-step decode_tps.

    python benchmarks/instrument_overhead.py --architecture workflow/architectures/qwen3-32b.json \
        --context 2048 --gen 64 --rounds 5 --out overhead.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from _cell import benchmark_cell, random_model_and_prompt, rotated, shape_arguments

from deploybench.engines.factory import engine_for
from deploybench.enums import Backend, values
from deploybench.instruments import nvml
from deploybench.instruments.energy_meter import EnergyMeter
from deploybench.instruments.environment import capture
from deploybench.stats import coefficient_of_variation, median

MODES = ("plain", "steps", "steps+sampler", "steps+sampler10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shape_arguments(parser)
    parser.add_argument("--backend", default=Backend.EAGER, choices=values(Backend))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    cell = benchmark_cell(
        args.architecture, args.context, args.gen, args.dtype, args.backend, args.experts_implementation
    )
    loaded, ids, device = random_model_and_prompt(cell)
    # The harness's own engine for the backend: greedy, as its reference cell.
    engine = engine_for(cell, device, loaded.model.config)
    engine.attach(loaded, ids)
    generate = engine.run
    dev = nvml.open_device(device)

    for i in range(3):  # warm-up (and compilation for the compiled backends)
        generate(args.gen, i, clock=False)
    ttft_s = [generate(1, i, clock=False)[0].e2e_s for i in range(5)]
    ttft = median(ttft_s)

    results = {mode: {"e2e_s": [], "decode_tps_e2e": [], "decode_tps_steps": []} for mode in MODES}
    for r in range(args.rounds):
        for mode in rotated(MODES, r):
            clock = mode != "plain"
            sampled = mode.startswith("steps+sampler") and dev.available
            meter = EnergyMeter(dev, interval_s=0.1 if mode.endswith("10") else 0.01)
            with meter if sampled else contextlib.nullcontext():
                timing, output = generate(args.gen, r, clock=clock)
            del output
            results[mode]["e2e_s"].append(timing.e2e_s)
            results[mode]["decode_tps_e2e"].append((args.gen - 1) / (timing.e2e_s - ttft))
            if clock:
                results[mode]["decode_tps_steps"].append(timing.decode_tps)

    summary = {}
    for mode, res in results.items():
        summary[mode] = {
            "decode_tps_e2e_median": median(res["decode_tps_e2e"]),
            "decode_tps_e2e_cv": coefficient_of_variation(res["decode_tps_e2e"]),
            "decode_tps_steps_median": median(res["decode_tps_steps"]) if res["decode_tps_steps"] else None,
            "samples": res,
        }
    plain = summary["plain"]["decode_tps_e2e_median"]
    report = {
        "architecture": args.architecture,
        "experts_implementation": args.experts_implementation,
        "backend": args.backend,
        "context": args.context,
        "gen": args.gen,
        "rounds": args.rounds,
        "ttft_ms": ttft * 1000,
        "environment": capture(device),
        "energy_device": "nvml" if dev.available else dev.energy_source,
        "modes": summary,
        "ratio_instrumented_over_plain": {
            mode: summary[mode]["decode_tps_e2e_median"] / plain for mode in MODES if mode != "plain"
        },
        "ratio_harness_decode_tps_over_plain": summary["steps+sampler"]["decode_tps_steps_median"] / plain,
        # Runs of one round are back to back, so a slow spell of the host hits every mode of that
        # round alike: the per-round ratio is far less noisy than the ratio of medians.
        "paired_ratio_per_round": {
            mode: paired_ratios(results[mode]["decode_tps_e2e"], results["plain"]["decode_tps_e2e"])
            for mode in MODES
            if mode != "plain"
        },
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    brief = {m: round(s["decode_tps_e2e_median"], 2) for m, s in summary.items()}
    print(json.dumps({"decode_tps_e2e": brief, "ratios": report["ratio_instrumented_over_plain"]}, indent=1))
    print("harness decode_tps / plain:", round(report["ratio_harness_decode_tps_over_plain"], 4))
    print(
        "plain cv:", summary["plain"]["decode_tps_e2e_cv"], "sampler cv:", summary["steps+sampler"]["decode_tps_e2e_cv"]
    )


def paired_ratios(mode_tps: list[float], plain_tps: list[float]) -> list[float]:
    return [m / p for m, p in zip(mode_tps, plain_tps)]


if __name__ == "__main__":
    main()
