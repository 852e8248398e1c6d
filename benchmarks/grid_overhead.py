"""How much of a grid's job time is not measurement? A benchmark summary, not a test.

Reads every cell row and the Snakemake job benchmark (`benchmark:` TSV of the measure rule) that
produced it, and splits the jobs' wall time into: time inside measure_cell (`cell_wall_s`), and
the rest (process start, imports, writing the row). Model build (`load_s`) and torch.compile in
warm-up (`compile_s`) sit inside measure_cell; they are reported separately. Two figures for the
share that is not measurement, both of the job time without compilation:

- strict: only the timed runs count (the TTFT and full-generate samples, which are also the energy
  windows);
- by phase (rows with `phase_wall_s_json`): every phase whose output is a figure of the row counts:
  the calibrations, the idle-power window (the idle_power phase less its cool-down), the TTFT and
  decode phases and the afterwards passes (kernel profile, expert coverage). Not measurement: the
  process around measure_cell, the model build, prompts and runner, the cool-down, warm-up beyond
  compilation, and the rest of measure_cell (records, host probes).

    python benchmarks/grid_overhead.py reference-run/h200-2026-11-29/cells \
        reference-run/h200-2026-11-29/logs/benchmarks/measure
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cells", type=Path, help="folder of cell Parquet files")
    parser.add_argument("benchmarks", type=Path, help="folder of the measure rule's benchmark TSVs")
    args = parser.parse_args()

    rows = pd.concat([pd.read_parquet(p) for p in sorted(args.cells.rglob("*.parquet"))])
    job_s = [pd.read_csv(args.benchmarks / f"{cell}.tsv", sep="\t")["s"].iloc[0] for cell in rows.cell_id]
    jobs, inside = float(sum(job_s)), float(rows.cell_wall_s.sum())
    load, compile_ = float(rows.load_s.sum()), float(rows.compile_s.fillna(0).sum())
    # The timed runs themselves (their windows are also the energy windows): TTFT runs and full generates.
    timed = float(sum(sum(s) for col in ("ttft_ms_samples", "e2e_ms_samples") for s in rows[col].dropna())) / 1e3
    summary = {
        "cells": len(rows),
        "jobs_s": jobs,
        "inside_measure_cell_s": inside,
        "outside_share": (jobs - inside) / jobs,
        "model_build_s": load,
        "outside_plus_build_share": (jobs - inside + load) / jobs,
        "compile_s": compile_,
        "outside_plus_build_plus_compile_share": (jobs - inside + load + compile_) / jobs,
        "timed_runs_s": timed,
        # Everything but the timed runs and torch.compile: start-up, load, warm-up, calibration, the profiled
        # pass, cool-down and idle power, as a share of the job time without compilation.
        "not_measurement_share_excluding_compile": (jobs - timed - compile_) / (jobs - compile_),
        "compile_share": compile_ / jobs,
    }
    if "phase_wall_s_json" in rows:  # rows since the phases were recorded: where the cells' time went
        summary |= by_phase(rows, jobs, inside, compile_)
    print(json.dumps(summary, indent=1))


# Phases whose output is a figure of the row (the idle-power window is added from idle_power less its cool-down).
MEASURING_PHASES = ("calibrate", "ttft_runs", "decode_runs", "afterwards")


def by_phase(rows: pd.DataFrame, jobs: float, inside: float, compile_: float) -> dict:
    """The phases' totals, and the share of the job time (without compilation) that no phase measuring a
    figure of the row accounts for."""
    totals: dict[str, float] = {}
    cool_down = 0.0
    for phases, cooled in zip(rows.phase_wall_s_json, rows.idle_cooldown_s_measured.fillna(0.0), strict=True):
        if phases is None:
            continue
        for name, seconds in json.loads(phases).items():
            totals[name] = totals.get(name, 0.0) + seconds
        cool_down += min(cooled, json.loads(phases).get("idle_power", 0.0))
    idle_window = totals.get("idle_power", 0.0) - cool_down
    measuring = sum(totals.get(p, 0.0) for p in MEASURING_PHASES) + idle_window
    return {
        "phase_s": totals,
        "measuring_s": measuring,
        "not_measuring_s": {
            "outside_measure_cell": jobs - inside,
            "load": totals.get("load", 0.0),
            "cool_down": cool_down,
            "warm_up_less_compile": totals.get("warm_up", 0.0) - compile_,
            "rest_of_measure_cell": inside - sum(totals.values()),
        },
        "not_measurement_share_by_phase_excluding_compile": (jobs - compile_ - measuring) / (jobs - compile_),
    }


if __name__ == "__main__":
    main()
