"""The tables that are not studies: governance, failures, environment, methodology, definitions.

Each is a list of facts read from the rows and the config (one row per field), or from the metric
catalogue (definitions). Captions are `tables.<id>` in captions.yaml.
"""

from __future__ import annotations

from collections import Counter

from deploybench.analytic import boundness
from deploybench.enums import StudyKind
from deploybench.plan.naming import cell_id
from deploybench.report import captions, pacing, serving
from deploybench.report import quantities as Q
from deploybench.report.data import OURS, ReportData, as_list, cell_label, cell_of, is_failed, is_invalid, reasons
from deploybench.report.fmt import DASH, fmt_int, fmt_num, join, num, short, span, to_int
from deploybench.report.model import Cell, Row, Table, metric_cell, row_status, skipped_table, text_cell, text_column
from deploybench.results import metrics

SERVING = str(StudyKind.SERVING_LOAD)  # its cells are load points: serving.lines says which have no row
# The governance rows (config metadata keys) and environment rows (row columns): captions.yaml's `governance`
# and `environment`. What else a machine's rows say about it: column -> (label, how each value prints, or None:
# the range of its values in the catalogue's display unit).
_RANGED = ("mem_bandwidth_bytes_per_s", "python_loop_ns", "power_limit_w")
_DIRTY = "+dirty (uncommitted changes: this commit does not identify the code; the sources' sha256 below does)"
HOST_FIELDS = {
    **{name: (Q.get(name).header_label, None) for name in _RANGED},
    "cpu_model": (Q.get("cpu_model").header_label, str),
    "cpu_count": (Q.get("cpu_count").header_label, fmt_int),
    "code_revision": ("Code revision", lambda rev: rev[:12] + (_DIRTY if rev.endswith("+dirty") else "")),
    "source_sha256": ("Library source sha256", lambda digest: digest[:12]),
}


def field_table(tid: str, title: str, columns: dict[str, str], facts: list, width: float, **kw) -> Table:
    """One row per fact (key, label, {column: Cell}), one column per entry of `columns`."""
    cols = [text_column("field", "Field")] + [text_column(k, v, wrap=width) for k, v in columns.items()]
    t = Table(tid, title, captions.text("tables", tid), cols, **kw)
    for key, label, cells in facts:
        t.rows.append(Row({"field": text_cell(label)} | cells, key={"field": key}))
    return t


def governance(data: ReportData) -> list[Table]:
    """One column per model, one row per metadata field (reads better than 12 columns)."""
    tid, title = "table-governance", "Governance and licensing"
    models = data.configured_models or data.models
    if not models:
        return [skipped_table(tid, title, "the config names no models")]
    first = {m: next((r for r in data.ours if r.get("model") == m and not is_failed(r)), None) for m in models}

    def meta(m, key):
        val = data.metadata(m).get(key)
        val = ", ".join(map(str, val)) if isinstance(val, (list, tuple)) else val
        link = key == "model_card" and isinstance(val, str) and val.startswith(("http://", "https://"))
        return text_cell(val, note="not given in the config's metadata", href=val if link else None)

    weights = {m: text_cell((first[m] or {}).get("weights_source") or data.weights_source(m)) for m in models}
    facts = [("weights_source", "Weights (random or pretrained)", weights)]
    facts += [(k, label, {m: meta(m, k) for m in models}) for k, label in captions.entries("governance").items()]
    for name in ("total_params", "active_params"):
        mt = Q.get(name)
        label = f"{mt.header_label.capitalize()} ({Q.unit(mt)})"
        facts.append((name, label, {m: metric_cell(first[m], mt) for m in models}))
    t = field_table(tid, title, {m: m for m in models}, facts, min(0.26, 0.78 / len(models)))
    if not any(data.metadata(m) for m in models):
        t.notes.append(captions.text("notes", "governance_empty"))
    t.notes.append(captions.text("notes", "governance_dash"))
    return [t]


def _failure_row(r: dict) -> Row:
    failed = is_failed(r)
    cells = {
        "cell_id": text_cell(r.get("cell_id") or cell_id(**cell_of(r))),
        "status": Cell("failed", kind="failed") if failed else Cell("invalid", kind="invalid"),
        "kind": text_cell(r.get("failure_kind") or "error" if failed else "validity check"),
        "reason": text_cell(short(r.get("error") or "no error text recorded" if failed else reasons(r), 300)),
    }
    return Row(cells, key={"cell_id": r.get("cell_id")}, status="failed" if failed else "invalid")


def failures(data: ReportData) -> list[Table]:
    tid = "table-failures"
    widths = (("cell_id", "Cell", 0.30), ("status", "Status", None), ("kind", "Kind", None), ("reason", "Reason", 0.42))
    cols = [text_column(key, label, wrap=width) for key, label, width in widths]
    t = Table(tid, "Failed and invalid cells", captions.text("tables", tid), cols, long=True)
    ours = sorted(data.ours, key=lambda r: str(r.get("cell_id")))
    t.rows = [_failure_row(r) for r in ours if is_failed(r) or is_invalid(r)]
    absent = [cell for st in data.studies() if st.kind != SERVING for cell in st.cells() if data.row(cell) is None]
    ids = [cell_id(**data.effective(cell)) for cell in absent]
    ids += [ln.cell_id(v) for ln in serving.lines(data) for v, r in ln.points if r is None]  # a load point each
    for cid in dict.fromkeys(ids):
        cells = {"cell_id": text_cell(cid), "status": Cell("missing", kind="missing")}
        cells |= {"kind": text_cell("no row"), "reason": text_cell(captions.text("notes", "no_row"))}
        t.rows.append(Row(cells, key={"cell_id": cid}, status="missing"))
    if not t.rows:
        t.skipped = captions.text("notes", "no_failures", n=len(data.ours))
    return [t]


def machines(data: ReportData) -> list[dict]:
    """Distinct machines (environment tuples) in the data, ours first, with the rows on each."""
    groups: dict[tuple, dict] = {}
    keys = (*captions.entries("environment"), "device_uuid")
    for r in data.ours + data.imported:
        key = tuple(r.get(k) for k in keys)
        key = ("unknown",) + key[1:] if all(v is None for v in key) else key
        groups.setdefault(key, {"fields": dict(zip(keys, key)), "rows": []})["rows"].append(r)
    return list(groups.values())


def _date_range(values) -> str | None:
    vals = sorted(str(v) for v in values if v)
    return (vals[0] if vals[0] == vals[-1] else f"{vals[0]} to {vals[-1]}") if vals else None


def environment(data: ReportData) -> list[Table]:
    tid, title = "table-environment", "Environment of every machine in the data"
    ms = machines(data)
    if not ms:
        return [skipped_table(tid, title, "the data has no rows")]
    # Each row of the table: key -> (label, the text of a machine's cell from its group).
    fields = {k: (label, lambda g, k=k: g["fields"].get(k)) for k, label in captions.entries("environment").items()}
    fields |= {k: (label, lambda g, k=k, how=how: _fact(g["rows"], k, how)) for k, (label, how) in HOST_FIELDS.items()}
    fields |= {
        "sources": ("Source of the rows", lambda g: ", ".join(sorted({r.get("source") or OURS for r in g["rows"]}))),
        "cells": ("Rows", lambda g: str(len(g["rows"]))),
        "models": ("Models", lambda g: ", ".join(sorted({str(r.get("model")) for r in g["rows"]}))),
        "started": ("Measured (UTC)", lambda g: _date_range([r.get("started_at") for r in g["rows"]])),
    }
    facts = [(k, label, {f"m{i}": text_cell(fn(g)) for i, g in enumerate(ms)}) for k, (label, fn) in fields.items()]
    cols = {f"m{i}": f"Machine {i + 1}" for i in range(len(ms))}
    t = field_table(tid, title, cols, facts, min(0.5, 0.66 / len(ms)))
    t.notes.append(captions.text("notes", "environment_dash"))
    return [t]


def _span(rows: list[dict], col: str, unit: str, scale: float = 1.0) -> str | None:
    """'3.00 to 3.20 s': the range of a column over the rows."""
    return span([v * scale for v in (num(r.get(col)) for r in rows) if v is not None], unit)


def _ranged(rows: list[dict], col: str) -> str | None:
    """The range of a catalogue column over the rows, in its display unit."""
    m = Q.get(col)
    return _span(rows, col, Q.unit(m), m.display_scale)


def _fact(rows: list[dict], col: str, how) -> str | None:
    return _ranged(rows, col) if how is None else join(_distinct(rows, col), how)


def _distinct(rows: list[dict], col: str) -> list:
    values = (tuple(v) if isinstance(v := r.get(col), list) else v for r in rows)
    return [v for v in dict.fromkeys(values) if v is not None]


def _per_model(data: ReportData, rows: list[dict], col: str) -> str | None:
    return join(f"{m}: {v}" for m in data.models for v in _distinct([r for r in rows if r.get("model") == m], col))


def _how(ok: list[dict]) -> list[tuple[str, str, None]]:
    """How the boundness verdict, the calibrations, the prefill energy window and the idle cool-down work, with
    the figures the rows hold (thresholds and sizes from the metric catalogue, not retyped) or why there are none."""

    def measured(value: str | None, reason: str) -> str:
        why = join(_distinct(ok, reason), lambda s: short(s, 100))
        return value or "not measured" + (f" ({why})" if why else "")

    gpu, energy, busy = "boundness_null_reason", "energy_source", Q.busy_words(ok)
    temps = [_span(ok, f"idle_temp_c_{end}", "°C") for end in ("start", "end")]
    facts = {
        "host": f"{boundness.HOST_BELOW:.0%}",
        "gpu": f"{boundness.GPU_AT_LEAST:.0%}",
        "roof": f"{pacing.ROOF_AT_LEAST:.0%}",
        "tokens": join(_distinct(ok, "profile_tokens"), fmt_int) or boundness.PROFILE_TOKENS,
        "busy": measured(f"{busy}% of each decode step" if busy else None, gpu),
        "shapes": join(_distinct(ok, "gemv_shape")) or "not recorded",
        "l2": fmt_num(float(metrics.get("gemv_bandwidth_bytes_per_s").parameter("weight_copies_gib")), 2),
        "gemv": measured(_ranged(ok, "gemv_bandwidth_bytes_per_s"), gpu),
        "n": metrics.get("gemm_flops_per_s").parameter("gemm_size"),
        "gemm": measured(_ranged(ok, "gemm_flops_per_s"), gpu),
        "prefill": measured(_span(ok, "prefill_energy_window_s", "s"), energy),
        "cooldown": measured(_span(ok, "idle_cooldown_s_measured", "s"), energy),
        "temps": f", from {temps[0]} to {temps[1]}" if all(temps) else "",
    }
    return [(label, captions.text("how", label, **facts), None) for label in captions.entries("how")]


def _runs(ok: list[dict]) -> dict:
    """The runs each phase measured, over the rows, and how often each stop reason ended a phase."""
    stops = Counter(str(r[c]) for r in ok for c in ("ttft_stop_reason", "decode_stop_reason") if r.get(c))
    runs = {p: sorted(int(v) for r in ok if (v := num(r.get(f"{p}_runs"))) is not None) for p in ("ttft", "decode")}
    said = {p: f"{v[0]}{f' to {v[-1]}' if v[-1] > v[0] else ''} runs" if v else "not recorded" for p, v in runs.items()}
    return said | {"stops": join(f"{k} {n}×" for k, n in sorted(stops.items())) or "not recorded"}


def methodology(data: ReportData) -> list[Table]:
    tid, title = "table-methodology", "How the figures were measured"
    if not data.ours:
        return [skipped_table(tid, title, "the data has no rows of ours")]
    ok = [r for r in data.ours if not is_failed(r)]

    def runs(col: str) -> str | None:  # from the rows, else the config
        return join(_distinct(ok, col), fmt_int) or join(as_list(getattr(data.measurement, col, None)))

    counts = Counter(map(row_status, data.ours))
    wins, mem_null = _span(ok, "energy_window_s", "s"), join(_distinct(ok, "memory_null_reason"))
    memory = f"allocator figures not recorded: {mem_null}" if mem_null else captions.text("methodology", "memory")
    ref = data.reference()
    cells = f"{len(data.ours)} of ours ({len(ok)} ran, {counts['failed']} failed, {counts['invalid']} invalid)"
    # fmt: off
    items = [
        ("Cells", f"{cells}; {len(data.imported)} imported rows", None),
        ("Runs per phase", captions.text("methodology", "runs", n=runs("n_runs") or DASH, **_runs(ok)), None),
        ("95% interval of each median", join(_distinct(ok, "ci_method")), "no intervals in the rows"),
        ("Warm-up runs (discarded, full shape)", runs("warmup_runs"), None),
        ("Percentile method", join(_distinct(ok, "percentile_method")), None),
        ("TTFT", captions.text("methodology", "ttft"), None),
        ("Generated tokens", captions.text("methodology", "generated"), None),
        ("Prompt mode", join(_distinct(ok, "prompt_mode")), None),
        ("Weights source", _per_model(data, data.ours, "weights_source"), None),
        ("Model reference", _per_model(data, data.ours, "model_ref"), None),
        ("Attention implementation", join(_distinct(ok, "attn_implementation")), None),
        ("Experts implementation (MoE)", _per_model(data, ok, "experts_implementation"), None),
        ("KV cache", join(_distinct(ok, "cache_implementation")), None),
        ("Energy source", join(_distinct(ok, "energy_source"), lambda s: short(s, 120)), None),
        ("Energy window", captions.text("methodology", "energy_window", span=wins) if wins else None,
         "no energy window: energy not measured"),
        *_how(ok),
        ("Idle power (after cool-down, before the cell)", _span(ok, "idle_power_w", "W"), "not measured"),
        ("Memory", memory, None),
        ("Seed", join(_distinct(ok, "seed"), lambda v: str(to_int(v))), None),
        ("Harness version", join(_distinct(data.ours, "harness_version")), None),
        ("Result schema version", join(_distinct(data.ours, "schema_version")), None),
        ("Reference cell", cell_label(ref) if ref else None, "no study in the config"),
        ("Baseline model", (data.baseline or DASH) + (f" ({data.baseline_note})" if data.baseline_note else ""), None),
    ]
    # fmt: on
    cols = [text_column("item", "Item"), text_column("value", "Value", wrap=0.62)]
    t = Table(tid, title, captions.text("tables", tid), cols)
    for item, value, note in items:
        cells = {"item": text_cell(item), "value": text_cell(value, note=note or "not recorded in the rows")}
        t.rows.append(Row(cells, key={"item": item}))
    return [t]


def definitions(data: ReportData | None = None) -> list[Table]:
    """One row per defined metric family of the catalogue, with its names in other tools."""
    tid = "table-definitions"
    widths = {"name": 0.15, "unit": 0.07, "definition": 0.25, "study": 0.15, "vllm": 0.07, "mlperf": 0.07}
    labels = {"name": "Our column", "unit": "Unit", "definition": "Definition", "study": "arXiv 2508.16700"}
    labels |= {"vllm": "vLLM bench", "mlperf": "MLPerf Inference", "aiperf": "AIPerf"}
    cols = [text_column(k, v, wrap=widths.get(k, 0.12)) for k, v in labels.items()]
    t = Table(tid, "Metric definitions and their names elsewhere", captions.text("tables", tid), cols, long=True)
    for name, m in metrics.definition_rows():
        where = m.elsewhere or metrics.Elsewhere()
        direction = f" {str(m.better).capitalize()} is better." if m.better else ""
        cells = {"name": Cell(name, kind="text", raw=name), "unit": text_cell(Q.unit(m))}
        cells["definition"] = text_cell((m.family_definition or m.definition) + direction)
        cells |= {k: text_cell(getattr(where, k) or DASH) for k in ("study", "vllm", "mlperf", "aiperf")}
        t.rows.append(Row(cells, key={"name": name}))
    return [t]
