"""Workflow configuration -> typed config -> cells. No Snakemake here: common.smk calls these.

`validate_config` is the one validator: it turns the raw config (a dict from YAML) into a frozen
`WorkflowConfig` or raises ConfigError `config.<key path>: <why>`. The JSON schema of the config
is generated from these models (`python -m deploybench config-schema`).

A study is a grid; the cells to run are the union of all studies, deduplicated. Each cell's
spec holds only the settings that change its measurement, so editing one model's entry (or its
architecture card) changes only that model's cells, and metadata edits change none.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, model_validator

from deploybench import HARNESS_VERSION
from deploybench.enums import Backend, DType, StudyKind
from deploybench.plan import naming
from deploybench.plan.serving_settings import LoadFloat, PositiveFloat, ServingSettings, SloTargets
from deploybench.plan.spec import (
    CellSpec,
    DecodingMode,
    DecodingName,
    MeasureJob,
    MeasurementSettings,
    ModelEntry,
    ModelName,
    PositiveInt,
    card_digests,
)
from deploybench.plan.validation import Choice, Invalid, Settings, describe

# A cell's axis (a field of Cell) -> the study's list of its values (a field of Study).
STUDY_AXES = {
    "model": "models",
    "backend": "backends",
    "dtype": "dtypes",
    "context": "contexts",
    "gen": "gen",
    "decoding": "decoding",
    "batch": "batch",
}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class ConfigError(ValueError):
    """The config is wrong; the message names the key and why."""


class Study(Settings):
    """A grid (the product of its axes) that the report renders as one table or figure."""

    kind: Choice[StudyKind]
    description: str = None
    models: Annotated[list[str], Field(min_length=1)]
    contexts: Annotated[list[PositiveInt], Field(min_length=1)]
    """prompt lengths in tokens, after the chat template"""
    gen: Annotated[list[PositiveInt], Field(min_length=1)]
    """generated tokens per run"""
    decoding: Annotated[list[str], Field(min_length=1)] = ["greedy"]
    dtypes: Annotated[list[Choice[DType]], Field(min_length=1)] = [DType.BFLOAT16]
    backends: Annotated[list[Choice[Backend]], Field(min_length=1)] = [Backend.EAGER]
    batch: Annotated[list[PositiveInt], Field(min_length=1)] = [1]
    """sequences decoded together (B distinct prompts of `context` tokens each)"""
    concurrency: Annotated[list[PositiveInt], Field(min_length=1)] = None
    """serving_load: closed-loop load points, requests kept in flight (each a cell)"""
    request_rate: Annotated[list[LoadFloat], Field(min_length=1)] = None
    """serving_load: open-loop load points, mean requests per second (each a cell)"""
    burstiness: LoadFloat = None
    """serving_load with request_rate: gamma shape of the gaps between arrivals (unset: 1, Poisson; below 1
    burstier)"""
    n_requests: PositiveInt = None
    """serving_load: requests per load point (with duration_s, whichever ends it first)"""
    duration_s: PositiveFloat = None
    """serving_load: no request of a load point is sent after this many seconds"""
    slo: SloTargets = None
    """serving_load: latency targets, e.g. {ttft_ms_p99: 500, tpot_ms_p99: 50}: each point's goodput and verdict"""

    @model_validator(mode="after")
    def _serving_keys(self) -> Study:
        from deploybench.plan.serving import check_study  # the serving plan imports this module

        check_study(self)
        return self

    @property
    def serving(self) -> bool:
        """A study of serving engines under load: its cells are load points, measured by serve jobs."""
        return self.kind is StudyKind.SERVING_LOAD


class ReferenceCell(Settings):
    """The cell the report's headline tables compare models at."""

    context: PositiveInt = None
    gen: PositiveInt = None
    decoding: str = None
    dtype: Choice[DType] = None
    backend: Choice[Backend] = None


class ExternalTable(Settings):
    """Results from elsewhere (e.g. the study's released CSVs), imported into the consolidated table."""

    name: str
    format: str
    path: str
    model_map: dict[str, str] = None
    """their model names -> ours"""

    @model_validator(mode="after")
    def _importable(self) -> ExternalTable:
        from deploybench.results.importer import FORMATS  # here: only a config with external tables pays for pandas

        if self.format not in FORMATS:
            raise Invalid("format", f"unknown format {self.format!r} (known: {', '.join(sorted(FORMATS))})")
        if not Path(self.path).exists():
            raise Invalid("path", f"{self.path!r} does not exist")
        return self


class Analysis(Settings):
    baseline_model: str = None
    """ratio_to_baseline_* columns compare every model to this one"""
    reference_cell: ReferenceCell = None
    external_tables: list[ExternalTable] = []
    study_way: dict[str, str] = {}
    """an imported model's name -> our model entry that measures it the study's way (eager, transformers'
    default attention, bf16; for gpt-oss the all_experts path); a model not listed plays itself"""


class ReportSettings(Settings):
    title: str = None
    subtitle: str = None


class WorkflowConfig(Settings):
    """deploybench workflow configuration (config.yaml has every key commented)."""

    measurement: MeasurementSettings = MeasurementSettings()
    models: Annotated[dict[ModelName, ModelEntry], Field(min_length=1)]
    """models by name (names appear in result paths)"""
    decoding: Annotated[dict[DecodingName, DecodingMode], Field(min_length=1)]
    """decoding modes by name"""
    studies: Annotated[dict[str, Study], Field(min_length=1)]
    analysis: Analysis = Analysis()
    report: ReportSettings = ReportSettings()
    serving: ServingSettings = ServingSettings()
    """serving engines by backend name (vllm, transformers_serve, openai): how to start them or where they are"""

    @model_validator(mode="after")
    def _names_are_defined(self) -> WorkflowConfig:
        for name, study in self.studies.items():
            for model in study.models:
                if model not in self.models:
                    raise Invalid(("studies", name, "models"), f"model {model!r} is not defined under models")
            for decoding in study.decoding:
                if decoding not in self.decoding:
                    raise Invalid(
                        ("studies", name, "decoding"), f"decoding mode {decoding!r} is not defined under decoding"
                    )
        baseline = self.analysis.baseline_model
        if baseline is not None and baseline not in self.models:
            raise Invalid(("analysis", "baseline_model"), f"model {baseline!r} is not defined under models")
        reference = self.analysis.reference_cell
        if reference is not None and reference.decoding is not None and reference.decoding not in self.decoding:
            why = f"decoding mode {reference.decoding!r} is not defined under decoding"
            raise Invalid(("analysis", "reference_cell", "decoding"), why)
        for imported, entry in self.analysis.study_way.items():
            if entry not in self.models:
                raise Invalid(("analysis", "study_way", imported), f"model {entry!r} is not defined under models")
        from deploybench.plan.serving import check_serving

        check_serving(self)
        return self


def validate_config(config: dict) -> WorkflowConfig:
    """The one validator: the raw config as typed settings, or ConfigError naming the key."""
    try:
        return WorkflowConfig.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(describe(exc, "config", WorkflowConfig)) from None


def config_json_schema() -> dict:
    """The JSON schema of the config, generated from the models (workflow/schemas/config.schema.json)."""
    return {"$schema": SCHEMA_DIALECT, **WorkflowConfig.model_json_schema()}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def check_duplicate_keys(path: str | Path) -> None:
    """Snakemake's own loader silently merges duplicate keys; re-read the file strictly."""
    with open(path) as fh:
        try:
            yaml.load(fh, Loader=_UniqueKeyLoader)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def load_config(*paths: str | Path) -> WorkflowConfig:
    """Config files as typed settings (duplicate keys refused too), each laid over the ones before it as
    Snakemake's --configfile merges them: mappings key by key, any other value replaced."""
    merged: dict = {}
    for path in paths:
        check_duplicate_keys(path)
        with open(path) as fh:
            _overlay(merged, yaml.safe_load(fh) or {})
    return validate_config(merged)


def _overlay(base: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _overlay(base[key], value)
        else:
            base[key] = value


@dataclass(frozen=True, order=True)
class Cell:
    model: str
    backend: str
    dtype: str
    context: int
    gen: int
    decoding: str
    batch: int = 1

    @property
    def path(self) -> str:
        return naming.CELL_PATH.format(**self.__dict__)

    @property
    def wildcards(self) -> dict:
        return {k: str(v) for k, v in self.__dict__.items()}


def study_cells(config: WorkflowConfig, study: Study) -> list[Cell]:
    """The study's grid, in the order of its axes' values (models first, then backends, dtypes, ...)."""
    cells = []
    for values in itertools.product(*(getattr(study, key) for key in STUDY_AXES.values())):
        cell = dict(zip(STUDY_AXES, values))
        # A model pinned to one dtype (e.g. a checkpoint that only exists in bf16) overrides the axis.
        cells.append(Cell(**cell | {"dtype": config.models[cell["model"]].dtype or cell["dtype"]}))
    return cells


def all_cells(config: WorkflowConfig) -> list[Cell]:
    """The union of all studies' cells that a measure job measures, deduplicated, in a stable order. A serving
    study's cells are its load points, measured by serve jobs (deploybench.plan.serving.load_points); its
    study_cells are their server groups' axes."""
    return sorted(
        {cell for study in config.studies.values() if not study.serving for cell in study_cells(config, study)}
    )


def cells_by_study(config: WorkflowConfig) -> dict[str, list[str]]:
    from deploybench.plan.serving import study_point_paths

    return {
        name: study_point_paths(config, s) if s.serving else sorted({c.path for c in study_cells(config, s)})
        for name, s in config.studies.items()
    }


def cell_spec(config: WorkflowConfig, cell: Cell, **serving) -> CellSpec:
    """Everything that determines this cell's measurement, and nothing else; `serving`: a serving cell's load and
    engine (deploybench.plan.serving.point_spec)."""
    model = config.models[cell.model].measured_by(Backend(cell.backend))
    return CellSpec(
        model_name=cell.model,
        model=model,
        decoding_name=cell.decoding,
        decoding=config.decoding[cell.decoding],
        measurement=config.measurement,
        context=cell.context,
        gen=cell.gen,
        dtype=cell.dtype,
        backend=cell.backend,
        batch=cell.batch,
        card_sha256=card_digests(model),
        **serving,
    )


def cell_params(config: WorkflowConfig, cell: Cell) -> str:
    """The measure job's params: canonical JSON of the cell spec plus the harness version."""
    return MeasureJob(cell=cell_spec(config, cell), harness_version=HARNESS_VERSION).params_json()


def find_cell(config: WorkflowConfig, wildcards: dict, cells: set[Cell] | None = None) -> Cell:
    """The cell a measure job's wildcards name; `cells` (all cells) saves recomputing the grid per job."""
    cell = Cell(
        wildcards["model"],
        wildcards["backend"],
        wildcards["dtype"],
        int(wildcards["context"]),
        int(wildcards["gen"]),
        wildcards["decoding"],
        int(wildcards["batch"]),
    )
    if cell not in (cells if cells is not None else set(all_cells(config))):
        raise ConfigError(f"{cell.path} is not a cell of any study in the config")
    return cell
