"""The serve job's GPU monitor against a stand-in server: a process group of its own that holds GPU memory and
runs matmuls, read through NVML alone (the job itself never touches CUDA). Checks the device the lease names, the
energy over a window (the counter interpolated at its ends) against the power samples' integral, the memory of
the group's processes and the utilisation. No timing asserted beyond the window being inside the sampling."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from deploybench.engines.serving.launcher import group_members
from deploybench.enums import LeaseSource
from deploybench.instruments.server_gpu import GpuMonitor, server_device
from deploybench.measure.gpu_lease import GpuLease

pytestmark = pytest.mark.gpu

HOLD_BYTES = 1 << 30
STAND_IN = f"""
import sys, time, torch
held = torch.empty({HOLD_BYTES}, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
print("busy", flush=True)
end = time.monotonic() + 12
while time.monotonic() < end:
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
"""


def test_the_monitor_reads_the_server_groups_memory_energy_and_utilisation():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    server = subprocess.Popen(
        [sys.executable, "-c", STAND_IN], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        with server_device(GpuLease(0, "0", LeaseSource.LEASE), "cuda") as dev:
            assert dev.available, dev
            with GpuMonitor(dev, lambda: group_members(server.pid)) as monitor:
                assert server.stdout.readline().strip() == "busy"
                time.sleep(1.0)
                start = time.monotonic()
                time.sleep(6.0)
                end = time.monotonic()
            joules = monitor.energy_j(start, end)
            sampled, seconds, n = monitor.power_integral(start, end)
            figures = monitor.figures(start, end)
    finally:
        server.kill()
        server.wait()
    print(f"{dev.name}: {joules:.1f} J counter, {sampled:.1f} J sampled ({n} samples over {seconds:.2f} s), {figures}")
    assert joules > 0 and abs(joules - sampled) / joules < 0.15
    assert figures["gpu_utilization_fraction_mean"] > 0.5 and figures["gpu_samples"] >= 60
    assert figures["gpu_memory_used_peak_bytes"] > HOLD_BYTES
    if figures["server_gpu_memory_bytes"] is None:  # NVML reports pids of another pid namespace here
        assert "pid namespace" in figures["server_gpu_null_reason"]
    else:
        assert figures["server_gpu_memory_peak_bytes"] > HOLD_BYTES
        assert monitor.other_processes() == 0
