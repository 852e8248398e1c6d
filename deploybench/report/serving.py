"""Serving engines in the report: their load points as lines, the largest load that meets the SLO, and the study's
Table 12 completed (a serving engine one request at a time beside generate() on the same machine).

A serving_load study's cells are load points (deploybench.plan.serving): a server group (model, engine, dtype,
context, gen, decoding) at each concurrency or request rate, one row each. `lines` gathers them per group and load
mode; serving_figures.py draws them. At concurrency 1 a request is one sequence decoded alone, as in a batch-1
generate() run: `as_generate` names its figures as a generate() row names its own (TTFT p50 as TTFT, 1000 / TPOT p50
as decode tok/s, the server's GPU memory as peak memory), for the first screen (trust.py) and Table 12.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploybench.enums import Backend, Device, LoadMode, StudyKind
from deploybench.plan.naming import cell_id, load_suffix
from deploybench.report import captions
from deploybench.report import quantities as Q
from deploybench.report.data import (
    AXES,
    ReportData,
    cell_label,
    cell_of,
    is_failed,
    is_invalid,
    load_of,
    machine,
    reasons,
)
from deploybench.report.fmt import DASH, num, to_int
from deploybench.report.model import (
    Cell,
    Row,
    Table,
    finish,
    metric_cell,
    metric_column,
    skipped_table,
    text_cell,
    text_column,
)

CONCURRENCY, RATE = str(LoadMode.CONCURRENCY), str(LoadMode.REQUEST_RATE)
GENERATE = (str(Backend.EAGER), str(Backend.COMPILED_LOOP))  # Table 12's generate() rows
SLO_NAMES = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "e2e_ms": "E2E"}
LABELS = {"output_tps": "Output tok/s", "peak_allocated_bytes": "Peak memory", "j_per_output_token": "J per token"}


@dataclass
class Line:
    """One server group's load points of one mode, by load: a line of the serving figures."""

    cell: dict  # the group's axes (batch 1)
    mode: str  # concurrency | request_rate
    points: list[tuple[float, dict | None]]  # (load, its row or None), by load
    slo: dict | None  # the study's latency targets
    study: str
    name: str = ""
    burstiness: float | None = None  # request_rate: the study's (None: 1, Poisson)

    def cell_id(self, load: float) -> str:
        """The cell id of the line's point at `load` (plan.naming: the group's id and the load's suffix)."""
        return cell_id(**self.cell, load=load_suffix(self.mode, load, self.burstiness if self.mode == RATE else None))

    @property
    def rows(self) -> list[dict]:
        return [r for _, r in self.points if r is not None]


def load_label(mode: str, value: float, unit: bool = False) -> str:
    """'16' (or 'concurrency 16') for a closed loop, '2.5/s' (or '2.5 req/s') for an open one."""
    if mode == CONCURRENCY:
        return f"concurrency {value:g}" if unit else f"{value:g}"
    return f"{value:g} req/s" if unit else f"{value:g}/s"


def status(r: dict | None) -> str:
    return "failed" if is_failed(r) else "invalid" if is_invalid(r) else "ok"


def lines(data: ReportData) -> list[Line]:
    """Every serving study's server groups, each load mode a line, in the studies' order (a group once)."""
    return data.once("serving_lines", lambda: _lines(data))


def _lines(data: ReportData) -> list[Line]:
    by_point = {(tuple(cell_of(r)[a] for a in AXES), *load_of(r)): r for r in data.serving if load_of(r)}
    out, seen = [], set()
    for st in data.studies(StudyKind.SERVING_LOAD):
        study = data.config.studies[st.name]
        loads = {CONCURRENCY: study.concurrency or [], RATE: study.request_rate or []}
        for cell in st.cells():
            key = tuple(data.effective(cell)[a] for a in AXES)
            for mode, values in loads.items():
                if values and (key, mode) not in seen:
                    seen.add((key, mode))
                    points = [(float(v), by_point.get((key, mode, float(v)))) for v in sorted(values)]
                    slo = dict(study.slo or {}) or None
                    out.append(Line(data.effective(cell), mode, points, slo, st.name, burstiness=study.burstiness))
    for line in out:  # as short as tells the lines apart
        line.name = f"{line.cell['model']}, {line.cell['backend']}"
    for extra in (lambda ln: cell_label({a: ln.cell[a] for a in ("context", "gen")}), lambda ln: ln.mode):
        names = [ln.name for ln in out]
        for line in out:
            line.name += f" ({extra(line)})" if names.count(line.name) > 1 else ""
    return out


def as_generate(r: dict | None) -> dict | None:
    """A concurrency-1 serving row under generate()'s names; any other row as it is."""
    if r is None or load_of(r) is None:
        return r
    tpot = num(r.get("tpot_ms_p50"))
    view = dict(r) | {"ttft_ms": r.get("ttft_ms_p50"), "tpot_ms": tpot, "decode_tps": 1000.0 / tpot if tpot else None}
    for end, other in (("low", "high"), ("high", "low")):
        view[f"ttft_ms_ci95_{end}"] = r.get(f"ttft_ms_p50_ci95_{end}")
        inverse = num(r.get(f"tpot_ms_p50_ci95_{other}"))
        view[f"decode_tps_ci95_{end}"] = 1000.0 / inverse if inverse else None
    view["decode_tps_samples"] = [1000.0 / x for x in r.get("tpot_ms_samples") or [] if num(x)]
    return view | {"peak_allocated_bytes": r.get("server_gpu_memory_peak_bytes"), "j_per_decode_token": None}


def cpu_timed(r: dict | None) -> bool:
    """A serving row measured on CPU: its timings mean little (tokens come in bursts; server and client share
    the cores)."""
    return r is not None and load_of(r) is not None and r.get("device") == str(Device.CPU)


def slo_words(slo: dict) -> str:
    """'TTFT p99 ≤ 1,000 ms, TPOT p99 ≤ 50 ms/token'."""
    order = list(SLO_NAMES)
    parts = []
    for key, limit in sorted(slo.items(), key=lambda kv: (order.index(kv[0].rpartition("_p")[0]), kv[0])):
        base, _, q = key.rpartition("_p")
        parts.append(f"{SLO_NAMES[base]} p{q} ≤ {limit:,g} {Q.unit(Q.get(key))}")
    return ", ".join(parts)


def largest_passing(line: Line) -> tuple[float, dict] | None:
    """The largest load whose row ran, passed its validity checks and met every SLO target."""
    passing = [(v, r) for v, r in line.points if r is not None and status(r) == "ok" and r.get("slo_met") is True]
    return passing[-1] if passing else None


def _next_up(line: Line, best: tuple[float, dict] | None) -> Cell:
    """Why the load above the largest passing one does not count: its miss, failure or invalidity."""
    above = [(v, r) for v, r in line.points if best is None or v > best[0]]
    if not above:
        return text_cell("none measured above")
    v, r = above[0]
    if r is None:
        return Cell(f"{load_label(line.mode, v)}: not measured", kind="missing")
    why = [f"failed ({r.get('failure_kind') or 'error'})"] if is_failed(r) else []
    why += [r["slo_miss_reason"]] if r.get("slo_miss_reason") and not is_failed(r) else []
    why += [f"invalid ({reasons(r)})"] if is_invalid(r) else []
    return text_cell(f"{load_label(line.mode, v)}: {'; '.join(why) or 'SLO not decided'}")


def _points_text(line: Line) -> Cell:
    """'1 ✓, 4 ✓, 16 ✗, 64 failed, 256 ✗ †': every load point's verdict (hover: the targets each missed)."""
    said = []
    for v, r in line.points:
        mark = {True: "✓", False: "✗"}.get((r or {}).get("slo_met"), DASH)
        mark = "not measured" if r is None else "failed" if is_failed(r) else mark
        said.append(f"{load_label(line.mode, v)} {mark}" + (" †" if is_invalid(r) else ""))
    misses = [
        f"{load_label(line.mode, v)}: {r['slo_miss_reason']}"
        for v, r in line.points
        if (r or {}).get("slo_miss_reason")
    ]
    return text_cell(", ".join(said), note="; ".join(misses) or None)


def slo_table(data: ReportData) -> list[Table]:
    """Per model and engine: the SLO, the largest load that meets it, its output tok/s and J per output token."""
    tid, title = "table-serving-slo", "The largest load that meets the SLO"
    judged = [ln for ln in lines(data) if ln.slo]
    if not judged:
        return [skipped_table(tid, title, captions.text("serving", "no_slo"))]
    cols = [text_column("model", "Model"), text_column("backend", "Engine"), text_column("slo", "SLO", wrap=0.2)]
    cols += [text_column("largest", "Largest load meeting it")]
    cols += [metric_column(Q.get(n), label=LABELS.get(n)) for n in ("output_tps", "j_per_output_token")]
    cols += [text_column("next", "Next load up", wrap=0.22), text_column("points", "Each load (✓ met, ✗ missed)")]
    t = Table(tid, title, captions.text("tables", tid), cols, study=", ".join(dict.fromkeys(ln.study for ln in judged)))
    for line in judged:
        best = largest_passing(line)
        r = best[1] if best else None
        largest = text_cell(load_label(line.mode, best[0], unit=True)) if best else Cell("none", kind="missing")
        cells = {"model": text_cell(line.cell["model"]), "backend": text_cell(line.cell["backend"])}
        cells |= {"slo": text_cell(slo_words(line.slo)), "largest": largest, "points": _points_text(line)}
        cells["next"] = _next_up(line, best)
        for n in ("output_tps", "j_per_output_token"):
            cells[n] = metric_cell(r, Q.get(n)) if r else Cell(DASH, kind="missing", note="no load meets the SLO")
        t.rows.append(Row(cells, key={"model": line.cell["model"], "backend": line.cell["backend"], "mode": line.mode}))
    if unjudged := [ln.name for ln in lines(data) if not ln.slo]:
        t.notes.append(captions.text("serving", "unjudged", lines=", ".join(unjudged)))
    rows = [r for ln in judged for r in ln.rows]
    return [finish(t, ["output_tps", "j_per_output_token"], data.reason_missing(rows))]


# Table 12: per model, generate() and each serving engine at one request at a time, from one machine.
TABLE12 = ("ttft_ms", "tpot_ms", "output_tps", "peak_allocated_bytes", "j_per_output_token")


def in_table12_terms(r: dict | None) -> dict | None:
    """A row under Table 12's names: a generate() row's e2e tok/s is its output tok/s, its J per 1000 tokens
    ÷ 1000 its J per output token (both prefill included); a serving row as_generate."""
    if r is None or load_of(r) is not None:
        return as_generate(r)
    j = num(r.get("j_per_1k_tokens"))
    return r | {"output_tps": r.get("e2e_tps"), "j_per_output_token": None if j is None else j / 1000.0}


def table12(data: ReportData) -> list[Table]:
    tid, title = "table-serving-generate", "A serving engine beside generate(), one request at a time (Table 12)"
    ref = {a: to_int(data.ref[a]) for a in ("context", "gen") if data.ref.get(a) is not None}
    at_ref = sorted(lines(data), key=lambda ln: any(ln.cell[a] != v for a, v in ref.items()))  # stable
    models: dict[str, tuple[dict, list[str]]] = {}  # model -> (its cell, the backends to show)
    for line in at_ref:  # per model, the engines at its first serving cell, the reference cell's where one is
        cell, engines = models.setdefault(line.cell["model"], (line.cell, list(GENERATE)))
        same = all(line.cell[a] == cell[a] for a in AXES if a != "backend")
        engines += [line.cell["backend"]] if same and line.cell["backend"] not in engines else []
    if not models:
        return [skipped_table(tid, title, captions.text("serving", "no_lines"))]
    cols = [text_column("model", "Model"), text_column("backend", "Backend"), text_column("machine", "Measured on")]
    cols += [metric_column(Q.get(n), label=LABELS.get(n)) for n in TABLE12]
    fixed = {cell_label({a: c[a] for a in ("context", "gen", "decoding", "dtype")}) for c, _ in models.values()}
    t = Table(tid, title, captions.text("tables", tid, fixed="; ".join(sorted(fixed))), cols)
    for model, (cell, backends) in models.items():
        rows = {b: data.row({**cell, "backend": b, "batch": 1}) for b in backends}
        served = [rows[b] for b in backends if b not in GENERATE and rows[b] is not None]
        anchor = next((r for r in served if not is_failed(r)), None) or next(iter(served), None)
        anchor = anchor or next((r for r in rows.values() if r is not None), None)
        for b, r in rows.items():
            t.rows.append(_row12(model, b, r, anchor))
    t = finish(t, list(TABLE12), "no figures measured")
    t.notes += marks(t)
    return [t]


def _row12(model: str, backend: str, r: dict | None, anchor: dict | None) -> Row:
    cells = {"model": text_cell(model), "backend": text_cell(backend)}
    if r is None:
        cells["machine"] = Cell("not measured", kind="missing", note="the data has no row for this cell")
        cells |= {n: Cell(DASH, kind="missing", note="not measured") for n in TABLE12}
    elif machine(r) != machine(anchor):
        said = f"measured on {machine(r)}, not on {machine(anchor)}: the figures would compare the machines"
        cells["machine"] = Cell(f"other machine ({machine(r)})", kind="missing", note=said)
        cells |= {n: Cell(DASH, kind="missing", note=said) for n in TABLE12}
    else:
        view = in_table12_terms(r)
        cells["machine"] = text_cell(f"{r.get('device_name') or 'device'} ({machine(r)})")
        cells |= {n: metric_cell(view, Q.get(n), failed_text=True) for n in TABLE12}
        mark_memory(r, cells["peak_allocated_bytes"])
        if cpu_timed(r):
            for n in ("ttft_ms", "tpot_ms", "output_tps"):
                mark_cpu(cells[n])
    return Row(cells, key={"model": model, "backend": backend}, status="ok" if r is None else status(r))


def mark_memory(r: dict | None, c: Cell) -> None:
    """A server's GPU memory where generate()'s peak allocation stands: marked §, said what it holds."""
    if c.value is not None and load_of(r) is not None:
        c.text += " §"
        c.note = "; ".join(filter(None, [c.note, captions.text("serving", "memory_cell")]))


def mark_cpu(c: Cell) -> None:
    """A serving engine's timing on CPU: marked *, said not to be meaningful."""
    if c.value is not None:
        c.text += " *"
        c.note = "; ".join(filter(None, [c.note, captions.text("serving", "cpu_cell")]))


def marks(t: Table) -> list[str]:
    """The notes of the serving marks a table shows (§ a server's memory, * a timing on CPU)."""
    shown = {c.text[-1] for row in t.rows for c in row.cells.values() if c.text.endswith((" §", " *"))}
    return [captions.text("serving", key) for mark, key in (("§", "memory"), ("*", "cpu")) if mark in shown]
