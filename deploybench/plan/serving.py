"""Serving cells: the load points of serving_load studies, grouped by the server that measures them.

A serving_load study's grid is its server groups' axes (model, backend, dtype, context, gen, decoding; batch 1:
each request is one sequence) times its loads (each concurrency, each request rate). Every (group, load) is one
cell, with its own row in its own file under results/cells/ (the group's cell id plus the load suffix,
deploybench.plan.naming). One serve job per group (workflow/rules/serve.smk) starts the group's server once and
measures each of its points that has no row of its current settings: the job's params hold every point's cell
spec (`ServeJob`), so adding a point or editing a setting reruns the job, which then measures only what changed
(deploybench.measure.serve_group).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, ValidationError, model_validator

from deploybench import HARNESS_VERSION
from deploybench.enums import Backend, LoadMode, StudyKind, WeightsSource
from deploybench.plan import naming
from deploybench.plan.config import Cell, ConfigError, Study, WorkflowConfig, cell_spec, study_cells
from deploybench.plan.serving_settings import RUN_ONLY, LoadPoint, PositiveFloat, engine_spec
from deploybench.plan.spec import CellSpec, SpecError, canonical_json
from deploybench.plan.validation import Invalid, Settings, describe

LOAD_KEYS = ("concurrency", "request_rate", "burstiness", "n_requests", "duration_s", "slo")
POINT_KEYS = ("n_requests", "duration_s", "slo")  # a point's settings that come from its study


@dataclass(frozen=True, order=True)
class LoadPointCell:
    """A serving cell: its server group's axes and its load."""

    group: Cell
    mode: str
    value: float
    burstiness: float | None = None  # request_rate only

    @property
    def cell_id(self) -> str:
        g = self.group
        load = naming.load_suffix(self.mode, self.value, self.burstiness)
        return naming.cell_id(g.model, g.backend, g.dtype, g.context, g.gen, g.decoding, g.batch, load)

    @property
    def path(self) -> str:
        return naming.cell_path(self.cell_id)


def group_id(group: Cell) -> str:
    return naming.SERVE_GROUP_ID.format(**group.__dict__)


def marker_path(group: Cell) -> str:
    return naming.SERVE_MARKER.format(**group.__dict__)


# ---------------------------------------------------------------- refusals (called by the typed config)


def check_study(study: Study) -> None:
    """A study's own serving keys: a serving_load study loads serving engines, no other study does."""
    serving_backends = [b for b in study.backends if Backend(b).serving]
    if not study.serving:
        if serving_backends:
            why = f"'{serving_backends[0]}' is a serving engine: measure it in a study of kind serving_load"
            raise Invalid("backends", why)
        for key in LOAD_KEYS:
            if getattr(study, key) is not None:
                raise Invalid(key, f"only for kind {StudyKind.SERVING_LOAD}")
        return
    others = [b for b in study.backends if not Backend(b).serving]
    if others:
        engines = ", ".join(b for b in Backend if b.serving)
        why = f"a serving_load study loads serving engines ({engines}), not '{others[0]}'"
        raise Invalid("backends", why + " (name them: backends defaults to eager)")
    if study.concurrency is None and study.request_rate is None:
        raise Invalid("concurrency", "a serving_load study needs load points: concurrency and/or request_rate")
    if study.burstiness is not None and study.request_rate is None:
        raise Invalid("burstiness", "only with request_rate (the gaps between open-loop arrivals)")
    if study.n_requests is None and study.duration_s is None:
        raise Invalid("n_requests", "a serving_load study needs n_requests and/or duration_s per load point")
    if study.batch != [1]:
        raise Invalid("batch", "a serving request is one sequence: load a server through concurrency or request_rate")
    largest = max(study.concurrency or [0])
    if study.n_requests is not None and study.n_requests <= 2 * largest:
        why = (
            f"{study.n_requests} requests at concurrency {largest} leave no steady window (from the N-th first "
            f"token to the (n - N)-th completion): send more than 2 x concurrency"
        )
        raise Invalid("n_requests", why)


def check_serving(config: WorkflowConfig) -> None:
    """What needs the whole config: the openai endpoint is configured where used, and a load point in two studies
    has one set of settings."""
    for name, study in config.studies.items():
        if not study.serving or Backend.OPENAI not in study.backends:
            continue
        if config.serving.openai is None:
            raise Invalid(("serving", "openai"), f"required by study {name!r} (backend openai): url and started_by")
        for model in study.models:
            if config.models[model].source is WeightsSource.RANDOM:
                why = (
                    f"model {model!r} has random weights; backend openai loads an endpoint you started, so give it a "
                    "pretrained entry (its id names the served model and its tokenizer)"
                )
                raise Invalid(("studies", name, "models"), why)
    load_points(config)


# ---------------------------------------------------------------- the points and their groups


def study_points(config: WorkflowConfig, study: Study) -> list[tuple[LoadPointCell, LoadPoint]]:
    """A serving_load study's cells with their load point settings, groups in grid order, loads as given."""
    loads = [(LoadMode.CONCURRENCY, c, None) for c in study.concurrency or []]
    loads += [(LoadMode.REQUEST_RATE, r, study.burstiness or 1.0) for r in study.request_rate or []]
    given = {key: getattr(study, key) for key in POINT_KEYS}
    out = []
    for group in study_cells(config, study):
        for mode, value, burstiness in loads:
            point = LoadPointCell(group, str(mode), float(value), burstiness)
            fields = {"mode": mode, "value": value, "burstiness": burstiness, **given}
            settings = LoadPoint.model_validate({k: v for k, v in fields.items() if v is not None})
            out.append((point, settings))
    return out


def load_points(config: WorkflowConfig) -> dict[LoadPointCell, LoadPoint]:
    """Every serving cell of the config with its settings; a cell in two studies must have the same settings in both."""
    points: dict[LoadPointCell, tuple[str, LoadPoint]] = {}
    for name, study in config.studies.items():
        if not study.serving:
            continue
        for point, settings in study_points(config, study):
            earlier = points.setdefault(point, (name, settings))
            if earlier[1] != settings:
                key = next(k for k in POINT_KEYS if getattr(settings, k) != getattr(earlier[1], k))
                why = (
                    f"load point {point.cell_id} is also in study {earlier[0]!r}, with {key} "
                    f"{getattr(earlier[1], key)!r}: one cell has one setting, give both studies the same"
                )
                raise Invalid(("studies", name, key), why)
    return {point: settings for point, (_, settings) in sorted(points.items())}


def serve_groups(config: WorkflowConfig) -> dict[Cell, list[LoadPointCell]]:
    """Server groups (the axes one server measures) -> their load points, in a stable order."""
    groups: dict[Cell, list[LoadPointCell]] = {}
    for point in load_points(config):
        groups.setdefault(point.group, []).append(point)
    return dict(sorted(groups.items()))


def study_point_paths(config: WorkflowConfig, study: Study) -> list[str]:
    return sorted({point.path for point, _ in study_points(config, study)})


def point_spec(config: WorkflowConfig, point: LoadPointCell, settings: LoadPoint) -> CellSpec:
    """Everything that determines a load point's measurement: its group's cell spec, its load and its engine."""
    engine = engine_spec(config.serving, Backend(point.group.backend))
    return cell_spec(config, point.group, load=settings, engine=engine)


# ---------------------------------------------------------------- the serve job's params


class ServeJob(Settings):
    """A serve job's params: the cell spec of every load point of its server group, the harness version that must
    measure them, and what runs the job without changing a figure (RUN_ONLY: the server's start-up timeout)."""

    points: Annotated[list[CellSpec], Field(min_length=1)]
    harness_version: str
    startup_timeout_s: PositiveFloat | None = Field(None, exclude_if=lambda timeout: timeout is None)
    """none for an endpoint the job does not start (openai)"""

    @model_validator(mode="after")
    def _one_group(self) -> ServeJob:
        first = self.points[0]
        if not first.backend.serving:
            raise Invalid("points", f"{first.cell_id} is not a serving cell")
        for i, point in enumerate(self.points[1:], 1):
            if group_of(point) != group_of(first) or point.engine != first.engine:
                raise Invalid(("points", i), f"{point.cell_id} is not of the server group of {first.cell_id}")
        return self

    @property
    def group(self) -> str:
        return group_of(self.points[0])

    def params_json(self) -> str:
        return canonical_json(self.model_dump(mode="json"))


def group_of(spec: CellSpec) -> str:
    """The server group id of a serving cell's spec."""
    fields = {"model": spec.model_name, "backend": spec.backend, "dtype": spec.dtype, "decoding": spec.decoding_name}
    return naming.SERVE_GROUP_ID.format(context=spec.context, gen=spec.gen, **fields)


def serve_params(config: WorkflowConfig, group: Cell, points: list[LoadPointCell]) -> str:
    """The serve job's params text: the rerun trigger of the group."""
    settings = load_points(config)
    engine = config.serving.of(Backend(group.backend))
    job = ServeJob(
        points=[point_spec(config, point, settings[point]) for point in points],
        harness_version=HARNESS_VERSION,
        **{key: getattr(engine, key) for key in RUN_ONLY if hasattr(engine, key)},
    )
    return job.params_json()


def parse_serve_job(params: str, harness_version: str) -> ServeJob:
    """The job a serve rule's params text describes; refuses params written for another harness version."""
    try:
        job = ServeJob.model_validate_json(params)
    except ValidationError as exc:
        raise SpecError(describe(exc, "", ServeJob)) from None
    if job.harness_version != harness_version:
        raise SpecError(
            f"harness_version: the workflow asked for {job.harness_version!r}, this library is {harness_version!r}"
        )
    return job


def find_group(wildcards: dict, groups: dict[Cell, list[LoadPointCell]]) -> Cell:
    """The server group a serve job's wildcards name."""
    axes = {key: wildcards[key] for key in ("model", "backend", "dtype", "decoding")}
    group = Cell(context=int(wildcards["context"]), gen=int(wildcards["gen"]), batch=1, **axes)
    if group not in groups:
        raise ConfigError(f"{marker_path(group)} is not a server group of any serving_load study in the config")
    return group


# ---------------------------------------------------------------- before the jobs run


def check_engines(config: WorkflowConfig, backends) -> None:
    """ConfigError naming the key where an engine the serve jobs are about to start has no interpreter here."""
    problems = []
    for backend in sorted({Backend(b) for b in backends if Backend(b).starts_server}):
        python = config.serving.of(backend).python
        found = shutil.which(python) if os.sep not in python else (python if os.path.isfile(python) else None)
        if found is None or not os.access(found, os.X_OK):
            make = {Backend.VLLM: "make engine-vllm", Backend.TRANSFORMERS_SERVE: "make engine-transformers"}[backend]
            why = "is not an executable file" if found else "does not exist"
            problems.append(
                f"config.serving.{backend}.python: {python!r} {why}: `{make}` creates the engine's environment, or "
                f"point the key at an interpreter that has {backend} installed"
            )
    if problems:
        raise ConfigError("\n".join(problems))
