"""The energy meter: NVML's total-energy counter over a window, with the power sampler beside it.

Energy over a window is the difference of the counter (``nvmlDeviceGetTotalEnergyConsumption``,
mJ). The counter only updates about every 100 ms, so windows must last a few seconds: the caller
repeats generate runs until ``min_window_s`` is reached. Typical use::

    with nvml.open_device("cuda") as dev:  # before: nvml.set_pci_bus_order(), CUDA not yet up
        idle_w = measure_idle_power_w(dev, cooldown_s=30, window_s=5)
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
from typing import Self

from .energy import SOURCE_COUNTER, EnergyReading, ratio
from .nvml import NVML_ERRORS, NvmlDevice, UnavailableDevice, decode_throttle_reasons, try_read
from .power_sampler import PowerSampler


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

    def _poll_throttle(self) -> None:
        mask = try_read(self.dev.throttle_mask)
        if mask is not None:
            self._mask |= mask
            self._mask_seen = True

    def __enter__(self) -> Self:
        if not self.dev.available:
            self._t0 = time.monotonic()
            return self
        d = self.dev
        self._mask, self._mask_seen = 0, False
        self._temp0, self._clock0 = try_read(d.temp_c), try_read(d.sm_clock_mhz)
        self._procs0 = try_read(d.other_processes)
        self._poll_throttle()
        # Sampler first, so its samples bracket the counter window.
        self._sampler = PowerSampler(d.power_w, self.interval_s, self._poll_throttle, self.throttle_every)
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
        self._poll_throttle()
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
            throttle_reasons=(decode_throttle_reasons(self._mask) if self._mask_seen else None),
            other_gpu_processes=max(procs) if procs else None,
        )


def measure_idle_power_w(dev: NvmlDevice | UnavailableDevice, cooldown_s: float, window_s: float) -> float | None:
    """Idle watts from the counter after ``cooldown_s`` of rest; None when unavailable."""
    if not dev.available:
        return None  # nothing to measure: skip the cool-down too
    time.sleep(cooldown_s)
    with EnergyMeter(dev) as m:
        time.sleep(window_s)
    return ratio(m.reading.energy_j, m.reading.window_s)
