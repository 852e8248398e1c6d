"""Report tables: every printed number is the frame's number, and bad input never prints nan/None.

The frames are built here (a hand-written one through deploybench.results.schema.to_table, and the
synthetic one of tests/fixtures/report_demo.py); nothing depends on deploybench.results.ape/tpot/importer.
Study tables are built from their specs (deploybench.report.specs) by the one builder.
"""

from __future__ import annotations

import functools
import math
import re

import pandas as pd
import pytest

from deploybench.plan.config import validate_config
from deploybench.report import appendix, builder, imported
from deploybench.report import findings as FN
from deploybench.report import fmt as F
from deploybench.report.data import ReportData
from deploybench.report.quantities import REST
from deploybench.report.render import build_report
from deploybench.report.specs import BY_ID
from deploybench.results.schema import to_table
from tests.fixtures.report_demo import demo_frame, demo_settings

BAD = re.compile(r"(?<![\w-])(nan|NaN|None|inf|null)(?![\w-])")

# ------------------------------------------------------------------ a hand-written frame


def _row(model, ctx, **kw):
    base = {
        "cell_id": f"{model}/eager-bfloat16/c{ctx}-g8-greedy",
        "model": model,
        "backend": "eager",
        "dtype": "bfloat16",
        "context_tokens": ctx,
        "gen_tokens": 8,
        "decoding": "greedy",
        "source": "deploybench",
        "status": "ok",
        "valid": True,
        "invalid_reasons": [],
        "weights_source": "random",
        "total_params": 20_000_000_000,
        "active_params": 4_000_000_000,
        "n_runs": 5,
        "warmup_runs": 1,
    }
    return base | kw


CARDS = {"moe": "workflow/architectures/tiny-gpt-oss.json", "dense": "workflow/architectures/tiny-qwen3.json"}
HAND_CONFIG = validate_config(
    {
        "models": {
            "moe": {"source": "random", "architecture": CARDS["moe"]},
            "dense": {"source": "random", "architecture": CARDS["dense"], "metadata": {"license": "Apache-2.0"}},
        },
        "decoding": {"greedy": {"do_sample": False}},
        "studies": {
            "main": {"kind": "main_comparison", "models": ["moe", "dense"], "contexts": [64, 256], "gen": [8]},
            "prec": {
                "kind": "precision_sweep",
                "models": ["moe"],
                "contexts": [256],
                "gen": [8],
                "dtypes": ["bfloat16", "float16"],
            },
        },
        "analysis": {
            "baseline_model": "dense",
            "reference_cell": {"context": 256, "gen": 8, "decoding": "greedy", "dtype": "bfloat16", "backend": "eager"},
        },
    }
)


def table(data: ReportData, tid: str) -> list:
    """The tables the spec `tid` gives for this data (one per study of its kind)."""
    return builder.build(BY_ID[tid], data)


@pytest.fixture()
def hand_frame() -> pd.DataFrame:
    rows = [
        _row(
            "moe",
            64,
            ttft_ms=12.3456,
            e2e_ms_p50=250.0,
            e2e_ms_p95=260.0,
            e2e_tps=32.0,
            decode_tps=33.5,
            tpot_ms=1000 / 33.5,
            peak_allocated_bytes=41_234_567_890,
            weights_bytes=40_000_000_000,
            kv_cache_bytes=5_000_000,
            j_per_1k_tokens=5000.0,
            tokens_per_j=0.2,
        ),
        _row(
            "moe",
            256,
            ttft_ms=45.678,
            e2e_ms_p50=300.0,
            e2e_ms_p95=321.5,
            e2e_tps=26.6667,
            decode_tps=30.1,
            tpot_ms=1000 / 30.1,
            peak_allocated_bytes=41_500_000_000,
            weights_bytes=40_000_000_000,
            kv_cache_bytes=20_000_000,
            j_per_1k_tokens=6000.0,
            tokens_per_j=1 / 6,
        ),
        _row(
            "dense",
            64,
            ttft_ms=20.0,
            e2e_ms_p50=500.0,
            e2e_ms_p95=510.0,
            e2e_tps=16.0,
            decode_tps=16.5,
            tpot_ms=1000 / 16.5,
            peak_allocated_bytes=66_000_000_000,
            weights_bytes=65_000_000_000,
            kv_cache_bytes=30_000_000,
            j_per_1k_tokens=12000.0,
            tokens_per_j=1 / 12,
        ),
        _row(
            "dense",
            256,
            ttft_ms=80.0,
            e2e_ms_p50=640.0,
            e2e_ms_p95=700.0,
            e2e_tps=12.5,
            decode_tps=13.0,
            tpot_ms=1000 / 13.0,
            peak_allocated_bytes=66_500_000_000,
            weights_bytes=65_000_000_000,
            kv_cache_bytes=120_000_000,
            j_per_1k_tokens=15000.0,
            tokens_per_j=1 / 15,
        ),
        _row(
            "moe",
            256,
            cell_id="moe/eager-float16/c256-g8-greedy",
            dtype="float16",
            status="failed",
            failure_kind="unsupported",
            error="expected scalar type BFloat16 but found Half",
            valid=False,
        ),
    ]
    df = to_table(rows).to_pandas()
    active_b = df["active_params"] / 1e9
    df["ape_e2e_tps_per_active_b"] = (df["e2e_tps"] / active_b).where(df["status"] == "ok")
    return df


def test_latency_table_prints_the_frame_numbers(hand_frame):
    data = ReportData(hand_frame, HAND_CONFIG)
    (t,) = table(data, "table-latency-ref")
    assert t.skipped is None and t.id == "table-latency-ref"
    c = t.cell("ttft_ms", model="moe")
    assert c.value == 45.678 and c.text == "45.68"
    assert t.cell("e2e_ms_p95", model="moe").value == 321.5
    assert t.cell("e2e_tps", model="dense").value == 12.5 and t.cell("e2e_tps", model="dense").text == "12.50"
    assert t.cell("e2e_ms_p50", model="dense").text == "640.0"
    assert t.cell("runs", model="dense").text == "5"  # a row without ttft_runs/decode_runs: its n_runs
    headers = [c.header for c in t.columns]
    assert "TTFT (ms)" in headers and "e2e tok/s (tok/s)" in headers and "decode tok/s (tok/s)" in headers
    assert {c.key: c.better for c in t.columns}["ttft_ms"] == "lower"


def test_memory_in_decimal_gb_and_gap_with_stated_denominator(hand_frame):
    data = ReportData(hand_frame, HAND_CONFIG)
    (mem,), (gap,) = table(data, "table-memory"), table(data, "table-memory-gap")
    c = mem.cell("peak_allocated_bytes", model="moe")
    assert c.raw == 41_500_000_000 and c.value == pytest.approx(41.5) and c.text == "41.50"
    assert mem.cell(REST.name, model="moe").value == pytest.approx((41_500_000_000 - 40_000_000_000 - 20_000_000) / 1e9)
    g = gap.cell("vs_dense", model="moe")
    assert g.value == pytest.approx(41.5 - 66.5)
    assert g.raw["pct_below"] == pytest.approx((66.5 - 41.5) / 66.5 * 100)
    assert "37.6% below" in g.text and g.text.startswith("−25.0 GB")
    assert "denominator is B's peak" in gap.caption
    assert gap.cell("vs_moe", model="dense").text.startswith("+25.0 GB")


def test_energy_deltas_are_against_the_baseline(hand_frame):
    data = ReportData(hand_frame, HAND_CONFIG)
    (t,) = table(data, "table-energy")
    assert t.cell("j_per_1k_tokens", model="moe").value == 6000.0
    assert t.cell("d_j_per_1k_tokens", model="moe").value == pytest.approx((6000 / 15000 - 1) * 100)
    assert t.cell("d_j_per_1k_tokens", model="moe").text == "−60.0%"
    assert t.cell("d_e2e_tps", model="dense").kind == "baseline"
    assert any("% vs dense" == c.unit for c in t.columns)


def test_tps_change_from_shortest_to_longest_context(hand_frame):
    data = ReportData(hand_frame, HAND_CONFIG)
    (t,) = table(data, "table-tps-change")
    change = t.cell("d_e2e_tps", model="dense")  # no interval in these rows: the gate resolves nothing
    assert change.raw == pytest.approx((12.5 / 16.0 - 1) * 100) and change.value is None
    assert change.text == "n.r." and change.note.startswith("no difference claimed")


def test_failed_cell_shows_failed_and_its_reason(hand_frame):
    data = ReportData(hand_frame, HAND_CONFIG)
    (t,) = table(data, "table-precision")
    status = t.cell("status", model="moe", dtype="float16")
    assert status.text.startswith("failed: unsupported") and "BFloat16 but found Half" in status.text
    e2e = t.cell("e2e_tps", model="moe", dtype="float16")
    assert e2e.kind == "failed" and e2e.value is None
    assert t.cell("e2e_tps", model="moe", dtype="bfloat16").value == pytest.approx(26.6667)
    (f,) = appendix.failures(data)
    assert [r.key["cell_id"] for r in f.rows if r.status == "failed"] == ["moe/eager-float16/c256-g8-greedy"]


def test_study_absent_gives_a_skipped_table_with_the_reason(hand_frame):
    data = ReportData(hand_frame, HAND_CONFIG)
    for tid, kind in (
        ("table-decoding", "decoding_ablation"),
        ("table-backend", "backend_comparison"),
        ("table-context-scaling", "context_scaling"),
        ("table-experts", "experts_comparison"),
    ):
        (t,) = table(data, tid)
        assert t.skipped == f"the config has no {kind} study"


# ------------------------------------------------------------------ the synthetic frame


@pytest.fixture(scope="module")
def gpu():
    return demo_frame("gpu"), demo_settings("gpu")


def _ref_row(df, model, ctx=2048, dtype="bfloat16", backend="eager", dec="greedy"):
    sel = df[
        (df.model == model)
        & (df.context_tokens == ctx)
        & (df.dtype == dtype)
        & (df.backend == backend)
        & (df.decoding == dec)
        & (df.source == "deploybench")
    ]
    assert len(sel) == 1
    return sel.iloc[0]


def test_ape_table_values_and_ratios_come_from_the_frame(gpu):
    df, cfg = gpu
    data = ReportData(df, cfg)
    (t,) = table(data, "table-ape")
    row = _ref_row(df, "gpt-oss-20b")
    c = t.cell("ape_e2e_tps_per_active_b", model="gpt-oss-20b")
    assert c.value == row["ape_e2e_tps_per_active_b"]
    ape = row["ape_e2e_tps_per_active_b"]  # = gen / p50 / active B: its interval from the p50's, inverted
    ends = [F.fmt_num(ape * row.e2e_ms_p50 / row[f"e2e_ms_p50_ci95_{end}"]) for end in ("high", "low")]
    ratio = F.fmt_ratio(row["ratio_to_baseline_ape_e2e_tps_per_active_b"])
    assert c.text == f"{F.fmt_num(ape)} [{ends[0]},\u00a0{ends[1]}] ‡ ({ratio})"  # host-paced eager decode
    assert all(
        col.better == "higher" for col in t.columns if col.key.startswith("ape_") or col.key == "e2e_tps_per_peak_gb"
    )
    assert "higher is better" in t.caption


def test_decoding_and_context_deltas(gpu):
    df, cfg = gpu
    data = ReportData(df, cfg)
    (dec,) = table(data, "table-decoding")
    g = _ref_row(df, "gpt-oss-20b", ctx=128)
    k = _ref_row(df, "gpt-oss-20b", ctx=128, dec="top_k")
    assert dec.cell("d_e2e_tps", model="gpt-oss-20b", decoding="top_k").raw == pytest.approx(
        (k.e2e_tps / g.e2e_tps - 1) * 100
    )
    assert dec.cell("settings", model="gpt-oss-20b", decoding="top_k").text == "sampling, T 0.7, top-k 50"
    (cs,) = table(data, "table-context-scaling")
    first, last = _ref_row(df, "gpt-oss-20b", ctx=512), _ref_row(df, "gpt-oss-20b", ctx=4096)
    assert cs.cell("d_ttft_ms", model="gpt-oss-20b", context=4096).raw == pytest.approx(
        (last.ttft_ms / first.ttft_ms - 1) * 100
    )
    assert cs.cell("ttft_ms", model="gpt-oss-20b", context=4096).kind == "invalid"  # invalid cell: shown, flagged
    assert cs.cell("ttft_ms", model="gpt-oss-20b", context=4096).text.endswith("†")


def test_backend_governance_and_imported_tables(gpu):
    df, cfg = gpu
    df = df.assign(decode_tps_cv=[0.001 * (i + 1) for i in range(len(df))])  # a distinct CV per row
    data = ReportData(df, cfg)
    b = table(data, "table-backend")[0]  # study serving; the demo's loop study is table-backend-2
    comp = _ref_row(df, "qwen3-32b", backend="compiled")
    assert b.cell("decode_tps", model="qwen3-32b", backend="compiled").value == comp.decode_tps
    (lat,) = table(data, "table-latency-ref")
    eager = _ref_row(df, "qwen3-32b")
    assert lat.cell("decode_tps_cv", model="qwen3-32b").value == pytest.approx(eager.decode_tps_cv * 100)
    (gov,) = appendix.governance(data)
    assert gov.cell("yi-34b", field="license").text == "Yi Series Models Community License"
    assert gov.cell("gpt-oss-20b", field="model_card").href == "https://huggingface.co/openai/gpt-oss-20b"
    assert gov.cell("qwen3-32b", field="usage_policy").kind == "missing"
    (t,) = imported.figures(data)  # the study's figures at the reference cell beside ours measured its way
    theirs = df[(df.source != "deploybench") & (df.model == "yi-34b") & (df.context_tokens == 2048)].iloc[0]
    ours = _ref_row(df, "yi-34b")
    assert t.cell("theirs", metric="e2e_tps", model="yi-34b").value == theirs.e2e_tps
    assert t.cell("ratio", metric="e2e_tps", model="yi-34b").value == pytest.approx(ours.e2e_tps / theirs.e2e_tps)
    (tp,) = imported.tpot_check(data)
    flagged = [r for r in tp.rows if r.cells["flag"].text == "yes"]
    assert len(flagged) == int(df[df.source != "deploybench"].tpot_artifact.sum())


def test_a_compile_time_partly_from_the_machines_cache_is_marked_warm(gpu):
    df, cfg = gpu
    loaded = (df.model == "qwen3-32b") & (df.backend == "compiled")
    df = df.assign(compile_cache_hits=loaded.astype(int), compile_cache_misses=(~loaded).astype(int))
    b = table(ReportData(df, cfg), "table-backend")[0]
    warm = b.cell("compile_s", model="qwen3-32b", backend="compiled")
    assert warm.text.endswith("(warm)") and "1 compiled graphs loaded from the machine's Inductor cache" in warm.note
    cold = [c for r in b.rows if (c := r.cells.get("compile_s")) and c.value is not None and c is not warm]
    assert cold and not any(c.text.endswith("(warm)") for c in cold)
    assert sum("Inductor cache" in note for note in b.notes) == 1
    unmarked = table(ReportData(df.assign(compile_cache_hits=0), cfg), "table-backend")[0]
    assert not any("Inductor cache" in note for note in unmarked.notes)


def test_a_decode_steps_kernels_by_time_at_the_reference_cell(gpu):
    from deploybench.report import kernels

    df, cfg = gpu
    t = kernels.tables(ReportData(df, cfg))[0]
    ref = _ref_row(df, "qwen3-32b", backend="compiled_loop")
    group = [row for row in t.rows if row.key["model"] == "qwen3-32b" and row.key["backend"] == "compiled_loop"]
    assert len(group) == kernels.SHOWN + 1  # the three that take most time, then the other five in one line
    assert group[0].cells["kernel"].text == "nvjet_sm90_tst_256x8_64x6_4x1_v_bz_TNT"
    assert group[0].cells["kind"].text == "matmul" and group[2].cells["kind"].text == "triton"
    cut = group[1].cells["kernel"]  # cutlass::Kernel2<...>: cut, the whole name in the note
    assert cut.text.startswith("cutlass::Kernel2<cutlass_80_tensorop") and cut.text.endswith("…")
    assert cut.note.startswith("void cutlass::Kernel2<") and group[1].cells["model"].text == ""
    assert group[-1].cells["kernel"].text == "the other 5 kernels"
    assert sum(row.cells["calls"].value for row in group) == pytest.approx(ref.kernels_per_token)
    assert sum(row.cells["us"].value for row in group) == pytest.approx(ref.gpu_kernel_ms_per_token * 1000)
    assert sum(row.cells["share"].value for row in group) == pytest.approx(100)
    (cpu,) = kernels.tables(ReportData(demo_frame("cpu"), demo_settings("cpu")))
    assert cpu.skipped and "profiled on a CUDA device only" in cpu.skipped


def test_definitions_name_the_metric_in_every_tool():
    (t,) = appendix.definitions()
    assert t.cell("study", name="e2e_tps").text == "\u201cTPOT (tok/s)\u201d (TPOT_tokps)"
    assert t.cell("vllm", name="tpot_ms").text == "TPOT" and t.cell("mlperf", name="tpot_ms").text == "TPOT"
    assert t.cell("aiperf", name="e2e_ms_p50 / _p95 / _p99").text == "Request Latency"
    assert "Output Token Throughput Per User" in t.cell("aiperf", name="decode_tps").text
    assert "Inter Token Latency" in t.cell("aiperf", name="itl_ms_p50 / _p95 / _p99").text
    assert t.cell("vllm", name="itl_ms_p50 / _p95 / _p99").text == "ITL"


def test_environment_lists_every_machine(gpu):
    df, cfg = gpu
    (t,) = appendix.environment(ReportData(df, cfg))
    assert [c.header for c in t.columns] == ["Field", "Machine 1", "Machine 2"]
    assert t.cell("m0", field="device_name").text == "NVIDIA H200"
    assert t.cell("m1", field="device_name").text == "NVIDIA H100 NVL"


def test_findings_quote_the_frame(gpu):
    df, cfg = gpu
    f = {x.id: x for x in FN.findings(ReportData(df, cfg))}["model-main"]  # each model against the baseline model
    paced = {n["metric"]: n for n in f.numbers["pairs"] if n["cell"] == "gpt-oss-20b against qwen3-32b"}
    assert not paced["e2e_tps"]["claimed"] and "host-paced" in paced["e2e_tps"]["verdict"]  # the demo's eager cells
    df = df.assign(gpu_kernel_ms_per_token=None, bound_by="memory_bandwidth")  # the same rows, GPU-paced
    data = ReportData(df, cfg)
    f = {x.id: x for x in FN.findings(data)}["model-main"]
    nums = {n["metric"]: n for n in f.numbers["pairs"] if n["cell"] == "gpt-oss-20b against qwen3-32b"}
    a, b = _ref_row(df, "gpt-oss-20b"), _ref_row(df, "qwen3-32b")
    p = (a.e2e_tps / b.e2e_tps - 1) * 100
    assert nums["e2e_tps"]["pct"] == pytest.approx(p)
    # e2e tok/s = gen / p50: its interval is the frame's p50 interval, inverted; the ends bound the difference
    low = a.e2e_tps * a.e2e_ms_p50 / a.e2e_ms_p50_ci95_high / (b.e2e_tps * b.e2e_ms_p50 / b.e2e_ms_p50_ci95_low)
    high = a.e2e_tps * a.e2e_ms_p50 / a.e2e_ms_p50_ci95_low / (b.e2e_tps * b.e2e_ms_p50 / b.e2e_ms_p50_ci95_high)
    assert nums["e2e_tps"]["claimed"] and (nums["e2e_tps"]["low"], nums["e2e_tps"]["high"]) == pytest.approx(
        (low, high)
    )
    words = f"between {F.fmt_pct((low - 1) * 100, signed=False)} and {F.fmt_pct((high - 1) * 100, signed=False)} higher"
    assert f"e2e tok/s, gpt-oss-20b against qwen3-32b: {words}" in f.text
    q = (a.j_per_1k_tokens / b.j_per_1k_tokens - 1) * 100
    assert nums["j_per_1k_tokens"]["pct"] == pytest.approx(q) and not nums["j_per_1k_tokens"]["claimed"]
    assert "J per 1000 tokens ×2 (one measurement per cell)" in f.text
    # Peak memory, one measurement of the same bytes every run, is compared as it is
    gap = (a.peak_allocated_bytes - b.peak_allocated_bytes) / 1e9
    pct = F.fmt_pct((a.peak_allocated_bytes / b.peak_allocated_bytes - 1) * 100)
    assert f"peak memory, gpt-oss-20b against qwen3-32b: {F.fmt_num(gap, 3)} GB ({pct})" in f.text
    assert "(context 2048 tokens, 64 generated tokens, greedy, bfloat16, eager)" in f.text


def test_formatting_never_prints_nan():
    assert F.fmt_num(float("nan")) == F.DASH and F.fmt_num(None) == F.DASH and F.fmt_num(pd.NA) == F.DASH
    assert F.fmt_num(1611.0833) == "1,611" and F.fmt_num(0.14987) == "0.1499" and F.fmt_num(-2.5) == "−2.500"
    assert F.fmt_pct(-4.44) == "−4.4%" and F.fmt_pct(0.01) == "0.0%" and F.fmt_pct(math.inf) == F.DASH
    assert F.fmt_ratio(13.29) == "13.3×" and F.pct_change(1, 0) is None


# ------------------------------------------------------------------ missing or empty input


@functools.cache
def _variants():
    cfg = demo_settings("gpu")
    main = cfg.studies["main"].model_copy(update={"models": ["qwen3-32b"]})
    one = cfg.model_copy(update={"models": {"qwen3-32b": cfg.models["qwen3-32b"]}, "studies": {"main": main}})
    d_one = demo_frame("gpu", imported=False)
    d_one = d_one[d_one.model == "qwen3-32b"]
    no_energy = demo_frame("gpu", imported=False)
    for c in no_energy.columns:
        if (
            "j_per_1k" in c
            or "tokens_per_j" in c
            or c in ("energy_j", "energy_window_s", "avg_power_w", "idle_power_w")
        ):
            no_energy[c] = float("nan")
    no_energy["energy_source"] = "unavailable: no NVML device"
    failed = demo_frame("gpu", imported=False)
    failed["status"], failed["failure_kind"], failed["error"] = "failed", "oom", "CUDA out of memory"
    return {
        "one_model": (d_one, one, "one model only"),
        "no_energy": (no_energy, cfg, "Energy was not measured (unavailable: no NVML device)"),
        "only_failed": (failed, cfg, "Every measured cell failed"),
        "empty": (demo_frame("gpu").iloc[0:0], cfg, "no measured rows"),
        "none": (None, None, "no measured rows"),
        "cpu": (demo_frame("cpu"), demo_settings("cpu"), "Device memory was not measured"),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_bad_input_renders_and_says_what_is_missing(name):
    df, cfg, says = _variants()[name]
    ctx = build_report(df, cfg)
    assert any(says in m for m in ctx["summary"]["missing"]), ctx["summary"]["missing"]
    texts = [f.text for f in ctx["findings"]] + ctx["summary"]["missing"]
    for s in ctx["sections"]:
        for it in s["items"]:
            obj = it["obj"]
            texts += [obj.title, obj.caption, obj.skipped or "", *obj.notes]
            if it["type"] == "table":
                texts += [c.header for c in obj.columns]
                texts += [cell.text for row in obj.rows for cell in row.cells.values()]
    bad = [t for t in texts if BAD.search(str(t))]
    assert bad == []


def test_only_failed_cells_skip_figures_with_the_reason():
    df, cfg, _ = _variants()["only_failed"]
    data = ReportData(df, cfg)
    (lat,) = table(data, "table-latency-ref")
    assert lat.skipped == "every cell failed (oom)"
    (f,) = appendix.failures(data)
    assert len([r for r in f.rows if r.status == "failed"]) == len(df)


def test_no_energy_skips_energy_tables_with_the_nvml_reason():
    df, cfg, _ = _variants()["no_energy"]
    (t,) = table(ReportData(df, cfg), "table-energy")
    assert t.skipped == "energy not measured (unavailable: no NVML device)"


def test_one_model_has_no_gap_table_but_keeps_its_figures():
    df, cfg, _ = _variants()["one_model"]
    data = ReportData(df, cfg)
    (mem,), (gap,) = table(data, "table-memory"), table(data, "table-memory-gap")
    assert mem.skipped is None and gap.skipped.startswith("fewer than two models")
    assert not [f for f in FN.ablations(data) if f.id == "model-main"]  # no model to compare with


def test_devices_finding_names_the_studies_that_mix_devices(gpu):
    df, cfg = gpu
    assert "devices" not in {x.id for x in FN.findings(ReportData(df, cfg))}  # demo: one device of ours
    mixed = df.copy()
    moved = (mixed.source == "deploybench") & (mixed.decoding == "top_p")
    mixed.loc[moved, "device_uuid"] = "GPU-11111111-other"
    f = {x.id: x for x in FN.findings(ReportData(mixed, cfg))}["devices"]
    assert f.numbers["devices"]["GPU-11111111"] == moved.sum()
    assert [s.split(" ")[0] for s in f.numbers["mixed_studies"]] == [
        st.name for st in ReportData(mixed, cfg).studies() if "top_p" in st.axes["decoding"]
    ]
    assert "span devices" in f.text
