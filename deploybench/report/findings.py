"""Headline findings and the report's opening summary, generated from the data.

Every sentence here is built from figures in the rows (never typed in), and a finding whose figures are
missing is left out rather than printed with a gap. A finding that compares two cells goes through
`resolved`, the one rule for every difference the report states: claimed only where both figures have a
95% interval and the intervals do not overlap, then as the range the interval ends bound.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from deploybench.enums import Backend, StudyKind
from deploybench.report import captions, imported
from deploybench.report import quantities as Q
from deploybench.report.builder import baseline_of
from deploybench.report.data import ReportData, cell_label, is_failed, is_invalid, machine
from deploybench.report.fmt import fmt_params, fmt_pct, fmt_ratio, num, pct_change, short
from deploybench.results import tpot


@dataclass
class Finding:
    id: str
    text: str
    numbers: dict = field(default_factory=dict)  # the raw figures the sentence quotes
    head: str = ""  # where a finding lists comparisons: what they share, and the comparisons one by one
    items: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Estimate:
    """One cell's figure with its 95% interval (low and high None where it has none; `why` says why)."""

    value: float
    low: float | None = None
    high: float | None = None
    machine: str = ""
    why: str | None = None
    runs: tuple[float, float, int] | None = None  # (lowest, highest, n) over the runs, where no interval exists


def estimate(r: dict | None, name: str) -> Estimate | None:
    m = Q.get(name)
    if (v := Q.figure(m, r)) is None:
        return None
    ends = Q.interval(m, r)
    why, runs = (None, None) if ends else (Q.no_interval(m, r), Q.run_range(m, r))
    return Estimate(v, *(ends or (None, None)), machine=machine(r), why=why, runs=runs)


@dataclass(frozen=True)
class Verdict:
    claimed: bool
    words: str  # "between 38.0% and 41.0% lower", or why no difference is claimed
    low: float | None = None  # the bounds of a / b that the interval ends give
    high: float | None = None


def _pct(p: float) -> str:
    return fmt_pct(p, decimals=2 if p < 1 else 1, signed=False)


def _pm(e: Estimate) -> str:
    return "±" + _pct((e.high - e.low) / 2 / abs(e.value) * 100)


def resolved(a: Estimate, b: Estimate) -> Verdict:
    """Does a differ from b? Only where both have a 95% interval and the two do not overlap; the difference
    is then a_low / b_high to a_high / b_low. Otherwise no difference is claimed, saying why (no interval,
    or the precision at which none was resolved). Cells from different machines are marked so either way."""
    across = f"; measured on different machines ({a.machine}, {b.machine})" if a.machine != b.machine else ""
    if a.low is None or b.low is None:
        return Verdict(False, f"no difference claimed ({a.why if a.low is None else b.why}){_runs_apart(a, b)}{across}")
    if a.low <= b.high and b.low <= a.high:
        return Verdict(False, f"no difference resolved at {_pm(a)} and {_pm(b)}{across}")
    lo, hi = a.low / b.high, a.high / b.low
    if hi < 1:
        words = f"between {_pct(100 - hi * 100)} and {_pct(100 - lo * 100)} lower"
    elif hi < 2:
        words = f"between {_pct(lo * 100 - 100)} and {_pct(hi * 100 - 100)} higher"
    else:
        words = f"between {fmt_ratio(lo)} and {fmt_ratio(hi)} as high"
    return Verdict(True, words + across, lo, hi)


def _runs_apart(a: Estimate, b: Estimate) -> str:
    """Where an interval is missing but every run of one cell lies beyond every run of the other (or beyond the
    other's interval), say so with the ratio those ranges bound: an observation beside 'no difference claimed'."""
    ra, rb = _spread(a), _spread(b)
    if ra is None or rb is None or (ra[0] <= rb[1] and rb[0] <= ra[1]):
        return ""
    lo, hi = ra[0] / rb[1], ra[1] / rb[0]
    if hi >= 2 or lo <= 0.5:
        ratio = f"{fmt_ratio(lo)} to {fmt_ratio(hi)} as high as"
    elif lo > 1:
        ratio = f"{_pct(lo * 100 - 100)} to {_pct(hi * 100 - 100)} higher than"
    else:
        ratio = f"{_pct(100 - hi * 100)} to {_pct(100 - lo * 100)} lower than"
    subject = "its 95% interval" if ra[2] else "every run"
    other = "the other's 95% interval" if rb[2] else "every run of the other"
    return captions.text("findings", "runs_apart", subject=subject, ratio=ratio, object=other)


def _spread(e: Estimate) -> tuple[float, float, bool] | None:
    """(low, high, is an interval): the figure's 95% interval where it has one, else its runs' range."""
    if e.low is not None:
        return e.low, e.high, True
    return None if e.runs is None else (e.runs[0], e.runs[1], False)


# How a finding names a figure (default: its catalogue label).
WORDS = {"ape_e2e_tps_per_active_b": "e2e tok/s per active B", "j_per_1k_tokens": "J per 1000 tokens"}
WORDS |= {"peak_allocated_bytes": "peak memory"}


def compare(ra: dict | None, rb: dict | None, names) -> tuple[list[str], list[dict]]:
    """'e2e tok/s between ... higher' for each figure both rows have (figures whose verdicts read alike share
    a clause; one clause for those without an interval by nature), and the numbers behind each."""
    said, nums = {}, []  # verdict words -> the figures they describe; the numbers behind each
    for name in names:
        a, b = estimate(ra, name), estimate(rb, name)
        if a is None or b is None:
            continue
        v = resolved(a, b)
        nums.append({"metric": name, "pct": pct_change(a.value, b.value), "claimed": v.claimed, "low": v.low})
        nums[-1] |= {"high": v.high, "a": a.value, "b": b.value}
        said.setdefault(v.words if name in Q.INTERVAL_OF else "", []).append(WORDS.get(name, Q.get(name).header_label))
    single, parts = said.pop("", []), [f"{' and '.join(labels)} {words}" for words, labels in said.items()]
    return parts + [captions.text("findings", "single", figures=" and ".join(single))] * bool(single), nums


# What each study varies and the figures its finding compares, each value against the anchor: the first value
# (greedy for decoding); along the context, the longest against the shortest; along the models of the main
# study, each against the baseline model (of the batch study, at each batch size: MoE over dense where the
# baseline is dense); along other models, each entry against the first entry with the same architecture card
# (they differ in one setting: experts or attention implementation).
CROSS_MODEL = ("e2e_tps", "decode_tps", "ttft_ms", "ape_e2e_tps_per_active_b", "j_per_1k_tokens")
ABLATIONS = (
    (StudyKind.MAIN_COMPARISON, "model", (*CROSS_MODEL, "peak_allocated_bytes")),
    (StudyKind.MAIN_COMPARISON, "context", ("e2e_tps", "ttft_ms")),
    (StudyKind.CONTEXT_SCALING, "context", ("e2e_tps", "ttft_ms")),
    (StudyKind.DECODING_ABLATION, "decoding", ("e2e_tps", "decode_tps")),
    (StudyKind.PRECISION_SWEEP, "dtype", ("e2e_tps", "ttft_ms")),
    (StudyKind.BACKEND_COMPARISON, "backend", ("decode_tps", "ttft_ms")),
    (StudyKind.EXPERTS_COMPARISON, "model", ("decode_tps", "ttft_ms")),
    (StudyKind.ATTENTION_COMPARISON, "model", ("ttft_ms", "decode_tps")),
    (StudyKind.BATCH_SCALING, "model", ("decode_tps",)),
)
AGAINST_BASELINE = (StudyKind.MAIN_COMPARISON, StudyKind.BATCH_SCALING)


def _pairs(data: ReportData, st, axis: str):
    """(cell, anchor cell, label) for every comparison a study's finding makes."""
    ref = data.study_ref(st)
    if axis == "model":
        groups: dict = {}
        for m in st.models:
            groups.setdefault(data.same_card(st, m) if st.kind not in AGAINST_BASELINE else "all", []).append(m)
        base = baseline_of(data, st)
        at = [{"batch": n} for n in st.axes["batch"]] if st.kind == StudyKind.BATCH_SCALING else [{}]
        for group, b in itertools.product(groups.values(), at):
            first, said = base if st.kind in AGAINST_BASELINE else group[0], f" at batch {b['batch']}" if b else ""
            yield from (({**ref, **b, "model": m}, {**ref, **b, "model": first}, m + said) for m in group if m != first)
        return
    values, anchor = data.measured(st, axis), data.anchor(st, axis)  # along the context, the shortest measured
    compared = [v for v in (values[-1:] if axis == "context" else values) if v != anchor]
    for m in st.models:
        for v in compared:
            yield {**ref, "model": m, axis: v}, {**ref, "model": m, axis: anchor}, f"{v} ({m})"


def ablations(data: ReportData) -> list[Finding]:
    out = []
    for kind, axis, names in ABLATIONS:
        for st in data.studies(kind):
            clauses, nums = [], []
            for cell, anchor, what in _pairs(data, st, axis):
                r, ra = data.row(cell), data.row(anchor)
                against = anchor["model"] if axis == "model" else anchor[axis]
                if is_failed(r) and not is_failed(ra):
                    clauses.append(f"{what} failed ({r.get('failure_kind') or 'error'})")
                elif (parts := compare(r, ra, names))[0] and not is_failed(ra):
                    clauses.append(f"{what} against {against}: {', '.join(parts[0])}")
                    nums += [{"cell": what, "anchor": against, **n} for n in parts[1]]
            if clauses:
                fixed = {a: v for a, v in data.study_ref(st).items() if a != axis}
                head = f"Study {st.name}, by {axis} ({cell_label(fixed)}):"
                text, items = f"{head} " + "; ".join(clauses) + ".", [f"{c}." for c in clauses]
                out.append(Finding(f"{axis}-{st.name}", text, {"pairs": nums}, head, items))
    return out


def host_bound(data: ReportData) -> list[Finding]:
    """One finding for every study with host-bound cells: how many, how busy the GPU was, the host measured."""
    nums, seen = {}, []
    for st in data.studies():
        rows = [r for r in data.study_rows(st) if not is_failed(r)]
        if host := [r for r in rows if Q.host_bound(r)]:
            busy = [Q.value(Q.get("gpu_busy_fraction"), r) for r in host]
            nums[st.name] = {"host_bound": len(host), "cells": len(rows), "busy": busy}
            seen += [r for r in host if r not in seen]
    if not nums:
        return []
    studies = "; ".join(f"{name}: {n['host_bound']} of {n['cells']} cells" for name, n in nums.items())
    words = {"studies": studies, "busy": Q.busy_words(seen), "host": Q.host_words(seen)}
    return [Finding("host", captions.text("findings", "host_bound", **words), nums)]


def eager_bound(data: ReportData) -> str:
    """The latency section's sentence on what bounds eager decode on this host ('' without busy fractions)."""
    eager = [
        r for r in data.batch1 if r.get("backend") == Backend.EAGER and num(r.get("gpu_busy_fraction")) is not None
    ]
    host = [r for r in eager if Q.host_bound(r)]
    if not eager:
        return ""
    words = {"n": len(host), "cells": len(eager), "busy": Q.busy_words(host or eager), "host": Q.host_words(eager)}
    return " " + captions.text("findings", "eager_host" if host else "eager_gpu", **words)


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
    for fn in (ablations, host_bound, study, quality, devices):
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
    act, tot = (
        next((v for r in rows if (v := num(r.get(c))) is not None), None) for c in ("active_params", "total_params")
    )
    return {
        "name": m,
        "weights": "/".join(sources or [str(data.model_cfg(m).get("source") or "unknown")]),
        "ref": ", ".join(refs) if refs else None,
        "params": f"{fmt_params(tot)} parameters, {fmt_params(act)} active" if tot and act else None,
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
