"""CPU tests of deploybench.instruments.energy_meter: the counter window against a fake device, fallbacks."""

import time

import pynvml
import pytest

from deploybench.instruments.energy import EnergyReading, summarize, unavailable
from deploybench.instruments.energy_meter import COOLDOWN_STEADY_S, EnergyMeter, IdleReading, cool_down, measure_idle
from deploybench.instruments.nvml import open_device

# ------------------------------------------------------------------ meter


class FakeDevice:
    """Stands in for NvmlDevice: a 250 W load whose counter ticks every 100 ms.

    The power-cap bit shows once, at the first poll inside the window, then clears.
    """

    POWER_W = 250.0
    available = True

    def __init__(self, throttle_masks=(0x1, 0x1 | 0x4, 0x1)):
        self.t0 = time.monotonic()
        self.masks = list(throttle_masks)
        self.temps = [40, 52]
        self.violations = {"power": [10.0, 10.75], "thermal": [3.0, 3.0]}

    def energy_mj(self):
        elapsed = time.monotonic() - self.t0
        ticks = int(elapsed / 0.1) * 0.1  # counter granularity
        return 7_000_000 + int(self.POWER_W * ticks * 1000)

    def power_w(self):
        return self.POWER_W

    def temp_c(self):
        return self.temps.pop(0)

    def sm_clock_mhz(self):
        # 1980 MHz with a dip to 1500 from 0.3 to 0.5 s; 1830 once the 1 s window is over
        elapsed = time.monotonic() - self.t0
        return 1830 if elapsed >= 1.0 else 1500 if 0.3 <= elapsed < 0.5 else 1980

    def mem_clock_mhz(self):
        return 3201

    def violation_s(self, policy):
        return self.violations[policy].pop(0)

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
    # The window closes at the first poll after 1 s; a loaded CI host may oversleep, not by a second.
    assert 1.0 <= r.window_s < 2.0
    # The counter moves in 100 ms steps: within one tick (25 J) of 250 W * window.
    assert abs(r.energy_j - 250.0 * r.window_s) <= 25.0 + 1e-9
    assert r.sampler_energy_j == pytest.approx(250.0 * r.sampler_window_s)
    assert r.sampler_n_samples >= 30
    assert (r.gpu_temp_c_start, r.gpu_temp_c_end) == (40, 52)
    assert (r.sm_clock_mhz_start, r.sm_clock_mhz_end) == (1980, 1830)
    assert r.throttle_reasons == ["sw_power_cap"]  # seen mid-window, idle bit dropped
    assert r.sm_clock_mhz_min == 1500 and 1500 < r.sm_clock_mhz_mean < 1980  # the dip, sampled at 10 Hz
    assert r.mem_clock_mhz_mean == 3201
    assert r.power_violation_s == pytest.approx(0.75) and r.thermal_violation_s == 0.0
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


# ------------------------------------------------------------------ unavailable device


def test_meter_and_idle_on_unavailable_device():
    dev = open_device("cpu")
    with EnergyMeter(dev) as m:
        time.sleep(0.01)
    assert m.reading == EnergyReading(source=dev.energy_source)
    assert summarize(m.reading, None, 64) == unavailable(dev.reason)
    t = time.monotonic()
    assert measure_idle(dev, min_cooldown_s=30.0, max_cooldown_s=60.0, window_s=30.0) == IdleReading()
    assert time.monotonic() - t < 1.0  # no pointless cool-down


class CoolingGpu:
    """Temperature falls 2 °C per simulated second until it settles at `floor`."""

    def __init__(self, start=70.0, floor=50.0):
        self.now, self.start, self.floor = 0.0, start, floor

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def temp_c(self):
        return max(self.floor, self.start - 2.0 * self.now)


def test_cool_down_ends_when_the_temperature_stops_falling():
    gpu = CoolingGpu(start=70.0, floor=50.0)  # reaches 50 °C after 10 s
    rested, t0, t1 = cool_down(gpu, min_s=2.0, max_s=60.0, clock=gpu.clock, sleep=gpu.sleep)
    assert (t0, t1) == (70.0, 50.0)
    assert 10.0 + COOLDOWN_STEADY_S <= rested <= 10.0 + COOLDOWN_STEADY_S + 1.0


def test_cool_down_is_at_least_the_minimum_and_at_most_the_maximum():
    cold = CoolingGpu(start=40.0, floor=40.0)  # steady from the start
    assert cool_down(cold, min_s=5.0, max_s=60.0, clock=cold.clock, sleep=cold.sleep)[0] == pytest.approx(5.0)
    hot = CoolingGpu(start=500.0, floor=0.0)  # still falling when the maximum is reached
    rested, _, end = cool_down(hot, min_s=2.0, max_s=20.0, clock=hot.clock, sleep=hot.sleep)
    assert 20.0 <= rested < 20.6 and end > 0
