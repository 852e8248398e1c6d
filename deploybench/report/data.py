"""Data access: the result frame as clean records, the config's studies and the reference cell.

A cell is addressed by its axes {model, backend, dtype, context, gen, decoding, batch}; a study is a
grid of them, read from the typed config (deploybench.plan.config: its defaults, its expansion into cells).
Every table, figure and finding reads batch-1 rows, except where it lays out the batch axis itself (the
batch-scaling study): a cell that names no batch is at BATCH, and so is a row without batch_size (schema 1.x).
A serving engine's rows are load points of one cell each (`load_of`): the cell's row is its concurrency-1 point,
one request at a time as every other batch-1 row; all of its points are `ReportData.serving` (report/serving.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import pandas as pd

from deploybench.enums import Backend, LoadMode, StudyKind
from deploybench.plan import config as plan
from deploybench.plan.spec import DecodingMode, MeasurementSettings, ModelEntry
from deploybench.report import captions
from deploybench.report.fmt import num, short, to_int
from deploybench.results.schema import UNBATCHED as BATCH  # of every cell that names no batch, and of every row
from deploybench.results.values import finite_or_none, is_missing

OURS = "deploybench"
AXES = tuple(f.name for f in fields(plan.Cell))  # model, backend, dtype, context, gen, decoding, batch
NUMERIC = ("context", "gen", "batch")  # the axes whose values are counts
# The frame's column for each axis.
AXIS_COLUMN = {axis: axis for axis in AXES} | {"context": "context_tokens", "gen": "gen_tokens", "batch": "batch_size"}
SERVING = tuple(str(b) for b in Backend if b.serving)  # backends whose cells are load points
_LOAD_SUFFIX = re.compile(r"-(?:cc(?P<cc>\d+)|r(?P<rate>\d+(?:\.\d+)?)(?:-bu[\d.]+)?)$")  # plan.naming.load_suffix


def _clean(v):
    """Frame value -> plain Python: missing and inf -> None, numpy -> list/scalar."""
    if is_missing(v):
        return None
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, float):
        return finite_or_none(v)
    return [_clean(x) for x in v] if isinstance(v, (list, tuple)) else v


def records(df: pd.DataFrame | None) -> list[dict]:
    return [] if df is None else [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]


def as_list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def is_ours(r: dict) -> bool:
    return r.get("source") in (None, "", OURS)


def is_failed(r: dict | None) -> bool:
    return r is not None and r.get("status") == "failed"


def is_invalid(r: dict | None) -> bool:
    return r is not None and r.get("valid") is False and not is_failed(r)


def load_of(r: dict) -> tuple[str, float] | None:
    """A serving row's load point, (concurrency, N) or (request_rate, req/s), from its load columns or else its
    cell id (a failed start has no load columns); None for any other row."""
    if r.get("backend") not in SERVING:
        return None
    for mode, col in ((LoadMode.CONCURRENCY, "load_concurrency"), (LoadMode.REQUEST_RATE, "load_request_rate_rps")):
        if r.get("load_mode") == mode and num(r.get(col)) is not None:
            return str(mode), float(r[col])
    found = _LOAD_SUFFIX.search(str(r.get("cell_id") or ""))
    if found is None:
        return None
    return (
        (str(LoadMode.CONCURRENCY), float(found["cc"]))
        if found["cc"]
        else (str(LoadMode.REQUEST_RATE), float(found["rate"]))
    )


def one_at_a_time(r: dict) -> bool:
    """Not a serving row, or its concurrency-1 point: the row of its cell."""
    return r.get("backend") not in SERVING or load_of(r) == (str(LoadMode.CONCURRENCY), 1.0)


def reasons(r: dict) -> str:
    """Why a row failed its validity checks."""
    return "; ".join(map(str, as_list(r.get("invalid_reasons")))) or "invalid"


def machine(r: dict) -> str:
    """The machine a row was measured on: its GPU (UUID, 12 characters), else its host (CPU rows)."""
    uuid = r.get("device_uuid")
    return uuid[:12] if uuid else str(r.get("hostname") or r.get("device_name") or "unknown")


def cell_of(r: dict) -> dict:
    """A row's axes as a cell (a row without batch_size at BATCH)."""
    cell = {axis: r.get(col) for axis, col in AXIS_COLUMN.items()}
    return cell | {a: to_int(cell[a]) for a in NUMERIC} | {"batch": to_int(cell["batch"]) or BATCH}


def _key(cell: dict) -> tuple:
    """The index key of a cell; one that names no batch is at BATCH."""
    cell = {**cell, "batch": cell.get("batch") or BATCH}
    return tuple(to_int(cell[a]) if a in NUMERIC else cell[a] for a in AXES)


def cell_label(cell: dict) -> str:
    """'context 2048 tokens, 64 generated tokens, greedy, bfloat16, eager' (the axes given)."""
    words = {"context": "context {} tokens", "gen": "{} generated tokens", "batch": "batch {}"}
    order = ("context", "gen", "decoding", "dtype", "backend", "batch")
    return ", ".join(words.get(a, "{}").format(cell[a]) for a in order if a in cell)


def _plain(axis: str, value):
    """A value of an axis as the report addresses cells: a count, or plain text (not an enum member)."""
    return value if axis in NUMERIC else str(value)


@dataclass
class Study:
    name: str
    kind: str
    axes: dict[str, list]  # axis -> its values, in the config's order (contexts and batches sorted)
    grid: list[dict]  # its cells as deploybench.plan.config expands them (a model's own dtype applied), in order

    @property
    def models(self) -> list[str]:
        return self.axes["model"]

    @property
    def contexts(self) -> list[int]:
        return self.axes["context"]

    def cells(self) -> list[dict]:
        return self.grid


class ReportData:
    """The frame split into our rows and imported rows, indexed by cell, plus the config."""

    def __init__(self, df: pd.DataFrame | None, config: plan.WorkflowConfig | None):
        self.config = config
        self.all = records(df)
        self.ours = [r for r in self.all if is_ours(r)]
        self.imported = [r for r in self.all if not is_ours(r)]
        self.serving = [r for r in self.ours if r.get("backend") in SERVING]  # every load point
        cells = [r for r in self.ours if one_at_a_time(r)]
        self.index = {_key(cell_of(r)): r for r in cells}
        self._built: dict = {}
        self.batch1 = [r for r in cells if cell_of(r)["batch"] == BATCH]  # the rows of unbatched figures
        self.configured_models = list(config.models) if config else []  # in the config's order
        seen = [r.get("model") for r in self.ours if r.get("model")]
        self.models = [m for m in self.configured_models if m in seen] + sorted(set(seen) - set(self.configured_models))
        analysis = config.analysis if config else plan.Analysis()
        ref = analysis.reference_cell
        self.ref = ref.model_dump(mode="json", exclude_none=True) if ref else {}  # the axes it names
        self.study_way = analysis.study_way
        configured = analysis.baseline_model
        self.baseline = configured if configured in self.models else next(iter(self.models), None)
        self.baseline_note = None
        if self.baseline is not None and self.baseline != configured:
            why = "baseline_absent" if configured else "baseline_unset"
            self.baseline_note = captions.text("notes", why, configured=configured, baseline=self.baseline)

    def once(self, key: str, build):
        """build(), computed once per report: what a table and a finding both read."""
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    # config ---------------------------------------------------------------------------------
    @property
    def measurement(self) -> MeasurementSettings | None:
        return self.config.measurement if self.config else None

    @property
    def title(self) -> str | None:
        return self.config.report.title if self.config else None

    def model_cfg(self, model: str) -> ModelEntry | None:
        return self.config.models.get(model) if self.config else None

    def metadata(self, model: str) -> dict:
        """The governance facts the config gives for the model (none unset)."""
        entry = self.model_cfg(model)
        return entry.metadata.model_dump(exclude_none=True) if entry and entry.metadata else {}

    def weights_source(self, model: str) -> str | None:
        entry = self.model_cfg(model)
        return str(entry.source) if entry else None

    def decoding_mode(self, name: str) -> DecodingMode | None:
        return self.config.decoding.get(name) if self.config else None

    def _card(self, model: str) -> str:
        entry = self.model_cfg(model)
        return (entry.architecture or entry.id if entry else None) or model

    def same_card(self, st: Study, model: str) -> str:
        """The study's first entry from `model`'s card: what an entry varying one setting of it is compared with."""
        card = {m: self._card(m) for m in st.models}
        return next((m for m in st.models if card[m] == card.get(model, model)), model)

    def studies(self, kind: StudyKind | None = None) -> list[Study]:
        studies = self.config.studies.items() if self.config else ()
        return [self._study(name, s) for name, s in studies if kind in (None, s.kind)]

    def _study(self, name: str, s: plan.Study) -> Study:
        s = s.model_copy(update={"contexts": sorted(s.contexts), "batch": sorted(s.batch)})
        axes = {axis: [_plain(axis, v) for v in getattr(s, key)] for axis, key in plan.STUDY_AXES.items()}
        grid = [{axis: _plain(axis, v) for axis, v in vars(cell).items()} for cell in plan.study_cells(self.config, s)]
        return Study(name=name, kind=str(s.kind), axes=axes, grid=grid)

    # rows -----------------------------------------------------------------------------------
    def effective(self, cell: dict) -> dict:
        """The cell as measured: a model's own dtype overrides the study's."""
        entry = self.model_cfg(cell["model"])
        return {**cell, "dtype": str(entry.dtype) if entry and entry.dtype else cell["dtype"]}

    def row(self, cell: dict) -> dict | None:
        return self.index.get(_key(self.effective(cell)))

    def study_rows(self, st: Study) -> list[dict]:
        """The rows of a study's cells, each once (two cells share a row where a model's own dtype overrides)."""
        return list({id(r): r for r in map(self.row, st.cells()) if r is not None}.values())

    def measured(self, st: Study, axis: str) -> list:
        """The values of a counted axis (context, gen, batch) that some row of the study has, else all of them."""
        seen = {cell_of(r)[axis] for r in self.study_rows(st)} if axis in NUMERIC else set(st.axes[axis])
        return [v for v in st.axes[axis] if v in seen] or st.axes[axis]

    def anchor(self, st: Study, axis: str):
        """The value of `axis` a study's other values are compared with: greedy decoding where the study has it,
        else its first value (of a counted axis, the first some row has; None where it has none)."""
        values = self.measured(st, axis)
        return "greedy" if axis == "decoding" and "greedy" in values else next(iter(values), None)

    def machines(self, st: Study) -> list[str]:
        """The machines a study's cells were measured on."""
        return sorted({machine(r) for r in self.study_rows(st)})

    def study_ref(self, st: Study) -> dict:
        """The reference cell inside a study: analysis.reference_cell where the study has it."""
        fallback = {"context": max(st.contexts)} if st.contexts else {}
        ref = {}
        for axis in ("context", "gen", "decoding", "dtype", "backend"):
            want = to_int(self.ref.get(axis)) if axis in ("context", "gen") else self.ref.get(axis)
            ref[axis] = want if want in st.axes[axis] else fallback.get(axis, self.anchor(st, axis))
        return ref

    def reference(self) -> dict | None:
        """The report's reference cell: from the main study (or any study) with the config's values."""
        st = next(iter(self.studies(StudyKind.MAIN_COMPARISON) + self.studies()), None)
        return self.study_ref(st) if st else None

    def reason_missing(self, rows, what: str = "") -> str:
        """A phrase saying why a figure family (energy, memory, ...) is missing from these rows."""
        rows = [r for r in rows if r is not None]
        if not rows:
            return "the data has no row for these cells"
        if all(is_failed(r) for r in rows):
            return f"every cell failed ({', '.join(sorted({r.get('failure_kind') or 'error' for r in rows}))})"
        col, label = {
            "energy": ("energy_source", "energy not measured"),
            "memory": ("memory_null_reason", "device memory not measured"),
            "tail": ("tail_null_reason", "too few runs"),
        }.get(what, (None, None))
        if not label:
            return "the rows have no figures for it"
        why = sorted({short(str(r.get(col)), 120) for r in rows if r.get(col)})
        return label + (f" ({'; '.join(why[:2])})" if why else "")
