"""NVML access: one session helper, the device behind a torch device, and its readers.

Every NVML user goes through `session()`: the GPU lease (device count, before CUDA starts),
the environment record (driver version) and the energy meter (an open device holds its session
until closed). NVML reference-counts init and shutdown, so sessions nest.

``open_device(torch_device)`` finds the NVML device behind a torch device by UUID (the PCI bus
id as fallback, never by index) and returns an ``NvmlDevice``, or an ``UnavailableDevice`` with
the reason (CPU device, no CUDA, no pynvml, NVML init failed, counter not supported). Both are
context managers; ``.available`` tells them apart.

Power source: ``NVML_FI_DEV_POWER_INSTANT`` where the driver has it, since
``nvmlDeviceGetPowerUsage`` is a 1 s running average on Ampere and newer and lags at the window
edges; otherwise ``nvmlDeviceGetPowerUsage``. ``open_device(..., prefer_instant_power=False)``
forces the latter; ``dev.power_source`` says which is used.

Caveat: ``other_processes`` excludes ``os.getpid()``; inside a container without the host PID
namespace NVML reports host PIDs, so this process may be counted as "other".
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Self

from deploybench.enums import ThrottleReason
from deploybench.instruments.device import is_cuda

try:
    import pynvml  # nvidia-ml-py; importing does not load libnvidia-ml yet
except ImportError:  # pragma: no cover - depends on the environment
    pynvml = None

# What a failing NVML call raises (nothing to catch without pynvml: no NvmlDevice then).
NVML_ERRORS = (pynvml.NVMLError,) if pynvml is not None else ()

_FIELD_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used here; the message says why."""


@contextlib.contextmanager
def session() -> Iterator[ModuleType]:
    """pynvml, initialised for the body of the `with`; NvmlUnavailable when it cannot be."""
    if pynvml is None:
        raise NvmlUnavailable("nvidia-ml-py (pynvml) not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML init failed: {exc}") from None
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def device_count() -> int:
    """GPUs NVML sees; 0 without a driver or pynvml. Never touches CUDA."""
    try:
        with session() as nvml:
            return int(nvml.nvmlDeviceGetCount())
    except NvmlUnavailable:
        return 0


def gpus() -> list[dict] | None:
    """Every GPU NVML sees, as {index, uuid, name, memory_bytes} (total memory); [] where NVML cannot start
    (no driver: no GPU), None where it cannot be asked (no pynvml, or a failing query). Never touches CUDA."""
    if pynvml is None:
        return None
    try:
        with session() as nvml:
            found = []
            for index in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid, name = nvml.nvmlDeviceGetUUID(handle), nvml.nvmlDeviceGetName(handle)
                found.append(
                    {
                        "index": index,
                        "uuid": uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                        "name": name.decode() if isinstance(name, bytes) else str(name),
                        "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    }
                )
            return found
    except NvmlUnavailable:
        return []
    except NVML_ERRORS:
        return None


def driver_version() -> str | None:
    """The NVIDIA driver version, or None where NVML cannot tell (the row says null, not a crash)."""
    try:
        with session() as nvml:
            version = nvml.nvmlSystemGetDriverVersion()
    except (NvmlUnavailable, *NVML_ERRORS):
        return None
    return version.decode() if isinstance(version, bytes) else version


def set_pci_bus_order() -> str:
    """Make CUDA number devices by PCI bus id (like nvidia-smi); returns the value in force."""
    value = os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        warnings.warn("set_pci_bus_order() called after CUDA init: it has no effect", stacklevel=2)
    return value


# ---------------------------------------------------------------- device identity


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


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the slowdown reasons set in an NVML clocks-event bit mask."""
    return [reason.value for reason in ThrottleReason if mask & reason.nvml_bit]


# ---------------------------------------------------------------- devices


class _Closing:
    """Context-manager protocol over ``close()``."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class UnavailableDevice(_Closing):
    """No NVML device to read: energy is null with this reason, never zero."""

    reason: str
    available = False

    @property
    def energy_source(self) -> str:
        return f"unavailable: {self.reason}"


@dataclass
class NvmlDevice(_Closing):
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
    # The NVML session the handle lives in; closing the device ends it.
    nvml_session: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False, compare=False)
    available = True

    def close(self) -> None:
        self.nvml_session.close()

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

    def mem_clock_mhz(self) -> int:
        return pynvml.nvmlDeviceGetClockInfo(self.handle, pynvml.NVML_CLOCK_MEM)

    def power_limit_w(self) -> float:
        return pynvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1000.0

    def violation_s(self, policy: str) -> float:
        """Seconds the GPU was held below its clocks by `policy` ("power" or "thermal"), cumulative."""
        code = {"power": pynvml.NVML_PERF_POLICY_POWER, "thermal": pynvml.NVML_PERF_POLICY_THERMAL}[policy]
        return pynvml.nvmlDeviceGetViolationStatus(self.handle, code).violationTime / 1e9

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


def try_read(fn: Callable[[], object]) -> object | None:
    """Auxiliary readings (temperature, clocks, ...) may be unsupported: None, not a crash."""
    try:
        return fn()
    except NVML_ERRORS:
        return None


def open_device(torch_device: object, prefer_instant_power: bool = True) -> NvmlDevice | UnavailableDevice:
    """The NVML device behind ``torch_device``, or an ``UnavailableDevice`` saying why there is none."""
    import torch  # here, so the pure helpers above work without torch

    dev = torch.device(torch_device)
    if not is_cuda(dev):
        return UnavailableDevice(f"no CUDA device (device={dev})")
    if not torch.cuda.is_available():
        return UnavailableDevice(f"no CUDA device (device={dev}, torch.cuda.is_available() is False)")
    nvml_session = contextlib.ExitStack()
    try:
        nvml_session.enter_context(session())
    except NvmlUnavailable as exc:
        return UnavailableDevice(str(exc))
    device = _find_device(dev, torch, prefer_instant_power, nvml_session)
    if not device.available:
        nvml_session.close()
    return device


def _find_device(dev, torch, prefer_instant_power: bool, nvml_session) -> NvmlDevice | UnavailableDevice:
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
        return UnavailableDevice(f"NVML device enumeration failed: {exc}")
    found = match_device(torch_uuid, torch_pci, ids)
    if found is None:
        return UnavailableDevice(f"no NVML device matches {dev} (uuid={torch_uuid}, pci={torch_pci})")
    nvml_index, matched_by = found
    h = handles[nvml_index]
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    except pynvml.NVMLError as exc:
        return UnavailableDevice(f"NVML total energy counter not supported: {exc}")
    nvml_dev = NvmlDevice(
        handle=h,
        torch_index=index,
        nvml_index=nvml_index,
        uuid=ids[nvml_index][0],
        name=str(pynvml.nvmlDeviceGetName(h)),
        matched_by=matched_by,
        nvml_session=nvml_session,
    )
    if prefer_instant_power:
        # A driver without the field keeps nvmlDeviceGetPowerUsage.
        with contextlib.suppress(pynvml.NVMLError, IndexError):
            if _power_instant_mw(h) > 0:
                nvml_dev.power_source = "power_instant_field"
    return nvml_dev
