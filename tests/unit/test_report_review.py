"""What a reader of a partial run hit (a review of the attribution run's report): changes against a
context no row has, a study figure our cell withheld counted as a missing cell, the study's method
counted as a cause where it moves nothing, and an energy breakdown that did not multiply out."""

from __future__ import annotations

import pytest

from deploybench.report import builder, imported
from deploybench.report import findings as FN
from deploybench.report import fmt as F
from deploybench.report.data import ReportData
from deploybench.report.specs import BY_ID
from tests.fixtures.report_demo import demo_frame, demo_settings


def _partial(drop_context: int, model: str | None = None):
    """The GPU demo without our rows at one context (of one model, or of all)."""
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    gone = (df.source == "deploybench") & (df.context_tokens == drop_context)
    return df[~(gone & (df.model == model))] if model else df[~gone], cfg


def test_context_changes_run_from_the_shortest_measured_context():
    df, cfg = _partial(128)  # the main study's shortest configured context, never measured
    data = ReportData(df, cfg)
    (t,) = builder.build(BY_ID["table-tps-change"], data)
    assert [c.key for c in t.columns if c.key.startswith("e2e_tps@")] == ["e2e_tps@512", "e2e_tps@2048"]
    row = lambda m, c: data.row({**data.study_ref(data.studies()[0]), "model": m, "context": c})  # noqa: E731
    change = (row("yi-34b", 2048)["e2e_tps"] / row("yi-34b", 512)["e2e_tps"] - 1) * 100
    assert t.cell("d_e2e_tps", model="yi-34b").raw == pytest.approx(change)  # host-paced: n.r. ‡, the raw kept
    main = next(f for f in FN.ablations(data) if f.id == "context-main")
    assert "TTFT, yi-34b, 2048 against 512 tokens" in main.text and "against 128" not in main.text


def test_a_context_study_is_anchored_on_its_shortest_measured_context():
    df, cfg = _partial(512, "gpt-oss-20b")  # the context-scaling study's first context, for its one model
    data = ReportData(df, cfg)
    (t,) = builder.build(BY_ID["table-context-scaling"], data)
    assert [row.key["context"] for row in t.rows] == [1024, 2048, 4096]  # 512 is not in the data:
    assert any("Not in the data" in n and "gpt-oss-20b, 512" in n for n in t.notes)  # named once, below
    assert t.cell("d_ttft_ms", model="gpt-oss-20b", context=1024).kind == "baseline"
    ref = {**data.study_ref(data.studies()[1]), "model": "gpt-oss-20b"}
    ttft = {c: data.row({**ref, "context": c})["ttft_ms"] for c in (1024, 2048)}
    assert t.cell("d_ttft_ms", model="gpt-oss-20b", context=2048).raw == pytest.approx(
        (ttft[2048] / ttft[1024] - 1) * 100
    )


def test_the_anchor_s_own_row_without_data_reads_as_missing_not_reference():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    ours = (df.source == "deploybench") & (df.context_tokens == 128) & (df.decoding == "greedy")
    (t,) = builder.build(BY_ID["table-decoding"], ReportData(df[~ours], cfg))
    assert not [row for row in t.rows if row.key.get("decoding") == "greedy"]  # no row: not shown, named below
    assert t.cell("d_e2e_tps", model="gpt-oss-20b", decoding="top_p").kind == "missing"  # nothing to compare with


def test_a_figure_our_cell_withheld_is_not_a_missing_cell():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    ours = df.source == "deploybench"
    df.loc[ours, "e2e_ms_p95"] = None
    df.loc[ours, "tail_null_reason"] = "e2e_ms_p95, e2e_ms_p99: 5 runs (p95 needs 20, p99 needs 100)"
    (t,) = imported.derived(ReportData(df, cfg))
    p95 = [row for row in t.rows if row.key["metric"] == "e2e_ms_p95"]
    assert p95 and {row.key["kind"] for row in p95} == {"unmeasured"}
    assert all("too few runs (e2e_ms_p95, e2e_ms_p99: 5 runs" in row.cells["cause"].text for row in p95)


def test_the_study_s_method_moves_e2e_tok_s_only_where_its_figure_was_an_artifact():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    data = ReportData(df, cfg)
    theirs = next(r for r in data.imported if r["model"] == "yi-34b" and r.get("context_tokens") == 2048)
    ours = {**imported.roles(data, "yi-34b")[1], "bound_by": "memory_bandwidth", "gpu_busy_fraction": 0.95}
    ours["decode_tps_samples"] = None  # no per-run evidence: the median's verdict, GPU-paced
    rt = 0.5  # far from any hardware prediction: "unexplained" unless the method moves it
    clean = {**theirs, "tpot_artifact": False}
    assert imported.explain("e2e_tps", ours, clean, rt, theirs["e2e_tps"])[0] == "unexplained"
    flagged = {**theirs, "tpot_artifact": True}
    assert imported.explain("e2e_tps", ours, flagged, rt, theirs["e2e_tps"])[0] == "method"


def test_the_energy_breakdown_multiplies_out():
    """Power and speed from one consistent set: ours over our energy window, the study's from its energy CSV (its
    tok/s = power ÷ energy per token, the figure its Table 1 prints), never the latency CSV's tok/s."""
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    data = ReportData(df, cfg)
    theirs = next(r for r in data.imported if r["model"] == "yi-34b" and r.get("context_tokens") == 2048)
    ours = {**imported.roles(data, "yi-34b")[1], "energy_tokens": 320, "energy_window_s": 16.0}
    power = ours["avg_power_w"] / theirs["avg_power_w"]
    speed = (320 / 16.0) / (theirs["avg_power_w"] / (theirs["j_per_1k_tokens"] / 1000))
    per_token = imported.explain("j_per_1k_tokens", ours, theirs, power / speed, theirs["j_per_1k_tokens"])[1]
    assert per_token == f"power {F.fmt_ratio(power)} ÷ speed {F.fmt_ratio(speed)} = {F.fmt_ratio(power / speed)}"
    per_joule = imported.explain("tokens_per_j", ours, theirs, speed / power, theirs["tokens_per_j"])[1]
    assert per_joule == f"speed {F.fmt_ratio(speed)} ÷ power {F.fmt_ratio(power)} = {F.fmt_ratio(speed / power)}"
    # and the ratio the table shows is that product: ours ÷ study of J per 1000 tokens
    j1k = ours["avg_power_w"] * 16.0 / 320 * 1000  # our energy window's J per 1000 tokens at that speed
    assert j1k / theirs["j_per_1k_tokens"] == pytest.approx(power / speed)
