"""What a reader of a partial run hit (a review of the attribution run's report): changes against a
context no row has, a study figure our cell withheld counted as a missing cell, the study's method
counted as a cause where it moves nothing, and an energy breakdown that did not multiply out."""

from __future__ import annotations

import pytest

from deploybench.report import builder, imported
from deploybench.report import findings as FN
from deploybench.report.data import ReportData
from deploybench.report.specs import BY_ID
from tests.fixtures.report_demo import demo_config, demo_frame


def _partial(drop_context: int, model: str | None = None):
    """The GPU demo without our rows at one context (of one model, or of all)."""
    df, cfg = demo_frame("gpu"), demo_config("gpu")
    gone = (df.source == "deploybench") & (df.context_tokens == drop_context)
    return df[~(gone & (df.model == model))] if model else df[~gone], cfg


def test_context_changes_run_from_the_shortest_measured_context():
    df, cfg = _partial(128)  # the main study's shortest configured context, never measured
    data = ReportData(df, cfg)
    (t,) = builder.build(BY_ID["table-tps-change"], data)
    assert [c.key for c in t.columns if c.key.startswith("e2e_tps@")] == ["e2e_tps@512", "e2e_tps@2048"]
    row = lambda m, c: data.row({**data.study_ref(data.studies()[0]), "model": m, "context": c})  # noqa: E731
    change = (row("yi-34b", 2048)["e2e_tps"] / row("yi-34b", 512)["e2e_tps"] - 1) * 100
    assert t.cell("d_e2e_tps", model="yi-34b").value == pytest.approx(change)
    main = next(f for f in FN.ablations(data) if f.id == "context-main")
    assert "2048 (yi-34b) against 512" in main.text and "against 128" not in main.text


def test_a_context_study_is_anchored_on_its_shortest_measured_context():
    df, cfg = _partial(512, "gpt-oss-20b")  # the context-scaling study's first context, for its one model
    data = ReportData(df, cfg)
    (t,) = builder.build(BY_ID["table-context-scaling"], data)
    assert t.cell("d_ttft_ms", model="gpt-oss-20b", context=512).kind == "missing"
    assert t.cell("d_ttft_ms", model="gpt-oss-20b", context=1024).kind == "baseline"
    ref = {**data.study_ref(data.studies()[1]), "model": "gpt-oss-20b"}
    ttft = {c: data.row({**ref, "context": c})["ttft_ms"] for c in (1024, 2048)}
    assert t.cell("d_ttft_ms", model="gpt-oss-20b", context=2048).value == pytest.approx(
        (ttft[2048] / ttft[1024] - 1) * 100
    )


def test_the_anchor_s_own_row_without_data_reads_as_missing_not_reference():
    df, cfg = demo_frame("gpu"), demo_config("gpu")
    ours = (df.source == "deploybench") & (df.context_tokens == 128) & (df.decoding == "greedy")
    (t,) = builder.build(BY_ID["table-decoding"], ReportData(df[~ours], cfg))
    assert t.cell("d_e2e_tps", model="gpt-oss-20b", decoding="greedy").kind == "missing"
    assert t.cell("d_e2e_tps", model="gpt-oss-20b", decoding="top_p").kind == "missing"  # nothing to compare with


def test_a_figure_our_cell_withheld_is_not_a_missing_cell():
    df, cfg = demo_frame("gpu"), demo_config("gpu")
    ours = df.source == "deploybench"
    df.loc[ours, "e2e_ms_p95"] = None
    df.loc[ours, "tail_null_reason"] = "e2e_ms_p95, e2e_ms_p99: 5 runs (p95 needs 20, p99 needs 100)"
    (t,) = imported.figures(ReportData(df, cfg))
    p95 = [row for row in t.rows if row.key["metric"] == "e2e_ms_p95"]
    assert p95 and {row.key["kind"] for row in p95} == {"unmeasured"}
    assert all("too few runs (e2e_ms_p95, e2e_ms_p99: 5 runs" in row.cells["cause"].text for row in p95)


def test_the_study_s_method_moves_e2e_tok_s_only_where_its_figure_was_an_artifact():
    df, cfg = demo_frame("gpu"), demo_config("gpu")
    data = ReportData(df, cfg)
    theirs = next(r for r in data.imported if r["model"] == "yi-34b" and r.get("context_tokens") == 2048)
    ours = {**imported.roles(data, "yi-34b")[1], "bound_by": "memory_bandwidth", "gpu_busy_fraction": 0.95}
    rt = 0.5  # far from any hardware prediction: "unexplained" unless the method moves it
    pred, facts = imported.predicted("e2e_tps", ours, theirs)
    clean = {**theirs, "tpot_artifact": False}
    assert imported.causes("e2e_tps", ours, clean, rt, pred, facts)[0] == "unexplained"
    flagged = {**theirs, "tpot_artifact": True}
    assert imported.causes("e2e_tps", ours, flagged, rt, pred, facts)[0] == "method"


def test_the_energy_breakdown_multiplies_out():
    df, cfg = demo_frame("gpu"), demo_config("gpu")
    data = ReportData(df, cfg)
    theirs = next(r for r in data.imported if r["model"] == "yi-34b" and r.get("context_tokens") == 2048)
    ours = imported.roles(data, "yi-34b")[1]
    # The speed is the one the energy came at: tokens over the energy window, not the median run's.
    ours = {**ours, "energy_tokens": 320, "energy_window_s": 16.0}
    words = imported._method("tokens_per_j", ours, theirs)
    speed = 320 / 16.0 / theirs["e2e_tps"]
    assert f"e2e speed {speed:.3g}×" in words
