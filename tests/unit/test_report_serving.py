"""Serving engines in the report (issue 20, item 4): the throughput-latency frontier, J per output token and goodput
against the load, the largest load that meets the SLO, the study's Table 12 completed on one machine, serving rows
on the first screen, and a report without serving studies left as it was.

Frames: tests/fixtures/serving_demo.py (synthetic load points beside tests/fixtures/report_demo.py's demo), so every
figure checked here is a number of a row.
"""

from __future__ import annotations

import functools
import warnings

import pandas as pd
import pytest

from deploybench.report import appendix, captions, plot, serving, serving_figures, trust
from deploybench.report.data import ReportData, load_of
from deploybench.report.render import build_report
from tests.fixtures.report_demo import demo_frame, demo_settings
from tests.fixtures.serving_demo import serving_frame, serving_settings

FRONTIER, LOAD = serving_figures.SPECS
GPU2 = "GPU-22222222-demo"


@functools.cache
def frame(variant: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo's pandas lookups
        return serving_frame(variant)


def data(variant: str = "gpu", df: pd.DataFrame | None = None) -> ReportData:
    return ReportData(frame(variant) if df is None else df, serving_settings(variant))


def rows_of(df: pd.DataFrame, model: str, engine: str) -> pd.DataFrame:
    out = df[(df.model == model) & (df.backend == engine)]
    return out.sort_values("load_concurrency")


def series(panel, name: str, dashed: bool = False):
    return next(s for s in panel.series if s.name == name and s.dashed == dashed)


def test_the_frontier_panels_points_are_the_rows_values():
    df = frame("gpu")
    fig = serving_figures.build(FRONTIER, data())
    assert fig.skipped is None and [p.title for p in fig.panels] == [
        "Output tok/s against TPOT",
        "Output tok/s against TTFT",
    ]
    for panel, base in zip(fig.panels, ("tpot_ms", "ttft_ms")):
        for model in ("gpt-oss-20b", "qwen3-32b"):
            rows = rows_of(df, model, "vllm")
            drawn = rows[rows.output_tps.notna()]  # qwen3-32b at 256 died: no figures, no point
            p50, p99 = series(panel, f"{model}, vllm"), series(panel, f"{model}, vllm", dashed=True)
            assert p50.y == p99.y == drawn.output_tps.tolist()
            assert p50.x == drawn[f"{base}_p50"].tolist() and p99.x == drawn[f"{base}_p99"].tolist()
            assert [label.split()[0] for label in p50.labels] == [f"{c:g}" for c in drawn.load_concurrency]
        # one line per (model, engine), each point labelled by its load; the invalid point hollow and marked
        gpt = series(panel, "gpt-oss-20b, vllm")
        assert gpt.labels[-1] == "256 †" and gpt.status == ["ok"] * 4 + ["invalid"]
        assert panel.limits == [(50.0 if base == "tpot_ms" else 1000.0, panel.limits[0][1])]  # the SLO's target
    assert any("qwen3-32b, vllm at concurrency 256 (server_died)" in note for note in fig.notes)
    svg, _ = plot.render(fig)  # the key inside the figure: lines, p50/p99, the SLO, invalid
    for text in ("gpt-oss-20b, vllm", "p99", "SLO TPOT p99 ≤ 50 ms/token", "invalid (†)"):
        assert text in svg


def test_a_failed_point_with_figures_is_a_cross_and_no_p99_is_said():
    df = frame("gpu").copy()
    at16 = (df.model == "qwen3-32b") & (df.load_concurrency == 16)
    df.loc[at16, ["status", "failure_kind"]] = ["failed", "requests_failed"]
    panel = serving_figures.build(FRONTIER, data(df=df)).panels[0]
    qwen = series(panel, "qwen3-32b, vllm")
    assert qwen.status[2] == "failed" and qwen.x[2] == df.loc[at16, "tpot_ms_p50"].item()
    # CPU: 12 requests a point, no p99: the panel says so instead of drawing dashes
    cpu = serving_figures.build(FRONTIER, data("cpu"))
    assert all(not s.dashed for p in cpu.panels for s in p.series)
    assert all(p.note.startswith("p99 not drawn: a p99 needs 100 requests") for p in cpu.panels)
    assert captions.text("serving", "cpu_figure") in cpu.notes
    # a line whose rows have no output tok/s (as transformers serve's, whose chunks carry no token count)
    df = frame("cpu").copy()
    served = df.backend == "transformers_serve"
    df.loc[served, "output_tps"] = None
    df.loc[served, "throughput_null_reason"] = "output tokens unknown: 61 chunks in the window carry no token count"
    fig = serving_figures.build(FRONTIER, data("cpu", df))
    assert "tiny-qwen3, transformers_serve" not in {s.name for p in fig.panels for s in p.series}
    assert "Nothing to draw, so no line: tiny-qwen3, transformers_serve (output tokens unknown: 61" in " ".join(
        fig.notes
    )


def test_energy_and_goodput_against_the_load_and_the_cpu_panel_that_says_why():
    df = frame("gpu")
    energy, goodput = serving_figures.build(LOAD, data()).panels
    gpt = rows_of(df, "gpt-oss-20b", "vllm")
    assert series(energy, "gpt-oss-20b, vllm").x == gpt.load_concurrency.astype(float).tolist()
    assert series(energy, "gpt-oss-20b, vllm").y == gpt.j_per_output_token.tolist()
    assert series(energy, "gpt-oss-20b, vllm", dashed=True).y == gpt.j_per_output_token_net.tolist()
    assert series(goodput, "gpt-oss-20b, vllm").y == gpt.goodput_rps.tolist()
    assert series(goodput, "gpt-oss-20b, vllm", dashed=True).y == gpt.request_rps.tolist()
    assert energy.log2_x and energy.kind == goodput.kind == "serving"
    # on CPU no energy: the panel is a message with the rows' reason, not empty axes
    energy, goodput = serving_figures.build(LOAD, data("cpu")).panels
    assert energy.kind == "message" and not energy.series
    assert "energy not measured" in energy.note and "no CUDA device" in energy.note
    assert goodput.kind == "serving" and "no SLO, so no goodput: tiny-qwen3, transformers_serve" in goodput.note
    served = rows_of(frame("cpu"), "tiny-qwen3", "transformers_serve")  # no goodput: its request rate still drawn
    assert series(goodput, "tiny-qwen3, transformers_serve", dashed=True).y == served.request_rps.tolist()
    svg, _ = plot.render(serving_figures.build(LOAD, data("cpu")))
    assert "no CUDA device" in svg


def test_the_slo_table_picks_the_largest_passing_load():
    (t,) = serving.slo_table(data())
    df = frame("gpu")
    assert t.cell("largest", model="gpt-oss-20b").text == "concurrency 64"  # 256 missed and is invalid
    assert t.cell("largest", model="qwen3-32b").text == "concurrency 16"
    at64 = df[(df.model == "gpt-oss-20b") & (df.load_concurrency == 64)]
    assert t.cell("output_tps", model="gpt-oss-20b").value == pytest.approx(at64.output_tps.item())
    assert t.cell("j_per_output_token", model="gpt-oss-20b").value == pytest.approx(at64.j_per_output_token.item())
    assert t.cell("slo", model="gpt-oss-20b").text == "TTFT p99 ≤ 1,000 ms, TPOT p99 ≤ 50 ms/token"
    assert t.cell("next", model="qwen3-32b").text == "64: ttft_ms_p99 3520 > 1000"
    assert t.cell("points", model="qwen3-32b").text == "1 ✓, 4 ✓, 16 ✓, 64 ✗, 256 failed"
    # the largest passing load, not the first miss; an invalid point that passes does not count
    df = df.copy()
    gpt, qwen = df.model == "gpt-oss-20b", df.model == "qwen3-32b"
    df.loc[qwen & (df.load_concurrency == 4), ["slo_met", "slo_miss_reason"]] = [False, "tpot_ms_p99 51 > 50"]
    df.loc[gpt & (df.load_concurrency == 256), "slo_met"] = True
    (t,) = serving.slo_table(data(df=df))
    assert t.cell("largest", model="qwen3-32b").text == "concurrency 16"
    assert t.cell("largest", model="gpt-oss-20b").text == "concurrency 64"
    df.loc[gpt, "slo_met"] = False
    (t,) = serving.slo_table(data(df=df))
    assert (
        t.cell("largest", model="gpt-oss-20b").text == "none"
        and t.cell("output_tps", model="gpt-oss-20b").value is None
    )
    # a study without an SLO is named, not judged
    (t,) = serving.slo_table(data("cpu"))
    assert [row.key["backend"] for row in t.rows] == ["vllm"]
    assert t.cell("largest", backend="vllm").text == "concurrency 2"
    assert any("tiny-qwen3, transformers_serve" in n for n in t.notes)


def test_table_12_pairs_rows_from_one_machine_only():
    (t,) = serving.table12(data())
    df = frame("gpu")
    assert [(row.key["model"], row.key["backend"]) for row in t.rows] == [
        (m, b) for m in ("gpt-oss-20b", "qwen3-32b") for b in ("eager", "compiled_loop", "vllm")
    ]
    vllm = df[(df.model == "gpt-oss-20b") & (df.backend == "vllm") & (df.load_concurrency == 1)]
    eager = df[(df.model == "gpt-oss-20b") & (df.backend == "eager") & (df.context_tokens == 2048)]
    eager = eager[eager.source == "deploybench"]
    assert t.cell("ttft_ms", model="gpt-oss-20b", backend="vllm").value == pytest.approx(vllm.ttft_ms_p50.item())
    assert t.cell("tpot_ms", model="gpt-oss-20b", backend="vllm").value == pytest.approx(vllm.tpot_ms_p50.item())
    assert t.cell("output_tps", model="gpt-oss-20b", backend="vllm").value == pytest.approx(vllm.output_tps.item())
    memory = t.cell("peak_allocated_bytes", model="gpt-oss-20b", backend="vllm")
    assert memory.text.endswith(" §") and memory.value == pytest.approx(vllm.server_gpu_memory_peak_bytes.item() / 1e9)
    assert t.cell("ttft_ms", model="gpt-oss-20b", backend="eager").value == pytest.approx(eager.ttft_ms.item())
    j = t.cell("j_per_output_token", model="gpt-oss-20b", backend="eager").value
    assert j == pytest.approx(eager.j_per_1k_tokens.item() / 1000)
    assert t.cell("output_tps", model="gpt-oss-20b", backend="eager").value == pytest.approx(eager.e2e_tps.item())
    # gpt-oss-20b's compiled_loop row from another GPU: named, not compared; the vLLM row's machine anchors
    df = df.copy()
    df.loc[(df.model == "gpt-oss-20b") & (df.backend == "compiled_loop"), "device_uuid"] = GPU2
    df.loc[(df.model == "qwen3-32b") & (df.backend == "vllm"), "device_uuid"] = GPU2
    (t,) = serving.table12(data(df=df))
    moved = t.cell("ttft_ms", model="gpt-oss-20b", backend="compiled_loop")
    assert moved.text == "—" and moved.value is None and "GPU-22222222" in moved.note
    assert t.cell("machine", model="gpt-oss-20b", backend="compiled_loop").text == "other machine (GPU-22222222)"
    assert t.cell("ttft_ms", model="gpt-oss-20b", backend="eager").value is not None
    for backend in ("eager", "compiled_loop"):  # qwen3-32b's vLLM row alone on GPU2: its generate() rows are not
        assert t.cell("ttft_ms", model="qwen3-32b", backend=backend).value is None
    assert t.cell("ttft_ms", model="qwen3-32b", backend="vllm").value is not None
    paired = [row for row in t.rows if row.cells["ttft_ms"].value is not None]
    for model in ("gpt-oss-20b", "qwen3-32b"):
        assert len({row.cells["machine"].text for row in paired if row.key["model"] == model}) == 1
    # a backend with no row: a dash, "not measured"; on CPU the timings are marked
    (t,) = serving.table12(data("cpu"))
    assert t.cell("machine", backend="compiled_loop").text == "not measured"
    assert t.cell("ttft_ms", backend="compiled_loop").text == "—"
    assert t.cell("ttft_ms", backend="vllm").text.endswith(" *")
    assert captions.text("serving", "cpu") in t.notes


def test_serving_rows_on_the_first_screen_at_concurrency_1():
    df = frame("gpu")
    (t,) = trust.tables(data())
    cc1 = df[(df.model == "qwen3-32b") & (df.backend == "vllm") & (df.load_concurrency == 1)]
    row = next(r for r in t.rows if r.key == {"model": "qwen3-32b", "backend": "vllm"})
    assert row.cells["backend"].text == "vllm 0.26.0"
    assert row.cells["ttft_ms"].value == pytest.approx(cc1.ttft_ms_p50.item())
    assert row.cells["decode_tps"].value == pytest.approx(1000 / cc1.tpot_ms_p50.item())
    assert row.cells["ttft_ms"].interval == pytest.approx(
        (cc1.ttft_ms_p50_ci95_low.item(), cc1.ttft_ms_p50_ci95_high.item())
    )
    assert row.cells["peak_allocated_bytes"].text.endswith(" §")
    assert sum(r.key["backend"] == "vllm" for r in t.rows) == 2  # one row per model: concurrency 1 only
    # CPU: the serving engines' timings are marked as not meaningful, the eager rows are not
    (t,) = trust.tables(data("cpu"))
    backends = [r.key["backend"] for r in t.rows if r.key["model"] == "tiny-qwen3"]
    assert backends == ["eager", "vllm", "transformers_serve"]
    for r in t.rows:
        marked = r.cells["ttft_ms"].text.endswith(" *")
        assert marked == (r.key["backend"] != "eager")
    assert captions.text("serving", "cpu") in t.notes


def test_a_load_point_s_row_is_its_cell_s_at_concurrency_1_only():
    d = data()
    cell = {"model": "gpt-oss-20b", "backend": "vllm", "dtype": "bfloat16", "context": 2048, "gen": 64}
    assert d.row(cell | {"decoding": "greedy"})["load_concurrency"] == 1
    assert len(d.serving) == 10 and sum(r["backend"] == "vllm" for r in d.batch1) == 2
    # a point that failed to start has no load columns: its cell id says its load
    assert load_of({"backend": "vllm", "cell_id": "m/vllm-bfloat16/c64-g16-b1-greedy-cc16"}) == ("concurrency", 16.0)
    assert load_of({"backend": "vllm", "cell_id": "m/vllm-bfloat16/c64-g16-b1-greedy-r2.5-bu0.5"}) == (
        "request_rate",
        2.5,
    )
    assert load_of({"backend": "eager", "cell_id": "m/eager-bfloat16/c64-g16-b1-greedy"}) is None
    # a load point without a row is named by its own cell id among the cells a study lacks
    df = frame("gpu")
    df = df[~((df.model == "gpt-oss-20b") & (df.load_concurrency == 16))]
    (t,) = appendix.failures(data(df=df))
    missing = [row.key["cell_id"] for row in t.rows if row.status == "missing"]
    assert missing == ["gpt-oss-20b/vllm-bfloat16/c2048-g64-b1-greedy-cc16"]


def test_a_report_without_serving_studies_has_no_serving_section():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = build_report(demo_frame("cpu"), demo_settings("cpu"))
    wanted = [sid for sid, s in captions.entries("sections").items() if not s.get("needs")]
    assert [s["id"] for s in ctx["sections"]] == wanted
    ids = [it["id"] for s in ctx["sections"] for it in s["items"]]
    assert not [i for i in ids if "serving" in i]
    # with serving studies: the section, its figures and tables, numbered among the others
    ctx = build_report(frame("cpu"), serving_settings("cpu"))
    (section,) = [s for s in ctx["sections"] if s["id"] == "sec-serving"]
    items = [(it["id"], it["obj"].skipped) for it in section["items"]]
    assert items == [
        ("fig-serving-frontier", None),
        ("fig-serving-load", None),
        ("table-serving-slo", None),
        ("table-serving-generate", None),
    ]
