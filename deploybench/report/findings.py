"""Headline findings and the report's opening summary, generated from the data.

Every sentence here is built from figures in the rows (never typed in), and a finding whose
figures are missing is left out rather than printed with a gap. Numbers use the same formatting
as the tables, so a reader can find each one again in a table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from deploybench import tpot
from deploybench.enums import Backend, StudyKind
from deploybench.report import captions
from deploybench.report import quantities as Q
from deploybench.report.builder import baseline_of
from deploybench.report.data import ReportData, cell_short, is_failed, is_invalid
from deploybench.report.fmt import fmt_num, fmt_params, fmt_pct, fmt_ratio, num, pct_change, ratio, short
from deploybench.report.imported import match_ours


@dataclass
class Finding:
    id: str
    text: str
    topic: str  # comparison | efficiency | context | decoding | precision | backend | quality | import
    numbers: dict = field(default_factory=dict)  # the raw figures the sentence quotes


def _val(r, name: str):
    return Q.figure(Q.get(name), r)


def _ref_words(ref: dict) -> str:
    return f"{cell_short(ref)} ({ref['decoding']}, {ref['dtype']}, {ref['backend']})"


def _against_baseline(data: ReportData):
    """(model, baseline, reference cell, model row, baseline row) for every non-baseline model of the
    main study whose row and baseline row at the reference cell both ran."""
    st = data.main_study()
    if st is None or len(st.models) < 2:
        return
    ref, base = data.study_ref(st), baseline_of(data, st)
    rb = data.row({**ref, "model": base})
    for m in st.models:
        r = data.row({**ref, "model": m})
        if m != base and r is not None and rb is not None and not is_failed(r) and not is_failed(rb):
            yield m, base, ref, r, rb


# The figures a cross-model finding quotes, in the words of the sentence.
CROSS_MODEL = {
    "e2e_tps": "e2e tok/s",
    "decode_tps": "decode tok/s",
    "ttft_ms": "TTFT",
    "j_per_1k_tokens": "J per 1000 tokens",
    "peak_allocated_bytes": "peak memory",
}


def cross_model(data: ReportData) -> list[Finding]:
    out = []
    for m, base, ref, r, rb in _against_baseline(data):
        parts, nums = [], {}
        for key, words in CROSS_MODEL.items():
            a, b = _val(r, key), _val(rb, key)
            p = pct_change(a, b)
            if p is not None:
                parts.append(f"{fmt_pct(p)} {words}")
                nums[key] = {"model": a, "baseline": b, "pct": p}
        if parts:
            listing = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
            text = f"{m} gives {listing} against {base} at {_ref_words(ref)}."
            out.append(Finding(f"vs-{m}", text, "comparison", nums))
    return out


def efficiency(data: ReportData) -> list[Finding]:
    col = "ape_e2e_tps_per_active_b"
    out = []
    for m, base, ref, r, rb in _against_baseline(data):
        a, b = num(r.get(col)), num(rb.get(col))
        rt = num(r.get(f"ratio_to_baseline_{col}")) or ratio(a, b)
        if a is None or b is None or rt is None:
            continue
        act_a, act_b = num(r.get("active_params")), num(rb.get("active_params"))
        act = f" with {fmt_params(act_a)} against {fmt_params(act_b)} active parameters" if act_a and act_b else ""
        text = (
            f"Per active parameter, {m} delivers {fmt_ratio(rt)} the end-to-end tok/s of {base}{act} "
            f"({fmt_num(a)} against {fmt_num(b)} tok/s per active B at {cell_short(ref)})."
        )
        out.append(Finding(f"ape-{m}", text, "efficiency", {"model": a, "baseline": b, "ratio": rt}))
    return out


def context_trend(data: ReportData) -> list[Finding]:
    st = data.main_study()
    if st is None or len(st.contexts) < 2:
        return []
    ref = data.study_ref(st)
    lo, hi = min(st.contexts), max(st.contexts)
    tps, ttft, nums = [], [], {}
    for m in st.models:
        r_lo, r_hi = (data.row({**ref, "model": m, "context": c}) for c in (lo, hi))
        p = pct_change(_val(r_hi, "e2e_tps"), _val(r_lo, "e2e_tps"))
        t = ratio(_val(r_hi, "ttft_ms"), _val(r_lo, "ttft_ms"))
        tps += [f"{fmt_pct(p)} ({m})"] if p is not None else []
        ttft += [f"{fmt_ratio(t)} ({m})"] if t is not None else []
        nums[m] = {"e2e_tps_pct": p, "ttft_ratio": t}
    if not tps:
        return []
    text = f"From {lo} to {hi} tokens of context, e2e tok/s changes by " + ", ".join(tps)
    text += f"; TTFT grows {', '.join(ttft)}." if ttft else "."
    return [Finding("context", text, "context", nums)]


def decoding_spread(data: ReportData) -> list[Finding]:
    out = []
    for st in data.studies(StudyKind.DECODING_ABLATION):
        ref, modes = data.study_ref(st), st.axes["decoding"]
        anchor = "greedy" if "greedy" in modes else modes[0]
        deltas = []
        for m in st.models:
            a = _val(data.row({**ref, "model": m, "decoding": anchor}), "e2e_tps")
            for dec in modes:
                p = pct_change(_val(data.row({**ref, "model": m, "decoding": dec}), "e2e_tps"), a)
                if dec != anchor and p is not None:
                    deltas.append((p, m, dec))
        if deltas:
            lo, hi = min(deltas), max(deltas)
            text = (
                f"Decoding modes change e2e tok/s by {fmt_pct(lo[0])} ({lo[2]}, {lo[1]}) to {fmt_pct(hi[0])} "
                f"({hi[2]}, {hi[1]}) against {anchor} ({len(deltas)} mode-model pairs, study {st.name})."
            )
            out.append(Finding(f"decoding-{st.name}", text, "decoding", {"min": lo[0], "max": hi[0]}))
    return out


def precision(data: ReportData) -> list[Finding]:
    out = []
    for st in data.studies(StudyKind.PRECISION_SWEEP):
        ref = data.study_ref(st)
        failed, speed = [], []
        for m in st.models:
            rows = {data.dtype_for(m, d): data.row({**ref, "model": m, "dtype": d}) for d in st.axes["dtype"]}
            failed += [f"{d} on {m} ({r.get('failure_kind') or 'error'})" for d, r in rows.items() if is_failed(r)]
            ok = [(d, _val(r, "e2e_tps")) for d, r in rows.items() if _val(r, "e2e_tps") is not None]
            if len(ok) >= 2:
                best, worst = max(ok, key=lambda x: x[1]), min(ok, key=lambda x: x[1])
                speed.append(f"{m}: {best[0]} is {fmt_ratio(best[1] / worst[1])} as fast as {worst[0]}")
        if speed:
            text = "Precision sweep, e2e tok/s: " + "; ".join(speed) + "."
            out.append(Finding(f"precision-{st.name}", text, "precision"))
        if failed:
            text = "Failed in the precision sweep: " + ", ".join(failed) + "."
            out.append(Finding(f"precision-failed-{st.name}", text, "precision"))
    return out


def backends(data: ReportData) -> list[Finding]:
    out = []
    for st in data.studies(StudyKind.BACKEND_COMPARISON):
        names = st.axes["backend"]
        if len(names) < 2:
            continue
        ref, parts = data.study_ref(st), []
        for m in st.models:
            ra = data.row({**ref, "model": m, "backend": names[0]})
            for b in names[1:]:
                rt = ratio(_val(data.row({**ref, "model": m, "backend": b}), "decode_tps"), _val(ra, "decode_tps"))
                parts += [f"{fmt_ratio(rt)} for {m} ({b} ÷ {names[0]})"] if rt is not None else []
        if parts:
            text = "Decode tok/s, backend against backend: " + "; ".join(parts) + "."
            out.append(Finding(f"backend-{st.name}", text, "backend"))
    return out


def host_bound(data: ReportData) -> list[Finding]:
    """Per study with host-bound cells: how many, how busy the GPU was, and the host they measure."""
    out = []
    for st in data.studies():
        rows = [r for r in data.study_rows(st) if not is_failed(r)]
        if host := [r for r in rows if Q.host_bound(r)]:
            nums = {"host_bound": len(host), "cells": len(rows), "busy": [_val(r, "gpu_busy_fraction") for r in host]}
            words = {**nums, "study": st.name, "busy": Q.busy_words(host), "host": Q.host_words(host)}
            out.append(Finding(f"host-{st.name}", captions.text("findings", "host_bound", **words), "boundness", nums))
    return out


def eager_bound(data: ReportData) -> str:
    """The latency section's sentence on what bounds eager decode on this host ('' without busy fractions)."""
    eager = [r for r in data.ours if r.get("backend") == Backend.EAGER and _val(r, "gpu_busy_fraction") is not None]
    host = [r for r in eager if Q.host_bound(r)]
    if not eager:
        return ""
    words = {"n": len(host), "cells": len(eager), "busy": Q.busy_words(host or eager), "host": Q.host_words(eager)}
    return " " + captions.text("findings", "eager_host" if host else "eager_gpu", **words)


def _device(r: dict) -> str:
    uuid = r.get("device_uuid")
    return uuid[:12] if uuid else str(r.get("hostname") or "unknown")


def devices(data: ReportData) -> list[Finding]:
    """Say when our cells come from more than one device, and which studies mix devices."""
    counts = Counter(_device(r) for r in data.ours)
    if len(counts) < 2:
        return []
    mixed = []
    for st in data.studies():
        seen = {_device(r) for r in data.study_rows(st)}
        mixed += [f"{st.name} ({len(seen)})"] if len(seen) > 1 else []
    listing = ", ".join(f"{d}: {n}" for d, n in counts.most_common())
    text = f"The {len(data.ours)} cells were measured on {len(counts)} devices ({listing} cells)."
    if mixed:
        text += " " + captions.text("findings", "devices_mixed", studies=", ".join(mixed))
    return [Finding("devices", text, "quality", {"devices": dict(counts), "mixed_studies": mixed})]


def quality(data: ReportData) -> list[Finding]:
    n = len(data.ours)
    if n == 0:
        return []
    failed = [r for r in data.ours if is_failed(r)]
    invalid = [r for r in data.ours if is_invalid(r)]
    if not failed and not invalid:
        return [Finding("quality", f"All {n} cells ran and passed every validity check.", "quality")]
    kinds = Counter(r.get("failure_kind") or "error" for r in failed)
    text = f"{len(failed)} of {n} cells failed"
    text += " (" + ", ".join(f"{c} {k}" for k, c in sorted(kinds.items())) + ")" if kinds else ""
    text += f" and {len(invalid)} failed a validity check; they are listed under Failures and invalid cells."
    return [Finding("quality", text, "quality", {"failed": len(failed), "invalid": len(invalid), "cells": n})]


def imported(data: ReportData) -> list[Finding]:
    ratios = []
    for imp in data.imported:
        rt = ratio(_val(match_ours(data, imp), "e2e_tps"), _val(imp, "e2e_tps"))
        if rt is not None:
            ratios.append((rt, imp.get("model"), imp.get("context_tokens"), imp.get("gen_tokens")))
    out = []
    if ratios:
        lo, hi = min(ratios), max(ratios)
        text = (
            f"At {len(ratios)} cells that match the study's, our e2e tok/s is {fmt_ratio(lo[0])} to "
            f"{fmt_ratio(hi[0])} the study's figure."
        )
        out.append(Finding("import-ratio", text, "import", {"min": lo[0], "max": hi[0]}))
    flagged = [r for r in data.imported if r.get("tpot_artifact") is True]
    if flagged:
        text = (
            f"{len(flagged)} of {len(data.imported)} imported rows carried the TPOT artifact (a tok/s figure "
            f"within {tpot.TOLERANCE:.0%} of 1000/TTFT) and were recomputed from the decode wall time."
        )
        out.append(Finding("import-tpot", text, "import", {"flagged": len(flagged)}))
    return out


def findings(data: ReportData) -> list[Finding]:
    out = []
    makers = (cross_model, efficiency, context_trend, decoding_spread, precision, backends, host_bound, imported)
    makers += (quality, devices)
    for fn in makers:
        try:
            out += fn(data)
        except Exception as exc:  # one broken finding must not take the report down
            text = f"The {fn.__name__.replace('_', ' ')} finding could not be computed: {short(exc, 120)}"
            out.append(Finding(f"error-{fn.__name__}", text, "quality"))
    return out


# what was measured, on what, and what is missing --------------------------------------------


def _model_facts(data: ReportData, m: str) -> dict:
    rows = [r for r in data.ours if r.get("model") == m]
    sources = sorted({str(r.get("weights_source")) for r in rows if r.get("weights_source")})
    refs = sorted({str(r.get("model_ref")) for r in rows if r.get("model_ref")})
    act, tot = (
        next((num(r.get(c)) for r in rows if num(r.get(c)) is not None), None)
        for c in ("active_params", "total_params")
    )
    return {
        "name": m,
        "weights": "/".join(sources or [str(data.model_cfg(m).get("source") or "unknown")]),
        "ref": ", ".join(refs) if refs else None,
        "params": f"{fmt_params(tot)} parameters, {fmt_params(act)} active" if tot and act else None,
        "type": next((r.get("model_type") for r in rows if r.get("model_type")), None),
    }


NOT_MEASURED = {  # a figure family no row of ours may have -> the column that says why (captions: missing.<family>)
    "j_per_1k_tokens": "energy_source",
    "peak_allocated_bytes": "memory_null_reason",
    "gpu_busy_fraction": "boundness_null_reason",
}


def _not_measured(ok: list[dict], column: str, reason: str) -> list[str]:
    """'<what> was not measured (<why>): ...' when no row of ours has the column."""
    if any(num(r.get(column)) is not None for r in ok):
        return []
    why = sorted({short(str(r.get(reason)), 100) for r in ok if r.get(reason)})
    return [captions.text("missing", column, why=f" ({'; '.join(why[:2])})" if why else "")]


def missing(data: ReportData, ok: list[dict]) -> list[str]:
    out = []
    if not data.ours:
        out.append("There are no measured rows in the data: every table below is empty.")
    elif not ok:
        out.append("Every measured cell failed: the tables show the failures and no figures.")
    else:
        for column, reason in NOT_MEASURED.items():
            out += _not_measured(ok, column, reason)
        if all(num(r.get("roofline_fraction")) is None for r in ok):
            out.append("The roofline fraction is unknown (no measured memory bandwidth): its figure is skipped.")
    if len(data.models) == 1:
        out.append(f"The data has one model only ({data.models[0]}): there is no cross-model comparison.")
    for kind in StudyKind:
        if not data.studies(kind):
            out.append(captions.text("findings", "no_study", kind=kind.replace("_", " ")))
    if data.baseline_note:
        out.append(data.baseline_note[0].upper() + data.baseline_note[1:] + ".")
    return out


def summary(data: ReportData) -> dict:
    """Facts for the opening paragraph: counts, models and their weights, devices, gaps."""
    ok = [r for r in data.ours if not is_failed(r)]
    runs = sorted({int(num(r.get("n_runs"))) for r in ok if num(r.get("n_runs")) is not None})
    warm = sorted({int(num(r.get("warmup_runs"))) for r in ok if num(r.get("warmup_runs")) is not None})
    sources = sorted({str(r.get("weights_source")) for r in data.ours if r.get("weights_source")})
    return {
        "n_runs": " or ".join(map(str, runs)) if runs else None,
        "warmup_runs": " or ".join(map(str, warm)) if warm else None,
        "n_cells": len(data.ours),
        "n_ok": len(ok),
        "n_failed": len(data.ours) - len(ok),
        "n_imported": len(data.imported),
        "imported_sources": sorted({str(r.get("source")) for r in data.imported}),
        "models": [_model_facts(data, m) for m in data.models],
        "devices": sorted({str(r.get("device_name")) for r in data.ours if r.get("device_name")}),
        "weights_sources": sources,
        "random_weights": "random" in sources,
        "reference": data.reference(),
        "baseline": data.baseline,
        "missing": missing(data, ok),
        "studies": [{"name": s.name, "kind": s.kind, "axes": s.describe()} for s in data.studies()],
    }
