"""The same cells on several machines, side by side with what each machine's rows say about it.

    python benchmarks/machine_spread.py RESULTS_DIR [RESULTS_DIR ...] [--cells 'compiled_loop'] [--out spread.csv]

Reads `results/cells/**.parquet` of each run (one run per machine), keeps the cells present in more
than one of them, and prints per cell and machine the decode speed beside the columns that can
explain a spread: the GPU (device_uuid), the host (cpu_model, launch_us, python_loop_ns), the
power limit, the clocks through the decode window, NVML's violation counters, throttling, the
measured bandwidths, the GPU-busy fraction and the decode step's kernels (launches and kernel ms per step); then
each cell's spread (max / min decode tok/s). With --kernels,
each shared cell's decode steps on its first two machines kernel by kernel (the rows' step_kernels_json): what one
machine's step runs that the other's does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.parquet as pq
from compare_step_profiles import kernel_table

from deploybench.analytic import step_kernels
from deploybench.instruments import energy
from deploybench.results import metrics

# What can explain a machine-to-machine spread, in the order a reader checks it.
EXPLAINING = (
    "device_name",
    "device_uuid",
    "driver_version",
    "torch_version",
    "cpu_model",
    "launch_us",
    "python_loop_ns",
    "power_limit_w",
    *energy.WINDOW_STATE_FIELDS,
    "mem_bandwidth_bytes_per_s",
    "gemv_bandwidth_bytes_per_s",
    "roofline_fraction",
    "roofline_fraction_gemv",
    "gpu_busy_fraction",
    "kernels_per_token",
    "gpu_kernel_ms_per_token",
    "code_revision",
)
# The compact table (--markdown): what a reader compares first, then the run's own columns above in the TSV.
MARKDOWN = (
    ("machine", lambda r: f"{r['device_name']} `{(r['device_uuid'] or '')[:12]}`"),
    ("decode tok/s", lambda r: f"{r['decode_tps']:.1f}"),
    ("copy / GEMV roofline", lambda r: f"{r['roofline_fraction']:.2f} / {r['roofline_fraction_gemv']:.2f}"),
    (
        "copy / GEMV TB/s",
        lambda r: f"{r['mem_bandwidth_bytes_per_s'] / 1e12:.2f} / {r['gemv_bandwidth_bytes_per_s'] / 1e12:.2f}",
    ),
    ("GPU busy", lambda r: f"{r['gpu_busy_fraction']:.0%}"),
    # Same busy fraction, more kernel time per step: the step's kernels, not the host, set the gap.
    ("kernels / step (ms)", lambda r: f"{r['kernels_per_token']:,.0f} ({r['gpu_kernel_ms_per_token']:.1f})"),
    ("SM MHz mean (min)", lambda r: f"{r['sm_clock_mhz_mean']:.0f} ({r['sm_clock_mhz_min']:.0f})"),
    ("power-capped s", lambda r: f"{r['power_violation_s']:.1f}"),
    ("launch µs", lambda r: f"{r['launch_us']:.1f}"),
    ("code", lambda r: f"`{(r['code_revision'] or '')[:7]}`"),
)


def rows_of(results: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((results / "cells").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row.get("status") == "ok":
                out[row["cell_id"]] = row
    return out


def spread_table(runs: dict[str, dict[str, dict]], cell_filter: str = "") -> list[dict]:
    """One record per (cell, run) for cells that at least two runs hold, with each cell's spread."""
    cells = sorted({c for rows in runs.values() for c in rows if cell_filter in c})
    records = []
    for cell in cells:
        present = {name: rows[cell] for name, rows in runs.items() if cell in rows}
        if len(present) < 2:
            continue
        speeds = [r["decode_tps"] for r in present.values() if r.get("decode_tps")]
        spread = max(speeds) / min(speeds) if len(speeds) >= 2 else None
        for name, row in present.items():
            records.append(
                {"cell_id": cell, "run": name, "decode_tps": row.get("decode_tps"), "spread": spread}
                | {col: row.get(col) for col in EXPLAINING}
            )
    return records


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def markdown(records: list[dict]) -> str:
    """One line per (cell, machine), the cell's spread on its first line; a missing figure prints as a dash."""

    def cell(record, fmt):
        try:
            return fmt(record)
        except (TypeError, KeyError):
            return "-"

    lines = ["| cell | " + " | ".join(name for name, _ in MARKDOWN) + " | spread |", "|---" * (len(MARKDOWN) + 2) + "|"]
    previous = None
    for record in records:
        first = record["cell_id"] != previous
        previous = record["cell_id"]
        spread = f"{record['spread']:.3f}" if first and record["spread"] else ""
        values = " | ".join(cell(record, fmt) for _, fmt in MARKDOWN)
        lines.append(f"| {record['cell_id'] if first else ''} | {values} | {spread} |")
    return "\n".join(lines)


def kernel_differences(records: list[dict], runs: dict[str, dict[str, dict]], most: int = 12) -> str:
    """Per shared cell, its first two machines' decode steps kernel by kernel (step_kernels_json), where both rows
    hold them."""
    out = []
    for cell in dict.fromkeys(r["cell_id"] for r in records):
        rows = [(name, rows[cell]) for name, rows in runs.items() if rows.get(cell, {}).get("step_kernels_json")]
        if len(rows) < 2:
            out.append(f"{cell}: fewer than two of its rows hold their step's kernels (step_kernels_json)\n")
            continue
        (name_a, a), (name_b, b) = rows[:2]
        machines = [f"{r.get('device_name')} `{str(r.get('device_uuid') or '')[:12]}` ({name})" for name, r in rows[:2]]
        side = step_kernels.side_by_side(*(step_kernels.from_json(r["step_kernels_json"]) for r in (a, b)))
        out.append(f"{cell}: A {machines[0]}, B {machines[1]}\n\n{kernel_table(side, most)}\n")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+", help="results/ folders, one per machine")
    ap.add_argument("--cells", default="", help="keep cell ids containing this text (e.g. compiled_loop)")
    ap.add_argument("--out", type=Path, help="also write the table as CSV")
    ap.add_argument("--markdown", action="store_true", help="print a compact Markdown table instead (for a README)")
    ap.add_argument("--kernels", action="store_true", help="then each shared cell's decode steps kernel by kernel")
    args = ap.parse_args(argv)
    runs = {str(path): rows_of(path) for path in args.results}
    records = spread_table(runs, args.cells)
    if not records:
        print("no cell is in more than one run")
        return 1
    if args.markdown:
        print(markdown(records))
        if args.kernels:
            print("\n" + kernel_differences(records, runs))
        return 0
    columns = ["cell_id", "run", "decode_tps", "spread", *EXPLAINING]
    units = {c: metrics.by_name()[c].unit for c in columns if c in metrics.by_name() and metrics.by_name()[c].unit}
    print("\t".join(f"{c} ({units[c]})" if c in units else c for c in columns))
    for record in records:
        print("\t".join(_text(record[c]) for c in columns))
    if args.out:
        import csv

        with args.out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows({c: _text(r[c]) for c in columns} for r in records)
    if args.kernels:
        print("\n" + kernel_differences(records, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
