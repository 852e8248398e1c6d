"""APE and baseline ratios: hand-computed values, missing/failed baselines, the study's table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from deploybench.enums import Stage
from deploybench.results import metrics
from deploybench.results.ape import compute_ape
from deploybench.results.consolidate import consolidate

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "import:arxiv-2508.16700"
SPEC = {
    "name": "arxiv-2508.16700",
    "format": "arxiv_2508_16700",
    "path": "reference/arxiv-2508.16700",
    "model_map": {"openai/gpt-oss-20b": "gpt-oss-20b", "Qwen/Qwen3-32B": "qwen3-32b", "01-ai/Yi-34B": "yi-34b"},
}


def row(model, **kw) -> dict:
    base = {"model": model, "source": "deploybench", "backend": "eager", "dtype": "bfloat16"}
    base |= {"context_tokens": 256, "gen_tokens": 16, "decoding": "greedy", "status": "ok"}
    base |= {"active_params": 4_000_000_000, "e2e_tps": 40.0, "decode_tps": 50.0, "ttft_ms": 200.0}
    base |= {"j_per_1k_tokens": 5000.0, "tokens_per_j": None, "peak_allocated_bytes": 50_000_000_000}
    return base | kw


def by_model(df: pd.DataFrame) -> dict:
    return {r["model"]: r for r in df.to_dict("records")}


def nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def test_ape_hand_computed():
    r = by_model(compute_ape(pd.DataFrame([row("a")]), "a"))["a"]
    assert r["ape_e2e_tps_per_active_b"] == pytest.approx(10.0)  # 40 tok/s / 4 B
    assert r["ape_decode_tps_per_active_b"] == pytest.approx(12.5)  # 50 / 4
    assert r["ape_inv_ttft_per_s_per_active_b"] == pytest.approx(1.25)  # (1/0.2 s) / 4
    assert r["ape_tokens_per_j_per_active_b"] == pytest.approx(0.05)  # (1000/5000 J) / 4
    assert r["e2e_tps_per_peak_gb"] == pytest.approx(0.8)  # 40 / 50 GB (decimal)


def test_ratios_to_baseline_at_the_same_cell():
    df = pd.DataFrame(
        [
            row("base", active_params=32_000_000_000, e2e_tps=20.0, ttft_ms=400.0),
            row("moe"),
            row("moe", context_tokens=512),  # no baseline at 512
        ]
    )
    out = compute_ape(df, "base")
    moe, lone = out.iloc[1], out.iloc[2]
    assert moe["ratio_to_baseline_e2e_tps"] == pytest.approx(2.0)
    assert moe["ratio_to_baseline_ttft_ms"] == pytest.approx(0.5)
    assert moe["ratio_to_baseline_decode_tps"] == pytest.approx(1.0)
    # APE: 10 vs 20/32 = 0.625 -> 16x
    assert moe["ratio_to_baseline_ape_e2e_tps_per_active_b"] == pytest.approx(16.0)
    assert moe["ratio_baseline_model"] == "base"
    assert out.iloc[0]["ratio_to_baseline_e2e_tps"] == pytest.approx(1.0)
    assert nan(lone["ratio_to_baseline_e2e_tps"]) and nan(lone["ratio_baseline_model"])
    assert lone["ape_e2e_tps_per_active_b"] == pytest.approx(10.0)  # APE needs no baseline


def test_other_sources_and_backends_are_other_cells():
    df = pd.DataFrame([row("base"), row("a", source="import:x"), row("a", backend="compiled")])
    out = compute_ape(df, "base")
    assert out["ratio_to_baseline_e2e_tps"].isna().tolist() == [False, True, True]


def test_a_batch_row_is_compared_with_the_baseline_at_its_batch():
    # The baseline in a batch study has one row per batch at a cell: each row pairs with its own batch's
    # (they were all lost as "several baseline rows"), and a row without a batch size is at batch 1.
    df = pd.DataFrame(
        [
            row("base", decode_tps=40.0),  # no batch_size: batch 1
            row("base", batch_size=4, decode_tps=120.0),
            row("moe", batch_size=1, decode_tps=60.0),
            row("moe", batch_size=4, decode_tps=150.0),
            row("moe", batch_size=8, decode_tps=200.0),  # no baseline at batch 8
        ]
    )
    ratios = compute_ape(df, "base")["ratio_to_baseline_decode_tps"].tolist()
    assert ratios[:4] == pytest.approx([1.0, 1.0, 1.5, 1.25]) and nan(ratios[4])


def test_failed_baseline_and_failed_rows_give_nan():
    df = pd.DataFrame([row("base", status="failed", e2e_tps=None), row("a")])
    out = compute_ape(df, "base")
    assert out["ratio_to_baseline_e2e_tps"].isna().all()
    df = pd.DataFrame([row("base"), row("a", status="failed", e2e_tps=None, ttft_ms=None)])
    out = compute_ape(df, "base")
    failed = out.iloc[1]
    derived = [m.name for m in metrics.of_stage(Stage.APE) + metrics.of_stage(Stage.RATIO)]
    for col in derived:
        if col != "ratio_baseline_model":
            assert nan(failed[col]), col


def test_zero_or_missing_inputs_never_divide():
    df = pd.DataFrame(
        [
            row("base", e2e_tps=0.0, peak_allocated_bytes=None),
            row("a", active_params=0, ttft_ms=0.0, j_per_1k_tokens=None),
        ]
    )
    out = compute_ape(df, "base")
    assert out.iloc[0]["ape_e2e_tps_per_active_b"] == 0.0
    assert nan(out.iloc[0]["e2e_tps_per_peak_gb"])
    a = out.iloc[1]
    assert nan(a["ape_e2e_tps_per_active_b"]) and nan(a["ape_inv_ttft_per_s_per_active_b"])
    assert nan(a["ape_tokens_per_j_per_active_b"])
    assert nan(a["ratio_to_baseline_e2e_tps"])  # baseline figure is 0


def test_directions_are_declared():
    ape = metrics.of_stage(Stage.APE)
    assert ape and all(m.higher_is_better for m in ape)
    assert metrics.get("ratio_to_baseline_ttft_ms").higher_is_better is False
    assert metrics.get("ratio_to_baseline_j_per_1k_tokens").higher_is_better is False
    assert metrics.get("ratio_to_baseline_e2e_tps").higher_is_better is True
    for m in ape:
        assert m.label and m.unit and m.definition


def test_computes_exactly_the_catalogue_columns():
    before = set(pd.DataFrame([row("base"), row("a")]).columns)
    added = set(compute_ape(pd.DataFrame([row("base"), row("a")]), "base").columns) - before
    expected = {m.name for m in metrics.of_stage(Stage.APE) + metrics.of_stage(Stage.RATIO)}
    assert added == expected


def test_reproduces_the_study_ape_table():
    out = compute_ape(consolidate([], [SPEC], ROOT), {SOURCE: "qwen3-32b"})
    ours = out[(out["gen_tokens"] == 64) & out["context_tokens"].isin([128, 512, 1024, 2048])]
    ours = ours.set_index(["model", "context_tokens"])
    theirs = pd.read_csv(ROOT / SPEC["path"] / "ape/ape_analysis.csv")
    assert len(theirs) == 12
    for t in theirs.to_dict("records"):
        r = ours.loc[(t["model_id"], t["context_length"])]
        assert r["ape_e2e_tps_per_active_b"] == pytest.approx(t["throughput_per_activeB_tokps_per_B"], rel=1e-9)
        assert r["ape_inv_ttft_per_s_per_active_b"] == pytest.approx(t["inv_ttft_per_activeB_tokps_per_B"], rel=1e-9)
        assert r["ape_tokens_per_j_per_active_b"] == pytest.approx(t["tokens_per_watt_per_activeB"], rel=1e-9)
        # their "GB" is GiB: per decimal GB the figure is 2**30/1e9 times smaller
        assert r["e2e_tps_per_peak_gb"] == pytest.approx(t["tokens_per_GB_tokps_per_GB"] * 1e9 / 2**30, rel=1e-9)
    g = ours.loc[("gpt-oss-20b", 128)]
    assert g["ape_e2e_tps_per_active_b"] == pytest.approx(39.72482152071758 / 3.6, rel=1e-12)
    assert g["ratio_to_baseline_e2e_tps"] == pytest.approx(39.72482152071758 / 26.56351009823279, rel=1e-12)
    assert g["ratio_to_baseline_peak_allocated_bytes"] == pytest.approx(40118.57568359375 / 62608.03857421875)
    assert g["ratio_baseline_model"] == "qwen3-32b"


def test_two_baseline_rows_at_one_cell_give_no_ratio():
    df = pd.DataFrame([row("base"), row("base", e2e_tps=30.0), row("a")])
    out = compute_ape(df, "base")
    assert out["ratio_to_baseline_e2e_tps"].isna().all()
