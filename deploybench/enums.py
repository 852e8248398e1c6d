"""Every closed set of names the project uses, declared once.

The config schema (generated from the typed config, which uses these), the Snakemake wildcard
constraints (common.smk), the metric catalogue's definitions and the report derive their lists from
these; tests/unit/test_config.py checks the committed schema is the generated one.
StrEnum members compare equal to their text, so rows and configs keep plain strings.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Backend(StrEnum):
    """How a cell generates: the serving path under test."""

    EAGER = "eager"  # generate() with a dynamic cache
    COMPILED = "compiled"  # generate() with a static cache; transformers compiles the decode step on GPU
    COMPILED_LOOP = "compiled_loop"  # our own loop of a compiled step, no host sync per token

    @property
    def static_cache(self) -> bool:
        return self in (Backend.COMPILED, Backend.COMPILED_LOOP)


class DType(StrEnum):
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class WeightsSource(StrEnum):
    RANDOM = "random"  # an architecture card built with random weights
    PRETRAINED = "pretrained"  # from_pretrained(hub id or local directory)


class ExpertsImplementation(StrEnum):
    """transformers' mixture-of-experts code paths (gpt-oss)."""

    GROUPED_MM = "grouped_mm"
    BATCHED_MM = "batched_mm"
    EAGER = "eager"
    # Every expert for every token, as transformers 4.55 ran gpt-oss (deploybench.experts registers it).
    ALL_EXPERTS = "all_experts"


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class StudyKind(StrEnum):
    """What a study's grid is for; the report renders each kind as its own table or figure."""

    MAIN_COMPARISON = "main_comparison"
    CONTEXT_SCALING = "context_scaling"
    DECODING_ABLATION = "decoding_ablation"
    PRECISION_SWEEP = "precision_sweep"
    BACKEND_COMPARISON = "backend_comparison"
    EXPERTS_COMPARISON = "experts_comparison"
    ATTENTION_COMPARISON = "attention_comparison"  # model entries that differ in attn_implementation


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"


class FailureKind(StrEnum):
    """Expected measurement failures: each becomes a failed row, never a crash."""

    OOM = "oom"
    CONTEXT_TOO_LONG = "context_too_long"
    UNSUPPORTED = "unsupported"


class PromptMode(StrEnum):
    CHAT_TEMPLATE = "chat_template"
    RAW_TEXT = "raw_text"
    RANDOM_IDS = "random_ids"


class CacheImplementation(StrEnum):
    DYNAMIC = "dynamic"
    STATIC = "static"


class ThrottleReason(StrEnum):
    """NVML clock-event reasons that mean a slowdown (idle and clock-setting bits left out)."""

    SW_POWER_CAP = "sw_power_cap"
    HW_SLOWDOWN = "hw_slowdown"
    SW_THERMAL_SLOWDOWN = "sw_thermal_slowdown"
    HW_THERMAL_SLOWDOWN = "hw_thermal_slowdown"
    HW_POWER_BRAKE_SLOWDOWN = "hw_power_brake_slowdown"

    @property
    def nvml_bit(self) -> int:
        # Stable NVML API values (nvmlClocksEventReason*).
        return _THROTTLE_BITS[self]

    @property
    def invalidates(self) -> bool:
        """Hardware and thermal slowdowns change clocks under the measurement: the row is not valid.

        sw_power_cap does not invalidate: a card running at its power limit is how it is deployed.
        """
        return self is not ThrottleReason.SW_POWER_CAP


_THROTTLE_BITS = {
    ThrottleReason.SW_POWER_CAP: 0x04,
    ThrottleReason.HW_SLOWDOWN: 0x08,
    ThrottleReason.SW_THERMAL_SLOWDOWN: 0x20,
    ThrottleReason.HW_THERMAL_SLOWDOWN: 0x40,
    ThrottleReason.HW_POWER_BRAKE_SLOWDOWN: 0x80,
}


class BoundBy(StrEnum):
    """What sets the pace of a decode step (deploybench.boundness states the thresholds)."""

    HOST = "host"
    MEMORY_BANDWIDTH = "memory_bandwidth"
    COMPUTE = "compute"
    MIXED = "mixed"


class Better(StrEnum):
    """Which direction of a figure is an improvement."""

    HIGHER = "higher"
    LOWER = "lower"


def values(enum: type[StrEnum]) -> list[str]:
    """The members' text, in declaration order."""
    return [member.value for member in enum]


def wildcard_regex(enum: type[StrEnum]) -> str:
    """An alternation matching exactly one member; longest first, so a prefix never wins."""
    return "|".join(re.escape(v) for v in sorted(values(enum), key=len, reverse=True))


def one_of(enum: type[StrEnum]) -> str:
    """'a | b | c' for descriptions."""
    return " | ".join(values(enum))
