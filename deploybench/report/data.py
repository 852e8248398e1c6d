"""Data access: the result frame as clean records, the config's studies and the reference cell.

A cell is addressed by its axes {model, backend, dtype, context, gen, decoding, batch}; a study is a
grid of them (DESIGN.md, "Cells and studies"), read with the same defaults as deploybench.plan.config.
Every table, figure and finding reads batch-1 rows, except where it lays out the batch axis itself (the
batch-scaling study): a cell that names no batch is at BATCH, and so is a row without batch_size (schema 1.x).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pandas as pd

from deploybench.enums import StudyKind
from deploybench.report import captions
from deploybench.report.fmt import short, to_int
from deploybench.results.schema import UNBATCHED as BATCH  # of every cell that names no batch, and of every row

OURS = "deploybench"
AXES = ("model", "backend", "dtype", "context", "gen", "decoding", "batch")
NUMERIC = ("context", "gen", "batch")  # the axes whose values are counts
# The frame's column for each axis, the config's key for it in a study, its default where a study has none.
AXIS_COLUMN = {axis: axis for axis in AXES} | {"context": "context_tokens", "gen": "gen_tokens", "batch": "batch_size"}
STUDY_KEY = {axis: f"{axis}s" if axis in ("model", "backend", "dtype", "context") else axis for axis in AXES}
STUDY_DEFAULT = {"backend": "eager", "dtype": "bfloat16", "decoding": "greedy", "batch": BATCH}


def _clean(v):
    """Frame value -> plain Python: NaN/NA -> None, numpy -> list/scalar."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
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


@dataclass
class Study:
    name: str
    kind: str
    axes: dict[str, list]  # axis -> its values, in the config's order (contexts and batches sorted)

    @property
    def models(self) -> list[str]:
        return self.axes["model"]

    @property
    def contexts(self) -> list[int]:
        return self.axes["context"]

    def cells(self) -> list[dict]:
        return [dict(zip(AXES, values)) for values in itertools.product(*(self.axes[a] for a in AXES))]


class ReportData:
    """The frame split into our rows and imported rows, indexed by cell, plus the config."""

    def __init__(self, df: pd.DataFrame | None, config: dict | None):
        self.config = config or {}
        self.all = records(df)
        self.ours = [r for r in self.all if is_ours(r)]
        self.imported = [r for r in self.all if not is_ours(r)]
        self.index = {_key(cell_of(r)): r for r in self.ours}
        self._built: dict = {}
        self.batch1 = [r for r in self.ours if cell_of(r)["batch"] == BATCH]  # the rows of unbatched figures
        cfg_models = list((self.config.get("models") or {}).keys())
        seen = [r.get("model") for r in self.ours if r.get("model")]
        self.models = [m for m in cfg_models if m in seen] + sorted(set(seen) - set(cfg_models))
        analysis = self.config.get("analysis") or {}
        self.ref = dict(analysis.get("reference_cell") or {})
        configured = analysis.get("baseline_model")
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
    def model_cfg(self, model: str) -> dict:
        return (self.config.get("models") or {}).get(model) or {}

    def metadata(self, model: str) -> dict:
        return self.model_cfg(model).get("metadata") or {}

    def same_card(self, st: Study, model: str) -> str:
        """The study's first entry from `model`'s card: what an entry varying one setting of it is compared with."""
        card = {m: self.model_cfg(m).get("architecture") or self.model_cfg(m).get("id") or m for m in st.models}
        return next((m for m in st.models if card[m] == card.get(model, model)), model)

    def studies(self, kind: StudyKind | None = None) -> list[Study]:
        studies = (self.config.get("studies") or {}).items()
        return [self._study(name, s) for name, s in studies if isinstance(s, dict) and kind in (None, s.get("kind"))]

    def _study(self, name: str, s: dict) -> Study:
        # An absent models / contexts / gen axis falls back to what the rows hold.
        seen = {a: sorted({to_int(r.get(AXIS_COLUMN[a])) for r in self.ours} - {None}) for a in ("context", "gen")}
        seen["model"] = self.models
        axes = {}
        for axis in AXES:
            values = as_list(s.get(STUDY_KEY[axis])) or seen.get(axis) or [STUDY_DEFAULT[axis]]
            axes[axis] = [int(v) for v in values] if axis in NUMERIC else [str(v) for v in values]
        axes["context"], axes["batch"] = sorted(axes["context"]), sorted(axes["batch"])
        return Study(name=name, kind=s.get("kind", ""), axes=axes)

    # rows -----------------------------------------------------------------------------------
    def effective(self, cell: dict) -> dict:
        """The cell as measured: a model's own dtype overrides the study's."""
        return {**cell, "dtype": self.model_cfg(cell["model"]).get("dtype") or cell["dtype"]}

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
