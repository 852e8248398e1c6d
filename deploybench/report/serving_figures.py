"""The serving figures: each (model, engine)'s throughput-latency frontier, and what its load costs.

fig-serving-frontier: the server's output tok/s (steady window) against TPOT and against TTFT, p50 solid and p99
dashed, one line per server group and load mode (serving.lines), each point labelled by its load. fig-serving-load:
J per output token (gross solid, idle subtracted dashed) and goodput (solid; every completed request dashed) against
the load; a family no row has (energy on CPU) is a panel that says why instead of empty axes. A failed point is a
cross where its row has the figures, else named under the figure; an invalid point is hollow and marked †.
Panels and series are figures.py's; plot.py draws them. Captions are `figures.<id>` in captions.yaml.
"""

from __future__ import annotations

from deploybench.enums import StudyKind
from deploybench.report import captions
from deploybench.report import quantities as Q
from deploybench.report.data import ReportData, cell_label, is_failed, is_invalid
from deploybench.report.figures import PALETTE, Figure, FigureSpec, Panel, Series, axis_label
from deploybench.report.fmt import fmt_int, num
from deploybench.report.serving import CONCURRENCY, RATE, Line, cpu_timed, lines, load_label, slo_words, status

SERVING = StudyKind.SERVING_LOAD
SPECS = (
    FigureSpec("fig-serving-frontier", "Throughput against latency as the load grows", "frontier",
               ("tpot_ms", "ttft_ms", "output_tps"), kind=SERVING),
    FigureSpec("fig-serving-load", "Energy per token and goodput against the load", "load",
               ("j_per_output_token", "goodput_rps"), missing="energy", kind=SERVING),
)  # fmt: skip
DECADES = 30.0  # an axis whose figures span more than this factor is logarithmic
AGAINST = {CONCURRENCY: ("Concurrency (requests in flight)", "concurrency"), RATE: ("Request rate (req/s)", "rate")}


def _series(line: Line, color: str, mx, my, dashed: bool = False, labelled: bool = False) -> Series:
    """The line's points of two figures (x: None = the load itself); a failed row's figures too (a cross)."""
    pts = []
    for v, r in line.points:
        x, y = (v if mx is None else Q.value(mx, r)), Q.value(my, r)
        if r is None or x is None or y is None:
            continue
        pts.append((x, y, load_label(line.mode, v) + (" †" if is_invalid(r) else ""), status(r)))
    xs, ys, labels, states = (list(col) for col in zip(*pts)) if pts else ([], [], [], [])
    return Series(line.name, xs, ys, color, labels if labelled else [], dashed=dashed, status=states)


def _wide(values: list[float]) -> bool:
    values = [v for v in values if v > 0]
    return bool(values) and max(values) / min(values) > DECADES


def _frontier(data: ReportData, lns: list[Line], colors: dict) -> list[Panel]:
    my = Q.get("output_tps")
    panels = []
    for base in ("tpot_ms", "ttft_ms"):
        m50, m99 = Q.get(f"{base}_p50"), Q.get(f"{base}_p99")
        name = m50.header_label.removesuffix(" p50")
        p = Panel("serving", f"{my.header_label} against {name}", f"{name} ({Q.unit(m50)})", axis_label(my))
        p.solid, p.dashed = "p50", "p99"
        for line in lns:
            p.series += [_series(line, colors[line.name], m50, my, labelled=True)]
            p.series += [_series(line, colors[line.name], m99, my, dashed=True)]
        p.series = [s for s in p.series if s.y]
        targets = {(key, limit) for ln in lns for key, limit in (ln.slo or {}).items() if key.startswith(base)}
        p.limits = [(limit, f"SLO {slo_words({key: limit})}") for key, limit in sorted(targets)]
        if not any(s.dashed for s in p.series):  # tails withheld: too few requests per point
            most = max((num(r.get("latency_requests")) or 0 for ln in lns for r in ln.rows), default=0)
            p.note = captions.text("serving", "no_p99", n=fmt_int(most))
        p.log_x = _wide([x for s in p.series for x in s.x])
        p.log_y = _wide([y for s in p.series for y in s.y])
        panels.append(p)
    return panels


def _load(data: ReportData, lns: list[Line], colors: dict) -> list[Panel]:
    families = (
        ("j_per_output_token", "j_per_output_token_net", "gross", "idle subtracted", "energy"),
        ("goodput_rps", "request_rps", "goodput (met the SLO)", "every completed request", "throughput"),
    )
    panels = []
    for mode in (CONCURRENCY, RATE):
        group = [ln for ln in lns if ln.mode == mode]
        if not group:
            continue
        x_label, against = AGAINST[mode]
        for solid, dashed, said_solid, said_dashed, family in families:
            ms, md = Q.get(solid), Q.get(dashed)
            title = f"{ms.header_label} against {against}"
            p = Panel("serving", title, x_label, axis_label(ms), solid=said_solid, dashed=said_dashed)
            for line in group:
                p.series += [
                    _series(line, colors[line.name], None, ms),
                    _series(line, colors[line.name], None, md, True),
                ]
            p.series = [s for s in p.series if s.y]
            rows = [r for ln in group for r in ln.rows]
            if not p.series:  # nothing measured: the panel says why, no empty axes
                why = data.reason_missing(rows, family if family == "energy" else "")
                if family == "throughput":
                    found = sorted({str(r["throughput_null_reason"]) for r in rows if r.get("throughput_null_reason")})
                    why = "; ".join(found[:2]) or why
                panels.append(Panel("message", title, "", "", note=captions.text("serving", f"no_{family}", why=why)))
                continue
            if family == "throughput" and (unjudged := [ln.name for ln in group if not ln.slo]):
                p.note = captions.text("serving", "no_goodput", lines=", ".join(unjudged))
            loads = [v for ln in group for v, _ in ln.points]
            p.log2_x = mode == CONCURRENCY and max(loads) > min(loads)  # 1, 2, 4, ...: evenly spaced
            p.log_y = _wide([y for s in p.series for y in s.y])
            panels.append(p)
    return panels


LAYOUTS = {"frontier": _frontier, "load": _load}


def _why_not(line: Line) -> str:
    """'tiny, transformers_serve (output tokens unknown: ...)': a line with rows but nothing to draw, and why."""
    found = sorted({str(r["throughput_null_reason"]) for r in line.rows if r.get("throughput_null_reason")})
    return f"{line.name} ({found[0]})" if found else line.name


def build(spec: FigureSpec, data: ReportData) -> Figure:
    lns = lines(data)
    if not data.studies(spec.kind):
        return Figure(spec.id, spec.title, skipped=f"the config has no {spec.kind} study")
    if not any(ln.rows for ln in lns):
        return Figure(spec.id, spec.title, skipped=captions.text("serving", "no_lines"))
    colors = {ln.name: color for ln, color in zip(lns, PALETTE * 8)}
    panels = LAYOUTS[spec.layout](data, lns, colors)
    if not any(p.series for p in panels):
        reason = data.reason_missing([r for ln in lns for r in ln.rows], spec.missing)
        return Figure(spec.id, spec.title, skipped=reason)
    fixed = {cell_label({a: ln.cell[a] for a in ("context", "gen", "decoding", "dtype")}) for ln in lns}
    studies = ", ".join(dict.fromkeys(ln.study for ln in lns))
    caption = captions.text("figures", spec.id, studies=studies, fixed="; ".join(sorted(fixed)))
    fig = Figure(spec.id, spec.title, caption, panels, columns=2)
    lost = [
        f"{ln.name} at {load_label(ln.mode, v, unit=True)} ({r.get('failure_kind') or 'error'})"
        for ln in lns
        for v, r in ln.points
        if is_failed(r) and Q.value(Q.get("output_tps"), r) is None
    ]
    fig.notes += [captions.text("serving", "failed_points", points="; ".join(lost))] if lost else []
    absent = [f"{ln.name} at {load_label(ln.mode, v, unit=True)}" for ln in lns for v, r in ln.points if r is None]
    fig.notes += [captions.text("serving", "absent_points", points="; ".join(absent))] if absent else []
    drawn = {s.name for p in panels for s in p.series}
    if unseen := [_why_not(ln) for ln in lns if ln.rows and ln.name not in drawn and not all(map(is_failed, ln.rows))]:
        fig.notes.append(captions.text("serving", "no_line", lines="; ".join(unseen)))
    if any(cpu_timed(r) for ln in lns for r in ln.rows):
        fig.notes.append(captions.text("serving", "cpu_figure"))
    return fig


def build_figures(data: ReportData) -> dict[str, Figure]:
    return {spec.id: build(spec, data) for spec in SPECS}
