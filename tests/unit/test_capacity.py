"""The largest batch that fits, refused before loading, and an out-of-memory batch as a failed row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deploybench.analytic import capacity, params
from deploybench.engines import batch as batching
from deploybench.engines import models
from deploybench.engines.timing import generation_config
from deploybench.enums import ExpertsRead, FailureKind
from deploybench.instruments import host
from deploybench.instruments.memory import PeakMemory
from deploybench.measure import batch_fit, cell_figures, failures
from deploybench.measure import phases as measure
from deploybench.measure.records import MemoryFigures
from deploybench.plan import naming
from deploybench.plan.spec import ModelEntry, standard_decoding
from deploybench.results import schema
from deploybench.results.identity import identity_columns
from tests.unit.test_measure import make_cell, random_model

ROOT = Path(__file__).resolve().parents[2]

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


# ------------------------------------------------------------------ issue 23 item 2: the prediction counts activations

# gpt-oss-20b's batch-1 memory at 2048 + 64 tokens, bf16, random weights (reference-run/h200-2026-12-01-attribution,
# its eager cell): with 80 GiB free they give max_batch_fit 19, as the H100's batch-1 row of compiled_loop said.
GPT_OSS_B1 = {"peak_allocated_bytes": 43_785_623_552, "weights_bytes": 41_932_192_768, "kv_cache_bytes": 55_001_088}
H100 = 80 * 2**30  # what an H100 80GB has free before loading, about
GPT_OSS = ModelEntry(source="random", architecture=str(ROOT / "workflow/architectures/gpt-oss-20b.json"))


def _gpt_oss_cell(batch: int, **kwargs):
    kwargs = {"context": 2048, "gen": 64, "backend": "compiled_loop", "name": "gpt-oss-20b"} | kwargs
    return make_cell(GPT_OSS, batch=batch, measure_bandwidth=False, **kwargs)


def _write_row(root, cell, status="ok", device_name=None, **figures) -> dict:
    row = {
        **identity_columns(cell),
        "status": status,
        "valid": status == "ok",
        "device_name": device_name or host.cpu_model(),
        **(GPT_OSS_B1 | figures),
    }
    schema.write_row(row, root / naming.cell_path(cell.cell_id))
    return row


def _estimate(cell, free=H100, root=".", device_name=None):
    config = models.model_config(cell.model)
    meta = params.build_meta_model(config)
    counts = params.count_params(meta)
    return batch_fit.estimate(cell, config, meta, counts, free, device_name or host.cpu_model(), root)


def test_a_gpt_oss_batch_64_is_refused_from_its_batch_1_row_before_loading(tmp_path, monkeypatch):
    """The H100 run: batch 64 loaded and asked 32 GiB for one prefill though the batch-1 row said max_batch_fit 19
    (the check counted weights + KV only). Now that row's activations refuse it before any weights load."""
    _write_row(tmp_path, _gpt_oss_cell(1))
    monkeypatch.chdir(tmp_path)  # results/cells of this machine
    monkeypatch.setattr(capacity, "free_bytes", lambda device: H100)
    monkeypatch.setattr(measure, "engine_for", lambda *a, **k: pytest.fail("the model must not load"))
    row = measure.measure_cell(_gpt_oss_cell(64))
    assert row["status"] == "failed" and row["failure_kind"] == "oom"
    source = "measured: gpt-oss-20b/compiled_loop-bfloat16/c2048-g64-b1-greedy"
    assert row["predicted_activation_source"] == source and source in row["error"]
    assert row["predicted_activation_bytes_per_seq"] == GPT_OSS_B1["peak_allocated_bytes"] - 41_932_192_768 - 55_001_088
    assert row["free_bytes_before_load"] == H100
    assert (
        row["predicted_peak_bytes"] > H100 and "batch 64 needs" in row["error"] and "max_batch_fit 19" in row["error"]
    )
    assert schema.read_rows(schema.write_row(row, tmp_path / "b64.parquet"))[0]["predicted_peak_bytes"] > H100


def test_the_refusal_threshold_is_the_batch_1_rows_max_batch_fit(tmp_path):
    """One function for both: the batch-1 row's max_batch_fit at the free memory it started with is the largest
    batch its estimate lets through at that free memory; one more is refused, one less is not."""
    _write_row(tmp_path, _gpt_oss_cell(1))
    peak = PeakMemory(GPT_OSS_B1["peak_allocated_bytes"], GPT_OSS_B1["peak_allocated_bytes"], None)
    memory = MemoryFigures(peak, GPT_OSS_B1["kv_cache_bytes"], GPT_OSS_B1["kv_cache_bytes"])
    fits = capacity.BatchEstimate(H100, 0, 0, 0.0)  # the batch-1 run's: only its free memory counts
    reported = cell_figures.max_batch_fit(fits, memory, GPT_OSS_B1["weights_bytes"], 1)
    assert reported == 19  # as the H100 row said
    for batch in (16, reported):
        capacity.check_batch_fits(batch, _estimate(_gpt_oss_cell(batch), root=tmp_path))
    with pytest.raises(capacity.PredictedOutOfMemoryError, match="max_batch_fit 19"):
        capacity.check_batch_fits(reported + 1, _estimate(_gpt_oss_cell(reported + 1), root=tmp_path))


def test_the_largest_smaller_batch_of_the_same_cell_on_this_device_lends_its_figures(tmp_path):
    _write_row(tmp_path, _gpt_oss_cell(1))
    _write_row(tmp_path, _gpt_oss_cell(4), peak_allocated_bytes=49_500_000_000, kv_cache_bytes=4 * 55_001_088)
    _write_row(tmp_path, _gpt_oss_cell(8), status="failed")  # failed: lends nothing
    _write_row(tmp_path, _gpt_oss_cell(16), peak_allocated_bytes=45_000_000_000)  # a larger batch: not used
    _write_row(tmp_path, _gpt_oss_cell(2), device_name="NVIDIA H200")  # another device
    assert batch_fit.smaller_batch_row(_gpt_oss_cell(16), host.cpu_model(), tmp_path)["batch_size"] == 4
    assert batch_fit.smaller_batch_row(_gpt_oss_cell(2), host.cpu_model(), tmp_path)["batch_size"] == 1
    assert batch_fit.smaller_batch_row(_gpt_oss_cell(2), "NVIDIA H200", tmp_path) is None
    other = _gpt_oss_cell(16, backend="eager")  # other settings: another cell's rows
    assert batch_fit.smaller_batch_row(other, host.cpu_model(), tmp_path) is None
    estimate = _estimate(_gpt_oss_cell(16), root=tmp_path)
    assert estimate.activation_source == "measured: gpt-oss-20b/compiled_loop-bfloat16/c2048-g64-b4-greedy"
    assert estimate.activation_bytes_per_seq == (49_500_000_000 - 41_932_192_768 - 4 * 55_001_088) / 4


def test_without_a_measured_row_the_prefill_is_estimated_from_the_architecture(tmp_path):
    """gpt-oss-20b at 2048 tokens: eager attention with sinks holds 3 x 64 heads x 2048^2 bf16 scores a sequence
    (1.61 GB; the H100's 32 GiB allocation at batch 64 is one of the three); the H200 reference rows measured 1.80 GB
    (eager) and 1.70 GB (compiled_loop) of activations at batch 1, and the estimate stays within 10% of them."""
    estimate = _estimate(_gpt_oss_cell(64), root=tmp_path)
    assert (
        estimate.activation_source.startswith("analytic: ") and "attention scores 1.611" in estimate.activation_source
    )
    measured = GPT_OSS_B1["peak_allocated_bytes"] - GPT_OSS_B1["weights_bytes"] - GPT_OSS_B1["kv_cache_bytes"]
    assert estimate.activation_bytes_per_seq == pytest.approx(measured, rel=0.10)
    with pytest.raises(capacity.PredictedOutOfMemoryError, match="analytic: hidden states") as refused:
        capacity.check_batch_fits(64, estimate)
    assert failures.classify(refused.value) is FailureKind.OOM
    capacity.check_batch_fits(16, _estimate(_gpt_oss_cell(16), root=tmp_path))  # 41.8 + 16 x 1.71 GB fits


def test_the_analytic_prefill_follows_the_attention_and_experts_paths():
    config = models.model_config(GPT_OSS)
    split = params.expert_split(params.build_meta_model(config))
    bf16 = torch.bfloat16

    def per_seq(eager, sinks, reads):
        return capacity.prefill_activations(config, split, 2048, bf16, eager, sinks, reads)

    sdpa = per_seq(False, False, ExpertsRead.ROUTED)
    assert sdpa.scores_bytes == 0 and sdpa.mlp_bytes == 2048 * 3 * 4 * 2880 * 2  # top_k 4 experts of 2880
    assert per_seq(True, True, ExpertsRead.ROUTED).scores_bytes == 64 * 2048**2 * 3 * 2
    assert per_seq(True, False, ExpertsRead.ROUTED).scores_bytes == 64 * 2048**2 * (2 + 4 + 4)  # fp32 softmax
    assert per_seq(False, False, ExpertsRead.ALL).mlp_bytes == 8 * sdpa.mlp_bytes  # 32 experts, not 4
    assert sdpa.logits_bytes == 201_088 * (2 + 4)  # the last position only
    assert sdpa.per_seq == sdpa.hidden_bytes + sdpa.mlp_bytes + sdpa.logits_bytes


def test_every_row_past_the_check_records_the_estimate_it_was_let_through_with(monkeypatch):
    """An ok row, and one that ran out of memory for real after the check let it through (the H100 case), say
    what the estimate predicted and from where: a misprediction shows in the row."""
    ok = measure.measure_cell(make_cell(random_model("gpt_oss"), batch=2))
    assert ok["status"] == "ok" and ok["predicted_activation_source"].startswith("analytic: ")
    assert ok["predicted_peak_bytes"] > 0 and ok["free_bytes_before_load"] > 0

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 32.00 GiB")

    monkeypatch.setattr(models, "load_model", oom)
    failed = measure.measure_cell(make_cell(random_model("gpt_oss"), batch=2))
    assert failed["failure_kind"] == "oom" and "32.00 GiB" in failed["error"]
    assert failed["predicted_activation_source"] == ok["predicted_activation_source"]
