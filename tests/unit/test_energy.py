"""CPU tests of deploybench.instruments.energy: the energy record of a row, pure arithmetic."""

import dataclasses

import pytest

from deploybench.instruments import energy
from deploybench.instruments.energy import ENERGY_FIELDS, EnergyReading, summarize, unavailable
from deploybench.results import metrics

# ------------------------------------------------------------------ summary


def _reading(**kw):
    base = EnergyReading(
        source=energy.SOURCE_COUNTER,
        window_s=5.0,
        energy_j=500.0,
        sampler_energy_j=480.0,
        sampler_window_s=4.8,
        sampler_n_samples=481,
        gpu_temp_c_start=41,
        gpu_temp_c_end=47,
        sm_clock_mhz_start=1980,
        sm_clock_mhz_end=1755,
        throttle_reasons=["sw_power_cap"],
        other_gpu_processes=0,
    )
    return dataclasses.replace(base, **kw)


def test_summarize_arithmetic():
    s = summarize(_reading(), idle_power_w=40.0, tokens=250)
    assert list(s) == list(ENERGY_FIELDS)
    assert s["energy_source"] == "nvml_total_energy_counter"
    assert s["energy_window_s"] == 5.0
    assert s["energy_j"] == 500.0
    assert s["energy_j_net"] == pytest.approx(300.0)  # 500 - 40 W * 5 s
    assert s["idle_power_w"] == 40.0
    assert s["avg_power_w"] == pytest.approx(100.0)
    assert s["sampler_energy_j"] == 480.0
    assert s["sampler_avg_power_w"] == pytest.approx(100.0)  # 480 J / 4.8 s
    assert s["sampler_n_samples"] == 481
    assert s["energy_counter_sampler_rel_diff"] == pytest.approx(0.04)
    assert s["energy_tokens"] == 250
    assert s["j_per_1k_tokens"] == pytest.approx(2000.0)
    assert s["j_per_1k_tokens_net"] == pytest.approx(1200.0)
    assert s["tokens_per_j"] == pytest.approx(0.5)
    assert s["tokens_per_j"] == pytest.approx(1000.0 / s["j_per_1k_tokens"])
    assert (s["gpu_temp_c_start"], s["gpu_temp_c_end"]) == (41, 47)
    assert (s["sm_clock_mhz_start"], s["sm_clock_mhz_end"]) == (1980, 1755)
    assert s["throttle_reasons"] == ["sw_power_cap"]
    assert s["other_gpu_processes"] == 0


def test_summarize_missing_idle_and_tokens_give_none_not_zero():
    s = summarize(_reading(sampler_energy_j=None), idle_power_w=None, tokens=0)
    assert s["energy_j"] == 500.0
    assert s["avg_power_w"] == pytest.approx(100.0)
    for key in (
        "energy_j_net",
        "j_per_1k_tokens",
        "j_per_1k_tokens_net",
        "tokens_per_j",
        "sampler_avg_power_w",
        "energy_counter_sampler_rel_diff",
    ):
        assert s[key] is None, key


def test_summarize_unmeasured_reading_is_all_none():
    r = EnergyReading(source="unavailable: energy counter went backwards")
    assert summarize(r, idle_power_w=40.0, tokens=100) == unavailable(r.source)


def test_unavailable_record():
    rec = unavailable("unavailable: no CUDA device (device=cpu)")
    assert list(rec) == list(ENERGY_FIELDS)
    assert rec["energy_source"] == "unavailable: no CUDA device (device=cpu)"
    assert all(rec[k] is None for k in ENERGY_FIELDS if k != "energy_source")
    # A bare reason gets the prefix, so consumers can test startswith("unavailable").
    assert unavailable("NVML init failed: x")["energy_source"] == ("unavailable: NVML init failed: x")


def test_energy_fields_list():
    assert len(set(ENERGY_FIELDS)) == len(ENERGY_FIELDS) == 25
    assert set(ENERGY_FIELDS) <= set(metrics.by_name()), "every energy field is a catalogued column"
    # The design doc's schema subset must be present.
    for key in (
        "energy_source",
        "energy_window_s",
        "energy_j",
        "idle_power_w",
        "avg_power_w",
        "j_per_1k_tokens",
        "tokens_per_j",
    ):
        assert key in ENERGY_FIELDS
