"""The imported study (e.g. arXiv 2508.16700's released CSVs): its figures beside ours, each gap split into factors.

For each figure the study printed at the reference cell: the figure as printed and the CSV it came from (with the
other CSV's value where two CSVs measured it: printed.py); ours measured the study's way (the entry
`analysis.study_way` names for the model, else the model itself: eager, bf16, greedy) and the ratio; the factors
that multiply to that ratio, each from one consistent set of numbers (datasheet facts in reference/hardware.yaml,
the study's figures from one CSV); and the cause the rows measure, or "unexplained". One row per independent
measurement in the main table (TTFT, the e2e run, peak memory, the energy window); the figures derived from the
same measurement (e2e p50 and p95, APE, tokens per joule) in the appendix, counted once.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import yaml

from deploybench.enums import Backend, ExpertsRead
from deploybench.report import captions, pacing, printed
from deploybench.report import quantities as Q
from deploybench.report.data import ReportData, as_list, cell_of, is_failed
from deploybench.report.fmt import DASH, fmt_num, fmt_ratio, join, num, ratio, short
from deploybench.report.model import Cell, Column, Row, Table, metric_cell, skipped_table, text_cell, text_column
from deploybench.results import tpot

HARDWARE = Path(__file__).resolve().parents[2] / "reference" / "hardware.yaml"
TOLERANCE = 0.15  # a factor within 15% of 1 leaves the datasheet ratio to account for the gap
BOUND_AT = pacing.ROOF_AT_LEAST  # a prefill below half its BF16 peak is not compute-bound: the peak ratio is no cause
NEAR_LIMIT = 0.8  # power drawn at 80% of the board's lower limit or more: a power cap is a candidate cause
# Each independent measurement of the study, and the figures derived from it (in the order of the tables).
MEASURED = {
    "ttft_ms": ("ttft_ms",),
    "e2e_tps": ("e2e_tps", "e2e_ms_p50", "e2e_ms_p95", "ape_e2e_tps_per_active_b"),
    "peak_allocated_bytes": ("peak_allocated_bytes",),
    "j_per_1k_tokens": ("j_per_1k_tokens", "tokens_per_j"),
}
FIGURES = [name for names in MEASURED.values() for name in names]
OF = {name: first for first, names in MEASURED.items() for name in names}  # figure -> its measurement
IMPLEMENTATIONS = {"attn_implementation": "attention", "experts_implementation": "experts"}
STUDY_WAY = {"backend": Backend.EAGER, "dtype": "bfloat16", "decoding": "greedy"}  # how the study ran its cells


@cache
def hardware() -> dict:
    return yaml.safe_load(HARDWARE.read_text(encoding="utf-8")) or {}


def _limits(sheet: dict) -> str:
    """'350–400' or '700': a datasheet's power limit."""
    return "–".join(f"{w:g}" for w in sorted(set(sheet["power_limit_w"])))


def roles(data: ReportData, model: str) -> tuple[dict, dict | None, dict | None]:
    """(the study-way cell, our row there, our compiled_loop row) for an imported model at the reference cell."""
    entry = data.study_way.get(model, model)
    cell = {**data.ref, "model": entry, **STUDY_WAY}
    return cell, data.row(cell), data.row({**cell, "model": model, "backend": Backend.COMPILED_LOOP})


def _way(data: ReportData, model: str) -> str:
    """'gpt-oss-20b by our entry gpt-oss-20b-all (attention eager, experts all_experts)'."""
    cell, r, _ = roles(data, model)
    impl = join(f"{w} {r[k]}" for k, w in IMPLEMENTATIONS.items() if r and r.get(k) not in (None, "n/a"))
    return captions.text("study", "role", model=model, entry=cell["model"], impl=impl or DASH)


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _sheets(ours: dict, theirs: dict) -> list[dict] | None:
    sheets = [hardware().get(str(r.get("device_name"))) for r in (ours, theirs)]
    return None if None in sheets else sheets


def _power(theirs: dict, sheet: dict) -> str:
    """The study's power drawn against its board's limit, where near it: a candidate cause, not a measured one."""
    watts = num(theirs.get("avg_power_w"))
    if watts is None or watts < NEAR_LIMIT * min(sheet["power_limit_w"]):
        return ""
    return "; " + captions.text("study", "power_limit", watts=fmt_num(watts, 3), limits=_limits(sheet))


def _prefill(ours: dict, theirs: dict, rt: float, ttft: float) -> tuple[str, str, str]:
    """TTFT: ours ÷ study = (study's BF16 peak ÷ ours) × (the study's fraction of its peak ÷ ours), with the FLOPs of
    our cell's prefill (context × FLOP per token) on both sides."""
    sheets, flops = _sheets(ours, theirs), num(ours.get("decode_flops_per_token"))
    context = cell_of(ours)["context"]
    if sheets is None or flops is None or not context:
        return "unexplained", DASH, captions.text("study", "no_sheet", devices=theirs.get("device_name"))
    work = flops * context
    eff = [
        work / (t / 1e3) / (s["bf16_tflops"] * 1e12)
        for t, s in ((Q.figure(Q.get("ttft_ms"), ours), sheets[0]), (ttft, sheets[1]))
    ]
    peak = sheets[1]["bf16_tflops"] / sheets[0]["bf16_tflops"]
    factors = f"BF16 peak {fmt_ratio(peak)} × fraction of it {fmt_ratio(eff[1] / eff[0])} = {fmt_ratio(rt)}"
    words = {"ours": _pct(eff[0]), "theirs": _pct(eff[1])}
    if min(eff) >= BOUND_AT and abs(eff[1] / eff[0] - 1) <= TOLERANCE:
        return "hardware", factors, captions.text("study", "compute_bound", **words)
    key = "neither_bound" if max(eff) < BOUND_AT else "less_bound"
    return "unexplained", factors, captions.text("study", key, **words) + _power(theirs, sheets[1])


def _decode(name: str, ours: dict, theirs: dict, rt: float) -> tuple[str, str, str]:
    """An e2e figure: host-paced on our side compares hosts; else the bandwidth ratio and the rest."""
    if pacing.host_paced(ours):
        return "host", DASH, captions.text("study", "host", runs=pacing.runs_words(ours))
    sheets = _sheets(ours, theirs)
    if sheets is None:
        return "unexplained", DASH, captions.text("study", "no_sheet", devices=theirs.get("device_name"))
    speed = sheets[0]["memory_bandwidth_tb_s"] / sheets[1]["memory_bandwidth_tb_s"]
    law = speed if Q.get(name).better == "higher" else 1 / speed
    law *= ratio(theirs.get("active_params"), ours.get("active_params")) or 1.0 if "active" in name else 1.0
    factors = f"bandwidth {fmt_ratio(law)} × rest {fmt_ratio(rt / law)} = {fmt_ratio(rt)}"
    kind = "hardware" if abs(rt / law - 1) <= TOLERANCE and pacing.verdict(ours)[0] == "memory_bandwidth" else ""
    return (
        kind or "unexplained",
        factors,
        captions.text("study", kind or "bandwidth", verdict=pacing.verdict_text(ours)),
    )


def _memory(ours: dict, theirs: dict, rt: float) -> tuple[str, str, str]:
    """Peak = weights + the rest (KV cache, activations, workspace): a sum, compared part by part."""
    gb = {n: [Q.value(Q.get(n), r) for r in (ours, theirs)] for n in ("weights_bytes", "peak_allocated_bytes")}
    if None in gb["weights_bytes"]:
        return "unexplained", DASH, "the study's weights are not in its row"
    (w_o, w_s), (p_o, p_s) = gb["weights_bytes"], gb["peak_allocated_bytes"]
    kv = Q.value(Q.get("kv_cache_bytes"), ours)
    rest = f"KV cache and the rest {fmt_num(p_o - w_o, 3)} vs {fmt_num(p_s - w_s, 3)} GB"
    factors = f"weights {fmt_num(w_o, 4)} vs {fmt_num(w_s, 4)} + {rest}"
    factors += f" (our KV cache: {fmt_num(kv, 3)})" if kv is not None else ""
    kind = "same" if abs(rt - 1) <= TOLERANCE else "unexplained"
    return kind, factors, captions.text("study", "gib", rest=fmt_num(abs((p_o - w_o) - (p_s - w_s)), 2))


def _energy(name: str, ours: dict, theirs: dict, rt: float) -> tuple[str, str, str]:
    """Energy per token = power ÷ speed, on both sides from one window: ours over our energy window, the study's
    from its energy CSV (its tok/s = power ÷ its energy per token, the figure its Table 1 prints)."""
    power = ratio(ours.get("avg_power_w"), theirs.get("avg_power_w"))
    mine = ratio(ours.get("energy_tokens"), ours.get("energy_window_s"))
    j1k = num(theirs.get("j_per_1k_tokens"))
    speed = ratio(mine, num(theirs.get("avg_power_w")) / (j1k / 1000) if j1k and theirs.get("avg_power_w") else None)
    if power is None or speed is None:
        return "unexplained", DASH, captions.text("study", "energy")
    per_token = name == "j_per_1k_tokens"
    factors = (
        f"power {fmt_ratio(power)} ÷ speed {fmt_ratio(speed)}"
        if per_token
        else (f"speed {fmt_ratio(speed)} ÷ power {fmt_ratio(power)}")
    )
    factors += f" = {fmt_ratio(power / speed if per_token else speed / power)}"
    if pacing.host_paced(ours):
        return "host", factors, captions.text("study", "host", runs=pacing.runs_words(ours))
    return "unexplained", factors, captions.text("study", "energy")


def explain(name: str, ours: dict, theirs: dict, rt: float, printed_value: float) -> tuple[str, str, str]:
    """(kind, factors, cause) of the gap rt = ours ÷ the study's printed figure."""
    law = OF[name]
    if law == "ttft_ms":
        kind, factors, cause = _prefill(ours, theirs, rt, printed_value)
    elif law == "peak_allocated_bytes":
        kind, factors, cause = _memory(ours, theirs, rt)
    elif law == "j_per_1k_tokens":
        kind, factors, cause = _energy(name, ours, theirs, rt)
    else:
        kind, factors, cause = _decode(name, ours, theirs, rt)
    said = [cause]
    if ours.get("experts_read_per_token") == ExpertsRead.ROUTED and law != "peak_allocated_bytes":
        kind = "path" if kind == "unexplained" else kind  # the study's transformers 4.55 computed every expert
        read = Q.text(Q.get("params_read_per_token"), Q.value(Q.get("params_read_per_token"), ours))
        said.append(captions.text("study", "routed", read=read))
    if name == "e2e_ms_p95":
        said.append(captions.text("study", "p95"))
    if name == "e2e_tps":
        if theirs.get("tpot_artifact") is True:  # the study's method moves it only where flagged
            kind = "method" if kind == "unexplained" else kind
            said.append(captions.text("study", "artifact", tolerance=f"{tpot.TOLERANCE:.0%}"))
    return kind, factors, "; ".join(said)


def _theirs(data: ReportData, name: str, imp: dict) -> tuple[Cell, Cell, float | None]:
    """The study's figure as printed (a cell), its source (a cell: the file, and the other CSV's value), the value."""
    m = Q.get(name)
    value, source, other = printed.figure(data, imp, name, Q.figure(m, imp))
    note = f"{source}" if source else "the row does not name its file"
    cell = Cell(Q.text(m, value), value=value, raw=value / m.display_scale if value is not None else None, note=note)
    cell.kind = "num" if value is not None else "missing"
    words = printed.runs(source)
    if other:
        words += f" (Table 1); {printed.runs(other[1])}: {Q.text(m, other[0])}"
    if name == "peak_allocated_bytes" and value is not None:
        words += f"; printed {fmt_num(value * 1e9 / 2**30, 4)} “GB” (GiB)"
    return cell, text_cell(words, note=note), value


def _row(data: ReportData, name: str, imp: dict) -> Row:
    m, key = Q.get(name), {"metric": name, "model": imp["model"]}
    cell, ours, best = roles(data, imp["model"])
    label = captions.entries("study_figures")[name]  # the study's name for it
    theirs_cell, source, theirs = _theirs(data, name, imp)
    mine = Q.figure(m, ours)
    cells = {"figure": text_cell(label), "model": text_cell(imp["model"]), "theirs": theirs_cell, "source": source}
    cells |= {"ours": metric_cell(ours, m), "best": metric_cell(best, m, failed_text=True)}
    if mine is None or not theirs:
        family = {"peak_allocated_bytes": "memory", "j_per_1k_tokens": "energy"}.get(OF[name], "")
        family = "tail" if name == "e2e_ms_p95" else family
        entry = f"{cell['model']} at {cell['context']}/{cell['gen']}, {cell['backend']}, {cell['dtype']}"
        why = f"our cell {entry}: {data.reason_missing([ours], family)}" if mine is None else "no study figure"
        gone, kind = Cell(DASH, kind="missing", note=why), "unmeasured" if ours and theirs else "missing"
        return Row(cells | {"ratio": gone, "factors": gone, "cause": text_cell(why)}, key=key | {"kind": kind})
    kind, factors, cause = explain(name, ours, imp, mine / theirs, theirs)
    cells |= {"ratio": Cell(fmt_ratio(mine / theirs), value=mine / theirs), "cause": text_cell(cause)}
    cells["factors"] = text_cell(factors)
    return Row(cells, key=key | {"kind": kind})


def _study_rows(data: ReportData) -> list[dict]:
    ref = {a: to for a, to in data.ref.items() if a in ("context", "gen")}
    rows = [r for r in data.imported if not is_failed(r) and {a: cell_of(r)[a] for a in ref} == ref]
    rows = [r for r in rows if all(cell_of(r)[a] == v for a, v in STUDY_WAY.items())]
    order = data.configured_models
    return sorted(rows, key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order), str(r["model"])))


COLUMNS = [text_column("figure", "Study's figure", wrap=0.07), text_column("model", "Model"), Column("theirs", "Study")]
COLUMNS += [text_column("source", "As printed from; the other run", wrap=0.12)]
COLUMNS += [Column("ours", "Ours, the study's way"), Column("ratio", "Ours ÷ study", "×")]
COLUMNS += [text_column("factors", "Factors of the ratio", wrap=0.15), text_column("cause", "Cause", wrap=0.27)]
COLUMNS += [Column("best", "Ours, compiled_loop")]


def figures(data: ReportData) -> list[Table]:
    """The study's independent measurements beside ours, one row per measurement and model at the reference cell
    (built once per report: the headline finding reads it too)."""
    return data.once("table-study-figures", lambda: _table(data, "table-study-figures", list(MEASURED)))


def derived(data: ReportData) -> list[Table]:
    """The study's figures derived from the same measurements (e2e percentiles, APE, tokens per joule)."""
    rest = [n for n in FIGURES if n not in MEASURED]
    return _table(data, "table-study-derived", rest)


def _table(data: ReportData, tid: str, names: list[str]) -> list[Table]:
    title = captions.entries("study_tables")[tid]
    imported = _study_rows(data)
    if not imported:
        why = "the data has no imported row at the reference cell" if data.imported else "the data has no imported rows"
        return [skipped_table(tid, title, why)]
    ref = {a: to for a, to in data.ref.items() if a in ("context", "gen")}
    caption = captions.text("tables", tid, tolerance=f"{TOLERANCE:.0%}", **ref)
    t = Table(tid, title, caption, list(COLUMNS), long=True)
    t.rows = [_row(data, name, imp) for name in names for imp in imported]
    t.notes.append(captions.text("study", "roles", roles="; ".join(_way(data, imp["model"]) for imp in imported)))
    if why := data.once("study-table-1", lambda: printed.table_1(data))[1]:
        t.notes.append(captions.text("study", "no_table_1", why=short(why, 160)))
    files = sorted({f for imp in imported for f in printed.files(imp)})
    energy = join(sorted({str(imp["energy_source"]) for imp in imported if imp.get("energy_source")})) or DASH
    if files:
        folder = join(t.path for t in data.config.analysis.external_tables) if data.config else DASH
        t.notes.append(captions.text("study", "files", folder=folder, files=", ".join(files), energy=energy))
    sheets = "; ".join(captions.text("study", "sheet", name=n, limits=_limits(s), **s) for n, s in hardware().items())
    ours = [r for imp in imported if (r := roles(data, imp["model"])[1])]
    machines = {"theirs": ", ".join(sorted({str(r.get("device_name")) for r in imported}))}
    machines["ours"] = ", ".join(sorted({str(r.get("device_name")) for r in ours})) or DASH
    t.notes.append(captions.text("study", "sheets", sheets=sheets, **machines))
    return [t]


def summary(data: ReportData) -> tuple[str, dict] | None:
    """The headline finding on the study: how many of its independent measurements each kind of cause accounts
    for (a measurement counted once, not once per figure derived from it)."""
    (t,) = figures(data)
    if t.skipped:
        return None
    kinds = dict(sorted(Counter(row.key["kind"] for row in t.rows).items()))
    words = ", ".join(f"{n} {captions.text('study', 'kind_' + k)}" for k, n in kinds.items())
    models = len({row.key["model"] for row in t.rows})
    said = captions.text(
        "findings", "study", n=len(t.rows), models=models, kinds=words, context=data.ref.get("context")
    )
    return said, kinds


def tpot_check(data: ReportData) -> list[Table]:
    """The imported rows the TPOT check flagged, one row each; the others counted in one line."""
    tid, title = "table-tpot-check", "TPOT-artifact check of the imported figures"
    rows = [r for r in data.imported if r.get("tpot_check") or r.get("tpot_artifact") is not None]
    if not data.imported:
        return [skipped_table(tid, title, "the data has no imported rows")]
    if not rows:
        return [skipped_table(tid, title, "the imported rows carry no TPOT check (tpot_check column absent)")]
    flagged = [r for r in rows if r.get("tpot_artifact") is True]
    if not flagged:
        return [skipped_table(tid, title, captions.text("notes", "tpot_none", rows=len(rows)))]
    e2e = Q.get("e2e_tps")
    cols = [text_column("model", "Model"), Column("cell", "Context/gen", "tokens", align="l")]
    cols += [text_column("decoding", "Decoding"), text_column("dtype", "dtype")]
    cols += [Column("kept", f"{e2e.header_label} kept", Q.unit(e2e), e2e.better), text_column("flag", "Artifact")]
    cols.append(text_column("check", "Check: the figure as imported against 1000 / TTFT", wrap=0.36))
    t = Table(tid, title, captions.text("tables", tid, tolerance=f"{tpot.TOLERANCE:.0%}"), cols, long=True)
    for r in sorted(flagged, key=lambda r: (str(r.get("model")), cell_of(r)["context"] or 0, str(r.get("decoding")))):
        cell = cell_of(r)
        cells = {k: text_cell(r.get(k)) for k in ("model", "decoding", "dtype")}
        cells["kept"] = metric_cell(r, e2e, failed_text=True)
        cells["cell"] = text_cell(f"{cell['context'] if cell['context'] is not None else 'unknown'}/{cell['gen']}")
        cells["flag"] = Cell("yes", kind="text", raw=True)
        cells["check"] = text_cell(short(r.get("tpot_check"), 200) if r.get("tpot_check") else None)
        t.rows.append(Row(cells, key={a: cell[a] for a in ("model", "context", "decoding", "dtype")}))
    t.notes.append(captions.text("notes", "tpot_flagged", flagged=len(flagged), rows=len(rows)))
    return [t]


def notes(data: ReportData, limit: int = 12) -> list[str]:
    """Caveats the importer attached to more than one imported row (the general ones), most frequent first."""
    counts = Counter(str(n) for r in data.imported for n in as_list(r.get("notes")))
    common = sorted((n for n, c in counts.items() if c > 1), key=lambda n: (-counts[n], n))
    return [f"{n} ({counts[n]} rows)" for n in common[:limit]]
