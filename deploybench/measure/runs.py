"""What the measurement phases hand on: a record per phase, passed from deploybench.measure.phases (which runs
them) to deploybench.measure.cell_figures (which turns them into the figure records of the row)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deploybench.analytic.boundness import StepProfile
from deploybench.analytic.capacity import BatchEstimate
from deploybench.engines.base import EngineFacts, GenerationSettings, LoadFigures
from deploybench.engines.timing import RunTiming
from deploybench.enums import StopReason
from deploybench.instruments import energy
from deploybench.instruments.compile_cache import CompileCache
from deploybench.instruments.coverage import Coverage
from deploybench.instruments.energy_meter import IdleReading
from deploybench.instruments.memory import PeakMemory

Clock = Callable[[], float]  # monotonic seconds: what the phases' time cap reads


@dataclass(frozen=True)
class Ceilings:
    """What this GPU reaches in the cell's process (instruments.calibration), measured before the model
    loads; the ceilings are None on CPU or with measure_bandwidth off."""

    gemv_shape: str | None  # the model's dominant weight shape, "out x in"
    mem_bandwidth_bytes_per_s: float | None = None
    gemv_bandwidth_bytes_per_s: float | None = None
    gemm_flops_per_s: float | None = None
    launch_us: float | None = None

    @property
    def ridge_flops_per_byte(self) -> float | None:
        """GEMM rate over the bandwidth decode reaches (GEMV's, else a copy's): compute- vs memory-bound."""
        bandwidth = self.gemv_bandwidth_bytes_per_s or self.mem_bandwidth_bytes_per_s
        return self.gemm_flops_per_s / bandwidth if self.gemm_flops_per_s and bandwidth else None


@dataclass(frozen=True)
class Ready:
    """What the load phase hands on: the figures of loading, the settings the runs apply, what was built."""

    load: LoadFigures
    settings: GenerationSettings
    facts: EngineFacts


@dataclass(frozen=True)
class Idle:
    """The idle-power phase: the board's power limit, idle power with the weights resident after a cool-down."""

    power_limit_w: float | None
    reading: IdleReading


@dataclass(frozen=True)
class PrefillRuns:
    """One-token generates (TTFT samples), why they stopped, and the energy window over them."""

    ttft_ms: tuple[float, ...]
    reading: energy.EnergyReading
    stop_reason: StopReason


@dataclass(frozen=True)
class DecodeRuns:
    """The measured full generates: timings, why they stopped, the energy window over them, memory and
    KV with the cache alive."""

    timings: tuple[RunTiming, ...]
    stop_reason: StopReason
    metered: bool  # an NVML device was there to read
    energy_runs: int  # runs inside the energy window (the measured ones, plus any that extended it)
    reading: energy.EnergyReading
    memory: PeakMemory
    kv_cache_bytes: int


@dataclass(frozen=True)
class Afterwards:
    """What the passes outside every timed window found: the decode step's kernels, the experts touched."""

    step: StepProfile | None
    coverage: Coverage | None  # routed-experts MoE models only


@dataclass(frozen=True)
class Measured:
    """Every phase's record of a cell that loaded, for the figures and the row."""

    ceilings: Ceilings
    fits: BatchEstimate | None  # free memory and the sizes the batch was checked against (GPU)
    ready: Ready
    idle: Idle
    warmup_s: tuple[float, ...]  # the full-shape warm-up runs' wall seconds (the first compiles)
    prefill: PrefillRuns
    decode: DecodeRuns
    after: Afterwards
    compiled: bool  # the engine's answer after the runs
    phase_wall_s: dict[str, float]
    compile_cache: CompileCache | None = None  # graphs compiled and loaded from the cache while the engine lived
