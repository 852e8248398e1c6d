"""Report figures: one spec per figure, drawn twice from the same numbers.

`build_figures(data)` turns the result rows into `Figure` specs (pure data: panels, series,
points, labels with units). `to_svg(fig)` draws a spec as a self-contained inline SVG for the
HTML report; `to_pgfplots(fig)` writes the same spec as pgfplots/TikZ code for the LaTeX report.
No plotting library is needed: the SVG is written by hand (axes, ticks, legend, tooltips).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape as _xml_escape

from deploybench.report.tables import (
    METRICS,
    ReportData,
    ape_columns,
    cell_label,
    fmt_num,
    is_failed,
    num,
)

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; markers differ too.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442"]
MARKERS = ["circle", "square", "triangle", "diamond"]
PARTS = {"weights": "#0072B2", "KV cache": "#E69F00", "rest (activations, workspace)": "#999999"}
FONT = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif"


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]] = field(default_factory=list)  # line: (x, y); bar: (category, y)
    color: str = PALETTE[0]
    marker: str = "circle"
    dash: bool = False
    bins: list[tuple[float, float, float]] = field(default_factory=list)  # hist: (lo, hi, share %)


@dataclass
class Panel:
    kind: str  # line | bar | stacked | hist
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # bar, stacked
    x_log2: bool = False
    y_unit: str = ""
    note: str = ""

    def has_data(self) -> bool:
        return any(s.points or s.bins for s in self.series)


@dataclass
class LegendEntry:
    name: str
    color: str
    marker: str | None = "circle"  # None: a filled box (bars)
    dash: bool = False


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    panels: list[Panel] = field(default_factory=list)
    legend: list[LegendEntry] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    cols: int = 2
    kind: str = "figure"


def model_colors(models: list[str]) -> dict[str, tuple[str, str]]:
    return {m: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, m in enumerate(models)}


# --------------------------------------------------------------------------------------------
# figure specs from the data
# --------------------------------------------------------------------------------------------


def _skip(fid: str, title: str, reason: str) -> Figure:
    return Figure(id=fid, title=title, caption="", skipped=reason)


def _metric_vs_context(
    data: ReportData, fid: str, title: str, panels: list[tuple[str, str, bool]], caption: str, what: str
) -> Figure:
    st = data.main_study()
    if st is None:
        return _skip(fid, title, "the config has no main_comparison study")
    ref = data.study_ref(st)
    colors = model_colors(st.models)
    fig = Figure(id=fid, title=title, caption="")
    used = []
    for key, ptitle, _ in panels:
        mt = METRICS[key]
        p = Panel(
            "line",
            ptitle,
            "Context (tokens)",
            f"{mt.label} ({mt.unit})",
            x_log2=len(st.contexts) > 1 and min(st.contexts) > 0,
            y_unit=mt.unit,
        )
        for m in st.models:
            pts = []
            for c in st.contexts:
                r = data.row(m, ref["backend"], ref["dtype"], c, ref["gen"], ref["decoding"])
                used.append(r)
                v = None if r is None or is_failed(r) else mt.value(r)
                if v is not None:
                    pts.append((float(c), v))
            col, mk = colors[m]
            p.series.append(Series(m, pts, col, mk))
        fig.panels.append(p)
    fig.panels = [p for p in fig.panels if p.has_data()]
    if not fig.panels:
        return _skip(fid, title, data.reason_missing(used, what))
    fig.cols = min(2, len(fig.panels))
    fig.legend = [LegendEntry(m, *colors[m]) for m in st.models]
    fig.caption = (
        f"{caption} Study {st.name}: {ref['gen']} generated tokens, {ref['decoding']}, {ref['dtype']}, "
        f"{ref['backend']}; the context axis is logarithmic (base 2)."
    )
    missing = [m for m in st.models if not any(s.points for p in fig.panels for s in p.series if s.name == m)]
    if missing:
        fig.notes.append(f"No figures for {', '.join(missing)} (failed or not measured).")
    return fig


def fig_tps_context(data: ReportData) -> Figure:
    return _metric_vs_context(
        data,
        "fig-tps-context",
        "Throughput against context",
        [("e2e_tps", "End-to-end tok/s (prefill included)", True), ("decode_tps", "Decode tok/s", True)],
        "Tokens per second against prompt length, one line per model. Left: end-to-end (generated tokens ÷ "
        "full-generate time). Right: decode only. ↑ higher is better.",
        "",
    )


def fig_ttft_context(data: ReportData) -> Figure:
    return _metric_vs_context(
        data,
        "fig-ttft-context",
        "TTFT against context",
        [("ttft_ms", "Time to first token", False)],
        "Time to first token (ms, median of N, prefill included) against prompt length. ↓ lower is better.",
        "",
    )


def fig_energy_context(data: ReportData) -> Figure:
    return _metric_vs_context(
        data,
        "fig-energy-context",
        "Energy per 1000 tokens against context",
        [("j_per_1k_tokens", "Energy per 1000 generated tokens", False)],
        "Gross GPU energy (J) per 1000 generated tokens against prompt length. ↓ lower is better.",
        "energy",
    )


def fig_roofline(data: ReportData) -> Figure:
    fig = _metric_vs_context(
        data,
        "fig-roofline",
        "Decode speed as a fraction of the memory-bandwidth bound",
        [("roofline_fraction", "Roofline fraction", True)],
        "Decode tok/s ÷ (measured memory bandwidth ÷ bytes read per decode step), in %. Batch-1 decode reads every "
        "active "
        "weight once per token, so 100% is the ceiling; shown only where the bandwidth and bytes per token are known. "
        "↑ higher is better.",
        "",
    )
    if fig.skipped:
        fig.skipped = "roofline fraction unknown for every cell (no measured bandwidth or bytes per token in the rows)"
    return fig


def fig_memory(data: ReportData) -> Figure:
    fid, title = "fig-memory", "Peak memory split into weights, KV cache and the rest"
    st = data.main_study()
    if st is None:
        return _skip(fid, title, "the config has no main_comparison study")
    ref = data.study_ref(st)
    p = Panel("stacked", "Peak allocated memory", "Model", "Memory (GB)", y_unit="GB")
    parts = {name: Series(name, [], color, None) for name, color in PARTS.items()}
    used, cats = [], []
    for m in st.models:
        r = data.ref_row(m, ref)
        used.append(r)
        if r is None or is_failed(r):
            continue
        peak, w = METRICS["peak_gb"].value(r), METRICS["weights_gb"].value(r)
        if peak is None or w is None:
            continue
        kv = METRICS["kv_gb"].value(r) or 0.0
        i = len(cats)
        cats.append(m)
        parts["weights"].points.append((i, w))
        parts["KV cache"].points.append((i, kv))
        parts["rest (activations, workspace)"].points.append((i, max(0.0, peak - w - kv)))
    if not cats:
        return _skip(fid, title, data.reason_missing(used, "memory"))
    p.categories = cats
    p.series = list(parts.values())
    fig = Figure(
        id=fid,
        title=title,
        caption=(
            f"Study {st.name}, at {cell_label(ref)}. Bar height = peak allocated memory (GB = 10⁹ bytes): weights "
            "(allocated after load), KV cache (bytes of the returned cache tensors) and the rest (activations, "
            "workspace: "
            "peak − weights − KV). ↓ lower is better."
        ),
        panels=[p],
        legend=[LegendEntry(n, c, None) for n, c in PARTS.items()],
        cols=1,
    )
    return fig


def fig_ape(data: ReportData) -> Figure:
    fid, title = "fig-ape", "Active Parameter Efficiency at the reference cell"
    st = data.main_study()
    if st is None:
        return _skip(fid, title, "the config has no main_comparison study")
    ref = data.study_ref(st)
    colors = model_colors(st.models)
    fig = Figure(id=fid, title=title, caption="", cols=3)
    used = [data.ref_row(m, ref) for m in st.models]
    for col, spec in ape_columns().items():
        better = "higher" if spec.get("higher_is_better", True) else "lower"
        p = Panel(
            "bar",
            f"{spec.get('label', col)} ({'↑' if better == 'higher' else '↓'})",
            "Model",
            spec.get("unit", ""),
            categories=list(st.models),
            y_unit=spec.get("unit", ""),
        )
        for i, (m, r) in enumerate(zip(st.models, used)):
            v = None if r is None or is_failed(r) else num(r.get(col))
            c, mk = colors[m]
            p.series.append(Series(m, [(i, v)] if v is not None else [], c, mk))
        if p.has_data():
            fig.panels.append(p)
    if not fig.panels:
        return _skip(fid, title, data.reason_missing(used, ""))
    fig.cols = min(3, len(fig.panels))
    fig.legend = [LegendEntry(m, colors[m][0], None) for m in st.models]
    fig.caption = (
        f"Study {st.name}, at {cell_label(ref)}. Each panel is one APE figure: a metric divided by the active "
        "parameters "
        "in billions (B), or tok/s per peak GB; the unit is on the vertical axis. ↑ higher is better for every panel."
    )
    return fig


def _quantile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return math.nan
    pos = q * (len(sorted_vals) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def histogram(samples: list[float], n_bins: int = 30) -> tuple[list[tuple[float, float, float]], int]:
    """(lo, hi, share %) bins and the number of samples right of the drawn range.

    The range ends at max(p95, p50 + 5 x (p90 - p50)), or the maximum if smaller: a few stalls
    (e.g. 3x the median) would otherwise squash the bulk of the distribution into two bins.
    """
    vals = sorted(v for v in (num(x) for x in samples) if v is not None)
    if not vals:
        return [], 0
    lo = vals[0]
    p50, p90, p95 = (_quantile(vals, q) for q in (0.5, 0.9, 0.95))
    hi = min(vals[-1], max(p95, p50 + 5.0 * (p90 - p50)))
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.05, 1e-6)
    width = (hi - lo) / n_bins
    counts = [0] * n_bins
    above = 0
    for v in vals:
        if v > hi:
            above += 1
            continue
        counts[min(n_bins - 1, int((v - lo) / width))] += 1
    n = len(vals)
    return [(lo + i * width, lo + (i + 1) * width, 100.0 * c / n) for i, c in enumerate(counts)], above


def fig_itl(data: ReportData) -> Figure:
    fid, title = "fig-itl", "Inter-token latency distribution at the reference cell"
    st = data.main_study()
    if st is None:
        return _skip(fid, title, "the config has no main_comparison study")
    ref = data.study_ref(st)
    colors = model_colors(st.models)
    fig = Figure(id=fid, title=title, caption="", cols=3)
    used = []
    for m in st.models:
        r = data.ref_row(m, ref)
        used.append(r)
        samples = (
            [] if r is None or is_failed(r) else [v for v in (r.get("itl_ms_samples") or []) if num(v) is not None]
        )
        if not samples:
            continue
        bins, above = histogram(samples)
        p = Panel("hist", m, "Inter-token latency (ms)", "Share of gaps (%)", y_unit="%")
        p.series.append(Series(m, [], colors[m][0], None, bins=bins))
        p50 = _quantile(sorted(samples), 0.5)
        p.note = f"n = {len(samples)}, p50 = {fmt_num(p50, 3)} ms" + (
            f"; {above} above {fmt_num(bins[-1][1], 3)} ms not drawn" if above else ""
        )
        fig.panels.append(p)
    if not fig.panels:
        return _skip(fid, title, "no inter-token latency samples: " + data.reason_missing(used, ""))
    fig.cols = min(3, len(fig.panels))
    fig.legend = []
    fig.caption = (
        f"Study {st.name}, at {cell_label(ref)}. Every gap between consecutive generated tokens of every measured run, "
        "as a "
        "share of all gaps. Rare stalls far right of the bulk are cut off the axis and counted in the panel note. Each "
        "panel "
        "has its own scale. "
        "Narrow and far left is better."
    )
    return fig


def build_figures(data: ReportData) -> dict[str, Figure]:
    figs = [
        fig_tps_context(data),
        fig_ttft_context(data),
        fig_memory(data),
        fig_energy_context(data),
        fig_ape(data),
        fig_itl(data),
        fig_roofline(data),
    ]
    return {f.id: f for f in figs}


# --------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------


def esc(s) -> str:
    return _xml_escape(str(s), {'"': "&quot;"})


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    span = hi - lo
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for mult in (1, 2, 2.5, 5, 10):
        step = mult * mag
        if span / step <= n:
            break
    start = math.floor(lo / step + 1e-9) * step
    ticks, t = [], start
    while t < hi + step * 0.999:
        ticks.append(round(t, 12))
        t += step
    return ticks


def tick_label(v: float, step: float, top: float | None = None) -> str:
    """Tick text: plain decimals, or k / M suffixes when the axis reaches 100,000 (keeps labels short)."""
    if v == 0:
        return "0"
    top = abs(top if top is not None else v)
    if top >= 1e5:
        div, suffix = (1e6, "M") if top >= 1e6 else (1e3, "k")
        return tick_label(v / div, step / div) + suffix
    if abs(v) < 1e-4:
        return f"{v:.2g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step * 10**decimals % 1 > 1e-6:
        decimals += 1
    return f"{v:,.{decimals}f}"


class _Axes:
    def __init__(self, x0, y0, w, h, xlo, xhi, ylo, yhi, x_log2=False):
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xlo, self.xhi, self.ylo, self.yhi, self.x_log2 = xlo, xhi, ylo, yhi, x_log2

    def X(self, x):
        if self.x_log2:
            a, b, v = math.log2(self.xlo), math.log2(self.xhi), math.log2(x)
        else:
            a, b, v = self.xlo, self.xhi, x
        return self.x0 + (v - a) / ((b - a) or 1) * self.w

    def Y(self, y):
        return self.y0 + self.h - (y - self.ylo) / ((self.yhi - self.ylo) or 1) * self.h


def _marker(kind, x, y, color, r=4.0) -> str:
    if kind == "square":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{color}"/>'
    if kind == "triangle":
        return (
            f'<path d="M{x:.1f},{y - r - 1:.1f} L{x + r + 0.5:.1f},{y + r - 0.5:.1f} '
            f'L{x - r - 0.5:.1f},{y + r - 0.5:.1f} Z" fill="{color}"/>'
        )
    if kind == "diamond":
        return (
            f'<path d="M{x:.1f},{y - r - 1:.1f} L{x + r + 1:.1f},{y:.1f} L{x:.1f},{y + r + 1:.1f} '
            f'L{x - r - 1:.1f},{y:.1f} Z" fill="{color}"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{color}"/>'


def _y_range(panel: Panel) -> tuple[float, float]:
    if panel.kind == "stacked":
        totals: dict[float, float] = {}
        for s in panel.series:
            for x, y in s.points:
                totals[x] = totals.get(x, 0.0) + y
        vals = list(totals.values())
    elif panel.kind == "hist":
        vals = [b[2] for s in panel.series for b in s.bins]
    else:
        vals = [y for s in panel.series for _, y in s.points]
    hi = max(vals) if vals else 1.0
    lo = min(0.0, min(vals)) if vals else 0.0
    return lo, hi * 1.08 if hi > 0 else 1.0


def _panel_svg(panel: Panel, px: float, py: float, pw: float, ph: float, uid: str) -> list[str]:
    out = []
    ylo, yhi = _y_range(panel)
    yt = nice_ticks(ylo, yhi)
    ylo, yhi = min(yt[0], ylo), max(yt[-1], yhi)
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    ylabels = [tick_label(t, ystep, max(abs(yt[0]), abs(yt[-1]))) for t in yt]
    # left margin: the rotated axis title plus the widest tick label (about 6.5 px per character at 11 px)
    ml = max(58, 30 + 6.5 * max(len(x) for x in ylabels))
    mr, mt, mb = 14, (46 if panel.note else 30), 46
    x0, y0, w, h = px + ml, py + mt, pw - ml - mr, ph - mt - mb
    out.append(
        f'<text x="{px + pw / 2:.1f}" y="{py + 18:.1f}" text-anchor="middle" font-size="13" '
        f'font-weight="600">{esc(panel.title)}</text>'
    )
    # x range
    if panel.kind == "line":
        xs = sorted({x for s in panel.series for x, _ in s.points})
        if panel.x_log2 and xs:
            xlo, xhi = (xs[0] / 1.25, xs[-1] * 1.25) if len(xs) > 1 else (xs[0] / 2, xs[0] * 2)
        elif xs:
            pad = (xs[-1] - xs[0]) * 0.05 or max(abs(xs[0]) * 0.5, 1.0)
            xlo, xhi = xs[0] - pad, xs[-1] + pad
        else:
            xlo, xhi = 0.0, 1.0
        xticks = xs
    elif panel.kind == "hist":
        edges = [b[0] for s in panel.series for b in s.bins] + [b[1] for s in panel.series for b in s.bins]
        xlo, xhi = (min(edges), max(edges)) if edges else (0.0, 1.0)
        xticks = nice_ticks(xlo, xhi, 5)
        xticks = [t for t in xticks if xlo <= t <= xhi]
    else:
        xlo, xhi = -0.5, len(panel.categories) - 0.5
        xticks = []
    ax = _Axes(x0, y0, w, h, xlo, xhi, ylo, yhi, panel.x_log2 and panel.kind == "line")
    # grid + y ticks
    for t, label in zip(yt, ylabels):
        y = ax.Y(t)
        out.append(
            f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x0 + w:.1f}" y2="{y:.1f}" stroke="#e3e3e3" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#333">{esc(label)}</text>'
        )
    # axes
    out.append(
        f'<line x1="{x0:.1f}" y1="{y0 + h:.1f}" x2="{x0 + w:.1f}" y2="{y0 + h:.1f}" stroke="#333" stroke-width="1"/>'
    )
    out.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x0:.1f}" y2="{y0 + h:.1f}" stroke="#333" stroke-width="1"/>')
    # x ticks
    if panel.kind in ("bar", "stacked"):
        for i, c in enumerate(panel.categories):
            x = ax.X(i)
            out.append(
                f'<text x="{x:.1f}" y="{y0 + h + 16:.1f}" text-anchor="middle" font-size="11" '
                f'fill="#333">{esc(c)}</text>'
            )
    else:
        xstep = (xticks[1] - xticks[0]) if len(xticks) > 1 else 1.0
        for t in xticks:
            x = ax.X(t)
            out.append(f'<line x1="{x:.1f}" y1="{y0 + h:.1f}" x2="{x:.1f}" y2="{y0 + h + 4:.1f}" stroke="#333"/>')
            label = f"{t:.0f}" if panel.kind == "line" and float(t).is_integer() else tick_label(t, xstep)
            out.append(
                f'<text x="{x:.1f}" y="{y0 + h + 16:.1f}" text-anchor="middle" font-size="11" '
                f'fill="#333">{esc(label)}</text>'
            )
    # axis labels
    if panel.kind not in ("bar", "stacked") or panel.x_label != "Model":
        out.append(
            f'<text x="{x0 + w / 2:.1f}" y="{py + ph - 8:.1f}" text-anchor="middle" '
            f'font-size="12">{esc(panel.x_label)}</text>'
        )
    cy = y0 + h / 2
    out.append(
        f'<text transform="translate({px + 14:.1f},{cy:.1f}) rotate(-90)" text-anchor="middle" '
        f'font-size="12">{esc(panel.y_label)}</text>'
    )
    # data
    if panel.kind == "line":
        for s in panel.series:
            if not s.points:
                continue
            pts = " ".join(f"{ax.X(x):.1f},{ax.Y(y):.1f}" for x, y in s.points)
            dash = ' stroke-dasharray="6 4"' if s.dash else ""
            out.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
            for x, y in s.points:
                out.append(
                    f"<g>{_marker(s.marker, ax.X(x), ax.Y(y), s.color)}<title>{esc(s.name)}: {esc(fmt_num(y))} "
                    f"{esc(panel.y_unit)} at {x:,.0f}</title></g>"
                )
    elif panel.kind == "bar":
        n = len(panel.categories)
        bw = min(48.0, w / max(n, 1) * 0.6)
        for s in panel.series:
            for i, y in s.points:
                x = ax.X(i)
                top, base = ax.Y(max(y, 0)), ax.Y(min(y, 0))
                out.append(
                    f'<g><rect x="{x - bw / 2:.1f}" y="{top:.1f}" width="{bw:.1f}" height="{max(base - top, 0.5):.1f}" '
                    f'fill="{s.color}"/>'
                    f"<title>{esc(s.name)}: {esc(fmt_num(y))} {esc(panel.y_unit)}</title></g>"
                )
                out.append(
                    f'<text x="{x:.1f}" y="{top - 4:.1f}" text-anchor="middle" font-size="10.5" '
                    f'fill="#222">{esc(fmt_num(y, 3))}</text>'
                )
    elif panel.kind == "stacked":
        n = len(panel.categories)
        bw = min(70.0, w / max(n, 1) * 0.55)
        base = {i: 0.0 for i in range(n)}
        for s in panel.series:
            for i, y in s.points:
                x = ax.X(i)
                y_lo, y_hi = base[i], base[i] + y
                base[i] = y_hi
                top, bot = ax.Y(y_hi), ax.Y(y_lo)
                out.append(
                    f'<g><rect x="{x - bw / 2:.1f}" y="{top:.1f}" width="{bw:.1f}" height="{max(bot - top, 0):.1f}" '
                    f'fill="{s.color}" stroke="#fff" stroke-width="0.5"/>'
                    f"<title>{esc(panel.categories[i])}, {esc(s.name)}: {esc(fmt_num(y))} "
                    f"{esc(panel.y_unit)}</title></g>"
                )
        for i, total in base.items():
            out.append(
                f'<text x="{ax.X(i):.1f}" y="{ax.Y(total) - 5:.1f}" text-anchor="middle" font-size="11" '
                f'fill="#222">{esc(fmt_num(total, 3))} {esc(panel.y_unit)}</text>'
            )
    elif panel.kind == "hist":
        for s in panel.series:
            if not s.bins:
                continue
            d = [f"M{ax.X(s.bins[0][0]):.1f},{ax.Y(0):.1f}"]
            for lo, hi, v in s.bins:
                d.append(f"L{ax.X(lo):.1f},{ax.Y(v):.1f} L{ax.X(hi):.1f},{ax.Y(v):.1f}")
            d.append(f"L{ax.X(s.bins[-1][1]):.1f},{ax.Y(0):.1f} Z")
            out.append(
                f'<path d="{" ".join(d)}" fill="{s.color}" fill-opacity="0.25" stroke="{s.color}" stroke-width="1.5"/>'
            )
    if panel.note:
        out.append(
            f'<text x="{px + pw / 2:.1f}" y="{py + 34:.1f}" text-anchor="middle" font-size="10.5" '
            f'fill="#444">{esc(panel.note)}</text>'
        )
    return out


def _legend_svg(entries: list[LegendEntry], width: float) -> tuple[list[str], float]:
    if not entries:
        return [], 0.0
    out, x, y, line_h = [], 16.0, 18.0, 20.0
    for e in entries:
        est = 34 + 7.0 * len(e.name)
        if x + est > width - 8 and x > 16:
            x, y = 16.0, y + line_h
        if e.marker is None:
            out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="14" height="12" fill="{e.color}"/>')
        else:
            dash = ' stroke-dasharray="6 4"' if e.dash else ""
            out.append(
                f'<line x1="{x - 2:.1f}" y1="{y - 3:.1f}" x2="{x + 18:.1f}" y2="{y - 3:.1f}" stroke="{e.color}" '
                f'stroke-width="2"{dash}/>'
            )
            out.append(_marker(e.marker, x + 8, y - 3, e.color))
        out.append(f'<text x="{x + 24:.1f}" y="{y + 1:.1f}" font-size="12">{esc(e.name)}</text>')
        x += est
    return out, y + 10


def to_svg(fig: Figure) -> str:
    """The figure as one standalone SVG element (no external references, no script)."""
    if fig.skipped or not fig.panels:
        return ""
    n = len(fig.panels)
    cols = max(1, min(fig.cols, n))
    rows = math.ceil(n / cols)
    pw = 640.0 if cols == 1 else (440.0 if cols == 2 else 330.0)
    ph = 340.0 if cols == 1 else (300.0 if cols == 2 else 270.0)
    width = pw * cols
    legend, lh = _legend_svg(fig.legend, width)
    height = lh + ph * rows
    body = []
    for i, p in enumerate(fig.panels):
        r, c = divmod(i, cols)
        body += _panel_svg(p, c * pw, lh + r * ph, pw, ph, f"{fig.id}-{i}")
    tid, did = f"{fig.id}-svg-title", f"{fig.id}-svg-desc"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'height="{height:.0f}" role="img" aria-labelledby="{tid} {did}" font-family="{FONT}" class="chart">'
        f'<title id="{tid}">{esc(fig.title)}</title><desc id="{did}">{esc(fig.caption)}</desc>'
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#fff"/>'
    )
    return head + "".join(legend) + "".join(body) + "</svg>"


# --------------------------------------------------------------------------------------------
# LaTeX
# --------------------------------------------------------------------------------------------

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "\u2212": r"\ensuremath{-}",  # minus sign
    "\u2014": "---",
    "\u2013": "--",
    "\u00d7": r"\ensuremath{\times}",
    "\u00f7": r"\ensuremath{\div}",
    "\u2248": r"\ensuremath{\approx}",
    "\u2191": r"\ensuremath{\uparrow}",
    "\u2193": r"\ensuremath{\downarrow}",
    "\u2192": r"\ensuremath{\rightarrow}",
    "\u2020": r"\dag{}",
    "\u0394": r"\ensuremath{\Delta}",
    "\u00b5": r"\ensuremath{\mu}",
    "\u2026": r"\dots{}",
    "\u2070": r"\textsuperscript{0}",
    "\u00b9": r"\textsuperscript{1}",
    "\u00b2": r"\textsuperscript{2}",
    "\u00b3": r"\textsuperscript{3}",
    "\u2079": r"\textsuperscript{9}",
    "\u201c": "``",
    "\u201d": "''",
    "\u2018": "`",
    "\u2019": "'",
    "\u2264": r"\ensuremath{\leq}",
    "\u2265": r"\ensuremath{\geq}",
    "\u00b1": r"\ensuremath{\pm}",
    "\u00a0": "~",
}


def tex_escape(s) -> str:
    """Plain text -> LaTeX (pdflatex, T1): specials escaped, the report's Unicode mapped."""
    out = []
    for ch in str(s):
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append("?")  # a character pdflatex cannot typeset without extra packages
    text = "".join(out)
    # Let long identifiers and paths break after underscores and slashes.
    return text.replace(r"\_", r"\_\allowbreak{}").replace("/", r"/\allowbreak{}")


def tex_color(hexcolor: str) -> str:
    return "c" + hexcolor.lstrip("#").upper()


def tex_color_defs(figs) -> str:
    colors = {s.color for f in figs for p in f.panels for s in p.series} | {e.color for f in figs for e in f.legend}
    return "\n".join(f"\\definecolor{{{tex_color(c)}}}{{HTML}}{{{c.lstrip('#').upper()}}}" for c in sorted(colors))


_PGF_MARK = {"circle": "*", "square": "square*", "triangle": "triangle*", "diamond": "diamond*"}


def _f(v: float) -> str:
    return f"{v:.6g}"


def _pgf_label(s: str) -> str:
    return "{" + tex_escape(s).replace(r"\allowbreak{}", "") + "}"


def _pgf_y_axis(p: Panel) -> list[str]:
    """The SVG's y ticks and labels (k / M suffixes included), so both outputs read the same."""
    ylo, yhi = _y_range(p)
    yt = nice_ticks(ylo, yhi)
    step = yt[1] - yt[0] if len(yt) > 1 else 1.0
    top = max(abs(yt[0]), abs(yt[-1]))
    labels = ",".join("{" + tex_escape(tick_label(t, step, top)) + "}" for t in yt)
    return [
        f"ymin={_f(min(yt[0], ylo))}",
        f"ymax={_f(max(yt[-1], yhi))}",
        f"ytick={{{','.join(_f(t) for t in yt)}}}",
        f"yticklabels={{{labels}}}",
        "scaled y ticks=false",
    ]


def _pgf_panel(p: Panel, width: str, height: str, title_width: str) -> str:
    opts = [
        f"title={_pgf_label(p.title)}",
        f"ylabel={_pgf_label(p.y_label)}",
        f"width={width}",
        f"height={height}",
        *_pgf_y_axis(p),
        "tick label style={font=\\scriptsize}",
        "label style={font=\\footnotesize}",
        f"title style={{font=\\footnotesize\\bfseries, align=center, text width={title_width}}}",
    ]
    body = []
    if p.kind == "line":
        xs = sorted({x for s in p.series for x, _ in s.points})
        opts.append(f"xlabel={_pgf_label(p.x_label)}")
        if p.x_log2:
            opts += ["xmode=log", "log basis x=2"]
        if xs:
            opts += [f"xtick={{{','.join(_f(x) for x in xs)}}}", f"xticklabels={{{','.join(f'{x:.0f}' for x in xs)}}}"]
        for s in p.series:
            if not s.points:
                continue
            coords = " ".join(f"({_f(x)},{_f(y)})" for x, y in s.points)
            style = f"color={tex_color(s.color)}, mark={_PGF_MARK.get(s.marker or 'circle', '*')}, thick" + (
                ", dashed" if s.dash else ""
            )
            body.append(f"\\addplot[{style}] coordinates {{{coords}}};")
    elif p.kind in ("bar", "stacked"):
        n = len(p.categories)
        labels = ",".join("{" + tex_escape(c).replace(r"\allowbreak{}", "") + "}" for c in p.categories)
        opts += [
            f"xtick={{{','.join(str(i) for i in range(n))}}}",
            f"xticklabels={{{labels}}}",
            f"xmin=-0.6, xmax={n - 0.4}",
            "x tick label style={font=\\scriptsize, rotate=25, anchor=north east}"
            if n > 2
            else "x tick label style={font=\\scriptsize}",
            "clip=false",
        ]
        if p.kind == "stacked":
            opts += ["ybar stacked", "bar width=0.5"]
            opts.append("bar width=18pt")
            for s in p.series:
                coords = " ".join(f"({i},{_f(y)})" for i, y in s.points)
                body.append(f"\\addplot[fill={tex_color(s.color)}, draw=white] coordinates {{{coords}}};")
        else:
            opts += [
                "ybar",
                "bar width=14pt",
                "nodes near coords",
                "nodes near coords style={font=\\tiny}",
                "point meta=explicit symbolic",
            ]
            for s in p.series:
                if not s.points:
                    continue
                # the label is the SVG's text (3 significant digits), passed as symbolic point meta
                coords = " ".join(f"({i},{_f(y)}) [{tex_escape(fmt_num(y, 3))}]" for i, y in s.points)
                body.append(f"\\addplot[fill={tex_color(s.color)}, draw=none, bar shift=0pt] coordinates {{{coords}}};")
    elif p.kind == "hist":
        opts.append(f"xlabel={_pgf_label(p.x_label)}")
        opts.append("scaled x ticks=false")
        for s in p.series:
            if not s.bins:
                continue
            coords = [f"({_f(lo)},{_f(v)})" for lo, _, v in s.bins] + [f"({_f(s.bins[-1][1])},{_f(s.bins[-1][2])})"]
            body.append(
                f"\\addplot[const plot, fill={tex_color(s.color)}, fill opacity=0.25, draw={tex_color(s.color)}] "
                f"coordinates {{{' '.join(coords)}}} \\closedcycle;"
            )
    if p.note:  # under the title, as in the SVG; one line per clause
        note = "\\\\".join(tex_escape(x.strip()) for x in p.note.split(";"))
        opts[0] = "title={" + _pgf_label(p.title)[1:-1] + "\\\\{\\tiny\\mdseries " + note + "}}"
    return "[" + ",\n  ".join(opts) + "]\n" + "\n".join(body)


def to_pgfplots(fig: Figure) -> str:
    """The figure as a tikzpicture (pgfplots groupplots) followed by its legend; for \\input."""
    if fig.skipped or not fig.panels:
        return ""
    n = len(fig.panels)
    cols = max(1, min(fig.cols, n))
    rows = math.ceil(n / cols)
    width = {1: "0.82\\linewidth", 2: "0.46\\linewidth", 3: "0.31\\linewidth"}[min(cols, 3)]
    height = {1: "6.2cm", 2: "5.4cm", 3: "4.6cm"}[min(cols, 3)]
    title_width = {1: "0.7\\linewidth", 2: "0.42\\linewidth", 3: "0.27\\linewidth"}[min(cols, 3)]
    lines = [
        f"% {fig.id}: generated by deploybench.report.figures from the same data as the SVG",
        "\\begin{tikzpicture}",
    ]
    lines.append(
        f"\\begin{{groupplot}}[group style={{group size={cols} by {rows}, horizontal sep=1.5cm, vertical sep=2.1cm}}]"
    )
    for p in fig.panels:
        lines.append("\\nextgroupplot" + _pgf_panel(p, width, height, title_width))
    lines += ["\\end{groupplot}", "\\end{tikzpicture}"]
    if fig.legend:
        items = []
        for e in fig.legend:
            c = tex_color(e.color)
            if e.marker is None:
                sym = f"\\tikz[baseline=-0.6ex]\\fill[{c}] (0,-0.12) rectangle (0.3,0.12);"
            else:
                mk = _PGF_MARK.get(e.marker, "*")
                line = f"\\draw[{c}, thick{', dashed' if e.dash else ''}] (0,0) -- (0.6,0);"
                mark = f"\\draw[{c}] plot[mark={mk}, mark options={{fill={c}}}] coordinates {{(0.3,0)}};"
                sym = f"\\tikz[baseline=-0.6ex]{{{line} {mark}}}"
            items.append(f"{sym}~{tex_escape(e.name)}")
        lines.append("\n\\par\\smallskip{\\footnotesize " + "\\quad\n".join(items) + "\\par}")
    return "\n".join(lines) + "\n"
