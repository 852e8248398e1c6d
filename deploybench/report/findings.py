"""Headline findings and the report's opening summary, generated from the data.

Every sentence here is built from figures in the rows (never typed in), and a finding whose
figures are missing is left out rather than printed with a gap. Numbers use the same formatting
as the tables, so a reader can find each one again in a table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from deploybench.report.tables import (
    METRICS,
    ReportData,
    cell_short,
    fmt_num,
    fmt_params,
    fmt_pct,
    fmt_ratio,
    is_failed,
    is_invalid,
    num,
    pct_change,
    ratio,
    short,
)


@dataclass
class Finding:
    id: str
    text: str
    topic: str  # comparison | efficiency | context | decoding | precision | backend | quality | import
    numbers: dict = field(default_factory=dict)  # the raw figures the sentence quotes


def _val(r, key):
    if r is None or is_failed(r):
        return None
    return METRICS[key].value(r)


def _ref_words(ref: dict) -> str:
    return f"{cell_short(ref)} ({ref['decoding']}, {ref['dtype']}, {ref['backend']})"


def _against_baseline(data: ReportData):
    """(model, baseline, reference cell, model row, baseline row) for every non-baseline model of the
    main study whose row and baseline row at the reference cell both ran."""
    st = data.main_study()
    if st is None or len(st.models) < 2:
        return
    ref = data.study_ref(st)
    base = data.baseline if data.baseline in st.models else st.models[0]
    rb = data.ref_row(base, ref)
    for m in st.models:
        if m == base:
            continue
        r = data.ref_row(m, ref)
        if r is None or rb is None or is_failed(r) or is_failed(rb):
            continue
        yield m, base, ref, r, rb


def cross_model(data: ReportData) -> list[Finding]:
    out = []
    phrases = [
        ("e2e_tps", "e2e tok/s"),
        ("decode_tps", "decode tok/s"),
        ("ttft_ms", "TTFT"),
        ("j_per_1k_tokens", "J per 1000 tokens"),
        ("peak_gb", "peak memory"),
    ]
    for m, base, ref, r, rb in _against_baseline(data):
        parts, nums = [], {}
        for key, words in phrases:
            a, b = _val(r, key), _val(rb, key)
            p = pct_change(a, b)
            if p is None:
                continue
            parts.append(f"{fmt_pct(p)} {words}")
            nums[key] = {"model": a, "baseline": b, "pct": p}
        if not parts:
            continue
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
        r_lo = data.row(m, ref["backend"], ref["dtype"], lo, ref["gen"], ref["decoding"])
        r_hi = data.row(m, ref["backend"], ref["dtype"], hi, ref["gen"], ref["decoding"])
        p = pct_change(_val(r_hi, "e2e_tps"), _val(r_lo, "e2e_tps"))
        t = ratio(_val(r_hi, "ttft_ms"), _val(r_lo, "ttft_ms"))
        if p is not None:
            tps.append(f"{fmt_pct(p)} ({m})")
        if t is not None:
            ttft.append(f"{fmt_ratio(t)} ({m})")
        nums[m] = {"e2e_tps_pct": p, "ttft_ratio": t}
    out = []
    if tps:
        text = f"From {lo} to {hi} tokens of context, e2e tok/s changes by " + ", ".join(tps)
        text += f"; TTFT grows {', '.join(ttft)}." if ttft else "."
        out.append(Finding("context", text, "context", nums))
    return out


def decoding_spread(data: ReportData) -> list[Finding]:
    out = []
    for st in data.studies("decoding_ablation"):
        ref = data.study_ref(st)
        anchor = "greedy" if "greedy" in st.decodings else (st.decodings[0] if st.decodings else None)
        deltas = []
        for m in st.models:
            a = _val(data.row(m, ref["backend"], ref["dtype"], ref["context"], ref["gen"], anchor), "e2e_tps")
            for dec in st.decodings:
                if dec == anchor:
                    continue
                p = pct_change(
                    _val(data.row(m, ref["backend"], ref["dtype"], ref["context"], ref["gen"], dec), "e2e_tps"), a
                )
                if p is not None:
                    deltas.append((p, m, dec))
        if not deltas:
            continue
        lo, hi = min(deltas), max(deltas)
        text = (
            f"Decoding modes change e2e tok/s by {fmt_pct(lo[0])} ({lo[2]}, {lo[1]}) to {fmt_pct(hi[0])} "
            f"({hi[2]}, {hi[1]}) against {anchor} ({len(deltas)} mode-model pairs, study {st.name})."
        )
        out.append(Finding(f"decoding-{st.name}", text, "decoding", {"min": lo[0], "max": hi[0]}))
    return out


def precision(data: ReportData) -> list[Finding]:
    out = []
    for st in data.studies("precision_sweep"):
        ref = data.study_ref(st)
        failed, speed = [], []
        for m in st.models:
            rows = {}
            for d in st.dtypes:
                dd = data.dtype_for(m, d)
                rows[dd] = data.row(m, ref["backend"], dd, ref["context"], ref["gen"], ref["decoding"])
            for d, r in rows.items():
                if is_failed(r):
                    failed.append(f"{d} on {m} ({r.get('failure_kind') or 'error'})")
            ok = [(d, _val(r, "e2e_tps")) for d, r in rows.items() if _val(r, "e2e_tps") is not None]
            if len(ok) >= 2:
                best = max(ok, key=lambda x: x[1])
                worst = min(ok, key=lambda x: x[1])
                speed.append(f"{m}: {best[0]} is {fmt_ratio(best[1] / worst[1])} as fast as {worst[0]}")
        if speed:
            out.append(
                Finding(f"precision-{st.name}", "Precision sweep, e2e tok/s: " + "; ".join(speed) + ".", "precision")
            )
        if failed:
            out.append(
                Finding(
                    f"precision-failed-{st.name}",
                    "Failed in the precision sweep: " + ", ".join(failed) + ".",
                    "precision",
                )
            )
    return out


def backends(data: ReportData) -> list[Finding]:
    out = []
    for st in data.studies("backend_comparison"):
        if len(st.backends) < 2:
            continue
        ref = data.study_ref(st)
        a_name, parts = st.backends[0], []
        for m in st.models:
            ra = data.row(m, a_name, ref["dtype"], ref["context"], ref["gen"], ref["decoding"])
            for b in st.backends[1:]:
                rb = data.row(m, b, ref["dtype"], ref["context"], ref["gen"], ref["decoding"])
                rt = ratio(_val(rb, "decode_tps"), _val(ra, "decode_tps"))
                if rt is not None:
                    parts.append(f"{fmt_ratio(rt)} for {m} ({b} ÷ {a_name})")
        if parts:
            out.append(
                Finding(
                    f"backend-{st.name}", "Decode tok/s, backend against backend: " + "; ".join(parts) + ".", "backend"
                )
            )
    return out


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
        seen = {_device(r) for r in data.study_rows(st) if r is not None}
        if len(seen) > 1:
            mixed.append(f"{st.name} ({len(seen)})")
    listing = ", ".join(f"{d}: {n}" for d, n in counts.most_common())
    text = f"The {len(data.ours)} cells were measured on {len(counts)} devices ({listing} cells)."
    if mixed:
        text += (
            " Studies whose cells span devices, with the number of devices: "
            + ", ".join(mixed)
            + ". Their comparisons include the difference between machines, which for eager decode can be"
            " larger than the effect studied; the environment table lists each machine."
        )
    return [Finding("devices", text, "quality", {"devices": dict(counts), "mixed_studies": mixed})]


def quality(data: ReportData) -> list[Finding]:
    n = len(data.ours)
    if n == 0:
        return []
    failed = [r for r in data.ours if is_failed(r)]
    invalid = [r for r in data.ours if is_invalid(r)]
    if not failed and not invalid:
        return [Finding("quality", f"All {n} cells ran and passed every validity check.", "quality")]
    kinds: dict[str, int] = {}
    for r in failed:
        k = r.get("failure_kind") or "error"
        kinds[k] = kinds.get(k, 0) + 1
    text = f"{len(failed)} of {n} cells failed"
    if kinds:
        text += " (" + ", ".join(f"{c} {k}" for k, c in sorted(kinds.items())) + ")"
    text += f" and {len(invalid)} failed a validity check; they are listed under Failures and invalid cells."
    return [Finding("quality", text, "quality", {"failed": len(failed), "invalid": len(invalid), "cells": n})]


def imported(data: ReportData) -> list[Finding]:
    if not data.imported:
        return []
    from deploybench.report.tables import _match_ours  # noqa: PLC0415

    out = []
    ratios = []
    for imp in data.imported:
        ours = _match_ours(data, imp)
        rt = ratio(_val(ours, "e2e_tps"), _val(imp, "e2e_tps"))
        if rt is not None:
            ratios.append((rt, imp.get("model"), imp.get("context_tokens"), imp.get("gen_tokens")))
    if ratios:
        lo, hi = min(ratios), max(ratios)
        out.append(
            Finding(
                "import-ratio",
                f"At {len(ratios)} cells that match the study's, our e2e tok/s is {fmt_ratio(lo[0])} to "
                f"{fmt_ratio(hi[0])} the study's figure.",
                "import",
                {"min": lo[0], "max": hi[0]},
            )
        )
    flagged = [r for r in data.imported if r.get("tpot_artifact") is True]
    if flagged:
        out.append(
            Finding(
                "import-tpot",
                f"{len(flagged)} of {len(data.imported)} imported rows carried the TPOT artifact (a tok/s figure "
                "within 3% of 1000/TTFT) and were recomputed from the decode wall time.",
                "import",
                {"flagged": len(flagged)},
            )
        )
    return out


def findings(data: ReportData) -> list[Finding]:
    out = []
    makers = (cross_model, efficiency, context_trend, decoding_spread, precision, backends, imported, quality, devices)
    for fn in makers:
        try:
            out += fn(data)
        except Exception as exc:  # one broken finding must not take the report down
            out.append(
                Finding(
                    f"error-{fn.__name__}",
                    f"The {fn.__name__.replace('_', ' ')} finding could not be computed: {short(exc, 120)}",
                    "quality",
                )
            )
    return out


# --------------------------------------------------------------------------------------------
# what was measured, on what, and what is missing
# --------------------------------------------------------------------------------------------


def summary(data: ReportData) -> dict:
    """Facts for the opening paragraph: counts, models and their weights, devices, gaps."""
    ok = [r for r in data.ours if not is_failed(r)]
    models = []
    for m in data.models:
        rows = [r for r in data.ours if r.get("model") == m]
        src = sorted({str(r.get("weights_source")) for r in rows if r.get("weights_source")}) or [
            str(data.model_cfg(m).get("source") or "unknown")
        ]
        ref = sorted({str(r.get("model_ref")) for r in rows if r.get("model_ref")})
        act = next((num(r.get("active_params")) for r in rows if num(r.get("active_params")) is not None), None)
        tot = next((num(r.get("total_params")) for r in rows if num(r.get("total_params")) is not None), None)
        params = f"{fmt_params(tot)} parameters, {fmt_params(act)} active" if tot and act else None
        models.append(
            {
                "name": m,
                "weights": "/".join(src),
                "ref": ", ".join(ref) if ref else None,
                "params": params,
                "type": next((r.get("model_type") for r in rows if r.get("model_type")), None),
            }
        )
    devices = sorted({str(r.get("device_name")) for r in data.ours if r.get("device_name")})
    sources = sorted({str(r.get("weights_source")) for r in data.ours if r.get("weights_source")})
    missing = []
    if not data.ours:
        missing.append("There are no measured rows in the data: every table below is empty.")
    elif not ok:
        missing.append("Every measured cell failed: the tables show the failures and no figures.")
    else:
        if all(num(r.get("j_per_1k_tokens")) is None for r in ok):
            why = sorted({short(str(r.get("energy_source")), 100) for r in ok if r.get("energy_source")})
            missing.append(
                "Energy was not measured"
                + (f" ({'; '.join(why[:2])})" if why else "")
                + ": the energy tables and figures are skipped."
            )
        if all(num(r.get("peak_allocated_bytes")) is None for r in ok):
            why = sorted({short(str(r.get("memory_null_reason")), 100) for r in ok if r.get("memory_null_reason")})
            missing.append(
                "Device memory was not measured"
                + (f" ({'; '.join(why[:2])})" if why else "")
                + ": the memory tables and figure are skipped."
            )
        if all(num(r.get("roofline_fraction")) is None for r in ok):
            missing.append("The roofline fraction is unknown (no measured memory bandwidth): its figure is skipped.")
    if len(data.models) == 1:
        missing.append(f"The data has one model only ({data.models[0]}): there is no cross-model comparison.")
    for kind in ("main_comparison", "context_scaling", "decoding_ablation", "precision_sweep", "backend_comparison"):
        if not data.studies(kind):
            missing.append(f"The config has no {kind.replace('_', ' ')} study: its table is skipped.")
    if data.baseline_note:
        missing.append(data.baseline_note[0].upper() + data.baseline_note[1:] + ".")
    runs = sorted({int(num(r.get("n_runs"))) for r in ok if num(r.get("n_runs")) is not None})
    warm = sorted({int(num(r.get("warmup_runs"))) for r in ok if num(r.get("warmup_runs")) is not None})
    return {
        "n_runs": " or ".join(map(str, runs)) if runs else None,
        "warmup_runs": " or ".join(map(str, warm)) if warm else None,
        "n_cells": len(data.ours),
        "n_ok": len(ok),
        "n_failed": len(data.ours) - len(ok),
        "n_imported": len(data.imported),
        "imported_sources": sorted({str(r.get("source")) for r in data.imported}),
        "models": models,
        "devices": devices,
        "weights_sources": sources,
        "random_weights": "random" in sources,
        "reference": data.reference(),
        "baseline": data.baseline,
        "missing": missing,
        "studies": [{"name": s.name, "kind": s.kind, "axes": s.describe()} for s in data.studies()],
    }
