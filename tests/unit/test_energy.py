"""CPU tests of deploybench.energy: pure arithmetic, the real sampler thread, fallbacks."""

import dataclasses
import threading
import time

import pynvml
import pytest
import torch

from deploybench import energy
from deploybench.energy import (
    ENERGY_FIELDS,
    EnergyMeter,
    EnergyReading,
    PowerSampler,
    decode_throttle_reasons,
    integrate_trapezoid,
    match_device,
    measure_idle_power_w,
    normalize_uuid,
    open_device,
    parse_pci_bus_id,
    pci_key,
    summarize,
    unavailable,
)

# ------------------------------------------------------------------ trapezoid


def test_trapezoid_constant_power():
    assert integrate_trapezoid([0.0, 1.0, 2.0], [100.0, 100.0, 100.0]) == 200.0


def test_trapezoid_uneven_timestamps_and_ramp():
    # Linear ramp 0 -> 300 W over 3 s at uneven times: exactly 450 J under the trapezoid.
    t = [0.0, 0.1, 1.7, 3.0]
    w = [100.0 * x for x in t]
    assert integrate_trapezoid(t, w) == pytest.approx(450.0, rel=1e-12)


def test_trapezoid_step_uses_real_timestamps():
    # 100 W for 0.5 s, then 300 W for 0.1 s: (0.5*100) + (0.1*(100+300)/2) = 70 J.
    assert integrate_trapezoid([0.0, 0.5, 0.6], [100.0, 100.0, 300.0]) == pytest.approx(70.0)


def test_trapezoid_too_few_samples_is_none_not_zero():
    assert integrate_trapezoid([], []) is None
    assert integrate_trapezoid([1.0], [50.0]) is None


def test_trapezoid_rejects_bad_input():
    with pytest.raises(ValueError, match="timestamps"):
        integrate_trapezoid([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="decrease"):
        integrate_trapezoid([1.0, 0.5], [1.0, 1.0])


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
    assert energy.energy_fields() == list(ENERGY_FIELDS)
    assert len(set(ENERGY_FIELDS)) == len(ENERGY_FIELDS) == 20
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


# ------------------------------------------------------------------ device identity


def test_normalize_uuid_torch_vs_nvml():
    torch_form = "a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90"  # str(props.uuid)
    nvml_form = "GPU-A1B2C3D4-E5F6-0718-293A-4B5C6D7E8F90"  # nvmlDeviceGetUUID
    assert normalize_uuid(torch_form) == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert normalize_uuid(nvml_form) == normalize_uuid(torch_form)
    assert normalize_uuid(nvml_form.encode()) == normalize_uuid(torch_form)
    assert normalize_uuid("GPU-a1b2c3d4-e5f6-0718-293a-000000000000") != normalize_uuid(torch_form)


def test_pci_bus_id_normalisation():
    assert parse_pci_bus_id("00000000:19:00.0") == "0000:19:00"  # NVML busId
    assert parse_pci_bus_id(b"0000:9A:00.0") == "0000:9a:00"  # legacy form, bytes
    # torch: pci_domain_id=0, pci_bus_id=0x9a, pci_device_id=0
    assert pci_key(0, 0x9A, 0) == parse_pci_bus_id("00000000:9A:00.0")
    assert pci_key(1, 0x19, 3) == "0001:19:03"


NVML_DEVS = [
    ("GPU-11111111-1111-1111-1111-111111111111", "0000:19:00"),
    ("GPU-22222222-2222-2222-2222-222222222222", "0000:3b:00"),
]


def test_match_by_uuid_not_index():
    # torch's device 0 is NVML's device 1 (e.g. CUDA_VISIBLE_DEVICES=1).
    got = match_device("22222222-2222-2222-2222-222222222222", "0000:3b:00", NVML_DEVS)
    assert got == (1, "uuid")


def test_match_falls_back_to_pci_bus_id():
    # e.g. a MIG instance: its UUID is not in NVML's device list, its bus id is.
    got = match_device("99999999-9999-9999-9999-999999999999", "0000:19:00", NVML_DEVS)
    assert got == (0, "pci_bus_id")
    assert match_device(None, "0000:3b:00", NVML_DEVS) == (1, "pci_bus_id")


def test_no_match_is_none():
    assert match_device("99999999-9999-9999-9999-999999999999", None, NVML_DEVS) is None
    assert match_device(None, "0000:ff:00", NVML_DEVS) is None


def test_set_pci_bus_order(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert energy.set_pci_bus_order() == "PCI_BUS_ID"
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # a user choice is kept
    assert energy.set_pci_bus_order() == "FASTEST_FIRST"


# ------------------------------------------------------------------ throttle reasons


def test_throttle_reasons_ignore_idle_and_clock_settings():
    idle_app_display = 0x1 | 0x2 | 0x100
    assert decode_throttle_reasons(idle_app_display) == []
    assert decode_throttle_reasons(0x1 | 0x4 | 0x40) == [
        "sw_power_cap",
        "hw_thermal_slowdown",
    ]


def test_throttle_bits_match_nvml_constants():
    assert energy.THROTTLE_REASON_BITS == {
        pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
        pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
        pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    }


# ------------------------------------------------------------------ sampler thread


def test_sampler_constant_power_real_thread():
    s = PowerSampler(lambda: 150.0, interval_s=0.01).start()
    assert s._thread.daemon
    time.sleep(0.5)
    s.stop()
    assert not s._thread.is_alive()
    assert s.error is None
    assert 0.5 <= s.window_s < 0.7
    assert s.energy_j == pytest.approx(150.0 * s.window_s, rel=1e-9)
    # ~100 Hz: 51 samples nominal; allow for a loaded CI box but not a busy loop.
    assert 15 <= s.n_samples <= 70
    assert all(b > a for a, b in zip(s.times, s.times[1:], strict=False))


def test_sampler_ramp_uses_real_timestamps():
    # Power is a linear function of the real clock and reads are irregular (some slow),
    # so only correct timestamps make the trapezoid exact.
    t0 = time.monotonic()
    calls = [0]

    def ramp_w():
        calls[0] += 1
        slow = 0.015 if calls[0] % 4 == 0 else 0.0
        time.sleep(slow)  # every 4th read takes 30 ms, the value taken mid-way
        t = time.monotonic()
        time.sleep(slow)
        return 100.0 + 400.0 * (t - t0)

    s = PowerSampler(ramp_w, interval_s=0.01).start()
    time.sleep(0.4)
    s.stop()
    a, b = s.times[0] - t0, s.times[-1] - t0
    exact = 100.0 * (b - a) + 200.0 * (b * b - a * a)
    # Integrating at nominal 10 ms steps would be off by ~20%; real timestamps are exact
    # up to sleep jitter (a ms of timestamp error is ~0.4 W).
    assert s.energy_j == pytest.approx(exact, rel=0.01)
    assert max(b2 - b1 for b1, b2 in zip(s.times, s.times[1:], strict=False)) > 0.025


def test_sampler_stops_promptly_even_with_long_interval():
    s = PowerSampler(lambda: 1.0, interval_s=5.0).start()
    t = time.monotonic()
    s.stop()
    assert time.monotonic() - t < 0.5
    assert not s._thread.is_alive()
    assert s.n_samples == 2  # start and stop samples only


def test_sampler_read_error_stops_sampling_and_reports():
    n = [0]

    def flaky():
        n[0] += 1
        if n[0] > 5:
            raise RuntimeError("power read failed")
        return 10.0

    s = PowerSampler(flaky, interval_s=0.005).start()
    time.sleep(0.2)
    assert not s._thread.is_alive()  # the thread ended itself
    s.stop()
    assert s.error == "RuntimeError: power read failed"
    assert s.n_samples == 5
    assert s.energy_j is None


def test_sampler_poll_runs_on_sampler_thread():
    threads = set()
    s = PowerSampler(
        lambda: 1.0,
        interval_s=0.005,
        poll=lambda: threads.add(threading.current_thread().name),
        poll_every=2,
    )
    s.start()
    time.sleep(0.1)
    s.stop()
    assert threads == {"power-sampler"}


# ------------------------------------------------------------------ meter


class FakeDevice:
    """Stands in for NvmlDevice: a 250 W load whose counter ticks every 100 ms.

    The power-cap bit shows once, at the first poll inside the window, then clears.
    """

    POWER_W = 250.0

    def __init__(self, throttle_masks=(0x1, 0x1 | 0x4, 0x1)):
        self.t0 = time.monotonic()
        self.masks = list(throttle_masks)
        self.temps = [40, 52]
        self.clocks = [1980, 1830]

    def energy_mj(self):
        elapsed = time.monotonic() - self.t0
        ticks = int(elapsed / 0.1) * 0.1  # counter granularity
        return 7_000_000 + int(self.POWER_W * ticks * 1000)

    def power_w(self):
        return self.POWER_W

    def temp_c(self):
        return self.temps.pop(0)

    def sm_clock_mhz(self):
        return self.clocks.pop(0)

    def throttle_mask(self):
        return self.masks.pop(0) if len(self.masks) > 1 else self.masks[0]

    def other_processes(self):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)


def test_meter_with_fake_device_real_time():
    dev = FakeDevice()
    with EnergyMeter(dev) as m:
        while m.elapsed_s < 1.0:
            time.sleep(0.05)
    r = m.reading
    assert r.source == "nvml_total_energy_counter"
    assert 1.0 <= r.window_s < 1.3
    # The counter moves in 100 ms steps: within one tick (25 J) of 250 W * window.
    assert abs(r.energy_j - 250.0 * r.window_s) <= 25.0 + 1e-9
    assert r.sampler_energy_j == pytest.approx(250.0 * r.sampler_window_s)
    assert r.sampler_n_samples >= 30
    assert (r.gpu_temp_c_start, r.gpu_temp_c_end) == (40, 52)
    assert (r.sm_clock_mhz_start, r.sm_clock_mhz_end) == (1980, 1830)
    assert r.throttle_reasons == ["sw_power_cap"]  # seen mid-window, idle bit dropped
    assert r.other_gpu_processes is None  # not permitted -> unknown, not 0
    s = summarize(r, idle_power_w=50.0, tokens=1000)
    assert s["avg_power_w"] == pytest.approx(250.0, abs=25.0 / r.window_s)
    assert s["energy_counter_sampler_rel_diff"] < 0.15


def test_meter_counter_going_backwards_is_unavailable():
    class Backwards(FakeDevice):
        def __init__(self):
            super().__init__()
            self.values = [5_000, 1_000]

        def energy_mj(self):
            return self.values.pop(0)

    with EnergyMeter(Backwards()) as m:
        pass
    assert m.reading.source == "unavailable: energy counter went backwards"
    assert m.reading.energy_j is None
    assert summarize(m.reading, 50.0, 10)["energy_j"] is None


# ------------------------------------------------------------------ unavailable path


def test_open_device_cpu_is_unavailable():
    assert open_device("cpu") == "unavailable: no CUDA device (device=cpu)"
    assert open_device(torch.device("cpu")) == "unavailable: no CUDA device (device=cpu)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_open_device_cuda_without_cuda_is_unavailable():
    reason = open_device("cuda:0")
    assert reason.startswith("unavailable: no CUDA device (device=cuda:0")


def test_nvml_init_failure_reason():
    reason = energy._nvml_init()
    if reason is None:
        pytest.skip("NVML initialises on this machine")
    assert reason.startswith("unavailable: NVML init failed: ")
    assert len(reason) > len("unavailable: NVML init failed: ")


def test_meter_and_idle_on_unavailable_device():
    reason = open_device("cpu")
    with EnergyMeter(reason) as m:
        time.sleep(0.01)
    assert m.reading == EnergyReading(source=reason)
    assert summarize(m.reading, None, 64) == unavailable(reason)
    t = time.monotonic()
    assert measure_idle_power_w(reason, cooldown_s=30.0, window_s=30.0) is None
    assert time.monotonic() - t < 1.0  # no pointless cool-down
