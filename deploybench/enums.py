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
    # Serving engines: a server process of the engine's own environment, loaded by our client (a load point per cell).
    VLLM = "vllm"  # vLLM's OpenAI-compatible server, started by the job
    TRANSFORMERS_SERVE = "transformers_serve"  # `transformers serve`, started by the job
    OPENAI = "openai"  # an OpenAI-compatible endpoint someone else started (SGLang, TGI, llama.cpp, ...)

    @property
    def static_cache(self) -> bool:
        return self in (Backend.COMPILED, Backend.COMPILED_LOOP)

    @property
    def serving(self) -> bool:
        """A serving engine (measured under load by the serve rule), not a generate() path in the job's process."""
        return self in (Backend.VLLM, Backend.TRANSFORMERS_SERVE, Backend.OPENAI)

    @property
    def starts_server(self) -> bool:
        """The serve job starts (and always stops) this engine's server itself."""
        return self in (Backend.VLLM, Backend.TRANSFORMERS_SERVE)


class DType(StrEnum):
    """Weights and activations dtype."""

    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class WeightsSource(StrEnum):
    """random: an architecture card built with random weights; pretrained: from_pretrained(id)."""

    RANDOM = "random"
    PRETRAINED = "pretrained"


class AttentionImplementation(StrEnum):
    """transformers' attention implementations a model entry may ask for (its own, unset: what transformers
    chooses); flash_attention_* need the flash-attn package on the GPU node."""

    EAGER = "eager"
    SDPA = "sdpa"
    FLEX_ATTENTION = "flex_attention"
    FLASH_ATTENTION_2 = "flash_attention_2"
    FLASH_ATTENTION_3 = "flash_attention_3"


class ExpertsImplementation(StrEnum):
    """transformers' mixture-of-experts code paths (gpt-oss)."""

    GROUPED_MM = "grouped_mm"
    BATCHED_MM = "batched_mm"
    EAGER = "eager"
    # Every expert for every token, as transformers 4.55 ran gpt-oss (deploybench.engines.experts registers it).
    ALL_EXPERTS = "all_experts"


class ExpertsRead(StrEnum):
    """Which expert weights a decode step reads (the roofline's bytes per token depend on it); rows store the text."""

    ROUTED = "routed"
    ALL = "all"  # every expert for every token (all_experts)
    NONE = "n/a"  # a dense model


class Device(StrEnum):
    """auto: cuda when torch sees a GPU, else cpu."""

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
    BATCH_SCALING = "batch_scaling"  # the batch axis: throughput against per-sequence latency, expert coverage
    SERVING_LOAD = "serving_load"  # serving engines under load: each concurrency or request rate a cell


class LoadMode(StrEnum):
    """How a serving load point loads the server."""

    CONCURRENCY = "concurrency"  # closed loop: N requests in flight, the next sent as one ends
    REQUEST_RATE = "request_rate"  # open loop: gamma-distributed arrivals at a mean rate (Poisson at burstiness 1)


class Status(StrEnum):
    """A row's outcome."""

    OK = "ok"
    FAILED = "failed"


class FailureKind(StrEnum):
    """Expected measurement failures: each becomes a failed row, never a crash."""

    OOM = "oom"
    CONTEXT_TOO_LONG = "context_too_long"
    UNSUPPORTED = "unsupported"
    # Serving engines (deploybench.measure.serving): the row keeps the tail of the server's log.
    ENGINE_NOT_FOUND = "engine_not_found"  # the engine's interpreter is missing or lacks the engine
    SERVER_START = "server_start"  # it died while starting, did not answer /health in time, or its port was taken
    SERVER_DIED = "server_died"  # the server died during the load point
    REQUESTS_FAILED = "requests_failed"  # a request failed: HTTP error, an error inside a 200, fewer tokens than asked


class PromptMode(StrEnum):
    """How the prompt was built."""

    CHAT_TEMPLATE = "chat_template"
    RAW_TEXT = "raw_text"
    RANDOM_IDS = "random_ids"
    RANDOM_WORDS = "random_words"  # seeded random token ids sent as text, one word-level token per word


class CacheImplementation(StrEnum):
    """The KV cache generate() uses."""

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
    """What sets the pace of a decode step (deploybench.analytic.boundness states the thresholds)."""

    HOST = "host"
    MEMORY_BANDWIDTH = "memory_bandwidth"
    COMPUTE = "compute"
    MIXED = "mixed"


class Better(StrEnum):
    """Which direction of a figure is an improvement."""

    HIGHER = "higher"
    LOWER = "lower"


# ---------------------------------------------------------------- compiled_loop's options (a model entry's)


class Fusion(StrEnum):
    """Projections that read one input, fused into one weight after load (deploybench.engines.compiled_loop.fusion)."""

    QKV = "qkv"  # q_proj, k_proj and v_proj: one GEMV per layer instead of three
    GATE_UP = "gate_up"  # a dense MLP's gate_proj and up_proj


class DecodeAttentionKernel(StrEnum):
    """Attention of one decode step (one query per head) over the static cache (compiled_loop.attention)."""

    GQA_MATMUL = "gqa_matmul"  # two matmuls with each KV head's query group folded into the query length
    SDPA_GQA = "sdpa_gqa"  # torch's scaled_dot_product_attention with enable_gqa=True
    # SDPA as multi-head attention over the KV heads, each one's query heads folded into the query length:
    # CUDA's SDPA runs grouped-query attention only in its flash and math kernels, and flash takes no mask.
    SDPA_FOLDED = "sdpa_folded"
    FLEX_DECODING = "flex_decoding"  # FlexAttention; on a GPU its decoding kernel splits the KV length


class DecodeExperts(StrEnum):
    """Mixture-of-experts path of decode steps only; the prefill keeps the model's (compiled_loop.decode_experts)."""

    GROUPED_MM = "grouped_mm"  # transformers' grouped GEMM
    BATCHED_MM = "batched_mm"  # transformers' gather of the routed experts' weights, then bmm
    GATHERED_REDUCTION = "gathered_reduction"  # products and sums inductor fuses with the gather: no weight copy


# ---------------------------------------------------------------- measuring


class StopReason(StrEnum):
    """Why a phase stopped repeating runs."""

    CI_TARGET = "ci_target"  # the interval's half-width reached ci_target_rel of the median
    TIME_CAP = "time_cap"  # max_measure_s of measuring passed
    MAX_RUNS = "max_runs"


class LeaseSource(StrEnum):
    """Who chose the GPU a measure job runs on (deploybench.measure.gpu_lease)."""

    LEASE = "lease"  # our lock on a free device
    SLURM = "slurm"  # SLURM's allocation: reported, not locked
    USER = "user"  # CUDA_VISIBLE_DEVICES set by the user: reported, not locked
    NONE = "none"  # no device: a CPU run


# ---------------------------------------------------------------- the metric catalogue


class ValueType(StrEnum):
    """A result column's value type (its Parquet type)."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    FLOAT_LIST = "float_list"
    STR_LIST = "str_list"


class Stage(StrEnum):
    """Which step of the workflow writes the column."""

    CELL = "cell"  # the measure job (and the importer, for external rows): the result schema
    TPOT = "tpot"  # correct_tpot
    APE = "ape"  # ape: efficiency figures
    RATIO = "ratio"  # ape: ratios to the baseline model (generated from `baseline_ratio`)


def values(enum: type[StrEnum]) -> list[str]:
    """The members' text, in declaration order."""
    return [member.value for member in enum]


def wildcard_regex(enum: type[StrEnum]) -> str:
    """An alternation matching exactly one member; longest first, so a prefix never wins."""
    return "|".join(re.escape(v) for v in sorted(values(enum), key=len, reverse=True))


def one_of(enum: type[StrEnum]) -> str:
    """'a | b | c' for descriptions."""
    return " | ".join(values(enum))
