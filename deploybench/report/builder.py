"""The one builder of study tables: a TableSpec (specs.py) + the data -> one table per study.

Every study table has the same skeleton: find the studies of the spec's kind (or say none exists),
take the study's reference cell, lay out rows and columns, fill the cells, finish. The change
against an anchor and the ratio to the baseline model are computed here and nowhere else.
"""

from __future__ import annotations

import itertools

from deploybench.report import captions, gate
from deploybench.report import quantities as Q
from deploybench.report.data import AXIS_COLUMN, NUMERIC, ReportData, Study, cell_label, is_failed
from deploybench.report.fmt import DASH, fmt_int, fmt_num, fmt_pct, fmt_ratio, num, ratio
from deploybench.report.model import (
    Cell,
    Column,
    Row,
    Table,
    finish,
    metric_cell,
    metric_column,
    row_status,
    runs_cell,
    skipped_table,
    status_cell,
    text_cell,
    text_column,
)
from deploybench.report.specs import TableSpec
from deploybench.results import metrics


def label(field: str) -> str:
    """A column's header: its catalogue label (axes by the column they are stored in)."""
    return metrics.get(AXIS_COLUMN.get(field, field)).header_label


def baseline_of(data: ReportData, st: Study) -> str | None:
    return data.baseline if data.baseline in st.models else next(iter(st.models), None)


def build(spec: TableSpec, data: ReportData) -> list[Table]:
    studies = data.studies(spec.kind)
    if not studies:
        return [skipped_table(spec.id, spec.title, f"the config has no {spec.kind} study")]
    build_one = _gap if spec.layout == "gap" else _grid
    # The first study's table keeps the spec's id; further studies of the kind get -2, -3, ...
    ids = [spec.id] + [f"{spec.id}-{i}" for i in range(2, len(studies) + 1)]
    return [_machines(build_one(spec, data, st, tid), data, st) for st, tid in zip(studies, ids)]


def _machines(t: Table, data: ReportData, st: Study) -> Table:
    """A study whose cells span machines says so at its table."""
    if len(seen := data.machines(st)) > 1:
        t.notes.append(captions.text("notes", "machines", n=len(seen), machines=", ".join(seen)))
    return t


class _Layout:
    """Which axes a study table iterates, shows and holds fixed, and where its anchor lies."""

    def __init__(self, spec: TableSpec, data: ReportData, st: Study):
        self.ref = data.study_ref(st)
        self.metrics = [Q.get(n) for n in spec.metrics]
        values = {**st.axes, "metric": self.metrics}
        self.iterated = [a.rstrip("?") for a in spec.rows]
        self.values = {a: values[a] for a in self.iterated}
        self.shown = [a.rstrip("?") for a in spec.rows if not a.endswith("?") or len(values[a.rstrip("?")]) > 1]
        self.pivot = spec.pivot
        self.pivots = data.measured(st, spec.pivot) if spec.pivot else []
        if spec.pivot_ends and len(self.pivots) > 1:
            self.pivots = [self.pivots[0], self.pivots[-1]]
        self.fixed = {a: v for a, v in self.ref.items() if a not in self.shown and a != spec.pivot}
        anchor_values = {"model": baseline_of(data, st), "entry": "same-card entry"}
        self.same_card = lambda model: data.same_card(st, model)
        anchor_values["pivot"] = next(iter(self.pivots), None)
        self.anchor = spec.anchor
        self.anchor_axis = {"pivot": spec.pivot, "entry": "model"}.get(spec.anchor, spec.anchor)
        on_axis = data.anchor(st, spec.anchor) if spec.anchor in st.axes else None  # decoding, context, backend
        self.anchor_value = anchor_values.get(spec.anchor, on_axis)
        self.metric_rows = "metric" in self.iterated  # metrics as rows, the pivot's values as columns
        self.one_unit = len({Q.unit(m) for m in self.metrics}) == 1  # else each metric row names its unit

    def key(self, m, v) -> str:
        """The column key of metric m at pivot value v (v None: no pivot)."""
        if self.metric_rows:
            return f"{self.pivot}={v}"
        return m.name if v is None else f"{m.name}@{v}"

    def change_key(self, m, v) -> str:
        """The key of metric m's change column: one per pivot value, unless the change runs along the pivot."""
        return f"d_{m.name}" if v is None or self.anchor == "pivot" else f"d_{m.name}@{v}"

    def cells(self):
        """(cell, metric or None) for every row, in order; the axes not iterated sit at the reference."""
        for combo in itertools.product(*(self.values[a] for a in self.iterated)):
            chosen = dict(zip(self.iterated, combo))
            yield {**self.ref, **{a: v for a, v in chosen.items() if a != "metric"}}, chosen.get("metric")


def _columns(spec: TableSpec, lay: _Layout) -> list[Column]:
    cols = []
    for axis in lay.shown:
        if axis == "metric":
            cols.append(text_column("metric", "Metric"))
        elif axis in NUMERIC:
            cols.append(Column(axis, label(axis), metrics.get(AXIS_COLUMN[axis]).unit))
        else:
            cols.append(text_column(axis, label(axis)))
    own = {"settings": text_column("settings", "Settings"), "status": text_column("status", "Status", wrap=0.2)}
    own["runs"] = text_column("runs", "Runs (stop reason)", wrap=0.14)
    cols += [own.get(t) or text_column(t, label(t)) for t in spec.text]
    if lay.metric_rows:
        first = lay.metrics[0]
        unit, better = (Q.unit(first), first.better) if lay.one_unit else (None, None)
        return cols + [Column(lay.key(first, v), f"{v} tok", unit, better) for v in lay.pivots]
    # The change along the pivot follows a metric's pivot columns; else each pivot value's figures sit together.
    along = lay.anchor == "pivot"
    by_metric = [(m, v) for m in lay.metrics for v in lay.pivots]
    for m, v in by_metric if along else [(m, v) for v in lay.pivots or [None] for m in lay.metrics]:
        at = "" if v is None else f" at {v}"
        cols.append(metric_column(m, lay.key(m, v), m.header_label + at))
        if m.name in spec.change and (not along or v == lay.pivots[-1]):
            at = "" if along else at
            cols.append(Column(lay.change_key(m, v), f"Δ {m.header_label}{at}", f"% vs {lay.anchor_value}"))
    return cols


def _settings(data: ReportData, cell: dict, r: dict | None) -> Cell:
    """A decoding mode's sampling settings, from the config (or the row)."""
    mode = data.decoding_mode(cell["decoding"])
    src = (mode.model_dump() if mode else None) or r or {}
    if not src:
        return text_cell(None)
    if not src.get("do_sample"):
        return text_cell("greedy (argmax)")
    names = (("temperature", "T"), ("top_p", "top-p"), ("top_k", "top-k"))
    parts = [f"{short} {num(src.get(key)):g}" for key, short in names if num(src.get(key)) is not None]
    return text_cell("sampling, " + ", ".join(parts) if parts else "sampling")


def _text(name: str, data: ReportData, cell: dict, r: dict | None) -> Cell:
    """A text column's cell: the settings, the status, the runs, or a row field."""
    if name == "settings":
        return _settings(data, cell, r)
    own = {"status": status_cell, "runs": runs_cell}
    value = (r or {}).get(name)
    return own[name](r) if name in own else text_cell(fmt_int(value) if isinstance(value, float) else value)


def _change(lay: _Layout, data: ReportData, m, cell: dict, r: dict | None) -> Cell:
    """(figure / the anchor's figure − 1) × 100; the anchor's own row says so instead."""
    axis = lay.anchor_axis
    anchor = lay.same_card(cell["model"]) if lay.anchor == "entry" else lay.anchor_value
    if lay.anchor != "pivot" and cell[axis] == anchor:  # the anchor's own row (a dash where it has no data)
        said = "baseline" if lay.anchor == "model" else "reference"
        return Cell(said, kind="baseline") if Q.figure(m, r) is not None else Cell(DASH, kind="missing")
    compared = data.row({**cell, axis: lay.pivots[-1]}) if lay.anchor == "pivot" else r
    base = data.row({**cell, axis: anchor})
    text, p, note = gate.change(gate.estimate(compared, m.name), gate.estimate(base, m.name), m.name)
    kind = "missing" if p is None else "num" if not text.startswith("n.r.") else "text"
    return Cell(text, value=p if kind == "num" else None, raw=p, kind=kind, note=note)


def _with_ratio(c: Cell, m, r: dict, base_r: dict | None, base: str) -> Cell:
    """'12.3 (1.05×)': a figure and its ratio to the baseline model's at the same cell."""
    if c.value is None:
        return c
    rt = num(r.get(metrics.ratio_column(m.name)))
    rt = ratio(Q.figure(m, r), Q.figure(m, base_r)) if rt is None else rt
    c.text = f"{c.text} ({fmt_ratio(rt)})" if rt is not None else c.text
    said = f"ratio to {base}: {fmt_num(rt, 4)}" if rt is not None else f"no {base} figure to compare"
    c.note = f"{c.note}; {said}" if c.note else said
    return c


def _grid(spec: TableSpec, data: ReportData, st: Study, tid: str) -> Table:
    lay = _Layout(spec, data, st)
    if spec.pivot_ends and len(lay.pivots) < 2:
        return skipped_table(tid, spec.title, f"study {st.name} has one {spec.pivot} only", st.name)
    if "batch" in lay.iterated and len(batches := data.measured(st, "batch")) < 2:  # nothing scales: batch 1 is above
        return skipped_table(tid, spec.title, captions.text("notes", "one_batch", batch=batches[0]), st.name)
    base = baseline_of(data, st)
    t = Table(tid, spec.title, _caption(spec, lay, st, base), _columns(spec, lay), study=st.name)
    used, seen = [], set()
    for cell, metric in lay.cells():
        eff = data.effective(cell)
        key = {a: v for a, v in eff.items() if a != spec.pivot} | ({"metric": metric.name} if metric else {})
        if tuple(key.items()) in seen:  # two dtypes of the study that are one dtype for this model
            continue
        seen.add(tuple(key.items()))
        r = data.row(cell)
        # the axes: counts (context, gen, batch) as numbers, the rest as text
        cells = {
            a: Cell(str(eff[a]), value=eff[a], raw=eff[a]) if a in NUMERIC else text_cell(eff.get(a)) for a in lay.shown
        }
        if "metric" in lay.shown:
            unit = "" if lay.one_unit or not Q.unit(metric) else f" ({Q.unit(metric)})"
            cells["metric"] = text_cell(metric.header_label + unit)
        for name in spec.text:
            cells[name] = _text(name, data, cell, r)
        failure_shown = "status" in spec.text
        for m in [metric] if metric else lay.metrics:
            for v in lay.pivots or [None]:
                rv = data.row({**cell, spec.pivot: v}) if v is not None else r
                used.append(rv)
                c = metric_cell(rv, m, failed_text=not failure_shown or v is not None)
                failure_shown = failure_shown or (v is None and is_failed(rv))
                if spec.ratios and m.baseline_ratio and rv is not None:
                    c = _with_ratio(c, m, rv, data.row({**cell, "model": base}), base)
                cells[lay.key(m, v)] = c
                if m.name in spec.change:
                    at = {**cell, spec.pivot: v} if v is not None else cell
                    cells[lay.change_key(m, v)] = _change(lay, data, m, at, rv)
        t.rows.append(Row(cells, key=key, status=row_status(r) if not lay.pivots else "ok"))
    if (absent := [row for row in t.rows if row.status == "missing"]) and len(absent) < len(t.rows):
        t.rows = [row for row in t.rows if row.status != "missing"]  # cells not in the data: named once, below
        said = "; ".join(", ".join(str(row.key[a]) for a in lay.shown if a in row.key) for row in absent)
        t.notes.append(captions.text("notes", "rows_missing", rows=said))
    needs = set(spec.needs or spec.metrics)
    keys = [lay.key(m, v) for m in lay.metrics for v in lay.pivots or [None] if lay.metric_rows or m.name in needs]
    return finish(t, keys, data.reason_missing(used, spec.missing))


def _caption(spec: TableSpec, lay: _Layout, st: Study, base: str | None) -> str:
    first, ends = lay.metrics[0], {"lo": lay.pivots[0], "hi": lay.pivots[-1]} if lay.pivots else {}
    direction = captions.text("notes", str(first.better)) if first.better else ""
    fields = {"study": st.name, "fixed": cell_label(lay.fixed), "anchor": lay.anchor_value, "baseline": base}
    fields |= {"unit": Q.unit(first), "direction": direction, "directions": Q.directions(spec.metrics)}
    return captions.text("tables", spec.id, **fields, **ends, **lay.ref)


def _gap(spec: TableSpec, data: ReportData, st: Study, tid: str) -> Table:
    """Each model against each: the difference A − B and how far A is below B, in % of B."""
    lay = _Layout(spec, data, st)
    m = lay.metrics[0]
    rows = [data.row({**lay.ref, "model": model}) for model in st.models]
    values = {model: Q.figure(m, r) for model, r in zip(st.models, rows)}
    have = [model for model in st.models if values[model] is not None]
    if len(have) < 2:
        no_model = f"needs {m.header_label}: {data.reason_missing(rows, spec.missing)}"
        one_model = f"fewer than two models have a {m.header_label} figure: no gap to compute"
        return skipped_table(tid, spec.title, one_model if have else no_model, st.name)
    unit = Q.unit(m)
    cols = [text_column("model", label("model"))] + [Column(f"vs_{b}", f"vs {b}", f"{unit}; % of B") for b in have]
    t = Table(tid, spec.title, _caption(spec, lay, st, None), cols, study=st.name)
    for a in have:
        cells = {"model": text_cell(a)}
        for b in have:
            if a == b:
                cells[f"vs_{b}"] = Cell(DASH, kind="text", note="same model")
                continue
            gap, below = values[a] - values[b], (values[b] - values[a]) / values[b] * 100.0 if values[b] else None
            pct = fmt_pct(None if below is None else abs(below), signed=False)
            text = f"{'+' if gap >= 0 else ''}{fmt_num(gap, 3)} {unit}, {pct} {'below' if gap < 0 else 'above'}"
            cells[f"vs_{b}"] = Cell(text, value=gap, raw={"gap": gap, "pct_below": below})
        t.rows.append(Row(cells, key={"model": a}))
    return t
