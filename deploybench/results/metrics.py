"""The metric catalogue: every result column declared once, in `metrics.yaml` beside this file.

Each entry gives a column's value type, unit, which direction is better, its definition, the step
that writes it and, where other tools report the same quantity, their names for it. Derived from it:
the Parquet schema (`deploybench.results.schema`), the TPOT-check and APE columns (`deploybench.results.tpot`,
`deploybench.results.ape`), the baseline-ratio columns (generated here), the report's headers, units and
definitions section. `tests/unit/test_metrics.py` fails when a step writes a column that has no entry.

Units name what the stored value is in ("bytes", "ms", "fraction"); `Display` says how the report
prints it (GB = 10^9 bytes, percent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cache
from pathlib import Path

import yaml

from deploybench import enums
from deploybench.enums import Better, Stage, ValueType
from deploybench.plan import naming

CATALOGUE_PATH = Path(__file__).with_name("metrics.yaml")


@dataclass(frozen=True)
class Display:
    """How the report prints a stored value: value x scale, in unit, to sig significant digits."""

    unit: str
    scale: float = 1.0
    sig: int = 4


@dataclass(frozen=True)
class Elsewhere:
    """The same quantity's name in the study we reproduce and in other tools (None: no equivalent)."""

    study: str | None = None  # arXiv 2508.16700's released CSVs
    vllm: str | None = None  # vLLM's serving benchmark
    mlperf: str | None = None  # MLPerf Inference
    aiperf: str | None = None  # NVIDIA AIPerf


@dataclass(frozen=True)
class Metric:
    name: str
    type: ValueType
    group: str
    definition: str
    unit: str | None = None
    better: Better | None = None
    label: str | None = None
    display: Display | None = None
    stage: Stage = Stage.CELL
    elsewhere: Elsewhere | None = None
    defined: bool = False  # a row of the report's definitions table (one per family)
    family: str | None = None  # the percentile entry this column came from, e.g. "e2e_ms_p50 / _p95 / _p99"
    family_definition: str | None = None  # that entry's definition, for the family's one row
    baseline_ratio: bool = False
    parameters: tuple[tuple[str, float], ...] = ()  # named constants of the definition (thresholds)

    def parameter(self, name: str) -> float:
        return dict(self.parameters)[name]

    @property
    def header_label(self) -> str:
        return self.label or self.name

    @property
    def display_unit(self) -> str | None:
        return self.display.unit if self.display else self.unit

    @property
    def display_scale(self) -> float:
        return self.display.scale if self.display else 1.0

    @property
    def sig(self) -> int:
        return self.display.sig if self.display else 4

    @property
    def higher_is_better(self) -> bool | None:
        return None if self.better is None else self.better is Better.HIGHER


class CatalogueError(ValueError):
    """metrics.yaml is malformed; the message names the entry."""


_FIELDS = {f.name for f in fields(Metric)} - {"name", "group", "family", "family_definition"}
_ENUMS = {name: obj for name, obj in vars(enums).items() if isinstance(obj, type) and issubclass(obj, StrEnum)}


# The cell id's format as a definition spells it: each axis in capitals (MODEL/BACKEND-DTYPE/cCONTEXT-...).
CELL_ID_FORMAT = re.sub(r"\{(\w+)\}", lambda axis: axis[1].upper(), naming.CELL_ID)


def _definition(entry: dict) -> str:
    """The entry's definition: enum placeholders and {CELL_ID} expanded, parameters filled in."""
    text = _expand_enums(entry["definition"]).replace("{CELL_ID}", CELL_ID_FORMAT)
    return text.format(**entry["parameters"]) if entry.get("parameters") else text


def _expand_enums(text: str) -> str:
    """'{Backend}' -> 'eager | compiled | compiled_loop'."""
    for name, enum in _ENUMS.items():
        text = text.replace("{" + name + "}", enums.one_of(enum))
    return text


def _metric(group: str, name: str, entry: dict) -> Metric:
    where = f"{CATALOGUE_PATH.name}: {group}.{name}"
    unknown = set(entry) - _FIELDS - {"percentiles"}
    if unknown:
        raise CatalogueError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {sorted(_FIELDS)})")
    if "type" not in entry or "definition" not in entry:
        raise CatalogueError(f"{where}: type and definition are required")
    try:
        values = {
            **entry,
            "type": ValueType(entry["type"]),
            "better": Better(entry["better"]) if entry.get("better") else None,
            "stage": Stage(entry.get("stage", "cell")),
            "display": Display(**entry["display"]) if entry.get("display") else None,
            "elsewhere": Elsewhere(**entry["elsewhere"]) if entry.get("elsewhere") else None,
            "definition": _definition(entry),
            "parameters": tuple(sorted((entry.get("parameters") or {}).items())),
        }
    except (ValueError, TypeError) as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    values.pop("percentiles", None)
    return Metric(name=name, group=group, **values)


def _percentile_metrics(group: str, pattern: str, entry: dict) -> list[Metric]:
    family = pattern.replace("{q}", "50", 1) + "".join(f" / _p{q}" for q in entry["percentiles"][1:])
    out = []
    for q in entry["percentiles"]:
        which = "Median" if q == 50 else f"{q}th percentile"
        filled = {**entry, "label": entry.get("label", pattern).replace("{q}", str(q))}
        filled["definition"] = f"{which} of {entry['definition']}."
        metric = _metric(group, pattern.replace("{q}", str(q)), filled)
        family_definition = _expand_enums(f"Percentiles of {entry['definition']}.")
        out.append(Metric(**{**metric.__dict__, "family": family, "family_definition": family_definition}))
    return out


def _ratio_metrics(bases: list[Metric]) -> list[Metric]:
    key = ", ".join(BASELINE_CELL_KEY)
    out = [
        Metric(
            ratio_column(m.name),
            ValueType.FLOAT,
            "derived",
            f"{m.name} of the row / {m.name} of the baseline model at the same cell (same {key}).",
            unit="×",
            better=m.better,
            label=f"{m.header_label} / baseline",
            stage=Stage.RATIO,
        )
        for m in bases
        if m.baseline_ratio
    ]
    out.append(
        Metric("ratio_baseline_model", ValueType.STR, "derived", "The baseline model of the ratios.", stage=Stage.RATIO)
    )
    return out


RATIO_PREFIX = "ratio_to_baseline_"
# A row and its baseline row must agree on every one of these to be compared.
BASELINE_CELL_KEY = ("source", "backend", "dtype", "context_tokens", "gen_tokens", "decoding", "batch_size")


def ratio_column(metric: str) -> str:
    return f"{RATIO_PREFIX}{metric}"


@cache
def catalogue() -> tuple[Metric, ...]:
    """Every column, in catalogue order: the YAML's entries, then the generated ratio columns."""
    data = yaml.safe_load(CATALOGUE_PATH.read_text())
    declared: list[Metric] = []
    for group, entries in data.items():
        for name, entry in entries.items():
            if "percentiles" in entry:
                declared += _percentile_metrics(group, name, entry)
            else:
                declared.append(_metric(group, name, entry))
    out = [*declared, *_ratio_metrics(declared)]
    names = [m.name for m in out]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise CatalogueError(f"{CATALOGUE_PATH.name}: {duplicated[0]!r} declared twice")
    return tuple(out)


def by_name() -> dict[str, Metric]:
    return {m.name: m for m in catalogue()}


def get(name: str) -> Metric:
    try:
        return by_name()[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the metric catalogue ({CATALOGUE_PATH})") from None


def of_stage(stage: Stage) -> list[Metric]:
    return [m for m in catalogue() if m.stage is stage]


def ratio_bases() -> list[Metric]:
    """The metrics compared with the baseline model, in catalogue order."""
    return [m for m in catalogue() if m.baseline_ratio]


def definition_rows() -> list[tuple[str, Metric]]:
    """(row name, first metric of its family) for the report's definitions table, in catalogue order."""
    rows, seen = [], set()
    for m in catalogue():
        name = m.family or m.name
        if m.defined and name not in seen:
            seen.add(name)
            rows.append((name, m))
    return rows
