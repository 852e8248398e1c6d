"""Where does run-to-run noise in eager decode come from? A benchmark, not a test.

Eager generate() at batch 1 is bound by the host launching kernels, so host effects show up
directly in decode tok/s. In one process, on one model and cell, this interleaves full runs
(the harness's own timed_generate with per-step stamps) under four host conditions:
  baseline   as the harness ran before
  gc_off     Python's cyclic garbage collector frozen and disabled during the run
  pinned     the process pinned to one CPU core (no migration between cores)
  pinned+gc  both
and reports decode tok/s per run, its CV per condition, the SM clock around each run, and the
slowest steps of each run.

    python benchmarks/decode_noise.py --architecture workflow/architectures/gpt-oss-20b.json \
        --context 2048 --gen 64 --rounds 6 --out noise.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from pathlib import Path

import torch
from _cell import benchmark_cell, random_model_and_prompt, rotated, shape_arguments

from deploybench.engines.timing import generation_config, timed_generate
from deploybench.instruments import nvml
from deploybench.instruments.environment import capture
from deploybench.stats import coefficient_of_variation, median

CONDITIONS = ("baseline", "gc_off", "pinned", "pinned+gc")


def sm_clock_mhz(dev) -> int | None:
    return dev.sm_clock_mhz() if dev.available else None


def run_under(condition: str, all_cpus: set[int], one_cpu: int, run):
    os.sched_setaffinity(0, {one_cpu} if condition.startswith("pinned") else all_cpus)
    gc_off = "gc" in condition
    if gc_off:
        gc.collect()
        gc.freeze()
        gc.disable()
    try:
        return run()
    finally:
        if gc_off:
            gc.enable()
            gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shape_arguments(parser, experts=None, dtype=False)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    cell = benchmark_cell(args.architecture, args.context, args.gen)
    loaded, ids, device = random_model_and_prompt(cell)
    model = loaded.model
    mask = torch.ones_like(ids)
    full = generation_config(cell.decoding, args.gen, 0)
    dev = nvml.open_device(device)
    all_cpus = os.sched_getaffinity(0)
    one_cpu = max(all_cpus)  # away from CPU 0, which tends to take interrupts

    def run(seed):
        return lambda: timed_generate(model, ids, mask, full, device, seed, clock=True)[0]

    for i in range(2):
        run(i)()

    results = {c: {"decode_tps": [], "sm_clock_mhz": [], "slowest_itl_ms": []} for c in CONDITIONS}
    for r in range(args.rounds):
        for condition in rotated(CONDITIONS, r):
            clock_before = sm_clock_mhz(dev)
            timing = run_under(condition, all_cpus, one_cpu, run(r))
            entry = results[condition]
            entry["decode_tps"].append(timing.decode_tps)
            entry["sm_clock_mhz"].append([clock_before, sm_clock_mhz(dev)])
            entry["slowest_itl_ms"].append(sorted((x * 1000 for x in timing.itl_s), reverse=True)[:5])
            entry.setdefault("itl_ms_traces", []).append([round(x * 1000, 2) for x in timing.itl_s])
    os.sched_setaffinity(0, all_cpus)

    summary = {
        c: {"decode_tps_median": median(v["decode_tps"]), "decode_tps_cv": coefficient_of_variation(v["decode_tps"])}
        for c, v in results.items()
    }
    report = {
        "architecture": args.architecture,
        "context": args.context,
        "gen": args.gen,
        "rounds": args.rounds,
        "pinned_cpu": one_cpu,
        "cpus": sorted(all_cpus),
        "environment": capture(device),
        "summary": summary,
        "runs": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
