"""The figure records of a measured cell: typed, frozen, each field named as its column in the metric
catalogue, so a misspelt field fails where the record is built (and the catalogue test names it) instead
of as a missing key after the cell has run. deploybench.measure.cell_figures computes them from the
phases' records (deploybench.measure.runs); deploybench.measure.row lays them out as the row, once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from deploybench.enums import BoundBy, Status, StopReason
from deploybench.instruments.memory import PeakMemory


def columns(record) -> dict:
    """A record's columns in field order. A field that holds a record gives that record's columns in its
    place; tuples become lists (Parquet's list columns)."""
    out = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if dataclasses.is_dataclass(value):
            out.update(columns(value))
        else:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class MemoryFigures:
    """Peak memory over the measured decode runs, and the KV cache the last one held against the architecture's."""

    peak: PeakMemory
    kv_cache_bytes: int
    kv_cache_bytes_analytic: int


@dataclass(frozen=True)
class Latency:
    """Medians, their 95% intervals, the percentiles n supports, run counts and stop reasons. At batch B
    `decode_tps` is the batch's (B x steps per second), `decode_tps_per_seq` one sequence's."""

    gen_tokens_measured: int
    ttft_ms: float | None
    ttft_ms_samples: tuple[float, ...]
    ttft_runs: int
    ttft_stop_reason: StopReason
    decode_runs: int
    decode_stop_reason: StopReason
    e2e_ms_samples: tuple[float, ...]
    decode_tps: float | None
    decode_tps_per_seq: float | None
    decode_tps_samples: tuple[float, ...]
    decode_tps_cv: float | None
    tpot_ms: float | None
    itl_ms_samples: tuple[float, ...]
    e2e_tps: float | None
    e2e_ms_p50: float | None
    e2e_ms_p95: float | None
    e2e_ms_p99: float | None
    itl_ms_p50: float | None
    itl_ms_p95: float | None
    itl_ms_p99: float | None
    tail_null_reason: str | None
    ttft_ms_ci95_low: float | None
    ttft_ms_ci95_high: float | None
    ttft_ms_n_eff: float | None
    decode_tps_ci95_low: float | None
    decode_tps_ci95_high: float | None
    decode_tps_n_eff: float | None
    e2e_ms_p50_ci95_low: float | None
    e2e_ms_p50_ci95_high: float | None
    e2e_ms_n_eff: float | None
    ci_null_reason: str | None
    ci_method: str


@dataclass(frozen=True)
class Compilation:
    compiled: bool
    compile_s: float | None = None  # static-cache backends: the first full run's wall less a measured run's
    compile_cache_hits: int | None = None  # instruments.compile_cache; None for the eager backend
    compile_cache_misses: int | None = None


@dataclass(frozen=True)
class EnergyFigures:
    """The decode window's energy record (its leading fields are instruments.energy.ENERGY_FIELDS, in order),
    energy per phase and the runs each window held; all None but the source where nothing was metered."""

    energy_source: str
    energy_window_s: float | None = None
    energy_j: float | None = None
    energy_j_net: float | None = None
    idle_power_w: float | None = None
    avg_power_w: float | None = None
    sampler_energy_j: float | None = None
    sampler_avg_power_w: float | None = None
    sampler_n_samples: int | None = None
    energy_counter_sampler_rel_diff: float | None = None
    energy_tokens: int | None = None
    j_per_1k_tokens: float | None = None
    j_per_1k_tokens_net: float | None = None
    tokens_per_j: float | None = None
    gpu_temp_c_start: int | None = None
    gpu_temp_c_end: int | None = None
    sm_clock_mhz_start: int | None = None
    sm_clock_mhz_end: int | None = None
    sm_clock_mhz_mean: float | None = None
    sm_clock_mhz_min: float | None = None
    mem_clock_mhz_mean: float | None = None
    power_violation_s: float | None = None
    thermal_violation_s: float | None = None
    throttle_reasons: list[str] | None = None
    other_gpu_processes: int | None = None
    prefill_energy_window_s: float | None = None
    j_per_prompt_token: float | None = None
    j_per_decode_token: float | None = None
    energy_runs: int | None = None
    prefill_energy_runs: int | None = None


@dataclass(frozen=True)
class Roofline:
    """Bytes and FLOPs of a decode step of the batch, and decode speed against the copy-bandwidth,
    compute and GEMV-bandwidth ceilings."""

    params_read_per_token: float
    experts_touched_per_layer: float | None  # measured: routed-experts MoE only
    experts_touched_uniform_prediction: float | None
    decode_bytes_per_step: float
    decode_flops_per_step: float
    decode_bytes_per_token: float
    decode_flops_per_token: float
    roofline_tps: float | None
    roofline_fraction: float | None
    roofline_compute_tps: float | None
    roofline_tps_gemv: float | None
    roofline_fraction_gemv: float | None


@dataclass(frozen=True)
class Boundness:
    """A decode step's kernels, the GPU-busy fraction and what bounds the step, or why there is no verdict."""

    profile_tokens: int | None = None
    kernels_per_token: float | None = None
    gpu_kernel_ms_per_token: float | None = None
    gpu_busy_fraction: float | None = None
    bound_by: BoundBy | None = None
    boundness_null_reason: str | None = None
    step_kernels_json: str | None = None  # analytic.step_kernels.to_json


@dataclass(frozen=True)
class BatchFit:
    """The estimate the cell's batch was checked with before loading (capacity.BatchEstimate: its free memory,
    predicted peak and activation figure with its source), and the largest batch the cell's own measured memory
    says fits (empty for a cell that did not run)."""

    free_bytes_before_load: int | None
    predicted_peak_bytes: int | None
    predicted_activation_bytes_per_seq: float | None
    predicted_activation_source: str | None
    max_batch_fit: int | None = None


@dataclass(frozen=True)
class Verdict:
    """The outcome of a cell that ran (a failed one's row says so in measure.phases.failed_row)."""

    status: Status
    valid: bool
    invalid_reasons: tuple[str, ...]


@dataclass(frozen=True)
class CellFigures:
    """Every figure of a measured cell, in the row's order."""

    memory: MemoryFigures
    latency: Latency
    compilation: Compilation
    energy: EnergyFigures
    roofline: Roofline
    boundness: Boundness
    batch_fit: BatchFit
    verdict: Verdict
