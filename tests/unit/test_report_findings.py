"""Findings that hold: every difference a finding states goes through `resolved`, which claims it only
where the two 95% intervals do not overlap; noise (overlapping intervals), cells without an interval
(imported rows, CPU rows whose interval was withheld) and cells from different machines are said so.

The rows are synthetic with known intervals (made here through deploybench.results.schema.to_table), and the
demo of tests/fixtures/report_demo.py; the study's figures section is checked on the demo too.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from deploybench.measure import uncertainty
from deploybench.plan.config import validate_config
from deploybench.report import builder, imported
from deploybench.report import findings as FN
from deploybench.report import fmt as F
from deploybench.report import quantities as Q
from deploybench.report.data import ReportData
from deploybench.report.render import build_report, render_report
from deploybench.report.specs import BY_ID
from deploybench.results.schema import to_table
from tests.fixtures.report_demo import demo_frame, demo_settings, on_second_machine

MODES = {"greedy": {"do_sample": False}} | {m: {"do_sample": True, "temperature": 0.7} for m in "abcdef"}


def _row(decoding: str, tps: float, low: float | None, high: float | None, **kw) -> dict:
    """A decode row at 128/16 with its median and 95% interval (None: withheld, as on a short CPU run)."""
    row = {
        "cell_id": f"m/eager-bfloat16/c128-g16-{decoding}",
        "model": "m",
        "backend": "eager",
        "dtype": "bfloat16",
        "context_tokens": 128,
        "gen_tokens": 16,
        "decoding": decoding,
        "source": "deploybench",
        "status": "ok",
        "valid": True,
        "device_uuid": "GPU-aaaaaaaa-test",
        "decode_tps": tps,
        "decode_tps_ci95_low": low,
        "decode_tps_ci95_high": high,
        "decode_runs": 30,
        "ci_method": uncertainty.CI_METHOD,
    }
    if low is None:
        row["ci_null_reason"] = "decode_tps: 5 samples, worth 1.2 independent ones, admit no 95% interval"
    return row | kw


# Known differences and known noise against greedy (100 tok/s, [99, 101]): the two real ones separate.
ROWS = [
    _row("greedy", 100.0, 99.0, 101.0),
    _row("a", 90.0, 89.0, 91.0),  # real: 10% slower, between 11.0% and 8.1% lower (89/101 .. 91/99)
    _row("b", 112.0, 111.0, 113.0),  # real: 12% faster
    _row("c", 99.5, 98.0, 100.5),  # noise: overlaps greedy's interval
    _row("d", 101.5, 100.8, 102.6),  # noise: a 1.5% difference that the intervals do not resolve
    _row("e", 80.0, None, None),  # a large gap without an interval (withheld): never claimed
    _row("f", 95.0, 94.0, 96.0, device_uuid="GPU-bbbbbbbb-test"),  # real, but on another machine
]
STUDY = {"kind": "decoding_ablation", "models": ["m"], "contexts": [128], "gen": [16], "decoding": list(MODES)}
CONFIG = validate_config(
    {
        "models": {"m": {"source": "random", "architecture": "workflow/architectures/tiny-qwen3.json"}},
        "decoding": MODES,
        "studies": {"ablation": STUDY},
        "analysis": {"reference_cell": {"context": 128, "gen": 16, "decoding": "greedy", "dtype": "bfloat16"}},
    }
)


def _data(rows=ROWS, config=CONFIG) -> ReportData:
    return ReportData(to_table(rows).to_pandas(), config)


def test_resolved_claims_only_separated_intervals_with_the_bounded_range():
    a, b = FN.Estimate(90.0, 89.0, 91.0, "gpu"), FN.Estimate(100.0, 99.0, 101.0, "gpu")
    v = FN.resolved(a, b)
    assert v.claimed and (v.low, v.high) == pytest.approx((89 / 101, 91 / 99))
    assert v.words == "between 8.1% and 11.9% lower"
    assert FN.resolved(b, a).words == "between 8.8% and 13.5% higher"
    big = FN.resolved(FN.Estimate(300.0, 290.0, 310.0, "gpu"), b)
    assert big.claimed and big.words == "between 2.87× and 3.13× as high"
    noise = FN.resolved(FN.Estimate(99.5, 98.0, 100.5, "gpu"), b)
    assert not noise.claimed and noise.low is None
    assert noise.words == "no difference resolved at ±1.3% and ±1.0%"  # the precision there was
    touching = FN.resolved(FN.Estimate(102.0, 101.0, 103.0, "gpu"), b)  # ends meet: not separated
    assert not touching.claimed
    withheld = FN.resolved(FN.Estimate(80.0, machine="gpu", why="decode_tps: 5 samples ..."), b)
    assert not withheld.claimed and withheld.words == "no difference claimed (decode_tps: 5 samples ...)"
    across = FN.resolved(FN.Estimate(90.0, 89.0, 91.0, "gpu-2"), b)
    assert across.claimed and across.words.endswith("; measured on different machines (gpu-2, gpu)")
    assert FN.resolved(FN.Estimate(99.5, 98.0, 100.5, "gpu-2"), b).words.endswith("different machines (gpu-2, gpu)")


def test_the_ablation_finding_claims_exactly_the_real_differences():
    (f,) = [x for x in FN.findings(_data()) if x.id == "decoding-ablation"]
    claimed = {n["cell"].split(", ")[1].split(" ")[0] for n in f.numbers["pairs"] if n["claimed"]}
    assert claimed == {"a", "b", "f"}  # not the noise (c, d), not the gap without an interval (e)
    # One short sentence per resolved difference, with the figures it compares
    assert "decode tok/s, m, a against greedy: between 8.1% and 11.9% lower (90.00 against 100.0 tok/s)." in f.items
    assert "decode tok/s, m, b against greedy: between 9.9% and 14.1% higher (112.0 against 100.0 tok/s)." in f.items
    (other,) = [i for i in f.items if ", f against" in i]
    assert "between 3.0% and 6.9% lower; measured on different machines" in other
    # and what the intervals do not resolve, in one line, by why
    assert f.items[-1] == (
        "Not resolved: decode tok/s of m, c against greedy, decode tok/s of m, d against greedy (intervals overlap);"
        " decode tok/s (no 95% interval)."
    )
    assert "no difference" not in f.text


def test_imported_rows_never_yield_a_claimed_difference():
    imported = _row("a", 50.0, None, None, source="import:study", device_uuid=None, ci_method=None)
    imported.pop("ci_null_reason")
    data = _data([ROWS[0], imported])
    ours, theirs = FN.estimate(data.ours[0], "decode_tps"), FN.estimate(data.imported[0], "decode_tps")
    v = FN.resolved(ours, theirs)
    assert not v.claimed and v.words.startswith(
        "no difference claimed (an imported figure, published without an interval)"
    )


def test_on_samples_noise_is_not_claimed_and_real_differences_are():
    """Intervals from real samples (measure.uncertainty): 40 pairs of the same distribution, 40 pairs 10% apart."""
    rng = random.Random(7)

    def est(centre):
        samples = [centre * rng.gauss(1.0, 0.02) for _ in range(30)]
        iv = uncertainty.median_interval(samples)
        return FN.Estimate(iv.median, iv.low, iv.high, "gpu")

    noise = sum(FN.resolved(est(100.0), est(100.0)).claimed for _ in range(40))
    real = sum(FN.resolved(est(110.0), est(100.0)).claimed for _ in range(40))
    assert noise <= 1 and real == 40  # two 95% intervals overlap for all but ~0.6% of equal pairs


def test_cpu_rows_with_withheld_intervals_claim_nothing_and_say_why():
    ctx = build_report(demo_frame("cpu"), demo_settings("cpu"))
    for f in ctx["findings"]:
        for n in f.numbers.get("pairs", []):
            if n["metric"] in ("decode_tps", "e2e_tps"):  # 5 decode runs on the CPU demo: no interval
                assert not n["claimed"], (f.id, n)
    (main,) = [f for f in ctx["findings"] if f.id == "model-main"]
    assert main.items[-1] == "Not resolved: e2e tok/s ×2, decode tok/s ×2, e2e tok/s per active B ×2 (no 95% interval)."
    assert any(n["claimed"] for n in main.numbers["pairs"] if n["metric"] == "ttft_ms")  # TTFT has 40 runs


def test_a_study_spanning_two_devices_is_marked_at_its_table_and_in_its_findings():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    data = ReportData(on_second_machine(df, "qwen3-32b-eager"), cfg)
    (t,) = builder.build(BY_ID["table-attention"], data)
    (note,) = [n for n in t.notes if "measured on 2 machines" in n]
    assert "GPU-00000000, GPU-22222222" in note and "includes the difference between the machines" in note
    f = {x.id: x for x in FN.findings(data)}
    assert "TTFT, qwen3-32b-eager against qwen3-32b at 2048 tokens: between" in f["model-attention"].text
    assert "measured on different machines (GPU-22222222, GPU-00000000)" in f["model-attention"].text
    assert "attention (2)" in f["devices"].numbers["mixed_studies"]
    (same,) = builder.build(BY_ID["table-attention"], ReportData(df, cfg))  # one machine: no such note
    assert not [n for n in same.notes if "machines" in n]
    assert "different machines" not in {x.id: x for x in FN.findings(ReportData(df, cfg))}["model-attention"].text


# ------------------------------------------------------------------ intervals in the tables


def test_latency_table_prints_each_median_with_its_interval_and_the_runs():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    (t,) = builder.build(BY_ID["table-latency-ref"], ReportData(df, cfg))
    row = df[(df.model == "yi-34b") & (df.context_tokens == 2048) & (df.backend == "eager") & (df.decoding == "greedy")]
    row = row[(row.dtype == "bfloat16") & (row.source == "deploybench")].iloc[0]
    c = t.cell("ttft_ms", model="yi-34b")
    assert c.interval == (row.ttft_ms_ci95_low, row.ttft_ms_ci95_high)
    assert c.text == f"{row.ttft_ms:.1f} [{row.ttft_ms_ci95_low:.1f},\u00a0{row.ttft_ms_ci95_high:.1f}]"
    e2e = t.cell("e2e_tps", model="yi-34b")  # gen / p50: the p50 interval, inverted
    assert e2e.interval == pytest.approx((64e3 / row.e2e_ms_p50_ci95_high, 64e3 / row.e2e_ms_p50_ci95_low))
    assert t.cell("runs", model="yi-34b").text == "TTFT 30 (ci_target), decode 20 (time_cap)"
    assert "n_runs" not in [col.key for col in t.columns]
    (cpu,) = builder.build(BY_ID["table-latency-ref"], ReportData(demo_frame("cpu"), demo_settings("cpu")))
    withheld = cpu.cell("decode_tps", model="tiny-llama")  # no interval: the range of its runs instead
    cpu_row = demo_frame("cpu").query("model == 'tiny-llama' and context_tokens == 256 and decoding == 'greedy'")
    low, high = min(cpu_row.decode_tps_samples.iloc[0]), max(cpu_row.decode_tps_samples.iloc[0])
    assert withheld.interval is None and withheld.runs == (low, high, 5)
    assert withheld.text == f"{withheld.value:.1f} runs {low:.1f}–{high:.1f}"
    assert "no 95% interval (decode_tps: 5 samples" in withheld.note


def test_definitions_list_the_interval_and_run_columns():
    from deploybench.report import appendix

    (t,) = appendix.definitions()
    names = {row.key["name"] for row in t.rows}
    assert {"ttft_ms_ci95_low", "ttft_ms_ci95_high", "e2e_ms_p50_ci95_low", "e2e_ms_p50_ci95_high"} <= names
    assert {"decode_tps_ci95_low", "decode_tps_ci95_high", "ttft_runs", "decode_runs", "ci_method"} <= names


# ------------------------------------------------------------------ the study's figures, explained


def _figures(df: pd.DataFrame, cfg: dict):
    (t,) = imported.figures(ReportData(df, cfg))
    return t


def test_the_study_figures_section_builds_on_the_demo():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    t = _figures(df, cfg)
    assert t.skipped is None and len(t.rows) == len(imported.MEASURED) * 3  # one row per measurement and model
    theirs = df[(df.source != "deploybench") & (df.model == "gpt-oss-20b") & (df.context_tokens == 2048)].iloc[0]
    ours = df[(df.model == "gpt-oss-20b-all") & (df.source == "deploybench")].iloc[0]  # the study's way (study_way)
    # The demo's imported rows name no files and its config's study has no energy CSVs to read: the imported figure
    assert t.cell("theirs", metric="ttft_ms", model="gpt-oss-20b").value == theirs.ttft_ms
    assert t.cell("ours", metric="ttft_ms", model="gpt-oss-20b").value == ours.ttft_ms
    assert t.cell("ratio", metric="ttft_ms", model="gpt-oss-20b").value == pytest.approx(ours.ttft_ms / theirs.ttft_ms)
    loop = df[(df.model == "gpt-oss-20b") & (df.backend == "compiled_loop")].iloc[0]
    assert t.cell("best", metric="e2e_tps", model="gpt-oss-20b").value == pytest.approx(loop.e2e_tps)
    kinds = {(row.key["metric"], row.key["model"]): row.key["kind"] for row in t.rows}
    assert kinds[("e2e_tps", "qwen3-32b")] == "host"  # host-paced eager decode: a ratio of hosts
    assert "the ratio compares hosts" in t.cell("cause", metric="e2e_tps", model="qwen3-32b").text
    assert kinds[("peak_allocated_bytes", "yi-34b")] == "same"
    assert "weights" in t.cell("factors", metric="peak_allocated_bytes", model="yi-34b").text
    assert kinds[("j_per_1k_tokens", "qwen3-32b")] == "host"  # energy per token at the host's speed
    assert kinds[("j_per_1k_tokens", "gpt-oss-20b")] == "unexplained"  # its all-experts entry is not host-paced
    assert any("gpt-oss-20b by our entry gpt-oss-20b-all (attention eager, experts all_experts)" in n for n in t.notes)
    assert any("the study's (NVIDIA H100 NVL) and ours (NVIDIA H200)" in n for n in t.notes)
    (derived,) = imported.derived(ReportData(df, cfg))  # the figures derived from the same measurements
    assert {row.key["metric"] for row in derived.rows} == {"e2e_ms_p50", "e2e_ms_p95", "ape_e2e_tps_per_active_b"} | {
        "tokens_per_j"
    }


def test_a_ttft_gap_splits_into_the_peak_ratio_and_each_side_s_fraction_of_its_peak():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    t = _figures(df, cfg)
    ours = df[(df.model == "qwen3-32b") & (df.source == "deploybench") & (df.context_tokens == 2048)]
    ours = ours[(ours.backend == "eager") & (ours.dtype == "bfloat16") & (ours.decoding == "greedy")].iloc[0]
    theirs = df[(df.model == "qwen3-32b") & (df.source != "deploybench") & (df.context_tokens == 2048)].iloc[0]
    work = ours.decode_flops_per_token * 2048
    eff = [work / (ours.ttft_ms / 1e3) / 989.5e12, work / (theirs.ttft_ms / 1e3) / 835.5e12]
    factors = t.cell("factors", metric="ttft_ms", model="qwen3-32b").text
    rt = F.fmt_ratio(ours.ttft_ms / theirs.ttft_ms)
    assert factors == f"BF16 peak 0.844× × fraction of it {F.fmt_ratio(eff[1] / eff[0])} = {rt}"
    assert (835.5 / 989.5) * (eff[1] / eff[0]) == pytest.approx(ours.ttft_ms / theirs.ttft_ms)  # they multiply out
    cause = t.cell("cause", metric="ttft_ms", model="qwen3-32b").text
    assert cause.startswith(f"unexplained: the study's prefill reached {eff[1] * 100:.0f}% of its BF16 peak")
    assert "candidate: its board drew" in cause  # the study's power drawn near its board's limit, named, not claimed
    # Both compute-bound at the same fraction of their peaks: the datasheets account for it.
    fixed = df.copy()
    fixed.loc[(fixed.source != "deploybench") & (fixed.model == "qwen3-32b"), "ttft_ms"] = ours.ttft_ms * 989.5 / 835.5
    row = _figures(fixed, cfg)
    assert row.cell("cause", metric="ttft_ms", model="qwen3-32b").text.startswith("the BF16 peaks account for it")
    # Neither compute-bound: the peak ratio is no cause, however near the ratio falls.
    slow = df.assign(decode_flops_per_token=df.decode_flops_per_token / 10)
    assert (
        "neither prefill is compute-bound"
        in _figures(slow, cfg).cell("cause", metric="ttft_ms", model="qwen3-32b").text
    )
    (f,) = [x for x in FN.findings(ReportData(df, cfg)) if x.id == "import-study"]
    assert f.numbers["unexplained"] >= 1 and "no difference from its figures is claimed" in f.text
    assert "12 independent measurements" in f.text  # each counted once, not once per figure derived from it


def test_the_study_figures_section_renders_with_dashes_and_reasons_when_our_cells_are_missing():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    gone = df[~((df.model == "gpt-oss-20b-all") | (df.backend == "compiled_loop")) | (df.source != "deploybench")]
    t = _figures(gone, cfg)
    assert len(t.rows) == len(imported.MEASURED) * 3
    assert {row.key["kind"] for row in t.rows if row.key["model"] == "gpt-oss-20b"} == {"missing"}
    cause = t.cell("cause", metric="ttft_ms", model="gpt-oss-20b").text
    assert cause == "our cell gpt-oss-20b-all at 2048/64, eager, bfloat16: the data has no row for these cells"
    assert t.cell("ratio", metric="ttft_ms", model="gpt-oss-20b").text == "—"
    assert t.cell("best", metric="ttft_ms", model="yi-34b").kind == "missing"
    # Without study_way the model plays itself: the routed path, whose gap the experts path explains.
    plain = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"study_way": {}})})
    routed = _figures(df, plain)
    assert "routed experts" in routed.cell("cause", metric="ttft_ms", model="gpt-oss-20b").text
    ctx = build_report(gone, cfg)  # and the report builds around it
    (section,) = [s for s in ctx["sections"] if s["id"] == "sec-study"]
    assert section["items"][0]["obj"].skipped is None
    (cpu,) = imported.figures(ReportData(demo_frame("cpu"), demo_settings("cpu")))
    assert cpu.skipped == "the data has no imported rows"


def test_runs_that_lie_apart_are_said_beside_no_claim_and_overlapping_runs_are_not():
    """Without an interval nothing is claimed; where every run of one cell lies beyond the other's runs (or its
    interval), the finding says so with the ratio the two ranges bound, and says nothing where they overlap."""
    why = "decode_tps: 5 samples, worth 2.4 independent ones, admit no 95% interval"
    eager = FN.Estimate(24.0, machine="gpu", why=why, runs=(22.7, 25.0, 5))
    loop = FN.Estimate(158.5, 158.4, 158.6, "gpu")
    v = FN.resolved(loop, eager)
    assert not v.claimed and v.low is None
    assert (
        v.words
        == f"no difference claimed ({why}); yet its 95% interval was 6.34× to 6.99× as high as every run of the other"
    )
    v = FN.resolved(eager, loop)
    assert v.words.endswith("; yet every run was 0.143× to 0.158× as high as the other's 95% interval")
    assert not v.claimed and v.low is None
    slower = FN.resolved(FN.Estimate(20.0, machine="gpu", why=why, runs=(19.0, 21.0, 5)), eager)
    assert slower.words.endswith("; yet every run was 7.5% to 24.0% lower than every run of the other")
    assert not slower.claimed
    overlapping = FN.resolved(FN.Estimate(25.0, machine="gpu", why=why, runs=(24.5, 26.1, 5)), eager)
    assert overlapping.words == f"no difference claimed ({why})"
    assert FN.resolved(FN.Estimate(80.0, machine="gpu", why=why), eager).words == f"no difference claimed ({why})"


def test_run_range_reads_the_samples_in_the_unit_printed():
    row = {"source": "deploybench", "status": "ok", "valid": True, "gen_tokens": 64}
    row |= {"decode_tps": 24.0, "decode_tps_samples": [25.0, 22.7, 24.0, 23.5, 24.9]}
    assert Q.run_range(Q.get("decode_tps"), row) == (22.7, 25.0, 5)
    row |= {"e2e_ms_p50": 2000.0, "e2e_tps": 32.0, "e2e_ms_samples": [1600.0, 2000.0, 2500.0]}
    low, high, n = Q.run_range(Q.get("e2e_tps"), row)  # tok/s is the inverse of the wall time
    assert (round(low, 3), round(high, 3), n) == (25.6, 40.0, 3)
    assert Q.run_range(Q.get("decode_tps"), row | {"decode_tps_samples": [24.0]}) is None


def test_a_study_finding_lists_its_comparisons_one_by_one_in_html_and_tex(tmp_path):
    ctx = build_report(demo_frame("gpu"), demo_settings("gpu"))
    (main,) = [f for f in ctx["findings"] if f.id == "model-main"]
    assert main.head.startswith("Study main, by model") and len(main.items) >= 2
    assert main.text == main.head + " " + " ".join(main.items)
    templates = Path(__file__).resolve().parents[2] / "workflow" / "templates"
    paths = render_report(demo_frame("gpu"), demo_settings("gpu"), tmp_path, templates, pdf=False)
    html = paths["html"].read_text()
    start = html.index('<li id="finding-model-main">')
    block = html[start : html.index("</ul>", start)]
    assert block.count("<li>") == len(main.items) and main.head in block
    tex = paths["tex"].read_text()
    assert tex.count("\\begin{itemize}") >= 1
