"""GPU energy measurement through NVML.

Energy over a window is the difference of NVML's total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ). A daemon thread samples power at ~100 Hz
and integrates it (trapezoid rule over real ``time.monotonic()`` timestamps) as a
cross-check. The counter only updates about every 100 ms, so windows must last a few
seconds: the caller repeats generate runs until ``min_window_s`` is reached.

API
---
``set_pci_bus_order()``
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` unless already set; call before CUDA is initialised.
``open_device(torch_device) -> NvmlDevice | str``
    The NVML device behind a torch device, matched by UUID (PCI bus id as fallback, never
    by index), or an ``"unavailable: ..."`` reason string (CPU device, no CUDA, no
    pynvml, NVML init failed, counter not supported).
``EnergyMeter(dev)``
    Context manager over the measurement window; ``m.elapsed_s`` while open, ``m.reading``
    (an ``EnergyReading``) after exit. Accepts a reason string too, and then reads nothing.
``measure_idle_power_w(dev, cooldown_s, window_s) -> float | None``
    Sleeps ``cooldown_s``, then counter watts over ``window_s`` (None when unavailable).
``summarize(reading, idle_power_w, tokens) -> dict``
    The ``ENERGY_FIELDS`` record; pure arithmetic.
``unavailable(reason) -> dict``
    The same record with every field None except ``energy_source``.

Energy is never reported as zero when it was not measured: every field is None then.

Typical use::

    set_pci_bus_order()  # before torch initialises CUDA
    dev = open_device(torch.device("cuda:0"))
    idle_w = measure_idle_power_w(dev, cooldown_s=30, window_s=5)
    with EnergyMeter(dev) as m:
        tokens = 0
        while m.elapsed_s < min_window_s:
            tokens += generate()
            torch.cuda.synchronize()  # GPU work must finish inside the window
    fields = summarize(m.reading, idle_w, tokens)

Power source of the sampler: ``NVML_FI_DEV_POWER_INSTANT`` where the driver has it,
since ``nvmlDeviceGetPowerUsage`` is a 1 s running average on Ampere and newer and lags at
the window edges; otherwise ``nvmlDeviceGetPowerUsage``. ``open_device(...,
prefer_instant_power=False)`` forces the latter; ``dev.power_source`` says which is used.

Caveat: ``other_gpu_processes`` excludes ``os.getpid()``; inside a container without the
host PID namespace NVML reports host PIDs, so this process may be counted as "other".
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

try:
    import pynvml  # nvidia-ml-py; importing does not load libnvidia-ml yet
except ImportError:  # pragma: no cover - depends on the environment
    pynvml = None

# What a failing NVML call raises (nothing to catch without pynvml: no NvmlDevice then).
_NVML_ERRORS = (pynvml.NVMLError,) if pynvml is not None else ()

SOURCE_COUNTER = "nvml_total_energy_counter"

ENERGY_FIELDS = (
    "energy_source",
    "energy_window_s",
    "energy_j",
    "energy_j_net",
    "idle_power_w",
    "avg_power_w",
    "sampler_energy_j",
    "sampler_avg_power_w",
    "sampler_n_samples",
    "energy_counter_sampler_rel_diff",
    "energy_tokens",
    "j_per_1k_tokens",
    "j_per_1k_tokens_net",
    "tokens_per_j",
    "gpu_temp_c_start",
    "gpu_temp_c_end",
    "sm_clock_mhz_start",
    "sm_clock_mhz_end",
    "throttle_reasons",
    "other_gpu_processes",
)


def energy_fields() -> list[str]:
    """Keys of the ``summarize`` / ``unavailable`` record, in order."""
    return list(ENERGY_FIELDS)


# Clock-event ("throttle") bits that mean a slowdown; stable NVML API values. Idle,
# application/display clock settings and sync boost are left out on purpose.
THROTTLE_REASON_BITS = {
    0x04: "sw_power_cap",
    0x08: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}


# ---------------------------------------------------------------- pure helpers


def integrate_trapezoid(times_s: Sequence[float], watts: Sequence[float]) -> float | None:
    """Joules from power samples at (possibly uneven) timestamps; None below two samples."""
    if len(times_s) != len(watts):
        raise ValueError(f"{len(times_s)} timestamps but {len(watts)} power samples")
    if len(times_s) < 2:
        return None
    total = 0.0
    for i in range(1, len(times_s)):
        dt = times_s[i] - times_s[i - 1]
        if dt < 0:
            raise ValueError("timestamps must not decrease")
        total += dt * (watts[i] + watts[i - 1]) / 2.0
    return total


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the slowdown reasons set in an NVML clocks-event bit mask."""
    return [name for bit, name in THROTTLE_REASON_BITS.items() if mask & bit]


def normalize_uuid(uuid: object) -> str:
    """Compare torch's 'xxxxxxxx-xxxx-...' with NVML's 'GPU-XXXXXXXX-...': bare lower hex."""
    s = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    s = s.strip().lower()
    for prefix in ("gpu-", "mig-"):
        s = s.removeprefix(prefix)
    return s.replace("-", "")


def pci_key(domain: int, bus: int, device: int) -> str:
    """'dddd:bb:dd' (hex, function dropped): one GPU, whoever reports it."""
    return f"{domain:04x}:{bus:02x}:{device:02x}"


def parse_pci_bus_id(bus_id: object) -> str:
    """NVML busId ('00000000:19:00.0', or legacy '0000:19:00.0') -> ``pci_key``."""
    s = bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)
    domain, bus, dev_fn = s.strip().split(":")
    return pci_key(int(domain, 16), int(bus, 16), int(dev_fn.split(".")[0], 16))


def match_device(
    torch_uuid: str | None,
    torch_pci: str | None,
    nvml_devices: Sequence[tuple[str, str | None]],
) -> tuple[int, str] | None:
    """Index into ``nvml_devices`` ((uuid, pci_key) pairs) and how it matched, or None.

    UUID first; the PCI bus id only if no UUID matches (e.g. a MIG instance, whose UUID
    NVML's device list does not hold).
    """
    if torch_uuid:
        want = normalize_uuid(torch_uuid)
        for i, (uuid, _) in enumerate(nvml_devices):
            if normalize_uuid(uuid) == want:
                return i, "uuid"
    if torch_pci:
        for i, (_, pci) in enumerate(nvml_devices):
            if pci == torch_pci:
                return i, "pci_bus_id"
    return None


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def unavailable(reason: str) -> dict:
    """Record with every field None except ``energy_source`` (never zeros)."""
    if not reason.startswith("unavailable"):
        reason = f"unavailable: {reason}"
    record = dict.fromkeys(ENERGY_FIELDS)
    record["energy_source"] = reason
    return record


@dataclass
class EnergyReading:
    """What one ``EnergyMeter`` window measured; None where nothing was measured."""

    source: str
    window_s: float | None = None
    energy_j: float | None = None
    sampler_energy_j: float | None = None
    sampler_window_s: float | None = None
    sampler_n_samples: int | None = None
    sampler_error: str | None = None
    gpu_temp_c_start: int | None = None
    gpu_temp_c_end: int | None = None
    sm_clock_mhz_start: int | None = None
    sm_clock_mhz_end: int | None = None
    throttle_reasons: list[str] | None = None
    other_gpu_processes: int | None = None


def summarize(reading: EnergyReading, idle_power_w: float | None, tokens: int | None) -> dict:
    """The ``ENERGY_FIELDS`` record for a window in which ``tokens`` tokens were generated.

    Net energy subtracts ``idle_power_w * window``; it can come out negative when the idle
    estimate exceeds the window's average power, and is left so rather than hidden.
    """
    e, window = reading.energy_j, reading.window_s
    if e is None or window is None:
        return unavailable(reading.source)
    e_net = None if idle_power_w is None else e - idle_power_w * window
    j_per_1k = _div(e * 1000.0, tokens)
    sampler_e = reading.sampler_energy_j
    rel_diff = None if sampler_e is None else _div(abs(e - sampler_e), e)
    return {
        "energy_source": reading.source,
        "energy_window_s": window,
        "energy_j": e,
        "energy_j_net": e_net,
        "idle_power_w": idle_power_w,
        "avg_power_w": _div(e, window),
        "sampler_energy_j": sampler_e,
        "sampler_avg_power_w": _div(sampler_e, reading.sampler_window_s),
        "sampler_n_samples": reading.sampler_n_samples,
        "energy_counter_sampler_rel_diff": rel_diff,
        "energy_tokens": tokens,
        "j_per_1k_tokens": j_per_1k,
        "j_per_1k_tokens_net": _div(None if e_net is None else e_net * 1000.0, tokens),
        "tokens_per_j": _div(1000.0, j_per_1k),
        "gpu_temp_c_start": reading.gpu_temp_c_start,
        "gpu_temp_c_end": reading.gpu_temp_c_end,
        "sm_clock_mhz_start": reading.sm_clock_mhz_start,
        "sm_clock_mhz_end": reading.sm_clock_mhz_end,
        "throttle_reasons": reading.throttle_reasons,
        "other_gpu_processes": reading.other_gpu_processes,
    }


# ---------------------------------------------------------------- power sampler


class PowerSampler:
    """Calls ``read_power_w()`` every ``interval_s`` on a daemon thread.

    The thread sleeps in ``Event.wait`` between samples (cheap, and ``stop()`` wakes it
    at once). ``start()`` and ``stop()`` also take a sample each, so the samples bracket
    the caller's window. ``poll`` (optional) runs every ``poll_every`` samples on the same
    thread. A failing read stops sampling and is kept in ``error``. Cost: ~100 wake-ups/s,
    each holding the GIL for a few microseconds of NVML call.
    """

    def __init__(
        self,
        read_power_w: Callable[[], float],
        interval_s: float = 0.01,
        poll: Callable[[], None] | None = None,
        poll_every: int = 10,
    ):
        self._read = read_power_w
        self.interval_s = interval_s
        self._poll = poll
        self._poll_every = poll_every
        self.times: list[float] = []
        self.watts: list[float] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> bool:
        if self.error is not None:
            return False
        try:
            before = time.monotonic()
            w = float(self._read())
            after = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - the sampler must not take the run down
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        # The read happened somewhere between the two clock readings.
        self.times.append((before + after) / 2.0)
        self.watts.append(w)
        return True

    def _run(self) -> None:
        n = 0
        next_t = time.monotonic()
        while True:
            # Fixed schedule, so slow reads do not stretch the period; no catch-up bursts.
            next_t = max(next_t + self.interval_s, time.monotonic())
            if self._stop.wait(next_t - time.monotonic()):
                return
            if not self._sample():
                return
            n += 1
            if self._poll is not None and n % self._poll_every == 0:
                with contextlib.suppress(Exception):  # must not stop power sampling
                    self._poll()

    def start(self) -> PowerSampler:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> PowerSampler:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._sample()
        return self

    @property
    def n_samples(self) -> int:
        return len(self.watts)

    @property
    def window_s(self) -> float | None:
        return self.times[-1] - self.times[0] if len(self.times) >= 2 else None

    @property
    def energy_j(self) -> float | None:
        if self.error is not None:
            return None
        return integrate_trapezoid(self.times, self.watts)


# ---------------------------------------------------------------- NVML device


def set_pci_bus_order() -> str:
    """Make CUDA number devices by PCI bus id (like nvidia-smi); returns the value in force."""
    value = os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        warnings.warn("set_pci_bus_order() called after CUDA init: it has no effect", stacklevel=2)
    return value


_FIELD_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


@dataclass
class NvmlDevice:
    """An NVML handle plus how it was found. Readers raise ``pynvml.NVMLError`` on failure."""

    handle: object
    torch_index: int
    nvml_index: int
    uuid: str  # NVML form, 'GPU-...'
    name: str
    matched_by: str  # "uuid" or "pci_bus_id"
    # "power_instant_field" (NVML_FI_DEV_POWER_INSTANT) or "power_usage"
    # (nvmlDeviceGetPowerUsage, a 1 s average on Ampere and newer, so it lags).
    power_source: str = "power_usage"

    def energy_mj(self) -> int:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def power_w(self) -> float:
        if self.power_source == "power_instant_field":
            return _power_instant_mw(self.handle) / 1000.0
        return pynvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def temp_c(self) -> int:
        return pynvml.nvmlDeviceGetTemperature(self.handle, pynvml.NVML_TEMPERATURE_GPU)

    def sm_clock_mhz(self) -> int:
        return pynvml.nvmlDeviceGetClockInfo(self.handle, pynvml.NVML_CLOCK_SM)

    def throttle_mask(self) -> int:
        fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if fn is not None:
            try:
                return fn(self.handle)
            except pynvml.NVMLError_FunctionNotFound:  # driver older than the binding
                pass
        return pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(self.handle)

    def other_processes(self) -> int:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        return sum(1 for p in procs if p.pid != os.getpid())


def _power_instant_mw(handle: object) -> float:
    fv = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
    if fv.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(fv.nvmlReturn)
    return float(getattr(fv.value, _FIELD_VALUE_MEMBERS[fv.valueType]))


def _nvml_init() -> str | None:
    """None once NVML is up, else the 'unavailable: ...' reason."""
    if pynvml is None:
        return "unavailable: nvidia-ml-py (pynvml) not installed"
    try:
        pynvml.nvmlInit()  # reference-counted by pynvml, so repeated calls are fine
    except pynvml.NVMLError as exc:
        return f"unavailable: NVML init failed: {exc}"
    return None


def open_device(torch_device: object, prefer_instant_power: bool = True) -> NvmlDevice | str:
    """The NVML device behind ``torch_device``, or an 'unavailable: ...' reason string."""
    import torch  # here, so the pure helpers above work without torch

    dev = torch.device(torch_device)
    if dev.type != "cuda":
        return f"unavailable: no CUDA device (device={dev})"
    if not torch.cuda.is_available():
        return f"unavailable: no CUDA device (device={dev}, torch.cuda.is_available() is False)"
    reason = _nvml_init()
    if reason is not None:
        return reason

    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    torch_uuid = str(props.uuid) if getattr(props, "uuid", None) is not None else None
    torch_pci = None
    if getattr(props, "pci_bus_id", None) is not None:
        torch_pci = pci_key(
            getattr(props, "pci_domain_id", 0) or 0,
            props.pci_bus_id,
            props.pci_device_id,
        )
    try:
        handles, ids = [], []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            handles.append(h)
            ids.append(
                (
                    pynvml.nvmlDeviceGetUUID(h),
                    parse_pci_bus_id(pynvml.nvmlDeviceGetPciInfo(h).busId),
                )
            )
    except pynvml.NVMLError as exc:
        return f"unavailable: NVML device enumeration failed: {exc}"
    found = match_device(torch_uuid, torch_pci, ids)
    if found is None:
        return f"unavailable: no NVML device matches {dev} (uuid={torch_uuid}, pci={torch_pci})"
    nvml_index, matched_by = found
    h = handles[nvml_index]
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    except pynvml.NVMLError as exc:
        return f"unavailable: NVML total energy counter not supported: {exc}"
    nvml_dev = NvmlDevice(
        handle=h,
        torch_index=index,
        nvml_index=nvml_index,
        uuid=ids[nvml_index][0],
        name=str(pynvml.nvmlDeviceGetName(h)),
        matched_by=matched_by,
    )
    if prefer_instant_power:
        # A driver without the field keeps nvmlDeviceGetPowerUsage.
        with contextlib.suppress(pynvml.NVMLError, IndexError):
            if _power_instant_mw(h) > 0:
                nvml_dev.power_source = "power_instant_field"
    return nvml_dev


# ---------------------------------------------------------------- meter


def _try(fn: Callable[[], object]) -> object | None:
    """Auxiliary readings (temperature, clocks, ...) may be unsupported: None, not a crash."""
    try:
        return fn()
    except _NVML_ERRORS:
        return None


class EnergyMeter:
    """``with EnergyMeter(dev) as m: ...`` then ``m.reading``; see the module docstring.

    ``dev`` is an ``open_device`` result (or anything with the ``NvmlDevice`` readers).
    """

    def __init__(self, dev: NvmlDevice | str, interval_s: float = 0.01, throttle_every: int = 10):
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
        mask = _try(self.dev.throttle_mask)
        if mask is not None:
            self._mask |= mask
            self._mask_seen = True

    def __enter__(self) -> Self:
        if isinstance(self.dev, str):
            self._t0 = time.monotonic()
            return self
        d = self.dev
        self._mask, self._mask_seen = 0, False
        self._temp0, self._clock0 = _try(d.temp_c), _try(d.sm_clock_mhz)
        self._procs0 = _try(d.other_processes)
        self._poll_throttle()
        # Sampler first, so its samples bracket the counter window.
        self._sampler = PowerSampler(d.power_w, self.interval_s, self._poll_throttle, self.throttle_every)
        self._sampler.start()
        self._e0_error = None
        try:
            self._e0 = d.energy_mj()
        except _NVML_ERRORS as exc:
            self._e0, self._e0_error = None, exc
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc_info) -> None:
        t_end = time.monotonic()
        if isinstance(self.dev, str):
            self.reading = EnergyReading(source=self.dev)
            return
        d = self.dev
        e1, error = None, self._e0_error
        if error is None:
            try:
                e1 = d.energy_mj()
                t_end = time.monotonic()
            except _NVML_ERRORS as exc:
                error = exc
        self._sampler.stop()
        self._poll_throttle()
        procs1 = _try(d.other_processes)
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
            gpu_temp_c_end=_try(d.temp_c),
            sm_clock_mhz_start=self._clock0,
            sm_clock_mhz_end=_try(d.sm_clock_mhz),
            throttle_reasons=(decode_throttle_reasons(self._mask) if self._mask_seen else None),
            other_gpu_processes=max(procs) if procs else None,
        )


def measure_idle_power_w(dev: NvmlDevice | str, cooldown_s: float, window_s: float) -> float | None:
    """Idle watts from the counter after ``cooldown_s`` of rest; None when unavailable."""
    if isinstance(dev, str):
        return None  # nothing to measure: skip the cool-down too
    time.sleep(cooldown_s)
    with EnergyMeter(dev) as m:
        time.sleep(window_s)
    return _div(m.reading.energy_j, m.reading.window_s)
