"""Item 2 of issue 21: settings this machine cannot honour are refused once, before any job, naming the key
(deploybench.plan.machine; the real Snakemake run: tests/workflow/test_reliability.py)."""

from __future__ import annotations

import copy

import pytest

from deploybench.plan.config import ConfigError, all_cells, validate_config
from deploybench.plan.machine import Gpu, HostFacts, check_machine, gather_host_facts
from tests.fixtures.small_config import SMALL_CONFIG

H100 = Gpu(0, "GPU-835d147f-aaaa", "NVIDIA H100 80GB HBM3", 80 * 10**9)
PARAMS = {"m-qwen3": 328_384, "m-llama": 303_680}
CPU_HOST = HostFacts(gpus=(), host_memory_bytes=16 * 10**9)


def _config(device="auto"):
    config = copy.deepcopy(SMALL_CONFIG)
    config["measurement"]["device"] = device
    return validate_config(config)


def _refusal(config, facts, params=PARAMS) -> str:
    with pytest.raises(ConfigError) as caught:
        check_machine(config, all_cells(config), facts, params)
    return str(caught.value)


def test_cuda_on_a_host_without_a_gpu_names_the_device_key():
    """Item 2: measurement.device cuda where no GPU is, refused naming the key."""
    message = _refusal(_config("cuda"), CPU_HOST)
    assert message == "config.measurement.device: cuda, but this host has no GPU for the jobs"


def test_cuda_visible_devices_that_hides_every_gpu_is_named():
    """Item 2: GPUs there, but CUDA_VISIBLE_DEVICES hides them."""
    facts = HostFacts(gpus=(H100,), visible_devices="")
    assert "CUDA_VISIBLE_DEVICES=''" in _refusal(_config("cuda"), facts)


@pytest.mark.parametrize("visible", ["3", "GPU-ffff", "0,3"])
def test_a_gpu_that_is_not_there_is_named(visible):
    """Item 2: CUDA_VISIBLE_DEVICES naming a GPU this host does not have."""
    message = _refusal(_config(), HostFacts(gpus=(H100,), visible_devices=visible))
    assert message.startswith("CUDA_VISIBLE_DEVICES: ") and "names no GPU of this host" in message
    assert "GPU-835d147f-aaaa" in message


def test_more_gpus_to_lease_than_the_host_has_is_named():
    """Item 2: DEPLOYBENCH_GPU_COUNT above the GPUs NVML sees."""
    message = _refusal(_config(), HostFacts(gpus=(H100,), gpu_count="4"))
    assert message == "DEPLOYBENCH_GPU_COUNT: 4 GPUs asked for, this host has 1"


def test_weights_that_cannot_fit_the_gpu_name_the_model():
    """Item 2: a model whose weights alone (parameters x dtype bytes) exceed the GPU, refused naming it."""
    message = _refusal(_config(), HostFacts(gpus=(H100,)), PARAMS | {"m-llama": 40 * 10**9})
    assert message.startswith("config.models.m-llama: the weights alone (80.0 GB: 40.00 B parameters in bfloat16)")
    assert "cannot fit GPU 0 (NVIDIA H100 80GB HBM3, 80.0 GB" in message


def test_weights_that_cannot_fit_host_memory_name_the_model():
    """Item 2: on CPU (auto on a host without a GPU) the host memory the jobs may use is the bound."""
    message = _refusal(_config(), CPU_HOST, PARAMS | {"m-qwen3": 10 * 10**9})
    assert message.startswith("config.models.m-qwen3: the weights alone (20.0 GB")
    assert "16.0 GB of host memory" in message and "measurement.device: auto" in message


@pytest.mark.parametrize(
    ("device", "facts"),
    [
        ("auto", CPU_HOST),  # auto on a CPU host: cpu
        ("cpu", HostFacts(gpus=(H100,), host_memory_bytes=16 * 10**9)),
        ("cuda", HostFacts(gpus=(H100,), visible_devices="0")),
        ("cuda", HostFacts(gpus=None)),  # NVML cannot be asked: the jobs' torch decides
        ("auto", HostFacts(gpus=(), visible_devices="0", host_memory_bytes=16 * 10**9)),  # no GPU at all
    ],
)
def test_what_the_host_can_run_passes(device, facts):
    """Item 2: no false refusals."""
    config = _config(device)
    check_machine(config, all_cells(config), facts, PARAMS)


def test_host_facts_leave_slurm_devices_to_slurm():
    """Item 2: under SLURM, CUDA_VISIBLE_DEVICES is SLURM's choice, not the user's."""
    facts = gather_host_facts({"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "3"})
    assert facts.visible_devices is None
    assert gather_host_facts({"CUDA_VISIBLE_DEVICES": "3"}).visible_devices == "3"
