"""The energy record of a row: what a meter window measured, summarised into the energy columns.

``summarize(reading, idle_power_w, tokens)`` gives the ``ENERGY_FIELDS`` record (pure arithmetic);
``unavailable(reason)`` the same record with every field None except ``energy_source``. Energy is
never reported as zero when it was not measured. The reading comes from ``energy_meter``, the
device from ``nvml``, the cross-check from ``power_sampler``.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_COUNTER = "nvml_total_energy_counter"

# What the device did through the window: the figures a machine-to-machine difference is checked against.
WINDOW_STATE_FIELDS = (
    "sm_clock_mhz_mean",
    "sm_clock_mhz_min",
    "mem_clock_mhz_mean",
    "power_violation_s",
    "thermal_violation_s",
    "throttle_reasons",
)

# The meter's own readings, copied into the record as they are.
READING_FIELDS = (
    "gpu_temp_c_start",
    "gpu_temp_c_end",
    "sm_clock_mhz_start",
    "sm_clock_mhz_end",
    *WINDOW_STATE_FIELDS,
    "other_gpu_processes",
)

ENERGY_FIELDS = (
    "energy_source",
    "energy_window_s",
    "energy_j",
    "energy_j_net",
    "idle_power_w",
    "avg_power_w",
    "sampler_energy_j",
    "sampler_avg_power_w",
    "sampler_n_samples",
    "energy_counter_sampler_rel_diff",
    "energy_tokens",
    "j_per_1k_tokens",
    "j_per_1k_tokens_net",
    "tokens_per_j",
    *READING_FIELDS,
)


def energy_fields() -> list[str]:
    """Keys of the ``summarize`` / ``unavailable`` record, in order."""
    return list(ENERGY_FIELDS)


@dataclass
class EnergyReading:
    """What one ``EnergyMeter`` window measured; None where nothing was measured."""

    source: str
    window_s: float | None = None
    energy_j: float | None = None
    sampler_energy_j: float | None = None
    sampler_window_s: float | None = None
    sampler_n_samples: int | None = None
    sampler_error: str | None = None
    gpu_temp_c_start: int | None = None
    gpu_temp_c_end: int | None = None
    sm_clock_mhz_start: int | None = None
    sm_clock_mhz_end: int | None = None
    sm_clock_mhz_mean: float | None = None  # the clocks polled through the window (10 Hz)
    sm_clock_mhz_min: float | None = None
    mem_clock_mhz_mean: float | None = None
    power_violation_s: float | None = None  # NVML violation counters, end minus start of the window
    thermal_violation_s: float | None = None
    throttle_reasons: list[str] | None = None
    other_gpu_processes: int | None = None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing or b is zero."""
    return None if a is None or b is None or b == 0 else a / b


def unavailable(reason: str) -> dict:
    """Record with every field None except ``energy_source`` (never zeros)."""
    if not reason.startswith("unavailable"):
        reason = f"unavailable: {reason}"
    record = dict.fromkeys(ENERGY_FIELDS)
    record["energy_source"] = reason
    return record


def summarize(reading: EnergyReading, idle_power_w: float | None, tokens: int | None) -> dict:
    """The ``ENERGY_FIELDS`` record for a window in which ``tokens`` tokens were generated.

    Net energy subtracts ``idle_power_w * window``; it can come out negative when the idle
    estimate exceeds the window's average power, and is left so rather than hidden.
    """
    e, window = reading.energy_j, reading.window_s
    if e is None or window is None:
        return unavailable(reading.source)
    e_net = None if idle_power_w is None else e - idle_power_w * window
    j_per_1k = ratio(e * 1000.0, tokens)
    sampler_e = reading.sampler_energy_j
    rel_diff = None if sampler_e is None else ratio(abs(e - sampler_e), e)
    return {
        "energy_source": reading.source,
        "energy_window_s": window,
        "energy_j": e,
        "energy_j_net": e_net,
        "idle_power_w": idle_power_w,
        "avg_power_w": ratio(e, window),
        "sampler_energy_j": sampler_e,
        "sampler_avg_power_w": ratio(sampler_e, reading.sampler_window_s),
        "sampler_n_samples": reading.sampler_n_samples,
        "energy_counter_sampler_rel_diff": rel_diff,
        "energy_tokens": tokens,
        "j_per_1k_tokens": j_per_1k,
        "j_per_1k_tokens_net": ratio(None if e_net is None else e_net * 1000.0, tokens),
        "tokens_per_j": ratio(1000.0, j_per_1k),
        **{name: getattr(reading, name) for name in READING_FIELDS},
    }


def by_phase(
    prefill: EnergyReading,
    prefill_runs: int,
    decode: EnergyReading,
    decode_runs: int,
    context: int,
    gen: int,
    batch: int = 1,
) -> dict:
    """Energy per prompt token (the prefill window of one-token generates) and per decode token
    (a full generate's energy less a one-token generate's, over its gen - 1 decode steps), each over
    the tokens of all `batch` sequences; gross."""
    per_prefill = ratio(prefill.energy_j, prefill_runs)
    per_generate = ratio(decode.energy_j, decode_runs)
    decode_only = None if per_prefill is None or per_generate is None else per_generate - per_prefill
    return {
        "prefill_energy_window_s": prefill.window_s,
        "j_per_prompt_token": ratio(per_prefill, context * batch),
        "j_per_decode_token": ratio(decode_only, (gen - 1) * batch),
    }
