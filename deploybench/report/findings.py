"""Headline findings and the report's opening summary, generated from the data.

Every sentence here is built from figures in the rows (never typed in), and a finding whose figures are
missing is left out rather than printed with a gap. A finding that compares two cells goes through
`resolved`, the one rule for every difference the report states: claimed only where both figures have a
95% interval and the intervals do not overlap, then as the range the interval ends bound.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

from deploybench.enums import StudyKind
from deploybench.report import captions, imported, pacing
from deploybench.report import quantities as Q
from deploybench.report.builder import baseline_of
from deploybench.report.data import ReportData, cell_label, is_failed, is_invalid, machine
from deploybench.report.fmt import fmt_params, num, pct_change, short
from deploybench.report.gate import DETERMINISTIC, Estimate, Verdict, deterministic, estimate, resolved  # noqa: F401
from deploybench.results import tpot


@dataclass
class Finding:
    id: str
    text: str
    numbers: dict = field(default_factory=dict)  # the raw figures the sentence quotes
    head: str = ""  # where a finding lists comparisons: what they share, and the comparisons one by one
    items: list[str] = field(default_factory=list)


# How a finding names a figure (default: its catalogue label).
WORDS = {"ape_e2e_tps_per_active_b": "e2e tok/s per active B", "j_per_1k_tokens": "J per 1000 tokens"}
WORDS |= {"peak_allocated_bytes": "peak memory", "kv_cache_bytes": "KV cache"}


def compare(ra: dict | None, rb: dict | None, names) -> list[dict]:
    """Each figure both rows have: the two estimates and the verdict (deterministic figures as they are)."""
    out = []
    for name in names:
        a, b = estimate(ra, name), estimate(rb, name)
        if a is None or b is None:
            continue
        if name in DETERMINISTIC:
            v = deterministic(a.value, b.value, Q.get(name))
        elif name not in Q.INTERVAL_OF:  # one measurement per cell (an energy window), no interval by nature
            v = Verdict(False, "one measurement per cell", reason="host" if a.paced or b.paced else "single")
        else:
            v = resolved(a, b)
        out.append(
            {
                "metric": name,
                "pct": pct_change(a.value, b.value),
                "claimed": v.claimed and v.low is not None,
                "low": v.low,
                "high": v.high,
                "a": a.value,
                "b": b.value,
                "verdict": v,
                "est": (a, b),
            }
        )
    return out


# What each study varies and the figures its finding compares, each value against the anchor: the first value
# (greedy for decoding); along the context, the longest against the shortest; along the models of the main
# study, each against the baseline model (of the batch study, at each batch size: MoE over dense where the
# baseline is dense); along other models, each entry against the first entry with the same architecture card
# (they differ in one setting: experts or attention implementation), at each context the study measured.
CROSS_MODEL = ("e2e_tps", "decode_tps", "ttft_ms", "ape_e2e_tps_per_active_b", "j_per_1k_tokens")
ABLATIONS = (
    (StudyKind.MAIN_COMPARISON, "model", (*CROSS_MODEL, *DETERMINISTIC)),
    (StudyKind.MAIN_COMPARISON, "context", ("e2e_tps", "ttft_ms")),
    (StudyKind.CONTEXT_SCALING, "context", ("e2e_tps", "ttft_ms")),
    (StudyKind.DECODING_ABLATION, "decoding", ("e2e_tps", "decode_tps")),
    (StudyKind.PRECISION_SWEEP, "dtype", ("e2e_tps", "ttft_ms", "peak_allocated_bytes")),
    (StudyKind.BACKEND_COMPARISON, "backend", ("decode_tps", "ttft_ms", "peak_allocated_bytes")),
    (StudyKind.EXPERTS_COMPARISON, "model", ("decode_tps", "ttft_ms", "peak_allocated_bytes")),
    (StudyKind.ATTENTION_COMPARISON, "model", ("ttft_ms", "decode_tps", "peak_allocated_bytes")),
    (StudyKind.BATCH_SCALING, "model", ("decode_tps",)),
)
AGAINST_BASELINE = (StudyKind.MAIN_COMPARISON, StudyKind.BATCH_SCALING)
AT_EACH_CONTEXT = (StudyKind.BACKEND_COMPARISON, StudyKind.EXPERTS_COMPARISON, StudyKind.ATTENTION_COMPARISON)


def _pairs(data: ReportData, st, axis: str):
    """(cell, anchor cell, subject) for every comparison a study's finding makes."""
    ref = data.study_ref(st)
    many = st.kind in AT_EACH_CONTEXT and len(data.measured(st, "context")) > 1
    at = [{"context": c} for c in data.measured(st, "context")] if many else [{}]
    if axis == "model":
        groups: dict = {}
        for m in st.models:
            groups.setdefault(data.same_card(st, m) if st.kind not in AGAINST_BASELINE else "all", []).append(m)
        base = baseline_of(data, st)
        at = [{"batch": n} for n in st.axes["batch"]] if st.kind == StudyKind.BATCH_SCALING else at
        for group, b in itertools.product(groups.values(), at):
            first = base if st.kind in AGAINST_BASELINE else group[0]
            said = f" at batch {b['batch']}" if "batch" in b else f" at {b['context']} tokens" if b else ""
            yield from (
                ({**ref, **b, "model": m}, {**ref, **b, "model": first}, f"{m} against {first}{said}")
                for m in group
                if m != first
            )
        return
    values, anchor = data.measured(st, axis), data.anchor(st, axis)  # along the context, the shortest measured
    compared = [v for v in (values[-1:] if axis == "context" else values) if v != anchor]
    unit = " tokens" if axis == "context" else ""
    for m, v, b in itertools.product(st.models, compared, at):
        said = f" at {b['context']} tokens" if b else ""
        yield (
            {**ref, **b, "model": m, axis: v},
            {**ref, **b, "model": m, axis: anchor},
            f"{m}, {v} against {anchor}{unit}{said}",
        )


def _sentence(subject: str, n: dict) -> str:
    """'TTFT, qwen3-32b-eager against qwen3-32b: between 65.8% and 69.9% higher (439.7 against 261.9 ms).'"""
    m = Q.get(n["metric"])
    values = f"{Q.text(m, n['a'])} against {Q.text(m, n['b'])} {Q.unit(m)}".rstrip()
    return f"{WORDS.get(m.name, m.header_label)}, {subject}: {n['verdict'].words} ({values})."


UNRESOLVED = {"host": "host-paced runs", "no_interval": "no 95% interval", "overlap": "intervals overlap"}
UNRESOLVED["single"] = "one measurement per cell"


def _label(n: dict) -> str:
    return WORDS.get(n["metric"], Q.get(n["metric"]).header_label)


def _unresolved(nums: list[dict]) -> str | None:
    """One line for every comparison a study could not resolve, grouped by why (overlaps named one by one)."""
    by: dict[str, Counter] = {}
    for n in nums:
        if not n["claimed"] and (why := n["verdict"].reason) in UNRESOLVED:
            by.setdefault(why, Counter())[f"{_label(n)} of {n['cell']}" if why == "overlap" else _label(n)] += 1
    said = [
        ", ".join(f"{label} ×{k}" if k > 1 else label for label, k in labels.items()) + f" ({UNRESOLVED[why]})"
        for why, labels in by.items()
    ]
    return captions.text("findings", "unresolved", said="; ".join(said)) if said else None


def _fixed(nums: list[dict]) -> str | None:
    """The deterministic figures compared as they are: 'peak memory, a against b: +2.46 GB (+3.7%)'."""
    fixed = [n for n in nums if n["verdict"].reason == "deterministic"]
    same = [f"{_label(n)}, {n['cell']}" for n in fixed if n["verdict"].words == "the same"]
    said = [f"{_label(n)}, {n['cell']}: {n['verdict'].words}" for n in fixed if n["verdict"].words != "the same"]
    said += [f"the same (within 0.5%) for {'; '.join(same)}"] if same else []
    return captions.text("findings", "deterministic", said="; ".join(said)) if said else None


def ablations(data: ReportData) -> list[Finding]:
    """One finding per study: a short sentence per resolved difference, the deterministic figures compared as
    they are, and one line for what the intervals do not resolve. A comparison an earlier study made (the same
    two cells) is not made again."""
    return data.once("findings-ablations", lambda: _ablations(data))


def _ablations(data: ReportData) -> list[Finding]:
    out, made = [], set()
    for kind, axis, names in ABLATIONS:
        for st in data.studies(kind):
            items, nums = [], []
            for cell, anchor, subject in _pairs(data, st, axis):
                r, ra = data.row(cell), data.row(anchor)
                if r is None or ra is None or is_failed(ra) or (id(r), id(ra)) in made:
                    continue
                made.add((id(r), id(ra)))
                if is_failed(r):
                    items.append(f"{subject.split(' against ')[0]} failed ({r.get('failure_kind') or 'error'}).")
                    continue
                pairs = [n | {"cell": subject, "anchor": anchor[axis]} for n in compare(r, ra, names)]
                for n in pairs:
                    n["sentence"] = _sentence(subject, n) if n["claimed"] else None
                items += [n["sentence"] for n in pairs if n["claimed"]]
                nums += pairs
            items += [line for line in (_fixed(nums), _unresolved(nums)) if line]
            if items:
                held = {a: v for a, v in data.study_ref(st).items() if a != axis}
                held = {a: v for a, v in held.items() if a != "context" or st.kind not in AT_EACH_CONTEXT}
                head = f"Study {st.name}, by {axis} ({cell_label(held)}):"
                for n in nums:
                    n.pop("est"), n.update(verdict=n["verdict"].words)
                out.append(Finding(f"{axis}-{st.name}", f"{head} " + " ".join(items), {"pairs": nums}, head, items))
    return out


def headline(data: ReportData, most: int = 5) -> list[str]:
    """The three to five resolved differences for the first screen: the largest of each study first (by how far
    from equal the nearer bound is; comparisons along the context last), then the next largest."""
    claimed = [(f.id, n) for f in ablations(data) for n in f.numbers["pairs"] if n["claimed"]]
    # along the context a figure grows as expected: those after the comparisons between entries and backends
    claimed.sort(key=lambda c: (c[0].startswith("context-"), -min(abs(math.log(c[1][e])) for e in ("low", "high"))))
    firsts = {}  # study -> its largest, in order of size
    for fid, n in claimed:
        firsts.setdefault(fid, n)
    chosen = [*firsts.values()] + [n for _, n in claimed if all(n is not f for f in firsts.values())]
    return [n["sentence"] for n in chosen[:most]]


def host_paced(data: ReportData) -> list[Finding]:
    """One finding for every study with host-paced cells (judged run by run): how many, how busy the GPU was."""
    nums, seen = {}, []
    for st in data.studies():
        rows = [r for r in data.study_rows(st) if not is_failed(r)]
        if host := [r for r in rows if pacing.host_paced(r)]:
            busy = [Q.value(Q.get("gpu_busy_fraction"), r) for r in host]
            nums[st.name] = {"host_paced": len(host), "cells": len(rows), "busy": busy}
            seen += [r for r in host if r not in seen]
    if not nums:
        return []
    studies = "; ".join(f"{name}: {n['host_paced']} of {n['cells']} cells" for name, n in nums.items())
    runs = [v for r in seen for v in pacing.run_busy(r)] or [num(r.get("gpu_busy_fraction")) for r in seen]
    busy = f"{min(runs) * 100:.0f} to {max(runs) * 100:.0f}" if runs and None not in runs else Q.busy_words(seen)
    words = {"studies": studies, "busy": busy, "host": Q.host_words(seen)}
    return [Finding("host", captions.text("findings", "host_bound", **words), nums)]


def devices(data: ReportData) -> list[Finding]:
    """Say when our cells come from more than one device, and which studies mix devices."""
    counts = Counter(machine(r) for r in data.ours)
    if len(counts) < 2:
        return []
    mixed = [f"{st.name} ({len(seen)})" for st in data.studies() if len(seen := data.machines(st)) > 1]
    listing = ", ".join(f"{d}: {n}" for d, n in counts.most_common())
    text = captions.text("findings", "devices", cells=len(data.ours), n=len(counts), listing=listing)
    text += " " + captions.text("findings", "devices_mixed", studies=", ".join(mixed)) if mixed else ""
    return [Finding("devices", text, {"devices": dict(counts), "mixed_studies": mixed})]


def quality(data: ReportData) -> list[Finding]:
    if not (n := len(data.ours)):
        return []
    failed, invalid = [r for r in data.ours if is_failed(r)], [r for r in data.ours if is_invalid(r)]
    kinds = ", ".join(f"{c} {k}" for k, c in sorted(Counter(r.get("failure_kind") or "error" for r in failed).items()))
    words = {"n": n, "failed": len(failed), "invalid": len(invalid), "kinds": f" ({kinds})" if kinds else ""}
    text = captions.text("findings", "quality" if failed or invalid else "quality_ok", **words)
    return [Finding("quality", text, {"failed": len(failed), "invalid": len(invalid), "cells": n})]


def study(data: ReportData) -> list[Finding]:
    out = [Finding("import-study", *said)] if (said := imported.summary(data)) else []
    if flagged := [r for r in data.imported if r.get("tpot_artifact") is True]:
        words = {"flagged": len(flagged), "rows": len(data.imported), "tolerance": f"{tpot.TOLERANCE:.0%}"}
        out.append(Finding("import-tpot", captions.text("findings", "tpot", **words), {"flagged": len(flagged)}))
    return out


def findings(data: ReportData) -> list[Finding]:
    out = []
    for fn in (ablations, host_paced, study, quality, devices):
        try:
            out += fn(data)
        except Exception as exc:  # one broken finding must not take the report down
            text = f"The {fn.__name__.replace('_', ' ')} finding could not be computed: {short(exc, 120)}"
            out.append(Finding(f"error-{fn.__name__}", text))
    return out


# what was measured, on what, and what is missing --------------------------------------------


def _model_facts(data: ReportData, m: str) -> dict:
    rows = [r for r in data.ours if r.get("model") == m]
    sources = sorted({str(r.get("weights_source")) for r in rows if r.get("weights_source")})
    refs = sorted({str(r.get("model_ref")) for r in rows if r.get("model_ref")})
    act, tot, read = (
        next((v for r in rows if (v := num(r.get(c))) is not None), None)
        for c in ("active_params", "total_params", "params_read_per_token")
    )
    params = f"{fmt_params(tot)} parameters, {fmt_params(act)} active" if tot and act else None
    if params and read and act and read > act * 1.01:  # a path that computes more than the card's active count
        words = {"active": fmt_params(act), "read": fmt_params(read), "impl": rows[0].get("experts_implementation")}
        params = f"{fmt_params(tot)} parameters; " + captions.text("findings", "read_more", **words)
    return {
        "name": m,
        "weights": "/".join(sources or [data.weights_source(m) or "unknown"]),
        "ref": ", ".join(refs) if refs else None,
        "params": params,
        "type": next((r.get("model_type") for r in rows if r.get("model_type")), None),
    }


# A figure family no row of ours may have -> the column that says why (captions: missing.<family>).
NOT_MEASURED = {"j_per_1k_tokens": "energy_source", "peak_allocated_bytes": "memory_null_reason"}
NOT_MEASURED |= {"gpu_busy_fraction": "boundness_null_reason"}


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

    def counts(col: str) -> str | None:
        return " or ".join(map(str, sorted({int(v) for r in ok if (v := num(r.get(col))) is not None}))) or None

    return {
        "n_runs": counts("n_runs"),
        "warmup_runs": counts("warmup_runs"),
        "n_cells": len(data.ours),
        "n_ok": len(ok),
        "n_failed": len(data.ours) - len(ok),
        "n_imported": len(data.imported),
        "imported_sources": sorted({str(r.get("source")) for r in data.imported}),
        "models": [_model_facts(data, m) for m in data.models],
        "devices": sorted({str(r.get("device_name")) for r in data.ours if r.get("device_name")}),
        "random_weights": any(r.get("weights_source") == "random" for r in data.ours),
        "reference": data.reference(),
        "baseline": data.baseline,
        "missing": missing(data, ok),
        "studies": [{"name": s.name, "kind": s.kind} for s in data.studies()],
    }
