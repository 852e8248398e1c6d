"""The batch axis end to end on CPU: config -> cells -> a measured batch-B row, the schema migration,
and a batch that cannot fit becoming an out-of-memory row before anything loads."""

from __future__ import annotations

import pytest

from deploybench.measure import phases as measure
from deploybench.plan import naming
from deploybench.plan.config import all_cells, validate_config
from deploybench.results import schema
from tests.fixtures.small_config import SMALL_CONFIG
from tests.unit.test_measure import make_cell, random_model


def test_a_batch_axis_makes_one_cell_per_batch_size_with_the_batch_in_its_path():
    config = {**SMALL_CONFIG, "studies": {"b": {**SMALL_CONFIG["studies"]["main"], "batch": [1, 4]}}}
    cells = all_cells(validate_config(config))
    assert sorted({c.batch for c in cells}) == [1, 4]
    four = next(c for c in cells if c.batch == 4)
    assert (
        four.path
        == f"results/cells/{naming.cell_id(four.model, 'eager', 'bfloat16', four.context, 4, 'greedy', 4)}.parquet"
    )
    assert "-b4-" in four.path and len({c.path for c in cells}) == len(cells)


@pytest.fixture(scope="module")
def moe_rows():
    return {b: measure.measure_cell(make_cell(random_model("gpt_oss"), context=24, gen=6, batch=b)) for b in (1, 4)}


def test_a_batch_row_counts_every_sequence(moe_rows):
    one, four = moe_rows[1], moe_rows[4]
    assert four["status"] == "ok" and four["valid"], four["invalid_reasons"]
    assert four["batch_size"] == 4 and four["cell_id"].endswith("-b4-greedy")
    assert four["kv_cache_bytes"] == four["kv_cache_bytes_analytic"] == 4 * one["kv_cache_bytes"]
    assert four["gen_tokens_measured"] == 6
    assert four["decode_tps"] == pytest.approx(4 * four["decode_tps_per_seq"])
    assert four["tpot_ms"] == pytest.approx(1000 / four["decode_tps_per_seq"])
    # e2e tok/s counts the tokens of all four sequences
    assert four["e2e_tps"] == pytest.approx(4 * 6 / (four["e2e_ms_p50"] / 1000))


def test_expert_coverage_and_the_roofline_at_batch(moe_rows):
    one, four = moe_rows[1], moe_rows[4]
    assert one["experts_touched_per_layer"] == 2.0 == one["experts_touched_uniform_prediction"]  # top-2 of 8
    assert 2.0 < four["experts_touched_per_layer"] <= 8.0
    assert four["experts_touched_uniform_prediction"] == pytest.approx(8 * (1 - (1 - 2 / 8) ** 4))
    # A step of 4 sequences reads more weights (the union of their experts) and 4 caches, for 4 tokens.
    assert four["decode_bytes_per_step"] > one["decode_bytes_per_step"]
    assert four["decode_bytes_per_token"] == pytest.approx(four["decode_bytes_per_step"] / 4)
    assert four["decode_flops_per_step"] == pytest.approx(4 * one["decode_flops_per_step"], rel=0.01)


def test_a_dense_model_has_no_coverage():
    row = measure.measure_cell(make_cell(random_model("qwen3"), context=16, gen=4, batch=2))
    assert row["status"] == "ok" and row["valid"], row["invalid_reasons"]
    assert row["experts_touched_per_layer"] is None and row["batch_size"] == 2


def test_a_batch_that_cannot_fit_is_an_oom_row_before_loading(monkeypatch):
    loads = []
    monkeypatch.setattr("deploybench.analytic.capacity.free_bytes", lambda device: 10_000)
    monkeypatch.setattr("deploybench.engines.models.load_model", lambda *a, **k: loads.append(a))
    row = measure.measure_cell(make_cell(random_model("qwen3"), context=16, gen=4, batch=64, measure_bandwidth=False))
    assert row["status"] == "failed" and row["failure_kind"] == "oom", row.get("error")
    assert "predicted out of memory" in row["error"] and loads == []


def test_rows_of_schema_1_read_as_batch_1():
    old = {"schema_version": "1.0", "cell_id": "m/eager-bfloat16/c2048-g64-greedy", "batch_size": None}
    new = schema.migrate(old)
    assert new["batch_size"] == 1 and new["cell_id"] == "m/eager-bfloat16/c2048-g64-b1-greedy"
    assert new["schema_version"] == schema.SCHEMA_VERSION
    current = {"schema_version": schema.SCHEMA_VERSION, "cell_id": "m/eager-bfloat16/c8-g4-b2-beam", "batch_size": 2}
    assert schema.migrate(current) == current
    old_beam = schema.migrate({**old, "cell_id": "m/eager-bfloat16/c8-g4-beam"})
    assert old_beam["cell_id"] == "m/eager-bfloat16/c8-g4-b1-beam"  # a decoding starting with b is no batch
