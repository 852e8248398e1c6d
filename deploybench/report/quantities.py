"""How a metric of the catalogue (deploybench/results/metrics.yaml) is read from a row and printed.

Headers, units, displays and directions come from the catalogue. Two things are the report's own: a
figure computed from other columns ("rest" of peak memory), and the words for what a host-paced
decode figure measures (which figures are paced, and how a run is judged: pacing.py).
"""

from __future__ import annotations

from deploybench.enums import ValueType
from deploybench.report.data import is_failed, is_ours
from deploybench.report.fmt import fmt_int, fmt_num, join, num, span
from deploybench.results import metrics
from deploybench.results.metrics import Display, Metric


def _rest_bytes(row: dict) -> float | None:
    peak, weights = num(row.get("peak_allocated_bytes")), num(row.get("weights_bytes"))
    if peak is None or weights is None:
        return None
    return max(0.0, peak - weights - (num(row.get("kv_cache_bytes")) or 0.0))


# Report-only figure: computed here from the row, not a column of the result schema.
REST = Metric(
    "memory_rest_bytes",
    ValueType.INT,
    "report",
    "peak − weights − KV cache: activations and workspace.",
    unit="bytes",
    label="rest",
    display=Display("GB", 1e-9),
)
_COMPUTED = {REST.name: _rest_bytes}
# Decode figures: where the step is host-bound, they measure the host CPU (README, "How far to trust each
# kind of figure").
DECODE = {"decode_tps", "tpot_ms", "itl_ms_p50", "itl_ms_p95", "itl_ms_p99", "ape_decode_tps_per_active_b"}
DECODE |= {"roofline_fraction", "roofline_fraction_gemv"}  # decode speed against its bound


# A figure's 95% interval follows from its median's: figure = c × median^power (c from the row itself).
INTERVAL_OF = {"ttft_ms": ("ttft_ms", 1), "e2e_ms_p50": ("e2e_ms_p50", 1), "decode_tps": ("decode_tps", 1)}
INTERVAL_OF |= {"e2e_tps": ("e2e_ms_p50", -1), "e2e_tps_per_peak_gb": ("e2e_ms_p50", -1)}
INTERVAL_OF |= {"ape_e2e_tps_per_active_b": ("e2e_ms_p50", -1), "ape_decode_tps_per_active_b": ("decode_tps", 1)}
INTERVAL_OF |= {"ape_inv_ttft_per_s_per_active_b": ("ttft_ms", -1), "tpot_ms": ("decode_tps", -1)}
INTERVAL_OF |= {"decode_tps_per_seq": ("decode_tps", 1)}
INTERVAL_OF |= {"roofline_fraction": ("decode_tps", 1), "roofline_fraction_gemv": ("decode_tps", 1)}


def get(name: str) -> Metric:
    return REST if name == REST.name else metrics.get(name)


def unit(m: Metric) -> str:
    return m.display_unit or ""


def raw(m: Metric, row: dict | None):
    if row is None:
        return None
    return _COMPUTED[m.name](row) if m.name in _COMPUTED else row.get(m.name)


def value(m: Metric, row: dict | None) -> float | None:
    """The figure in the unit the report prints (GB, %, ...)."""
    v = num(raw(m, row))
    return None if v is None else v * m.display_scale


def figure(m: Metric, r: dict | None) -> float | None:
    """A row's figure for comparisons: none for a failed row."""
    return None if r is None or is_failed(r) else value(m, r)


# The raw samples behind each interval's median (the same runs), for the run range where no interval exists.
SAMPLES_OF = {"ttft_ms": "ttft_ms_samples", "e2e_ms_p50": "e2e_ms_samples", "decode_tps": "decode_tps_samples"}


def _scaled(m: Metric, r: dict | None, ends: list) -> tuple[float, float] | None:
    """The figure at its median's `ends` (in the median's unit), in the unit printed, low first."""
    source, power = INTERVAL_OF.get(m.name, (None, 0))
    v, median = figure(m, r), num((r or {}).get(source))
    if source is None or v is None or not median or None in ends:
        return None
    return tuple(sorted(v * (end / median) ** power for end in ends))


def run_range(m: Metric, r: dict | None) -> tuple[float, float, int] | None:
    """(lowest, highest, runs): the figure over its runs, in the unit printed; None where the row has no samples."""
    source = INTERVAL_OF.get(m.name, ("",))[0]
    samples = [x for x in ((r or {}).get(SAMPLES_OF.get(source, "")) or []) if num(x)]
    ends = _scaled(m, r, [min(samples), max(samples)]) if len(samples) >= 2 else None
    return None if ends is None else (*ends, len(samples))


def interval(m: Metric, r: dict | None) -> tuple[float, float] | None:
    """The figure's 95% interval in the unit printed, from its median's; None where the row has none."""
    source = INTERVAL_OF.get(m.name, ("",))[0]
    return _scaled(m, r, [num((r or {}).get(f"{source}_ci95_{end}")) for end in ("low", "high")])


def no_interval(m: Metric, r: dict) -> str:
    """Why a figure of this row has no 95% interval."""
    source = INTERVAL_OF.get(m.name, ("",))[0]
    if not is_ours(r):
        return "an imported figure, published without an interval"
    if not source:
        return f"{m.header_label} is one measurement, without an interval"
    why = [w for w in str(r.get("ci_null_reason") or "").split("; ") if w.startswith(f"{source}:")]
    return why[0] if why else f"the row has no interval for {source}"


def text(m: Metric, v) -> str:
    return fmt_int(v) if m.type is ValueType.INT and m.display_scale == 1.0 else fmt_num(v, m.sig)


def directions(names) -> str:
    """'TTFT: lower is better. ...' for the metrics that have a direction."""
    return " ".join(f"{m.header_label}: {m.better} is better." for m in map(get, names) if m.better)


def busy_words(rows) -> str | None:
    """'17 to 46' (% of each decode step): the range of the rows' GPU-busy fractions."""
    m = get("gpu_busy_fraction")
    vals = [v for v in (value(m, r) for r in rows) if v is not None]
    lo, hi = (text(m, f(vals)) for f in (min, max)) if vals else (None, None)
    return lo if lo == hi else f"{lo} to {hi}"


def host_words(rows) -> str:
    """'AMD EPYC 9654, 7.10 µs per CUDA launch': the host that the rows' decode figures measure."""
    cpus = join(sorted({str(r["cpu_model"]) for r in rows if r.get("cpu_model")})) or "CPU model not recorded"
    launch = span([v for v in (num(r.get("launch_us")) for r in rows) if v is not None], "µs")
    return cpus + (f", {launch} per CUDA launch" if launch else "")
