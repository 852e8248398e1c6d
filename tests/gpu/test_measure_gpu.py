"""The engine on a CUDA GPU: memory, KV cache, dtypes, and one full-size cell. Run with -m gpu."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from deploybench.analytic import step_kernels
from deploybench.measure import phases as measure
from deploybench.plan.spec import ModelEntry
from deploybench.results.schema import write_row
from tests.unit.test_measure import CARDS, make_cell, random_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GPU = {"device": "cuda", "idle_cooldown_s": 0.5, "idle_window_s": 1.0, "min_energy_window_s": 2.0}


@pytest.mark.parametrize("family", sorted(CARDS))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_memory_and_kv_on_gpu(family, dtype):
    row = measure.measure_cell(make_cell(random_model(family), context=256, gen=16, dtype=dtype, **GPU))
    assert row["status"] == "ok", row["error"]
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"] > 0
    assert row["weights_bytes"] > 0
    # The peak was read with the cache alive: it holds the weights and the cache.
    assert row["peak_allocated_bytes"] >= row["weights_bytes"] + row["kv_cache_bytes"]
    assert row["peak_reserved_bytes"] >= row["peak_allocated_bytes"]
    assert row["memory_null_reason"] is None
    assert row["energy_source"] == "nvml_total_energy_counter", row["energy_source"]
    assert row["energy_j"] > 0 and row["energy_window_s"] >= GPU["min_energy_window_s"]
    assert row["device_uuid"] and row["device_uuid"].startswith("GPU-")
    assert row["mem_bandwidth_bytes_per_s"] > 1e12  # an H100/H200 copies at several TB/s
    assert 0 < row["roofline_fraction"] < 1


def test_compiled_backend_static_cache_kv():
    cell = make_cell(random_model("qwen3"), context=128, gen=16, backend="compiled", **GPU)
    torch._dynamo.reset()  # as in a measure job's own process: nothing compiled in memory yet
    row = measure.measure_cell(cell)
    assert row["status"] == "ok", row["error"]
    assert row["cache_implementation"] == "static"
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"]
    assert row["compile_s"] is not None and row["compile_s"] >= 0
    # transformers compiles the step in this process: a graph compiled or loaded from the machine's cache
    assert row["compile_cache_hits"] + row["compile_cache_misses"] >= 1


@pytest.mark.parametrize(("family", "decoding"), [("gpt_oss", "top_p"), ("qwen3", "greedy")])
def test_compiled_loop_on_gpu(family, decoding):
    """CUDA graphs, on-device sampling, device-clock inter-token times, static KV as predicted."""
    cell = make_cell(random_model(family), context=128, gen=16, decoding=decoding, backend="compiled_loop", **GPU)
    row = measure.measure_cell(cell)
    assert row["status"] == "ok" and row["valid"], (row["error"], row["invalid_reasons"])
    assert row["compiled"] is True and row["cache_implementation"] == "static"
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"]
    assert len(row["itl_ms_samples"]) == row["n_runs"] * 15 and min(row["itl_ms_samples"]) > 0
    assert 0 < row["roofline_fraction"] < 1
    # The step's kernels by name add up to its kernel count (the same difference of profiled generates).
    kernels = step_kernels.from_json(row["step_kernels_json"])
    assert kernels and sum(k.calls for k in kernels) == pytest.approx(row["kernels_per_token"])


def test_full_size_gpt_oss_cell_at_2048(tmp_path):
    """One full-size random-weight gpt-oss-20b cell at the reference shape, kept as evidence."""
    model = ModelEntry(source="random", architecture="workflow/architectures/gpt-oss-20b.json")
    cell = make_cell(model, context=2048, gen=64, name="gpt-oss-20b", device="cuda", n_runs=5)
    row = measure.measure_cell(cell)
    out = Path(os.environ.get("OUT", tmp_path))
    write_row(row, out / "gpu_test_gpt-oss-20b_c2048-g64-greedy.parquet")
    print(
        {k: row[k] for k in ("weights_bytes", "ttft_ms", "decode_tps", "e2e_tps", "kv_cache_bytes", "j_per_1k_tokens")}
    )
    assert row["status"] == "ok" and row["valid"], row["invalid_reasons"]
    assert 38e9 < row["weights_bytes"] < 45e9  # 20.9B params in bf16 = 41.8 GB
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"]
    assert row["energy_counter_sampler_rel_diff"] < 0.10
