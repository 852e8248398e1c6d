"""The attribution columns of a row and the measurement defects they came with, on CPU.

GPU-only figures (kernel profile, calibrations, NVML system fields) are null with the reason; the
host record, the bytes and FLOPs a step reads and does, and the effective generation settings exist
everywhere. The defects: every measured shape warmed right before it is measured, a checkpoint's
generation config never applies silently, warmup_runs 0 refused.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GenerationConfig

from deploybench.engines import models
from deploybench.instruments import energy, nvml
from deploybench.instruments.energy import EnergyReading
from deploybench.measure import phases as measure
from deploybench.plan.spec import ModelEntry, SpecError
from tests.fixtures.engines import ScriptedEngine
from tests.fixtures.tokenizers import save_tokenizer
from tests.unit.test_measure import FAMILY_TOKENIZER, cell_dict, make_cell, random_model

GPU_ONLY = (
    "gemv_bandwidth_bytes_per_s",
    "gemm_flops_per_s",
    "launch_us",
    "profile_tokens",
    "kernels_per_token",
    "gpu_kernel_ms_per_token",
    "gpu_busy_fraction",
    "bound_by",
    "power_limit_w",
    "j_per_prompt_token",
    "j_per_decode_token",
    "power_violation_s",
    "sm_clock_mhz_mean",
    "idle_cooldown_s_measured",
)


@pytest.fixture(scope="module")
def moe_row():
    return measure.measure_cell(make_cell(random_model("gpt_oss"), context=24, gen=6))


def test_gpu_only_columns_are_null_with_the_reason_on_cpu(moe_row):
    assert moe_row["status"] == "ok" and moe_row["valid"], moe_row["invalid_reasons"]
    assert [c for c in GPU_ONLY if moe_row.get(c) is not None] == []
    assert moe_row["boundness_null_reason"].startswith("no CUDA device")
    assert moe_row["energy_source"].startswith("unavailable: no CUDA device")


def test_host_record_and_what_a_step_reads_are_in_every_row(moe_row):
    assert moe_row["cpu_model"] and moe_row["cpu_count"] >= 1 and moe_row["python_loop_ns"] > 0
    assert moe_row["code_revision"] and len(moe_row["source_sha256"]) == 64
    assert moe_row["gemv_shape"] == "64x128"  # tiny gpt-oss: its experts' gate/up matrices hold the most bytes
    assert moe_row["experts_read_per_token"] == "routed"
    assert moe_row["params_read_per_token"] == moe_row["active_params"] < moe_row["all_experts_params"]
    # 2 FLOPs per weight read, plus attention: more than the weights alone, less than twice over
    assert 2 * moe_row["params_read_per_token"] < moe_row["decode_flops_per_token"] < 4 * moe_row["active_params"]


def test_the_phases_wall_times_are_recorded_in_order_and_fit_in_the_cell(moe_row):
    phases = json.loads(moe_row["phase_wall_s_json"])
    names = ["calibrate", "load", "idle_power", "warm_up", "ttft_runs", "decode_runs", "afterwards"]
    assert list(phases) == names
    assert all(s >= 0 for s in phases.values()) and sum(phases.values()) <= moe_row["cell_wall_s"]
    # the timed runs sit inside their phases
    assert phases["decode_runs"] >= sum(moe_row["e2e_ms_samples"]) / 1e3
    assert phases["ttft_runs"] >= sum(moe_row["ttft_ms_samples"]) / 1e3


def test_all_experts_reads_every_expert_in_the_roofline():
    entry = ModelEntry(
        source="random", architecture=random_model("gpt_oss").architecture, experts_implementation="all_experts"
    )
    row = measure.measure_cell(make_cell(entry, context=24, gen=6))
    assert row["status"] == "ok" and row["valid"], row["invalid_reasons"]
    assert row["experts_implementation"] == "all_experts" and row["experts_read_per_token"] == "all"
    assert row["params_read_per_token"] == row["all_experts_params"]
    dtype = models.TORCH_DTYPES[row["dtype"]]
    assert row["decode_bytes_per_token"] > row["all_experts_params"] * dtype.itemsize


def test_warmup_runs_zero_is_refused_before_anything_runs():
    with pytest.raises(SpecError, match="warmup_runs"):
        make_cell(random_model("qwen3"), warmup_runs=0)


class Recorder:
    """An engine's runs that record (phase, new_tokens, clock) and return a minimal output."""

    def __init__(self, gen):
        self.calls, self.phase, self.gen = [], None, gen

    def __call__(self, new_tokens, i, clock):
        from deploybench.engines.timing import RunTiming

        self.calls.append((self.phase, new_tokens, clock))
        cache = type("Cache", (), {"layers": []})()
        times = [0.001 * k for k in range(new_tokens)] if clock else []
        return RunTiming(e2e_s=0.01, token_times=times, new_tokens=new_tokens), type(
            "Out", (), {"past_key_values": cache}
        )()


def test_every_measured_shape_is_warmed_right_before_it_is_measured():
    cell = make_cell(random_model("qwen3"), context=8, gen=5, backend="compiled", warmup_runs=1, n_runs=3)
    run, device = Recorder(cell.gen), nvml.open_device("cpu")
    engine = ScriptedEngine(run, cell)
    for phase, call in (
        ("warm-up", lambda: measure._warm_up(engine, cell)),
        ("ttft", lambda: measure._prefill_runs(engine, cell, device)),
        ("decode", lambda: measure._decode_runs(engine, cell, device)),
    ):
        run.phase = phase
        call()
    ttft = [i for i, c in enumerate(run.calls) if c[0] == "ttft"]
    decode = [i for i, c in enumerate(run.calls) if c[0] == "decode"]
    # The TTFT runs follow a discarded one-token run; the measured full runs follow a discarded full run.
    assert run.calls[ttft[0] - 1] == ("warm-up", 1, False) and len(ttft) == 3
    assert run.calls[decode[0]] == ("decode", 5, False), "the full shape is warmed again after the TTFT runs"
    assert run.calls[decode[0] + 1 :] == [("decode", 5, True)] * 3


def test_a_checkpoint_generation_config_does_not_apply(tmp_path):
    """transformers fills every unset setting from the checkpoint's generation_config.json."""
    directory = tmp_path / "qwen3"
    model = models.load_model(random_model("qwen3"), "float32", "cpu").model
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.6, top_k=20, top_p=0.95, repetition_penalty=5.0, no_repeat_ngram_size=2
    )
    model.save_pretrained(directory)
    save_tokenizer(FAMILY_TOKENIZER["qwen3"], directory)
    entry = ModelEntry(source="pretrained", id=str(directory))
    rows = {d: measure.measure_cell(make_cell(entry, context=40, gen=8, decoding=d)) for d in ("greedy", "top_p")}
    greedy, top_p = (json.loads(rows[d]["generation_settings_json"]) for d in ("greedy", "top_p"))
    assert greedy["do_sample"] is False and greedy["repetition_penalty"] == 1 and greedy["no_repeat_ngram_size"] == 0
    # top_p: the cell's temperature and top_p; top_k off (0), not the checkpoint's 20
    assert (top_p["temperature"], top_p["top_p"], top_p["top_k"]) == (0.7, 0.9, 0)
    assert top_p["repetition_penalty"] == 1 and greedy["max_new_tokens"] == 8


def test_energy_by_phase_arithmetic():
    prefill = EnergyReading(source=energy.SOURCE_COUNTER, window_s=5.0, energy_j=500.0)  # 10 runs: 50 J each
    decode = EnergyReading(source=energy.SOURCE_COUNTER, window_s=6.0, energy_j=1200.0)  # 4 runs: 300 J each
    figures = energy.by_phase(prefill, 10, decode, 4, context=2048, gen=64)
    assert figures["j_per_prompt_token"] == pytest.approx(50.0 / 2048)
    assert figures["j_per_decode_token"] == pytest.approx((300.0 - 50.0) / 63)
    assert figures["prefill_energy_window_s"] == 5.0
    unmeasured = energy.by_phase(EnergyReading(source="unavailable: x"), 10, decode, 4, context=2048, gen=64)
    assert unmeasured["j_per_prompt_token"] is None and unmeasured["j_per_decode_token"] is None


def test_a_cell_spec_of_the_old_form_without_the_new_setting_still_parses():
    spec = cell_dict(random_model("qwen3"))
    assert "idle_cooldown_max_s" not in spec["measurement"]
    assert make_cell(random_model("qwen3")).measurement.idle_cooldown_max_s == 30.0
    assert torch.float32 is models.TORCH_DTYPES["float32"]
