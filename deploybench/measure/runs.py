"""What the measurement phases hand on: records of runs, passed from deploybench.measure.phases (which runs
them) to deploybench.measure.cell_figures (which turns them into the row's columns)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from deploybench.analytic.boundness import StepProfile
from deploybench.engines import models
from deploybench.engines.prompts import PromptBatch
from deploybench.engines.timing import RunTiming
from deploybench.instruments import energy
from deploybench.instruments.coverage import Coverage
from deploybench.instruments.energy_meter import IdleReading
from deploybench.measure import uncertainty

# run(new_tokens, i, clock) -> (RunTiming, output): one timed generation of the cell's backend.
Runner = Callable[[int, int, bool], tuple[RunTiming, object]]
Clock = Callable[[], float]  # monotonic seconds: what the phases' time cap reads


@dataclass
class Ready:
    """What the load phase hands on: the model, its prompts and runner, and the figures of loading."""

    loaded: models.LoadedModel
    prompts: PromptBatch
    input_ids: torch.Tensor  # (batch, context)
    run: Runner
    idle: IdleReading
    figures: dict  # load_s, weights_bytes, prompt facts, implementations, generation settings


@dataclass
class PrefillRuns:
    """One-token generates (TTFT samples), why they stopped, and the energy window over them."""

    ttft_ms: list[float]
    reading: energy.EnergyReading
    stop_reason: uncertainty.StopReason


@dataclass
class DecodeRuns:
    """The measured full generates: timings, why they stopped, the energy window over them, memory and
    KV with the cache alive."""

    timings: list[RunTiming]
    stop_reason: uncertainty.StopReason
    metered: bool  # an NVML device was there to read
    energy_runs: int  # runs inside the energy window (the measured ones, plus any that extended it)
    reading: energy.EnergyReading
    memory_figures: dict
    kv_cache_bytes: int


@dataclass
class Afterwards:
    """What the passes outside every timed window found: the decode step's kernels, the experts touched."""

    step: StepProfile | None
    coverage: Coverage | None  # routed-experts MoE models only
