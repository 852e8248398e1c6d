"""The GPU under a serving engine's server, read through NVML alone: no torch, no CUDA context in the serve job.

`server_device(lease, device)` opens the NVML device the server runs on (the serve job's GPU lease: the server
inherits its CUDA_VISIBLE_DEVICES), or says why there is none (the server runs on CPU). `GpuMonitor` samples on a
thread, every `interval_s`: the total-energy counter and the power with their time stamps (time.monotonic, the
serving client's clock), the GPU utilisation, the device's used memory and the memory NVML reports for the
server's processes (the pids of its process group). From those samples, over any window inside the sampling
(a load point's steady window): the energy, the counter interpolated linearly at the window's two ends (NVML
updates it about every 100 ms, so each end is off by at most one update at 20 Hz sampling); the power samples'
integral over the same window (the cross-check the energy meter makes); the mean utilisation; the memory.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from deploybench.enums import Device, LeaseSource
from deploybench.instruments import nvml
from deploybench.instruments.nvml import NvmlDevice, UnavailableDevice, try_read
from deploybench.instruments.power_sampler import integrate_trapezoid
from deploybench.stats import mean

SAMPLE_INTERVAL_S = 0.05
PIDS_EVERY_S = 1.0  # the server's process group is re-read this often (a /proc scan)


def server_device(lease, device: str) -> NvmlDevice | UnavailableDevice:
    """The NVML device the server was given by the job's lease (`deploybench.measure.gpu_lease.GpuLease`)."""
    visible = lease.visible_devices
    if lease.source is LeaseSource.NONE or not visible:
        return UnavailableDevice("no GPU: the server runs on CPU")
    if device == Device.CPU:
        return UnavailableDevice("measurement.device is cpu: the server runs on CPU")
    first = visible.split(",")[0].strip()
    stack = contextlib.ExitStack()
    try:
        pynvml = stack.enter_context(nvml.session())
        if first.isdigit():  # CUDA_DEVICE_ORDER=PCI_BUS_ID (the lease sets it): CUDA's index is NVML's
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(first))
        else:
            handle = pynvml.nvmlDeviceGetHandleByUUID(first)
        index = pynvml.nvmlDeviceGetIndex(handle)
        uuid, name = pynvml.nvmlDeviceGetUUID(handle), pynvml.nvmlDeviceGetName(handle)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except nvml.NvmlUnavailable as exc:
        stack.close()
        return UnavailableDevice(str(exc))
    except nvml.NVML_ERRORS as exc:
        stack.close()
        return UnavailableDevice(f"NVML cannot read GPU {first!r}: {exc}")
    dev = NvmlDevice(handle, 0, index, _text(uuid), _text(name), "lease", nvml_session=stack)
    with contextlib.suppress(*nvml.NVML_ERRORS, IndexError):
        if nvml._power_instant_mw(handle) > 0:
            dev.power_source = "power_instant_field"
    return dev


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class GpuSample:
    t: float  # time.monotonic()
    energy_mj: float | None
    power_w: float | None
    utilization: float | None  # fraction of the last sample period a kernel ran (NVML utilization.gpu)
    used_memory_bytes: int | None  # the whole device's
    server_memory_bytes: int | None  # the server's processes' (None: NVML names none of them)
    other_processes: int | None  # compute processes on the device that are not the server's


class GpuMonitor:
    """`with GpuMonitor(dev, server.members) as monitor: ...` then `monitor.figures(start, end)`."""

    def __init__(self, dev, server_pids: Callable[[], Iterable[int]], interval_s: float = SAMPLE_INTERVAL_S):
        self.dev, self.server_pids, self.interval_s = dev, server_pids, interval_s
        self.samples: list[GpuSample] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pids: set[int] = set()
        self._pids_at = -PIDS_EVERY_S

    def __enter__(self) -> GpuMonitor:
        if self.dev.available:
            self._sample()
            self._thread = threading.Thread(target=self._run, name="server-gpu-monitor", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            self.samples.append(self._read())
        except Exception as exc:  # noqa: BLE001 - a monitor must not take the load point down
            self.error = self.error or f"{type(exc).__name__}: {exc}"

    def _read(self) -> GpuSample:
        import pynvml

        handle = self.dev.handle
        now = time.monotonic()
        if now - self._pids_at >= PIDS_EVERY_S:
            self._pids, self._pids_at = set(self.server_pids()), now
        energy = try_read(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        power = try_read(self.dev.power_w)
        rates = try_read(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
        memory = try_read(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
        procs = try_read(lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
        ours = [p for p in procs if p.pid in self._pids]
        used = [p.usedGpuMemory for p in ours if isinstance(p.usedGpuMemory, int)]
        others = sum(1 for p in procs if p.pid not in self._pids and p.pid != os.getpid())
        return GpuSample(
            t=(now + time.monotonic()) / 2,
            energy_mj=None if energy is None else float(energy),
            power_w=power,
            utilization=None if rates is None else rates.gpu / 100.0,
            used_memory_bytes=None if memory is None else int(memory.used),
            server_memory_bytes=sum(used) if used else None,
            other_processes=others,
        )

    # ---- over a window

    def energy_j(self, start: float, end: float) -> float | None:
        """Counter energy over [start, end], interpolated at both ends; None outside the sampled span."""
        points = [(s.t, s.energy_mj) for s in self.samples if s.energy_mj is not None]
        if len(points) < 2 or start < points[0][0] or end > points[-1][0] or end <= start:
            return None
        t, e = np.array(points).T
        return float(np.interp(end, t, e) - np.interp(start, t, e)) / 1000.0

    def power_integral(self, start: float, end: float) -> tuple[float | None, float | None, int]:
        """(joules, seconds, samples) of the power samples inside [start, end], trapezoid rule."""
        inside = [(s.t, s.power_w) for s in self.samples if s.power_w is not None and start <= s.t <= end]
        if len(inside) < 2:
            return None, None, len(inside)
        times, watts = zip(*inside)
        return integrate_trapezoid(times, watts), times[-1] - times[0], len(inside)

    def figures(self, start: float | None, end: float | None) -> dict:
        """The GPU columns of a load point: the server's memory when the point began and its peak, the device's
        used memory at peak, the mean utilisation over the window, and why they are empty where they are."""
        samples = self.samples
        inside = [s for s in samples if start is not None and start <= s.t <= end]
        utilization = [s.utilization for s in inside if s.utilization is not None]
        server = [s.server_memory_bytes for s in samples if s.server_memory_bytes is not None]
        used = [s.used_memory_bytes for s in samples if s.used_memory_bytes is not None]
        reasons = []
        if not self.dev.available:
            reasons.append(self.dev.reason)
        else:
            if self.error:
                reasons.append(f"NVML read failed: {self.error}")
            if not server:
                reasons.append(
                    "NVML named none of the server's processes (a container's pid namespace hides them): "
                    "gpu_memory_used_peak_bytes is the whole device's"
                )
            if not inside:
                reasons.append("no GPU sample inside the steady window")
        first = next((s.server_memory_bytes for s in samples if s.server_memory_bytes is not None), None)
        return {
            "server_gpu_memory_bytes": first,
            "server_gpu_memory_peak_bytes": max(server) if server else None,
            "gpu_memory_used_peak_bytes": max(used) if used else None,
            "gpu_utilization_fraction_mean": mean(utilization),
            "gpu_samples": len(inside) if self.dev.available else None,
            "server_gpu_null_reason": "; ".join(reasons) or None,
        }

    def other_processes(self) -> int | None:
        counts = [s.other_processes for s in self.samples if s.other_processes is not None]
        return max(counts) if counts else None
