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


def closed_set(name: str, *members: str, doc: str) -> type[StrEnum]:
    """A StrEnum of plain values, each member named as its value in upper case (DType.BFLOAT16)."""
    enum = StrEnum(name, {value.upper(): value for value in members}, module=__name__)
    enum.__doc__ = doc
    return enum


DType = closed_set("DType", "bfloat16", "float16", "float32", doc="Weights and activations dtype.")
WeightsSource = closed_set(
    "WeightsSource",
    "random",
    "pretrained",
    doc="random: an architecture card built with random weights; pretrained: from_pretrained(id).",
)


AttentionImplementation = closed_set(
    "AttentionImplementation",
    "eager",
    "sdpa",
    "flex_attention",
    "flash_attention_2",
    "flash_attention_3",
    doc="transformers' attention implementations a model entry may ask for (its own, unset: what transformers "
    "chooses); flash_attention_* need the flash-attn package on the GPU node.",
)


class ExpertsImplementation(StrEnum):
    """transformers' mixture-of-experts code paths (gpt-oss)."""

    GROUPED_MM = "grouped_mm"
    BATCHED_MM = "batched_mm"
    EAGER = "eager"
    # Every expert for every token, as transformers 4.55 ran gpt-oss (deploybench.engines.experts registers it).
    ALL_EXPERTS = "all_experts"


Device = closed_set("Device", "auto", "cpu", "cuda", doc="auto: cuda when torch sees a GPU, else cpu.")
StudyKind = closed_set(
    "StudyKind",
    "main_comparison",
    "context_scaling",
    "decoding_ablation",
    "precision_sweep",
    "backend_comparison",
    "experts_comparison",
    "attention_comparison",  # model entries that differ in attn_implementation
    "batch_scaling",  # the batch axis: throughput against per-sequence latency, expert coverage
    doc="What a study's grid is for; the report renders each kind as its own table or figure.",
)
Status = closed_set("Status", "ok", "failed", doc="A row's outcome.")
FailureKind = closed_set(
    "FailureKind",
    "oom",
    "context_too_long",
    "unsupported",
    doc="Expected measurement failures: each becomes a failed row, never a crash.",
)
PromptMode = closed_set("PromptMode", "chat_template", "raw_text", "random_ids", doc="How the prompt was built.")
CacheImplementation = closed_set("CacheImplementation", "dynamic", "static", doc="The KV cache generate() uses.")


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


BoundBy = closed_set(
    "BoundBy",
    "host",
    "memory_bandwidth",
    "compute",
    "mixed",
    doc="What sets the pace of a decode step (deploybench.analytic.boundness states the thresholds).",
)
Better = closed_set("Better", "higher", "lower", doc="Which direction of a figure is an improvement.")


def values(enum: type[StrEnum]) -> list[str]:
    """The members' text, in declaration order."""
    return [member.value for member in enum]


def wildcard_regex(enum: type[StrEnum]) -> str:
    """An alternation matching exactly one member; longest first, so a prefix never wins."""
    return "|".join(re.escape(v) for v in sorted(values(enum), key=len, reverse=True))


def one_of(enum: type[StrEnum]) -> str:
    """'a | b | c' for descriptions."""
    return " | ".join(values(enum))
