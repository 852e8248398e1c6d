"""What machine and software a row was measured with (the host and code record: deploybench.instruments.host)."""

from __future__ import annotations

import platform
import socket
from datetime import UTC, datetime

import torch

from deploybench.enums import Device
from deploybench.instruments import host, nvml
from deploybench.instruments.device import is_cuda


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resolve_device(requested: Device) -> str:
    """auto -> cuda when a GPU is visible, else cpu. Asking for cuda without one is an error."""
    if requested == Device.AUTO:
        return Device.CUDA.value if torch.cuda.is_available() else Device.CPU.value
    if requested == Device.CUDA and not torch.cuda.is_available():
        raise RuntimeError("measurement.device is cuda but torch sees no CUDA device")
    return Device(requested).value


def capture(device: str) -> dict:
    import transformers

    on_gpu = is_cuda(device)
    env = {
        "device": Device.CUDA if on_gpu else Device.CPU,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
        "cuda_version": torch.version.cuda,
        "device_uuid": None,
        "driver_version": None,
    }
    if on_gpu:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env["device_name"] = props.name
        env["device_uuid"] = _gpu_uuid(props)
        env["driver_version"] = nvml.driver_version()
    else:
        env["device_name"] = host.cpu_model()
    return env | host.record()


def _gpu_uuid(props) -> str | None:
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"
