"""The cell spec: what one measurement is, as typed settings checked before any model is loaded.

A cell spec travels as canonical JSON (Snakemake params, `--spec-json`); `parse_cell` and
`parse_job` turn that text back into a `CellSpec` or raise SpecError naming the field. The model
entry and the decoding mode dump only the keys the user wrote, the measurement settings dump in
full: equal settings give equal text, and the text changes exactly when a measurement would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationError, field_serializer, model_validator

from deploybench.enums import (
    AttentionImplementation,
    Backend,
    CacheImplementation,
    Device,
    DType,
    ExpertsImplementation,
    WeightsSource,
)
from deploybench.plan import naming
from deploybench.plan.loop_options import CompiledLoopOptions
from deploybench.plan.serving_settings import EngineSpec, LoadPoint
from deploybench.plan.validation import Choice, Invalid, Settings, describe

ModelName = Annotated[str, StringConstraints(pattern=f"^{naming.MODEL_NAME}$")]
DecodingName = Annotated[str, StringConstraints(pattern=f"^{naming.DECODING_NAME}$")]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]

# The study's five decoding modes (its released script's settings); configs may define others.
STANDARD_DECODING = {
    "greedy": {"do_sample": False},
    "top_p": {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
    "top_k": {"do_sample": True, "temperature": 0.7, "top_k": 50},
    "high_temp": {"do_sample": True, "temperature": 1.0, "top_p": 0.95},
    "low_temp": {"do_sample": True, "temperature": 0.3, "top_p": 0.8},
}
# The measurement settings a serving load point reads (the others are of the generate() phases): a serving cell's
# spec holds only these, so editing n_runs or max_measure_s remeasures no server.
SERVING_MEASUREMENT = (
    "device",
    "seed",
    "min_energy_window_s",
    "idle_cooldown_s",
    "idle_cooldown_max_s",
    "idle_window_s",
)
# Files of a local pretrained directory that decide the architecture and the generation defaults.
PRETRAINED_CARD_FILES = ("config.json", "generation_config.json")


class SpecError(ValueError):
    """A cell spec is wrong; the message names the field and why."""


class MeasurementSettings(Settings):
    """Settings every cell uses. Changing one reruns every cell."""

    device: Choice[Device] = Device.AUTO
    """auto: cuda when torch sees a GPU, else cpu; or force cpu / cuda"""
    warmup_runs: PositiveInt = 1
    """full-shape generate runs discarded before measuring (at least one: the first run of a shape is never measured)"""
    n_runs: PositiveInt = 5
    """fewest measured runs per phase (TTFT runs, decode runs): each phase then repeats until its median's 95%
    interval is within ci_target_rel, max_measure_s or max_runs"""
    ci_target_rel: Annotated[float, Field(gt=0)] = 0.02
    """a phase stops once its median's 95% interval half-width is at most this fraction of the median
    (judged from 20 runs on: fewer cannot tell a narrow interval from a lucky spell)"""
    max_measure_s: Seconds = 60.0
    """a phase stops after this many seconds of measuring (once it has n_runs); 0: exactly n_runs"""
    max_runs: PositiveInt = 200
    """a phase stops at this many runs (the energy window may still extend it, as it always did)"""
    min_energy_window_s: Seconds = 5.0
    """each NVML energy window (prefill, decode) is extended with more runs until this long"""
    idle_cooldown_s: Seconds = 2.0
    """shortest wait before reading idle power (GPU only)"""
    idle_cooldown_max_s: Seconds = 30.0
    """longest wait: the cool-down ends earlier once the GPU temperature stops falling (GPU only)"""
    idle_window_s: Seconds = 2.0
    """idle power averaging window (GPU only)"""
    seed: NonNegativeInt = 1234
    """prompt and sampling seed; run i uses seed + i"""
    measure_bandwidth: bool = True
    """time a device-to-device copy per cell for the roofline (GPU only)"""

    @model_validator(mode="after")
    def _max_runs_reach_n_runs(self) -> MeasurementSettings:
        if self.max_runs < self.n_runs:
            raise Invalid("max_runs", f"must be at least n_runs ({self.n_runs}), got {self.max_runs}")
        if self.idle_cooldown_max_s < self.idle_cooldown_s:
            raise Invalid(
                "idle_cooldown_max_s",
                f"must be at least idle_cooldown_s ({self.idle_cooldown_s}), got {self.idle_cooldown_max_s}",
            )
        return self


class ModelMetadata(Settings):
    """For the report's governance table only: editing it reruns nothing."""

    display_name: str = None
    organization: str = None
    architecture: str = None
    license: str = None
    license_class: str = None
    usage_policy: str = None
    model_card: str = None
    safety_features: str = None
    release_date: str = None


class ModelEntry(Settings):
    """One model: an architecture card built with random weights, or a pretrained checkpoint."""

    source: Choice[WeightsSource]
    """random: build `architecture` with random weights; pretrained: from_pretrained(`id`)"""
    architecture: str = None
    """architecture card (HF config JSON), required for source: random"""
    id: str = None
    """hub id or local directory, required for source: pretrained"""
    revision: str = None
    trust_remote_code: bool = False
    dtype: Choice[DType] | None = None
    """pin the model to one dtype (overrides the studies' dtypes axis)"""
    active_params: PositiveInt | None = None
    """parameters active per token, where the counter cannot understand the model's experts"""
    experts_implementation: Choice[ExpertsImplementation] | None = None
    """the mixture-of-experts code path; unset: what transformers chooses"""
    attn_implementation: Choice[AttentionImplementation] = None
    """transformers attention implementation; unset: transformers' choice (sdpa: Qwen3, Llama; eager: gpt-oss)"""
    max_position_embeddings: PositiveInt = None
    """override the card's maximum positions"""
    compiled_loop: CompiledLoopOptions = None
    """how the compiled_loop backend builds this model's decode step (fusions, decode attention, decode experts);
    unset: no fusion, the grouped-query matmul, the model's experts path. Other backends ignore it"""
    metadata: ModelMetadata = None

    @model_validator(mode="after")
    def _weights_exist(self) -> ModelEntry:
        if self.source is WeightsSource.RANDOM:
            if not self.architecture:
                raise Invalid("architecture", "required for source: random")
            _check_card(self.architecture)
        else:
            if not self.id:
                raise Invalid("id", "required for source: pretrained (hub id or local directory)")
            directory = local_directory(self.id)
            if directory is not None and not directory.is_dir():
                raise Invalid("id", f"local model directory {self.id!r} does not exist")
            if directory is not None and not (directory / PRETRAINED_CARD_FILES[0]).is_file():
                raise Invalid("id", f"local model directory {self.id!r} has no {PRETRAINED_CARD_FILES[0]}")
            if directory is not None:
                _check_card(str(directory / PRETRAINED_CARD_FILES[0]), "id")
        all_experts = self.experts_implementation is ExpertsImplementation.ALL_EXPERTS
        if all_experts and self.compiled_loop is not None and self.compiled_loop.decode_experts is not None:
            # The decode paths read the routed experts only: the row would judge them against all 32.
            raise Invalid("compiled_loop.decode_experts", "replaces the decode path of all_experts with a routed one")
        return self

    @property
    def ref(self) -> str:
        """The card or checkpoint the weights come from."""
        return self.architecture if self.source is WeightsSource.RANDOM else self.id

    def measured_by(self, backend: Backend) -> ModelEntry:
        """This entry as a cell spec of `backend` holds it: the keys the user wrote, less what no measurement on
        that backend reads (metadata; compiled_loop's options, except on compiled_loop). So editing either
        reruns no cell it cannot change."""
        unread = {"metadata"} | (set() if backend is Backend.COMPILED_LOOP else {"compiled_loop"})
        if backend.serving:  # a server runs its own attention and experts kernels
            unread |= {"attn_implementation", "experts_implementation"}
        return ModelEntry.model_validate(self.model_dump(exclude_unset=True, exclude=unread))


def _check_card(path: str, key: str = "architecture") -> None:
    """An architecture card (or a local checkpoint's config.json, under `key` id): JSON with a model_type."""
    if not Path(path).is_file():
        raise Invalid(key, f"architecture card {path!r} does not exist")
    try:
        card = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Invalid(key, f"card {path!r} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or "model_type" not in card:
        raise Invalid(key, f"card {path!r} has no model_type")


def local_directory(ref: str) -> Path | None:
    """The directory a pretrained `id` names, or None for a hub id."""
    if ref.startswith((".", "/", "~")) or Path(ref).exists():
        return Path(ref).expanduser()
    return None


def card_digests(model: ModelEntry) -> dict[str, str] | None:
    """sha256 of the files that define the model's architecture, by file name; None for a hub id.

    A card edit changes the cell spec, so exactly the cells built from that card rerun.
    """
    if model.source is WeightsSource.RANDOM:
        files = [Path(model.architecture)]
    else:
        directory = local_directory(model.id)
        files = [] if directory is None else [directory / name for name in PRETRAINED_CARD_FILES]
    digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}
    return digests or None


class DecodingMode(Settings):
    """How the next token is chosen. Unset sampling parameters are off."""

    do_sample: bool = False
    temperature: Annotated[float, Field(gt=0)] = None
    top_p: Annotated[float, Field(gt=0, le=1)] = None
    top_k: PositiveInt = None

    @model_validator(mode="after")
    def _sampling_needs_do_sample(self) -> DecodingMode:
        if not self.do_sample and any(v is not None for v in (self.temperature, self.top_p, self.top_k)):
            raise Invalid("do_sample", "sampling parameters given but do_sample is false")
        return self

    @property
    def filters(self) -> tuple[float, int, float]:
        """(temperature, top_k, top_p) with every unset filter off: 1.0, 0 and 1.0."""
        temperature = 1.0 if self.temperature is None else float(self.temperature)
        top_p = 1.0 if self.top_p is None else float(self.top_p)
        return temperature, self.top_k or 0, top_p


def standard_decoding(name: str) -> DecodingMode:
    return DecodingMode.model_validate(STANDARD_DECODING[name])


class CellSpec(Settings):
    """Everything that determines one cell's measurement, and nothing else."""

    model_name: ModelName
    model: ModelEntry
    decoding_name: DecodingName
    decoding: DecodingMode
    measurement: MeasurementSettings
    context: PositiveInt
    gen: PositiveInt
    dtype: Choice[DType]
    backend: Choice[Backend]
    batch: PositiveInt = 1
    """sequences decoded together"""
    card_sha256: dict[str, str] | None = Field(None, exclude_if=lambda digests: digests is None)
    """sha256 of the model's architecture card (config.json of a local directory); none for a hub id"""
    load: LoadPoint | None = Field(None, exclude_if=lambda load: load is None)
    """a serving cell's load point (serving backends only)"""
    engine: EngineSpec | None = Field(None, exclude_if=lambda engine: engine is None)
    """a serving cell's engine settings (serving backends only)"""

    @field_serializer("model", "decoding")
    def _as_written(self, settings: Settings) -> dict:
        return settings.model_dump(mode="json", exclude_unset=True)

    @field_serializer("measurement")
    def _as_read(self, settings: MeasurementSettings) -> dict:
        include = set(SERVING_MEASUREMENT) if self.backend.serving else None
        return settings.model_dump(mode="json", include=include)

    @field_serializer("load", "engine")
    def _given(self, settings: Settings | None) -> dict | None:
        return None if settings is None else settings.model_dump(mode="json", exclude_none=True)

    @model_validator(mode="after")
    def _card_unchanged(self) -> CellSpec:
        if self.card_sha256 is not None and self.card_sha256 != card_digests(self.model):
            raise Invalid("card_sha256", f"the files of {self.model.ref!r} changed since this cell was planned")
        for key in ("load", "engine"):
            if self.backend.serving and getattr(self, key) is None:
                why = f"{self.backend} is a serving engine: its cells are load points (a {key} is required)"
                raise Invalid("backend", why)
            if not self.backend.serving and getattr(self, key) is not None:
                raise Invalid(key, f"only for a serving backend, not {self.backend}")
        return self

    @property
    def cell_id(self) -> str:
        load = "" if self.load is None else naming.load_suffix(self.load.mode, self.load.value, self.load.burstiness)
        return naming.cell_id(
            self.model_name, self.backend, self.dtype, self.context, self.gen, self.decoding_name, self.batch, load
        )

    @property
    def cache_implementation(self) -> CacheImplementation:
        return CacheImplementation.STATIC if self.backend.static_cache else CacheImplementation.DYNAMIC

    def spec_json(self) -> str:
        return canonical_json(self.model_dump(mode="json"))


class MeasureJob(Settings):
    """A measure job's params: the cell spec and the harness version that must measure it."""

    cell: CellSpec
    harness_version: str

    def params_json(self) -> str:
        return canonical_json(self.model_dump(mode="json"))


def parse_cell(spec: dict | str) -> CellSpec:
    """A cell spec from its JSON text or dict, checked in full; SpecError names the first bad field."""
    return _parse(CellSpec, spec)


def parse_job(params: str, harness_version: str) -> CellSpec:
    """The cell of a measure job's params text; refuses params written for another harness version."""
    job = _parse(MeasureJob, params)
    if job.harness_version != harness_version:
        raise SpecError(
            f"harness_version: the workflow asked for {job.harness_version!r}, this library is {harness_version!r}"
        )
    return job.cell


def _parse(model: type[Settings], data: dict | str):
    try:
        return model.model_validate_json(data) if isinstance(data, str) else model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe(exc, "", model)) from None


def canonical_json(obj) -> str:
    """Sorted keys, no spaces, whole floats written as ints: equal settings give equal text."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"))


def _normalise(obj):
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj
