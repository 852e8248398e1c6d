"""Where a decode step's kernel time goes: at the reference cell, per model entry and backend, the kernels that take
most of the step (the profiled pass's step_kernels_json), with their launches and time per step and their share of
the step's kernel time, then the rest in one line. One table per machine, as the first screen's: the kernels are
that machine's cuBLAS and Triton choices (two H100s ran Qwen3-32B's compiled step with different kernels).
"""

from __future__ import annotations

from deploybench.analytic import step_kernels
from deploybench.report import captions, trust
from deploybench.report.data import ReportData, cell_label, cell_of, is_failed, machine
from deploybench.report.fmt import fmt_num, fmt_pct
from deploybench.report.model import Cell, Column, Row, Table, skipped_table, text_cell, text_column

TID, TITLE = "table-step-kernels", "Where a decode step's kernel time goes"
SHOWN = 3  # kernels per row group, most time first; the rest summed in one line
SHOWN_CHARS = 60  # of a kernel's name in the table (the cell's note holds the row's NAME_CHARS)
LONG_ROWS = 40  # more rows than a page holds: a LaTeX longtable


def tables(data: ReportData) -> list[Table]:
    held = trust.held_axes(data)
    rows = [
        r
        for r in data.batch1
        if not is_failed(r) and r.get("step_kernels_json") and all(cell_of(r)[a] == v for a, v in held.items() if v)
    ]
    if not rows:
        return [skipped_table(TID, TITLE, captions.text("skips", TID))]
    by: dict[str, list] = {}
    for r in sorted(rows, key=trust.row_order(data)):
        by.setdefault(machine(r), []).append(r)
    out = []
    for i, (name, group) in enumerate(sorted(by.items(), key=lambda kv: -len(kv[1]))):
        title = f"{TITLE} on {group[0].get('device_name') or 'this machine'} ({name})"
        caption = captions.text("tables", TID, fixed=cell_label({a: v for a, v in held.items() if v}), shown=SHOWN)
        t = Table(TID if i == 0 else f"{TID}-{i + 1}", title, caption, _columns())
        for r in group:
            t.rows += _rows(r)
        t.long = len(t.rows) > LONG_ROWS
        out.append(t)
    return out


def _columns() -> list[Column]:
    texts = [text_column("model", "Model"), text_column("backend", "Backend"), text_column("kernel", "Kernel")]
    texts.append(text_column("kind", "Kind"))
    numbers = [Column("calls", "launches", "per step"), Column("us", "time", "µs per step")]
    return texts + numbers + [Column("share", "share", "% of the step's kernel time")]


def _rows(r: dict) -> list[Row]:
    kernels = step_kernels.from_json(r["step_kernels_json"])
    total = sum(k.us for k in kernels)
    rest = kernels[SHOWN:]
    lines = [(k.name, step_kernels.kind_of(k.name), k.calls, k.us) for k in kernels[:SHOWN]]
    if rest:
        said = captions.text("notes", "other_kernels", n=len(rest))
        lines.append((said, "", sum(k.calls for k in rest), sum(k.us for k in rest)))
    out = []
    for rank, (name, kind, calls, us) in enumerate(lines):
        text = name.removeprefix("void ")
        shown = text if len(text) <= SHOWN_CHARS or not kind else text[: SHOWN_CHARS - 1] + "…"
        first = rank == 0  # the model and backend once, over their kernels
        cells = {
            "model": text_cell(r["model"]) if first else Cell("", kind="text"),
            "backend": text_cell(r["backend"]) if first else Cell("", kind="text"),
            "kernel": Cell(shown, raw=name, kind="text", note=name if shown != text else None),
            "kind": text_cell(kind) if kind else Cell("", kind="text"),
            "calls": Cell(fmt_num(calls), value=calls, raw=calls),
            "us": Cell(fmt_num(us), value=us, raw=us),
            "share": Cell(fmt_pct(100 * us / total, signed=False), value=100 * us / total, raw=us / total)
            if total
            else Cell("", kind="missing"),
        }
        out.append(Row(cells, key={"model": r["model"], "backend": r["backend"], "rank": rank}))
    return out
