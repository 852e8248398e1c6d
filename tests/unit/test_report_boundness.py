"""What bounds each decode figure: busy fraction and verdict beside it, host-bound notes and findings,
the attention comparison, both roofline fractions, and the machines and methodology facts behind them.

The frames are tests/fixtures/report_demo.py's: its GPU variant has host-bound eager cells and
memory-bound compiled ones, its CPU variant has every boundness column null with the reason.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest

from deploybench.analytic import boundness
from deploybench.instruments import calibration
from deploybench.report import appendix, builder
from deploybench.report import findings as FN
from deploybench.report.data import ReportData
from deploybench.report.figures import SPECS as FIGURES
from deploybench.report.figures import build as build_figure
from deploybench.report.render import build_report, render_report
from deploybench.report.specs import BY_ID, SPECS
from tests.fixtures.report_demo import demo_config, demo_frame, on_second_machine

DECODE = ("decode_tps", "tpot_ms", "itl_ms_p50", "roofline_fraction")
CPU_REASON = "device is cpu: no CUDA device to profile or calibrate"
TEMPLATES = Path(__file__).resolve().parents[2] / "workflow" / "templates"


@functools.cache
def frame(variant: str):
    return demo_frame(variant), demo_config(variant)


def data(variant: str = "gpu") -> ReportData:
    return ReportData(*frame(variant))


def tables(tid: str, variant: str = "gpu") -> list:
    return builder.build(BY_ID[tid], data(variant))


def ours(df, **axes):
    sel = df[df.source == "deploybench"]
    for col, v in axes.items():
        sel = sel[sel[col] == v]
    return sel


def test_every_decode_table_shows_busy_and_verdict_beside_its_decode_figures():
    shown = 0
    for spec in SPECS:
        if not set(DECODE) & set(spec.metrics):
            continue
        for t in tables(spec.id):
            if t.skipped:
                continue
            shown += 1
            keys = [c.key for c in t.columns] + [row.key.get("metric") for row in t.rows]
            for name in ("gpu_busy_fraction", "bound_by"):
                assert any(str(k).startswith(name) for k in keys), (t.id, name)
    assert shown >= 8  # latency, tps-context, tps-change, APE, decoding, context scaling, precision, backend, ...
    (lat,) = tables("table-latency-ref")
    keys = [c.key for c in lat.columns]
    assert keys.index("gpu_busy_fraction") == keys.index("tpot_ms") + 1
    assert keys.index("bound_by") == keys.index("gpu_busy_fraction") + 1
    df, _ = frame("gpu")
    row = ours(df, model="qwen3-32b", context_tokens=2048, backend="eager", dtype="bfloat16", decoding="greedy")
    assert lat.cell("gpu_busy_fraction", model="qwen3-32b").value == pytest.approx(row.gpu_busy_fraction.iloc[0] * 100)
    assert lat.cell("bound_by", model="qwen3-32b").text == "host" == row.bound_by.iloc[0]
    back = tables("table-backend")[0]  # study serving
    assert back.cell("bound_by", model="qwen3-32b", backend="compiled").text == "memory_bandwidth"


def test_a_host_bound_cell_notes_that_its_decode_figure_measures_the_host():
    (lat,) = tables("table-latency-ref")
    for column in ("decode_tps", "tpot_ms", "roofline_fraction", "roofline_fraction_gemv"):
        c = lat.cell(column, model="qwen3-32b")
        assert c.text.endswith(" ‡") and "measures the host CPU (AMD EPYC 9654" in c.note, column
        assert "7.10 µs per CUDA launch" in c.note
        assert c.host == "AMD EPYC 9654 96-Core Processor, 7.10 µs per CUDA launch"
    assert not lat.cell("ttft_ms", model="qwen3-32b").text.endswith("‡")  # prefill is not a decode figure
    (note,) = [n for n in lat.notes if n.startswith("‡")]
    assert f"less than {boundness.HOST_BELOW:.0%}" in note and "AMD EPYC 9654" in note and "7.10 µs" in note
    back = tables("table-backend")[0]  # study serving
    assert not back.cell("decode_tps", model="qwen3-32b", backend="compiled").text.endswith("‡")
    assert back.cell("decode_tps", model="qwen3-32b", backend="eager").text.endswith("‡")


def test_html_tooltip_and_latex_footnote_mark(tmp_path):
    paths = render_report(*frame("gpu"), tmp_path, TEMPLATES, pdf=False)
    html, tex = paths["html"].read_text(), paths["tex"].read_text()
    assert "host-bound: the GPU is busy 46% of each decode step; this figure measures the host CPU" in html
    assert "\\ddag{}" in tex and "host-bound cell" in tex


def test_cpu_run_leaves_the_boundness_columns_out_and_says_why():
    (lat,) = tables("table-latency-ref", "cpu")
    keys = [c.key for c in lat.columns]
    assert "gpu_busy_fraction" not in keys and "bound_by" not in keys and "decode_tps" in keys
    assert any(n.startswith("Left out") and "GPU busy (% of step), bound by" in n for n in lat.notes)
    (tps,) = tables("table-tps-context", "cpu")
    assert {row.key["metric"] for row in tps.rows} == {"e2e_tps", "decode_tps"}  # the blank metric rows are gone
    assert any("GPU busy (% of step), bound by" in n for n in tps.notes)
    ctx = build_report(*frame("cpu"))
    assert not [f for f in ctx["findings"] if f.id.startswith("host")]
    (said,) = [m for m in ctx["summary"]["missing"] if m.startswith("Boundness")]
    assert f"was not measured ({CPU_REASON})" in said
    latency = next(s for s in ctx["sections"] if s["id"] == "sec-latency")
    assert "bound by the CPU" not in latency["intro"]


def test_host_bound_finding_per_study_with_its_count():
    df, cfg = frame("gpu")
    f = {x.id: x for x in FN.findings(data())}["host"]  # one finding, counted per study
    host = ours(df, bound_by="host")
    main = ours(df, backend="eager", dtype="bfloat16", decoding="greedy", gen_tokens=64)
    main = main[main.model.isin(cfg["studies"]["main"]["models"]) & main.context_tokens.isin([128, 512, 1024, 2048])]
    assert f.numbers["main"]["host_bound"] == (main.bound_by == "host").sum() == 12
    serving = ours(df, context_tokens=2048, dtype="bfloat16", decoding="greedy")
    serving = serving[serving.model.isin(["gpt-oss-20b", "qwen3-32b"]) & serving.backend.isin(["eager", "compiled"])]
    nums = f.numbers["serving"]
    assert (nums["host_bound"], nums["cells"]) == ((serving.bound_by == "host").sum(), len(serving))
    assert sorted(nums["busy"]) == pytest.approx(sorted(serving[serving.bound_by == "host"].gpu_busy_fraction * 100))
    assert "serving: 2 of 4 cells" in f.text and f.text.startswith("Host-bound cells, by study (main: 12 of 12 cells")
    lo, hi = host.gpu_busy_fraction.min() * 100, host.gpu_busy_fraction.max() * 100
    assert f"the GPU is busy {lo:.0f} to {hi:.0f}% of each decode step" in f.text
    assert "AMD EPYC 9654 96-Core Processor, 7.10 µs per CUDA launch" in f.text
    assert "measure the host CPU more than the GPU" in f.text
    assert set(f.numbers) == set(cfg["studies"])  # every study of the demo has an eager bf16 cell

    gpu_bound = df.assign(bound_by=df.bound_by.where(df.source != "deploybench", "memory_bandwidth"))
    assert not [x for x in FN.findings(ReportData(gpu_bound, cfg)) if x.id.startswith("host")]


def test_the_latency_section_says_eager_decode_is_bound_by_the_cpu():
    df, cfg = frame("gpu")
    eager = ours(df, backend="eager").dropna(subset=["gpu_busy_fraction"])
    host = eager[eager.bound_by == "host"]
    sentence = FN.eager_bound(data())
    assert sentence.startswith(" Eager decode on this kind of host is bound by the CPU")
    assert f"in {len(host)} of the {len(eager)} profiled eager cells" in sentence
    assert f"{host.gpu_busy_fraction.min() * 100:.0f} to {host.gpu_busy_fraction.max() * 100:.0f}%" in sentence
    ctx = build_report(df, cfg)
    assert sentence.strip() in next(s for s in ctx["sections"] if s["id"] == "sec-latency")["intro"]
    gpu_bound = df.assign(bound_by="memory_bandwidth", gpu_busy_fraction=0.95)
    assert FN.eager_bound(ReportData(gpu_bound, cfg)).startswith(" Eager decode is not bound by the host here")


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
        assert t.cell(f"d_ttft_ms@{ctx}", model=eager).value == pytest.approx((b.ttft_ms / a.ttft_ms - 1) * 100)
        assert t.cell(f"d_decode_tps@{ctx}", model=eager).value == pytest.approx(
            (b.decode_tps / a.decode_tps - 1) * 100
        )
        assert t.cell(f"d_decode_tps@{ctx}", model=base).kind == "baseline"
    for ctx in (512, 2048):
        b = ours(df, model="qwen3-32b-eager", context_tokens=ctx, backend="eager").iloc[0]
        assert t.cell(f"bound_by@{ctx}", model="qwen3-32b-eager").text == b.bound_by
        assert t.cell(f"gpu_busy_fraction@{ctx}", model="qwen3-32b-eager").value == pytest.approx(
            b.gpu_busy_fraction * 100
        )
    keys = [c.key for c in t.columns]
    assert keys[keys.index("decode_tps@512") + 2 : keys.index("decode_tps@512") + 4] == [
        "gpu_busy_fraction@512",
        "bound_by@512",
    ]
    # The change is against the same-card entry, whatever the report's baseline model is.
    df, cfg = frame("gpu")
    other = {**cfg, "analysis": {**cfg["analysis"], "baseline_model": "qwen3-32b-eager"}}
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
    for key in ("roofline_fraction", "roofline_fraction_gemv"):
        assert t.cell(key, model="gpt-oss-20b-all").value == pytest.approx(row[key] * 100)
    fig = build_figure(next(s for s in FIGURES if s.id == "fig-roofline"), data())
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
    assert t.cell("m1", field="code_revision").text == "4f3c2a1b9d8e+dirty"
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
    assert f"{calibration.GEMM_SIZE}³" in calib and "25600x5120" in calib and "2.10 to 3.90 TB/s" in calib
    assert "3.00 to" in t.cell("value", item="Prefill energy window").text
    assert "from 52.0 °C to 39.0 °C" in t.cell("value", item="Idle cool-down (until the temperature settles)").text
    (cpu,) = appendix.methodology(data("cpu"))
    assert (
        f"GPU busy here: not measured ({CPU_REASON})" in cpu.cell("value", item="Boundness (GPU busy, bound by)").text
    )
    assert "not measured (unavailable: no NVML device (cpu))" in cpu.cell("value", item="Prefill energy window").text
