"""The batch axis in the report: the unbatched tables read batch-1 rows only; the batch study has its table,
its finding (through `resolved`) and its frontier figure.

Rows are hand-written through deploybench.results.schema.to_table, so every figure checked here is a number of a row.
"""

from __future__ import annotations

import pytest

from deploybench.plan.config import validate_config
from deploybench.report import builder, plot
from deploybench.report import findings as FN
from deploybench.report.data import ReportData
from deploybench.report.figures import SPECS as FIGURES
from deploybench.report.figures import build as build_figure
from deploybench.report.specs import BY_ID
from deploybench.results.schema import to_table
from tests.unit.test_report_tables import _row as hand_row


def _row(model, ctx, batch, decode, **kw):
    """A row of ours; decode tok/s (aggregate) with a 95% interval of ±1%; TPOT the step time it implies."""
    b = batch or 1
    figures = dict(
        cell_id=f"{model}/eager-bfloat16/c{ctx}-g8-b{b}-greedy",
        batch_size=batch,
        ttft_ms=10.0 * ctx / 64,
        e2e_ms_p50=100.0,
        e2e_tps=80.0 * b,
        decode_tps=decode,
        decode_tps_ci95_low=decode * 0.99,
        decode_tps_ci95_high=decode * 1.01,
        decode_tps_per_seq=decode / b,
        tpot_ms=1000 * b / decode,
        peak_allocated_bytes=2_000_000_000 + 100_000_000 * b,
        weights_bytes=2_000_000_000,
        kv_cache_bytes=10_000_000 * b,
    )
    return hand_row(model, ctx, **(figures | kw))


def _failed(model, ctx, batch):
    row = _row(model, ctx, batch, 1.0)
    keep = ("cell_id", "model", "backend", "dtype", "context_tokens", "gen_tokens", "decoding", "batch_size", "source")
    return {k: row[k] for k in keep} | {
        "status": "failed",
        "valid": False,
        "failure_kind": "oom",
        "error": "PredictedOutOfMemoryError: predicted out of memory, not attempted: batch 8 ...",
    }


CARDS = {"moe": "workflow/architectures/tiny-gpt-oss.json", "dense": "workflow/architectures/tiny-qwen3.json"}
CONFIG = validate_config(
    {
        "models": {name: {"source": "random", "architecture": card} for name, card in CARDS.items()},
        "decoding": {"greedy": {"do_sample": False}},
        "studies": {
            "main": {"kind": "main_comparison", "models": ["moe", "dense"], "contexts": [64, 256], "gen": [8]},
            "batch": {"kind": "batch_scaling", "models": ["moe", "dense"], "contexts": [64], "gen": [8]}
            | {"batch": [1, 4, 8]},
        },
        "analysis": {"baseline_model": "dense", "reference_cell": {"context": 256, "gen": 8}},
    }
)


def _data(rows, config=CONFIG) -> ReportData:
    return ReportData(to_table(rows).to_pandas(), config)


def _batch_rows() -> list[dict]:
    """Both models at batch 1, 4 and 8 (moe at 8: predicted oom), at the batch study's context 64."""
    moe = [_row("moe", 64, 1, 40.0, experts_touched_per_layer=2.0, experts_touched_uniform_prediction=2.0)]
    moe.append(_row("moe", 64, 4, 120.0, experts_touched_per_layer=5.1, experts_touched_uniform_prediction=5.5))
    dense = [_row("dense", 64, b, tps, j_per_1k_tokens=900.0 / b) for b, tps in ((1, 20.0), (4, 60.0), (8, 118.8))]
    dense[2] |= {"gpu_busy_fraction": 0.97, "bound_by": "compute"}
    return [*moe, _failed("moe", 64, 8), *dense]


@pytest.mark.parametrize("batch_last", [True, False])
def test_unbatched_tables_figures_and_findings_read_batch_1_rows_only(batch_last):
    """Rows at batch 4 for the same cells as batch-1 rows (one of them from before the batch axis: batch_size
    null) change nothing in the main study's tables, figures and findings, whatever the order of the rows."""
    batch1 = [_row("moe", 64, 1, 30.0), _row("moe", 256, None, 25.0)]
    batch1 += [_row("dense", 64, 1, 15.0), _row("dense", 256, 1, 12.0)]
    batch4 = [_row(m, c, 4, 1000.0 + c, kv_cache_bytes=999) for m in ("moe", "dense") for c in (64, 256)]
    data = _data(batch1 + batch4 if batch_last else batch4 + batch1)
    (lat,) = builder.build(BY_ID["table-latency-ref"], data)
    assert lat.cell("decode_tps", model="moe").value == 25.0  # the null-batch row counts as batch 1
    assert lat.cell("decode_tps", model="dense").value == 12.0
    (ctx,) = builder.build(BY_ID["table-tps-context"], data)
    decode = [row for row in ctx.rows if row.key.get("metric") == "decode_tps"]
    assert [row.cells["context=64"].value for row in decode] == [30.0, 15.0]
    (mem,) = builder.build(BY_ID["table-memory"], data)
    assert mem.cell("kv_cache_bytes", model="moe").raw == 10_000_000
    fig = build_figure(next(s for s in FIGURES if s.id == "fig-tps-context"), data)
    decode_panel = next(p for p in fig.panels if p.title.startswith("decode tok/s"))
    assert {s.name: s.y for s in decode_panel.series} == {"moe": [30.0, 25.0], "dense": [15.0, 12.0]}
    (main,) = [f for f in FN.ablations(data) if f.id == "model-main"]
    pair = next(n for n in main.numbers["pairs"] if n["metric"] == "decode_tps")
    assert (pair["a"], pair["b"]) == (25.0, 12.0)
    assert [r["decode_tps"] for r in data.batch1] == [30.0, 25.0, 15.0, 12.0]


def test_batch_table_one_row_per_batch_size_with_failures_and_expert_coverage():
    data = _data(_batch_rows())
    (t,) = builder.build(BY_ID["table-batch"], data)
    assert t.skipped is None
    assert [(row.key["model"], row.key["batch"]) for row in t.rows] == [
        (m, b) for m in ("moe", "dense") for b in (1, 4, 8)
    ]
    assert t.cell("decode_tps", model="moe", batch=4).value == 120.0
    assert t.cell("decode_tps_per_seq", model="moe", batch=4).value == 30.0
    assert t.cell("tpot_ms", model="dense", batch=8).value == pytest.approx(1000 * 8 / 118.8)
    assert t.cell("kv_cache_bytes", model="dense", batch=4).value == pytest.approx(0.04)  # GB, all 4 sequences
    assert t.cell("experts_touched_per_layer", model="moe", batch=4).value == 5.1
    assert t.cell("experts_touched_uniform_prediction", model="moe", batch=4).value == 5.5
    assert t.cell("experts_touched_per_layer", model="dense", batch=4).kind == "missing"
    failed = t.cell("decode_tps", model="moe", batch=8)
    assert failed.kind == "failed" and failed.text == "failed: oom"
    assert t.cell("tpot_ms", model="moe", batch=8).kind == "failed"
    verdict = t.cell("bound_by", model="dense", batch=8)  # the verdict with its evidence (no roofline: the row's)
    assert verdict.raw == "compute" and verdict.text == "compute (busy 97%; no roofline measured)"
    keys = [c.key for c in t.columns]
    assert keys[:2] == ["model", "batch"] and "backend" not in keys  # one backend: held, and said in the caption
    assert keys.index("bound_by") == keys.index("tpot_ms") + 1  # what bounds the step, beside it
    assert "eager" in t.caption and "batch 1" not in t.caption


def test_batch_finding_moe_over_dense_at_each_batch_through_resolved():
    (f,) = [f for f in FN.ablations(_data(_batch_rows())) if f.id == "model-batch"]
    pairs = {n["cell"]: n for n in f.numbers["pairs"]}
    assert set(pairs) == {"moe against dense at batch 1", "moe against dense at batch 4"}  # batch 8: moe failed
    one = pairs["moe against dense at batch 1"]
    assert one["claimed"] and one["low"] == pytest.approx(40 * 0.99 / (20 * 1.01))
    assert one["high"] == pytest.approx(40 * 1.01 / (20 * 0.99))
    assert "moe failed (oom)." in f.items and "decode tok/s, moe against dense at batch 1: between" in f.text
    # Overlapping intervals: the same rows with dense as fast as moe at batch 4 -> no difference claimed.
    rows = [r for r in _batch_rows() if (r["model"], r["batch_size"]) != ("dense", 4)] + [_row("dense", 64, 4, 119.0)]
    (f,) = [f for f in FN.ablations(_data(rows)) if f.id == "model-batch"]
    pairs = {n["cell"]: n for n in f.numbers["pairs"]}
    assert not pairs["moe against dense at batch 4"]["claimed"] and pairs["moe against dense at batch 1"]["claimed"]
    assert f.items[-1] == "Not resolved: decode tok/s of moe against dense at batch 4 (intervals overlap)."


def test_frontier_figure_throughput_against_step_time_labelled_by_batch():
    spec = next(s for s in FIGURES if s.id == "fig-batch-frontier")
    fig = build_figure(spec, _data(_batch_rows()))
    assert fig.skipped is None
    (p,) = fig.panels
    assert p.x_label == "TPOT (ms/token)" and p.y_label == "decode tok/s (tok/s)"
    moe, dense = p.series
    assert (moe.name, moe.labels, moe.y) == ("moe", ["1", "4"], [40.0, 120.0])  # batch 8 failed: no point
    assert moe.x == pytest.approx([25.0, 1000 * 4 / 120.0])
    assert dense.labels == ["1", "4", "8"] and dense.y == [20.0, 60.0, 118.8]
    if plot.matplotlib is not None:
        svg, pdf = plot.render(fig)
        assert ">8<" in svg.replace(" ", "") or "8</text>" in svg
        assert pdf.startswith(b"%PDF")
    no_study = CONFIG.model_copy(update={"studies": {k: v for k, v in CONFIG.studies.items() if k != "batch"}})
    assert "no batch_scaling study" in build_figure(spec, _data(_batch_rows(), no_study)).skipped
