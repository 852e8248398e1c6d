"""The energy meter: NVML's total-energy counter over a window, with the power sampler beside it.

Energy over a window is the difference of the counter (``nvmlDeviceGetTotalEnergyConsumption``,
mJ). The counter only updates about every 100 ms, so windows must last a few seconds: the caller
repeats generate runs until ``min_window_s`` is reached. Typical use::

    with nvml.open_device("cuda") as dev:  # before: nvml.set_pci_bus_order(), CUDA not yet up
        idle_w = measure_idle(dev, min_cooldown_s=2, max_cooldown_s=30, window_s=5).power_w
        with EnergyMeter(dev) as m:
            tokens = 0
            while m.elapsed_s < min_window_s:
                tokens += generate()
                torch.cuda.synchronize()  # GPU work must finish inside the window
    fields = energy.summarize(m.reading, idle_w, tokens)

An unavailable device is metered too: the window is timed and the reading holds only the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Self

from deploybench.instruments.energy import SOURCE_COUNTER, EnergyReading, ratio
from deploybench.instruments.nvml import NVML_ERRORS, NvmlDevice, UnavailableDevice, decode_throttle_reasons, try_read
from deploybench.instruments.power_sampler import PowerSampler
from deploybench.stats import mean

# A cool-down is over when the temperature has not fallen by a degree within this long.
COOLDOWN_STEADY_S = 3.0
COOLDOWN_POLL_S = 0.5


class EnergyMeter:
    """``with EnergyMeter(dev) as m: ...`` then ``m.reading``.

    ``dev`` is an ``nvml.open_device`` result (or anything with ``available`` and the readers).
    """

    def __init__(self, dev: NvmlDevice | UnavailableDevice, interval_s: float = 0.01, throttle_every: int = 10):
        self.dev = dev
        self.interval_s = interval_s
        # Poll clock-event reasons every Nth power sample: 10 Hz is plenty for them.
        self.throttle_every = throttle_every
        self.reading: EnergyReading | None = None
        self._t0: float | None = None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the window opened (for 'repeat until min_window_s')."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def _poll(self) -> None:
        """At 10 Hz on the sampler's thread: clock-event reasons (accumulated) and clocks (sampled)."""
        mask = try_read(self.dev.throttle_mask)
        if mask is not None:
            self._mask |= mask
            self._mask_seen = True
        for samples, read in ((self._sm_clocks, self.dev.sm_clock_mhz), (self._mem_clocks, self.dev.mem_clock_mhz)):
            value = try_read(read)
            if value is not None:
                samples.append(value)

    def _violations(self) -> dict[str, float | None]:
        return {policy: try_read(lambda p=policy: self.dev.violation_s(p)) for policy in ("power", "thermal")}

    def __enter__(self) -> Self:
        if not self.dev.available:
            self._t0 = time.monotonic()
            return self
        d = self.dev
        self._mask, self._mask_seen = 0, False
        self._sm_clocks, self._mem_clocks = [], []
        self._temp0, self._clock0 = try_read(d.temp_c), try_read(d.sm_clock_mhz)
        self._procs0 = try_read(d.other_processes)
        self._violations0 = self._violations()
        self._poll()
        # Sampler first, so its samples bracket the counter window.
        self._sampler = PowerSampler(d.power_w, self.interval_s, self._poll, self.throttle_every)
        self._sampler.start()
        self._e0_error = None
        try:
            self._e0 = d.energy_mj()
        except NVML_ERRORS as exc:
            self._e0, self._e0_error = None, exc
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc_info) -> None:
        t_end = time.monotonic()
        if not self.dev.available:
            self.reading = EnergyReading(source=self.dev.energy_source)
            return
        d = self.dev
        e1, error = None, self._e0_error
        if error is None:
            try:
                e1 = d.energy_mj()
                t_end = time.monotonic()
            except NVML_ERRORS as exc:
                error = exc
        self._sampler.stop()
        self._poll()
        violations1 = self._violations()
        procs1 = try_read(d.other_processes)
        procs = [p for p in (self._procs0, procs1) if p is not None]

        if error is not None:
            source, energy_j = f"unavailable: energy counter read failed: {error}", None
        elif e1 < self._e0:
            source, energy_j = "unavailable: energy counter went backwards", None
        else:
            source, energy_j = SOURCE_COUNTER, (e1 - self._e0) / 1000.0
        s = self._sampler
        self.reading = EnergyReading(
            source=source,
            window_s=t_end - self._t0 if energy_j is not None else None,
            energy_j=energy_j,
            sampler_energy_j=s.energy_j,
            sampler_window_s=s.window_s,
            sampler_n_samples=s.n_samples,
            sampler_error=s.error,
            gpu_temp_c_start=self._temp0,
            gpu_temp_c_end=try_read(d.temp_c),
            sm_clock_mhz_start=self._clock0,
            sm_clock_mhz_end=try_read(d.sm_clock_mhz),
            sm_clock_mhz_mean=mean(self._sm_clocks),
            sm_clock_mhz_min=min(self._sm_clocks, default=None),
            mem_clock_mhz_mean=mean(self._mem_clocks),
            power_violation_s=_delta(self._violations0["power"], violations1["power"]),
            thermal_violation_s=_delta(self._violations0["thermal"], violations1["thermal"]),
            throttle_reasons=(decode_throttle_reasons(self._mask) if self._mask_seen else None),
            other_gpu_processes=max(procs) if procs else None,
        )


def _delta(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


@dataclass(frozen=True)
class IdleReading:
    """Idle power after a cool-down, and how the cool-down went (all None on an unavailable device)."""

    power_w: float | None = None
    cooldown_s: float | None = None
    temp_c_start: float | None = None
    temp_c_end: float | None = None


def cool_down(dev, min_s: float, max_s: float, clock=time.monotonic, sleep=time.sleep) -> tuple[float, float, float]:
    """Rest at least `min_s`, then until the temperature stops falling (no 1 °C drop within
    COOLDOWN_STEADY_S), at most `max_s`. Returns (seconds rested, temperature at start, at end)."""
    start = clock()
    history = [(start, dev.temp_c())]
    sleep(min_s)
    while True:
        now, temp = clock(), dev.temp_c()
        history.append((now, temp))
        earlier = [t for when, t in history if when <= now - COOLDOWN_STEADY_S]
        steady = bool(earlier) and earlier[-1] - temp < 1.0
        if now - start >= max_s or (now - start >= min_s and steady):
            return now - start, history[0][1], temp
        sleep(COOLDOWN_POLL_S)


def measure_idle(dev: NvmlDevice | UnavailableDevice, min_cooldown_s: float, max_cooldown_s: float, window_s: float):
    """Idle watts from the counter over `window_s`, after a cool-down decided by temperature."""
    if not dev.available:
        return IdleReading()  # nothing to measure: skip the cool-down too
    cooldown_s, temp_start, temp_end = cool_down(dev, min_cooldown_s, max(min_cooldown_s, max_cooldown_s))
    with EnergyMeter(dev) as m:
        time.sleep(window_s)
    return IdleReading(ratio(m.reading.energy_j, m.reading.window_s), cooldown_s, temp_start, temp_end)
