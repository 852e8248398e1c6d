"""Consolidation, table writing (Parquet + CSV, atomic) and the three rule adapters."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deploybench.results.ape import compute_ape
from deploybench.results.consolidate import consolidate, read_table, write_table
from deploybench.results.schema import write_row
from deploybench.results.tpot import correct_tpot

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "arxiv-2508.16700",
    "format": "arxiv_2508_16700",
    "path": "reference/arxiv-2508.16700",
    "model_map": {"openai/gpt-oss-20b": "gpt-oss-20b", "Qwen/Qwen3-32B": "qwen3-32b", "01-ai/Yi-34B": "yi-34b"},
}


def cell(model: str, context: int = 64) -> dict:
    return {
        "cell_id": f"{model}/eager-float32/c{context}-g16-greedy",
        "model": model,
        "backend": "eager",
        "dtype": "float32",
        "context_tokens": context,
        "gen_tokens": 16,
        "decoding": "greedy",
        "source": "deploybench",
        "status": "ok",
        "valid": True,
        "invalid_reasons": [],
        "active_params": 2_000_000,
        "ttft_ms": 10.0,
        "e2e_ms_p50": 160.0,
        "e2e_ms_samples": [150.0, 160.0, 170.0],
        "e2e_tps": 100.0,
    }


@pytest.fixture
def cells(tmp_path) -> list[Path]:
    paths = []
    for model in ("tiny-a", "tiny-b"):
        paths.append(write_row(cell(model), tmp_path / "cells" / model / "eager-float32/c64-g16-greedy.parquet"))
    return paths


def test_consolidate_cells_and_imported_rows(cells):
    df = consolidate(cells, [SPEC], ROOT)
    assert len(df) == 2 + 45
    assert df["source"].value_counts().to_dict() == {"import:arxiv-2508.16700": 45, "deploybench": 2}
    assert df["source"].iloc[0] == "deploybench"  # measured rows first
    assert str(df["context_tokens"].dtype) == "Int64"
    assert df.loc[0, "e2e_ms_samples"] == [150.0, 160.0, 170.0]
    assert df["cell_id"].is_unique


def test_duplicate_cells_and_unknown_columns_are_errors(cells, tmp_path):
    with pytest.raises(ValueError, match="two rows for cell 'tiny-a/"):
        consolidate([cells[0], cells[0]], [], ROOT)
    odd = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"cell_id": ["x"], "bogus_column": [1]}), odd)
    with pytest.raises(KeyError, match="odd.parquet.*bogus_column"):
        consolidate([odd], [], ROOT)


def test_write_table_parquet_and_csv(cells, tmp_path):
    df = compute_ape(correct_tpot(consolidate(cells, [SPEC], ROOT)), "tiny-a")
    out = write_table(df, tmp_path / "res" / "ape.parquet")
    schema = pq.read_schema(out)
    assert schema.field("context_tokens").type == pa.int64()
    assert schema.field("e2e_ms_samples").type == pa.list_(pa.float64())
    assert schema.field("tpot_artifact").type == pa.bool_()
    assert schema.field("ratio_to_baseline_e2e_tps").type == pa.float64()
    back = read_table(out)
    assert back.shape == df.shape and list(back.columns) == list(df.columns)
    assert back.loc[1, "ratio_to_baseline_e2e_tps"] == pytest.approx(1.0)
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert len(csv) == len(df)
    assert json.loads(csv.loc[0, "e2e_ms_samples"]) == [150.0, 160.0, 170.0]
    notes = json.loads(csv[csv["cell_id"] == "gpt-oss-20b/eager-bfloat16/c2048-g64-b1-greedy"]["notes"].iloc[0])
    assert any("both equal the maximum" in n for n in notes)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ape.csv", "ape.parquet"]  # no temp files


def test_write_table_is_atomic(cells, tmp_path, monkeypatch):
    target = tmp_path / "consolidated.parquet"
    write_table(consolidate(cells, [], ROOT), target)
    before = (target.read_bytes(), target.with_suffix(".csv").read_bytes())

    def broken_csv(self, *a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_csv)
    with pytest.raises(OSError, match="disk full"):
        write_table(consolidate(cells, [SPEC], ROOT), target)
    assert (target.read_bytes(), target.with_suffix(".csv").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "consolidated.csv", "consolidated.parquet"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_result_file_gets_one_mode_the_umask_s(cells, tmp_path, umask):
    """Cell rows, archived rows and tables alike: 0666 less the umask (0644 under the usual 022)."""
    old = os.umask(umask)
    try:
        written = [write_row(cell("tiny-c"), tmp_path / "out" / "cells" / "c.parquet")]
        written.append(write_row(cell("tiny-c"), tmp_path / "out" / "archive" / "c" / "t.parquet"))
        table = write_table(consolidate(cells, [], ROOT), tmp_path / "out" / "consolidated.parquet")
        written += [table, table.with_suffix(".csv")]
        write_row(cell("tiny-c"), written[0])  # a rewrite keeps the mode
    finally:
        os.umask(old)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {oct(0o666 & ~umask)}


def test_adapters_run_standalone(cells, tmp_path):
    res = tmp_path / "results"
    py = sys.executable

    def sh(*args):
        subprocess.run([py, *map(str, args)], check=True, cwd=tmp_path, capture_output=True)

    sh(
        ROOT / "scripts/consolidate.py",
        *cells,
        "--external-tables",
        json.dumps([SPEC]),
        "--root",
        ROOT,
        "--output",
        res / "consolidated.parquet",
    )
    sh(ROOT / "scripts/correct_tpot.py", res / "consolidated.parquet", "--output", res / "corrected.parquet")
    sh(
        ROOT / "scripts/ape.py",
        res / "corrected.parquet",
        "--baseline-model",
        "tiny-a",
        "--output",
        res / "ape.parquet",
    )
    df = read_table(res / "ape.parquet")
    assert len(df) == 47 and {"tpot_check", "ape_e2e_tps_per_active_b"} <= set(df.columns)
    assert df.loc[0, "ape_e2e_tps_per_active_b"] == pytest.approx(100.0 / 0.002)
    assert all((res / f"{n}.csv").exists() for n in ("consolidated", "corrected", "ape"))
