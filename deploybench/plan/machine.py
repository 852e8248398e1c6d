"""What this machine can run, checked once before the first measure job: the device, the GPUs, the memory.

common.smk calls `check_machine` when Snakemake starts running jobs (its onstart handler: the DAG is built,
no job has started) for the cells it is about to measure, when those jobs run on this host (not under a
cluster executor, whose jobs run elsewhere). A setting this host cannot honour stops the run there, naming
the key: `measurement.device: cuda` without a GPU, CUDA_VISIBLE_DEVICES or DEPLOYBENCH_GPU_COUNT naming a GPU
that is not there, a model whose weights alone (total parameters x dtype bytes) cannot fit the device's memory.
No torch here: the facts come from NVML, /proc, the cgroup and the process limits (`gather_host_facts`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from deploybench.enums import Device, DType
from deploybench.plan.config import Cell, ConfigError, WorkflowConfig

# Kept free of the device's memory, as deploybench.analytic.capacity.DEFAULT_HEADROOM keeps it free of a batch.
WEIGHTS_HEADROOM = 0.10
DTYPE_BYTES = {DType.BFLOAT16: 2, DType.FLOAT16: 2, DType.FLOAT32: 4}
GPU_COUNT_ENV = "DEPLOYBENCH_GPU_COUNT"  # deploybench.measure.gpu_lease.COUNT_ENV


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class HostFacts:
    gpus: tuple[Gpu, ...] | None
    """every GPU NVML sees; None where NVML cannot be asked (no pynvml): the GPU checks are skipped"""
    visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as the user set it (None: unset, or SLURM chose the devices)"""
    gpu_count: str | None = None
    """DEPLOYBENCH_GPU_COUNT, if set"""
    host_memory_bytes: int | None = None
    """host memory a measure job may use: the smallest of MemAvailable, the cgroup's room, ulimit -v"""


def gather_host_facts(environ: Mapping[str, str] = os.environ) -> HostFacts:
    """This host's facts, without torch (NVML, /proc, the cgroup, the process limits)."""
    from deploybench.instruments import host, nvml

    found = nvml.gpus()
    gpus = None if found is None else tuple(Gpu(**gpu) for gpu in found)
    under_slurm = bool(environ.get("SLURM_JOB_ID"))
    return HostFacts(
        gpus=gpus,
        visible_devices=None if under_slurm else environ.get("CUDA_VISIBLE_DEVICES"),
        gpu_count=environ.get(GPU_COUNT_ENV) or None,
        host_memory_bytes=host.available_memory_bytes(address_space_used=False),
    )


def check_machine(
    config: WorkflowConfig, cells: Iterable[Cell], facts: HostFacts, total_params: Mapping[str, int | None]
) -> None:
    """ConfigError, one line per problem naming its key, when this host cannot run `cells` as configured.

    `total_params`: each model's parameter count (None: unknown, its memory is not checked)."""
    problems: list[str] = []
    visible = _visible_gpus(facts, problems)
    requested = Device(config.measurement.device)
    if requested is Device.CPU:
        device = Device.CPU
    elif visible is None:
        device = None  # cannot tell whether a GPU is there: the job's torch decides
    elif requested is Device.CUDA or visible:
        device = Device.CUDA
    else:
        device = Device.CPU
    if device is Device.CUDA and visible is not None and not visible:
        hidden = f" (CUDA_VISIBLE_DEVICES={facts.visible_devices!r} hides them)" if facts.gpus else ""
        problems.append(f"config.measurement.device: cuda, but this host has no GPU for the jobs{hidden}")
    cells = list(cells)
    for model, dtype in sorted({(cell.model, cell.dtype) for cell in cells}):
        params = total_params.get(model)
        if params is None or device is None:
            continue
        need = params * DTYPE_BYTES[DType(dtype)]
        weights = f"the weights alone ({need / 1e9:.1f} GB: {params / 1e9:.2f} B parameters in {dtype})"
        if device is Device.CUDA and visible:
            gpu = max(visible, key=lambda g: g.memory_bytes)
            if need > gpu.memory_bytes * (1 - WEIGHTS_HEADROOM):
                problems.append(
                    f"config.models.{model}: {weights} cannot fit GPU {gpu.index} ({gpu.name}, "
                    f"{gpu.memory_bytes / 1e9:.1f} GB, {WEIGHTS_HEADROOM:.0%} kept free); "
                    f"measurement.device: {requested}"
                )
        elif device is Device.CPU and facts.host_memory_bytes is not None:
            if need > facts.host_memory_bytes * (1 - WEIGHTS_HEADROOM):
                problems.append(
                    f"config.models.{model}: {weights} cannot fit the {facts.host_memory_bytes / 1e9:.1f} GB of host "
                    f"memory a job may use here (the least of MemAvailable, the cgroup's limit and ulimit -v; "
                    f"{WEIGHTS_HEADROOM:.0%} kept free); measurement.device: {requested}"
                )
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


def _visible_gpus(facts: HostFacts, problems: list[str]) -> list[Gpu] | None:
    """The GPUs the jobs may use (None: unknown), noting a device that is not there."""
    if facts.gpus is None:
        return None
    gpus = list(facts.gpus)
    if facts.gpu_count is not None:
        try:
            count = int(facts.gpu_count)
        except ValueError:
            problems.append(f"{GPU_COUNT_ENV}: {facts.gpu_count!r} is not a number of GPUs")
        else:
            if count > len(gpus):
                problems.append(f"{GPU_COUNT_ENV}: {count} GPUs asked for, this host has {len(gpus)}")
    if facts.visible_devices is None or not gpus:
        return gpus  # no GPU at all: whatever CUDA_VISIBLE_DEVICES says, the jobs see none
    chosen = []
    for entry in (e.strip() for e in facts.visible_devices.split(",")):
        if entry == "" or entry.startswith("-"):
            break  # CUDA stops at the first empty or negative entry: none after it are visible
        if entry.startswith("MIG-"):
            return None  # a MIG slice: NVML's GPU list cannot say how much memory it has
        if entry.isdigit():
            match = [g for g in gpus if g.index == int(entry)]
        else:
            match = [g for g in gpus if g.uuid.startswith(entry if entry.startswith("GPU-") else f"GPU-{entry}")]
        if len(match) != 1:
            there = ", ".join(f"{g.index} ({g.uuid})" for g in gpus) or "none"
            problems.append(
                f"CUDA_VISIBLE_DEVICES: {entry!r} names no GPU of this host (NVML sees: {there}); "
                "measurement.device: the jobs would not see it"
            )
            return None
        chosen.append(match[0])
    return chosen
