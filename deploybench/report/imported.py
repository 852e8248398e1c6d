"""The imported study (e.g. arXiv 2508.16700's released CSVs): its figures explained, its TPOT check, its caveats.

For each figure the study published (its TTFT, e2e p50 and p95, “TPOT (tok/s)”, peak VRAM, tokens per joule,
J per 1000 tokens and APE) at the reference cell: its value; ours measured the study's way (the entry
`analysis.study_way` names for the model, else the model itself: eager, bf16, greedy) and the ratio; the ratio
the hardware alone predicts (datasheet facts in reference/hardware.yaml); ours the recommended way (the model
with the compiled_loop backend); and the cause of the gap that the rows state, or "unexplained".
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import yaml

from deploybench.enums import Backend
from deploybench.report import captions
from deploybench.report import quantities as Q
from deploybench.report.data import ReportData, as_list, cell_of, is_failed
from deploybench.report.fmt import DASH, fmt_num, fmt_ratio, join, ratio, short
from deploybench.report.model import Cell, Column, Row, Table, metric_cell, skipped_table, text_cell, text_column
from deploybench.results import tpot

HARDWARE = Path(__file__).resolve().parents[2] / "reference" / "hardware.yaml"
TOLERANCE = 0.15  # a ratio within 15% of the hardware's prediction is accounted for by the hardware
# The study's figures, in the order of its tables, and the datasheet figure their hardware ratio follows.
FIGURES = {"ttft_ms": "compute", "e2e_ms_p50": "bandwidth", "e2e_ms_p95": "bandwidth", "e2e_tps": "bandwidth"}
FIGURES |= {"peak_allocated_bytes": "bytes", "tokens_per_j": "power", "j_per_1k_tokens": "power"}
FIGURES |= {"ape_e2e_tps_per_active_b": "bandwidth"}
DECODE_PACED = set(FIGURES) - {"ttft_ms", "peak_allocated_bytes"}
IMPLEMENTATIONS = {"attn_implementation": "attention", "experts_implementation": "experts"}
SHEET = {"bandwidth": ("memory_bandwidth_tb_s", "TB/s"), "compute": ("bf16_tflops", "TFLOP/s")}
STUDY_WAY = {"backend": Backend.EAGER, "dtype": "bfloat16", "decoding": "greedy"}  # how the study ran its cells


@cache
def hardware() -> dict:
    return yaml.safe_load(HARDWARE.read_text(encoding="utf-8")) or {}


def _limits(sheet: dict) -> str:
    """'350–400' or '700': a datasheet's power limit."""
    return "–".join(f"{w:g}" for w in sorted(set(sheet["power_limit_w"])))


def roles(data: ReportData, model: str) -> tuple[dict, dict | None, dict | None]:
    """(the study-way cell, our row there, our compiled_loop row) for an imported model at the reference cell."""
    entry = ((data.config.get("analysis") or {}).get("study_way") or {}).get(model, model)
    cell = {**data.ref, "model": entry, **STUDY_WAY}
    return cell, data.row(cell), data.row({**cell, "model": model, "backend": Backend.COMPILED_LOOP})


def _way(data: ReportData, model: str) -> str:
    """'gpt-oss-20b by our entry gpt-oss-20b-all (attention eager, experts all_experts)'."""
    cell, r, _ = roles(data, model)
    impl = join(f"{w} {r[k]}" for k, w in IMPLEMENTATIONS.items() if r and r.get(k) not in (None, "n/a"))
    return captions.text("study", "role", model=model, entry=cell["model"], impl=impl or DASH)


def predicted(name: str, ours: dict, theirs: dict) -> tuple[float | None, str]:
    """The ratio ours ÷ theirs that the datasheets alone predict for this figure, and the facts it rests on."""
    law = FIGURES[name]
    if law == "bytes":
        return 1.0, "the same bytes on any device"
    sheets = [hardware().get(str(r.get("device_name"))) for r in (ours, theirs)]
    if None in sheets:
        devices = " or ".join(str(r.get("device_name")) for r, s in zip((ours, theirs), sheets) if s is None)
        return None, f"no datasheet figures for {devices} in reference/hardware.yaml"
    if law == "power":
        return None, captions.text("study", "power", limits=" vs ".join(_limits(s) + " W" for s in sheets))
    key, unit = SHEET[law]
    speed = sheets[0][key] / sheets[1][key]
    active = ratio(theirs.get("active_params"), ours.get("active_params")) if "active" in name else None
    value = (speed if Q.get(name).better == "higher" else 1 / speed) * (active or 1.0)
    return value, f"{law} {sheets[0][key]:g} vs {sheets[1][key]:g} {unit}"


def causes(name: str, ours: dict, theirs: dict, rt: float, pred: float | None, facts: str) -> tuple[str, str]:
    """(kind, words): what the rows say about the gap `rt` (ours ÷ theirs) beside the hardware's `pred`."""
    if Q.host_bound(ours) and name in DECODE_PACED:
        kind, said = "host", [captions.text("study", "host", busy=Q.busy_words([ours]))]
    elif pred is None:
        kind, said = "unexplained", [facts]
    else:
        kind = "hardware" if abs(rt / pred - 1) <= TOLERANCE else "unexplained"
        said = [captions.text("study", kind, facts=facts, ratio=fmt_ratio(pred), rest=fmt_ratio(rt / pred))]
    path = {"routed": "routed", "all": "all_experts"}.get(ours.get("experts_read_per_token"))
    if path and name != "peak_allocated_bytes":  # the study's transformers 4.55 computed every expert
        kind = "path" if path == "routed" and kind == "unexplained" else kind
        read = Q.text(Q.get("params_read_per_token"), Q.value(Q.get("params_read_per_token"), ours))
        said.append(captions.text("study", path, read=read))
    if method := _method(name, ours, theirs):  # e2e tok/s: the study's method moves it only where flagged
        moves = name != "e2e_tps" or theirs.get("tpot_artifact") is True
        kind = "method" if kind == "unexplained" and moves else kind
        said.append(method)
    return kind, "; ".join(said)


def _method(name: str, ours: dict, theirs: dict) -> str | None:
    """How the study made this figure, where that moves it (from the importer's notes and the rows)."""
    if name == "e2e_ms_p95":
        return captions.text("study", "p95")
    if name == "e2e_tps":
        flagged = theirs.get("tpot_artifact") is True
        artifact = " " + captions.text("study", "artifact", tolerance=f"{tpot.TOLERANCE:.0%}") if flagged else ""
        decode = Q.text(Q.get("decode_tps"), Q.figure(Q.get("decode_tps"), ours))
        return captions.text("study", "tpot", decode=decode) + artifact
    if name == "peak_allocated_bytes":
        gb = [Q.value(Q.get(n), r) for n in ("weights_bytes", "peak_allocated_bytes") for r in (ours, theirs)]
        words = {"gib": fmt_num(gb[3] * 1e9 / 2**30, 4)}
        if None not in gb and gb[3] > gb[1]:
            words |= {"weights": fmt_ratio(gb[0] / gb[1]), "rest": fmt_ratio((gb[2] - gb[0]) / (gb[3] - gb[1]))}
        return captions.text("study", "memory" if len(words) > 1 else "gib", **words)
    if name in ("tokens_per_j", "j_per_1k_tokens"):
        power = ratio(ours.get("avg_power_w"), theirs.get("avg_power_w"))
        window = ratio(ours.get("energy_tokens"), ours.get("energy_window_s"))  # the speed the energy came at
        speed = ratio(window, Q.figure(Q.get("e2e_tps"), theirs))
        source = short(theirs.get("energy_source") or "not recorded", 80)
        return captions.text("study", "energy", source=source, power=fmt_ratio(power), speed=fmt_ratio(speed))
    return None


def _row(data: ReportData, name: str, imp: dict) -> Row:
    m, key = Q.get(name), {"metric": name, "model": imp["model"]}
    cell, ours, best = roles(data, imp["model"])
    theirs, mine = Q.figure(m, imp), Q.figure(m, ours)
    label = captions.entries("study_figures")[name]  # the study's name for it
    cells = {"figure": text_cell(label), "model": text_cell(imp["model"]), "ours": metric_cell(ours, m)}
    cells["theirs"] = Cell(Q.text(m, theirs), value=theirs, raw=Q.raw(m, imp), kind="num" if theirs else "missing")
    cells["best"] = metric_cell(best, m, failed_text=True)
    if mine is None or theirs is None:
        family = {"power": "energy", "bytes": "memory"}.get(FIGURES[name], "tail" if name == "e2e_ms_p95" else "")
        entry = f"{cell['model']} at {cell['context']}/{cell['gen']}, {cell['backend']}, {cell['dtype']}"
        why = f"our cell {entry}: {data.reason_missing([ours], family)}" if mine is None else "no study figure"
        gone, kind = Cell(DASH, kind="missing", note=why), "unmeasured" if ours and theirs else "missing"
        return Row(cells | {"ratio": gone, "predicted": gone, "cause": text_cell(why)}, key=key | {"kind": kind})
    pred, facts = predicted(name, ours, imp)
    kind, words = causes(name, ours, imp, mine / theirs, pred, facts)
    cells |= {"ratio": Cell(fmt_ratio(mine / theirs), value=mine / theirs), "cause": text_cell(words)}
    cells["predicted"] = Cell(fmt_ratio(pred), value=pred, note=facts, kind="num" if pred else "missing")
    return Row(cells, key=key | {"kind": kind})


def figures(data: ReportData) -> list[Table]:
    """The study's figures beside ours, one row per figure and model at the reference cell (built once per
    report: the headline finding reads it too)."""
    return data.once("table-study-figures", lambda: _figures(data))


def _figures(data: ReportData) -> list[Table]:
    tid, title = "table-study-figures", "The study's figures beside ours, measured its way and ours"
    ref = {a: to for a, to in data.ref.items() if a in ("context", "gen")}
    imported = [r for r in data.imported if not is_failed(r) and {a: cell_of(r)[a] for a in ref} == ref]
    imported = [r for r in imported if all(cell_of(r)[a] == v for a, v in STUDY_WAY.items())]
    if not imported:
        why = "the data has no imported row at the reference cell" if data.imported else "the data has no imported rows"
        return [skipped_table(tid, title, why)]
    order = list(data.config.get("models") or {})
    imported.sort(key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order), str(r["model"])))
    cols = [text_column("figure", "Study's figure", wrap=0.1), text_column("model", "Model"), Column("theirs", "Study")]
    cols += [Column("ours", "Ours, the study's way"), Column("ratio", "Ours ÷ study", "×")]
    cols += [Column("predicted", "Hardware predicts", "×"), Column("best", "Ours, compiled_loop")]
    cols.append(text_column("cause", "What the rows say", wrap=0.26))
    caption = captions.text("tables", tid, tolerance=f"{TOLERANCE:.0%}", **ref)
    t = Table(tid, title, caption, cols, long=True)
    t.rows = [_row(data, name, imp) for name in FIGURES for imp in imported]
    t.notes.append(captions.text("study", "roles", roles="; ".join(_way(data, imp["model"]) for imp in imported)))
    ours = [r for imp in imported if (r := roles(data, imp["model"])[1])]
    if host := [r for r in ours if Q.host_bound(r)]:
        t.notes.append(captions.text("study", "hosts", host=Q.host_words(host)))
    sheets = "; ".join(captions.text("study", "sheet", name=n, limits=_limits(s), **s) for n, s in hardware().items())
    machines = {"theirs": ", ".join(sorted({str(r.get("device_name")) for r in imported}))}
    machines["ours"] = ", ".join(sorted({str(r.get("device_name")) for r in ours})) or DASH
    t.notes.append(captions.text("study", "sheets", sheets=sheets, **machines))
    return [t]


def summary(data: ReportData) -> tuple[str, dict] | None:
    """The headline finding on the study's figures: how many of them each kind of cause accounts for."""
    (t,) = figures(data)
    if t.skipped:
        return None
    kinds = dict(sorted(Counter(row.key["kind"] for row in t.rows).items()))
    words = ", ".join(f"{n} {captions.text('study', 'kind_' + k)}" for k, n in kinds.items())
    return captions.text("findings", "study", n=len(t.rows), kinds=words, context=data.ref.get("context")), kinds


def tpot_check(data: ReportData) -> list[Table]:
    tid, title = "table-tpot-check", "TPOT-artifact check of the imported figures"
    rows = [r for r in data.imported if r.get("tpot_check") or r.get("tpot_artifact") is not None]
    if not data.imported:
        return [skipped_table(tid, title, "the data has no imported rows")]
    if not rows:
        return [skipped_table(tid, title, "the imported rows carry no TPOT check (tpot_check column absent)")]
    e2e = Q.get("e2e_tps")
    cols = [text_column("model", "Model"), Column("cell", "Context/gen", "tokens", align="l")]
    cols += [text_column("decoding", "Decoding"), text_column("dtype", "dtype")]
    cols += [Column("kept", f"{e2e.header_label} kept", Q.unit(e2e), e2e.better), text_column("flag", "Artifact")]
    cols.append(text_column("check", "Check: the figure as imported against 1000 / TTFT", wrap=0.36))
    t = Table(tid, title, captions.text("tables", tid, tolerance=f"{tpot.TOLERANCE:.0%}"), cols, long=True)
    for r in sorted(rows, key=lambda r: (str(r.get("model")), cell_of(r)["context"] or 0, str(r.get("decoding")))):
        cell = cell_of(r)
        cells = {k: text_cell(r.get(k)) for k in ("model", "decoding", "dtype")}
        cells["kept"] = metric_cell(r, e2e, failed_text=True)
        cells["cell"] = text_cell(f"{cell['context'] if cell['context'] is not None else 'unknown'}/{cell['gen']}")
        cells["flag"] = Cell("yes" if r.get("tpot_artifact") is True else "no", kind="text", raw=r.get("tpot_artifact"))
        cells["check"] = text_cell(short(r.get("tpot_check"), 200) if r.get("tpot_check") else None)
        t.rows.append(Row(cells, key={a: cell[a] for a in ("model", "context", "decoding", "dtype")}))
    flagged = sum(r.get("tpot_artifact") is True for r in rows)
    t.notes.append(captions.text("notes", "tpot_flagged", flagged=flagged, rows=len(rows)))
    return [t]


def notes(data: ReportData, limit: int = 12) -> list[str]:
    """Caveats the importer attached to more than one imported row (the general ones), most frequent first."""
    counts = Counter(str(n) for r in data.imported for n in as_list(r.get("notes")))
    common = sorted((n for n, c in counts.items() if c > 1), key=lambda n: (-counts[n], n))
    return [f"{n} ({counts[n]} rows)" for n in common[:limit]]
