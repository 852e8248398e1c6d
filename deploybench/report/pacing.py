"""What paces a cell's decode, judged run by run, and the verdict of boundness with its evidence.

The row's `bound_by` judges the median step. A cell's decode runs can differ: the profiled pass gives the GPU's
kernel time per step (steady), and each decode run its own time per token (1000 / that run's tok/s), so each run
has its own busy fraction. A run is host-paced where that fraction is below the catalogue's `host_below`
(deploybench/results/metrics.yaml, bound_by); a cell is host-paced where any of its runs is (its median and its
range then include host time). Every figure the decode pace moves (PACED) is marked where it comes from such a
cell: decode and e2e speeds, e2e latency, inter-token latency, energy per token, tokens per joule, APE.

A verdict of boundness names its evidence: the busy fraction, and where the GPU sets the pace the fraction of
the copy-bandwidth and compute rooflines reached; a GPU-paced step that reaches neither roof by ROOF_AT_LEAST
is bound by neither (small kernels, latency), whatever the row's `bound_by` says by elimination.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploybench.analytic import boundness
from deploybench.enums import BoundBy
from deploybench.report.fmt import num

# The figures a decode run's pace moves: a host-paced cell's are the host's figures.
PACED = {"decode_tps", "decode_tps_per_seq", "tpot_ms", "itl_ms_p50", "itl_ms_p95", "itl_ms_p99", "e2e_tps"}
PACED |= {"e2e_ms_p50", "e2e_ms_p95", "e2e_ms_p99", "ape_e2e_tps_per_active_b", "ape_decode_tps_per_active_b"}
PACED |= {"ape_tokens_per_j_per_active_b", "e2e_tps_per_peak_gb", "j_per_1k_tokens", "j_per_1k_tokens_net"}
PACED |= {"tokens_per_j", "j_per_decode_token", "avg_power_w", "roofline_fraction", "roofline_fraction_gemv"}
ROOF_AT_LEAST = 0.5  # a GPU-paced step reaching less of both roofs is bound by neither


@dataclass(frozen=True)
class Pacing:
    """A cell's decode runs judged one by one: how many were host-paced, and their busy fractions."""

    host: int  # runs below host_below
    runs: int  # runs judged (0: no per-run evidence; the row's bound_by stands alone)
    low: float | None = None  # the lowest and highest busy fraction of a run
    high: float | None = None

    @property
    def paced(self) -> bool:
        return self.host > 0


def run_busy(r: dict | None) -> list[float]:
    """Each decode run's busy fraction: the profiled kernel time per step ÷ that run's time per token."""
    kernel = num((r or {}).get("gpu_kernel_ms_per_token"))
    if kernel is None:
        return []
    speeds = [v for v in (num(x) for x in (r.get("decode_tps_samples") or [])) if v]
    return [kernel * v / 1000.0 for v in speeds]


def pacing(r: dict | None) -> Pacing:
    if r is None:
        return Pacing(0, 0)
    busy = run_busy(r)
    if not busy:  # no per-run evidence: the median's verdict
        return Pacing(int(r.get("bound_by") == BoundBy.HOST), 0)
    host = sum(b < boundness.HOST_BELOW for b in busy) or int(r.get("bound_by") == BoundBy.HOST)
    return Pacing(host, len(busy), min(busy), max(busy))


def host_paced(r: dict | None) -> bool:
    return pacing(r).paced


def _pct(x: float) -> str:
    """A fraction in %: two significant figures below 10% (0.41%), whole per cent above."""
    v = x * 100
    return f"{v:.2g}%" if abs(v) < 10 else f"{v:.0f}%"


def busy_span(p: Pacing) -> str:
    """'35–58%': the runs' busy fractions."""
    if p.low is None:
        return ""
    lo, hi = _pct(p.low), _pct(p.high)
    return lo if lo == hi else f"{lo[:-1]}–{hi}"


def runs_words(r: dict) -> str:
    """'host-paced in 2 of 5 decode runs (GPU busy 35–58% per run)', or the median's verdict where runs are not
    judged."""
    p = pacing(r)
    if not p.runs:
        busy = num(r.get("gpu_busy_fraction"))
        return "host-paced (GPU busy " + (_pct(busy) if busy is not None else "unknown") + " of the median step)"
    return f"host-paced in {p.host} of {p.runs} decode runs (GPU busy {busy_span(p)} per run)"


ROOF = {"memory_bandwidth": "copy roof", "compute": "compute roof"}
WORDS = {"memory_bandwidth": "memory bandwidth", "neither": "neither roof"}


def verdict(r: dict | None) -> tuple[str | None, str]:
    """(kind, evidence): host | mixed | memory_bandwidth | compute | neither; (None, why) where not profiled.

    host / mixed: the median step's busy fraction below host_below / gpu_at_least (with the runs that were
    host-paced); else the roof the step comes nearer (copy bandwidth or compute), or neither where it reaches less
    than ROOF_AT_LEAST of both."""
    r = r or {}
    busy = num(r.get("gpu_busy_fraction"))
    if busy is None:
        return None, str(r.get("boundness_null_reason") or "not profiled")
    p = pacing(r)
    span = busy_span(p) or _pct(busy)
    if p.paced:
        runs = f"{p.host}/{p.runs} runs host-paced; " if p.runs else ""
        return "host" if busy < boundness.HOST_BELOW else "mixed", f"{runs}busy {span}"
    if busy < boundness.GPU_AT_LEAST:
        return "mixed", f"busy {span}"
    speed, compute = num(r.get("decode_tps")), num(r.get("roofline_compute_tps"))
    roofs = [(num(r.get("roofline_fraction")), "memory_bandwidth")]
    roofs = [(f, k) for f, k in [*roofs, (speed / compute if speed and compute else None, "compute")] if f is not None]
    if not roofs:
        return str(r.get("bound_by") or "gpu"), f"busy {_pct(busy)}; no roofline measured"
    reached, kind = max(roofs)  # the nearer roof
    return (kind if reached >= ROOF_AT_LEAST else "neither"), f"busy {_pct(busy)}; {_pct(reached)} of {ROOF[kind]}"


def verdict_text(r: dict | None) -> str:
    """'memory bandwidth (busy 97%; 64% of copy roof)', 'host (5/5 runs host-paced; busy 20–22%)',
    'mixed (2/5 runs host-paced; busy 35–58%)', 'neither roof (busy 94%; 28% of copy roof)'."""
    kind, evidence = verdict(r)
    return evidence if kind is None else f"{WORDS.get(kind, kind)} ({evidence})"
