"""Are two runs' cell rows the same measurement? Every column must agree except measured quantities.

    python benchmarks/compare_runs.py OLD_RESULTS_DIR NEW_RESULTS_DIR [--ignore-spec-key KEY ...]

Pairs the rows of `results/cells/**.parquet` by cell id and compares every column. Columns that
measure time, rate or energy (by their catalogue unit or group), timestamps and the host's peak RSS
may differ between two runs of the same code; any other difference is printed and makes the exit
status 1. `--ignore-spec-key` drops settings a newer harness adds to spec_json (compared as JSON)
from both sides first.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq

from deploybench.results import metrics

# Units of figures that vary from run to run of the same code on the same machine.
MEASURED_UNITS = {
    *("ns", "ms", "s", "tok/s", "ms/token", "fraction", "bytes/s"),
    *("J", "W", "J per 1000 tok", "tok/J", "°C"),
}
MEASURED_GROUPS = {"energy"}
ALSO_VARYING = {
    "started_at": "timestamp",
    "host_peak_rss_bytes": "host process memory (allocator and fork state)",
    "phase_wall_s_json": "measured (s per phase)",
    "code_revision": "the code that ran",
    "source_sha256": "the code that ran",
    "ci_null_reason": "follows from the measured samples (their count and correlation)",
    "tail_null_reason": "follows from the measured samples (their count)",
}
# A phase repeats until its samples are precise enough or a cap: how many ran, what they are worth and
# why it stopped follow from the measured samples.
SAMPLE_COUNT_SUFFIXES = ("_runs", "_n_eff", "_stop_reason")


def varies(name: str) -> str | None:
    """Why a column may differ between two runs, or None when it must not."""
    if name in ALSO_VARYING:
        return ALSO_VARYING[name]
    if name.endswith(SAMPLE_COUNT_SUFFIXES) and name not in ("n_runs", "warmup_runs"):
        return "follows from the measured samples"
    m = metrics.by_name().get(name)
    if m is None:
        return None
    if m.group in MEASURED_GROUPS:
        return f"{m.group} figure"
    if m.unit in MEASURED_UNITS:
        return f"measured ({m.unit})"
    return None


def read_cells(results: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted((results / "cells").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["cell_id"]] = row
    return rows


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def spec_without(text: str | None, keys: list[str]) -> object:
    if text is None:
        return None
    spec = json.loads(text)

    def drop(node):
        if isinstance(node, dict):
            return {k: drop(v) for k, v in node.items() if k not in keys}
        if isinstance(node, list):
            return [drop(v) for v in node]
        return node

    return drop(spec)


def compare(old: dict[str, dict], new: dict[str, dict], ignore_spec_keys: list[str]) -> tuple[list, dict]:
    """(problems, column -> (differing cells, reason allowed)) over the cells both runs hold.

    Adding columns is free (schema.py): a column only the new rows have is fine while it is null.
    """
    problems = []
    for cell in sorted(set(old) ^ set(new)):
        problems.append(f"cell {cell} is only in the {'old' if cell in old else 'new'} run")
    differing: dict[str, list[str]] = {}
    added_empty: set[str] = set()
    for cell in sorted(set(old) & set(new)):
        a, b = old[cell], new[cell]
        for col in sorted(set(a) | set(b)):
            if col not in a and b[col] is None:
                added_empty.add(col)  # a column the newer schema declares and this run leaves null
                continue
            if col not in a or col not in b:
                problems.append(f"column {col} is only in the {'old' if col in a else 'new'} row of {cell}")
                continue
            x, y = a[col], b[col]
            if col == "spec_json":
                x, y = spec_without(x, ignore_spec_keys), spec_without(y, ignore_spec_keys)
            if not same(x, y):
                differing.setdefault(col, []).append(cell)
    for col, cells in differing.items():
        if varies(col) is None:
            example = cells[0]
            problems.append(
                f"column {col} differs in {len(cells)} cell(s), e.g. {example}: "
                f"{old[example][col]!r} -> {new[example][col]!r}"
            )
    summary = {col: (len(cells), varies(col)) for col, cells in differing.items()}
    summary |= {col: (0, "added by the newer schema, null in this run") for col in added_empty}
    return problems, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="results/ folder of the reference run")
    ap.add_argument("new", type=Path, help="results/ folder of the run to check")
    ap.add_argument("--ignore-spec-key", action="append", default=[], help="a spec_json key the new harness adds")
    args = ap.parse_args(argv)
    old, new = read_cells(args.old), read_cells(args.new)
    problems, differing = compare(old, new, args.ignore_spec_key)
    print(f"{len(old)} old cells, {len(new)} new cells, {len(set(old) & set(new))} compared")
    print(f"{len(differing)} columns differ or were added:")
    for col, (n, why) in sorted(differing.items()):
        print(f"  {col:40s} {n:3d} cells  {'allowed: ' + why if why else 'NOT ALLOWED'}")
    for problem in problems:
        print("PROBLEM:", problem)
    print("same measurement in every other column" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
