"""The metric catalogue is the one place a column is declared: every step's columns come from it."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pytest

from deploybench.enums import Backend, Stage, ValueType, one_of
from deploybench.plan import naming
from deploybench.results import metrics, schema
from deploybench.results.consolidate import arrow_table
from deploybench.results.tpot import correct_tpot


def test_the_result_schema_is_the_catalogue_cell_stage():
    cell = metrics.of_stage(Stage.CELL)
    assert schema.COLUMN_NAMES == [m.name for m in cell]
    assert schema.SCHEMA.field("ttft_ms").type == pa.float64()
    assert schema.SCHEMA.field("invalid_reasons").type == pa.list_(pa.string())
    assert schema.SCHEMA.field("context_tokens").type == pa.int64()


def test_a_row_with_a_column_outside_the_catalogue_is_refused(tmp_path):
    with pytest.raises(KeyError, match="ttft_seconds"):
        schema.write_row({"cell_id": "x", "ttft_seconds": 1.0}, tmp_path / "row.parquet")
    assert not (tmp_path / "row.parquet").exists()


def test_an_analysis_table_with_a_column_outside_the_catalogue_is_refused():
    df = pd.DataFrame({"cell_id": ["x"], "ttft_ms": [1.0], "made_up_tps": [2.0]})
    with pytest.raises(KeyError, match="made_up_tps"):
        arrow_table(df)
    table = arrow_table(df.drop(columns="made_up_tps"))
    assert table.schema.field("ttft_ms").type == pa.float64()


def test_tpot_check_adds_exactly_its_catalogue_columns():
    df = pd.DataFrame([{"status": "ok", "gen_tokens": 16, "e2e_tps": 10.0, "ttft_ms": 50.0, "e2e_ms_p50": 1600.0}])
    added = set(correct_tpot(df).columns) - set(df.columns)
    assert added == {m.name for m in metrics.of_stage(Stage.TPOT)}


# Name suffix -> the unit the stored value must be in (names carry their unit).
SUFFIX_UNITS = {
    r"_ms(_p\d+)?$": "ms",
    r"_bytes$": "bytes",
    r"_bytes_per_s$": "bytes/s",
    r"_flops_per_s$": "FLOP/s",
    r"_s$": "s",
    r"_w$": "W",
    r"(?<!per)_j$": "J",
    r"_mhz_(start|end)$": "MHz",
    r"_tps$": "tok/s",
}


@pytest.mark.parametrize("pattern", sorted(SUFFIX_UNITS))
def test_names_carry_their_unit(pattern):
    numeric = (ValueType.FLOAT, ValueType.INT)
    matching = [
        m
        for m in metrics.catalogue()
        if re.search(pattern, m.name) and m.type in numeric and m.stage is not Stage.RATIO
    ]
    assert matching
    for m in matching:
        if pattern == r"_s$" and m.name.endswith("_per_s"):
            continue
        assert m.unit.split("/")[0] == SUFFIX_UNITS[pattern].split("/")[0], m.name


def test_every_figure_has_a_unit_and_every_column_a_definition():
    figure_groups = {"latency", "memory", "energy", "roofline"}
    for m in metrics.catalogue():
        assert m.definition.strip(), m.name
        if m.group in figure_groups and m.type in (ValueType.FLOAT, ValueType.INT):
            assert m.unit, f"{m.name} is a figure without a unit"
        if m.better is not None:
            assert m.type in (ValueType.FLOAT, ValueType.INT), f"{m.name}: not a figure"


def test_enum_placeholders_expand_to_the_members():
    assert one_of(Backend) in metrics.get("backend").definition
    assert "{" not in "".join(m.definition for m in metrics.catalogue())


def test_the_cell_id_definition_spells_the_format_naming_declares():
    definition = metrics.get("cell_id").definition
    assert definition.startswith("MODEL/BACKEND-DTYPE/cCONTEXT-gGEN-bBATCH-DECODING")  # the batch included
    example = naming.cell_id("m", "eager", "bfloat16", 2048, 64, "greedy", batch=8)
    spelled = naming.CELL_ID.format(
        model="MODEL",
        backend="BACKEND",
        dtype="DTYPE",
        context="CONTEXT",
        gen="GEN",
        batch="BATCH",
        decoding="DECODING",
    )
    assert definition.startswith(spelled) and example == "m/eager-bfloat16/c2048-g64-b8-greedy"


def test_percentile_entries_make_one_column_each_and_one_definition_row():
    names = {m.name for m in metrics.catalogue()}
    assert {"e2e_ms_p50", "e2e_ms_p95", "e2e_ms_p99", "itl_ms_p50", "itl_ms_p95", "itl_ms_p99"} <= names
    rows = dict(metrics.definition_rows())
    assert "e2e_ms_p50 / _p95 / _p99" in rows and "e2e_ms_p95" not in rows
    assert metrics.get("e2e_ms_p95").definition.startswith("95th percentile of the wall time")


def test_every_baseline_ratio_is_generated_with_the_metric_direction():
    for base in metrics.ratio_bases():
        ratio = metrics.get(metrics.ratio_column(base.name))
        assert ratio.stage is Stage.RATIO and ratio.better == base.better


@pytest.fixture
def catalogue_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.yaml"
    monkeypatch.setattr(metrics, "CATALOGUE_PATH", path)
    metrics.catalogue.cache_clear()
    yield path
    metrics.catalogue.cache_clear()


@pytest.mark.parametrize(
    "text, named",
    [
        ("latency:\n  ttft_ms: {type: float, definition: x, colour: red}\n", "colour"),
        ("latency:\n  ttft_ms: {type: decimal, definition: x}\n", "latency.ttft_ms"),
        ("latency:\n  ttft_ms: {type: float}\n", "latency.ttft_ms"),
        ("latency:\n  ttft_ms: {type: float, definition: x, better: faster}\n", "latency.ttft_ms"),
        ("a:\n  x_ms: {type: float, definition: x}\nb:\n  x_ms: {type: float, definition: y}\n", "x_ms"),
    ],
)
def test_a_malformed_catalogue_names_the_entry(catalogue_file, text, named):
    catalogue_file.write_text(text)
    with pytest.raises(metrics.CatalogueError, match=re.escape(named)):
        metrics.catalogue()
