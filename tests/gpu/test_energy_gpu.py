"""deploybench's NVML device, energy meter and record on a real NVIDIA GPU (run on the H200 with ``pytest -m gpu -s``).

Measured figures are printed and attached with ``record_property`` so a passing run still
shows them.
"""

import time

import pynvml
import pytest
import torch

from deploybench.instruments import nvml
from deploybench.instruments.energy import summarize
from deploybench.instruments.energy_meter import EnergyMeter, measure_idle
from deploybench.instruments.nvml import NvmlDevice, normalize_uuid, open_device, parse_pci_bus_id, pci_key

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LOAD_S = 6.0  # the counter ticks every ~100 ms: a few seconds keeps its error ~2%


@pytest.fixture(scope="module")
def dev():
    nvml.set_pci_bus_order()  # no effect if CUDA is already up; harmless
    d = open_device(torch.device("cuda", 0))
    assert isinstance(d, NvmlDevice), d
    return d


@pytest.fixture(scope="module")
def idle_w(dev):
    torch.cuda.synchronize()
    return measure_idle(dev, min_cooldown_s=5.0, max_cooldown_s=30.0, window_s=5.0).power_w


def _matmul_until(stop) -> int:
    """bf16 8192^3 matmuls until ``stop()``; returns how many ran."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    n = 0
    while not stop():
        for _ in range(20):
            torch.mm(a, b)
        n += 20
        torch.cuda.synchronize()  # keep the queue short so the window edges are sharp
    return n


def test_handle_matches_torch_device(dev, record_property):
    props = torch.cuda.get_device_properties(0)
    assert normalize_uuid(dev.uuid) == normalize_uuid(str(props.uuid))
    assert dev.uuid == pynvml.nvmlDeviceGetUUID(dev.handle)
    assert dev.matched_by == "uuid"
    if getattr(props, "pci_bus_id", None) is not None:
        nvml_pci = parse_pci_bus_id(pynvml.nvmlDeviceGetPciInfo(dev.handle).busId)
        torch_pci = pci_key(
            getattr(props, "pci_domain_id", 0) or 0,
            props.pci_bus_id,
            props.pci_device_id,
        )
        assert nvml_pci == torch_pci
    info = f"torch uuid={props.uuid} nvml uuid={dev.uuid} name={dev.name}"
    print(info)
    record_property("device", info)


def test_idle_power_plausible(idle_w, record_property):
    print(f"idle power: {idle_w:.1f} W")
    record_property("idle_power_w", idle_w)
    assert idle_w is not None
    assert 10.0 < idle_w < 1000.0


@pytest.mark.parametrize("instant", [True, False], ids=["instant_field", "power_usage"])
def test_matmul_load(dev, idle_w, instant, record_property):
    d = open_device(torch.device("cuda", 0), prefer_instant_power=instant)
    if not instant:
        assert d.power_source == "power_usage"

    t_warm = time.monotonic()
    _matmul_until(lambda: time.monotonic() - t_warm > 2.0)  # reach steady power first
    with EnergyMeter(d) as m:
        n = _matmul_until(lambda: m.elapsed_s >= LOAD_S)
    r = m.reading
    s = summarize(r, idle_w, tokens=n)

    msg = (
        f"[{d.power_source}] window {r.window_s:.2f} s: counter {r.energy_j:.1f} J "
        f"({s['avg_power_w']:.1f} W), sampler {r.sampler_energy_j:.1f} J "
        f"({s['sampler_avg_power_w']:.1f} W, {r.sampler_n_samples} samples), "
        f"rel diff {s['energy_counter_sampler_rel_diff']:.3%}, idle {idle_w:.1f} W, "
        f"temp {r.gpu_temp_c_start}->{r.gpu_temp_c_end} C, "
        f"SM {r.sm_clock_mhz_start}->{r.sm_clock_mhz_end} MHz, "
        f"throttle {r.throttle_reasons}, other procs {r.other_gpu_processes}"
    )
    print(msg)
    record_property(f"load_{d.power_source}", msg)

    assert r.source == "nvml_total_energy_counter"
    assert r.window_s >= LOAD_S
    assert r.energy_j > 0
    assert s["avg_power_w"] > idle_w, msg
    assert s["energy_counter_sampler_rel_diff"] < 0.10, msg
    # ~100 Hz sampling really happened (at least half the nominal rate).
    assert r.sampler_n_samples >= 0.5 * LOAD_S / 0.01, msg
    assert r.sampler_error is None
    assert 0 < r.gpu_temp_c_start < 110 and 0 < r.gpu_temp_c_end < 110
    assert r.sm_clock_mhz_start > 0 and r.sm_clock_mhz_end > 0
    assert isinstance(r.throttle_reasons, list)
    assert isinstance(r.other_gpu_processes, int) and r.other_gpu_processes >= 0
    assert s["j_per_1k_tokens"] == pytest.approx(1000.0 * r.energy_j / n)
