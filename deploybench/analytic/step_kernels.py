"""A decode step's kernels by name, and two steps side by side. Arithmetic only.

The profiled pass (deploybench.instruments.profiler) sees every device kernel of a full-length generate and of a
one-token one; per kernel name, their difference over the decode steps is what one step runs. The same model,
settings and software can run different kernels on two machines (cuBLAS picks kernels by heuristics and by the
card it finds; a split-K GEMV adds a reducing kernel): on two H100s Qwen3-32B's compiled step ran 1,481 and 1,353
kernels and decoded 11% apart. Each row keeps its step's kernels (step_kernels_json), so two machines' rows of a
cell compare kernel by kernel (benchmarks/machine_spread.py --kernels).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

# C++ template names run to thousands of characters; their heads tell kernels apart.
NAME_CHARS = 160
# A kernel's kind by its name: cuBLAS / CUTLASS matrix multiplies, Inductor's generated Triton kernels, copies, the
# rest; the first pattern that matches.
KINDS = (
    ("matmul", re.compile(r"gemv|gemm|cutlass|nvjet|xmma|cublas|sm90_|splitk|addmm|bmm", re.I)),
    ("triton", re.compile(r"^triton_", re.I)),
    ("copy", re.compile(r"copy|memcpy|memset|index|roll|cat", re.I)),
)


def kind_of(name: str) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(name)), "other")


@dataclass(frozen=True)
class StepKernel:
    name: str  # the kernel's name, cut to NAME_CHARS
    calls: float  # launches per decode step
    us: float  # device microseconds per decode step


def totals(kernels: list[tuple[str, float]]) -> dict[str, tuple[int, float]]:
    """{name: (launches, device us)} of (name, us) kernel records, names cut to NAME_CHARS."""
    out: dict[str, tuple[int, float]] = {}
    for name, us in kernels:
        calls, total = out.get(name[:NAME_CHARS], (0, 0.0))
        out[name[:NAME_CHARS]] = (calls + 1, total + us)
    return out


def per_step(full: dict, prefill: dict, steps: int) -> tuple[StepKernel, ...]:
    """Per name, (a full generate's totals − a one-token generate's) / decode steps: the kernels the decode steps
    run and not the prefill, most time first."""
    rows = []
    for name in {*full, *prefill}:
        (calls, us), (calls_before, us_before) = full.get(name, (0, 0.0)), prefill.get(name, (0, 0.0))
        if calls != calls_before:
            rows.append(StepKernel(name, (calls - calls_before) / steps, (us - us_before) / steps))
    return tuple(sorted(rows, key=lambda k: (-k.us, k.name)))


def to_json(kernels: tuple[StepKernel, ...]) -> str:
    return json.dumps([asdict(k) for k in kernels])


def from_json(text: str | None) -> tuple[StepKernel, ...]:
    return tuple(StepKernel(**k) for k in json.loads(text)) if text else ()


def side_by_side(a: tuple[StepKernel, ...], b: tuple[StepKernel, ...]) -> list[dict]:
    """One record per kernel name in either step: launches and us per step in each, and which step alone runs it;
    most time apart first."""
    by_a, by_b = {k.name: k for k in a}, {k.name: k for k in b}
    none = StepKernel("", 0.0, 0.0)
    rows = []
    for name in {*by_a, *by_b}:
        ka, kb = by_a.get(name, none), by_b.get(name, none)
        only = "A" if name not in by_b else "B" if name not in by_a else ""
        row = {"name": name, "calls_a": ka.calls, "calls_b": kb.calls, "us_a": ka.us, "us_b": kb.us, "only": only}
        rows.append(row)
    return sorted(rows, key=lambda r: (-abs(r["us_a"] - r["us_b"]), r["name"]))
