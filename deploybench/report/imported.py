"""Imported rows (e.g. the study's released CSVs) beside ours, and the TPOT-artifact check on them."""

from __future__ import annotations

from collections import Counter

from deploybench import tpot
from deploybench.report import captions
from deploybench.report import quantities as Q
from deploybench.report.data import ReportData, as_list, cell_of, is_failed
from deploybench.report.fmt import fmt_num, fmt_ratio, num, ratio, short
from deploybench.report.model import (
    Cell,
    Column,
    Row,
    Table,
    metric_cell,
    metric_column,
    skipped_table,
    text_cell,
    text_column,
)

# The metrics compared with the imported rows, by the suffix of their table's id (stable anchors).
COMPARED = {
    "ttft-ms": "ttft_ms",
    "e2e-tps": "e2e_tps",
    "decode-tps": "decode_tps",
    "peak-gb": "peak_allocated_bytes",
    "weights-gb": "weights_bytes",
    "j-per-1k-tokens": "j_per_1k_tokens",
}
MATCHED_ON = ("model", "context", "gen", "decoding", "dtype")


def match_ours(data: ReportData, imp: dict) -> dict | None:
    """Our row for an imported cell: same model, context, gen, decoding, dtype; prefer the same backend."""
    want = cell_of(imp)
    cands = [r for r in data.ours if all(cell_of(r)[a] == want[a] for a in MATCHED_ON)]
    backend = imp.get("backend") or data.ref.get("backend", "eager")
    cands.sort(key=lambda r: (r.get("backend") != backend, is_failed(r)))
    return next(iter(cands), None)


def _cell_text(r: dict) -> Cell:
    cell = cell_of(r)
    return text_cell(f"{cell['context'] if cell['context'] is not None else 'unknown'}/{cell['gen']}")


def _comparison(suffix: str, mk: str, pairs: list[tuple[dict, dict]]) -> Table:
    mt = Q.get(mk)
    cols = [
        text_column("model", "Model"),
        Column("cell", "Context/gen", "tokens", align="l"),
        metric_column(mt, "ours", "Ours"),
        metric_column(mt, "theirs", "Study"),
        Column("ratio", "Ours ÷ study", "×"),
    ]
    caption = captions.text("tables", "table-imported", metric=mt.header_label, unit=Q.unit(mt))
    t = Table(f"table-imported-{suffix}", f"Beside the study: {mt.header_label}", caption, cols)
    t.compact = True
    for imp, ours in pairs:
        a, b = Q.value(mt, ours), Q.value(mt, imp)
        if a is None or b is None:
            continue
        rt = ratio(a, b)
        cells = {"model": text_cell(imp.get("model")), "cell": _cell_text(imp), "ours": metric_cell(ours, mt)}
        cells |= {"theirs": Cell(Q.text(mt, b), value=b, raw=Q.raw(mt, imp))}
        cells |= {"ratio": Cell(fmt_ratio(rt), value=rt, kind="num" if rt is not None else "missing")}
        key = {"model": imp.get("model"), "context": cell_of(imp)["context"], "gen": cell_of(imp)["gen"], "metric": mk}
        t.rows.append(Row(cells, key=key))
    return t


def imported_comparison(data: ReportData) -> list[Table]:
    """One small table per metric: our figure and the study's at each matching cell, and the ratio."""
    tid, title = "table-imported", "Our figures beside the study's imported figures"
    if not data.imported:
        why = "the data has no imported rows (analysis.external_tables is empty, or its import produced no rows)"
        return [skipped_table(tid, title, why)]
    order = sorted(
        data.imported, key=lambda r: (str(r.get("model")), *(cell_of(r)[a] or 0 for a in ("context", "gen")))
    )
    pairs = [(imp, match_ours(data, imp)) for imp in order]
    pairs = [(imp, ours) for imp, ours in pairs if ours is not None and not is_failed(ours) and not is_failed(imp)]
    out = [t for t in (_comparison(suffix, mk, pairs) for suffix, mk in COMPARED.items()) if t.rows]
    if not out:
        theirs = ", ".join(sorted({str(r.get("model")) for r in data.imported}))
        why = (
            f"no cell of ours matches an imported cell (imported models: {theirs}; ours: "
            f"{', '.join(data.models) or 'none'}); match them through model_map in analysis.external_tables"
        )
        return [skipped_table(tid, title, why)]
    sources = ", ".join(sorted({str(r.get("source")) for r in data.imported}))
    out[0].notes.append(captions.text("notes", "imported_match", sources=sources))
    return out


def imported_tpot(data: ReportData) -> list[Table]:
    tid, title = "table-tpot-check", "TPOT-artifact check of the imported figures"
    rows = [r for r in data.imported if r.get("tpot_check") or r.get("tpot_artifact") is not None]
    if not data.imported:
        return [skipped_table(tid, title, "the data has no imported rows")]
    if not rows:
        return [skipped_table(tid, title, "the imported rows carry no TPOT check (tpot_check column absent)")]
    e2e = Q.get("e2e_tps")
    cols = [
        text_column("model", "Model"),
        Column("cell", "Context/gen", "tokens", align="l"),
        text_column("decoding", "Decoding"),
        text_column("dtype", "dtype"),
        metric_column(e2e, "raw", f"{e2e.header_label} as imported"),
        metric_column(e2e, "kept", f"{e2e.header_label} kept"),
        Column("inv_ttft", "1000 / TTFT", "1/s"),
        text_column("flag", "Artifact"),
        text_column("check", "Check", wrap=0.2),
    ]
    caption = captions.text("tables", tid, tolerance=f"{tpot.TOLERANCE:.0%}")
    t = Table(tid, title, caption, cols, long=True)
    order = ("model", "context", "decoding", "dtype")
    for r in sorted(rows, key=lambda r: (str(r.get("model")), cell_of(r)["context"] or 0, str(r.get("decoding")))):
        raw = num(r.get("e2e_tps_raw"))
        raw = num(r.get("e2e_tps")) if raw is None else raw
        ttft = num(r.get("ttft_ms"))
        inv = 1000.0 / ttft if ttft else None
        cells = {k: text_cell(r.get(k)) for k in ("model", "decoding", "dtype")} | {"cell": _cell_text(r)}
        cells["raw"] = Cell(fmt_num(raw), value=raw, raw=raw, kind="num" if raw is not None else "missing")
        cells["kept"] = metric_cell(r, e2e, failed_text=True)
        cells["inv_ttft"] = Cell(fmt_num(inv), value=inv, kind="num" if inv is not None else "missing")
        cells["flag"] = Cell("yes" if r.get("tpot_artifact") is True else "no", kind="text", raw=r.get("tpot_artifact"))
        cells["check"] = text_cell(short(r.get("tpot_check"), 200) if r.get("tpot_check") else None)
        t.rows.append(Row(cells, key={a: cell_of(r)[a] for a in order}))
    flagged = sum(r.get("tpot_artifact") is True for r in rows)
    t.notes.append(captions.text("notes", "tpot_flagged", flagged=flagged, rows=len(rows)))
    return [t]


def imported_notes(data: ReportData, limit: int = 12) -> list[str]:
    """Caveats the importer attached to more than one imported row (the general ones), most frequent first."""
    counts = Counter(str(n) for r in data.imported for n in as_list(r.get("notes")))
    common = sorted((n for n, c in counts.items() if c > 1), key=lambda n: (-counts[n], n))
    return [f"{n} ({counts[n]} rows)" for n in common[:limit]]
