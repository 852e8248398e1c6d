"""The table model: for every cell, the text the report prints *and* the number it came from.

Both templates (HTML, LaTeX) print the same model, and tests check text against number. A missing
figure is an em dash with a note saying why; a failed cell says "failed" and its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploybench.analytic import boundness
from deploybench.enums import ValueType
from deploybench.report import captions, pacing
from deploybench.report import quantities as Q
from deploybench.report.data import is_failed, is_invalid, reasons
from deploybench.report.fmt import DASH, fmt_int, fmt_num, num, short, to_int
from deploybench.results.metrics import Metric

# A compile time some of whose graphs came from the machine's Inductor cache (compile_cache_hits): not a cold start's.
WARM = " (warm)"


@dataclass
class Cell:
    text: str
    value: float | None = None  # the number shown, in the column's unit
    raw: Any = None  # the frame's value it came from (bytes, not GB)
    kind: str = "num"  # num | text | failed | missing | invalid | baseline
    note: str | None = None  # why a figure is missing, the full error, ...
    href: str | None = None
    host: str | None = None  # a host-paced figure: the host it measures (marked ‡, footnoted)
    interval: tuple[float, float] | None = None  # the median's 95% interval (its text after the first space)
    runs: tuple[float, float, int] | None = None  # where no interval exists: the lowest, highest figure over n runs


@dataclass
class Column:
    key: str
    label: str
    unit: str | None = None
    better: str | None = None  # "higher" | "lower" | None
    align: str = "r"  # r | l
    wrap: bool = False  # long text: wrap in LaTeX (p column)
    width: float | None = None  # LaTeX p-column width as a fraction of the line (wrap columns)

    @property
    def header(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.better or "", "")


def text_column(key: str, label: str, wrap: float | None = None) -> Column:
    """A left-aligned text column; `wrap` is its LaTeX width as a fraction of the line."""
    return Column(key, label, align="l", wrap=wrap is not None, width=wrap)


def metric_column(m: Metric, key: str | None = None, label: str | None = None) -> Column:
    align = "l" if m.type is ValueType.STR else "r"
    col = Column(key or m.name, label or m.header_label, Q.unit(m), m.better, align)
    col.wrap, col.width = (True, 0.13) if m.name == "bound_by" else (False, None)  # the verdict with its evidence
    return col


@dataclass
class Row:
    cells: dict[str, Cell]
    key: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | failed | invalid | missing


@dataclass
class Table:
    id: str
    title: str
    caption: str
    columns: list[Column] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the table has no rows
    study: str | None = None
    kind: str = "table"
    long: bool = False  # many rows: LaTeX longtable
    lead: str | None = None  # a line printed above the table (the first screen's machine and code)

    def cell(self, column: str, **key) -> Cell:
        """The cell of the first row whose key matches (for tests and findings)."""
        for row in self.rows:
            if all(row.key.get(k) == v for k, v in key.items()):
                return row.cells[column]
        raise KeyError(f"{self.id}: no row with {key}")


def skipped_table(tid: str, title: str, reason: str, study: str | None = None) -> Table:
    return Table(id=tid, title=title, caption="", skipped=reason, study=study)


# cells --------------------------------------------------------------------------------------


def metric_cell(r: dict | None, m: Metric, failed_text: bool = False) -> Cell:
    if r is None:
        return Cell(DASH, kind="missing", note="no row in the data for this cell")
    if is_failed(r):
        # a number's column stays narrow: the kind here, the full error in the tooltip and the Failures table
        text = f"failed: {r.get('failure_kind') or 'error'}" if failed_text else "failed"
        return Cell(text, kind="failed", note=r.get("error") or r.get("failure_kind"))
    v, missing = Q.value(m, r), f"{m.header_label} not measured for this cell"
    if m.name == "bound_by" and r.get("gpu_busy_fraction") is not None:  # the verdict with its evidence
        return Cell(pacing.verdict_text(r), raw=r.get(m.name), kind="text", note=captions.text("notes", "verdict"))
    if m.type is ValueType.STR:
        return text_cell(r.get(m.name), note=missing)
    if v is None:
        return Cell(DASH, kind="missing", note=missing)
    source = r.get(f"{m.name}_source")  # e.g. active_params_source: counted or a config override
    c = Cell(Q.text(m, v), value=v, raw=Q.raw(m, r), note=f"source: {source}" if source else None)
    c.interval = Q.interval(m, r)
    if c.interval is not None:  # the median and its 95% interval: "41.00 [40.60, 41.30]"
        c.text += " [{},\u00a0{}]".format(*_apart(m, c.interval))
    elif m.name in Q.INTERVAL_OF and r.get("ci_method"):  # no interval: the range of the runs instead
        c.runs = Q.run_range(m, r)
        c.text += " runs {}–{}".format(*_apart(m, c.runs[:2])) if c.runs else f" [{DASH}]"
        said = "the lowest and highest over the runs" if c.runs else "the runs are not in the row"
        c.note = "; ".join(filter(None, [c.note, f"no 95% interval ({Q.no_interval(m, r)}): {said}"]))
    if m.name == "compile_s" and (hits := to_int(r.get("compile_cache_hits"))):  # not a cold start's
        said = captions.text("notes", "warm_cell", hits=hits, misses=fmt_int(r.get("compile_cache_misses")))
        c.text, c.note = c.text + WARM, "; ".join(filter(None, [c.note, said]))
    if is_invalid(r):
        c.text, c.kind, c.note = c.text + " †", "invalid", reasons(r)
    if m.name in pacing.PACED and pacing.host_paced(r):
        c.text, c.host = c.text + " ‡", Q.host_words([r])
        c.note = "; ".join(
            filter(None, [c.note, captions.text("notes", "host_cell", runs=pacing.runs_words(r), host=c.host)])
        )
    return c


def _apart(m: Metric, ends) -> tuple[str, str]:
    """Two ends printed with enough digits to differ (up to three more than the metric's own)."""
    for extra in range(4):
        lo, hi = (fmt_num(v, m.sig + extra) if extra else Q.text(m, v) for v in ends)
        if lo != hi:
            break
    return lo, hi


def text_cell(text, note: str | None = None, href: str | None = None) -> Cell:
    if text is None or (isinstance(text, str) and not text.strip()):
        return Cell(DASH, kind="missing", note=note or "not given")
    return Cell(str(text), raw=text, kind="text", note=note, href=href)


def runs_cell(r: dict | None) -> Cell:
    """'TTFT 28 (ci_target), decode 7 (time_cap)': the runs each phase measured and why it stopped."""
    if r is None or is_failed(r):
        return status_cell(r)
    phases = [(w, p) for w, p in (("TTFT", "ttft"), ("decode", "decode")) if num(r.get(f"{p}_runs")) is not None]
    said = [f"{w} {fmt_int(r[f'{p}_runs'])} ({r.get(f'{p}_stop_reason') or DASH})" for w, p in phases]
    if said:
        return text_cell(", ".join(said), note=captions.text("notes", "runs", n_runs=fmt_int(r.get("n_runs"))))
    return text_cell(fmt_int(r.get("n_runs")) if num(r.get("n_runs")) is not None else None, note="n_runs only")


def status_cell(r: dict | None) -> Cell:
    if r is None:
        return Cell("not in the data", kind="missing", note="the cell has no row: not run yet?")
    if is_failed(r):
        err = f" ({short(r['error'], 70)})" if r.get("error") else ""
        return Cell(f"failed: {r.get('failure_kind') or 'error'}{err}", kind="failed", note=r.get("error"))
    if is_invalid(r):
        return Cell(f"invalid: {short(reasons(r), 70)}", kind="invalid", note=reasons(r))
    return Cell("ok", kind="text")


def row_status(r: dict | None) -> str:
    return "missing" if r is None else "failed" if is_failed(r) else "invalid" if is_invalid(r) else "ok"


# finishing ----------------------------------------------------------------------------------


def _blank(cells: list[Cell]) -> bool:
    """Nothing measured: every cell missing or failed, and at least one missing."""
    kinds = {c.kind for c in cells}
    return kinds <= {"missing", "failed"} and "missing" in kinds


def _metric_label(row: Row) -> str:
    """The metric a row shows: its metric cell, or (one metric, no metric column) its key."""
    return row.cells["metric"].text if "metric" in row.cells else str(row.key["metric"])


def finish(table: Table, value_keys: list[str], why_missing: str) -> Table:
    """Mark a table skipped when none of its figures exist, drop all-missing columns, add footnotes."""
    if not table.rows:
        table.skipped = table.skipped or "no cells of this study are in the data"
        return table
    cells = [row.cells[k] for row in table.rows for k in value_keys if k in row.cells]
    if not any(c.value is not None for c in cells):
        table.skipped = why_missing
        return table
    # A figure family nobody measured (device memory, energy or boundness on a CPU run) would be a
    # column of dashes, or rows of dashes where metrics are rows: leave it out and say so.
    by_metric: dict[str, list[Cell]] = {}
    for row in (row for row in table.rows if "metric" in row.key):
        by_metric.setdefault(_metric_label(row), []).extend(row.cells[k] for k in value_keys if k in row.cells)
    gone = [label for label, cells in by_metric.items() if _blank(cells)]
    table.rows = [row for row in table.rows if "metric" not in row.key or _metric_label(row) not in gone]
    empty = [c for c in table.columns if _blank([row.cells[c.key] for row in table.rows if c.key in row.cells])]
    empty = empty if len(empty) < len(table.columns) else []
    table.columns = [c for c in table.columns if c not in empty]
    if gone + empty:
        left_out = ", ".join(gone + [c.header for c in empty])
        table.notes.append(captions.text("notes", "left_out", columns=left_out))
    shown = [row.cells[c.key] for row in table.rows for c in table.columns if c.key in row.cells]
    kinds = {c.kind for c in shown}
    table.notes += [captions.text("notes", kind) for kind in ("invalid", "failed", "missing") if kind in kinds]
    if hosts := sorted({c.host.split(",")[0] for c in shown if c.host}):
        below = f"{boundness.HOST_BELOW:.0%}"
        table.notes.append(captions.text("notes", "host", below=below, hosts="; ".join(hosts)))
    if any(c.runs for c in shown):
        table.notes.append(captions.text("notes", "runs_range"))
    if any(WARM in c.text for c in shown):
        table.notes.append(captions.text("notes", "warm"))
    if any(c.text.startswith("n.r.") for c in shown):
        table.notes.append(captions.text("notes", "not_resolved"))
    return table
