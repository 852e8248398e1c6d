"""What bounds each decode figure: the verdict with its evidence beside it, host-paced marks (judged run by run) and
findings, the attention comparison, both roofline fractions, and the machines and methodology facts behind them.

The frames are tests/fixtures/report_demo.py's: its GPU variant has host-bound eager cells and
memory-bound compiled ones, its CPU variant has every boundness column null with the reason.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest

from deploybench.analytic import boundness
from deploybench.report import appendix, builder, pacing
from deploybench.report import findings as FN
from deploybench.report import fmt as F
from deploybench.report.data import ReportData
from deploybench.report.figures import SPECS as FIGURES
from deploybench.report.figures import build as build_figure
from deploybench.report.render import build_report, render_report
from deploybench.report.specs import BY_ID, SPECS
from deploybench.results import metrics
from tests.fixtures.report_demo import demo_frame, demo_settings, on_second_machine

DECODE = ("decode_tps", "tpot_ms", "itl_ms_p50", "roofline_fraction")
CPU_REASON = "device is cpu: no CUDA device to profile or calibrate"
TEMPLATES = Path(__file__).resolve().parents[2] / "workflow" / "templates"


@functools.cache
def frame(variant: str):
    return demo_frame(variant), demo_settings(variant)


def data(variant: str = "gpu") -> ReportData:
    return ReportData(*frame(variant))


def tables(tid: str, variant: str = "gpu") -> list:
    return builder.build(BY_ID[tid], data(variant))


def ours(df, **axes):
    sel = df[df.source == "deploybench"]
    for col, v in axes.items():
        sel = sel[sel[col] == v]
    return sel


def test_every_decode_table_shows_the_verdict_with_its_evidence_beside_its_decode_figures():
    shown = 0
    for spec in SPECS:
        if not set(DECODE) & set(spec.metrics):
            continue
        for t in tables(spec.id):
            if t.skipped:
                continue
            shown += 1
            keys = [c.key for c in t.columns] + [row.key.get("metric") for row in t.rows]
            assert any(str(k).startswith("bound_by") for k in keys), t.id
    assert shown >= 8  # latency, tps-context, tps-change, APE, decoding, context scaling, precision, backend, ...
    (lat,) = tables("table-latency-ref")
    keys = [c.key for c in lat.columns]
    assert keys.index("bound_by") == keys.index("tpot_ms") + 1
    df, _ = frame("gpu")
    row = ours(df, model="qwen3-32b", context_tokens=2048, backend="eager", dtype="bfloat16", decoding="greedy")
    verdict = lat.cell("bound_by", model="qwen3-32b")
    busy = [row.gpu_kernel_ms_per_token.iloc[0] * v / 1000 for v in row.decode_tps_samples.iloc[0]]
    assert verdict.raw == "host" == row.bound_by.iloc[0]
    assert verdict.text == f"host (20/20 runs host-paced; busy {min(busy) * 100:.0f}–{max(busy) * 100:.0f}%)"
    back = tables("table-backend")[0]  # study serving
    compiled = ours(df, model="qwen3-32b", context_tokens=2048, backend="compiled", dtype="bfloat16").iloc[0]
    said = back.cell("bound_by", model="qwen3-32b", backend="compiled").text
    roof = f"{compiled.roofline_fraction * 100:.0f}% of copy roof"
    assert said == f"memory bandwidth (busy {compiled.gpu_busy_fraction * 100:.0f}%; {roof})"


def test_a_host_paced_cell_marks_every_figure_its_decode_pace_moves():
    (lat,) = tables("table-latency-ref")
    for column in ("decode_tps", "tpot_ms", "roofline_fraction", "e2e_tps", "e2e_ms_p50"):
        c = lat.cell(column, model="qwen3-32b")
        assert c.text.endswith(" ‡") and "measures the host CPU (AMD EPYC 9654" in c.note, column
        assert "host-paced in 20 of 20 decode runs" in c.note and "7.10 µs per CUDA launch" in c.note
        assert c.host == "AMD EPYC 9654 96-Core Processor, 7.10 µs per CUDA launch"
    assert not lat.cell("ttft_ms", model="qwen3-32b").text.endswith("‡")  # prefill is not paced by the decode
    (note,) = [n for n in lat.notes if n.startswith("‡")]
    assert f"less than {boundness.HOST_BELOW:.0%}" in note and "AMD EPYC 9654" in note
    back = tables("table-backend")[0]  # study serving
    assert not back.cell("decode_tps", model="qwen3-32b", backend="compiled").text.endswith("‡")
    assert back.cell("decode_tps", model="qwen3-32b", backend="eager").text.endswith("‡")
    # Energy, tokens per joule and APE come from the same host-paced runs: marked too (they were not, before).
    (energy,) = tables("table-energy")
    for column in ("j_per_1k_tokens", "tokens_per_j", "e2e_tps", "j_per_decode_token"):
        assert energy.cell(column, model="qwen3-32b").text.endswith("‡"), column
    assert not energy.cell("j_per_prompt_token", model="qwen3-32b").text.endswith("‡")  # the prefill window
    (ape,) = tables("table-ape")
    for column in ("ape_e2e_tps_per_active_b", "ape_decode_tps_per_active_b", "ape_tokens_per_j_per_active_b"):
        assert "‡" in ape.cell(column, model="qwen3-32b").text, column
    assert "‡" not in ape.cell("ape_inv_ttft_per_s_per_active_b", model="qwen3-32b").text
    # Its changes against the baseline are not claimed: 'n.r. ‡', the number kept only as the raw figure.
    change = energy.cell("d_j_per_1k_tokens", model="yi-34b")
    assert change.text == "n.r. ‡" and change.value is None and "host-paced" in change.note


def test_one_host_paced_run_marks_a_cell_whose_median_is_gpu_paced():
    """A median step busy 57% ('mixed') with 2 of its 5 runs below 50%: the cell is host-paced (the issue's Yi-34B)."""
    df, cfg = frame("gpu")
    df = df.copy()
    yi = (df.model == "yi-34b") & (df.source == "deploybench") & (df.context_tokens == 2048) & (df.backend == "eager")
    yi &= (df.dtype == "bfloat16") & (df.decoding == "greedy")
    (i,) = df.index[yi]
    speeds = [20.13, 15.63, 25.40, 26.12, 25.71]
    df.at[i, "decode_tps_samples"] = speeds
    df.loc[i, ["decode_tps", "gpu_kernel_ms_per_token", "gpu_busy_fraction", "bound_by"]] = [
        25.40,
        22.375,
        0.568,
        "mixed",
    ]
    (lat,) = builder.build(BY_ID["table-latency-ref"], ReportData(df, cfg))
    assert lat.cell("bound_by", model="yi-34b").text == "mixed (2/5 runs host-paced; busy 35–58%)"
    assert lat.cell("decode_tps", model="yi-34b").text.endswith("‡")
    assert "host-paced in 2 of 5 decode runs" in lat.cell("decode_tps", model="yi-34b").note
    df.at[i, "decode_tps_samples"] = [25.0, 25.4, 25.6, 25.8, 26.1]  # every run GPU-paced: no mark
    (lat,) = builder.build(BY_ID["table-latency-ref"], ReportData(df, cfg))
    assert not lat.cell("decode_tps", model="yi-34b").text.endswith("‡")
    assert lat.cell("bound_by", model="yi-34b").text == "mixed (busy 56–58%)"


def test_a_gpu_paced_step_far_below_both_roofs_is_bound_by_neither():
    row = {"gpu_busy_fraction": 0.945, "bound_by": "memory_bandwidth", "roofline_fraction": 0.275, "decode_tps": 158.5}
    row |= {"roofline_compute_tps": 93000.0, "gpu_kernel_ms_per_token": 5.96, "decode_tps_samples": [158.4, 158.6]}
    assert pacing.verdict(row) == ("neither", "busy 94%; 28% of copy roof")
    assert pacing.verdict(row | {"roofline_fraction": 0.64}) == ("memory_bandwidth", "busy 94%; 64% of copy roof")


def test_html_tooltip_and_latex_footnote_mark(tmp_path):
    paths = render_report(*frame("gpu"), tmp_path, TEMPLATES, pdf=False)
    html, tex = paths["html"].read_text(), paths["tex"].read_text()
    assert "host-paced in 20 of 20 decode runs (GPU busy" in html and "this figure measures the host CPU" in html
    assert "\\ddag{}" in tex and "host-paced" in tex


def test_cpu_run_leaves_the_boundness_columns_out_and_says_why():
    (lat,) = tables("table-latency-ref", "cpu")
    keys = [c.key for c in lat.columns]
    assert "bound_by" not in keys and "decode_tps" in keys
    assert any(n.startswith("Left out") and "bound by" in n for n in lat.notes)
    (tps,) = tables("table-tps-context", "cpu")
    assert {row.key["metric"] for row in tps.rows} == {"e2e_tps", "decode_tps"}  # the blank metric rows are gone
    assert any("bound by" in n for n in tps.notes)
    ctx = build_report(*frame("cpu"))
    assert not [f for f in ctx["findings"] if f.id.startswith("host")]
    (said,) = [m for m in ctx["summary"]["missing"] if m.startswith("Boundness")]
    assert f"was not measured ({CPU_REASON})" in said


def test_host_paced_finding_per_study_with_its_count():
    df, cfg = frame("gpu")
    f = {x.id: x for x in FN.findings(data())}["host"]  # one finding, counted per study
    host = ours(df, bound_by="host")
    main = ours(df, backend="eager", dtype="bfloat16", decoding="greedy", gen_tokens=64)
    main = main[main.model.isin(cfg.studies["main"].models) & main.context_tokens.isin([128, 512, 1024, 2048])]
    assert f.numbers["main"]["host_paced"] == (main.bound_by == "host").sum() == 12
    serving = ours(df, context_tokens=2048, dtype="bfloat16", decoding="greedy")
    serving = serving[serving.model.isin(["gpt-oss-20b", "qwen3-32b"]) & serving.backend.isin(["eager", "compiled"])]
    nums = f.numbers["serving"]
    assert (nums["host_paced"], nums["cells"]) == ((serving.bound_by == "host").sum(), len(serving))
    assert sorted(nums["busy"]) == pytest.approx(sorted(serving[serving.bound_by == "host"].gpu_busy_fraction * 100))
    assert "serving: 2 of 4 cells" in f.text and f.text.startswith("Host-paced cells, by study (main: 12 of 12 cells")
    runs = [k * v / 1000 for k, s in zip(host.gpu_kernel_ms_per_token, host.decode_tps_samples) for v in s]
    assert f"the GPU was busy {min(runs) * 100:.0f} to {max(runs) * 100:.0f}% of each step" in f.text
    assert "AMD EPYC 9654 96-Core Processor, 7.10 µs per CUDA launch" in f.text
    assert "measure the host CPU more than the GPU" in f.text
    assert set(f.numbers) == set(cfg.studies)  # every study of the demo has an eager bf16 cell

    gpu_bound = df.assign(bound_by=df.bound_by.where(df.source != "deploybench", "memory_bandwidth"))
    gpu_bound = gpu_bound.assign(gpu_kernel_ms_per_token=None)  # no per-run evidence: the median's verdict
    assert not [x for x in FN.findings(ReportData(gpu_bound, cfg)) if x.id.startswith("host")]


def test_attention_table_compares_entries_at_each_context():
    (t,) = tables("table-attention")
    entries = ["qwen3-32b", "qwen3-32b-eager", "yi-34b", "yi-34b-eager"]
    assert t.skipped is None and [row.key["model"] for row in t.rows] == entries
    assert t.cell("attn_implementation", model="qwen3-32b").text == "sdpa"
    assert t.cell("attn_implementation", model="qwen3-32b-eager").text == "eager"
    df, _ = frame("gpu")
    # Each eager entry against its own model's default-attention entry (yi-34b-eager against yi-34b, not
    # against the study's first entry qwen3-32b).
    for ctx, (base, eager) in itertools.product((512, 2048), (entries[:2], entries[2:])):
        a, b = (ours(df, model=m, context_tokens=ctx, backend="eager").iloc[0] for m in (base, eager))
        assert t.cell(f"ttft_ms@{ctx}", model=eager).value == b.ttft_ms
        ttft = t.cell(f"d_ttft_ms@{ctx}", model=eager)  # resolved: the range the two intervals bound
        assert ttft.value == pytest.approx((b.ttft_ms / a.ttft_ms - 1) * 100)
        lo, hi = (
            (b.ttft_ms_ci95_low / a.ttft_ms_ci95_high - 1) * 100,
            (b.ttft_ms_ci95_high / a.ttft_ms_ci95_low - 1) * 100,
        )
        assert ttft.text == f"{F.fmt_pct(lo)} to {F.fmt_pct(hi)}" and "higher" in ttft.note
        decode = t.cell(f"d_decode_tps@{ctx}", model=eager)  # host-paced on both sides: not compared
        assert decode.text == "n.r. ‡" and decode.raw == pytest.approx((b.decode_tps / a.decode_tps - 1) * 100)
        assert t.cell(f"d_decode_tps@{ctx}", model=base).kind == "baseline"
    for ctx in (512, 2048):
        b = ours(df, model="qwen3-32b-eager", context_tokens=ctx, backend="eager").iloc[0]
        assert t.cell(f"bound_by@{ctx}", model="qwen3-32b-eager").raw == b.bound_by
        assert t.cell(f"bound_by@{ctx}", model="qwen3-32b-eager").text.startswith(f"{b.bound_by} (")
    keys = [c.key for c in t.columns]
    assert keys[keys.index("decode_tps@512") + 2] == "bound_by@512"
    # The change is against the same-card entry, whatever the report's baseline model is.
    df, cfg = frame("gpu")
    other = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"baseline_model": "qwen3-32b-eager"})})
    (t2,) = builder.build(BY_ID["table-attention"], ReportData(df, other))
    assert t2.cell("d_ttft_ms@2048", model="qwen3-32b").kind == "baseline"
    (skipped,) = tables("table-attention", "cpu")
    assert skipped.skipped == "the config has no attention_comparison study"


def test_experts_table_and_roofline_say_which_experts_the_bytes_count():
    (t,) = tables("table-experts")
    assert t.cell("experts_read_per_token", model="gpt-oss-20b").text == "routed"
    assert t.cell("experts_read_per_token", model="gpt-oss-20b-all").text == "all"
    df, _ = frame("gpu")
    row = ours(df, model="gpt-oss-20b-all").iloc[0]
    assert t.cell("params_read_per_token", model="gpt-oss-20b-all").value == pytest.approx(row.all_experts_params / 1e9)
    assert [c.header for c in t.columns if c.key == "params_read_per_token"] == ["params read per token (B)"]
    assert t.cell("roofline_fraction", model="gpt-oss-20b-all").value == pytest.approx(row.roofline_fraction * 100)
    fig = build_figure(next(s for s in FIGURES if s.id == "fig-roofline"), data())
    assert fig.skipped.startswith("copy roofline fraction and GEMV roofline fraction not drawn: every cell")
    gpu = frame("gpu")[0].assign(decode_tps_samples=None, bound_by="memory_bandwidth")  # not host-paced
    fig = build_figure(next(s for s in FIGURES if s.id == "fig-roofline"), ReportData(gpu, frame("gpu")[1]))
    assert [p.title.split(" ↑")[0] for p in fig.panels] == ["copy roofline fraction", "GEMV roofline fraction"]
    assert "(gpt-oss-20b: routed, qwen3-32b: n/a, yi-34b: n/a)" in fig.caption
    (energy,) = tables("table-energy")
    ref = ours(df, model="yi-34b", context_tokens=2048, backend="eager", decoding="greedy", dtype="bfloat16").iloc[0]
    assert energy.cell("j_per_prompt_token", model="yi-34b").value == ref.j_per_prompt_token
    assert energy.cell("j_per_decode_token", model="yi-34b").value == ref.j_per_decode_token


def test_machines_table_shows_the_host_and_code_of_each_machine():
    df, cfg = frame("gpu")
    (t,) = appendix.environment(ReportData(on_second_machine(df, "qwen3-32b-eager"), cfg))
    assert [c.header for c in t.columns] == ["Field", "Machine 1", "Machine 2", "Machine 3"]
    assert t.cell("m0", field="cpu_model").text == "AMD EPYC 9654 96-Core Processor"
    assert t.cell("m1", field="cpu_model").text == "Intel(R) Xeon(R) Platinum 8480+"
    assert t.cell("m0", field="cpu_count").text == "16"
    assert t.cell("m0", field="python_loop_ns").text == "28.4 ns"
    assert t.cell("m1", field="python_loop_ns").text == "36.9 ns"
    assert t.cell("m0", field="power_limit_w").text == "700 W"
    assert t.cell("m0", field="code_revision").text == "4f3c2a1b9d8e"
    assert t.cell("m1", field="code_revision").text.startswith("4f3c2a1b9d8e+dirty (uncommitted changes: this commit")
    assert t.cell("m0", field="source_sha256").text == "5eed" * 3
    assert t.cell("m2", field="cpu_model").kind == "missing"  # the study's imported rows do not say
    f = {x.id: x for x in FN.findings(ReportData(on_second_machine(df, "qwen3-32b-eager"), cfg))}
    assert "attention (2)" in f["devices"].numbers["mixed_studies"]


def test_methodology_says_how_boundness_calibration_and_energy_windows_work():
    (t,) = appendix.methodology(data())
    bound = t.cell("value", item="Boundness (GPU busy, bound by)").text
    assert (
        f"host below {boundness.HOST_BELOW:.0%} busy" in bound and f"mixed below {boundness.GPU_AT_LEAST:.0%}" in bound
    )
    assert "a one-token and a 16-token generate" in bound
    calib = t.cell("value", item="GEMV and GEMM calibration").text
    gemm = metrics.get("gemm_flops_per_s").parameter("gemm_size")
    assert f"{gemm}³" in calib and "25600x5120" in calib and "2.10 to 3.90 TB/s" in calib
    assert "3.00 to" in t.cell("value", item="Prefill energy window").text
    assert "from 52.0 °C to 39.0 °C" in t.cell("value", item="Idle cool-down (until the temperature settles)").text
    (cpu,) = appendix.methodology(data("cpu"))
    assert (
        f"GPU busy here: not measured ({CPU_REASON})" in cpu.cell("value", item="Boundness (GPU busy, bound by)").text
    )
    assert "not measured (unavailable: no NVML device (cpu))" in cpu.cell("value", item="Prefill energy window").text
