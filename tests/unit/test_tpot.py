"""TPOT-artifact step: hand-computed cases, raw samples, failed rows, the study's figures."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from deploybench.results.consolidate import consolidate
from deploybench.results.tpot import correct_tpot

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "arxiv-2508.16700",
    "format": "arxiv_2508_16700",
    "path": "reference/arxiv-2508.16700",
    "model_map": {"openai/gpt-oss-20b": "g", "Qwen/Qwen3-32B": "q", "01-ai/Yi-34B": "y"},
}


def row(**kw) -> dict:
    base = {"source": "import:x", "status": "ok", "gen_tokens": 64, "ttft_ms": 50.0}
    base |= {"e2e_ms_p50": 1600.0, "e2e_tps": None, "e2e_ms_samples": None}
    return base | kw


def run(*rows) -> pd.DataFrame:
    return correct_tpot(pd.DataFrame(list(rows)))


def test_figure_at_2_percent_of_inverse_ttft_is_flagged_and_recomputed():
    # 1000/50 ms = 20 tok/s; 20.4 is 2% off -> artifact; gen/p50 = 64/1.6 s = 40 tok/s
    out = run(row(e2e_tps=20.4)).iloc[0]
    assert bool(out["tpot_artifact"]) is True
    assert out["e2e_tps_raw"] == 20.4
    assert out["e2e_tps"] == pytest.approx(40.0) and out["e2e_tps_recomputed"] == pytest.approx(40.0)
    assert "artifact" in out["tpot_check"] and "2.0%" in out["tpot_check"]


def test_figure_at_10_percent_is_kept():
    out = run(row(e2e_tps=22.0)).iloc[0]  # 10% off 20 tok/s
    assert bool(out["tpot_artifact"]) is False
    assert out["e2e_tps"] == 22.0 and out["e2e_tps_raw"] == 22.0
    assert out["e2e_tps_recomputed"] == pytest.approx(40.0)
    assert out["tpot_check"].startswith("ok")


def test_boundary_is_3_percent():
    out = run(row(e2e_tps=20.59), row(e2e_tps=20.61))  # 2.95% and 3.05% off 20 tok/s
    assert list(out["tpot_artifact"]) == [True, False]


def test_artifact_without_p50_is_withdrawn_not_kept():
    out = run(row(e2e_tps=20.0, e2e_ms_p50=None)).iloc[0]
    assert bool(out["tpot_artifact"]) is True and math.isnan(out["e2e_tps"])
    assert out["e2e_tps_raw"] == 20.0 and "withdrawn" in out["tpot_check"]


def test_measured_rows_are_checked_against_raw_samples():
    # median of the samples = 1100 ms -> 64 / 1.1 s = 58.1818 tok/s
    samples = [1000.0, 1200.0, 1100.0]
    good = row(source="deploybench", e2e_tps=58.0, e2e_ms_samples=samples)
    bad = row(source="deploybench", e2e_tps=50.0, e2e_ms_samples=samples)
    out = run(good, bad)
    assert list(out["tpot_artifact"]) == [False, True]
    assert out["e2e_tps"].tolist() == pytest.approx([58.0, 64 / 1.1])
    assert out["e2e_tps_raw"].tolist() == [58.0, 50.0]
    assert "14.1% off" in out["tpot_check"][1] and "replaced" in out["tpot_check"][1]


def test_a_batch_row_counts_every_sequence_s_tokens():
    # batch 4: a run makes 4 x 64 tokens, so 4 x 64 / 1.1 s = 232.7 tok/s is the figure, not an artifact
    samples = [1000.0, 1200.0, 1100.0]
    batch = row(source="deploybench", batch_size=4, e2e_tps=4 * 64 / 1.1, e2e_ms_samples=samples)
    out = run(batch, {**batch, "e2e_tps": 64 / 1.1}).to_dict("records")
    assert out[0]["tpot_artifact"] is False and out[0]["e2e_tps"] == pytest.approx(4 * 64 / 1.1)
    assert out[0]["e2e_tps_recomputed"] == pytest.approx(4 * 64 / 1.1)
    assert out[1]["tpot_artifact"] is True and out[1]["e2e_tps"] == pytest.approx(4 * 64 / 1.1)  # batch 1's: replaced


def test_failed_rows_are_not_checked():
    out = run(row(status="failed", e2e_tps=None)).iloc[0]
    assert bool(out["tpot_artifact"]) is False and math.isnan(out["e2e_tps"])
    assert out["tpot_check"] == "not checked: failed row"


def test_input_frame_is_not_modified():
    df = pd.DataFrame([row(e2e_tps=20.4)])
    correct_tpot(df)
    assert df["e2e_tps"].tolist() == [20.4] and "tpot_artifact" not in df


def test_the_study_figures_are_not_artifacts():
    out = correct_tpot(consolidate([], [SPEC], ROOT))
    ok = out[out["status"] == "ok"]
    assert not ok["tpot_artifact"].any()
    assert (ok["e2e_tps"] == ok["e2e_tps_raw"]).all()
    r = out[out["cell_id"] == "g/eager-bfloat16/c2048-g64-b1-greedy"].iloc[0]
    # TPOT_tokps 31.117 vs 1000/475.8 ms = 2.10 tok/s; vs gen/p50 = 64/2.0567 s = 31.117
    assert r["e2e_tps_recomputed"] == pytest.approx(64 / 2.056731104850769, rel=1e-12)
    assert r["tpot_check"].startswith("ok: e2e_tps 31.12") and "(+0.00%)" in r["tpot_check"]
