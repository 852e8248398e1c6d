"""How much of a grid's job time is not measurement? A benchmark summary, not a test.

Reads every cell row and the Snakemake job benchmark (`benchmark:` TSV of the measure rule) that
produced it, and splits the jobs' wall time into: time inside measure_cell (`cell_wall_s`), and
the rest (process start, imports, writing the row). Model build (`load_s`) and torch.compile in
warm-up (`compile_s`) sit inside measure_cell; they are reported separately, and so are the timed
runs (the TTFT and full-generate samples, which are also the energy windows): what is neither timed
runs nor compilation is the grid's overhead.

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
        totals: dict[str, float] = {}
        for phases in rows.phase_wall_s_json.dropna():
            for name, seconds in json.loads(phases).items():
                totals[name] = totals.get(name, 0.0) + seconds
        summary["phase_s"] = totals
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
