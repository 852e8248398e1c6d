"""The largest batch that fits, refused before loading, and an out-of-memory batch as a failed row."""

from __future__ import annotations

import pytest
import torch

from deploybench.analytic import capacity
from deploybench.engines import batch as batching
from deploybench.engines import models
from deploybench.engines.timing import generation_config
from deploybench.enums import FailureKind
from deploybench.measure import failures
from deploybench.measure import phases as measure
from deploybench.plan.spec import standard_decoding
from deploybench.results import schema
from tests.unit.test_measure import random_model

GB = 10**9


def test_activation_per_sequence_from_batch_1_and_from_a_smaller_batch():
    # batch 1: peak 41.3 GB = weights 40 + KV 0.5 + activations 0.8
    assert capacity.activation_bytes_per_seq(41_300_000_000, 40 * GB, 500_000_000) == 800_000_000
    # batch 8: peak 50 GB = 40 + 8 x (0.5 + 0.75)
    assert capacity.activation_bytes_per_seq(50 * GB, 40 * GB, 500_000_000, batch=8) == 750_000_000
    assert capacity.activation_bytes_per_seq(40 * GB, 40 * GB, 500_000_000) == 0  # never negative
    with pytest.raises(ValueError, match="batch"):
        capacity.activation_bytes_per_seq(1, 1, 1, batch=0)


def test_max_batch_fit_by_hand():
    # 100 GB free, 10% headroom: 90 usable; 40 of weights leave 50; 1.25 GB a sequence: 40 sequences.
    assert capacity.max_batch_fit(100 * GB, 40 * GB, 500_000_000, 750_000_000, headroom=0.10) == 40
    assert capacity.max_batch_fit(100 * GB, 40 * GB, 500_000_000, 750_000_000, headroom=0.0) == 48
    assert capacity.max_batch_fit(100 * GB, 40 * GB, 500_000_000, 750_000_000) == 40  # DEFAULT_HEADROOM is 0.10
    assert capacity.max_batch_fit(40 * GB, 40 * GB, 500_000_000, 750_000_000) == 0  # not even the weights fit
    assert capacity.bytes_at_batch(40 * GB, 500_000_000, 750_000_000, 40) == 90 * GB


@pytest.mark.parametrize("kwargs", [{"headroom": 1.0}, {"headroom": -0.1}])
def test_headroom_is_a_fraction(kwargs):
    with pytest.raises(ValueError, match="headroom"):
        capacity.max_batch_fit(GB, 0, 1, 1, **kwargs)


def test_a_sequence_must_cost_bytes():
    with pytest.raises(ValueError, match="KV"):
        capacity.max_batch_fit(GB, 0, 0, 0.0)


def test_weights_estimate_matches_the_h200_anchor():
    # gpt-oss-20b: 20.915 B parameters in bf16 -> 41.8 GB, as measured after load on an H200.
    assert capacity.weights_bytes_estimate(20_914_757_184, torch.bfloat16) / GB == pytest.approx(41.83, abs=0.01)


def test_a_batch_over_the_estimate_is_refused_as_oom_before_running():
    estimate = capacity.BatchEstimate(100 * GB, 40 * GB, 500_000_000, 750_000_000)
    assert estimate.max_batch == 40 and not estimate.exceeds(40) and estimate.exceeds(41)
    capacity.check_batch_fits(40, estimate)
    with pytest.raises(capacity.PredictedOutOfMemoryError) as refused:
        capacity.check_batch_fits(64, estimate)
    assert failures.classify(refused.value) is FailureKind.OOM
    assert "batch 64 needs 120.00 GB" in str(refused.value) and "max_batch_fit 40" in str(refused.value)
    row = measure.failed_row({"cell_id": "m/eager-bfloat16/c2048-g64-greedy", "batch_size": 64}, "oom", refused.value)
    assert row["failure_kind"] == "oom" and row["status"] == "failed" and "predicted" in row["error"]


def _budgeted_matmul(monkeypatch, budget_bytes: int):
    """torch.matmul on a device with `budget_bytes` for one result: larger ones raise as CUDA would."""
    real = torch.matmul

    def matmul(a, b, **kwargs):
        shape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        size = torch.Size(shape).numel() * a.element_size()
        if size > budget_bytes:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size / 2**20:.2f} MiB")
        return real(a, b, **kwargs)

    monkeypatch.setattr(torch, "matmul", matmul)


def test_an_out_of_memory_batch_becomes_a_failed_row(monkeypatch, tmp_path):
    """Eager attention holds B x heads x context^2 scores in the prefill (gpt-oss-20b at B = 64 and 2048
    tokens: 32 GiB). On the tiny card in fp32 at 64 tokens: 4 heads x 64 x 64 x 4 bytes = 64 KiB a
    sequence; with 256 KiB for one allocation, batch 4 runs and batch 8 is an oom row, not a crash."""
    loaded = models.load_model(random_model("gpt_oss"), "float32", "cpu")
    _budgeted_matmul(monkeypatch, 256 * 2**10)
    config = generation_config(standard_decoding("greedy"), 4, 0)
    rows = {}
    for batch in (4, 8):
        ids, mask = batching.batch_tensors(batching.prompt_batch(loaded, loaded.model.config, 64, batch, 0), "cpu")
        row = {"cell_id": f"tiny-gpt-oss/eager-float32/c64-g4-greedy-b{batch}", "batch_size": batch}
        try:
            timing, _ = batching.timed_generate_batch(loaded.model, ids, mask, config, "cpu", seed=0, clock=False)
            row.update(status="ok", gen_tokens_measured=timing.new_tokens)
        except Exception as exc:  # as measure_cell does: an expected failure is a row, the rest propagates
            kind = failures.classify(exc)
            if kind is None:
                raise
            row = measure.failed_row(row, kind, exc)
        rows[batch] = row
    assert rows[4]["status"] == "ok" and rows[4]["gen_tokens_measured"] == 4
    assert rows[8]["status"] == "failed" and rows[8]["failure_kind"] == "oom"
    assert "Tried to allocate 0.50 MiB" in rows[8]["error"]  # 8 x 64 KiB
    assert schema.read_rows(schema.write_row(rows[8], tmp_path / "b8.parquet"))[0]["failure_kind"] == "oom"
