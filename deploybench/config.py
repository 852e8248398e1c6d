"""Workflow configuration -> cells. No Snakemake here: common.smk calls these functions.

A study is a grid; the cells to run are the union of all studies, deduplicated. Each cell's
spec holds only the settings that change its measurement, so editing one model's entry
changes only that model's cells (and metadata edits change none).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from . import HARNESS_VERSION
from .spec import (
    SpecError,
    canonical_json,
    validate_decoding,
    validate_measurement,
    validate_model,
)

CELL_PATTERN = "results/cells/{model}/{backend}-{dtype}/c{context}-g{gen}-{decoding}.parquet"
STUDY_AXES = ("models", "contexts", "gen", "decoding", "dtypes", "backends")
AXIS_DEFAULTS = {"decoding": ["greedy"], "dtypes": ["bfloat16"], "backends": ["eager"]}
# Settings that do not change what a cell measures: left out of the cell spec.
NON_MEASUREMENT_MODEL_KEYS = ("metadata",)


class ConfigError(ValueError):
    """The config is wrong; the message names the key and why."""


@dataclass(frozen=True, order=True)
class Cell:
    model: str
    backend: str
    dtype: str
    context: int
    gen: int
    decoding: str

    @property
    def path(self) -> str:
        return CELL_PATTERN.format(**self.__dict__)

    @property
    def wildcards(self) -> dict:
        return {k: str(v) for k, v in self.__dict__.items()}


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


def load_config(path: str | Path) -> dict:
    check_duplicate_keys(path)
    with open(path) as fh:
        return yaml.safe_load(fh)


def _json_path(error: jsonschema.ValidationError) -> str:
    parts = ["config"]
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts)


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Schema check, then the cross-references a schema cannot express. Returns the config."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{_json_path(error)}: {error.message}")
    try:
        validate_measurement(config.get("measurement", {}))
        for name, model in config["models"].items():
            validate_model(name, model)
        for name, decoding in config["decoding"].items():
            validate_decoding(name, decoding)
    except SpecError as exc:
        raise ConfigError(f"config.{exc}") from None
    for study_name, study in config["studies"].items():
        where = f"config.studies.{study_name}"
        for model in study["models"]:
            if model not in config["models"]:
                raise ConfigError(f"{where}.models: model {model!r} is not defined under models")
        for decoding in study.get("decoding", AXIS_DEFAULTS["decoding"]):
            if decoding not in config["decoding"]:
                raise ConfigError(f"{where}.decoding: decoding mode {decoding!r} is not defined under decoding")
    analysis = config.get("analysis", {})
    baseline = analysis.get("baseline_model")
    if baseline is not None and baseline not in config["models"]:
        raise ConfigError(f"config.analysis.baseline_model: model {baseline!r} is not defined under models")
    for i, table in enumerate(analysis.get("external_tables", [])):
        if not Path(table["path"]).exists():
            raise ConfigError(f"config.analysis.external_tables[{i}].path: {table['path']!r} does not exist")
    return config


def study_cells(config: dict, study: dict) -> list[Cell]:
    axes = {axis: study.get(axis, AXIS_DEFAULTS.get(axis)) for axis in STUDY_AXES}
    cells = []
    for model, context, gen, decoding, dtype, backend in itertools.product(*(axes[a] for a in STUDY_AXES)):
        # A model pinned to one dtype (e.g. a checkpoint that only exists in bf16) overrides the axis.
        effective_dtype = config["models"][model].get("dtype") or dtype
        cells.append(Cell(model, backend, effective_dtype, int(context), int(gen), decoding))
    return cells


def all_cells(config: dict) -> list[Cell]:
    """The union of all studies' cells, deduplicated, in a stable order."""
    return sorted({cell for study in config["studies"].values() for cell in study_cells(config, study)})


def cells_by_study(config: dict) -> dict[str, list[str]]:
    return {name: sorted({c.path for c in study_cells(config, s)}) for name, s in config["studies"].items()}


def cell_spec(config: dict, cell: Cell) -> dict:
    """Everything that determines this cell's measurement, and nothing else."""
    model = {k: v for k, v in config["models"][cell.model].items() if k not in NON_MEASUREMENT_MODEL_KEYS}
    return {
        "model_name": cell.model,
        "model": model,
        "decoding_name": cell.decoding,
        "decoding": config["decoding"][cell.decoding],
        "measurement": validate_measurement(config.get("measurement", {})),
        "context": cell.context,
        "gen": cell.gen,
        "dtype": cell.dtype,
        "backend": cell.backend,
    }


def cell_params(config: dict, cell: Cell) -> str:
    """The measure job's params: canonical JSON of the cell spec plus the harness version."""
    return canonical_json({"cell": cell_spec(config, cell), "harness_version": HARNESS_VERSION})


def find_cell(config: dict, wildcards: dict, cells: set[Cell] | None = None) -> Cell:
    """The cell a measure job's wildcards name; `cells` (all cells) saves recomputing the grid per job."""
    cell = Cell(
        wildcards["model"],
        wildcards["backend"],
        wildcards["dtype"],
        int(wildcards["context"]),
        int(wildcards["gen"]),
        wildcards["decoding"],
    )
    if cell not in (cells if cells is not None else set(all_cells(config))):
        raise ConfigError(f"{cell.path} is not a cell of any study in the config")
    return cell
