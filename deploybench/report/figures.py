"""Figures: one spec per figure (data), turned into panels of numbers; plot.py draws them.

A `Figure` is pure data (panels, series, labels with units), so the HTML (inline SVG) and the
PDF (vector PDF) are drawn from the same numbers. Captions are `figures.<id>` in captions.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deploybench.enums import StudyKind
from deploybench.report import captions, pacing
from deploybench.report import quantities as Q
from deploybench.report.data import ReportData, Study, cell_label, is_failed
from deploybench.report.fmt import fmt_num, num
from deploybench.report.quantities import REST
from deploybench.report.specs import APE

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; markers differ too.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442"]
PART_COLORS = ["#0072B2", "#E69F00", "#999999"]


@dataclass(frozen=True)
class FigureSpec:
    id: str
    title: str
    layout: str  # lines (one per model, against context) | stacked (parts of a bar) | bars | histograms | frontier
    metrics: tuple[str, ...]  # frontier: (x, y), one line per model and backend along the batch axis
    missing: str = ""  # the figure family that explains an absence: energy | memory
    kind: StudyKind = StudyKind.MAIN_COMPARISON  # the study it draws (the first of this kind)


# fmt: off
SPECS = (
    FigureSpec("fig-tps-context", "Throughput against context", "lines", ("e2e_tps", "decode_tps")),
    FigureSpec("fig-ttft-context", "TTFT against context", "lines", ("ttft_ms",)),
    FigureSpec("fig-memory", "Peak memory split into weights, KV cache and the rest", "stacked",
               ("weights_bytes", "kv_cache_bytes", REST.name), missing="memory"),
    FigureSpec("fig-energy-context", "Energy per 1000 tokens against context", "lines", ("j_per_1k_tokens",),
               missing="energy"),
    FigureSpec("fig-ape", "Active Parameter Efficiency at the reference cell", "bars", APE),
    FigureSpec("fig-itl", "Inter-token latency distribution at the reference cell", "histograms", ("itl_ms_samples",)),
    FigureSpec("fig-roofline", "Decode speed as a fraction of the memory-bandwidth bound", "lines",
               ("roofline_fraction", "roofline_fraction_gemv")),
    FigureSpec("fig-batch-frontier", "Throughput against latency as the batch grows", "frontier",
               ("tpot_ms", "decode_tps"), kind=StudyKind.BATCH_SCALING),
)
# fmt: on


@dataclass
class Series:
    name: str
    x: list[float]  # line: x values; bars: category index; histogram: bin edges (one more than y)
    y: list[float]
    color: str
    labels: list[str] = field(default_factory=list)  # a text beside each point (frontier: its batch size)
    ends: list[tuple[float, float] | None] = field(default_factory=list)  # each point's 95% interval or run range
    paced: list[bool] = field(default_factory=list)  # each point from a host-paced cell (pacing.py)
    dashed: bool = False  # serving: the panel's second figure of the same line (its `dashed` says which)
    status: list[str] = field(default_factory=list)  # serving: each point ok | invalid | failed


@dataclass
class Panel:
    # line | bar | stacked | hist | frontier (a line through points of two figures, labelled) | serving (load points
    # of serving engines, serving_figures.py) | message (nothing to draw: the panel says why)
    kind: str
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # bar, stacked
    log2_x: bool = False
    note: str = ""
    dropped: str = ""  # why the panel is not drawn (every point host-paced)
    log_x: bool = False  # serving: logarithmic axes where the figures span decades
    log_y: bool = False
    solid: str = ""  # serving: what the solid and the dashed lines show (the key inside the panel)
    dashed: str = ""
    limits: list[tuple[float, str]] = field(default_factory=list)  # serving: vertical lines, e.g. an SLO target


@dataclass
class Figure:
    id: str
    title: str
    caption: str = ""
    panels: list[Panel] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    columns: int = 2


def axis_label(m) -> str:
    return f"{m.header_label} ({Q.unit(m)})"


def _point(m, r) -> tuple[float | None, tuple[float, float] | None, bool]:
    """A figure, its 95% interval or else its run range, and whether a host-paced cell gave it."""
    v = Q.figure(m, r)
    if v is None:
        return None, None, False
    ends = Q.interval(m, r) or (Q.run_range(m, r) or (None, None, 0))[:2]
    return v, None if None in ends else ends, m.name in pacing.PACED and pacing.host_paced(r)


def _paced(p: Panel) -> Panel:
    """A panel whose every point is host-paced compares hosts, not models: it is not drawn."""
    points = [x for s in p.series for x in s.paced]
    if points and all(points):
        p.dropped = p.title.rstrip(" ↑↓()")
    return p


def _lines(spec: FigureSpec, data: ReportData, st: Study, ref: dict, used: list) -> list[Panel]:
    panels = []
    for m in map(Q.get, spec.metrics):
        arrow = {"higher": " ↑", "lower": " ↓"}.get(str(m.better), "")
        p = Panel("line", m.header_label + arrow, "Context (tokens)", axis_label(m), log2_x=min(st.contexts) > 0)
        for model, color in zip(st.models, PALETTE * 8):
            rows = [data.row({**ref, "model": model, "context": c}) for c in st.contexts]
            used += rows
            pts = [(float(c), *_point(m, r)) for c, r in zip(st.contexts, rows)]
            pts = [pt for pt in pts if pt[1] is not None]
            series = Series(model, [pt[0] for pt in pts], [pt[1] for pt in pts], color)
            series.ends, series.paced = [pt[2] for pt in pts], [pt[3] for pt in pts]
            p.series.append(series)
        panels.append(_paced(p))
    return panels


def _stacked(spec: FigureSpec, data: ReportData, st: Study, ref: dict, used: list) -> list[Panel]:
    parts = [Q.get(n) for n in spec.metrics]
    p = Panel("stacked", "Peak allocated memory", "Model", f"Memory ({Q.unit(parts[0])})")
    p.series = [Series(m.header_label, [], [], color) for m, color in zip(parts, PART_COLORS)]
    for model in st.models:
        r = data.row({**ref, "model": model})
        used.append(r)
        values = [Q.figure(m, r) for m in parts]
        if values[0] is None or Q.figure(Q.get("peak_allocated_bytes"), r) is None:
            continue  # no bar without its weights and its peak
        for s, v in zip(p.series, values):
            s.x.append(len(p.categories))
            s.y.append(v or 0.0)
        p.categories.append(model)
    return [p]


def _bars(spec: FigureSpec, data: ReportData, st: Study, ref: dict, used: list) -> list[Panel]:
    rows = [data.row({**ref, "model": model}) for model in st.models]
    used += rows
    panels = []
    for m in map(Q.get, spec.metrics):
        arrow = {"higher": " (↑)", "lower": " (↓)"}.get(str(m.better), "")
        p = Panel("bar", m.header_label + arrow, "Model", Q.unit(m), categories=list(st.models))
        for i, (model, r, color) in enumerate(zip(st.models, rows, PALETTE * 8)):
            v, ends, paced = _point(m, r)
            series = Series(model, [i] if v is not None else [], [v] if v is not None else [], color)
            series.ends, series.paced = ([ends], [paced]) if v is not None else ([], [])
            p.series.append(series)
        panels.append(_paced(p))
    return panels


def _quantile(vals: list[float], q: float) -> float:
    return float(np.percentile(vals, q * 100))  # linear interpolation between closest ranks


def histogram(samples: list[float], n_bins: int = 30) -> tuple[list[float], list[float], int]:
    """Bin edges, the share of samples in each bin (%), and the number right of the drawn range.

    The range ends at max(p95, p50 + 5 x (p90 - p50)), or the maximum if smaller: a few stalls
    (e.g. 3x the median) would otherwise squash the bulk of the distribution into two bins.
    """
    vals = sorted(v for v in (num(x) for x in samples) if v is not None)
    if not vals:
        return [], [], 0
    p50, p90, p95 = (_quantile(vals, q) for q in (0.5, 0.9, 0.95))
    lo, hi = vals[0], min(vals[-1], max(p95, p50 + 5.0 * (p90 - p50)))
    hi = hi if hi > lo else lo + max(abs(lo) * 0.05, 1e-6)
    width = (hi - lo) / n_bins
    counts = [0] * n_bins
    for v in vals:
        if v <= hi:
            counts[min(n_bins - 1, int((v - lo) / width))] += 1
    shares = [100.0 * c / len(vals) for c in counts]
    return [lo + i * width for i in range(n_bins + 1)], shares, len(vals) - sum(counts)


def _histograms(spec: FigureSpec, data: ReportData, st: Study, ref: dict, used: list) -> list[Panel]:
    m = Q.get(spec.metrics[0])
    panels = []
    for model, color in zip(st.models, PALETTE * 8):
        r = data.row({**ref, "model": model})
        used.append(r)
        samples = [] if r is None or is_failed(r) else [v for v in (Q.raw(m, r) or []) if num(v) is not None]
        if not samples:
            continue
        edges, shares, above = histogram(samples)
        p = Panel("hist", model, f"Inter-token latency ({Q.unit(m)})", "Share of gaps (%)")
        p.series.append(Series(model, edges, shares, color))
        p.note = f"n = {len(samples)}, p50 = {fmt_num(_quantile(sorted(samples), 0.5), 3)} {Q.unit(m)}"
        p.note += f"; {above} above {fmt_num(edges[-1], 3)} {Q.unit(m)} not drawn" if above else ""
        p.note += "; ‡ host-paced: these gaps are the host's pace" if pacing.host_paced(r) else ""
        panels.append(p)
    return panels


def _frontier(spec: FigureSpec, data: ReportData, st: Study, ref: dict, used: list) -> list[Panel]:
    mx, my = map(Q.get, spec.metrics)
    p = Panel("frontier", f"{my.header_label} against {mx.header_label}", axis_label(mx), axis_label(my))
    lines = [(model, backend) for model in st.models for backend in st.axes["backend"]]
    for (model, backend), color in zip(lines, PALETTE * 8):
        rows = [data.row({**ref, "model": model, "backend": backend, "batch": n}) for n in st.axes["batch"]]
        used += rows
        pts = [(Q.figure(mx, r), Q.figure(my, r), str(n)) for n, r in zip(st.axes["batch"], rows)]
        pts = [pt for pt in pts if None not in pt]
        name = model if len(st.axes["backend"]) == 1 else f"{model}, {backend}"
        p.series.append(Series(name, [x for x, _, _ in pts], [y for _, y, _ in pts], color, [n for *_, n in pts]))
    return [p]


LAYOUTS = {"lines": _lines, "stacked": _stacked, "bars": _bars, "histograms": _histograms, "frontier": _frontier}
VARIED = {"lines": ("context",), "frontier": ("backend",)}  # the axes a layout draws, not held fixed


def build(spec: FigureSpec, data: ReportData) -> Figure:
    st = next(iter(data.studies(spec.kind)), None)
    if st is None:
        return Figure(spec.id, spec.title, skipped=f"the config has no {spec.kind} study")
    ref = data.study_ref(st)
    used: list = []
    drawn = [p for p in LAYOUTS[spec.layout](spec, data, st, ref, used) if any(s.y for s in p.series)]
    panels, dropped = [p for p in drawn if not p.dropped], [p.dropped for p in drawn if p.dropped]
    if spec.layout == "frontier" and len(data.measured(st, "batch")) < 2:
        return Figure(spec.id, spec.title, skipped=captions.text("skips", "one_batch", batch=data.anchor(st, "batch")))
    said = ", ".join(dropped[:-1]) + " and " + dropped[-1] if len(dropped) > 1 else "".join(dropped)
    dropped = [captions.text("skips", "paced", figures=said)] if dropped else []
    if not panels:
        skips, why = captions.entries("skips"), data.reason_missing(used, spec.missing)
        why = skips[spec.id].format(reason=why) if spec.id in skips else why
        return Figure(spec.id, spec.title, skipped=dropped[0] if dropped else why)
    fixed = {k: v for k, v in ref.items() if k not in VARIED.get(spec.layout, ()) or len(st.axes[k]) == 1}
    reads = {r["model"]: r["experts_read_per_token"] for r in data.study_rows(st) if r.get("experts_read_per_token")}
    experts = ", ".join(f"{m}: {v}" for m, v in reads.items()) or "not recorded"
    caption = captions.text("figures", spec.id, study=st.name, fixed=cell_label(fixed), experts=experts)
    fig = Figure(spec.id, spec.title, caption, panels, columns=min(3 if len(panels) > 2 else 2, len(panels)))
    fig.notes += [f"{d}." for d in dropped]
    if any(x for p in panels for s in p.series for x in s.paced):
        fig.notes.append(captions.text("notes", "figure_paced"))
    if spec.layout == "lines":
        drawn = {s.name for p in panels for s in p.series if s.y}
        if missing := [m for m in st.models if m not in drawn]:
            fig.notes.append(captions.text("notes", "figure_missing", models=", ".join(missing)))
    return fig


def build_figures(data: ReportData) -> dict[str, Figure]:
    return {spec.id: build(spec, data) for spec in SPECS}
