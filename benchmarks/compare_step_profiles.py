"""Two decode-step profiles kernel by kernel: which kernels one machine's step runs that the other's does not.

    python benchmarks/compare_step_profiles.py A.json B.json [--most 25]

A and B are benchmarks/decode_step_profile.py reports of the same cell (model, context, options) on two machines.
The same model, settings and software can still run different kernels (cuBLAS picks its kernels by heuristics
and the card it finds; a split-K GEMV adds a reducing kernel): on two H100s Qwen3-32B's compiled step ran 1,481
and 1,353 kernels per token, and decoded 11% apart. Prints, per kind and per kernel name, the calls and device
microseconds per decode step on each machine, the names in one step only marked, most time apart first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deploybench.analytic import step_kernels
from deploybench.analytic.step_kernels import StepKernel
from deploybench.report.fmt import fmt_int, fmt_num

PRINTED_CHARS = 90  # of a kernel's name (the row keeps step_kernels.NAME_CHARS)


def _count(x: float) -> str:
    """Calls per step: whole where every step ran the kernel equally often."""
    return fmt_int(x) if float(x).is_integer() else fmt_num(x)


def kernels(report: dict, path: str) -> tuple[StepKernel, ...]:
    """Every kind's kernels by name (decode_step_profile.py's per_decode_step)."""
    steps = report.get("per_decode_step", {})
    if any("by_name" not in kind for kind in steps.values()):
        raise SystemExit(f"{path}: no per-kernel rows (a report from before decode_step_profile.py kept them all)")
    return tuple(StepKernel(**row) for kind in steps.values() for row in kind["by_name"])


def machine(report: dict) -> str:
    env = report.get("environment", {})
    uuid = str(env.get("device_uuid") or "")
    return f"{env.get('device_name') or '?'} `{uuid[:12]}`" if uuid else str(env.get("device_name") or "?")


def compare(a: dict, b: dict, path_a: str = "A", path_b: str = "B") -> list[dict]:
    """One record per kernel name in either step (step_kernels.side_by_side)."""
    return step_kernels.side_by_side(kernels(a, path_a), kernels(b, path_b))


def markdown(a: dict, b: dict, rows: list[dict], most: int) -> str:
    if a.get("architecture") != b.get("architecture") or a.get("context") != b.get("context"):
        print("warning: the two reports profile different cells", file=sys.stderr)
    head = (
        f"A: {machine(a)}, {fmt_num(a.get('decode_tps'))} tok/s, {fmt_num(a.get('device_us_per_decode_step'))} µs "
        f"of kernels per step; B: {machine(b)}, {fmt_num(b.get('decode_tps'))} tok/s, "
        f"{fmt_num(b.get('device_us_per_decode_step'))} µs"
    )
    return head + "\n\n" + kernel_table(rows, most)


def kernel_table(rows: list[dict], most: int) -> str:
    """step_kernels.side_by_side's records as Markdown, the first `most` of them, then the steps' totals."""
    lines = [
        "| kernel | calls / step A | calls / step B | µs / step A | µs / step B | only in |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows[:most]:
        name = r["name"][:PRINTED_CHARS].replace("|", "\\|")
        cells = (_count(r["calls_a"]), _count(r["calls_b"]), fmt_num(r["us_a"]), fmt_num(r["us_b"]), r["only"])
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    calls = [sum(r[f"calls_{side}"] for r in rows) for side in "ab"]
    lines.append(f"\n{len(rows)} kernel names; calls per step A {_count(calls[0])}, B {_count(calls[1])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--most", type=int, default=25, help="rows printed, most time apart first")
    args = parser.parse_args(argv)
    a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
    print(markdown(a, b, compare(a, b, args.a, args.b), args.most))
    return 0


if __name__ == "__main__":
    sys.exit(main())
