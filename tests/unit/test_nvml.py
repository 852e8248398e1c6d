"""CPU tests of deploybench.instruments.nvml: device identity and matching, throttle bits, sessions, fallbacks."""

import pynvml
import pytest
import torch

from deploybench.enums import ThrottleReason
from deploybench.instruments import nvml
from deploybench.instruments.nvml import (
    decode_throttle_reasons,
    match_device,
    normalize_uuid,
    open_device,
    parse_pci_bus_id,
    pci_key,
)

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
    assert nvml.set_pci_bus_order() == "PCI_BUS_ID"
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # a user choice is kept
    assert nvml.set_pci_bus_order() == "FASTEST_FIRST"


# ------------------------------------------------------------------ throttle reasons


def test_throttle_reasons_ignore_idle_and_clock_settings():
    idle_app_display = 0x1 | 0x2 | 0x100
    assert decode_throttle_reasons(idle_app_display) == []
    assert decode_throttle_reasons(0x1 | 0x4 | 0x40) == [
        "sw_power_cap",
        "hw_thermal_slowdown",
    ]


def test_throttle_bits_match_nvml_constants():
    assert {reason.nvml_bit: reason.value for reason in ThrottleReason} == {
        pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
        pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
        pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    }


def test_every_slowdown_bit_decodes_to_its_reason():
    for reason in ThrottleReason:
        assert decode_throttle_reasons(reason.nvml_bit | 0x1) == [reason.value]


# ------------------------------------------------------------------ unavailable path


def test_open_device_cpu_is_unavailable():
    for device in ("cpu", torch.device("cpu")):
        dev = open_device(device)
        assert not dev.available
        assert dev.reason == "no CUDA device (device=cpu)"
        assert dev.energy_source == "unavailable: no CUDA device (device=cpu)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_open_device_cuda_without_cuda_is_unavailable():
    dev = open_device("cuda:0")
    assert not dev.available
    assert dev.energy_source.startswith("unavailable: no CUDA device (device=cuda:0")


def test_nvml_init_failure_reason():
    try:
        with nvml.session():
            pytest.skip("NVML initialises on this machine")
    except nvml.NvmlUnavailable as exc:
        reason = str(exc)
    assert reason.startswith("NVML init failed: ")
    assert len(reason) > len("NVML init failed: ")


class _FakeNvml:
    """pynvml as far as the session helper, the device count and the driver version use it."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices=2, driver=b"580.1"):
        self.devices, self.driver, self.open_sessions, self.fail_init = devices, driver, 0, False

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("driver not loaded")
        self.open_sessions += 1

    def nvmlShutdown(self):
        self.open_sessions -= 1

    def nvmlDeviceGetCount(self):
        return self.devices

    def nvmlSystemGetDriverVersion(self):
        return self.driver


def test_session_serves_device_count_and_driver_version_and_always_shuts_down(monkeypatch):
    fake = _FakeNvml()
    monkeypatch.setattr(nvml, "pynvml", fake)
    assert nvml.device_count() == 2
    assert nvml.driver_version() == "580.1"  # bytes from old bindings, text from new
    assert fake.open_sessions == 0
    with nvml.session() as outer, nvml.session():  # sessions nest (NVML counts inits)
        assert outer is fake and fake.open_sessions == 2
    assert fake.open_sessions == 0
    fake.fail_init = True
    assert nvml.device_count() == 0
    assert nvml.driver_version() is None
    monkeypatch.setattr(nvml, "pynvml", None)  # nvidia-ml-py not installed
    assert nvml.device_count() == 0
    with pytest.raises(nvml.NvmlUnavailable, match="not installed"), nvml.session():
        pass


def test_devices_are_context_managers_and_an_unavailable_one_closes_quietly():
    with open_device("cpu") as dev:
        assert not dev.available
    dev.close()  # closing twice is harmless
