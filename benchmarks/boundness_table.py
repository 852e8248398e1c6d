"""What bounds each measured cell: a Markdown table of the boundness and system columns of cell rows.

    python benchmarks/boundness_table.py reference-run/h200-2026-12-01-attribution/cells

One line per cell (ok rows): decode wall ms per step (1000 / decode_tps, the median over the decode
runs), the profiled pass's GPU kernel ms and kernels per step, the GPU's idle ms per step (wall minus
kernel time: the host's share), gpu_busy_fraction, bound_by, both roofline fractions, TTFT, the
host figures (launch_us, python_loop_ns) and the device. Sorted by backend, model, context.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq

HEADER = (
    "| cell | attention | decode ms/step | GPU kernel ms/step | kernels/step | GPU idle ms/step | GPU busy "
    "| bound_by | roofline (copy) | roofline (GEMV) | TTFT ms | launch µs | Python loop ns | device |"
)


def rows(cells: Path) -> list[dict]:
    found = [pq.read_table(p).to_pylist()[0] for p in sorted(cells.rglob("*.parquet"))]
    ok = [r for r in found if r["status"] == "ok"]
    return sorted(ok, key=lambda r: (r["backend"], r["model"], r["context_tokens"]))


def line(r: dict) -> str:
    step_ms = 1000.0 / r["decode_tps"]
    kernel_ms = r["gpu_kernel_ms_per_token"]
    idle = f"{step_ms - kernel_ms:.1f}" if kernel_ms is not None else "–"
    cells = [
        r["cell_id"],
        r["attn_implementation"],
        f"{step_ms:.1f}",
        _num(kernel_ms, 1),
        _num(r["kernels_per_token"], 0),
        idle,
        _pct(r["gpu_busy_fraction"]),
        r["bound_by"] or "–",
        _pct(r["roofline_fraction"]),
        _pct(r["roofline_fraction_gemv"]),
        _num(r["ttft_ms"], 1),
        _num(r["launch_us"], 1),
        _num(r["python_loop_ns"], 0),
        (r["device_uuid"] or "–")[:12],
    ]
    return "| " + " | ".join(cells) + " |"


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", type=Path, help="a results/cells directory")
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for r in rows(args.cells):
        print(line(r))


if __name__ == "__main__":
    main()
